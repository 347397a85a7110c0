package gateway

import (
	"bufio"
	"context"
	"encoding/binary"
	"hash/fnv"
	"io"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Upstream is one server requests are routed to, with its health and load.
// It must not be copied.
type Upstream struct {
	cfg    UpstreamConfig
	models map[string]bool
	order  int // index of its entry in Config.Upstreams

	// Set for an upstream found by discovery: dns, which its entry's
	// resolver loop (under Gateway.upsMu) drains and prunes.
	addr       netip.Addr // the address it was found at
	draining   atomic.Bool
	stopHealth context.CancelFunc
	// joined: it has taken requests (a configured upstream from the
	// start, a discovered one from its first passing active check). One
	// that has not is not even a fallback when no upstream is healthy.
	joined atomic.Bool

	inflight atomic.Int64 // requests the gateway has open on it
	// The upstream's own count of its requests, queued and running, at
	// the last scrape (spigot only): it includes other clients' (other
	// gateway replicas').
	queued, running atomic.Int64

	mu          sync.Mutex // guards activeOK, ejectedTill
	activeOK    bool       // the last active check passed
	ejectedTill time.Time  // a request failed: out of rotation until then
}

// newUpstream returns the upstream for cfg, entry order of the
// configuration. It takes requests at once if activeOK, else after its
// first passing active check.
func newUpstream(cfg UpstreamConfig, order int, activeOK bool) *Upstream {
	u := &Upstream{cfg: cfg, models: map[string]bool{}, order: order, activeOK: activeOK}
	for _, m := range cfg.Models {
		u.models[m] = true
	}
	u.joined.Store(activeOK)
	return u
}

// Name returns the upstream's name.
func (u *Upstream) Name() string { return u.cfg.Name }

// Healthy reports whether the upstream takes new requests: its last
// active check passed, no request failure ejected it within the
// cool-down, and it is not draining.
func (u *Upstream) Healthy(now time.Time) bool {
	if u.draining.Load() {
		return false
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.activeOK && !now.Before(u.ejectedTill)
}

// Draining reports whether the upstream, found by discovery: dns, has
// left its name's DNS answer: it gets no new requests, and the ones in
// flight finish.
func (u *Upstream) Draining() bool { return u.draining.Load() }

// load is the upstream's load per unit of weight: the requests the
// gateway has in flight on it, or, when larger, the requests the upstream
// last reported queued and running (which counts other clients' too but
// is up to a health interval old).
func (u *Upstream) load() float64 {
	return float64(max(u.inflight.Load(), u.queued.Load()+u.running.Load())) / u.cfg.Weight
}

// eject takes the upstream out of rotation until now+d (passive check).
func (u *Upstream) eject(now time.Time, d time.Duration) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if t := now.Add(d); t.After(u.ejectedTill) {
		u.ejectedTill = t
	}
}

func (u *Upstream) setActive(ok bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.activeOK = ok
}

// healthPath is the path of the active check for the upstream's kind.
func (u *Upstream) healthPath() string {
	switch u.cfg.Kind {
	case KindSpigot:
		return "/ready" // 503 while loading and while draining
	case KindOllama:
		return "/api/version"
	}
	return "/health"
}

// check runs one active check, and for spigot upstreams scrapes the queue
// depth from /metrics.
func (u *Upstream) check(ctx context.Context, client *http.Client, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ok := u.get(ctx, client, u.healthPath(), nil) == nil
	if ok && u.cfg.Kind == KindSpigot {
		var q, run int64 = -1, -1
		if u.get(ctx, client, "/metrics", func(r io.Reader) { q, run = scrapeLoad(r) }) == nil && q >= 0 && run >= 0 {
			u.queued.Store(q)
			u.running.Store(run)
		}
	}
	return ok
}

// get fetches path and passes a 200 response's body to read.
func (u *Upstream) get(ctx context.Context, client *http.Client, path string, read func(io.Reader)) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.cfg.URL+path, nil)
	if err != nil {
		return err
	}
	if u.cfg.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+u.cfg.APIKey)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return &statusError{resp.StatusCode}
	}
	if read != nil {
		read(io.LimitReader(resp.Body, 4<<20))
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return nil
}

type statusError struct{ code int }

func (e *statusError) Error() string { return "status " + strconv.Itoa(e.code) }

// scrapeLoad reads Prometheus text exposition and returns the values of
// spigot_engine_queued_requests and spigot_engine_running_sequences (see
// package metrics), each -1 if absent or not a count.
func scrapeLoad(r io.Reader) (queued, running int64) {
	queued, running = -1, -1
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	value := func(v string) int64 {
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || !(f >= 0 && f <= math.MaxInt32) {
			return -1
		}
		return int64(f)
	}
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "spigot_engine_queued_requests "); ok {
			queued = value(v)
		} else if v, ok := strings.CutPrefix(line, "spigot_engine_running_sequences "); ok {
			running = value(v)
		}
	}
	return queued, running
}

// rendezvous returns upstream u's weighted rendezvous (highest random
// weight) score for key: -weight / ln(h) with h the key's and the name's
// hash mapped to (0, 1). The upstream with the highest score owns the key;
// removing an upstream moves only its own keys.
//
// The hash is fixed (FNV-1a, then a SplitMix64 finalizer to spread close
// inputs), not seeded per process, so that every gateway replica sends a
// prefix to the same upstream.
func (u *Upstream) rendezvous(key uint64) float64 {
	h := fnv.New64a()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], key)
	h.Write(b[:])
	h.Write([]byte(u.cfg.Name))
	x := (float64(mix64(h.Sum64())>>11) + 0.5) / (1 << 53) // (0, 1)
	return -u.cfg.Weight / math.Log(x)
}

// mix64 is SplitMix64's finalizer.
func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// prefixKey hashes the first n bytes of prompt: the affinity key.
func prefixKey(prompt []byte, n int) uint64 {
	if len(prompt) > n {
		prompt = prompt[:n]
	}
	h := fnv.New64a()
	h.Write(prompt)
	return mix64(h.Sum64())
}
