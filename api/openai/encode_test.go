package openai

import (
	"encoding/json"
	"math"
	"net/http"
	"strings"
	"testing"

	"github.com/spigot-llm/spigot/engine"
	"github.com/spigot-llm/spigot/engine/sample"
)

// valid is s with each byte of invalid UTF-8 replaced by U+FFFD, which is
// what encoding/json (and appendString) make of it.
func valid(s string) string { return string([]rune(s)) }

func checkString(t *testing.T, s string) {
	t.Helper()
	b := appendString(nil, s)
	var got string
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("appendString(%q) = %s: not JSON: %v", s, b, err)
	}
	if want := valid(s); got != want {
		t.Fatalf("appendString(%q) = %s, decodes to %q, want %q", s, b, got, want)
	}
}

func TestAppendString(t *testing.T) {
	for _, s := range []string{"", "plain", `quote " and \ backslash`, "\n\r\t\x00\x1f\x7f", "<b>&amp;</b>",
		"é✓🙂", "\xff\xfe bad", "\xe2\x80", "\u2028\u2029", "日本語"} {
		checkString(t, s)
	}
	if got := string(appendString(nil, "<&>")); got != `"<&>"` {
		t.Errorf("appendString escapes HTML: %s", got)
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "a\"b", "\xff", "\u2028", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(checkString)
}

func testEncoder(kind Kind, logprobs, usage bool) *Encoder {
	pieces := []string{"<unk>", "", "", " Once", " upon", "\xe2", "\x80"}
	return NewEncoder(EncoderConfig{Kind: kind, ID: "x-1", Created: 1, Model: "m", Choices: 2, Logprobs: logprobs, IncludeUsage: usage,
		Piece: func(id int32) string {
			if id < 0 || int(id) >= len(pieces) {
				return ""
			}
			return pieces[id]
		}})
}

// TestEncoderAllocs checks that appending stream chunks allocates nothing
// once the buffer has grown: the steady state of a stream.
func TestEncoderAllocs(t *testing.T) {
	evs := []engine.Event{{Token: 3, Text: " Once", Logprob: -0.5, Top: []sample.TokenLogprob{{ID: 3, Logprob: -0.5}, {ID: 4, Logprob: -1.5}}}}
	for _, kind := range []Kind{Completion, Chat} {
		e := testEncoder(kind, true, true)
		buf := make([]byte, 0, 4096)
		allocs := testing.AllocsPerRun(100, func() {
			buf = e.AppendText(buf[:0], 1, evs[0].Text, evs)
			buf = e.AppendFinish(buf, 1, "stop")
			buf = e.AppendUsage(buf, Usage{1, 2, 3})
			buf = AppendDone(buf)
		})
		if allocs != 0 {
			t.Errorf("kind %d: %v allocations per chunk, want 0", kind, allocs)
		}
	}
}

// TestChunks decodes each kind of chunk and checks its fields.
func TestChunks(t *testing.T) {
	evs := []engine.Event{{Token: 5, Text: "", Logprob: float32(math.Inf(-1)), Top: []sample.TokenLogprob{{ID: 5, Logprob: -1}, {ID: 6, Logprob: -2}}}}
	cases := []struct {
		name string
		b    []byte
		want string
	}{
		{"role", testEncoder(Chat, false, false).AppendRole(nil, 0),
			`data: {"id":"x-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}` + "\n\n"},
		{"no role for completions", testEncoder(Completion, false, false).AppendRole(nil, 0), ""},
		{"chat text with usage", testEncoder(Chat, false, true).AppendText(nil, 1, "a\"b", nil),
			`data: {"id":"x-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":1,"delta":{"content":"a\"b"},"logprobs":null,"finish_reason":null}],"usage":null}` + "\n\n"},
		{"chat logprobs", testEncoder(Chat, true, false).AppendText(nil, 0, "", evs),
			`data: {"id":"x-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":""},"logprobs":{"content":[{"token":"\ufffd","logprob":-9999,"bytes":[226],"top_logprobs":[{"token":"\ufffd","logprob":-1,"bytes":[226]},{"token":"\ufffd","logprob":-2,"bytes":[128]}]}],"refusal":null},"finish_reason":null}]}` + "\n\n"},
		{"legacy logprobs", testEncoder(Completion, true, false).AppendText(nil, 0, "", evs),
			`data: {"id":"x-1","object":"text_completion","created":1,"model":"m","choices":[{"index":0,"text":"","logprobs":{"tokens":["\ufffd"],"token_logprobs":[-9999],"top_logprobs":[{"\ufffd":-1}],"text_offset":[0]},"finish_reason":null}]}` + "\n\n"},
		{"chat finish", testEncoder(Chat, false, false).AppendFinish(nil, 0, "length"),
			`data: {"id":"x-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"length"}]}` + "\n\n"},
		{"completion finish", testEncoder(Completion, false, true).AppendFinish(nil, 0, "stop"),
			`data: {"id":"x-1","object":"text_completion","created":1,"model":"m","choices":[{"index":0,"text":"","logprobs":null,"finish_reason":"stop"}],"usage":null}` + "\n\n"},
		{"usage", testEncoder(Chat, false, true).AppendUsage(nil, Usage{PromptTokens: 3, CompletionTokens: 4, TotalTokens: 7}),
			`data: {"id":"x-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}` + "\n\n"},
		{"error", AppendErrorEvent(nil, &Error{Message: "m", Type: TypeServer, Code: "c"}),
			`data: {"error":{"message":"m","type":"server_error","param":null,"code":"c"}}` + "\n\n"},
		{"done", AppendDone(nil), "data: [DONE]\n\n"},
	}
	for _, tc := range cases {
		if string(tc.b) != tc.want {
			t.Errorf("%s:\ngot  %s\nwant %s", tc.name, tc.b, tc.want)
		}
		if data, ok := strings.CutPrefix(string(tc.b), "data: "); ok && !strings.HasPrefix(data, "[DONE]") && !json.Valid([]byte(data)) {
			t.Errorf("%s: not JSON: %s", tc.name, data)
		}
	}
}

// TestLegacyOffsets checks text_offset across chunks: characters of the
// echoed text and the tokens before.
func TestLegacyOffsets(t *testing.T) {
	e := testEncoder(Completion, true, false)
	b := e.AppendText(nil, 0, "héllo", nil)
	b = e.AppendText(b, 0, " Once", []engine.Event{{Token: 3, Text: " Once"}})
	b = e.AppendText(b, 0, " upon", []engine.Event{{Token: 4, Text: " upon"}})
	if !strings.Contains(string(b), `"text_offset":[5]`) || !strings.Contains(string(b), `"text_offset":[10]`) {
		t.Errorf("offsets: %s", b)
	}
}

func TestAppendResponse(t *testing.T) {
	choices := []Choice{
		{Text: "echo Once", Echo: "echo", Finish: "length", Events: []engine.Event{{Token: 3, Text: " Once", Logprob: -0.25}, {Token: -1, Text: "!"}}},
		{Text: "x", Finish: "stop"},
	}
	var c struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Choices []struct {
			Index    int    `json:"index"`
			Text     string `json:"text"`
			Logprobs *struct {
				Tokens     []string  `json:"tokens"`
				Logprobs   []float64 `json:"token_logprobs"`
				TextOffset []int     `json:"text_offset"`
			} `json:"logprobs"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage Usage `json:"usage"`
	}
	b := testEncoder(Completion, true, false).AppendResponse(nil, choices, Usage{1, 2, 3})
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if c.Object != "text_completion" || len(c.Choices) != 2 || c.Choices[1].Index != 1 || c.Usage.TotalTokens != 3 {
		t.Errorf("response %s", b)
	}
	lp := c.Choices[0].Logprobs
	if lp == nil || len(lp.Tokens) != 1 || lp.Tokens[0] != " Once" || lp.Logprobs[0] != -0.25 || lp.TextOffset[0] != 4 {
		t.Errorf("logprobs %s", b)
	}
	var chat struct {
		Object  string `json:"object"`
		Choices []struct {
			Message struct{ Role, Content string } `json:"message"`
		} `json:"choices"`
	}
	b = testEncoder(Chat, false, false).AppendResponse(nil, choices, Usage{})
	if err := json.Unmarshal(b, &chat); err != nil || chat.Object != "chat.completion" || chat.Choices[0].Message.Role != "assistant" ||
		chat.Choices[0].Message.Content != "echo Once" || !strings.Contains(string(b), `"logprobs":null`) {
		t.Errorf("chat response %s (%v)", b, err)
	}
}

func TestErrorFor(t *testing.T) {
	cases := []struct {
		err    error
		status int
		typ    string
		param  string
	}{
		{&sample.ParamError{Field: "top_k", Reason: "negative"}, 400, TypeInvalidRequest, "top_k"},
		{engine.ErrInvalidRequest, 400, TypeInvalidRequest, ""},
		{&http.MaxBytesError{Limit: 10}, 413, TypeInvalidRequest, ""},
		{engine.ErrQueueFull, 429, TypeRateLimit, ""},
		{engine.ErrShutdown, 503, TypeServer, ""},
		{engine.ErrCanceled, StatusClientClosed, TypeInvalidRequest, ""},
		{ModelNotFound("x"), 404, TypeInvalidRequest, "model"},
		{errString("disk on fire"), 500, TypeServer, ""},
	}
	for _, tc := range cases {
		e := ErrorFor(tc.err)
		if e.Status != tc.status || e.Type != tc.typ || e.Param != tc.param || e.Message == "" {
			t.Errorf("ErrorFor(%v) = %+v, want %d %s %q", tc.err, e, tc.status, tc.typ, tc.param)
		}
	}
	if e := ErrorFor(engine.ErrQueueFull); e.RetryAfter <= 0 {
		t.Error("queue full without Retry-After")
	}
}

type errString string

func (e errString) Error() string { return string(e) }
