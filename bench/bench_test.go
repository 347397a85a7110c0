package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// fakeServer speaks OpenAI's streaming wire format with set timing: a
// role chunk at once (chat), the first content chunk after ttft, then one
// every gap, each of perChunk tokens, then a usage chunk and [DONE].
// What request N does is modes[N], N being the number its prompt starts
// with ("" or missing: stream normally).
type fakeServer struct {
	ttft, gap time.Duration
	chunks    int
	perChunk  int
	usageEach bool // put cumulative usage on every content chunk, as vLLM's continuous_usage_stats
	noUsage   bool
	modes     map[int]string
	barrier   int // if > 0, the first requests wait (up to 2 s) until this many are in flight
	tokenize  func(string) int
	hung      chan struct{} // if not nil, gets a value as each "hang" request starts hanging

	inflight, maxInflight atomic.Int32
	mu                    sync.Mutex
	bodies                []map[string]any
}

var promptNumber = regexp.MustCompile(`^\[(\d+)\] `)

func (f *fakeServer) start(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(f.handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

func (f *fakeServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"object":"list","data":[{"id":"fake-model","object":"model"}]}`)
	})
	mux.HandleFunc("POST /tokenize", func(w http.ResponseWriter, r *http.Request) {
		if f.tokenize == nil {
			http.NotFound(w, r)
			return
		}
		var req struct {
			Content string `json:"content"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		n := f.tokenize(req.Content)
		json.NewEncoder(w).Encode(map[string]any{"tokens": make([]int, n)})
	})
	mux.HandleFunc("POST /v1/chat/completions", f.complete)
	mux.HandleFunc("POST /v1/completions", f.complete)
	return mux
}

func (f *fakeServer) complete(w http.ResponseWriter, r *http.Request) {
	n := f.inflight.Add(1)
	// A client may start its next request as soon as it reads [DONE],
	// before this handler returns: the request is over just before that.
	done := sync.OnceFunc(func() { f.inflight.Add(-1) })
	defer done()
	for {
		m := f.maxInflight.Load()
		if n <= m || f.maxInflight.CompareAndSwap(m, n) {
			break
		}
	}
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.bodies = append(f.bodies, body)
	f.mu.Unlock()
	chat := strings.HasSuffix(r.URL.Path, "/chat/completions")
	prompt, _ := body["prompt"].(string)
	if chat {
		prompt = body["messages"].([]any)[0].(map[string]any)["content"].(string)
	}
	num := -1
	if m := promptNumber.FindStringSubmatch(prompt); m != nil {
		num, _ = strconv.Atoi(m[1])
	}
	if f.barrier > 0 && num < f.barrier {
		deadline := time.Now().Add(2 * time.Second)
		for f.inflight.Load() < int32(f.barrier) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	mode := f.modes[num]
	switch mode {
	case "500":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprint(w, `{"error":{"message":"the model fell over","type":"server_error"}}`)
		return
	case "429":
		http.Error(w, `{"error":{"message":"slow down"}}`, http.StatusTooManyRequests)
		return
	case "hang":
		if f.hung != nil {
			f.hung <- struct{}{}
		}
		<-r.Context().Done()
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	fl := w.(http.Flusher)
	send := func(s string) {
		fmt.Fprintf(w, "data: %s\n\n", s)
		fl.Flush()
	}
	if chat {
		send(`{"choices":[{"index":0,"delta":{"role":"assistant","content":null}}]}`)
	}
	fmt.Fprint(w, ": keepalive comment\n\n")
	time.Sleep(f.ttft)
	for i := range f.chunks {
		if i > 0 {
			time.Sleep(f.gap)
		}
		if mode == "malformed" && i == 1 {
			send(`{"choices":[{"delta":{"content":"x"`)
			return
		}
		if mode == "error_event" && i == 1 {
			fmt.Fprint(w, "error: {\"code\":500,\"message\":\"out of memory\",\"type\":\"server_error\"}\n\n")
			return
		}
		text := strings.Repeat(" tok", f.perChunk)
		usage := ""
		if f.usageEach {
			usage = fmt.Sprintf(`,"usage":{"prompt_tokens":7,"completion_tokens":%d}`, (i+1)*f.perChunk)
		}
		if chat {
			send(fmt.Sprintf(`{"choices":[{"index":0,"delta":{"content":%q}}]%s}`, text, usage))
		} else {
			send(fmt.Sprintf(`{"choices":[{"index":0,"text":%q}]%s}`, text, usage))
		}
	}
	if mode == "no_done" {
		return
	}
	if !f.noUsage {
		send(fmt.Sprintf(`{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":%d}}`, f.chunks*f.perChunk))
	}
	done()
	send("[DONE]")
}

func (f *fakeServer) sentBodies() []map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]map[string]any(nil), f.bodies...)
}

// TestRunTiming runs against a real socket. Load only adds delay, so
// the lower bounds are the server's delays and the upper bounds are
// loose; TestRunTimingExact checks the figures exactly.
func TestRunTiming(t *testing.T) {
	for _, api := range []string{APIChat, APICompletions} {
		t.Run(api, func(t *testing.T) {
			f := &fakeServer{ttft: 40 * time.Millisecond, gap: 10 * time.Millisecond, chunks: 6, perChunk: 2}
			url := f.start(t)
			res, err := Run(t.Context(), Config{URL: url + "/v1", API: api, Concurrency: 4, Requests: 8, MaxTokens: 12, IgnoreEOS: true})
			if err != nil {
				t.Fatal(err)
			}
			if res.Completed != 8 || res.Errors != 0 || res.Sent != 8 || res.Stopped != "" {
				t.Fatalf("result %+v", res)
			}
			if res.Model != "fake-model" {
				t.Errorf("model %q, want fake-model from /v1/models", res.Model)
			}
			in := func(name string, got, lo, hi float64) {
				t.Helper()
				if got < lo || got > hi {
					t.Errorf("%s = %.2f, want in [%.2f, %.2f]", name, got, lo, hi)
				}
			}
			// 40 ms to the first chunk, then 5 gaps of 10 ms, 2 tokens a chunk.
			in("TTFT min", res.TTFT.Min, 40, 1000)
			in("E2E min", res.E2E.Min, 90, 2000)
			in("chunk gap p50", res.ChunkGap.P50, 0, 500)
			in("ITL p50", res.ITL.P50, 0, 250)
			in("tokens per chunk", res.TokensPerChunk, 2, 2)
			if res.CompletionTokens != 8*12 || res.ITL.N != 8*5 || res.TTFT.N != 8 || res.StreamTokensPerSecond.N != 8 || res.UsageMissing != 0 {
				t.Errorf("counts: tokens %d, ITL n %d, TTFT n %d, rates n %d, usage missing %d", res.CompletionTokens, res.ITL.N, res.TTFT.N, res.StreamTokensPerSecond.N, res.UsageMissing)
			}
			in("wall s", res.WallSeconds, 0.18, 5) // two waves of at least 90 ms
			if want := float64(res.CompletionTokens) / res.WallSeconds; !near(res.OutputTokensPerSecond, want) {
				t.Errorf("output tokens/s %.2f, want %.2f", res.OutputTokensPerSecond, want)
			}
			if want := 8 / res.WallSeconds; !near(res.RequestsPerSecond, want) {
				t.Errorf("requests/s %.2f, want %.2f", res.RequestsPerSecond, want)
			}
			if f.maxInflight.Load() > 4 {
				t.Errorf("%d requests in flight, want at most 4", f.maxInflight.Load())
			}
		})
	}
}

// TestRunTimingExact runs the fake server in a synctest bubble, through
// a transport that calls its handler directly, so that the clock moves
// only when every goroutine waits and the server's delays are the
// figures exactly.
func TestRunTimingExact(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeServer{ttft: 40 * time.Millisecond, gap: 10 * time.Millisecond, chunks: 6, perChunk: 2}
		hc := &http.Client{Transport: handlerTransport{f.handler()}}
		res, err := Run(t.Context(), Config{URL: "http://fake", Concurrency: 4, Requests: 8, MaxTokens: 12, HTTPClient: hc})
		if err != nil {
			t.Fatal(err)
		}
		// Each stream: first content chunk at 40 ms, then 5 chunks 10 ms
		// apart of 2 tokens each: ITL 5 ms, (12−2) tokens in 50 ms = 200/s.
		// Two waves of four 90 ms streams: 180 ms, 96 tokens.
		checks := []struct {
			name      string
			got, want float64
		}{
			{"TTFT p50", res.TTFT.P50, 40}, {"TTFT p99", res.TTFT.P99, 40},
			{"ITL p50", res.ITL.P50, 5}, {"ITL p99", res.ITL.P99, 5},
			{"chunk gap p50", res.ChunkGap.P50, 10},
			{"E2E p50", res.E2E.P50, 90}, {"E2E p99", res.E2E.P99, 90},
			{"stream tokens/s mean", res.StreamTokensPerSecond.Mean, 200}, {"stream tokens/s p50", res.StreamTokensPerSecond.P50, 200},
			{"wall s", res.WallSeconds, 0.18},
			{"output tokens/s", res.OutputTokensPerSecond, 96 / 0.18},
			{"requests/s", res.RequestsPerSecond, 8 / 0.18},
		}
		for _, c := range checks {
			if !near(c.got, c.want) {
				t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
			}
		}
		if f.maxInflight.Load() != 4 {
			t.Errorf("%d requests in flight at most, want 4", f.maxInflight.Load())
		}
	})
}

// handlerTransport is an http.RoundTripper that serves each request
// with a handler in a new goroutine, streaming its response through a
// pipe: no sockets, so that it works inside a synctest bubble.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	pr, pw := io.Pipe()
	w := &pipeResponse{header: http.Header{}, pw: pw, wrote: make(chan struct{})}
	go func() {
		defer pw.Close()
		t.h.ServeHTTP(w, req)
		w.WriteHeader(http.StatusOK) // if the handler wrote nothing
	}()
	select {
	case <-w.wrote:
	case <-req.Context().Done():
		pr.Close()
		return nil, req.Context().Err()
	}
	return &http.Response{StatusCode: w.code, Status: fmt.Sprintf("%d %s", w.code, http.StatusText(w.code)),
		Header: w.header, Body: pr, Request: req, ContentLength: -1}, nil
}

// pipeResponse is the handler's side of a handlerTransport response.
type pipeResponse struct {
	header http.Header
	pw     *io.PipeWriter
	code   int
	wrote  chan struct{} // closed at WriteHeader
}

func (w *pipeResponse) Header() http.Header { return w.header }
func (w *pipeResponse) Flush()              {}

func (w *pipeResponse) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
		w.header = w.header.Clone()
		close(w.wrote)
	}
}

func (w *pipeResponse) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.pw.Write(p)
}

func TestRunRequestBodies(t *testing.T) {
	f := &fakeServer{chunks: 1, perChunk: 1}
	url := f.start(t)
	_, err := Run(t.Context(), Config{URL: url, API: APICompletions, Model: "m", Concurrency: 2, Requests: 3, MaxTokens: 5, Temperature: 0.5, IgnoreEOS: true, PromptTokens: 20})
	if err != nil {
		t.Fatal(err)
	}
	prompts := map[string]bool{}
	for _, b := range f.sentBodies() {
		if b["model"] != "m" || b["stream"] != true || b["max_tokens"] != 5.0 || b["temperature"] != 0.5 || b["ignore_eos"] != true {
			t.Errorf("body %v", b)
		}
		if so, _ := b["stream_options"].(map[string]any); so["include_usage"] != true {
			t.Errorf("stream_options %v", b["stream_options"])
		}
		p := b["prompt"].(string)
		if !promptNumber.MatchString(p) {
			t.Errorf("prompt %q does not begin with its number", p)
		}
		prompts[p] = true
	}
	if len(prompts) != 3 {
		t.Errorf("%d different prompts in 3 requests", len(prompts))
	}

	f = &fakeServer{chunks: 1, perChunk: 1}
	url = f.start(t)
	if _, err := Run(t.Context(), Config{URL: url, Concurrency: 2, Requests: 3, Prompt: "Hello there", SamePrompt: true}); err != nil {
		t.Fatal(err)
	}
	for _, b := range f.sentBodies() {
		if got := b["messages"].([]any)[0].(map[string]any)["content"]; got != "Hello there" {
			t.Errorf("prompt %q, want Hello there", got)
		}
		if _, ok := b["ignore_eos"]; ok {
			t.Errorf("ignore_eos sent without IgnoreEOS")
		}
	}
}

// TestRunConcurrency: the first three requests hold until three are in
// flight, so a run at concurrency 3 reaches 3 and must not exceed it.
func TestRunConcurrency(t *testing.T) {
	f := &fakeServer{ttft: time.Millisecond, gap: time.Millisecond, chunks: 3, perChunk: 1, barrier: 3}
	url := f.start(t)
	res, err := Run(t.Context(), Config{URL: url, Concurrency: 3, Requests: 15})
	if err != nil {
		t.Fatal(err)
	}
	if res.Completed != 15 {
		t.Fatalf("completed %d of 15: %v", res.Completed, res.ErrorSamples)
	}
	if got := f.maxInflight.Load(); got != 3 {
		t.Errorf("at most %d requests in flight, want 3", got)
	}
}

func TestRunErrors(t *testing.T) {
	f := &fakeServer{chunks: 3, perChunk: 1, modes: map[int]string{
		1: "500", 2: "429", 3: "malformed", 4: "no_done", 5: "error_event", 7: "429",
	}}
	url := f.start(t)
	res, err := Run(t.Context(), Config{URL: url, Concurrency: 2, Requests: 9})
	if err != nil {
		t.Fatal(err)
	}
	if res.Completed != 3 || res.Errors != 4 || res.RateLimited != 2 || res.Sent != 9 {
		t.Errorf("completed %d errors %d rate-limited %d sent %d; want 3, 4, 2, 9", res.Completed, res.Errors, res.RateLimited, res.Sent)
	}
	want := map[string]int{"http_500": 1, KindRateLimited: 2, KindMalformed: 1, KindNoDone: 1, KindErrorEvent: 1}
	if fmt.Sprint(res.ErrorKinds) != fmt.Sprint(want) {
		t.Errorf("error kinds %v, want %v", res.ErrorKinds, want)
	}
	if len(res.ErrorSamples) != maxErrorSamples {
		t.Fatalf("error samples %q", res.ErrorSamples)
	}
	for i, sub := range []string{"request 1: HTTP 500 Internal Server Error: the model fell over", "request 2: HTTP 429 Too Many Requests: slow down", "request 3: bad chunk", "request 4: the stream ended without [DONE]", "request 5: error event: {\"code\":500,\"message\":\"out of memory\""} {
		if !strings.HasPrefix(res.ErrorSamples[i], sub) {
			t.Errorf("error sample %d %q, want it to begin %q", i, res.ErrorSamples[i], sub)
		}
	}
	// Failed requests are left out of the latency figures.
	if res.TTFT.N != 3 || res.E2E.N != 3 {
		t.Errorf("TTFT n %d, E2E n %d; want 3", res.TTFT.N, res.E2E.N)
	}
}

func TestRunTimeoutAndConnectErrors(t *testing.T) {
	f := &fakeServer{chunks: 2, perChunk: 1, modes: map[int]string{0: "hang"}}
	url := f.start(t)
	res, err := Run(t.Context(), Config{URL: url, Concurrency: 2, Requests: 2, Timeout: 250 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Completed != 1 || res.ErrorKinds[KindTimeout] != 1 {
		t.Errorf("completed %d, kinds %v; want 1 and a timeout", res.Completed, res.ErrorKinds)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	res, err = Run(t.Context(), Config{URL: "http://" + ln.Addr().String(), Concurrency: 1, Requests: 2})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 2 || res.ErrorKinds[KindConnect] != 2 || res.PromptCalibrated {
		t.Errorf("result %+v, want 2 connect errors", res)
	}
}

func TestRunStoppedEarly(t *testing.T) {
	t.Run("cancelled", func(t *testing.T) {
		// Requests 0 and 1 finish; 2 and 3 hang until the run is
		// cancelled; 4… are never sent.
		f := &fakeServer{chunks: 2, perChunk: 1, modes: map[int]string{2: "hang", 3: "hang"}, hung: make(chan struct{}, 2)}
		ctx, cancel := context.WithCancel(t.Context())
		go func() {
			<-f.hung
			<-f.hung
			cancel()
		}()
		res, err := Run(ctx, Config{URL: f.start(t), Concurrency: 2, Requests: 10})
		if err != nil {
			t.Fatal(err)
		}
		if res.Stopped != "context canceled" || res.Completed != 2 || res.Cancelled != 2 || res.Sent != 4 || res.Errors != 0 {
			t.Errorf("stopped %q, completed %d, cancelled %d, sent %d, errors %d (%v); want context canceled, 2, 2, 4, 0",
				res.Stopped, res.Completed, res.Cancelled, res.Sent, res.Errors, res.ErrorSamples)
		}
	})
	t.Run("duration", func(t *testing.T) {
		f := &fakeServer{chunks: 2, perChunk: 1, modes: map[int]string{2: "hang", 3: "hang"}}
		start := time.Now()
		res, err := Run(t.Context(), Config{URL: f.start(t), Concurrency: 2, Requests: 10, Duration: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if el := time.Since(start); el > 5*time.Second {
			t.Errorf("stopping took %v", el)
		}
		if res.Stopped != "duration limit reached" || res.Sent > 4 || res.Cancelled < 1 || res.Completed+res.Cancelled != res.Sent || res.Errors != 0 {
			t.Errorf("stopped %q, completed %d, cancelled %d, sent %d, errors %d (%v)",
				res.Stopped, res.Completed, res.Cancelled, res.Sent, res.Errors, res.ErrorSamples)
		}
	})
}

func TestRunUsageVariants(t *testing.T) {
	// Cumulative usage on every chunk gives exact per-chunk counts.
	f := &fakeServer{chunks: 4, perChunk: 3, usageEach: true, gap: 6 * time.Millisecond}
	res, err := Run(t.Context(), Config{URL: f.start(t), Concurrency: 1, Requests: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.ITL.N != 3*3 || res.CompletionTokens != 12 || res.TokensPerChunk != 3 {
		t.Errorf("usage on every chunk: ITL n %d, tokens %d, per chunk %.2f; want 9, 12, 3", res.ITL.N, res.CompletionTokens, res.TokensPerChunk)
	}
	if res.ITL.Min < 1 || res.ITL.P50 > 6 {
		t.Errorf("ITL %+v, want about 2 ms (6 ms / 3 tokens)", res.ITL)
	}
	// Without usage each chunk counts as a token, and the report says so.
	f = &fakeServer{chunks: 4, perChunk: 3, noUsage: true}
	res, err = Run(t.Context(), Config{URL: f.start(t), Concurrency: 1, Requests: 2})
	if err != nil {
		t.Fatal(err)
	}
	if res.UsageMissing != 2 || res.CompletionTokens != 8 {
		t.Errorf("no usage: missing %d, tokens %d; want 2, 8", res.UsageMissing, res.CompletionTokens)
	}
}

// wordTokens is a stand-in tokenizer: a token per run of letters, per
// digit and per other non-space character.
func wordTokens(s string) int {
	n, inWord := 0, false
	for _, c := range s {
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if letter && inWord {
			continue
		}
		inWord = letter
		if c != ' ' {
			n++
		}
	}
	return n
}

func TestPromptCalibration(t *testing.T) {
	for _, target := range []int{1, 20, 128, 1000} {
		f := &fakeServer{chunks: 1, perChunk: 1, tokenize: wordTokens}
		res, err := Run(t.Context(), Config{URL: f.start(t), Concurrency: 2, Requests: 3, PromptTokens: target})
		if err != nil {
			t.Fatal(err)
		}
		// The prefix "[000000] " alone is 8 tokens here.
		want := max(target, 8)
		if !res.PromptCalibrated || res.PromptTokens != want {
			t.Errorf("target %d: prompt %d tokens, calibrated %v (%s)", target, res.PromptTokens, res.PromptCalibrated, res.PromptNote)
		}
		for _, b := range f.sentBodies() {
			p := b["messages"].([]any)[0].(map[string]any)["content"].(string)
			if n := wordTokens(p); n != want {
				t.Errorf("target %d: sent a prompt of %d tokens: %q", target, n, p)
			}
		}
	}
	// Without /tokenize the length is estimated.
	f := &fakeServer{chunks: 1, perChunk: 1}
	res, err := Run(t.Context(), Config{URL: f.start(t), Concurrency: 1, Requests: 1, PromptTokens: 100})
	if err != nil {
		t.Fatal(err)
	}
	if res.PromptCalibrated || res.PromptTokens != 100 || !strings.Contains(res.PromptNote, "404") {
		t.Errorf("uncalibrated prompt: %d tokens, calibrated %v, note %q", res.PromptTokens, res.PromptCalibrated, res.PromptNote)
	}
	p := f.sentBodies()[0]["messages"].([]any)[0].(map[string]any)["content"].(string)
	if n := wordTokens(p); n < 90 || n > 110 {
		t.Errorf("estimated prompt of 100 tokens has %d: %q", n, p)
	}
}

func TestPromptDeterministic(t *testing.T) {
	a, b := promptText(promptUnits(300)), promptText(promptUnits(300))
	if a != b || !strings.HasPrefix(promptText(promptUnits(400)), a) {
		t.Error("prompt text is not deterministic, or a longer one does not extend a shorter one")
	}
	if uniquePrefix(3, 10) != "[000003] " || uniquePrefix(12, 10_000_000) != "[0000012] " {
		t.Errorf("uniquePrefix = %q, %q", uniquePrefix(3, 10), uniquePrefix(12, 10_000_000))
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []Config{
		{Concurrency: 1, Requests: 1},
		{URL: "http://x", Requests: 1},
		{URL: "http://x", Concurrency: 1},
		{URL: "x:1", Concurrency: 1, Requests: 1},
		{URL: "http://x", Concurrency: 1, Requests: 1, API: "embeddings"},
	} {
		if _, err := Run(t.Context(), c); err == nil {
			t.Errorf("Run(%+v) succeeded", c)
		}
	}
}

func TestWriteText(t *testing.T) {
	f := &fakeServer{chunks: 3, perChunk: 1, modes: map[int]string{1: "429"}}
	res, err := Run(t.Context(), Config{URL: f.start(t), Concurrency: 1, Requests: 3})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := res.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"model fake-model", "TTFT (ms)", "inter-token latency (ms)", "end-to-end latency (ms)", "stream tokens/s", "output tokens/s", "requests/s", "rate-limited (429) 1", "http_429 1", "request 1: HTTP 429"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
	js, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := json.Unmarshal(js, &back); err != nil || back.Completed != 2 || back.TTFT != res.TTFT {
		t.Errorf("JSON round trip: %v, %+v", err, back)
	}
}
