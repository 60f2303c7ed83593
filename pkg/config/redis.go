package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

func (c *Config) redisOrNew() *Redis {
	if c.Redis == nil {
		c.Redis = &Redis{RejectUnauthorized: true, RetryTimeout: 2 * time.Second, BackOffMultiplier: 50 * time.Millisecond}
	}
	return c.Redis
}

func (c *Config) redisFile(set func(*Redis, []byte), file string) error {
	if file == "" {
		return nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	set(c.redisOrNew(), b)
	return nil
}

func (c *Config) redisPath(field func(*Redis) *string, file string) error {
	if file == "" {
		return nil
	}
	if _, err := os.Stat(file); err != nil {
		return err
	}
	*field(c.redisOrNew()) = file
	return nil
}

// redisURL reads EXTAUTHZ_REDIS_URL. It replaces what a binding said about
// where Redis is, and keeps the TLS and retry settings.
func (c *Config) redisURL(v string) error {
	if v == "" {
		return nil
	}
	u, err := url.Parse(v)
	if err != nil {
		return errors.New("not a URL (the value is not shown: it may hold a password)")
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return fmt.Errorf("scheme %q: must be redis or rediss", u.Scheme)
	}
	var addrs []string
	for _, h := range strings.Split(u.Host, ",") {
		if _, _, err := net.SplitHostPort(h); err != nil {
			h = net.JoinHostPort(h, "6379")
		}
		if strings.HasPrefix(h, ":") {
			return errors.New("missing host")
		}
		addrs = append(addrs, h)
	}
	r := c.redisOrNew()
	r.Addrs = addrs
	r.Username = u.User.Username()
	pw, _ := u.User.Password()
	r.Password = Secret(pw)
	r.TLS = u.Scheme == "rediss"
	r.DB = 0
	if db := strings.Trim(u.Path, "/"); db != "" {
		n, err := strconv.Atoi(db)
		if err != nil || n < 0 {
			return fmt.Errorf("database %q: must be a number", db)
		}
		r.DB = n
	}
	q := u.Query()
	r.Cluster, r.MasterName = false, q.Get("master")
	if cl := q.Get("cluster"); cl != "" {
		if r.Cluster, err = strconv.ParseBool(cl); err != nil {
			return fmt.Errorf("cluster=%q: must be true or false", cl)
		}
	}
	for k := range q {
		if k != "cluster" && k != "master" {
			return fmt.Errorf("unknown parameter %q (known: cluster, master)", k)
		}
	}
	r.Source = "EXTAUTHZ_REDIS_URL"
	return nil
}
