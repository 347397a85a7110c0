package hub

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeHub serves one file the way huggingface.co does: at
// /OWNER/REPO/resolve/REVISION/FILE, with its sha256 as ETag (or, with
// redirect, on a 302 to a CDN path as X-Linked-Etag and X-Linked-Size),
// honoring Range requests unless told otherwise.
type fakeHub struct {
	data        []byte
	path        string // the resolve path served, e.g. /o/r/resolve/main/f.gguf
	sha         string // announced sha256; "" means the real one
	noSHA       bool   // announce no sha256
	size        string // X-Linked-Size to announce on a redirect ("" means the real size)
	ignoreRange bool
	redirect    bool
	status      int    // if nonzero, answer every request with it
	token       string // if set, demand "Bearer token"
	cutAt       int    // if > 0, the first cuts responses end after this many bytes of the file
	cuts        int
	stallAt     int           // if > 0, the first stalls responses stop sending after this many bytes of the file, until the client gives up
	stalls      int           // how many responses stall
	chunkDelay  time.Duration // pause between 4 KiB writes
	silent      bool          // accept requests and never answer

	mu       sync.Mutex
	requests []*http.Request // resolve requests, in order
}

func newFakeHub(t *testing.T, size int) (*fakeHub, *httptest.Server) {
	t.Helper()
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(1, uint64(size)))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	h := &fakeHub{data: data, path: "/o/r/resolve/main/m.gguf"}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return h, srv
}

func (h *fakeHub) sum() string {
	s := sha256.Sum256(h.data)
	return hex.EncodeToString(s[:])
}

func (h *fakeHub) gets() []*http.Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*http.Request(nil), h.requests...)
}

func (h *fakeHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sha := h.sha
	if sha == "" {
		sha = h.sum()
	}
	if r.URL.Path == "/cdn/blob" {
		w.Header().Set("ETag", `"d41d8cd98f00b204e9800998ecf8427e"`) // an S3-style md5, not the sha256
		h.serveFile(w, r)
		return
	}
	if r.URL.EscapedPath() != h.path {
		http.Error(w, "Entry not found", http.StatusNotFound)
		return
	}
	h.mu.Lock()
	h.requests = append(h.requests, r)
	h.mu.Unlock()
	if h.token != "" && r.Header.Get("Authorization") != "Bearer "+h.token {
		w.Header().Set("X-Error-Message", "Invalid credentials in Authorization header")
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	if h.silent {
		<-r.Context().Done()
		return
	}
	if h.status != 0 {
		http.Error(w, http.StatusText(h.status), h.status)
		return
	}
	if h.redirect {
		if !h.noSHA {
			w.Header().Set("X-Linked-Etag", `"`+sha+`"`)
		}
		size := h.size
		if size == "" {
			size = strconv.Itoa(len(h.data))
		}
		w.Header().Set("X-Linked-Size", size)
		w.Header().Set("ETag", `W/"0123456789012345678901234567890123456789"`) // git blob sha1
		http.Redirect(w, r, "/cdn/blob", http.StatusFound)
		return
	}
	if !h.noSHA {
		w.Header().Set("ETag", `"`+sha+`"`)
	}
	h.serveFile(w, r)
}

func (h *fakeHub) serveFile(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	cut, stall := 0, 0
	if h.cuts > 0 {
		h.cuts--
		cut = h.cutAt
	} else if h.stalls > 0 {
		h.stalls--
		stall = h.stallAt
	}
	h.mu.Unlock()

	start := 0
	if rg := r.Header.Get("Range"); rg != "" && !h.ignoreRange {
		n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"))
		if err != nil || n < 0 {
			http.Error(w, "bad range", http.StatusBadRequest)
			return
		}
		if n >= len(h.data) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", len(h.data)))
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		start = n
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", n, len(h.data)-1, len(h.data)))
		w.Header().Set("Content-Length", strconv.Itoa(len(h.data)-n))
		w.WriteHeader(http.StatusPartialContent)
	} else {
		w.Header().Set("Content-Length", strconv.Itoa(len(h.data)))
		w.WriteHeader(http.StatusOK)
	}
	end := len(h.data)
	if cut > 0 && cut < end {
		end = cut
	}
	if stall > 0 && stall < end {
		end = stall
	}
	for i := start; i < end; i += 4096 {
		if _, err := w.Write(h.data[i:min(i+4096, end)]); err != nil {
			return
		}
		w.(http.Flusher).Flush()
		if h.chunkDelay > 0 {
			time.Sleep(h.chunkDelay)
		}
	}
	if stall > 0 && end < len(h.data) {
		<-r.Context().Done()
		return
	}
	if end < len(h.data) {
		panic(http.ErrAbortHandler) // cut the connection mid-body
	}
}

func testClient(srv *httptest.Server, dir string) (*Client, *bytes.Buffer) {
	var prog bytes.Buffer
	return &Client{Endpoint: srv.URL, CacheDir: dir, HTTP: srv.Client(), Progress: &prog}, &prog
}

func checkDownload(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes that differ from the served %d", path, len(got), len(want))
	}
	for _, ext := range []string{".part", ".lock"} {
		if _, err := os.Stat(path + ext); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s%s left behind (%v)", path, ext, err)
		}
	}
}

const ref = "hf:o/r/m.gguf"

func TestResolveDownloadsOnceThenUsesCache(t *testing.T) {
	h, srv := newFakeHub(t, 100_000)
	dir := t.TempDir()
	c, prog := testClient(srv, dir)
	c.Token = "secret"
	h.token = "secret"
	p, err := c.Resolve(t.Context(), ref)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "o", "r", "m.gguf"); p != want {
		t.Errorf("path %s, want %s", p, want)
	}
	checkDownload(t, p, h.data)
	if n := len(h.gets()); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
	if !strings.Contains(prog.String(), "done, 97.7 KiB") {
		t.Errorf("progress output %q lacks the summary", prog.String())
	}

	// Cached: no request, even with the server gone.
	srv.Close()
	p2, err := c.Resolve(t.Context(), ref)
	if err != nil || p2 != p {
		t.Fatalf("second Resolve = %q, %v; want %q from the cache", p2, err, p)
	}
	if n := len(h.gets()); n != 1 {
		t.Errorf("%d requests after the second Resolve, want 1", n)
	}
}

func TestResolveResumesAfterCut(t *testing.T) {
	h, srv := newFakeHub(t, 64<<10)
	h.cutAt, h.cuts = 20_000, 1
	c, prog := testClient(srv, t.TempDir())
	p, err := c.Resolve(t.Context(), ref)
	if err != nil {
		t.Fatal(err)
	}
	checkDownload(t, p, h.data)
	gets := h.gets()
	if len(gets) != 2 {
		t.Fatalf("%d requests, want 2", len(gets))
	}
	if rg := gets[1].Header.Get("Range"); rg != "bytes=20000-" {
		t.Errorf("second request Range %q, want bytes=20000-", rg)
	}
	if !strings.Contains(prog.String(), "resuming") {
		t.Errorf("progress output %q does not mention resuming", prog.String())
	}
}

// TestResolveResumesPartFile is an earlier process's interrupted
// download: the .part holds the first bytes, and the sha256 covers them.
func TestResolveResumesPartFile(t *testing.T) {
	for _, redirect := range []bool{false, true} {
		t.Run(fmt.Sprintf("redirect=%v", redirect), func(t *testing.T) {
			h, srv := newFakeHub(t, 50_000)
			h.redirect = redirect
			dir := t.TempDir()
			c, _ := testClient(srv, dir)
			dest, _ := c.Path(ref)
			os.MkdirAll(filepath.Dir(dest), 0o755)
			if err := os.WriteFile(dest+".part", h.data[:12345], 0o644); err != nil {
				t.Fatal(err)
			}
			p, err := c.Resolve(t.Context(), ref)
			if err != nil {
				t.Fatal(err)
			}
			checkDownload(t, p, h.data)
			if gets := h.gets(); len(gets) != 1 || gets[0].Header.Get("Range") != "bytes=12345-" {
				t.Errorf("requests %d, first Range %q; want 1 with bytes=12345-", len(gets), gets[0].Header.Get("Range"))
			}
		})
	}
}

func TestResolveCompletePartFile(t *testing.T) {
	h, srv := newFakeHub(t, 5000)
	c, _ := testClient(srv, t.TempDir())
	dest, _ := c.Path(ref)
	os.MkdirAll(filepath.Dir(dest), 0o755)
	os.WriteFile(dest+".part", h.data, 0o644)
	p, err := c.Resolve(t.Context(), ref)
	if err != nil {
		t.Fatal(err)
	}
	checkDownload(t, p, h.data)
}

func TestResolveServerIgnoresRange(t *testing.T) {
	h, srv := newFakeHub(t, 30_000)
	h.ignoreRange = true
	c, prog := testClient(srv, t.TempDir())
	dest, _ := c.Path(ref)
	os.MkdirAll(filepath.Dir(dest), 0o755)
	os.WriteFile(dest+".part", bytes.Repeat([]byte("x"), 7000), 0o644) // wrong bytes: must be discarded
	p, err := c.Resolve(t.Context(), ref)
	if err != nil {
		t.Fatal(err)
	}
	checkDownload(t, p, h.data)
	if !strings.Contains(prog.String(), "ignored the range") {
		t.Errorf("progress output %q does not say the range was ignored", prog.String())
	}
}

// TestResolveStalePartFile: the .part holds the start of another version
// of the file; the checksum fails after resuming, and a fresh download
// succeeds.
func TestResolveStalePartFile(t *testing.T) {
	h, srv := newFakeHub(t, 30_000)
	c, _ := testClient(srv, t.TempDir())
	dest, _ := c.Path(ref)
	os.MkdirAll(filepath.Dir(dest), 0o755)
	os.WriteFile(dest+".part", bytes.Repeat([]byte("x"), 7000), 0o644)
	p, err := c.Resolve(t.Context(), ref)
	if err != nil {
		t.Fatal(err)
	}
	checkDownload(t, p, h.data)
	if gets := h.gets(); len(gets) != 2 || gets[1].Header.Get("Range") != "" {
		t.Errorf("%d requests; want 2, the second without Range", len(gets))
	}
}

func TestResolveRejectsCorruptDownloads(t *testing.T) {
	cases := []struct {
		name  string
		setup func(h *fakeHub)
		want  string
	}{
		{"wrong sha256", func(h *fakeHub) { h.sha = strings.Repeat("ab", 32) }, "sha256"},
		{"wrong linked sha256", func(h *fakeHub) { h.redirect, h.sha = true, strings.Repeat("CD", 32) }, "the server announced cdcd"},
		{"wrong linked size", func(h *fakeHub) { h.redirect, h.size = true, "999" }, "the server announced 999"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, srv := newFakeHub(t, 10_000)
			tc.setup(h)
			c, _ := testClient(srv, t.TempDir())
			_, err := c.Resolve(t.Context(), ref)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), ref+": ") {
				t.Fatalf("Resolve error %v, want one beginning %q and mentioning %q", err, ref, tc.want)
			}
			dest, _ := c.Path(ref)
			for _, p := range []string{dest, dest + ".part"} {
				if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s exists after a failed check", p)
				}
			}
		})
	}
}

func TestResolveWithoutChecksum(t *testing.T) {
	h, srv := newFakeHub(t, 10_000)
	h.noSHA = true
	c, _ := testClient(srv, t.TempDir())
	p, err := c.Resolve(t.Context(), ref)
	if err != nil {
		t.Fatal(err)
	}
	checkDownload(t, p, h.data)
}

func TestResolveHTTPErrors(t *testing.T) {
	cases := []struct {
		name   string
		status int
		token  string
		ref    string
		want   []string
	}{
		{name: "missing file", ref: "hf:o/r/other.gguf", want: []string{"404 Not Found", "check the owner", "Entry not found"}},
		{name: "no token", token: "t0k", ref: ref, want: []string{"401 Unauthorized", "HF_TOKEN", "Invalid credentials"}},
		{name: "server error", status: 503, ref: ref, want: []string{"503 Service Unavailable"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, srv := newFakeHub(t, 100)
			h.status, h.token = tc.status, tc.token
			c, _ := testClient(srv, t.TempDir())
			_, err := c.Resolve(t.Context(), tc.ref)
			if err == nil {
				t.Fatal("Resolve succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestResolveOffline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: connection refused
	dir := t.TempDir()
	c := &Client{Endpoint: "http://" + addr, CacheDir: dir}
	dest := filepath.Join(dir, "o", "r", "m.gguf")

	_, err = c.Resolve(t.Context(), ref)
	want := ref + ": cannot download (offline?): "
	if err == nil || !strings.HasPrefix(err.Error(), want) || !strings.HasSuffix(err.Error(), "; the file is not in the cache at "+dest) {
		t.Fatalf("error %v, want %q…; the file is not in the cache at %s", err, want, dest)
	}
	if !strings.Contains(err.Error(), "refused") {
		t.Errorf("error %q does not give the cause", err)
	}

	os.WriteFile(dest, []byte("cached"), 0o644)
	if p, err := c.Resolve(t.Context(), ref); err != nil || p != dest {
		t.Errorf("Resolve with a cached file = %q, %v", p, err)
	}
}

func TestResolveRevision(t *testing.T) {
	h, srv := newFakeHub(t, 1000)
	h.path = "/o/r/resolve/refs%2Fpr%2F1/sub/m.gguf"
	dir := t.TempDir()
	c, _ := testClient(srv, dir)
	p, err := c.Resolve(t.Context(), "hf:o/r/sub/m.gguf@refs/pr/1")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "o", "r@refs%2Fpr%2F1", "sub", "m.gguf"); p != want {
		t.Errorf("path %s, want %s", p, want)
	}
	checkDownload(t, p, h.data)
}

func TestResolveCanceled(t *testing.T) {
	h, srv := newFakeHub(t, 200_000)
	h.chunkDelay = 5 * time.Millisecond
	c, _ := testClient(srv, t.TempDir())
	dest, _ := c.Path(ref)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { // cancel once some of the file has been written
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			if fi, err := os.Stat(dest + ".part"); err == nil && fi.Size() > 0 {
				break
			}
		}
		cancel()
	}()
	_, err := c.Resolve(ctx, ref)
	if err == nil || !strings.Contains(err.Error(), "interrupted") || !errors.Is(err, context.Canceled) {
		t.Fatalf("Resolve error %v, want an interruption", err)
	}
	if fi, err := os.Stat(dest + ".part"); err != nil || fi.Size() == 0 {
		t.Errorf("the .part was not kept for resuming (%v)", err)
	}
}

func TestResolveStalledTransferResumes(t *testing.T) {
	defer func(d time.Duration) { stallTimeout = d }(stallTimeout)
	stallTimeout = 100 * time.Millisecond
	h, srv := newFakeHub(t, 40_000)
	h.stallAt, h.stalls = 8192, 1
	c, prog := testClient(srv, t.TempDir())
	p, err := c.Resolve(t.Context(), ref)
	if err != nil {
		t.Fatal(err)
	}
	checkDownload(t, p, h.data)
	if !strings.Contains(prog.String(), "no data received") {
		t.Errorf("progress output %q does not report the stall", prog.String())
	}
}

func TestResolveSilentServer(t *testing.T) {
	defer func(d time.Duration) { stallTimeout = d }(stallTimeout)
	stallTimeout = 100 * time.Millisecond
	h, srv := newFakeHub(t, 1000)
	h.silent = true
	c, _ := testClient(srv, t.TempDir())
	_, err := c.Resolve(t.Context(), ref)
	if err == nil || !strings.Contains(err.Error(), "no data received for 100ms") {
		t.Fatalf("Resolve error %v, want a stall", err)
	}
}

// TestResolveConcurrent resolves one file from several clients at once,
// as separate processes would: one downloads, the others wait on the
// lock and then find the file.
func TestResolveConcurrent(t *testing.T) {
	defer func(d time.Duration) { lockPoll = d }(lockPoll)
	lockPoll = 10 * time.Millisecond
	h, srv := newFakeHub(t, 64<<10)
	h.chunkDelay = 2 * time.Millisecond
	dir := t.TempDir()
	const n = 4
	paths := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			c, _ := testClient(srv, dir)
			paths[i], errs[i] = c.Resolve(t.Context(), ref)
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("client %d: %v", i, errs[i])
		}
		checkDownload(t, paths[i], h.data)
	}
	if g := len(h.gets()); g != 1 {
		t.Errorf("%d downloads, want 1", g)
	}
}

func TestResolveBadRef(t *testing.T) {
	c := &Client{CacheDir: t.TempDir(), Endpoint: "http://127.0.0.1:1"}
	for _, r := range []string{"hf:o/r", "hf:o/r/../x.gguf", "o/r/m.gguf"} {
		if _, err := c.Resolve(t.Context(), r); err == nil || !strings.Contains(err.Error(), "bad reference") {
			t.Errorf("Resolve(%q) error %v, want a bad reference", r, err)
		}
	}
}

func TestNewClientFromEnvironment(t *testing.T) {
	t.Setenv(EnvEndpoint, "http://127.0.0.1:9")
	t.Setenv(EnvToken, "tok")
	t.Setenv(EnvCache, "/tmp/spigot-cache")
	c := NewClient()
	if c.Endpoint != "http://127.0.0.1:9" || c.Token != "tok" || c.Progress != os.Stderr {
		t.Errorf("NewClient() = %+v", c)
	}
	p, err := c.Path("hf:o/r/m.gguf@v1")
	if want := filepath.Join("/tmp/spigot-cache", "models", "o", "r@v1", "m.gguf"); err != nil || p != want {
		t.Errorf("Path = %q, %v; want %q", p, err, want)
	}
	if u := c.URL(Ref{Owner: "o", Repo: "r", File: "a b/m#1.gguf", Revision: "main"}); u != "http://127.0.0.1:9/o/r/resolve/main/a%20b/m%231.gguf" {
		t.Errorf("URL = %q", u)
	}
}

func TestParseContentRange(t *testing.T) {
	cases := []struct {
		in                string
		start, end, total int64
		ok                bool
	}{
		{"bytes 0-9/10", 0, 9, 10, true},
		{"bytes 5-9/*", 5, 9, -1, true},
		{"bytes */10", -1, -1, 10, true},
		{"bytes 9-5/10", -1, -1, -1, false},
		{"items 0-9/10", -1, -1, -1, false},
		{"bytes 0-9", -1, -1, -1, false},
	}
	for _, tc := range cases {
		s, e, n, ok := parseContentRange(tc.in)
		if s != tc.start || e != tc.end || n != tc.total || ok != tc.ok {
			t.Errorf("parseContentRange(%q) = %d, %d, %d, %v; want %d, %d, %d, %v", tc.in, s, e, n, ok, tc.start, tc.end, tc.total, tc.ok)
		}
	}
}
