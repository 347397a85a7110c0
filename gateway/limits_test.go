package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// keyClient is an HTTP client that sends "Authorization: Bearer key".
func keyClient(key string) *http.Client {
	return &http.Client{Transport: keyTransport(key)}
}

type keyTransport string

func (k keyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+string(k))
	return http.DefaultTransport.RoundTrip(r)
}

func TestLimitsConfigErrors(t *testing.T) {
	up := "upstreams:\n- {name: a, kind: spigot, url: 'http://h:1', models: [m]}\n"
	h := keyHash("k")
	for _, tc := range []struct{ name, yaml, want string }{
		{"negative tokens", "auth: {keys: [{name: a, sha256: " + h + ", tokens_per_minute: -1}]}\n", "positive"},
		{"negative share", "auth: {keys: [{name: a, sha256: " + h + ", share: -1}]}\n", "positive"},
		{"negative concurrency", "auth: {keys: [{name: a, sha256: " + h + ", max_concurrent: -1}]}\n", "max_concurrent -1 is negative"},
		{"negative in flight", "limits: {max_in_flight: -2}\n", "max_in_flight -2 is negative"},
		{"bad origin", "cors: {allowed_origins: ['example.com']}\n", "is not an origin"},
		{"origin with path", "cors: {allowed_origins: ['https://example.com/app']}\n", "is not an origin"},
		{"bad header", "cors: {allowed_origins: ['*'], allowed_headers: ['a b']}\n", "not a header name"},
		{"unknown cors key", "cors: {origins: ['*']}\n", "field origins not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(up + tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseConfig = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	c, err := ParseConfig([]byte(up + "auth: {keys: [{name: a, sha256: " + h + ", tokens_per_minute: 600, priority: 3}]}\ncors: {allowed_origins: ['HTTPS://App.Example']}\n"))
	if err != nil {
		t.Fatal(err)
	}
	k := c.Auth.Keys[0]
	if k.TokenBurst != 600 || k.Share != 1 || k.Priority == nil || *k.Priority != 3 {
		t.Errorf("key = %+v, want token_burst 600 (a minute's worth), share 1, priority 3", k)
	}
	if c.CORS.AllowedOrigins[0] != "https://app.example" || len(c.CORS.AllowedHeaders) != 2 || c.CORS.MaxAge != 10*time.Minute {
		t.Errorf("cors = %+v, want the origin lower-cased and the defaults", c.CORS)
	}
}

// tokenLevel is the key's token bucket level, at the gateway's clock.
func tokenLevel(g *Gateway, key string) float64 {
	k := g.keys[keyHash(key)]
	k.mu.Lock()
	defer k.mu.Unlock()
	k.tok.refill(g.now())
	return k.tok.level
}

// TestTokenRateLimit: a key's token bucket is charged the prompt and
// completion tokens of its requests, as the usage reports them; a request
// is admitted while the bucket is above zero and refused with 429 after,
// until it refills; every keyed response has the rate-limit headers.
func TestTokenRateLimit(t *testing.T) {
	up := newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		if strings.Contains(string(body), `"stream":true`) {
			sseChunks(w, false, "cmpl-t", []string{"a", "b", "c"}, "stop", 3) // 3 + 3 tokens
			return
		}
		io.WriteString(w, `{"id":"cmpl-w","object":"text_completion","created":1,"model":"m","choices":[{"index":0,"text":"abcd","finish_reason":"stop"}],"usage":{"prompt_tokens":2,"completion_tokens":4,"total_tokens":6}}`)
	})
	extra := fmt.Sprintf("auth:\n  keys:\n    - {name: alice, sha256: %s, tokens_per_minute: 60, token_burst: 10, requests_per_minute: 600, burst: 100}\n    - {name: bob, sha256: %s}\n",
		keyHash("sk-alice"), keyHash("sk-bob"))
	gwy := newGW(t, fakeConfig(t, KindSpigot, extra, nil, up))
	var offset atomic.Int64
	base := time.Now()
	gwy.g.now = func() time.Time { return base.Add(time.Duration(offset.Load())) }
	u := gwy.ts.URL
	const body = `{"model":"m","prompt":"a long prompt of many many bytes","stream":true}`

	code, h, b := doAuth(t, "POST", u+"/v1/completions", "sk-alice", body)
	if code != 200 || !strings.Contains(b, "[DONE]") {
		t.Fatalf("first request = %d %s", code, b)
	}
	for name, want := range map[string]string{
		"x-ratelimit-limit-tokens": "60", "x-ratelimit-remaining-tokens": "10", "x-ratelimit-reset-tokens": "0s",
		"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "99", "x-ratelimit-reset-requests": "100ms",
	} {
		if got := h.Get(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if got := tokenLevel(gwy.g, "sk-alice"); got != 4 {
		t.Errorf("after 3 prompt + 3 completion tokens the bucket has %g, want 10 - 6 = 4", got)
	}
	if code, _, b := doAuth(t, "POST", u+"/v1/completions", "sk-alice", body); code != 200 {
		t.Fatalf("second request (bucket at 4) = %d %s", code, b)
	}
	code, h, b = doAuth(t, "POST", u+"/v1/completions", "sk-alice", body)
	if code != 429 || h.Get("Retry-After") != "3" || !strings.Contains(b, "60 tokens per minute") {
		t.Errorf("third request (bucket at -2) = %d, Retry-After %q, %s; want 429 after 3 s", code, h.Get("Retry-After"), b)
	}
	if h.Get("x-ratelimit-remaining-tokens") != "0" || h.Get("x-ratelimit-reset-tokens") != "12s" {
		t.Errorf("429's headers: remaining %q reset %q, want 0 and 12s", h.Get("x-ratelimit-remaining-tokens"), h.Get("x-ratelimit-reset-tokens"))
	}
	if got := gwy.counter(t, "spigot_gateway_rate_limited_total", "key", "alice", "reason", reasonTokens); got != 1 {
		t.Errorf("rate_limited_total{reason=tokens} = %g, want 1", got)
	}
	if code, _, _ := doAuth(t, "POST", u+"/v1/completions", "sk-bob", body); code != 200 {
		t.Errorf("bob, unlimited, = %d", code)
	}
	if code, h, _ := doAuth(t, "GET", u+"/v1/models", "sk-alice", ""); code != 200 || h.Get("x-ratelimit-remaining-tokens") != "0" {
		t.Errorf("models = %d with remaining tokens %q, want 200 with the headers", code, h.Get("x-ratelimit-remaining-tokens"))
	}
	offset.Store(int64(3 * time.Second))
	if code, _, b := doAuth(t, "POST", u+"/v1/completions", "sk-alice", `{"model":"m","prompt":"x"}`); code != 200 {
		t.Fatalf("after 3 s = %d %s", code, b)
	}
	if got := tokenLevel(gwy.g, "sk-alice"); got != 1-6 {
		t.Errorf("after a whole response with usage 2 + 4 the bucket has %g, want 1 - 6", got)
	}
}

// TestTokensChargedWhenCut: a stream the client aborts, and one its
// upstream cuts, are charged their prompt (estimated: no usage came) and
// every completion token relayed.
func TestTokensChargedWhenCut(t *testing.T) {
	gone := make(chan struct{}, 1)
	up := newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		sseChunks(w, false, "cmpl-c", []string{"a", "b", "c"}, "", 0)
		if strings.Contains(string(body), "abort") {
			<-r.Context().Done()
			gone <- struct{}{}
		}
		// else: the connection ends without [DONE]: a cut
	})
	extra := fmt.Sprintf("auth:\n  keys:\n    - {name: alice, sha256: %s, tokens_per_minute: 6000}\n", keyHash("sk-alice"))
	gwy := newGW(t, fakeConfig(t, KindSpigot, extra, nil, up))
	base := time.Now()
	gwy.g.now = func() time.Time { return base }
	client := keyClient("sk-alice")

	body := `{"model":"m","prompt":"abort me","stream":true,"stream_options":{"cancel_on_disconnect":true}}`
	ctx, cancel := context.WithCancel(context.Background())
	seen := 0
	res := stream(ctx, client, gwy.ts.URL, "/v1/completions", body, func() {
		if seen++; seen == 3 {
			cancel()
		}
	})
	if res.chunks != 3 {
		t.Fatalf("%d chunks before the abort, want 3 (%v)", res.chunks, res.err)
	}
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream request was not canceled")
	}
	want := 6000 - float64(len(body)/4) - 3
	if got := tokenLevel(gwy.g, "sk-alice"); got != want {
		t.Errorf("after an aborted stream the bucket has %g, want %g (the prompt estimated as %d, 3 tokens)", got, want, len(body)/4)
	}

	body2 := `{"model":"m","prompt":"cut","stream":true}`
	res = stream(context.Background(), client, gwy.ts.URL, "/v1/completions", body2, nil)
	if res.chunks < 3 {
		t.Fatalf("cut stream: %d chunks (%v)", res.chunks, res.err)
	}
	want -= float64(len(body2)/4) + 3
	if got := tokenLevel(gwy.g, "sk-alice"); got != want {
		t.Errorf("after a cut stream the bucket has %g, want %g", got, want)
	}
}

// TestKeyPriority: a key's priority replaces the request's on spigot
// upstreams; other kinds get the body as sent.
func TestKeyPriority(t *testing.T) {
	sp := newFake(t, okStream)
	oa := newFake(t, okStream)
	extra := fmt.Sprintf("auth:\n  keys:\n    - {name: batch, sha256: %s, priority: 7}\n", keyHash("sk-batch"))
	cfg := fakeConfig(t, KindSpigot, extra, [][]string{{"s"}, {"o"}}, sp, oa)
	cfg.Upstreams[1].Kind = KindOpenAI
	gwy := newGW(t, cfg)
	for _, model := range []string{"s", "o"} {
		if code, _, b := doAuth(t, "POST", gwy.ts.URL+"/v1/completions", "sk-batch", `{"model":"`+model+`","prompt":"x","priority":-5}`); code != 200 {
			t.Fatalf("%s: %d %s", model, code, b)
		}
	}
	var f map[string]any
	if err := json.Unmarshal([]byte(sp.lastBody()), &f); err != nil || f["priority"] != 7.0 || f["prompt"] != "x" {
		t.Errorf("spigot upstream got %s, want priority 7", sp.lastBody())
	}
	if got := oa.lastBody(); got != `{"model":"o","prompt":"x","priority":-5}` {
		t.Errorf("openai upstream got %s, want the body as sent", got)
	}
}

// TestFairSharing: with max_in_flight 2 and a slow upstream, key A's 50
// waiting requests do not hold back key B's 5: admission alternates
// between the keys, so B's all end among the first completions, not
// behind A's.
func TestFairSharing(t *testing.T) {
	var running, peak atomic.Int64
	gate := make(chan struct{}) // upstream requests wait here until all are queued
	up := newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		n := running.Add(1)
		defer running.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		<-gate
		time.Sleep(5 * time.Millisecond)
		okStream(w, r, body)
	})
	extra := fmt.Sprintf("limits: {max_in_flight: 2}\nauth:\n  keys:\n    - {name: a, sha256: %s}\n    - {name: b, sha256: %s}\n", keyHash("sk-a"), keyHash("sk-b"))
	gwy := newGW(t, fakeConfig(t, KindSpigot, extra, nil, up))
	waiting := func(key string) int {
		gwy.g.adm.mu.Lock()
		defer gwy.g.adm.mu.Unlock()
		return len(gwy.g.keys[keyHash(key)].class.waiting)
	}

	var mu sync.Mutex
	var order []string // keys in completion order
	var wg sync.WaitGroup
	run := func(key string) {
		defer wg.Done()
		res := stream(context.Background(), keyClient("sk-"+key), gwy.ts.URL, "/v1/completions", `{"model":"m","prompt":"x","stream":true}`, nil)
		if err := res.check("ab"); err != nil {
			t.Errorf("%s: %v", key, err)
		}
		mu.Lock()
		order = append(order, key)
		mu.Unlock()
	}
	for range 50 {
		wg.Add(1)
		go run("a")
	}
	waitFor(t, "A's requests to queue", 10*time.Second, func() bool { return waiting("sk-a") == 48 })
	for range 5 {
		wg.Add(1)
		go run("b")
	}
	waitFor(t, "B's requests to queue", 10*time.Second, func() bool { return waiting("sk-b") == 5 })
	close(gate)
	wg.Wait()
	if len(order) != 55 {
		t.Fatalf("%d requests ended, want 55", len(order))
	}
	lastB := 0
	for i, k := range order {
		if k == "b" {
			lastB = i
		}
	}
	// Two of A's ran when B queued, then A and B alternate: B's last is
	// admitted 12th and ends about then (first come, first served would
	// make it 55th, as would share 0.001 for B).
	if lastB >= 20 {
		t.Errorf("B's last request ended %dth of 55, want within the first 20 (order %v)", lastB+1, order)
	}
	if p := peak.Load(); p > 2 {
		t.Errorf("the upstream saw %d requests at once, want at most max_in_flight 2", p)
	}
	if got := gwy.counter(t, "spigot_gateway_admission_wait_seconds"); got != 55 {
		t.Errorf("admission waits observed = %g, want 55", got)
	}
}

// TestMaxConcurrent: a key's max_concurrent holds its further requests
// back, while another key goes on; a client that gives up while waiting
// leaves the queue.
func TestMaxConcurrent(t *testing.T) {
	release := make(chan struct{})
	var running, peak atomic.Int64
	up := newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		n := running.Add(1)
		defer running.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		if strings.Contains(string(body), "hold") {
			<-release
		}
		okStream(w, r, body)
	})
	extra := fmt.Sprintf("auth:\n  keys:\n    - {name: a, sha256: %s, max_concurrent: 1}\n    - {name: b, sha256: %s}\n", keyHash("sk-a"), keyHash("sk-b"))
	gwy := newGW(t, fakeConfig(t, KindSpigot, extra, nil, up))
	class := gwy.g.keys[keyHash("sk-a")].class
	waiting := func() int {
		gwy.g.adm.mu.Lock()
		defer gwy.g.adm.mu.Unlock()
		return len(class.waiting)
	}
	hold := `{"model":"m","prompt":"hold","stream":true}`
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if res := stream(context.Background(), keyClient("sk-a"), gwy.ts.URL, "/v1/completions", hold, nil); res.check("ab") != nil {
				t.Errorf("a: %v", res.check("ab"))
			}
		}()
	}
	waitFor(t, "two of A's requests to wait", 5*time.Second, func() bool { return waiting() == 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if res := stream(ctx, keyClient("sk-a"), gwy.ts.URL, "/v1/completions", hold, nil); res.err == nil {
		t.Error("a fourth request of A was answered while A had one running and two waiting")
	}
	waitFor(t, "the abandoned request to leave the queue", 5*time.Second, func() bool { return waiting() == 2 })
	if res := stream(context.Background(), keyClient("sk-b"), gwy.ts.URL, "/v1/completions", `{"model":"m","prompt":"x","stream":true}`, nil); res.check("ab") != nil {
		t.Errorf("B while A waits: %v", res.check("ab"))
	}
	close(release)
	wg.Wait()
	if p := peak.Load(); p != 2 {
		t.Errorf("the upstream saw at most %d at once, want 2 (one of A's and B's)", p)
	}
	// A request's slot is given back after its response: wait for it.
	waitFor(t, "every slot to be given back", 5*time.Second, func() bool {
		gwy.g.adm.mu.Lock()
		defer gwy.g.adm.mu.Unlock()
		return len(class.waiting) == 0 && class.running == 0
	})
}

// TestCORS: a preflight from an allowed origin is answered with the
// methods and headers allowed, without a key; requests and streams from
// it carry Access-Control-Allow-Origin and expose the rate-limit
// headers; another origin gets no CORS headers.
func TestCORS(t *testing.T) {
	up := newFake(t, okStream)
	extra := fmt.Sprintf("cors: {allowed_origins: ['https://app.example'], max_age: 1h}\nauth:\n  keys:\n    - {name: a, sha256: %s, requests_per_minute: 60}\n", keyHash("sk-a"))
	gwy := newGW(t, fakeConfig(t, KindSpigot, extra, nil, up))
	preflight := func(origin string) *http.Response {
		req, _ := http.NewRequest(http.MethodOptions, gwy.ts.URL+"/v1/chat/completions", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	resp := preflight("https://app.example")
	h := resp.Header
	if resp.StatusCode != 204 || h.Get("Access-Control-Allow-Origin") != "https://app.example" ||
		!strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") ||
		h.Get("Access-Control-Allow-Headers") != "Authorization, Content-Type" || h.Get("Access-Control-Max-Age") != "3600" {
		t.Errorf("preflight = %d %v", resp.StatusCode, h)
	}
	if resp := preflight("https://evil.example"); resp.Header.Get("Access-Control-Allow-Origin") != "" || resp.StatusCode == 204 {
		t.Errorf("preflight from another origin = %d %v, want no CORS headers", resp.StatusCode, resp.Header)
	}

	for _, stream := range []bool{false, true} {
		body := fmt.Sprintf(`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":%v}`, stream)
		req, _ := http.NewRequest(http.MethodPost, gwy.ts.URL+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Origin", "https://app.example")
		req.Header.Set("Authorization", "Bearer sk-a")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		h := resp.Header
		if resp.StatusCode != 200 || h.Get("Access-Control-Allow-Origin") != "https://app.example" ||
			!strings.Contains(h.Get("Access-Control-Expose-Headers"), "x-ratelimit-remaining-requests") ||
			h.Get("x-ratelimit-limit-requests") != "60" || !strings.Contains(h.Get("Vary"), "Origin") {
			t.Errorf("stream %v: %d %v %s", stream, resp.StatusCode, h, b)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, gwy.ts.URL+"/v1/models", nil)
	req.Header.Set("Origin", "https://evil.example")
	req.Header.Set("Authorization", "Bearer sk-a")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("another origin's request = %d %v, want 200 without Access-Control-Allow-Origin", resp.StatusCode, resp.Header)
	}
}
