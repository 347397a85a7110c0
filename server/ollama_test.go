package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	ollamaapi "github.com/ollama/ollama/api"
)

// ollamaClient returns Ollama's own Go client for the fixture's server.
func ollamaClient(t testing.TB, fx *fixture) *ollamaapi.Client {
	t.Helper()
	u, err := url.Parse(fx.url)
	if err != nil {
		t.Fatal(err)
	}
	return ollamaapi.NewClient(u, fx.ts.Client())
}

// greedy are the options that make Ollama's sampling greedy and
// penalty-free, as llama.cpp's reference outputs were made.
func greedy(numPredict int) map[string]any {
	return map[string]any{"temperature": 0, "repeat_penalty": 1, "num_predict": numPredict}
}

// TestOllamaClient talks to the server with Ollama's Go client: raw
// generation streamed and not (llama.cpp's greedy text), chat, the model
// listings, and an error.
func TestOllamaClient(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 4})
	client := ollamaClient(t, fx)
	ctx := context.Background()
	ref := references(t)[0]

	for _, stream := range []bool{true, false} {
		var text strings.Builder
		var finals []ollamaapi.GenerateResponse
		err := client.Generate(ctx, &ollamaapi.GenerateRequest{
			Model: "stories260K", Prompt: ref.Prompt, Raw: true, Stream: &stream, Options: greedy(48),
		}, func(r ollamaapi.GenerateResponse) error {
			if len(finals) > 0 {
				return fmt.Errorf("a line after the final one: %+v", r)
			}
			text.WriteString(r.Response)
			if r.Done {
				finals = append(finals, r)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("stream=%v: %v", stream, err)
		}
		if len(finals) != 1 {
			t.Fatalf("stream=%v: %d final lines", stream, len(finals))
		}
		f := finals[0]
		if text.String() != ref.OutputText || f.DoneReason != "length" || f.EvalCount != 48 || f.PromptEvalCount != len(ref.PromptIDs) ||
			f.Model != "stories260K" || f.TotalDuration <= 0 || f.EvalDuration <= 0 || f.Context != nil || time.Since(f.CreatedAt) > time.Minute {
			t.Errorf("stream=%v: %q, final %+v; want %q, length, 48 tokens, no context (raw)", stream, text.String(), f, ref.OutputText)
		}
	}

	// Templated generation returns its context: the prompt's tokens and
	// the output's, which a next request may send back.
	var gen ollamaapi.GenerateResponse
	stream := false
	err := client.Generate(ctx, &ollamaapi.GenerateRequest{Model: "stories260K:latest", Prompt: "Once upon a time", Stream: &stream, Options: greedy(6)},
		func(r ollamaapi.GenerateResponse) error { gen = r; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(gen.Context) != gen.PromptEvalCount+gen.EvalCount || gen.EvalCount != 6 {
		t.Errorf("context has %d tokens, want %d prompt + %d output", len(gen.Context), gen.PromptEvalCount, gen.EvalCount)
	}
	err = client.Generate(ctx, &ollamaapi.GenerateRequest{Model: "stories260K", Prompt: "And then", Context: gen.Context, Stream: &stream, Options: greedy(4)},
		func(r ollamaapi.GenerateResponse) error { gen = r; return nil })
	if err != nil || gen.PromptEvalCount <= 6 {
		t.Errorf("follow-up with context: %v, %d prompt tokens", err, gen.PromptEvalCount)
	}

	// Chat, streamed and not, greedy: the same text.
	msgs := []ollamaapi.Message{{Role: "system", Content: "Tell a story."}, {Role: "user", Content: "Once upon a time"}}
	texts := map[bool]string{}
	for _, stream := range []bool{true, false} {
		var text strings.Builder
		done := 0
		err := client.Chat(ctx, &ollamaapi.ChatRequest{Model: "stories", Messages: msgs, Stream: &stream, Options: greedy(20)},
			func(r ollamaapi.ChatResponse) error {
				if r.Message.Role != "assistant" {
					return fmt.Errorf("role %q", r.Message.Role)
				}
				text.WriteString(r.Message.Content)
				if r.Done {
					done++
					if r.EvalCount != 20 || r.DoneReason != "length" {
						return fmt.Errorf("final %+v", r)
					}
				}
				return nil
			})
		if err != nil || done != 1 || text.Len() == 0 {
			t.Fatalf("chat stream=%v: %v, %d final lines, %q", stream, err, done, text.String())
		}
		texts[stream] = text.String()
	}
	if texts[true] != texts[false] {
		t.Errorf("chat streamed %q, not streamed %q", texts[true], texts[false])
	}

	list, err := client.List(ctx)
	if err != nil || len(list.Models) != 1 || list.Models[0].Name != "stories260K:latest" || list.Models[0].Details.Family != "llama" ||
		list.Models[0].Details.ParameterSize == "" || len(list.Models[0].Digest) != 64 {
		t.Errorf("List = %+v, %v", list, err)
	}
	ps, err := client.ListRunning(ctx)
	if err != nil || len(ps.Models) != 1 || ps.Models[0].ContextLength != 128 || ps.Models[0].ExpiresAt.Before(time.Now().Add(time.Hour)) {
		t.Errorf("ListRunning = %+v, %v", ps, err)
	}
	show, err := client.Show(ctx, &ollamaapi.ShowRequest{Model: "stories260K"})
	if err != nil || show.Template == "" || show.ModelInfo["llama.context_length"] != float64(128) || show.Details.Format != "gguf" {
		t.Errorf("Show = %+v, %v", show, err)
	}
	if v, err := client.Version(ctx); err != nil || v == "" {
		t.Errorf("Version = %q, %v", v, err)
	}

	err = client.Generate(ctx, &ollamaapi.GenerateRequest{Model: "llama3.2", Prompt: "hi"}, func(ollamaapi.GenerateResponse) error { return nil })
	var se ollamaapi.StatusError
	if !errors.As(err, &se) || se.StatusCode != 404 || !strings.Contains(se.ErrorMessage, `model "llama3.2" not found`) {
		t.Errorf("unknown model: %v, want a 404 StatusError", err)
	}
}

// ollamaLines reads an NDJSON body and checks the rules every stream
// obeys: every line an object, exactly one final line (done, or an error),
// last.
func ollamaLines(t testing.TB, body []byte) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for i, line := range strings.Split(strings.TrimSuffix(string(body), "\n"), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %d %q: %v", i, line, err)
		}
		if len(lines) > 0 && (lines[len(lines)-1]["done"] == true || lines[len(lines)-1]["error"] != nil) {
			t.Fatalf("line %q after the final one", line)
		}
		lines = append(lines, m)
	}
	if last := lines[len(lines)-1]; last["done"] != true && last["error"] == nil {
		t.Fatalf("no final line: %s", body)
	}
	return lines
}

// TestOllamaWireFormat compares the answers' structure with Ollama's
// recorded output (testdata/wire).
func TestOllamaWireFormat(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 2})
	cases := []struct {
		example, method, path, body string
		status                      int
	}{
		{"ollama_generate_stream.ndjson", "POST", "/api/generate", `{"model":"stories260K","prompt":"Once upon a time","options":{"num_predict":5}}`, 200},
		{"ollama_generate.json", "POST", "/api/generate", `{"model":"stories260K","prompt":"Once upon a time","stream":false,"options":{"num_predict":5}}`, 200},
		{"ollama_chat_stream.ndjson", "POST", "/api/chat", `{"model":"stories260K","messages":[{"role":"user","content":"hi"}],"options":{"num_predict":5}}`, 200},
		{"ollama_chat.json", "POST", "/api/chat", `{"model":"stories260K","messages":[{"role":"user","content":"hi"}],"stream":false,"options":{"num_predict":5}}`, 200},
		{"ollama_load.json", "POST", "/api/generate", `{"model":"stories260K"}`, 200},
		{"ollama_tags.json", "GET", "/api/tags", "", 200},
		{"ollama_show.json", "POST", "/api/show", `{"model":"stories260K"}`, 200},
		{"ollama_ps.json", "GET", "/api/ps", "", 200},
		{"ollama_version.json", "GET", "/api/version", "", 200},
		{"ollama_error.json", "POST", "/api/chat", `{"model":"llama3.2","messages":[{"role":"user","content":"hi"}]}`, 404},
		{"ollama_error.json", "POST", "/api/generate", `{"model":"stories260K","prompt":"x","options":{"temperature":"hot"}}`, 400},
	}
	for _, tc := range cases {
		resp, b := fx.do(t, tc.method, tc.path, tc.body)
		if resp.StatusCode != tc.status {
			t.Fatalf("%s %s: %d %s", tc.path, tc.body, resp.StatusCode, b)
		}
		want, got := wireExample(t, tc.example), splitObjects(t, tc.path, b)
		if strings.HasSuffix(tc.example, ".ndjson") {
			ollamaLines(t, b)
			if resp.Header.Get("Content-Type") != "application/x-ndjson" || len(got) < 2 {
				t.Fatalf("%s: %s, %d lines", tc.path, resp.Header.Get("Content-Type"), len(got))
			}
		}
		checkShape(t, tc.example+" first", want[0], got[0])
		checkShape(t, tc.example+" last", want[len(want)-1], got[len(got)-1])
	}
}

// TestOllamaErrors checks the 400s and 404s: Ollama's error object, naming
// the option or field at fault.
func TestOllamaErrors(t *testing.T) {
	fx := newFixture(t, fixtureOptions{})
	long := jsonString(strings.Repeat("Once upon a time, ", 40))
	cases := []struct {
		path, body string
		status     int
		msg        string
	}{
		{"/api/generate", `{"prompt":"x"}`, 400, "model is required"},
		{"/api/chat", `{"model":"nope","messages":[]}`, 404, `model "nope" not found`},
		{"/api/generate", `{"model":"stories260K","prompt":"x","options":{"temperature":"hot"}}`, 400, `option "temperature" must be a number`},
		{"/api/generate", `{"model":"stories260K","prompt":"x","options":{"temperature":-1}}`, 400, `option "temperature" is -1`},
		{"/api/generate", `{"model":"stories260K","prompt":"x","options":{"num_predict":0}}`, 400, `option "num_predict"`},
		{"/api/generate", `{"model":"stories260K","prompt":"x","options":{"top_k":1.5}}`, 400, `option "top_k" must be an integer`},
		{"/api/generate", `{"model":"stories260K","prompt":"x","options":{"num_ctx":0}}`, 400, `option "num_ctx" is 0`},
		{"/api/generate", `{"model":"stories260K","prompt":` + long + `,"raw":true,"options":{"num_ctx":16}}`, 400, "num_ctx is 16"},
		{"/api/generate", `{"model":"stories260K","prompt":` + long + `,"raw":true}`, 400, "context"},
		{"/api/generate", `{"model":"stories260K","prompt":"x","options":{"stop":5}}`, 400, `option "stop"`},
		{"/api/generate", `{"model":"stories260K","prompt":"x","format":"json"}`, 400, "format is not supported"},
		{"/api/generate", `{"model":"stories260K","prompt":"x","images":["aGk="]}`, 400, "images"},
		{"/api/generate", `{"model":"stories260K","prompt":"x","context":[99999]}`, 400, "context[0]"},
		{"/api/chat", `{"model":"stories260K","messages":[{"role":"robot","content":"x"}]}`, 400, "messages[0].role"},
		{"/api/chat", `{"model":"stories260K","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function"}]}`, 400, "tools"},
		{"/api/chat", `{"model":"stories260K","messages":"hi"}`, 400, `"messages" must be an array`},
		{"/api/show", `{"model":"nope"}`, 404, "not found"},
	}
	for _, tc := range cases {
		resp, b := fx.post(t, tc.path, tc.body)
		var e struct{ Error string }
		if err := json.Unmarshal(b, &e); err != nil || resp.StatusCode != tc.status || !strings.Contains(e.Error, tc.msg) {
			t.Errorf("%s %s = %d %s, want %d with %q", tc.path, tc.body, resp.StatusCode, b, tc.status, tc.msg)
		}
	}
	// num_ctx below the model's context bounds the output too.
	_, b := fx.post(t, "/api/generate", `{"model":"stories260K","prompt":"Once upon a time","raw":true,"stream":false,"options":{"num_ctx":12,"num_predict":100}}`)
	var r struct {
		PromptEvalCount int    `json:"prompt_eval_count"`
		EvalCount       int    `json:"eval_count"`
		DoneReason      string `json:"done_reason"`
	}
	if err := json.Unmarshal(b, &r); err != nil || r.PromptEvalCount+r.EvalCount > 12 || r.DoneReason != "length" && r.EvalCount == 12-r.PromptEvalCount {
		t.Errorf("num_ctx 12: %s", b)
	}
	for path, method := range map[string]string{"/api/generate": http.MethodGet, "/api/tags": http.MethodPost, "/api/pull": http.MethodPost} {
		resp, b := fx.do(t, method, path, "{}")
		if resp.StatusCode/100 != 4 || !strings.HasPrefix(string(b), `{"error":`) {
			t.Errorf("%s %s = %d %s, want Ollama's error object", method, path, resp.StatusCode, b)
		}
	}
}

// TestOllamaDisconnect checks that a client that goes away mid-stream
// cancels its generation and frees its cache blocks.
func TestOllamaDisconnect(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 2, delay: 2 * time.Millisecond})
	client := ollamaClient(t, fx)
	ctx, cancel := context.WithCancel(context.Background())
	lines := 0
	err := client.Generate(ctx, &ollamaapi.GenerateRequest{Model: "stories260K", Prompt: references(t)[0].Prompt, Raw: true, Options: greedy(100)},
		func(ollamaapi.GenerateResponse) error {
			if lines++; lines == 2 {
				fx.model.hold() // no more tokens until the client is gone
				cancel()
			}
			return nil
		})
	fx.model.release()
	// Ollama's client ends a stream whose context was canceled with a nil
	// error (it does not look at its scanner's error), so only the lines
	// it saw (those already read, at most a few) tell that it stopped
	// early.
	if err != nil && !errors.Is(err, context.Canceled) || lines > 10 {
		t.Errorf("Generate after cancel = %v after %d lines, want it cut short", err, lines)
	}
	waitFor(t, "the canceled generation to end with no cache block in use", func() bool {
		s := fx.eng.Stats()
		return s.Running == 0 && s.Queued == 0 && s.FinishedCanceled == 1 && fx.eng.Cache().BlocksInUse() == 0
	})
}
