package web

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, method, target string, header http.Header) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	Handler().ServeHTTP(rec, req)
	return rec
}

func TestHandler(t *testing.T) {
	tests := []struct {
		name, method, path string
		status             int
		contentType        string
		contains           string
	}{
		{name: "index", method: "GET", path: "/", status: 200, contentType: "text/html; charset=utf-8", contains: `id="prompt"`},
		{name: "index head", method: "HEAD", path: "/", status: 200, contentType: "text/html; charset=utf-8"},
		{name: "style", method: "GET", path: "/static/style.css", status: 200, contentType: "text/css; charset=utf-8", contains: ".msg.assistant"},
		{name: "app", method: "GET", path: "/static/app.js", status: 200, contentType: "text/javascript; charset=utf-8", contains: "v1/chat/completions"},
		{name: "stream", method: "GET", path: "/static/stream.js", status: 200, contentType: "text/javascript; charset=utf-8", contains: "class SSEParser"},
		{name: "icon", method: "GET", path: "/static/favicon.svg", status: 200, contentType: "image/svg+xml", contains: "<svg"},
		{name: "post", method: "POST", path: "/", status: 405},
		{name: "delete asset", method: "DELETE", path: "/static/app.js", status: 405},
		{name: "index.html", method: "GET", path: "/index.html", status: 404},
		{name: "static dir", method: "GET", path: "/static/", status: 404},
		{name: "trailing slash", method: "GET", path: "/static/app.js/", status: 404},
		{name: "api path", method: "GET", path: "/v1/models", status: 404},
		{name: "source file", method: "GET", path: "/web.go", status: 404},
		{name: "favicon.ico", method: "GET", path: "/favicon.ico", status: 404},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := get(t, tc.method, tc.path, nil)
			if rec.Code != tc.status {
				t.Fatalf("%s %s: status %d, want %d", tc.method, tc.path, rec.Code, tc.status)
			}
			if tc.status == http.StatusMethodNotAllowed {
				if got := rec.Header().Get("Allow"); got != "GET, HEAD" {
					t.Errorf("%s %s: Allow = %q, want %q", tc.method, tc.path, got, "GET, HEAD")
				}
			}
			if tc.status != http.StatusOK {
				return
			}
			h := rec.Header()
			if got := h.Get("Content-Type"); got != tc.contentType {
				t.Errorf("%s: Content-Type = %q, want %q", tc.path, got, tc.contentType)
			}
			if etag := h.Get("ETag"); !regexp.MustCompile(`^"[0-9a-f]{16}"$`).MatchString(etag) {
				t.Errorf("%s: ETag = %q, want a quoted hash", tc.path, etag)
			}
			if got := h.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("%s: X-Content-Type-Options = %q, want nosniff", tc.path, got)
			}
			if tc.method == "HEAD" {
				if rec.Body.Len() != 0 {
					t.Errorf("HEAD %s: body of %d bytes, want none", tc.path, rec.Body.Len())
				}
				return
			}
			if !strings.Contains(rec.Body.String(), tc.contains) {
				t.Errorf("%s: body lacks %q", tc.path, tc.contains)
			}
		})
	}
}

// TestHandlerETag checks that a client holding the current version gets 304
// and that distinct files have distinct tags.
func TestHandlerETag(t *testing.T) {
	seen := map[string]string{}
	for path := range assets {
		rec := get(t, "GET", path, nil)
		etag := rec.Header().Get("ETag")
		if other, dup := seen[etag]; dup {
			t.Errorf("%s and %s share the ETag %s", path, other, etag)
		}
		seen[etag] = path
		rec = get(t, "GET", path, http.Header{"If-None-Match": {etag}})
		if rec.Code != http.StatusNotModified {
			t.Errorf("GET %s with If-None-Match %s: status %d, want 304", path, etag, rec.Code)
		}
		rec = get(t, "GET", path, http.Header{"If-None-Match": {`"stale"`}})
		if rec.Code != http.StatusOK || rec.Body.Len() == 0 {
			t.Errorf("GET %s with a stale ETag: status %d, %d bytes, want 200 and the file", path, rec.Code, rec.Body.Len())
		}
	}
}

// TestHandlerCSP checks the page's Content-Security-Policy, which makes the
// browser refuse anything from another origin and any inline script.
func TestHandlerCSP(t *testing.T) {
	csp := get(t, "GET", "/", nil).Header().Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
		t.Errorf("Content-Security-Policy %q allows inline code", csp)
	}
}

// TestEmbeddedFilesServed checks that every embedded file is served and
// every served file is embedded, so no file ships unused or goes missing.
func TestEmbeddedFilesServed(t *testing.T) {
	served := map[string]bool{}
	for _, a := range assets {
		served[a.name] = true
	}
	err := fs.WalkDir(static, "static", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if !served[name] {
			t.Errorf("%s is embedded but not served", name)
		}
		delete(served, name)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for name := range served {
		t.Errorf("%s is served but not embedded", name)
	}
}

// TestLocalReferencesOnly checks that the page references only files that
// Handler serves and API paths of the same server: no CDN, no web font, no
// absolute URL. The browser test checks the same at run time, through the
// Content-Security-Policy.
func TestLocalReferencesOnly(t *testing.T) {
	patterns := map[string][]*regexp.Regexp{
		"/":                 {regexp.MustCompile(`(?:src|href|action)\s*=\s*"([^"]*)"`)},
		"/static/style.css": {regexp.MustCompile(`url\(\s*['"]?([^'")]*)`), regexp.MustCompile(`@import\s+['"]([^'"]*)`)},
		"/static/app.js":    {regexp.MustCompile(`(?:import|from)\s*\(?\s*'([^']*)'`), regexp.MustCompile(`fetch\(\s*'([^']*)'`)},
		"/static/stream.js": {regexp.MustCompile(`(?:import|from)\s*\(?\s*'([^']*)'`), regexp.MustCompile(`fetch\(\s*'([^']*)'`)},
	}
	api := map[string]bool{"v1/models": true, "v1/chat/completions": true}
	found := 0
	for path, res := range patterns {
		body := string(assets[path].body)
		if m := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`).FindString(stripComments(body)); m != "" {
			t.Errorf("%s mentions the outside address %q", path, m)
		}
		for _, re := range res {
			for _, m := range re.FindAllStringSubmatch(body, -1) {
				ref := m[1]
				found++
				switch {
				case api[ref]:
				case strings.HasPrefix(ref, "./") && path != "/":
					// A module import, relative to /static/.
					if _, ok := assets["/static/"+strings.TrimPrefix(ref, "./")]; !ok {
						t.Errorf("%s imports %q, which Handler does not serve", path, ref)
					}
				case strings.HasPrefix(ref, "static/") && path == "/":
					if _, ok := assets["/"+ref]; !ok {
						t.Errorf("%s references %q, which Handler does not serve", path, ref)
					}
				default:
					t.Errorf("%s references %q: want a relative path to a served file or an API path", path, ref)
				}
			}
		}
	}
	if found < 6 {
		t.Errorf("found %d references in all; the patterns no longer match the files", found)
	}
}

// stripComments drops /* */ and // comments, roughly: enough that prose in
// comments may name a site without tripping the check above.
func stripComments(s string) string {
	s = regexp.MustCompile(`(?s)/\*.*?\*/`).ReplaceAllString(s, "")
	return regexp.MustCompile(`(?m)^\s*//.*$`).ReplaceAllString(s, "")
}
