package server

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// TestGreedyMatchesLlamaCpp checks that greedy completions through the API,
// streamed and not, are llama.cpp's text for the same file and prompts
// (../shared/reference: llama.cpp's server, temperature 0, 48 tokens).
func TestGreedyMatchesLlamaCpp(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 4})
	for i, ref := range references(t) {
		body := fmt.Sprintf(`{"model":"stories260K","prompt":%s,"temperature":0,"max_tokens":48}`, jsonString(ref.Prompt))
		resp, b := fx.post(t, "/v1/completions", body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("reference %d: status %d: %s", i, resp.StatusCode, b)
		}
		var c struct {
			Object  string `json:"object"`
			Choices []struct {
				Text         string `json:"text"`
				FinishReason string `json:"finish_reason"`
			} `json:"choices"`
			Usage struct {
				PromptTokens     int `json:"prompt_tokens"`
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal(b, &c); err != nil {
			t.Fatal(err)
		}
		if c.Object != "text_completion" || len(c.Choices) != 1 {
			t.Fatalf("reference %d: response %s", i, b)
		}
		if got := c.Choices[0].Text; got != ref.OutputText {
			t.Errorf("reference %d: text %q, want %q", i, got, ref.OutputText)
		}
		if c.Choices[0].FinishReason != "length" || c.Usage.PromptTokens != len(ref.PromptIDs) || c.Usage.CompletionTokens != 48 {
			t.Errorf("reference %d: finish %q, usage %+v; want length, %d prompt tokens, 48", i, c.Choices[0].FinishReason, c.Usage, len(ref.PromptIDs))
		}

		sresp := fx.stream(context.Background(), t, "/v1/completions", strings.Replace(body, `"max_tokens":48`, `"max_tokens":48,"stream":true`, 1))
		res := collect(t, sresp.Body)
		sresp.Body.Close()
		if res.texts[0] != ref.OutputText || !res.done || len(res.finishes[0]) != 1 {
			t.Errorf("reference %d streamed: text %q (done %v, finishes %v), want %q", i, res.texts[0], res.done, res.finishes, ref.OutputText)
		}
	}
}

// TestGoldenSSE compares the bytes of greedy streams with the golden files
// (ids and timestamps normalized). Run with -update to rewrite them.
func TestGoldenSSE(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 2})
	prompt := references(t)[0].Prompt
	cases := []struct {
		name, path, body string
	}{
		{"completion_stream", "/v1/completions",
			`{"model":"stories260K","prompt":` + jsonString(prompt) + `,"temperature":0,"max_tokens":8,"stream":true}`},
		{"chat_stream", "/v1/chat/completions",
			`{"model":"stories260K","messages":[{"role":"system","content":"Tell a story."},{"role":"user","content":"Once upon a time"}],` +
				`"temperature":0,"max_tokens":8,"stream":true,"stream_options":{"include_usage":true}}`},
		{"chat_stop_stream", "/v1/chat/completions",
			`{"model":"stories260K","messages":[{"role":"user","content":"Once upon a time"}],"temperature":0,"max_tokens":30,"stop":["zzz","ot beo"],"stream":true}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := fx.post(t, tc.path, tc.body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
			for k, want := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"} {
				if got := resp.Header.Get(k); got != want {
					t.Errorf("header %s = %q, want %q", k, got, want)
				}
			}
			got := normalize(b)
			path := filepath.Join("testdata", tc.name+".golden.sse")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Errorf("stream differs from %s:\ngot:\n%s\nwant:\n%s", path, got, want)
			}
			collect(t, strings.NewReader(string(b))) // and it obeys the stream rules
		})
	}
}

// TestOpenAISDK talks to the server with the official OpenAI Go SDK:
// completions and chat, streamed and not.
func TestOpenAISDK(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 4, apiKey: "sk-test"})
	client := openai.NewClient(option.WithBaseURL(fx.url+"/v1/"), option.WithAPIKey("sk-test"), option.WithMaxRetries(0))
	ctx := context.Background()
	ref := references(t)[0]

	t.Run("models", func(t *testing.T) {
		m, err := client.Models.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Data) != 1 || m.Data[0].ID != "stories260K" {
			t.Errorf("models = %+v", m.Data)
		}
	})
	t.Run("completion", func(t *testing.T) {
		c, err := client.Completions.New(ctx, openai.CompletionNewParams{
			Model:       "stories260K",
			Prompt:      openai.CompletionNewParamsPromptUnion{OfString: openai.String(ref.Prompt)},
			MaxTokens:   openai.Int(48),
			Temperature: openai.Float(0),
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Choices) != 1 || c.Choices[0].Text != ref.OutputText || c.Choices[0].FinishReason != "length" {
			t.Errorf("completion = %+v", c.Choices)
		}
		if c.Usage.CompletionTokens != 48 || c.Usage.PromptTokens != int64(len(ref.PromptIDs)) {
			t.Errorf("usage = %+v", c.Usage)
		}
	})
	t.Run("completion stream", func(t *testing.T) {
		st := client.Completions.NewStreaming(ctx, openai.CompletionNewParams{
			Model:       "stories260K",
			Prompt:      openai.CompletionNewParamsPromptUnion{OfString: openai.String(ref.Prompt)},
			MaxTokens:   openai.Int(48),
			Temperature: openai.Float(0),
		})
		var text strings.Builder
		finish := ""
		for st.Next() {
			for _, ch := range st.Current().Choices {
				text.WriteString(ch.Text)
				if ch.FinishReason != "" {
					finish = string(ch.FinishReason)
				}
			}
		}
		if err := st.Err(); err != nil {
			t.Fatal(err)
		}
		if text.String() != ref.OutputText || finish != "length" {
			t.Errorf("streamed %q (finish %q), want %q", text.String(), finish, ref.OutputText)
		}
	})
	chatParams := openai.ChatCompletionNewParams{
		Model:       "stories260K",
		Messages:    []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("Tell a story."), openai.UserMessage("Once upon a time")},
		MaxTokens:   openai.Int(20),
		Temperature: openai.Float(0),
	}
	var whole string
	t.Run("chat", func(t *testing.T) {
		c, err := client.Chat.Completions.New(ctx, chatParams)
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Choices) != 1 || c.Choices[0].Message.Role != "assistant" || c.Choices[0].Message.Content == "" {
			t.Fatalf("chat = %+v", c.Choices)
		}
		whole = c.Choices[0].Message.Content
		if c.Usage.CompletionTokens != 20 || c.Usage.TotalTokens != c.Usage.PromptTokens+20 {
			t.Errorf("usage = %+v", c.Usage)
		}
	})
	t.Run("chat stream", func(t *testing.T) {
		p := chatParams
		p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
		p.Logprobs = openai.Bool(true)
		p.TopLogprobs = openai.Int(2)
		st := client.Chat.Completions.NewStreaming(ctx, p)
		var acc openai.ChatCompletionAccumulator
		for st.Next() {
			acc.AddChunk(st.Current())
		}
		if err := st.Err(); err != nil {
			t.Fatal(err)
		}
		if len(acc.Choices) != 1 {
			t.Fatalf("choices = %+v", acc.Choices)
		}
		c := acc.Choices[0]
		if c.Message.Content != whole || c.FinishReason != "length" {
			t.Errorf("streamed %q (finish %q), want %q", c.Message.Content, c.FinishReason, whole)
		}
		if acc.Usage.CompletionTokens != 20 {
			t.Errorf("usage = %+v", acc.Usage)
		}
		if n := len(c.Logprobs.Content); n != 20 {
			t.Errorf("%d logprobs, want 20", n)
		}
		for _, lp := range c.Logprobs.Content {
			if len(lp.TopLogprobs) != 2 || lp.TopLogprobs[0].Logprob != lp.Logprob || lp.Logprob > 0 {
				t.Errorf("greedy token %q logprob %v, top %+v: want the top entry first", lp.Token, lp.Logprob, lp.TopLogprobs)
				break
			}
		}
	})
	t.Run("error", func(t *testing.T) {
		_, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model: "gpt-nonexistent", Messages: chatParams.Messages,
		})
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound || apiErr.Code != "model_not_found" {
			t.Errorf("err = %v, want a 404 model_not_found", err)
		}
	})
}

// TestChoices checks n > 1 and batched prompts: every choice streams with
// its index and finishes once, seeds differ per choice, and a fixed seed
// reproduces them all.
func TestChoices(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 4})
	body := `{"prompt":["Once upon a time","The dog"],"n":3,"max_tokens":12,"temperature":1.5,"seed":7,"stream":true,"stream_options":{"include_usage":true}}`
	run := func() streamResult {
		resp := fx.stream(context.Background(), t, "/v1/completions", body)
		defer resp.Body.Close()
		return collect(t, resp.Body)
	}
	a, b := run(), run()
	if len(a.texts) != 6 || !a.done || a.usage == nil {
		t.Fatalf("got %d choices (done %v, usage %v); want 6", len(a.texts), a.done, a.usage)
	}
	for i := range 6 {
		if len(a.finishes[i]) != 1 {
			t.Errorf("choice %d finishes %v, want one", i, a.finishes[i])
		}
		if a.texts[i] != b.texts[i] {
			t.Errorf("choice %d: %q then %q with the same seed", i, a.texts[i], b.texts[i])
		}
	}
	if a.texts[0] == a.texts[1] && a.texts[1] == a.texts[2] {
		t.Errorf("the 3 choices of a prompt are equal: %q", a.texts[0])
	}
	if u := a.usage.Usage; u.CompletionTokens < 6 || u.CompletionTokens > 6*12 || u.TotalTokens != u.PromptTokens+u.CompletionTokens ||
		u.PromptTokens != len(fx.tok.Encode("Once upon a time", true, true))+len(fx.tok.Encode("The dog", true, true)) {
		t.Errorf("usage %+v: want the two prompts' tokens and at most 72 completion tokens", u)
	}

	// The same, not streamed: six choices indexed 0..5.
	resp, raw := fx.post(t, "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"n":3,"max_tokens":4,"seed":1}`)
	var c struct {
		Choices []struct {
			Index   int `json:"index"`
			Message struct{ Role, Content string }
		}
	}
	if err := json.Unmarshal(raw, &c); err != nil || resp.StatusCode != 200 || len(c.Choices) != 3 {
		t.Fatalf("status %d, %s (%v)", resp.StatusCode, raw, err)
	}
	for i, ch := range c.Choices {
		if ch.Index != i || ch.Message.Role != "assistant" {
			t.Errorf("choice %d: %+v", i, ch)
		}
	}
}

// TestLogprobsStream checks the logprobs shapes in streams: chat's
// logprobs.content[] and completions' legacy arrays.
func TestLogprobsStream(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 2})
	prompt := jsonString(references(t)[0].Prompt)

	resp := fx.stream(context.Background(), t, "/v1/completions", `{"prompt":`+prompt+`,"max_tokens":6,"temperature":0,"logprobs":3,"stream":true}`)
	res := collect(t, resp.Body)
	resp.Body.Close()
	tokens := 0
	for _, ev := range res.events[:len(res.events)-1] {
		c := parseChunk(t, ev)
		if c.Choices[0].FinishReason != nil && string(c.Choices[0].Logprobs) == "null" {
			continue // a finish chunk without text
		}
		var lp struct {
			Tokens        []string             `json:"tokens"`
			TokenLogprobs []float64            `json:"token_logprobs"`
			TopLogprobs   []map[string]float64 `json:"top_logprobs"`
			TextOffset    []int                `json:"text_offset"`
		}
		if err := json.Unmarshal(c.Choices[0].Logprobs, &lp); err != nil {
			t.Fatalf("logprobs %s: %v", c.Choices[0].Logprobs, err)
		}
		if len(lp.Tokens) != 1 || len(lp.TokenLogprobs) != 1 || len(lp.TopLogprobs) != 1 || len(lp.TextOffset) != 1 {
			t.Errorf("chunk logprobs %s: want one token", c.Choices[0].Logprobs)
			continue
		}
		if top := lp.TopLogprobs[0]; len(top) < 1 || len(top) > 3 || top[lp.Tokens[0]] != lp.TokenLogprobs[0] {
			t.Errorf("top_logprobs %v lacks the greedy token %q (%v)", top, lp.Tokens[0], lp.TokenLogprobs[0])
		}
		tokens++
	}
	if tokens != 6 {
		t.Errorf("%d chunks with logprobs, want 6", tokens)
	}

	resp = fx.stream(context.Background(), t, "/v1/chat/completions",
		`{"messages":[{"role":"user","content":"Once"}],"max_tokens":5,"temperature":0,"logprobs":true,"top_logprobs":4,"stream":true}`)
	res = collect(t, resp.Body)
	resp.Body.Close()
	tokens = 0
	for _, ev := range res.events[:len(res.events)-1] {
		c := parseChunk(t, ev)
		ch := c.Choices[0]
		if ch.Delta.Role != nil || ch.FinishReason != nil && ch.Delta.Content == nil {
			if string(ch.Logprobs) != "null" {
				t.Errorf("role or empty finish chunk has logprobs %s", ch.Logprobs)
			}
			continue
		}
		var lp struct {
			Content []struct {
				Token       string  `json:"token"`
				Logprob     float64 `json:"logprob"`
				Bytes       []int   `json:"bytes"`
				TopLogprobs []struct {
					Token   string  `json:"token"`
					Logprob float64 `json:"logprob"`
					Bytes   []int   `json:"bytes"`
				} `json:"top_logprobs"`
			} `json:"content"`
		}
		if err := json.Unmarshal(ch.Logprobs, &lp); err != nil || len(lp.Content) != 1 {
			t.Fatalf("logprobs %s (%v)", ch.Logprobs, err)
		}
		e := lp.Content[0]
		if len(e.TopLogprobs) != 4 || e.TopLogprobs[0].Token != e.Token || len(e.Bytes) != len(e.Token) && !strings.ContainsRune(e.Token, '\uFFFD') {
			t.Errorf("entry %+v", e)
		}
		tokens++
	}
	if tokens != 5 {
		t.Errorf("%d chunks with logprobs, want 5", tokens)
	}
}

// TestStopNeverLeaks checks stop strings, streamed and not: the text ends
// before the first stop string and the finish reason is stop.
func TestStopNeverLeaks(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 2})
	ref := references(t)[0] // its output contains "verend" after 10 characters
	cut := strings.Index(ref.OutputText, "verend")
	if cut < 0 {
		t.Fatal("reference lacks the stop string")
	}
	for _, stream := range []bool{false, true} {
		body := fmt.Sprintf(`{"prompt":%s,"temperature":0,"max_tokens":48,"stop":["zzzz","verend"],"stream":%v}`, jsonString(ref.Prompt), stream)
		resp, b := fx.post(t, "/v1/completions", body)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
		var text, finish string
		if stream {
			res := collect(t, strings.NewReader(string(b)))
			text, finish = res.texts[0], res.finishes[0][0]
		} else {
			var c struct {
				Choices []struct {
					Text         string `json:"text"`
					FinishReason string `json:"finish_reason"`
				} `json:"choices"`
			}
			json.Unmarshal(b, &c)
			text, finish = c.Choices[0].Text, c.Choices[0].FinishReason
		}
		if text != ref.OutputText[:cut] || finish != "stop" {
			t.Errorf("stream=%v: text %q finish %q, want %q stop", stream, text, finish, ref.OutputText[:cut])
		}
	}
}

func TestTokenizeDetokenize(t *testing.T) {
	fx := newFixture(t, fixtureOptions{})
	ref := references(t)[0]
	cases := []struct {
		body string
		want []int32
	}{
		{`{"content":` + jsonString(ref.Prompt) + `}`, ref.PromptIDs[1:]},                           // llama.cpp: no BOS by default
		{`{"prompt":` + jsonString(ref.Prompt) + `}`, ref.PromptIDs},                                // vLLM: BOS by default
		{`{"content":` + jsonString(ref.Prompt) + `,"add_special":true}`, ref.PromptIDs},            // llama.cpp's switch
		{`{"prompt":` + jsonString(ref.Prompt) + `,"add_special_tokens":false}`, ref.PromptIDs[1:]}, // vLLM's
	}
	for _, tc := range cases {
		resp, b := fx.post(t, "/tokenize", tc.body)
		var got struct {
			Tokens      []int32 `json:"tokens"`
			Count       int     `json:"count"`
			MaxModelLen int     `json:"max_model_len"`
		}
		if err := json.Unmarshal(b, &got); err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", tc.body, resp.StatusCode, b)
		}
		if fmt.Sprint(got.Tokens) != fmt.Sprint(tc.want) || got.Count != len(tc.want) || got.MaxModelLen != 128 {
			t.Errorf("tokenize %s = %s, want %v", tc.body, b, tc.want)
		}
	}
	_, b := fx.post(t, "/tokenize", `{"content":"Once","with_pieces":true}`)
	if !strings.Contains(string(b), `"piece":"Once"`) && !strings.Contains(string(b), `"piece":" Once"`) {
		t.Errorf("with_pieces: %s", b)
	}
	ids, _ := json.Marshal(ref.PromptIDs[1:])
	_, b = fx.post(t, "/detokenize", `{"tokens":`+string(ids)+`}`)
	var d struct{ Content, Prompt string }
	json.Unmarshal(b, &d)
	if d.Content != ref.Prompt || d.Prompt != ref.Prompt {
		t.Errorf("detokenize = %s, want %q", b, ref.Prompt)
	}
}

func TestModelsHealthReady(t *testing.T) {
	srv := New(Config{})
	ts := httptest.NewServer(srv)
	defer ts.Close()
	get := func(path string) (int, string) {
		resp, err := ts.Client().Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/health"); code != 200 {
		t.Errorf("/health before the model: %d", code)
	}
	if code, body := get("/ready"); code != 503 || !strings.Contains(body, "loading") {
		t.Errorf("/ready before the model: %d %s", code, body)
	}
	if code, body := get("/v1/models"); code != 503 || !strings.Contains(body, "model_loading") {
		t.Errorf("/v1/models before the model: %d %s", code, body)
	}

	fx := newFixture(t, fixtureOptions{})
	for path, want := range map[string]string{
		"/ready":             `"ready"`,
		"/health":            `"ok"`,
		"/v1/models":         `"data":[{"id":"stories260K","object":"model"`,
		"/v1/models/stories": `"id":"stories260K"`,
		"/v1/models/nope":    `"code":"model_not_found"`,
		"/":                  "<title>Spigot</title>",
		"/no/such/route":     `"code":"not_found"`,
		"/v1/embeddings":     `"code":"not_found"`,
	} {
		resp, b := fx.do(t, http.MethodGet, path, "")
		if !strings.Contains(string(b), want) {
			t.Errorf("GET %s = %d %s, want it to contain %s", path, resp.StatusCode, b, want)
		}
	}
}

// metricValue returns a counter's or gauge's value, or a histogram's
// sample count, from reg; labels are name, value pairs.
func metricValue(t testing.TB, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metric
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return 0
}

// TestMetricsMove checks that the registry lints clean and that the values
// move when requests are served.
func TestMetricsMove(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 2})
	reg := fx.srv.cfg.Registry
	type probe struct {
		name   string
		labels []string
		delta  float64 // the least it must grow by; 0: must be positive
	}
	probes := []probe{
		{"spigot_http_requests_total", []string{"route", "/v1/completions", "code", "200"}, 2},
		{"spigot_http_requests_total", []string{"route", "/v1/completions", "code", "400"}, 1},
		{"spigot_server_time_to_first_token_seconds", nil, 2},
		{"spigot_server_inter_token_latency_seconds", nil, 2 * 9},
		{"spigot_server_e2e_request_latency_seconds", nil, 2},
		{"spigot_engine_generated_tokens_total", nil, 20},
		{"spigot_engine_prompt_tokens_total", nil, 1},
		{"spigot_engine_requests_finished_total", []string{"reason", "length"}, 2},
		{"spigot_kvcache_prefix_query_tokens_total", nil, 18},
		{"spigot_kvcache_prefix_hit_tokens_total", nil, 1}, // the second request reuses the first's prompt
		{"spigot_kvcache_blocks_capacity", nil, 0},
	}
	before := make([]float64, len(probes))
	for i, p := range probes {
		before[i] = metricValue(t, reg, p.name, p.labels...)
	}
	prompt := jsonString(references(t)[6].Prompt) // 28 tokens: a whole 16-token block to share
	for _, stream := range []string{"true", "false"} {
		resp, b := fx.post(t, "/v1/completions", `{"prompt":`+prompt+`,"max_tokens":10,"temperature":0,"stream":`+stream+`}`)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
	}
	fx.post(t, "/v1/completions", `{"prompt":1}`)
	for i, p := range probes {
		after := metricValue(t, reg, p.name, p.labels...)
		if d := after - before[i]; d < p.delta || (p.delta == 0 && after <= 0) {
			t.Errorf("%s%v went from %v to %v, want it to grow by at least %v", p.name, p.labels, before[i], after, p.delta)
		}
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %+v %v", problems, err)
	}
	resp, b := fx.do(t, http.MethodGet, "/metrics", "")
	if resp.StatusCode != 200 || !strings.Contains(string(b), "spigot_kvcache_prefix_hit_ratio") {
		t.Errorf("GET /metrics = %d, %.200s", resp.StatusCode, b)
	}
}

// TestChatBOS checks that a template that writes BOS itself does not get a
// second one, and that one that does not gets it from the vocabulary.
func TestChatBOS(t *testing.T) {
	fx := newFixture(t, fixtureOptions{})
	bos := fx.tok.BOS()
	for _, prompt := range []string{"<s>Once upon a time", "Once upon a time"} {
		ids := encodeChat(fx.tok, prompt)
		n := 0
		for _, id := range ids {
			if id == bos {
				n++
			}
		}
		if n != 1 || ids[0] != bos {
			t.Errorf("encodeChat(%q) = %v: want exactly one BOS, first", prompt, ids)
		}
	}
}

// TestWebHook checks that Config.Web serves "/" while API paths stay the
// API's.
func TestWebHook(t *testing.T) {
	web := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "chat page at "+r.URL.Path) })
	ts := httptest.NewServer(New(Config{Web: web}))
	defer ts.Close()
	for path, want := range map[string]string{"/": "chat page at /", "/static/app.js": "chat page at /static/app.js", "/v1/nope": `"not_found"`, "/health": `"ok"`} {
		resp, err := ts.Client().Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), want) {
			t.Errorf("GET %s = %s, want %s", path, b, want)
		}
	}
}
