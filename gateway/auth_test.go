package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func keyHash(key string) string {
	s := sha256.Sum256([]byte(key))
	return hex.EncodeToString(s[:])
}

func TestAuthConfigErrors(t *testing.T) {
	up := "upstreams:\n- {name: a, kind: spigot, url: 'http://h:1', models: [m]}\n"
	h := keyHash("k")
	for _, tc := range []struct{ name, yaml, want string }{
		{"no name", "auth: {keys: [{sha256: " + h + "}]}\n", "name is required"},
		{"bad hash", "auth: {keys: [{name: a, sha256: xyz}]}\n", "64 hex digits"},
		{"short hash", "auth: {keys: [{name: a, sha256: abcd}]}\n", "64 hex digits"},
		{"dup key", "auth: {keys: [{name: a, sha256: " + h + "}, {name: b, sha256: " + strings.ToUpper(h) + "}]}\n", "listed twice"},
		{"dup name", "auth: {keys: [{name: a, sha256: " + h + "}, {name: a, sha256: " + keyHash("j") + "}]}\n", "used twice"},
		{"negative rate", "auth: {keys: [{name: a, sha256: " + h + ", requests_per_minute: -1}]}\n", "positive"},
		{"unknown key", "auth: {keys: [{name: a, sha256: " + h + ", rpm: 3}]}\n", "field rpm not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(up + tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseConfig = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func doAuth(t *testing.T, method, url, key, body string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// TestAuthAndRateLimit: with keys configured, generation and listing
// routes need a known key (health and readiness do not), the client's key
// is not sent upstream, and a key over its rate limit gets 429 until its
// bucket refills.
func TestAuthAndRateLimit(t *testing.T) {
	var sawAuth atomic.Value
	up := newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		sawAuth.Store(r.Header.Get("Authorization"))
		okStream(w, r, body)
	})
	extra := fmt.Sprintf("auth:\n  keys:\n    - {name: alice, sha256: %s, requests_per_minute: 60, burst: 2}\n    - {name: bob, sha256: %s}\n",
		keyHash("sk-alice"), keyHash("sk-bob"))
	cfg := fakeConfig(t, KindSpigot, extra, nil, up)
	gwy := newGW(t, cfg)
	var offset atomic.Int64 // the gateway's clock, moved by the test
	base := time.Now()
	gwy.g.now = func() time.Time { return base.Add(time.Duration(offset.Load())) }
	u := gwy.ts.URL
	const body = `{"model":"m","prompt":"x","stream":true}`

	for _, tc := range []struct {
		method, path, key string
		want              int
	}{
		{"GET", "/health", "", 200},
		{"GET", "/ready", "", 200},
		{"GET", "/v1/models", "", 401},
		{"GET", "/metrics", "sk-wrong", 401},
		{"GET", "/metrics", "sk-bob", 200},
		{"POST", "/v1/completions", "", 401},
		{"POST", "/v1/completions", "sk-mallory", 401},
		{"POST", "/v1/completions", "sk-bob", 200},
	} {
		if code, _, b := doAuth(t, tc.method, u+tc.path, tc.key, body); code != tc.want {
			t.Errorf("%s %s with key %q = %d %s, want %d", tc.method, tc.path, tc.key, code, b, tc.want)
		}
	}
	if got := sawAuth.Load(); got != "" {
		t.Errorf("the upstream got Authorization %q, want none (the client's key stays at the gateway)", got)
	}

	// alice: burst 2, then 1 per second.
	for i := range 2 {
		if code, _, b := doAuth(t, "POST", u+"/v1/completions", "sk-alice", body); code != 200 {
			t.Fatalf("alice request %d = %d %s", i, code, b)
		}
	}
	code, h, b := doAuth(t, "POST", u+"/v1/completions", "sk-alice", body)
	if code != 429 || h.Get("Retry-After") != "1" || !strings.Contains(b, "rate_limit_exceeded") {
		t.Errorf("alice's third request = %d (Retry-After %q) %s, want 429 after 1 s", code, h.Get("Retry-After"), b)
	}
	if code, _, _ := doAuth(t, "POST", u+"/v1/completions", "sk-bob", body); code != 200 {
		t.Errorf("bob, unlimited, = %d while alice is limited", code)
	}
	offset.Store(int64(time.Second))
	if code, _, b := doAuth(t, "POST", u+"/v1/completions", "sk-alice", body); code != 200 {
		t.Errorf("alice a second later = %d %s, want 200", code, b)
	}
	if code, _, _ := doAuth(t, "POST", u+"/v1/completions", "sk-alice", body); code != 429 {
		t.Errorf("alice again at once = %d, want 429", code)
	}
	if got := gwy.counter(t, "spigot_gateway_rate_limited_total", "key", "alice"); got != 2 {
		t.Errorf("rate limited alice = %g, want 2", got)
	}
}

// TestOpenGatewayPassesKey: without keys, the client's Authorization goes
// to an upstream that has no api_key, and an upstream's own key replaces it.
func TestOpenGatewayPassesKey(t *testing.T) {
	var a, b atomic.Value
	fa := newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		a.Store(r.Header.Get("Authorization"))
		okStream(w, r, body)
	})
	fb := newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		b.Store(r.Header.Get("Authorization"))
		okStream(w, r, body)
	})
	cfg := fakeConfig(t, KindOpenAI, "", [][]string{{"ma"}, {"mb"}}, fa, fb)
	cfg.Upstreams[1].APIKey = "sk-upstream"
	gwy := newGW(t, cfg)
	doAuth(t, "POST", gwy.ts.URL+"/v1/completions", "sk-client", `{"model":"ma","prompt":"x"}`)
	doAuth(t, "POST", gwy.ts.URL+"/v1/completions", "sk-client", `{"model":"mb","prompt":"x"}`)
	if a.Load() != "Bearer sk-client" || b.Load() != "Bearer sk-upstream" {
		t.Errorf("upstreams got %q and %q, want the client's key and the upstream's own", a.Load(), b.Load())
	}
}
