// Package hub resolves model references of the form
// hf:OWNER/REPO/FILE[@REVISION] to local files, downloading each file
// from Hugging Face once into a cache directory.
//
// A download goes to FILE.part beside its final place and survives
// interruption: the next attempt, in the same call or a later one, asks
// for the rest with an HTTP Range request (and starts over if the server
// answers 200 rather than 206). The finished file is checked against the
// size the server announced (X-Linked-Size, Content-Range or
// Content-Length) and, for LFS files, against the sha256 that Hugging
// Face sends as X-Linked-Etag or ETag; only then is it renamed into
// place. A file already in the cache is used without any request, so
// cached models work offline.
//
// Downloads of the same file by several processes are serialized by a
// lock on FILE.lock (flock on Unix, an exclusive open on Windows); the
// second process waits and then finds the file in the cache.
package hub

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultEndpoint is the Hugging Face server files are downloaded from.
const DefaultEndpoint = "https://huggingface.co"

// Environment variables [NewClient] reads.
const (
	EnvEndpoint = "SPIGOT_HF_ENDPOINT" // server URL instead of DefaultEndpoint (HF_ENDPOINT is read too)
	EnvCache    = "SPIGOT_CACHE"       // Spigot's cache directory; models go under its "models" folder
	EnvToken    = "HF_TOKEN"           // access token for gated or private repositories
)

// Tunables; variables so tests can shorten them.
var (
	// stallTimeout ends an attempt that received no bytes for this long.
	stallTimeout = 60 * time.Second
	// lockPoll is how often a process waiting for another's download
	// tries the lock again.
	lockPoll = 200 * time.Millisecond
)

// maxAttempts bounds the requests one Resolve makes for one file: an
// interrupted transfer that made progress is resumed at once, and a
// resumed file whose sha256 does not match is downloaded again from the
// start (the .part may hold an older version of the file).
const maxAttempts = 5

// A Client resolves references to files in its cache, downloading what
// is missing. Its zero value works: it downloads from [DefaultEndpoint]
// into the default cache directory, without a token or progress output.
// [NewClient] fills the fields from the environment.
type Client struct {
	// Endpoint is the server's base URL, such as "https://huggingface.co";
	// empty means DefaultEndpoint.
	Endpoint string
	// CacheDir holds the files: CacheDir/OWNER/REPO/FILE for revision
	// "main" and CacheDir/OWNER/REPO@REVISION/FILE for others. Empty
	// means the default: $SPIGOT_CACHE/models, or else
	// os.UserCacheDir()/spigot/models.
	CacheDir string
	// Token, if set, is sent as "Authorization: Bearer Token" (to the
	// endpoint only: net/http drops it on redirects to other hosts, such
	// as Hugging Face's CDN, whose URLs are signed).
	Token string
	// HTTP sends the requests; nil means http.DefaultClient. Give it no
	// Timeout: a download can take hours. Resolve's context bounds it,
	// and an attempt that receives nothing for a minute is abandoned.
	HTTP *http.Client
	// Progress, if not nil, receives a progress bar while a file
	// downloads: redrawn in place with \r when it is a terminal, plain
	// lines otherwise.
	Progress io.Writer
}

// NewClient returns a Client configured from the environment:
// SPIGOT_HF_ENDPOINT (or HF_ENDPOINT), SPIGOT_CACHE and HF_TOKEN, with
// progress on standard error.
func NewClient() *Client {
	ep := os.Getenv(EnvEndpoint)
	if ep == "" {
		ep = os.Getenv("HF_ENDPOINT")
	}
	return &Client{
		Endpoint: ep,
		Token:    os.Getenv(EnvToken),
		Progress: os.Stderr,
	}
}

// DefaultCacheDir returns the directory a Client with an empty CacheDir
// uses: $SPIGOT_CACHE/models, or os.UserCacheDir()/spigot/models.
func DefaultCacheDir() (string, error) {
	if d := os.Getenv(EnvCache); d != "" {
		return filepath.Join(d, "models"), nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("hub: no cache directory (set %s): %w", EnvCache, err)
	}
	return filepath.Join(d, "spigot", "models"), nil
}

// Path returns where ref's file is, or will be, in the cache, without
// touching the file system or the network.
func (c *Client) Path(ref string) (string, error) {
	r, err := ParseRef(ref)
	if err != nil {
		return "", err
	}
	return c.path(r)
}

func (c *Client) path(r Ref) (string, error) {
	dir := c.CacheDir
	if dir == "" {
		var err error
		if dir, err = DefaultCacheDir(); err != nil {
			return "", err
		}
	}
	return filepath.Join(dir, r.cachePath()), nil
}

// URL returns the address ref's file is downloaded from:
// ENDPOINT/OWNER/REPO/resolve/REVISION/FILE.
func (c *Client) URL(r Ref) string {
	ep := c.Endpoint
	if ep == "" {
		ep = DefaultEndpoint
	}
	var b strings.Builder
	b.WriteString(strings.TrimRight(ep, "/"))
	for _, s := range []string{r.Owner, r.Repo, "resolve", r.Revision} {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	for el := range strings.SplitSeq(r.File, "/") {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(el))
	}
	return b.String()
}

// Resolve returns the local path of ref's file (hf:OWNER/REPO/FILE or
// hf:OWNER/REPO/FILE@REVISION), downloading it into the cache first if
// it is not there. A cached file is returned without any request.
//
// Errors begin with the reference. If the server cannot be reached and
// the file is not cached the error says so and names the cache path, so
// that the file can be put there by hand.
func (c *Client) Resolve(ctx context.Context, ref string) (string, error) {
	r, err := ParseRef(ref)
	if err != nil {
		return "", err
	}
	dest, err := c.path(r)
	if err != nil {
		return "", err
	}
	if fi, err := os.Stat(dest); err == nil && fi.Mode().IsRegular() {
		return dest, nil
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return "", fmt.Errorf("%s: creating the cache directory: %w", r, err)
	}
	unlock, err := lock(ctx, dest+".lock", func() {
		if c.Progress != nil {
			fmt.Fprintf(c.Progress, "%s: waiting for another download of the same file to finish\n", r)
		}
	})
	if err != nil {
		return "", fmt.Errorf("%s: locking %s: %w", r, dest+".lock", err)
	}
	// Another process may have finished the download while we waited.
	if fi, err := os.Stat(dest); err == nil && fi.Mode().IsRegular() {
		unlock()
		return dest, nil
	}
	err = c.download(ctx, r, dest)
	unlock()
	if err != nil {
		return "", fmt.Errorf("%s: %w", r, err)
	}
	// With the file in place nobody needs the lock file: a process that
	// still waits on it, or makes a new one, finds the file. (After a
	// failure it stays, so that waiters and newcomers lock the same file.)
	os.Remove(dest + ".lock")
	return dest, nil
}

// errCorrupt marks a finished download whose size or sha256 is wrong.
var errCorrupt = errors.New("downloaded file does not match")

// errStalled ends an attempt that received nothing for stallTimeout.
var errStalled = errors.New("no data received")

// download fetches r into dest+".part", resuming and retrying as
// maxAttempts allows, checks it and renames it to dest. The caller holds
// the lock.
func (c *Client) download(ctx context.Context, r Ref, dest string) error {
	part := dest + ".part"
	prog := newProgress(c.Progress, baseName(r.File))
	defer prog.finish()
	restarted := false
	for attempt := 1; ; attempt++ {
		a, err := c.attempt(ctx, r, part, prog)
		if err == nil {
			if err := os.Rename(part, dest); err != nil {
				return fmt.Errorf("moving the download into place: %w", err)
			}
			prog.done()
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("download interrupted (%s kept in %s; the next run resumes it): %w", humanBytes(a.have), part, context.Cause(ctx))
		}
		if attempt >= maxAttempts {
			return err
		}
		switch {
		case errors.Is(err, errCorrupt) && a.offset > 0 && !restarted:
			// The part may hold the start of an older version of the file.
			restarted = true
			prog.note("checksum mismatch after resuming; downloading again from the start")
		case a.received > 0 && !errors.Is(err, errCorrupt) && a.status != 0:
			prog.note(fmt.Sprintf("transfer interrupted at %s (%v); resuming", humanBytes(a.have), err))
		default:
			return err
		}
	}
}

// attemptInfo describes one request of a download.
type attemptInfo struct {
	status   int   // HTTP status, 0 if none came
	offset   int64 // bytes of the .part kept (the Range start)
	received int64 // body bytes received in this attempt
	have     int64 // bytes in the .part afterwards
}

// attempt makes one request for r, appending to part from its current
// size (or starting over if the server sends the whole file), and
// returns nil when part is complete and verified.
func (c *Client) attempt(ctx context.Context, r Ref, part string, prog *progress) (a attemptInfo, err error) {
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return a, err
	}
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return a, err
	}
	a.offset = fi.Size()
	a.have = a.offset

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	u := c.URL(r)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return a, err
	}
	req.Header.Set("User-Agent", "spigot")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	if a.offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", a.offset))
	}
	// The stall timer runs from the request on: a server that accepts
	// the connection and never answers is a stall too.
	timer := time.AfterFunc(stallTimeout, func() { cancel(fmt.Errorf("%w for %v", errStalled, stallTimeout)) })
	defer timer.Stop()
	hc, meta := c.tracingClient()
	resp, err := hc.Do(req)
	if err != nil {
		if cause := context.Cause(ctx); cause != nil {
			return a, cause
		}
		return a, offlineError(err, part)
	}
	defer resp.Body.Close()
	a.status = resp.StatusCode
	meta.add(resp.Header)

	var total int64 = -1 // the file's full size, -1 if unknown
	switch resp.StatusCode {
	case http.StatusOK:
		if a.offset > 0 {
			prog.note(fmt.Sprintf("server ignored the range request; starting over (%s discarded)", humanBytes(a.offset)))
		}
		if err := f.Truncate(0); err != nil {
			return a, err
		}
		a.offset, a.have = 0, 0
		total = resp.ContentLength
	case http.StatusPartialContent:
		start, end, tot, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != a.offset {
			return a, fmt.Errorf("server answered a request for bytes %d- with Content-Range %q", a.offset, resp.Header.Get("Content-Range"))
		}
		total = tot
		if total < 0 && end >= 0 {
			total = end + 1 // a guess; X-Linked-Size wins below
		}
	case http.StatusRequestedRangeNotSatisfiable:
		// The part is already complete, or longer than the file.
		_, _, tot, _ := parseContentRange(resp.Header.Get("Content-Range"))
		if tot < 0 {
			tot = meta.size()
		}
		if tot != a.offset {
			f.Close()
			f = nil
			os.Remove(part)
			return a, fmt.Errorf("%s (%s) is larger than the file on the server; deleted it: %w", part, humanBytes(a.offset), errCorrupt)
		}
		total = tot
	default:
		return a, statusError(resp, u)
	}
	if n := meta.size(); n >= 0 {
		total = n
	}
	want := meta.sha256()

	h := sha256.New()
	if a.offset > 0 {
		// Hash what an earlier attempt wrote, then append to it.
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return a, err
		}
		if n, err := io.CopyN(h, f, a.offset); err != nil {
			return a, fmt.Errorf("re-reading %s (%d of %d bytes): %w", part, n, a.offset, err)
		}
	}
	if _, err := f.Seek(a.offset, io.SeekStart); err != nil {
		return a, err
	}
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		prog.start(a.offset, total, u)
		body := &watchReader{r: resp.Body, timer: timer, prog: prog}
		n, err := io.Copy(io.MultiWriter(f, h), body)
		a.received = n
		a.have = a.offset + n
		if err != nil {
			if cause := context.Cause(ctx); cause != nil {
				err = cause
			}
			return a, err
		}
	}
	if total >= 0 && a.have != total {
		if a.have < total {
			return a, fmt.Errorf("connection closed at %s of %s", humanBytes(a.have), humanBytes(total))
		}
		f.Close()
		f = nil
		os.Remove(part)
		return a, fmt.Errorf("%w: got %d bytes, the server announced %d (deleted the download)", errCorrupt, a.have, total)
	}
	if want != "" {
		if got := hex.EncodeToString(h.Sum(nil)); got != want {
			f.Close()
			f = nil
			os.Remove(part)
			return a, fmt.Errorf("%w: sha256 %s, the server announced %s (deleted the download)", errCorrupt, got, want)
		}
	}
	if err := f.Sync(); err != nil {
		return a, err
	}
	err = f.Close()
	f = nil
	return a, err
}

// watchReader resets a stall timer and advances the progress bar on
// every read that returns data.
type watchReader struct {
	r     io.Reader
	timer *time.Timer
	prog  *progress
}

func (w *watchReader) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	if n > 0 {
		w.timer.Reset(stallTimeout)
		w.prog.add(int64(n))
	}
	return n, err
}

// metadata collects the size and checksum headers of every response of a
// request, redirects included: Hugging Face puts X-Linked-Size and
// X-Linked-Etag on its redirect to the CDN, whose own ETag is not the
// file's sha256.
type metadata struct {
	mu      sync.Mutex
	headers []http.Header
}

func (m *metadata) add(h http.Header) {
	m.mu.Lock()
	m.headers = append(m.headers, h)
	m.mu.Unlock()
}

// size returns X-Linked-Size from the first response that had one, or -1.
func (m *metadata) size() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, h := range m.headers {
		if v := h.Get("X-Linked-Size"); v != "" {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
				return n
			}
		}
	}
	return -1
}

// sha256 returns the file's sha256 in lowercase hex: X-Linked-Etag if
// any response had it, else an ETag that is 64 hex digits; "" if none.
// (The ETag of a file not stored in LFS is its git blob sha1, 40 digits,
// which cannot be checked without git's header, so it is ignored.)
func (m *metadata) sha256() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, key := range []string{"X-Linked-Etag", "Etag"} {
		for _, h := range m.headers {
			if s, ok := etagSHA256(h.Get(key)); ok {
				return s
			}
		}
	}
	return ""
}

// etagSHA256 extracts a sha256 from an ETag such as "abc…" or W/"abc…".
func etagSHA256(v string) (string, bool) {
	v = strings.TrimPrefix(strings.TrimSpace(v), "W/")
	v = strings.Trim(v, `"`)
	if len(v) != 64 {
		return "", false
	}
	if _, err := hex.DecodeString(v); err != nil {
		return "", false
	}
	return strings.ToLower(v), true
}

// tracingClient returns c.HTTP, or the default client, with a redirect
// check that records each redirect response's headers in meta.
func (c *Client) tracingClient() (*http.Client, *metadata) {
	base := c.HTTP
	if base == nil {
		base = http.DefaultClient
	}
	hc := *base
	meta := &metadata{}
	next := base.CheckRedirect
	hc.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if req.Response != nil {
			meta.add(req.Response.Header)
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	return &hc, meta
}

// parseContentRange parses "bytes START-END/TOTAL" and "bytes */TOTAL";
// unknown parts are -1.
func parseContentRange(v string) (start, end, total int64, ok bool) {
	start, end, total = -1, -1, -1
	rest, found := strings.CutPrefix(v, "bytes ")
	if !found {
		return start, end, total, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return start, end, total, false
	}
	if tot != "*" {
		n, err := strconv.ParseInt(tot, 10, 64)
		if err != nil || n < 0 {
			return start, end, total, false
		}
		total = n
	}
	if rng == "*" {
		return start, end, total, true
	}
	s, e, found := strings.Cut(rng, "-")
	if !found {
		return start, end, total, false
	}
	a, err1 := strconv.ParseInt(s, 10, 64)
	b, err2 := strconv.ParseInt(e, 10, 64)
	if err1 != nil || err2 != nil || a < 0 || b < a {
		return -1, -1, -1, false
	}
	return a, b, total, true
}

// offlineError describes a request that reached no server.
func offlineError(err error, part string) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // drop net/url's "Get URL:" prefix; the cause names the host
	}
	dest := strings.TrimSuffix(part, ".part")
	return fmt.Errorf("cannot download (offline?): %v; the file is not in the cache at %s", err, dest)
}

// statusError describes an unsuccessful HTTP response.
func statusError(resp *http.Response, u string) error {
	var hint string
	switch resp.StatusCode {
	case http.StatusUnauthorized, http.StatusForbidden:
		hint = fmt.Sprintf(" (a gated or private repository? set %s to a token that can read it)", EnvToken)
	case http.StatusNotFound:
		hint = " (check the owner, repository, file name and revision)"
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	detail := strings.TrimSpace(string(msg))
	if e := resp.Header.Get("X-Error-Message"); e != "" {
		detail = e
	}
	if detail != "" {
		detail = ": " + strings.Join(strings.Fields(detail), " ")
	}
	return fmt.Errorf("GET %s: %s%s%s", u, resp.Status, hint, detail)
}

// baseName returns the last element of a slash-separated path.
func baseName(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}
