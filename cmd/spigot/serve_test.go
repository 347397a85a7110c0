package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// logWatch collects serve's log and reports the URL of the "ready" line.
type logWatch struct {
	mu    sync.Mutex
	buf   strings.Builder
	ready chan string
	once  sync.Once
}

var readyURL = regexp.MustCompile(`msg=ready .*url=(http://\S+)/v1`)

func newLogWatch() *logWatch { return &logWatch{ready: make(chan string, 1)} }

func (w *logWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if m := readyURL.FindStringSubmatch(w.buf.String()); m != nil {
		w.once.Do(func() { w.ready <- m[1] })
	}
	return len(p), nil
}

func (w *logWatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func (w *logWatch) url(t *testing.T, done <-chan error) string {
	t.Helper()
	select {
	case u := <-w.ready:
		return u
	case err := <-done:
		t.Fatalf("serve returned before ready: %v\n%s", err, w.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("serve not ready:\n%s", w.String())
	}
	return ""
}

func get(t *testing.T, url string, header ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestServeDemoSIGTERM runs `spigot serve` with no model: it serves the
// demo model and says so, and a real SIGTERM shuts it down with a final
// event for the stream in flight and exit status 0 (a nil error).
func TestServeDemoSIGTERM(t *testing.T) {
	logs := newLogWatch()
	done := make(chan error, 1)
	go func() {
		done <- serveCmd([]string{"--addr", "127.0.0.1:0", "--threads", "1", "--shutdown-timeout", "200ms"}, stdio{nil, io.Discard, logs})
	}()
	url := logs.url(t, done)
	if code, body := get(t, url+"/ready"); code != 200 {
		t.Fatalf("/ready = %d %s", code, body)
	}
	if code, body := get(t, url+"/v1/models"); code != 200 || !strings.Contains(body, `"id":"spigot-demo-random"`) ||
		!strings.Contains(body, "random text") || !strings.Contains(body, "spigot serve -m") {
		t.Errorf("/v1/models = %d %s", code, body)
	}
	if l := logs.String(); !strings.Contains(l, "RANDOM TEXT") || !strings.Contains(l, "spigot serve -m hf:OWNER/REPO/FILE.gguf") {
		t.Errorf("the log does not say the demo model is random:\n%s", l)
	}

	resp, err := http.Post(url+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"messages":[{"role":"user","content":"hi"}],"max_tokens":1900,"ignore_eos":true,"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadString('\n'); err != nil { // the role chunk: the stream is running
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	s := string(rest)
	finals := strings.Count(s, `"finish_reason":"length"`) + strings.Count(s, `data: {"error":`)
	if finals != 1 || !strings.HasSuffix(s, "data: [DONE]\n\n") {
		t.Errorf("the stream in flight ended with %d final events:\n…%s", finals, s[max(0, len(s)-400):])
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop after SIGTERM")
	}
	if l := logs.String(); !strings.Contains(l, "shutting down") || !strings.Contains(l, "msg=stopped") {
		t.Errorf("log:\n%s", l)
	}
}

// TestServeModelWithKey serves the shared test model behind an API key.
func TestServeModelWithKey(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := newLogWatch()
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, func() {}, []string{"-m", sharedModel(), "--addr", "127.0.0.1:0", "--api-key", "sk-1", "--parallel", "2",
			"--chat-template", "chatml", "--max-queue", "4", "--resume-window", "0"}, stdio{nil, io.Discard, logs})
	}()
	url := logs.url(t, done)
	// --resume-window 0: streams cannot be resumed.
	if code, body := get(t, url+"/v1/streams/cmpl-1", "Authorization", "Bearer sk-1"); code != 404 || !strings.Contains(body, "--resume-window 0") {
		t.Errorf("GET /v1/streams/cmpl-1 with resuming off: %d %s", code, body)
	}
	if code, _ := get(t, url+"/v1/models"); code != 401 {
		t.Errorf("/v1/models without the key: %d", code)
	}
	if code, body := get(t, url+"/v1/models", "Authorization", "Bearer sk-1"); code != 200 || !strings.Contains(body, `"id":"stories260K"`) {
		t.Errorf("/v1/models = %d %s", code, body)
	}
	if code, _ := get(t, url+"/health"); code != 200 {
		t.Errorf("/health: %d", code)
	}
	prompt, want := firstReference(t)
	req, _ := http.NewRequest(http.MethodPost, url+"/v1/completions",
		strings.NewReader(`{"model":"stories260K","prompt":"`+prompt+`","max_tokens":48,"temperature":0}`))
	req.Header.Set("Authorization", "Bearer sk-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `"text":"`+want+`"`) {
		t.Errorf("completion %s, want text %q", b, want)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve = %v", err)
	}
}

func TestServeErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-m", "/nonexistent.gguf", "--addr", "127.0.0.1:0"}, "no such file"},
		{[]string{"-m", sharedModel(), "--addr", "127.0.0.1:0", "--chat-template", "nosuchname"}, "unknown chat template name"},
		{[]string{"--addr", "not an address"}, "address"},
		{[]string{"extra"}, "unexpected arguments"},
	} {
		err := serve(context.Background(), func() {}, tc.args, stdio{nil, io.Discard, io.Discard})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("serve %q = %v, want an error mentioning %q", tc.args, err, tc.want)
		}
	}
}

// TestBenchAgainstServe runs the load generator against the real server:
// every request completes with its exact token count, and the prompt is
// calibrated to the requested length with the server's /tokenize.
func TestBenchAgainstServe(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := newLogWatch()
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, func() {}, []string{"-m", sharedModel(), "--addr", "127.0.0.1:0", "--parallel", "4"}, stdio{nil, io.Discard, logs})
	}()
	url := logs.url(t, done)
	out := filepath.Join(t.TempDir(), "bench.json")
	err := benchCmd([]string{"--url", url, "--concurrency", "4", "--requests", "8", "--prompt-tokens", "20",
		"--max-tokens", "16", "--api", "completions", "--json", out}, stdio{nil, io.Discard, io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Completed        int     `json:"completed"`
		Errors           int     `json:"errors"`
		CompletionTokens int     `json:"completion_tokens"`
		Calibrated       bool    `json:"prompt_calibrated"`
		ServerPrompt     float64 `json:"server_prompt_tokens_mean"`
		TTFT             struct {
			N int `json:"n"`
		} `json:"ttft_ms"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("%v in %s", err, b)
	}
	if r.Completed != 8 || r.Errors != 0 || r.CompletionTokens != 8*16 || r.TTFT.N != 8 {
		t.Errorf("bench result %s", b)
	}
	if !r.Calibrated || r.ServerPrompt < 19 || r.ServerPrompt > 22 {
		t.Errorf("prompt calibrated %v to %v server tokens, want about 20", r.Calibrated, r.ServerPrompt)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve = %v", err)
	}
}
