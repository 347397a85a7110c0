package gateway

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

func (c *CORSConfig) check() error {
	for i, o := range c.AllowedOrigins {
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" {
			return fmt.Errorf("cors.allowed_origins[%d]: %q is not an origin (scheme://host[:port], or *)", i, o)
		}
		c.AllowedOrigins[i] = strings.ToLower(o)
	}
	for i, h := range c.AllowedHeaders {
		if h == "" || strings.ContainsAny(h, " ,:") {
			return fmt.Errorf("cors.allowed_headers[%d]: %q is not a header name", i, h)
		}
	}
	if len(c.AllowedHeaders) == 0 {
		c.AllowedHeaders = []string{"Authorization", "Content-Type"}
	}
	if c.MaxAge < 0 {
		return fmt.Errorf("cors.max_age %v is negative", c.MaxAge)
	}
	if c.MaxAge == 0 {
		c.MaxAge = 10 * time.Minute
	}
	return nil
}

// corsExposed are the response headers a page may read.
var corsExposed = strings.Join([]string{"Retry-After", "X-Spigot-Upstream",
	"x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
	"x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"}, ", ")

// cors adds CORS headers for a request from an allowed origin, and answers
// its preflight (OPTIONS with Access-Control-Request-Method) itself,
// returning true. Requests from other origins, or without one, pass
// unchanged (the browser then withholds the answer from the page).
func (g *Gateway) cors(w http.ResponseWriter, r *http.Request) bool {
	c := &g.cfg.CORS
	origin := r.Header.Get("Origin")
	if len(c.AllowedOrigins) == 0 || origin == "" {
		return false
	}
	h := w.Header()
	h.Add("Vary", "Origin")
	if !slices.Contains(c.AllowedOrigins, "*") && !slices.Contains(c.AllowedOrigins, strings.ToLower(origin)) {
		return false
	}
	h.Set("Access-Control-Allow-Origin", origin)
	if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		h.Add("Vary", "Access-Control-Request-Method")
		h.Add("Vary", "Access-Control-Request-Headers")
		h.Set("Access-Control-Allow-Methods", "GET, POST")
		h.Set("Access-Control-Allow-Headers", strings.Join(c.AllowedHeaders, ", "))
		h.Set("Access-Control-Max-Age", strconv.Itoa(int(c.MaxAge.Seconds())))
		w.WriteHeader(http.StatusNoContent)
		return true
	}
	h.Set("Access-Control-Expose-Headers", corsExposed)
	return false
}
