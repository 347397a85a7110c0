package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spigot-llm/spigot/api/openai"
)

// AuthConfig lists the API keys clients must send as "Authorization:
// Bearer KEY". The configuration holds only each key's SHA-256, so that
// the file gives no key away. With no keys, the gateway is open and passes
// a client's Authorization header on to upstreams that have no api_key of
// their own.
type AuthConfig struct {
	Keys []KeyConfig `yaml:"keys"`
}

// KeyConfig is one client key.
type KeyConfig struct {
	// Name identifies the key in metrics and logs.
	Name string `yaml:"name"`
	// SHA256 is the hex SHA-256 of the key: printf %s KEY | sha256sum.
	SHA256 string `yaml:"sha256"`
	// RequestsPerMinute limits the key's generation requests (a token
	// bucket refilled at this rate); 0 means no limit.
	RequestsPerMinute float64 `yaml:"requests_per_minute"`
	// Burst is how many requests may come at once; 0 means ten seconds'
	// worth of the rate, at least 1.
	Burst float64 `yaml:"burst"`
	// TokensPerMinute limits the tokens the key's requests use, prompt and
	// completion (a bucket refilled at this rate, charged as tokens
	// stream); 0 means no limit. A request is admitted while the bucket is
	// above zero, and may take it below.
	TokensPerMinute float64 `yaml:"tokens_per_minute"`
	// TokenBurst is the token bucket's size; 0 means one minute's worth.
	TokenBurst float64 `yaml:"token_burst"`
	// Priority, if set, is sent to spigot upstreams as the request's
	// "priority" (lower starts first), replacing the client's.
	Priority *int `yaml:"priority"`
	// MaxConcurrent caps the key's requests in flight at once; more wait
	// their turn. 0 means no cap of its own.
	MaxConcurrent int `yaml:"max_concurrent"`
	// Share weighs the key when requests wait for limits.max_in_flight:
	// a key with share 2 is admitted twice as often as one with 1 while
	// both wait. 0 means 1.
	Share float64 `yaml:"share"`
}

func (a *AuthConfig) check() error {
	names := map[string]bool{}
	hashes := map[string]bool{}
	bad := func(v float64) bool { return v < 0 || math.IsInf(v, 0) || math.IsNaN(v) }
	for i := range a.Keys {
		k := &a.Keys[i]
		where := fmt.Sprintf("auth.keys[%d]", i)
		if k.Name == "" {
			return fmt.Errorf("%s: name is required", where)
		}
		if names[k.Name] {
			return fmt.Errorf("%s: name %q is used twice", where, k.Name)
		}
		names[k.Name] = true
		k.SHA256 = strings.ToLower(k.SHA256)
		if b, err := hex.DecodeString(k.SHA256); err != nil || len(b) != sha256.Size {
			return fmt.Errorf("%s (%s): sha256 must be 64 hex digits (printf %%s KEY | sha256sum)", where, k.Name)
		}
		if hashes[k.SHA256] {
			return fmt.Errorf("%s (%s): the same key is listed twice", where, k.Name)
		}
		hashes[k.SHA256] = true
		if bad(k.RequestsPerMinute) || bad(k.Burst) || bad(k.TokensPerMinute) || bad(k.TokenBurst) || bad(k.Share) {
			return fmt.Errorf("%s (%s): requests_per_minute, burst, tokens_per_minute, token_burst and share must be positive numbers", where, k.Name)
		}
		if k.MaxConcurrent < 0 {
			return fmt.Errorf("%s (%s): max_concurrent %d is negative", where, k.Name, k.MaxConcurrent)
		}
		if k.RequestsPerMinute > 0 && k.Burst == 0 {
			k.Burst = max(1, k.RequestsPerMinute/6)
		}
		if k.TokensPerMinute > 0 && k.TokenBurst == 0 {
			k.TokenBurst = k.TokensPerMinute
		}
		if k.Share == 0 {
			k.Share = 1
		}
	}
	return nil
}

// bucket is a token bucket of size burst refilled at perMinute; level may
// go below zero (tokens charged after admission).
type bucket struct {
	perMinute, burst float64
	level            float64
	last             time.Time
}

func (b *bucket) limited() bool { return b.perMinute > 0 }

// refill brings the level up to now.
func (b *bucket) refill(now time.Time) {
	if b.last.IsZero() {
		b.level = b.burst
	} else if d := now.Sub(b.last).Seconds(); d > 0 {
		b.level = min(b.burst, b.level+d*b.perMinute/60)
	}
	if now.After(b.last) {
		b.last = now
	}
}

// until is how long until the level reaches need.
func (b *bucket) until(need float64) time.Duration {
	if b.level >= need {
		return 0
	}
	return time.Duration((need - b.level) / (b.perMinute / 60) * float64(time.Second))
}

// header sets OpenAI's x-ratelimit-{limit,remaining,reset}-WHAT headers.
func (b *bucket) header(h http.Header, what string) {
	h.Set("x-ratelimit-limit-"+what, strconv.FormatFloat(b.perMinute, 'f', -1, 64))
	h.Set("x-ratelimit-remaining-"+what, strconv.FormatInt(int64(max(0, math.Floor(b.level))), 10))
	h.Set("x-ratelimit-reset-"+what, b.until(b.burst).Round(time.Millisecond).String())
}

// clientKey is a configured key with its buckets.
type clientKey struct {
	cfg   KeyConfig
	class *class // its place in the admission queue

	mu  sync.Mutex // guards req, tok
	req bucket     // requests
	tok bucket     // tokens
}

func newClientKey(cfg KeyConfig) *clientKey {
	return &clientKey{cfg: cfg,
		req: bucket{perMinute: cfg.RequestsPerMinute, burst: cfg.Burst},
		tok: bucket{perMinute: cfg.TokensPerMinute, burst: cfg.TokenBurst}}
}

// Reasons a request is refused (the reason label of
// spigot_gateway_rate_limited_total).
const (
	reasonRequests = "requests" // requests_per_minute
	reasonTokens   = "tokens"   // tokens_per_minute
)

// allow takes a request from the key's bucket at now, when both buckets
// allow it; else it says which refused and how long until it would not.
// It sets the rate-limit headers on h either way.
func (k *clientKey) allow(now time.Time, h http.Header) (ok bool, reason string, wait time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.req.limited() {
		k.req.refill(now)
	}
	if k.tok.limited() {
		k.tok.refill(now)
	}
	switch {
	case k.req.limited() && k.req.level < 1:
		ok, reason, wait = false, reasonRequests, k.req.until(1)
	case k.tok.limited() && k.tok.level <= 0:
		ok, reason, wait = false, reasonTokens, k.tok.until(1)
	default:
		ok = true
		if k.req.limited() {
			k.req.level--
		}
	}
	k.headerLocked(h)
	return ok, reason, wait
}

// header sets the rate-limit headers for the key's buckets at now.
func (k *clientKey) header(now time.Time, h http.Header) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.req.limited() {
		k.req.refill(now)
	}
	if k.tok.limited() {
		k.tok.refill(now)
	}
	k.headerLocked(h)
}

func (k *clientKey) headerLocked(h http.Header) {
	if k.req.limited() {
		k.req.header(h, "requests")
	}
	if k.tok.limited() {
		k.tok.header(h, "tokens")
	}
}

// charge takes n tokens (negative: gives back) from the key's token bucket.
func (k *clientKey) charge(now time.Time, n float64) {
	if !k.tok.limited() || n == 0 {
		return
	}
	k.mu.Lock()
	k.tok.refill(now)
	k.tok.level = min(k.tok.burst, k.tok.level-n)
	k.mu.Unlock()
}

// lookupKey finds the request's key when keys are configured. When the
// key is missing or unknown it answers 401 itself and returns false; with
// no keys configured it returns nil and true.
func (g *Gateway) lookupKey(w http.ResponseWriter, r *http.Request) (*clientKey, bool) {
	token, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !found {
		token = ""
	}
	k, err := g.keyFor(token)
	if err != nil {
		openai.WriteError(w, err)
		return nil, false
	}
	return k, true
}

// authenticate checks a request's key when keys are configured. When the
// key is missing or unknown (401), or over its rate limit (429, with limit
// set: generation requests), it answers the request itself and returns
// false. A keyed response carries the key's rate-limit headers.
func (g *Gateway) authenticate(w http.ResponseWriter, r *http.Request, limit bool) (ok bool) {
	k, ok := g.lookupKey(w, r)
	if !ok || k == nil {
		return ok
	}
	if !limit {
		k.header(g.now(), w.Header())
		return true
	}
	return g.limit(w, k)
}

// limit takes a request from k's buckets, or answers 429 and returns
// false.
func (g *Gateway) limit(w http.ResponseWriter, k *clientKey) bool {
	if e := g.take(k, w.Header()); e != nil {
		openai.WriteError(w, e)
		return false
	}
	return true
}

// take takes a request from k's buckets, setting the rate-limit headers
// on h, or returns the 429 error.
func (g *Gateway) take(k *clientKey, h http.Header) *openai.Error {
	ok, reason, wait := k.allow(g.now(), h)
	if ok {
		return nil
	}
	g.m.limited.WithLabelValues(k.cfg.Name, reason).Inc()
	what := strconv.FormatFloat(k.cfg.RequestsPerMinute, 'g', -1, 64) + " requests per minute"
	if reason == reasonTokens {
		what = strconv.FormatFloat(k.cfg.TokensPerMinute, 'g', -1, 64) + " tokens per minute"
	}
	return &openai.Error{Status: http.StatusTooManyRequests, Type: openai.TypeRateLimit, Code: "rate_limit_exceeded",
		RetryAfter: max(1, int(math.Ceil(wait.Seconds()))),
		Message:    "rate limit reached for key " + strconv.Quote(k.cfg.Name) + ": " + what}
}

// keyFor finds the key of a bearer token when keys are configured: nil
// when none are; a 401 error when the token is missing or unknown.
func (g *Gateway) keyFor(token string) (*clientKey, error) {
	if len(g.keys) == 0 {
		return nil, nil
	}
	if token == "" {
		return nil, openai.Unauthorized(true)
	}
	sum := sha256.Sum256([]byte(token))
	k := g.keys[hex.EncodeToString(sum[:])]
	if k == nil {
		return nil, openai.Unauthorized(false)
	}
	return k, nil
}

// admit takes a generation request of key k (nil: none) through the rate
// limits and admission, for the WebSocket and gRPC fronts (HTTP's is
// serveGenerate): the meter to charge, and release, to call once when the
// request ends. It fails with a 429 error, or ctx's.
func (g *Gateway) admit(ctx context.Context, k *clientKey) (*meter, func(), error) {
	c := g.anon
	var m *meter
	if k != nil {
		if e := g.take(k, http.Header{}); e != nil {
			return nil, nil, e
		}
		c = k.class
		m = &meter{g: g, key: k}
		if k.cfg.Priority != nil {
			m.priority = mustJSON(*k.cfg.Priority)
		}
	}
	start := g.now()
	if !g.adm.acquire(ctx, g.classes, c) {
		return nil, nil, ctx.Err()
	}
	g.m.admissionWait.Observe(g.now().Sub(start).Seconds())
	var once sync.Once
	return m, func() { once.Do(func() { g.adm.release(g.classes, c) }) }, nil
}

// meter charges one request's tokens to its key as they stream: the
// prompt's, estimated at admission and corrected by a usage report, and
// one per chunk with text, corrected likewise. A nil meter charges
// nothing. What was charged stays charged when the stream is cut or the
// client goes away.
type meter struct {
	g          *Gateway
	key        *clientKey
	priority   []byte // the key's priority, JSON; nil: none
	prompt     int    // prompt tokens charged
	completion int    // completion tokens charged
}

// estimatePrompt charges the prompt before any usage is known: a quarter
// of the request body's bytes, at least 1.
func (m *meter) estimatePrompt(bodyBytes int) {
	if m == nil {
		return
	}
	m.prompt = max(1, bodyBytes/4)
	m.key.charge(m.g.now(), float64(m.prompt))
}

// token charges one completion token.
func (m *meter) token() {
	if m == nil {
		return
	}
	m.completion++
	m.key.charge(m.g.now(), 1)
}

// usage replaces what was charged by an upstream's usage report.
func (m *meter) usage(u openai.Usage) {
	if m == nil {
		return
	}
	d := u.PromptTokens - m.prompt + u.CompletionTokens - m.completion
	m.prompt, m.completion = u.PromptTokens, u.CompletionTokens
	m.key.charge(m.g.now(), float64(d))
}

// whole charges a whole (non-streamed) response: its usage, or when it
// has none, a quarter of its bytes as completion tokens.
func (m *meter) whole(b []byte) {
	if m == nil {
		return
	}
	var resp struct {
		Usage *openai.Usage `json:"usage"`
	}
	if json.Unmarshal(b, &resp) == nil && resp.Usage != nil {
		m.usage(*resp.Usage)
		return
	}
	n := len(b) / 4
	m.completion += n
	m.key.charge(m.g.now(), float64(n))
}

// withPriority sets the key's priority in a body for a spigot upstream.
func (m *meter) withPriority(body []byte, u *Upstream) []byte {
	if m == nil || m.priority == nil || u.cfg.Kind != KindSpigot {
		return body
	}
	var f map[string]json.RawMessage
	if json.Unmarshal(body, &f) != nil {
		return body
	}
	f["priority"] = m.priority
	return marshalObject(f, nil)
}
