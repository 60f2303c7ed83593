package e2e

import (
	"net/http"
	"net/url"
)

// Cookies returns every cookie the browser would send to rawURL (to copy a
// login's state cookies to another browser, as an attacker replaying them).
func (b *Browser) Cookies(rawURL string) []*http.Cookie {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil
	}
	return b.jar.Cookies(u)
}
