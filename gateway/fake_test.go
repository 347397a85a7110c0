package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fake is an upstream server a test scripts: health answers on every
// kind's health path (healthy says which status), POSTs go to post.
type fake struct {
	ts      *httptest.Server
	healthy atomic.Bool
	posts   atomic.Int64
	mu      sync.Mutex
	bodies  []string // POST bodies, in order
	paths   []string
	post    func(w http.ResponseWriter, r *http.Request, body []byte)
}

func newFake(t testing.TB, post func(w http.ResponseWriter, r *http.Request, body []byte)) *fake {
	t.Helper()
	f := &fake{post: post}
	f.healthy.Store(true)
	f.ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			switch r.URL.Path {
			case "/ready", "/health", "/api/version":
				if !f.healthy.Load() {
					w.WriteHeader(http.StatusServiceUnavailable)
					return
				}
				io.WriteString(w, `{"status":"ok"}`)
			case "/metrics":
				io.WriteString(w, "# TYPE spigot_engine_queued_requests gauge\nspigot_engine_queued_requests 0\n")
			default:
				http.NotFound(w, r)
			}
			return
		}
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.bodies = append(f.bodies, string(body))
		f.paths = append(f.paths, r.URL.Path)
		f.mu.Unlock()
		f.posts.Add(1)
		f.post(w, r, body)
	}))
	t.Cleanup(f.ts.Close)
	return f
}

func (f *fake) lastBody() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.bodies) == 0 {
		return ""
	}
	return f.bodies[len(f.bodies)-1]
}

// sseChunks writes an OpenAI stream of the given texts as id's chunks,
// then, if finish is set, the finish chunk, usage (prompt tokens given)
// and [DONE].
func sseChunks(w http.ResponseWriter, chat bool, id string, texts []string, finish string, prompt int) {
	w.Header().Set("Content-Type", "text/event-stream")
	obj := "text_completion"
	if chat {
		obj = "chat.completion.chunk"
	}
	head := fmt.Sprintf(`{"id":%q,"object":%q,"created":%d,"model":"m","choices":[`, id, obj, len(id))
	if chat {
		fmt.Fprintf(w, "data: %s{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n", head)
	}
	for _, s := range texts {
		if chat {
			fmt.Fprintf(w, "data: %s{\"index\":0,\"delta\":{\"content\":%q},\"finish_reason\":null}],\"usage\":null}\n\n", head, s)
		} else {
			fmt.Fprintf(w, "data: %s{\"index\":0,\"text\":%q,\"finish_reason\":null}],\"usage\":null}\n\n", head, s)
		}
		w.(http.Flusher).Flush()
	}
	if finish == "" {
		return
	}
	if chat {
		fmt.Fprintf(w, "data: %s{\"index\":0,\"delta\":{},\"finish_reason\":%q}],\"usage\":null}\n\n", head, finish)
	} else {
		fmt.Fprintf(w, "data: %s{\"index\":0,\"text\":\"\",\"finish_reason\":%q}],\"usage\":null}\n\n", head, finish)
	}
	fmt.Fprintf(w, "data: %s],\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%d}}\n\n", head, prompt, len(texts), prompt+len(texts))
	io.WriteString(w, "data: [DONE]\n\n")
}

// fakeConfig configures fakes as upstreams of kind, r0, r1, ...; each
// serves the models in models[i] (all: "m" when models is nil).
func fakeConfig(t testing.TB, kind string, extra string, models [][]string, fs ...*fake) *Config {
	t.Helper()
	var b strings.Builder
	b.WriteString("upstreams:\n")
	for i, f := range fs {
		ms := []string{"m"}
		if models != nil {
			ms = models[i]
		}
		js, _ := json.Marshal(ms)
		fmt.Fprintf(&b, "- {name: r%d, kind: %s, url: %q, models: %s}\n", i, kind, f.ts.URL, js)
	}
	b.WriteString(extra)
	c, err := ParseConfig([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func readWire(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "server", "testdata", "wire", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func okStream(w http.ResponseWriter, r *http.Request, body []byte) {
	chat := strings.HasSuffix(r.URL.Path, "/chat/completions")
	sseChunks(w, chat, "cmpl-ok", []string{"a", "b"}, "stop", 3)
}

func TestRoutingByModel(t *testing.T) {
	a, b := newFake(t, okStream), newFake(t, okStream)
	gwy := newGW(t, fakeConfig(t, KindOpenAI, "", [][]string{{"m1", "shared"}, {"m2", "shared"}}, a, b))
	for _, tc := range []struct{ model, want string }{{"m1", "r0"}, {"m2", "r1"}, {"m1", "r0"}} {
		res := stream(context.Background(), http.DefaultClient, gwy.ts.URL, "/v1/completions",
			fmt.Sprintf(`{"model":%q,"prompt":"x","stream":true}`, tc.model), nil)
		if res.upstream != tc.want || res.check("ab") != nil {
			t.Errorf("model %s went to %q (%v), want %s", tc.model, res.upstream, res.check("ab"), tc.want)
		}
	}
	code, body, _ := post(t, gwy.ts.URL, "/v1/completions", `{"model":"nope","prompt":"x"}`)
	if code != http.StatusNotFound || !strings.Contains(string(body), "model_not_found") {
		t.Errorf("unknown model: %d %s, want 404 model_not_found", code, body)
	}
	resp, err := http.Get(gwy.ts.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Data []struct {
			ID      string `json:"id"`
			OwnedBy string `json:"owned_by"`
		} `json:"data"`
	}
	json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	got := fmt.Sprint(list.Data)
	if want := "[{m1 r0} {m2 r1} {shared r0,r1}]"; got != want {
		t.Errorf("/v1/models = %s, want %s", got, want)
	}
}

// TestNonStreamPassThrough: a whole response comes back byte for byte.
func TestNonStreamPassThrough(t *testing.T) {
	const answer = `{"id":"cmpl-x","object":"text_completion","created":1,"model":"m","choices":[{"index":0,"text":"hi","finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}` + "\n"
	a := newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, answer)
	})
	gwy := newGW(t, fakeConfig(t, KindSpigot, "", nil, a))
	const req = `{"model":"m","prompt":"hello","max_tokens":3}`
	code, body, _ := post(t, gwy.ts.URL, "/v1/completions", req)
	if code != 200 || string(body) != answer {
		t.Errorf("answer %d %q, want 200 %q", code, body, answer)
	}
	if got := a.lastBody(); got != req {
		t.Errorf("upstream got %q, want the client's body %q", got, req)
	}
}

// TestRetryBeforeFirstToken: a 503, a 429 and a refused connection are
// each retried on the other upstream; 5xx and refused connections eject
// the upstream until the cool-down ends and its check passes, a 429 does
// not.
func TestRetryBeforeFirstToken(t *testing.T) {
	refused := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		url := "http://" + ln.Addr().String()
		ln.Close()
		return url
	}
	for _, tc := range []struct {
		name    string
		status  int  // the first upstream's answer; 0: connection refused
		ejected bool // the first upstream is out of rotation afterwards
	}{
		{"503", http.StatusServiceUnavailable, true},
		{"500", http.StatusInternalServerError, true},
		{"429", http.StatusTooManyRequests, false},
		{"refused", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
				http.Error(w, `{"error":{"message":"busy","type":"server_error"}}`, tc.status)
			})
			good := newFake(t, okStream)
			health := "health: {interval: 20ms, cooldown: 200ms}\n"
			if tc.status == 0 {
				health = "health: {interval: 1h, cooldown: 200ms}\n"
			}
			cfg := fakeConfig(t, KindOpenAI, health, nil, bad, good)
			cfg.Upstreams[0].Weight = 1e6 // the prefix's upstream is bad, whatever the prompt
			if tc.status == 0 {
				cfg.Upstreams[0].URL = refused()
			}
			gwy := newGW(t, cfg)
			if tc.status == 0 {
				// The first active check ejects it; put it back so that
				// the request meets the refused connection.
				waitFor(t, "the first check", 5*time.Second, func() bool {
					return gwy.counter(t, "spigot_gateway_upstream_healthy", "upstream", "r0") == 0
				})
				gwy.g.Upstreams()[0].setActive(true)
			}
			res := stream(context.Background(), http.DefaultClient, gwy.ts.URL, "/v1/chat/completions",
				`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}`, nil)
			if err := res.check("ab"); err != nil || res.roles != 1 {
				t.Fatalf("stream: %v, %d role chunks", err, res.roles)
			}
			if got := gwy.counter(t, "spigot_gateway_failovers_total", "stage", "before_first_token"); got != 1 {
				t.Errorf("failovers before the first token = %g, want 1", got)
			}
			outcome := outcomeFailed
			if tc.status == http.StatusTooManyRequests {
				outcome = outcomeRejected
			}
			if got := gwy.counter(t, "spigot_gateway_upstream_requests_total", "upstream", "r0", "outcome", outcome); got != 1 {
				t.Errorf("r0 %s = %g, want 1", outcome, got)
			}
			healthy := gwy.counter(t, "spigot_gateway_upstream_healthy", "upstream", "r0")
			if tc.ejected != (healthy == 0) {
				t.Errorf("r0 healthy = %g after a %s, want ejected %v", healthy, tc.name, tc.ejected)
			}
			if tc.ejected && tc.status != 0 {
				// Ejected for the cool-down, then back.
				waitFor(t, "r0 to come back", 5*time.Second, func() bool {
					return gwy.counter(t, "spigot_gateway_upstream_healthy", "upstream", "r0") == 1
				})
			}
		})
	}
}

// TestAllBusy: when every upstream answers 429, so does the gateway.
func TestAllBusy(t *testing.T) {
	busy := func(w http.ResponseWriter, r *http.Request, body []byte) {
		http.Error(w, `{"error":{"message":"busy","type":"rate_limit_error"}}`, http.StatusTooManyRequests)
	}
	gwy := newGW(t, fakeConfig(t, KindSpigot, "", nil, newFake(t, busy), newFake(t, busy)))
	code, body, h := post(t, gwy.ts.URL, "/v1/completions", `{"model":"m","prompt":"x","stream":true}`)
	if code != http.StatusTooManyRequests || h.Get("Retry-After") == "" || !strings.Contains(string(body), "rate_limit_error") {
		t.Errorf("all busy: %d %s (Retry-After %q), want 429", code, body, h.Get("Retry-After"))
	}
}

// TestClientErrorPassedOn: a 400 from the upstream reaches the client as
// it is, and is not retried.
func TestClientErrorPassedOn(t *testing.T) {
	const e = `{"error":{"message":"bad temperature","type":"invalid_request_error","param":"temperature","code":null}}`
	bad := func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, e)
	}
	a, b := newFake(t, bad), newFake(t, bad)
	gwy := newGW(t, fakeConfig(t, KindSpigot, "", nil, a, b))
	code, body, _ := post(t, gwy.ts.URL, "/v1/completions", `{"model":"m","prompt":"x","temperature":9}`)
	if code != 400 || string(body) != e {
		t.Errorf("got %d %s, want 400 %s", code, body, e)
	}
	if n := a.posts.Load() + b.posts.Load(); n != 1 {
		t.Errorf("%d upstream requests, want 1 (no retry)", n)
	}
}

// TestAffinity: requests sharing a prefix go to one upstream until its
// load passes the factor; then they move, counted as misses.
func TestAffinity(t *testing.T) {
	release := make(chan struct{})
	var held atomic.Int64
	slow := func(w http.ResponseWriter, r *http.Request, body []byte) {
		if strings.Contains(string(body), "hold") {
			held.Add(1)
			<-release
		}
		okStream(w, r, body)
	}
	fs := []*fake{newFake(t, slow), newFake(t, slow), newFake(t, slow)}
	gwy := newGW(t, fakeConfig(t, KindOpenAI, "routing: {prefix_bytes: 32, affinity_factor: 2}\n", nil, fs...))
	prefix := strings.Repeat("The same long system prompt. ", 3) // over 32 bytes
	var first string
	for i := range 12 {
		res := stream(context.Background(), http.DefaultClient, gwy.ts.URL, "/v1/completions",
			fmt.Sprintf(`{"model":"m","prompt":%q,"stream":true}`, prefix+fmt.Sprint(i)), nil)
		if i == 0 {
			first = res.upstream
		}
		if res.upstream != first {
			t.Fatalf("request %d went to %s, the prefix's first to %s", i, res.upstream, first)
		}
	}
	if hits := gwy.counter(t, "spigot_gateway_affinity_total", "result", "hit"); hits != 12 {
		t.Errorf("affinity hits = %g, want 12", hits)
	}
	// Different prefixes spread over the upstreams.
	seen := map[string]bool{}
	for i := range 30 {
		res := stream(context.Background(), http.DefaultClient, gwy.ts.URL, "/v1/completions",
			fmt.Sprintf(`{"model":"m","prompt":"%d other prompt, long enough to differ","stream":true}`, i), nil)
		seen[res.upstream] = true
	}
	if len(seen) != 3 {
		t.Errorf("30 different prefixes went to %v, want all 3 upstreams", seen)
	}
	// Load: with the prefix's upstream holding 3 requests and the others
	// none, 3 > 2 × (0 + 1), so the next one goes elsewhere.
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			stream(context.Background(), http.DefaultClient, gwy.ts.URL, "/v1/completions",
				fmt.Sprintf(`{"model":"m","prompt":%q,"stream":true}`, prefix+"hold"+fmt.Sprint(i)), nil)
		})
	}
	waitFor(t, "3 held requests", 5*time.Second, func() bool { return held.Load() == 3 })
	res := stream(context.Background(), http.DefaultClient, gwy.ts.URL, "/v1/completions",
		fmt.Sprintf(`{"model":"m","prompt":%q,"stream":true}`, prefix+"overflow"), nil)
	if res.upstream == first {
		t.Errorf("with 3 requests held on %s, the next went there too", first)
	}
	if misses := gwy.counter(t, "spigot_gateway_affinity_total", "result", "miss"); misses < 1 {
		t.Errorf("affinity misses = %g, want at least 1", misses)
	}
	close(release)
	wg.Wait()
}

// TestHealthChecks: an upstream whose /ready fails is ejected and gets no
// requests, and comes back when it passes again.
func TestHealthChecks(t *testing.T) {
	a, b := newFake(t, okStream), newFake(t, okStream)
	gwy := newGW(t, fakeConfig(t, KindSpigot, "health: {interval: 10ms}\n", nil, a, b))
	healthy := func(name string) float64 {
		return gwy.counter(t, "spigot_gateway_upstream_healthy", "upstream", name)
	}
	a.healthy.Store(false) // as a draining replica: /ready 503
	waitFor(t, "r0 ejected", 5*time.Second, func() bool { return healthy("r0") == 0 })
	for i := range 10 {
		stream(context.Background(), http.DefaultClient, gwy.ts.URL, "/v1/completions",
			fmt.Sprintf(`{"model":"m","prompt":"p%d","stream":true}`, i), nil)
	}
	if n := a.posts.Load(); n != 0 {
		t.Errorf("the ejected upstream got %d requests", n)
	}
	code, _, _ := post(t, gwy.ts.URL, "/ready", "")
	if code != http.StatusMethodNotAllowed {
		t.Errorf("POST /ready = %d, want 405", code)
	}
	b.healthy.Store(false)
	waitFor(t, "/ready 503 with no healthy upstream", 5*time.Second, func() bool {
		resp, err := http.Get(gwy.ts.URL + "/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	a.healthy.Store(true)
	b.healthy.Store(true)
	waitFor(t, "r0 back", 5*time.Second, func() bool { return healthy("r0") == 1 && healthy("r1") == 1 })
	gwy.g.Drain()
	resp, err := http.Get(gwy.ts.URL + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/ready while draining = %d, want 503", resp.StatusCode)
	}
}

// TestChatContinuation: a chat stream cut after two tokens is continued on
// the other upstream with the text so far as a final assistant message;
// the client sees one stream with the first id, one role chunk, one
// finish_reason, one [DONE] and usage counting each token once.
func TestChatContinuation(t *testing.T) {
	cut := func(w http.ResponseWriter, r *http.Request, body []byte) {
		sseChunks(w, true, "chatcmpl-first", []string{"Hel", "lo"}, "", 0) // no finish, no [DONE]
	}
	rest := func(w http.ResponseWriter, r *http.Request, body []byte) {
		sseChunks(w, true, "chatcmpl-second", []string{" wor", "ld"}, "stop", 9)
	}
	a, b := newFake(t, cut), newFake(t, rest)
	cfg := fakeConfig(t, KindOpenAI, "", nil, a, b)
	cfg.Upstreams[0].Weight = 1e6
	gwy := newGW(t, cfg)
	res := stream(context.Background(), http.DefaultClient, gwy.ts.URL, "/v1/chat/completions",
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":10,"stream":true,"stream_options":{"include_usage":true}}`, nil)
	if err := res.check("Hello world"); err != nil {
		t.Fatal(err)
	}
	if res.roles != 1 || !res.ids["chatcmpl-first"] {
		t.Errorf("%d role chunks, ids %v: want 1 and chatcmpl-first", res.roles, res.ids)
	}
	// b's prompt held the 2 tokens already sent: they are completion tokens.
	if len(res.usage) != 1 || res.usage[0]["prompt_tokens"] != 7 || res.usage[0]["completion_tokens"] != 4 || res.usage[0]["total_tokens"] != 11 {
		t.Errorf("usage %v, want one with 7 prompt and 4 completion tokens", res.usage)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(b.lastBody()), &got); err != nil {
		t.Fatal(err)
	}
	msgs, _ := json.Marshal(got["messages"])
	if string(msgs) != `[{"content":"hi","role":"user"},{"content":"Hello","role":"assistant"}]` ||
		got["continue_final_message"] != true || got["add_generation_prompt"] != false || got["max_tokens"] != 8.0 {
		t.Errorf("continuation request %s", b.lastBody())
	}
	if got := gwy.counter(t, "spigot_gateway_failovers_total", "stage", "mid_stream"); got != 1 {
		t.Errorf("mid-stream failovers = %g, want 1", got)
	}
	if got := gwy.counter(t, "spigot_gateway_ttft_overhead_seconds"); got != 1 {
		t.Errorf("TTFT overhead observed %g times, want once per stream", got)
	}
}

// TestCutAfterFinish: a stream cut after its finish_reason but before
// [DONE] gets [DONE] from the gateway and is not continued.
func TestCutAfterFinish(t *testing.T) {
	cut := func(w http.ResponseWriter, r *http.Request, body []byte) {
		sseChunks(w, false, "cmpl-first", []string{"a", "b"}, "", 0)
		io.WriteString(w, `data: {"id":"cmpl-first","object":"text_completion","created":10,"model":"m","choices":[{"index":0,"text":"","finish_reason":"stop"}]}`+"\n\n")
	}
	a, b := newFake(t, cut), newFake(t, okStream)
	cfg := fakeConfig(t, KindSpigot, "", nil, a, b)
	cfg.Upstreams[0].Weight = 1e6
	gwy := newGW(t, cfg)
	res := stream(context.Background(), http.DefaultClient, gwy.ts.URL, "/v1/completions",
		`{"model":"m","prompt":"x","max_tokens":9,"stream":true}`, nil)
	if err := res.check("ab"); err != nil || res.finishes[0] != "stop" {
		t.Fatalf("%v, finishes %q", err, res.finishes)
	}
	if n := b.posts.Load(); n != 0 {
		t.Errorf("the other upstream got %d requests, want none", n)
	}
}

// TestCutAtLimit: a completion cut once max_tokens tokens were sent is
// ended by the gateway with finish_reason length.
func TestCutAtLimit(t *testing.T) {
	cut := func(w http.ResponseWriter, r *http.Request, body []byte) {
		sseChunks(w, false, "cmpl-first", []string{"a", "b"}, "", 0)
	}
	a, b := newFake(t, cut), newFake(t, okStream)
	cfg := fakeConfig(t, KindSpigot, "", nil, a, b)
	cfg.Upstreams[0].Weight = 1e6
	gwy := newGW(t, cfg)
	res := stream(context.Background(), http.DefaultClient, gwy.ts.URL, "/v1/completions",
		`{"model":"m","prompt":"x","max_tokens":2,"stream":true}`, nil)
	if err := res.check("ab"); err != nil || res.finishes[0] != "length" {
		t.Fatalf("%v, finishes %q", err, res.finishes)
	}
	if n := b.posts.Load(); n != 0 {
		t.Errorf("the other upstream got %d requests, want none", n)
	}
}

// TestCutNotContinuable: a stream with two choices that is cut ends with
// an error event and [DONE].
func TestCutNotContinuable(t *testing.T) {
	cut := func(w http.ResponseWriter, r *http.Request, body []byte) {
		sseChunks(w, false, "cmpl-first", []string{"a"}, "", 0)
	}
	a, b := newFake(t, cut), newFake(t, okStream)
	cfg := fakeConfig(t, KindSpigot, "", nil, a, b)
	cfg.Upstreams[0].Weight = 1e6
	gwy := newGW(t, cfg)
	res := stream(context.Background(), http.DefaultClient, gwy.ts.URL, "/v1/completions",
		`{"model":"m","prompt":"x","n":2,"stream":true}`, nil)
	if len(res.errors) != 1 || res.dones != 1 || res.after != 0 || len(res.finishes) != 0 {
		t.Errorf("errors %q, %d [DONE], finishes %q: want one error event, then [DONE]", res.errors, res.dones, res.finishes)
	}
	if n := b.posts.Load(); n != 0 {
		t.Errorf("the other upstream got %d requests, want none", n)
	}
}

func TestTGITranslation(t *testing.T) {
	tgi := newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		switch r.URL.Path {
		case "/generate_stream":
			w.Header().Set("Content-Type", "text/event-stream")
			w.Write(readWire(t, "tgi_stream.sse"))
		case "/generate":
			w.Header().Set("Content-Type", "application/json")
			w.Write(readWire(t, "tgi_generate_details.json"))
		default:
			http.NotFound(w, r)
		}
	})
	gwy := newGW(t, fakeConfig(t, KindTGI, "", nil, tgi))
	res := stream(context.Background(), http.DefaultClient, gwy.ts.URL, "/v1/completions",
		`{"model":"m","prompt":"What is Deep Learning?","max_tokens":3,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}`, nil)
	if err := res.check("\nTo."); err != nil || res.finishes[0] != "length" {
		t.Fatalf("%v, finishes %q", err, res.finishes)
	}
	if len(res.usage) != 1 || res.usage[0]["prompt_tokens"] != 6 || res.usage[0]["completion_tokens"] != 3 {
		t.Errorf("usage %v, want 6 prompt and 3 completion tokens (the details)", res.usage)
	}
	var req struct {
		Inputs     string         `json:"inputs"`
		Parameters map[string]any `json:"parameters"`
	}
	json.Unmarshal([]byte(tgi.lastBody()), &req)
	p := req.Parameters
	if req.Inputs != "What is Deep Learning?" || p["max_new_tokens"] != 3.0 || p["do_sample"] != false || p["details"] != true || p["temperature"] != nil {
		t.Errorf("TGI request %s", tgi.lastBody())
	}

	code, body, _ := post(t, gwy.ts.URL, "/v1/completions", `{"model":"m","prompt":"What is Deep Learning?","max_tokens":2}`)
	var whole struct {
		Object  string `json:"object"`
		Choices []struct {
			Text         string `json:"text"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage map[string]int `json:"usage"`
	}
	if err := json.Unmarshal(body, &whole); err != nil || code != 200 {
		t.Fatalf("%d %s: %v", code, body, err)
	}
	if whole.Object != "text_completion" || len(whole.Choices) != 1 || whole.Choices[0].Text != "\nTo." ||
		whole.Choices[0].FinishReason != "length" || whole.Usage["completion_tokens"] != 2 {
		t.Errorf("non-streamed answer %s", body)
	}
	// Token ids can't be sent to TGI: 400 before any upstream is asked.
	code, body, _ = post(t, gwy.ts.URL, "/v1/completions", `{"model":"m","prompt":[1,2,3]}`)
	if code != 400 || !strings.Contains(string(body), "one text prompt") {
		t.Errorf("token prompt to TGI: %d %s", code, body)
	}
}

func TestOllamaTranslation(t *testing.T) {
	ol := newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		stream := !strings.Contains(string(body), `"stream":false`)
		switch {
		case r.URL.Path == "/api/chat" && stream:
			w.Write(readWire(t, "ollama_chat_stream.ndjson"))
		case r.URL.Path == "/api/chat":
			w.Write(readWire(t, "ollama_chat.json"))
		case r.URL.Path == "/api/generate" && stream:
			w.Write(readWire(t, "ollama_generate_stream.ndjson"))
		default:
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"error":"model \"m\" not found, try pulling it first"}`)
		}
	})
	gwy := newGW(t, fakeConfig(t, KindOllama, "", nil, ol))
	res := stream(context.Background(), http.DefaultClient, gwy.ts.URL, "/v1/chat/completions",
		`{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"why?"}]}],"max_completion_tokens":50,"temperature":0.5,"stop":"END","stream":true,"stream_options":{"include_usage":true}}`, nil)
	if err := res.check("The"); err != nil || res.roles != 1 || res.finishes[0] != "stop" {
		t.Fatalf("%v, %d roles, finishes %q", err, res.roles, res.finishes)
	}
	if len(res.usage) != 1 || res.usage[0]["prompt_tokens"] != 26 || res.usage[0]["completion_tokens"] != 282 {
		t.Errorf("usage %v, want Ollama's counts 26 and 282", res.usage)
	}
	var req struct {
		Model    string            `json:"model"`
		Messages []json.RawMessage `json:"messages"`
		Options  map[string]any    `json:"options"`
	}
	json.Unmarshal([]byte(ol.lastBody()), &req)
	msgs := fmt.Sprintf("%s", req.Messages)
	if req.Model != "m" || !strings.Contains(msgs, `"content":"why?"`) || req.Options["num_predict"] != 50.0 ||
		req.Options["temperature"] != 0.5 || fmt.Sprint(req.Options["stop"]) != "[END]" {
		t.Errorf("Ollama request %s", ol.lastBody())
	}

	res = stream(context.Background(), http.DefaultClient, gwy.ts.URL, "/v1/completions",
		`{"model":"m","prompt":"Why is the sky blue?","stream":true}`, nil)
	if err := res.check("The"); err != nil {
		t.Fatal(err)
	}
	if body := ol.lastBody(); !strings.Contains(body, `"raw":true`) || !strings.Contains(body, `"num_predict":16`) {
		t.Errorf("Ollama generate request %s, want raw and num_predict 16", body)
	}

	code, body, _ := post(t, gwy.ts.URL, "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
	if code != 200 || !strings.Contains(string(body), `"content":"Hello! How are you today?"`) || !strings.Contains(string(body), `"completion_tokens":298`) {
		t.Errorf("non-streamed chat: %d %s", code, body)
	}
	code, body, _ = post(t, gwy.ts.URL, "/v1/completions", `{"model":"m","prompt":"x","stream":false}`)
	if code != 404 || !strings.Contains(string(body), "model_not_found") || !strings.Contains(string(body), "try pulling it") {
		t.Errorf("Ollama 404: %d %s, want an OpenAI model_not_found error with Ollama's message", code, body)
	}
}

// TestClientDisconnect: a client that goes away leaves its stream
// running for the resume window, then the upstream request is canceled
// (the upstream sees its context end); one that asked for
// cancel_on_disconnect cancels it at once. The attempts count as
// canceled, and the upstream is not ejected.
func TestClientDisconnect(t *testing.T) {
	gone := make(chan struct{}, 2)
	a := newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		sseChunks(w, false, "cmpl-x", []string{"a"}, "", 0)
		<-r.Context().Done()
		gone <- struct{}{}
	})
	const window = time.Second
	gwy := newGW(t, fakeConfig(t, KindSpigot, "streams: {resume_window: 1s}\n", nil, a))
	for _, tc := range []struct {
		body string
		wait time.Duration // before the upstream sees the cancel
	}{
		{`{"model":"m","prompt":"x","stream":true}`, window},
		{`{"model":"m","prompt":"x","stream":true,"stream_options":{"cancel_on_disconnect":true}}`, 0},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		res := stream(ctx, http.DefaultClient, gwy.ts.URL, "/v1/completions", tc.body, cancel)
		cut := time.Now()
		if res.chunks != 1 {
			t.Fatalf("%d chunks before the cancel, want 1 (%v)", res.chunks, res.err)
		}
		select {
		case <-gone:
			if d := time.Since(cut); d < tc.wait*8/10 {
				t.Errorf("%s: the upstream request was canceled %v after the client went away, want about %v", tc.body, d, tc.wait)
			}
		case <-time.After(tc.wait + 5*time.Second):
			t.Fatalf("%s: the upstream request was not canceled", tc.body)
		}
	}
	waitFor(t, "the attempt to be counted", 5*time.Second, func() bool {
		return gwy.counter(t, "spigot_gateway_upstream_requests_total", "upstream", "r0", "outcome", outcomeCanceled) == 2
	})
	if got := gwy.counter(t, "spigot_gateway_upstream_healthy", "upstream", "r0"); got != 1 {
		t.Errorf("r0 healthy = %g after a client went away, want 1", got)
	}
	if got := gwy.counter(t, "spigot_gateway_upstream_in_flight"); got != 0 {
		t.Errorf("in flight = %g, want 0", got)
	}
}

// TestTokenize: /tokenize goes, as it is, to an upstream that has one
// (not TGI or Ollama) serving the model, and the answer comes back as it
// is; a failing upstream is skipped.
func TestTokenize(t *testing.T) {
	const answer = `{"tokens":[1,2,3],"count":3,"max_model_len":128}`
	tgiUp := newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) { http.Error(w, "no", 500) })
	down := newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) { http.Error(w, "down", 503) })
	good := newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, answer)
	})
	cfg := fakeConfig(t, KindSpigot, "", nil, tgiUp, down, good)
	cfg.Upstreams[0].Kind = KindTGI
	gwy := newGW(t, cfg)
	for range 4 {
		code, body, _ := post(t, gwy.ts.URL, "/tokenize", `{"model":"m","prompt":"abc"}`)
		if code != 200 || string(body) != answer {
			t.Fatalf("/tokenize = %d %s, want 200 %s", code, body, answer)
		}
	}
	if n := tgiUp.posts.Load(); n != 0 {
		t.Errorf("the TGI upstream got %d /tokenize requests", n)
	}
	if got := good.paths[0]; got != "/tokenize" {
		t.Errorf("upstream path %q", got)
	}
	if code, _, _ := post(t, gwy.ts.URL, "/detokenize", `{"model":"nope","tokens":[1]}`); code != 404 {
		t.Errorf("/detokenize of an unknown model = %d, want 404", code)
	}
}

// TestStall: an upstream that stops sending mid-stream, without closing
// the connection, is given up on after the stall timeout and the stream
// continues on another.
func TestStall(t *testing.T) {
	release := make(chan struct{})
	stuck := func(w http.ResponseWriter, r *http.Request, body []byte) {
		sseChunks(w, false, "cmpl-first", []string{"a"}, "", 0)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}
	a, b := newFake(t, stuck), newFake(t, okStream)
	defer close(release)
	cfg := fakeConfig(t, KindSpigot, "routing: {stall_timeout: 200ms}\n", nil, a, b)
	cfg.Upstreams[0].Weight = 1e6
	gwy := newGW(t, cfg)
	start := time.Now()
	res := stream(context.Background(), http.DefaultClient, gwy.ts.URL, "/v1/completions", `{"model":"m","prompt":"x","stream":true}`, nil)
	if err := res.check("aab"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("failed over after %v, before the stall timeout", d)
	}
	if got := gwy.counter(t, "spigot_gateway_upstream_requests_total", "upstream", "r0", "outcome", outcomeFailed); got != 1 {
		t.Errorf("r0 failed = %g, want 1", got)
	}
	if !strings.Contains(b.lastBody(), `"prompt":"xa"`) {
		t.Errorf("continuation %s, want the prompt extended by the text so far", b.lastBody())
	}
}
