package redisstore

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// TLSOptions are the TLS settings of a Redis connection, with approuter's
// EXT_SESSION_MGT meanings.
type TLSOptions struct {
	// CA (PEM) to trust instead of the system roots.
	CA []byte
	// Client certificate for mutual TLS.
	CertFile, KeyFile string
	// RejectUnauthorized false accepts any certificate (approuter's option;
	// for tests only).
	RejectUnauthorized bool
	// SkipCertHostnameValidation checks the chain but not the host name
	// (managed Redis services whose certificates name another host).
	SkipCertHostnameValidation bool
}

// TLSConfig builds the tls.Config for Redis connections.
func TLSConfig(o TLSOptions) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(o.CA) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(o.CA) {
			return nil, errors.New("redis CA: no PEM certificate found")
		}
		c.RootCAs = pool
	}
	if o.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("redis client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	switch {
	case !o.RejectUnauthorized:
		c.InsecureSkipVerify = true
	case o.SkipCertHostnameValidation:
		// Verify the chain ourselves, without the host name.
		c.InsecureSkipVerify = true
		roots := c.RootCAs
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("redis presented no certificate")
			}
			opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool()}
			for _, ic := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(ic)
			}
			_, err := cs.PeerCertificates[0].Verify(opts)
			return err
		}
	}
	return c, nil
}
