package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeOpenAI streams three one-token chat chunks, usage and [DONE] for
// every request, and 429 for prompts containing "busy".
func fakeOpenAI(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/chat/completions" {
			http.NotFound(w, r)
			return
		}
		var req struct {
			Messages []struct{ Content string } `json:"messages"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		if len(req.Messages) == 1 && strings.Contains(req.Messages[0].Content, "busy") {
			http.Error(w, "busy", http.StatusTooManyRequests)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for range 3 {
			fmt.Fprint(w, "data: {\"choices\":[{\"delta\":{\"content\":\" hi\"}}]}\n\n")
			w.(http.Flusher).Flush()
		}
		fmt.Fprint(w, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n")
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestBench(t *testing.T) {
	url := fakeOpenAI(t)
	jsonPath := filepath.Join(t.TempDir(), "out.json")
	var out, errb bytes.Buffer
	err := benchCmd([]string{"--url", url, "--concurrency", "2", "--requests", "5", "--prompt-tokens", "40", "--max-tokens", "3", "--json", jsonPath}, stdio{nil, &out, &errb})
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, errb.String())
	}
	for _, want := range []string{"TTFT (ms)", "inter-token latency (ms)", "output tokens/s", "sent 5, completed 5, errors 0"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Completed        int `json:"completed"`
		CompletionTokens int `json:"completion_tokens"`
		TTFT             struct {
			N int `json:"n"`
		} `json:"ttft_ms"`
	}
	if err := json.Unmarshal(b, &res); err != nil || res.Completed != 5 || res.CompletionTokens != 15 || res.TTFT.N != 5 {
		t.Errorf("JSON %s (%v)", b, err)
	}

	// --json - puts JSON alone on stdout and the table on stderr.
	out.Reset()
	errb.Reset()
	if err := benchCmd([]string{"--url", url, "--requests", "1", "--prompt", "hello", "--json", "-"}, stdio{nil, &out, &errb}); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil || res.Completed != 1 {
		t.Errorf("stdout is not the JSON figures: %q (%v)", out.String(), err)
	}
	if !strings.Contains(errb.String(), "TTFT (ms)") {
		t.Errorf("stderr lacks the table: %q", errb.String())
	}
}

func TestBenchErrors(t *testing.T) {
	url := fakeOpenAI(t)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no url", []string{"--requests", "1"}, "--url"},
		{"two prompts", []string{"--url", url, "--prompt", "x", "--prompt-tokens", "5"}, "one of --prompt"},
		{"bad api", []string{"--url", url, "--api", "embeddings"}, "API"},
		{"missing prompt file", []string{"--url", url, "--prompt-file", "/nonexistent"}, "no such file"},
		{"all fail", []string{"--url", url, "--requests", "2", "--prompt", "busy", "--same-prompt"}, "no request completed (0 errors, 2 rate-limited)"},
	}
	for _, tc := range cases {
		var out bytes.Buffer
		err := benchCmd(tc.args, stdio{strings.NewReader(""), &out, &bytes.Buffer{}})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to mention %q", tc.name, err, tc.want)
		}
	}
}
