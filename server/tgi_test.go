package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// tgiEvent is a /generate_stream event as a client decodes it.
type tgiEvent struct {
	Index int `json:"index"`
	Token *struct {
		ID      int32    `json:"id"`
		Text    string   `json:"text"`
		Logprob *float64 `json:"logprob"`
		Special bool     `json:"special"`
	} `json:"token"`
	TopTokens     []json.RawMessage `json:"top_tokens"`
	GeneratedText *string           `json:"generated_text"`
	Details       *struct {
		FinishReason    string  `json:"finish_reason"`
		GeneratedTokens int     `json:"generated_tokens"`
		InputLength     int     `json:"input_length"`
		Seed            *uint64 `json:"seed"`
	} `json:"details"`
	Error     *string `json:"error"`
	ErrorType *string `json:"error_type"`
}

// tgiStream reads a whole TGI stream and checks the rules every one obeys:
// indexes count from 1, exactly one event ends it (the one with
// generated_text, or an error), last.
func tgiStream(t testing.TB, body []byte) (evs []tgiEvent, text string) {
	t.Helper()
	for i, raw := range newTGIReader(t, strings.NewReader(string(body))).all() {
		var ev tgiEvent
		if err := json.Unmarshal([]byte(raw), &ev); err != nil {
			t.Fatalf("event %d %s: %v", i, raw, err)
		}
		if len(evs) > 0 && (evs[len(evs)-1].GeneratedText != nil || evs[len(evs)-1].Error != nil) {
			t.Fatalf("event %s after the final one", raw)
		}
		if ev.Error == nil {
			if ev.Token == nil || ev.Index != i+1 {
				t.Fatalf("event %d: %s: want a token with index %d", i, raw, i+1)
			}
			if !ev.Token.Special {
				text += ev.Token.Text
			}
		}
		evs = append(evs, ev)
	}
	if len(evs) == 0 || evs[len(evs)-1].GeneratedText == nil && evs[len(evs)-1].Error == nil {
		t.Fatalf("stream has no final event: %s", body)
	}
	return evs, text
}

// TestTGIGreedy checks TGI's endpoints against llama.cpp's greedy text:
// TGI decodes greedily unless asked to sample.
func TestTGIGreedy(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 4})
	for i, ref := range references(t)[:4] {
		body := fmt.Sprintf(`{"inputs":%s,"parameters":{"max_new_tokens":48,"details":true}}`, jsonString(ref.Prompt))
		resp, b := fx.post(t, "/generate", body)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("reference %d: %d %s", i, resp.StatusCode, b)
		}
		var g struct {
			GeneratedText string `json:"generated_text"`
			Details       struct {
				FinishReason    string            `json:"finish_reason"`
				GeneratedTokens int               `json:"generated_tokens"`
				Seed            *uint64           `json:"seed"`
				Tokens          []json.RawMessage `json:"tokens"`
			} `json:"details"`
		}
		if err := json.Unmarshal(b, &g); err != nil {
			t.Fatal(err)
		}
		if g.GeneratedText != ref.OutputText || g.Details.FinishReason != "length" || g.Details.GeneratedTokens != 48 ||
			len(g.Details.Tokens) != 48 || g.Details.Seed != nil {
			t.Errorf("reference %d: %s\nwant text %q, length, 48 tokens, no seed (greedy)", i, b, ref.OutputText)
		}

		resp, b = fx.post(t, "/generate_stream", body)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("stream: %d %s", resp.StatusCode, b)
		}
		evs, text := tgiStream(t, b)
		last := evs[len(evs)-1]
		if text != ref.OutputText || *last.GeneratedText != ref.OutputText || len(evs) != 48 ||
			last.Details == nil || last.Details.FinishReason != "length" || last.Details.InputLength != len(ref.PromptIDs) {
			t.Errorf("reference %d streamed %q in %d events, last %+v; want %q in 48", i, text, len(evs), last, ref.OutputText)
		}
		for _, ev := range evs {
			if ev.Token.Logprob == nil || *ev.Token.Logprob > 0 {
				t.Errorf("token %+v: want its logprob", ev.Token)
				break
			}
		}
	}
}

// TestTGIStopAndOptions checks a stop sequence (its reason, the text cut
// before it), return_full_text, top_n_tokens and seeded sampling.
func TestTGIStopAndOptions(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 2})
	ref := references(t)[0]
	cut := strings.Index(ref.OutputText, "verend")
	body := fmt.Sprintf(`{"inputs":%s,"parameters":{"max_new_tokens":48,"stop":["verend"],"details":true,"return_full_text":true,"top_n_tokens":3}}`, jsonString(ref.Prompt))
	_, b := fx.post(t, "/generate_stream", body)
	evs, text := tgiStream(t, b)
	last := evs[len(evs)-1]
	if text != ref.OutputText[:cut] || *last.GeneratedText != ref.Prompt+ref.OutputText[:cut] || last.Details.FinishReason != "stop_sequence" {
		t.Errorf("streamed %q, generated_text %q, details %+v; want %q stop_sequence", text, *last.GeneratedText, last.Details, ref.OutputText[:cut])
	}
	for _, ev := range evs {
		if len(ev.TopTokens) != 3 {
			t.Errorf("event %d has %d top tokens, want 3", ev.Index, len(ev.TopTokens))
		}
	}

	sample := `{"inputs":"Once upon a time","parameters":{"do_sample":true,"temperature":1.5,"seed":42,"max_new_tokens":12,"details":true}}`
	_, a := fx.post(t, "/generate", sample)
	_, c := fx.post(t, "/generate", sample)
	if string(a) != string(c) || !strings.Contains(string(a), `"seed":42`) {
		t.Errorf("the same seed gave\n%s\n%s\nwant equal answers reporting seed 42", a, c)
	}
}

// TestTGIWireFormat compares the answers' structure with TGI's recorded
// output (testdata/wire).
func TestTGIWireFormat(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 2})
	cases := []struct {
		example, path, body string
		status              int
	}{
		{"tgi_stream.sse", "/generate_stream", `{"inputs":"Once upon a time","parameters":{"max_new_tokens":4,"details":true}}`, 200},
		{"tgi_stream_nodetails.sse", "/generate_stream", `{"inputs":"Once upon a time","parameters":{"max_new_tokens":3}}`, 200},
		{"tgi_generate.json", "/generate", `{"inputs":"Once upon a time","parameters":{"max_new_tokens":4}}`, 200},
		{"tgi_generate_details.json", "/generate", `{"inputs":"Once upon a time","parameters":{"max_new_tokens":4,"details":true}}`, 200},
		{"tgi_error.json", "/generate", `{"inputs":"Once upon a time","parameters":{"temperature":0}}`, 422},
		{"tgi_error.json", "/generate_stream", `{"inputs":"Once","parameters":{"top_p":0}}`, 422},
	}
	for _, tc := range cases {
		resp, b := fx.post(t, tc.path, tc.body)
		if resp.StatusCode != tc.status {
			t.Fatalf("%s %s: %d %s", tc.path, tc.body, resp.StatusCode, b)
		}
		want, got := wireExample(t, tc.example), splitObjects(t, tc.path, b)
		if len(got) < 2 && len(want) > 1 {
			t.Fatalf("%s: %d objects: %s", tc.example, len(got), b)
		}
		// Token events with token events, the last with the last.
		checkShape(t, tc.example+" first", want[0], got[0])
		checkShape(t, tc.example+" last", want[len(want)-1], got[len(got)-1])
	}
}

// TestTGIErrors checks the 422s of bad parameters: TGI's error object,
// naming the parameter.
func TestTGIErrors(t *testing.T) {
	fx := newFixture(t, fixtureOptions{})
	long := jsonString(strings.Repeat("Once upon a time, ", 40))
	cases := []struct {
		body, path string
		status     int
		typ, msg   string
	}{
		{`{"inputs":"x","parameters":{"temperature":0}}`, "/generate", 422, "validation", "`temperature` must be strictly positive"},
		{`{"inputs":"x","parameters":{"top_p":1.5}}`, "/generate", 422, "validation", "`top_p`"},
		{`{"inputs":"x","parameters":{"top_k":0}}`, "/generate_stream", 422, "validation", "`top_k` must be strictly positive"},
		{`{"inputs":"x","parameters":{"max_new_tokens":0}}`, "/generate", 422, "validation", "`max_new_tokens`"},
		{`{"inputs":"x","parameters":{"repetition_penalty":-1}}`, "/generate", 422, "validation", "`repetition_penalty`"},
		{`{"inputs":"x","parameters":{"best_of":2}}`, "/generate", 422, "validation", "`best_of`"},
		{`{"inputs":"x","parameters":{"typical_p":0.5}}`, "/generate", 422, "validation", "`typical_p`"},
		{`{"inputs":"x","parameters":{"stop":["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q"]}}`, "/generate", 422, "validation", "`stop`"},
		{`{"inputs":"x","parameters":{"temperature":"hot"}}`, "/generate", 422, "validation", `"parameters.temperature" must be a number`},
		{`{"inputs":""}`, "/generate", 422, "validation", "`inputs` cannot be empty"},
		{`{"parameters":{}}`, "/generate", 422, "validation", "`inputs` cannot be empty"},
		{`{"inputs":` + long + `}`, "/generate_stream", 422, "validation", "context"},
		{`{"inputs":"x",`, "/generate", 422, "validation", "malformed JSON"},
	}
	for _, tc := range cases {
		resp, b := fx.post(t, tc.path, tc.body)
		var e struct {
			Error     string `json:"error"`
			ErrorType string `json:"error_type"`
		}
		if err := json.Unmarshal(b, &e); err != nil || resp.StatusCode != tc.status || e.ErrorType != tc.typ || !strings.Contains(e.Error, tc.msg) {
			t.Errorf("%s %s = %d %s, want %d %s with %q", tc.path, tc.body, resp.StatusCode, b, tc.status, tc.typ, tc.msg)
		}
	}
	resp, b := fx.do(t, http.MethodGet, "/generate", "")
	if resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST" || !strings.Contains(string(b), `"error_type"`) {
		t.Errorf("GET /generate = %d %s", resp.StatusCode, b)
	}
}

// TestTGIDisconnect checks that a client that goes away mid-stream cancels
// its generation: the engine ends it and frees its cache blocks.
func TestTGIDisconnect(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 2, delay: 2 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	resp := fx.stream(ctx, t, "/generate_stream", `{"inputs":"Once upon a time","parameters":{"max_new_tokens":100}}`)
	defer resp.Body.Close()
	r := newTGIReader(t, resp.Body)
	for range 2 {
		if _, err := r.next(); err != nil {
			t.Fatal(err)
		}
	}
	fx.model.hold() // no more tokens until the client is gone
	cancel()
	fx.model.release()
	waitFor(t, "the canceled generation to end with no cache block in use", func() bool {
		s := fx.eng.Stats()
		return s.Running == 0 && s.Queued == 0 && s.FinishedCanceled == 1 && fx.eng.Cache().BlocksInUse() == 0
	})
}
