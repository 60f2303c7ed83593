package session

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"slices"
	"sync"
)

// TokenSize is the size of the random secret a cookie carries (256 bits).
const TokenSize = 32

// tagSize is the size of the HMAC tag appended to the token in a cookie.
const tagSize = 16

// CookieValueLen is the length of an encoded cookie value:
// base64url(token || tag) without padding.
const CookieValueLen = (TokenSize + tagSize) * 4 / 3

// sealVersion is the first byte of every sealed value.
const sealVersion byte = 1

// MinSecretLen is the shortest session secret accepted (approuter's documentation
// asks for at least 64 characters).
const MinSecretLen = 64

// Token is the random secret behind one cookie (a session or a login state).
// It never leaves the process except inside its cookie.
type Token [TokenSize]byte

// NewToken returns a fresh token from crypto/rand.
func NewToken() Token {
	var t Token
	rand.Read(t[:]) // never returns an error; it crashes the program on failure
	return t
}

// String keeps tokens out of logs and error messages.
func (Token) String() string { return "[token]" }

// hash is the SHA-256 of the token: what names it in store keys (in hex)
// without revealing it.
func (t *Token) hash() [32]byte { return sha256.Sum256(t[:]) }

// Keys holds the keys derived from the session secrets. The first secret signs
// cookies and seals records; every secret verifies and opens, so a secret can
// be rotated without logging anyone out.
type Keys struct {
	mac  []*macPool // cookie tags: HMAC-SHA256 under a key derived from each secret
	seal []*macPool // record keys: HMAC-SHA256(seal key, label || token), a PRF
}

// macPool reuses keyed HMAC states: building one costs two hash blocks and
// several allocations, on every check otherwise.
type macPool struct{ p sync.Pool }

// macState is one pooled HMAC with its own input and output buffers: what
// goes through the hash.Hash interface is the state's, so the caller's
// token and result stay on its stack.
type macState struct {
	h   hash.Hash
	in  [64]byte
	out [sha256.Size]byte
}

func newMACPool(key []byte) *macPool {
	k := bytes.Clone(key)
	return &macPool{p: sync.Pool{New: func() any { return &macState{h: hmac.New(sha256.New, k)} }}}
}

// sum appends HMAC(key, parts...) to dst.
func (mp *macPool) sum(dst []byte, parts ...[]byte) []byte {
	st := mp.p.Get().(*macState)
	st.h.Reset()
	for _, p := range parts {
		for len(p) > 0 {
			n := copy(st.in[:], p)
			st.h.Write(st.in[:n])
			p = p[n:]
		}
	}
	dst = append(dst, st.h.Sum(st.out[:0])...)
	mp.p.Put(st)
	return dst
}

// ErrInvalidCookie is returned for a cookie that is malformed or whose tag
// does not verify under any secret.
var ErrInvalidCookie = errors.New("invalid session cookie")

// errOpen is returned when a sealed value does not open under any secret.
var errOpen = errors.New("sealed value does not open under any session secret")

// NewKeys derives the cookie and sealing keys from the session secrets.
func NewKeys(secrets ...[]byte) (*Keys, error) {
	if len(secrets) == 0 {
		return nil, errors.New("no session secret")
	}
	k := &Keys{}
	for i, s := range secrets {
		if len(s) < MinSecretLen {
			return nil, fmt.Errorf("session secret %d: must be at least %d characters", i+1, MinSecretLen)
		}
		mac, err := hkdf.Key(sha256.New, s, nil, "extauthz cookie tag v1", 32)
		if err != nil {
			return nil, err
		}
		seal, err := hkdf.Key(sha256.New, s, nil, "extauthz seal v1", 32)
		if err != nil {
			return nil, err
		}
		k.mac = append(k.mac, newMACPool(mac))
		k.seal = append(k.seal, newMACPool(seal))
	}
	return k, nil
}

func tag(key *macPool, t *Token, dst []byte) []byte {
	return key.sum(dst, t[:])[:len(dst)+tagSize]
}

// EncodeCookie returns the cookie value for a token: base64url(token || tag).
func (k *Keys) EncodeCookie(t Token) string {
	var buf [TokenSize + sha256.Size]byte
	copy(buf[:], t[:])
	tag(k.mac[0], &t, buf[:TokenSize])
	return base64.RawURLEncoding.EncodeToString(buf[:TokenSize+tagSize])
}

// DecodeCookie checks a cookie value's tag and returns its token. It touches
// no store, so forged cookies cost nothing but a hash.
func (k *Keys) DecodeCookie(v string) (Token, error) {
	var t Token
	if len(v) != CookieValueLen {
		return t, ErrInvalidCookie
	}
	var src [CookieValueLen]byte // on the stack, unlike []byte(v)
	copy(src[:], v)
	var raw [TokenSize + tagSize]byte
	n, err := base64.RawURLEncoding.Decode(raw[:], src[:])
	if err != nil || n != len(raw) {
		return t, ErrInvalidCookie
	}
	copy(t[:], raw[:TokenSize])
	var want [TokenSize + sha256.Size]byte
	for _, key := range k.mac {
		if hmac.Equal(tag(key, &t, want[:0]), raw[TokenSize:]) {
			return t, nil
		}
	}
	return Token{}, ErrInvalidCookie
}

var recordLabel = []byte("extauthz record v1")

// aead is AES-256-GCM under the record key of token t for secret i: a PRF
// (HMAC-SHA256) of the token under a key derived from the secret, so every
// session has its own key and neither Redis nor the cookie alone opens it.
func (k *Keys) aead(i int, t *Token) (cipher.AEAD, error) {
	var buf [sha256.Size]byte
	key := k.seal[i].sum(buf[:0], recordLabel, t[:])
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Seal encrypts plaintext with AES-256-GCM under a key derived from the first
// secret and the token; ad (the store key) is authenticated, not stored.
// It appends version || nonce || ciphertext to dst.
func (k *Keys) Seal(dst []byte, t *Token, ad, plaintext []byte) ([]byte, error) {
	a, err := k.aead(0, t)
	if err != nil {
		return nil, err
	}
	n := len(dst)
	out := slices.Grow(dst, 1+a.NonceSize()+len(plaintext)+a.Overhead())[:n+1+a.NonceSize()]
	out[n] = sealVersion
	rand.Read(out[n+1:])
	return a.Seal(out, out[n+1:], plaintext, ad), nil
}

// Open decrypts a value made by Seal under any of the secrets.
func (k *Keys) Open(t *Token, ad, sealed []byte) ([]byte, error) {
	if len(sealed) < 1+12+16 || sealed[0] != sealVersion {
		return nil, errOpen
	}
	for i := range k.seal {
		a, err := k.aead(i, t)
		if err != nil {
			return nil, err
		}
		nonce := sealed[1 : 1+a.NonceSize()]
		if pt, err := a.Open(nil, nonce, sealed[1+a.NonceSize():], ad); err == nil {
			return pt, nil
		}
	}
	return nil, errOpen
}
