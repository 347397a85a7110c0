// Package web is Spigot's chat page: one HTML file, one stylesheet and two
// scripts, embedded in the binary with no build step. The page talks to the
// server's API (GET /v1/models, then either streaming
// POST /v1/chat/completions or the v1/ws WebSocket, as its Transport
// setting says) from the browser, with relative URLs, so it works wherever
// the server mounts [Handler]. Over either transport a stream whose
// connection breaks is resumed where it stopped, and Stop cancels the
// generation on the server (POST /v1/streams/{id}/cancel, or the socket's
// cancel message).
//
// The page loads nothing from outside the server: no CDN, no web font. The
// Content-Security-Policy that [Handler] sends makes the browser enforce it.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"net/http"
	"time"
)

//go:embed static
var static embed.FS

// asset is one embedded file, ready to serve.
type asset struct {
	name        string // in the embedded file system
	body        []byte
	contentType string
	etag        string // strong ETag: a hash of the body, quoted
}

// assets maps each URL path the handler serves to its file. Nothing else is
// served: every other path is 404, so the handler can sit at "/" as the
// server's catch-all.
var assets = map[string]*asset{
	"/":                   load("static/index.html", "text/html; charset=utf-8"),
	"/static/style.css":   load("static/style.css", "text/css; charset=utf-8"),
	"/static/app.js":      load("static/app.js", "text/javascript; charset=utf-8"),
	"/static/stream.js":   load("static/stream.js", "text/javascript; charset=utf-8"),
	"/static/favicon.svg": load("static/favicon.svg", "image/svg+xml"),
}

func load(name, contentType string) *asset {
	b, err := static.ReadFile(name)
	if err != nil {
		panic("web: embedded file missing: " + name) // a build mistake, caught by the tests
	}
	sum := sha256.Sum256(b)
	return &asset{name: name, body: b, contentType: contentType, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
}

// csp allows only the page's own origin: scripts and styles from the files
// above (no inline code), fetches to the same server, and nothing framed.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the chat page at "/" and its assets under "/static/", for
// GET and HEAD only. Each response carries a strong ETag (a hash of the
// file) and "Cache-Control: no-cache", so browsers revalidate and get 304
// until the binary changes. Any other path is 404, any other method 405.
func Handler() http.Handler {
	return http.HandlerFunc(serve)
}

func serve(w http.ResponseWriter, r *http.Request) {
	a, ok := assets[r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("ETag", a.etag)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	if a.contentType == "text/html; charset=utf-8" {
		h.Set("Content-Security-Policy", csp)
		h.Set("Referrer-Policy", "no-referrer")
	}
	// ServeContent answers If-None-Match (304) and Range from the ETag; a
	// zero modification time leaves Last-Modified out.
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}
