package gateway

import (
	"crypto/sha256"
	"encoding/hex"
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
}

func (a *AuthConfig) check() error {
	names := map[string]bool{}
	hashes := map[string]bool{}
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
		if k.RequestsPerMinute < 0 || k.Burst < 0 || math.IsInf(k.RequestsPerMinute, 0) || math.IsNaN(k.RequestsPerMinute) || math.IsNaN(k.Burst) {
			return fmt.Errorf("%s (%s): requests_per_minute and burst must be positive numbers", where, k.Name)
		}
		if k.RequestsPerMinute > 0 && k.Burst == 0 {
			k.Burst = max(1, k.RequestsPerMinute/6)
		}
	}
	return nil
}

// clientKey is a configured key with its token bucket.
type clientKey struct {
	cfg KeyConfig

	mu     sync.Mutex // guards tokens, last
	tokens float64
	last   time.Time
}

// allow takes a token from the key's bucket at now, or says how long until
// one is there.
func (k *clientKey) allow(now time.Time) (bool, time.Duration) {
	if k.cfg.RequestsPerMinute <= 0 {
		return true, 0
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	rate := k.cfg.RequestsPerMinute / 60 // per second
	if k.last.IsZero() {
		k.tokens = k.cfg.Burst
	} else if d := now.Sub(k.last).Seconds(); d > 0 {
		k.tokens = min(k.cfg.Burst, k.tokens+d*rate)
	}
	k.last = now
	if k.tokens >= 1 {
		k.tokens--
		return true, 0
	}
	return false, time.Duration((1 - k.tokens) / rate * float64(time.Second))
}

// authenticate checks a request's key when keys are configured. When the
// key is missing or unknown (401), or over its rate limit (429, with limit
// set: generation requests), it answers the request itself and returns
// false.
func (g *Gateway) authenticate(w http.ResponseWriter, r *http.Request, limit bool) (ok bool) {
	if len(g.keys) == 0 {
		return true
	}
	token, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !found || token == "" {
		openai.WriteError(w, openai.Unauthorized(true))
		return false
	}
	sum := sha256.Sum256([]byte(token))
	k := g.keys[hex.EncodeToString(sum[:])]
	if k == nil {
		openai.WriteError(w, openai.Unauthorized(false))
		return false
	}
	if !limit {
		return true
	}
	if ok, wait := k.allow(g.now()); !ok {
		g.m.limited.WithLabelValues(k.cfg.Name).Inc()
		openai.WriteError(w, &openai.Error{Status: http.StatusTooManyRequests, Type: openai.TypeRateLimit, Code: "rate_limit_exceeded",
			RetryAfter: max(1, int(math.Ceil(wait.Seconds()))),
			Message:    "rate limit reached for key " + strconv.Quote(k.cfg.Name) + ": " + strconv.FormatFloat(k.cfg.RequestsPerMinute, 'g', -1, 64) + " requests per minute"})
		return false
	}
	return true
}
