package openai

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestDecodeErrors(t *testing.T) {
	cases := []struct {
		body, param, msg string
	}{
		{"", "", "empty"},
		{"{\n  \"prompt\": x\n}", "", "line 2, column 13"},
		{`{"prompt": "x"`, "", "malformed JSON"},
		{`"text"`, "", "must be a JSON object, not string"},
		{`{"temperature": "0.5"}`, "temperature", `"temperature" must be a number, not string`},
		{`{"n": 2.5}`, "n", `"n" must be an integer, not number 2.5`},
		{`{"logit_bias": [1]}`, "logit_bias", `"logit_bias" must be an object, not array`},
		{`{"stream_options": {"include_usage": 1}}`, "stream_options.include_usage", "must be a boolean"},
		{`{"echo": "yes"}`, "echo", "must be a boolean"},
	}
	for _, tc := range cases {
		var r CompletionRequest
		err := Decode([]byte(tc.body), &r)
		var e *Error
		if !errors.As(err, &e) || e.Status != 400 || e.Param != tc.param || !strings.Contains(e.Message, tc.msg) {
			t.Errorf("Decode(%q) = %+v, want param %q and %q", tc.body, err, tc.param, tc.msg)
		}
	}
}

func chatOptions(t *testing.T, body string) (Options, error) {
	t.Helper()
	var r ChatRequest
	if err := Decode([]byte(body), &r); err != nil {
		t.Fatal(err)
	}
	return r.Options()
}

func TestOptions(t *testing.T) {
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	o, err := chatOptions(t, `{`+msgs+`}`)
	if err != nil {
		t.Fatal(err)
	}
	if s := o.Request.Sample; s.Temperature != 1 || s.TopP != 1 || s.TopK != 0 || o.Request.MaxTokens != 0 || o.N != 1 || o.Stream {
		t.Errorf("chat defaults: %+v, %+v; want OpenAI's temperature 1, top_p 1, no limit", s, o)
	}
	var cr CompletionRequest
	Decode([]byte(`{"prompt":"x"}`), &cr)
	if o, _ := cr.Options(); o.Request.MaxTokens != DefaultCompletionMaxTokens {
		t.Errorf("completions max_tokens default %d, want 16", o.Request.MaxTokens)
	}

	o, err = chatOptions(t, `{`+msgs+`,"temperature":0,"top_p":0,"top_k":-1,"seed":42,"n":3,"max_tokens":7,"max_completion_tokens":9,
		"repetition_penalty":1.3,"repeat_penalty":1.1,"logit_bias":{" 12 ":-100},"stop":"END","ignore_eos":true,"priority":-2,
		"stream":true,"stream_options":{"include_usage":true},"logprobs":true,"top_logprobs":3,"user":"u"}`)
	if err != nil {
		t.Fatal(err)
	}
	s, r := o.Request.Sample, o.Request
	if s.Temperature != 0 || s.TopP != 1 || s.TopK != 1 || s.Seed != 42 || s.RepeatPenalty != 1.3 || s.LogitBias[12] != -100 ||
		r.MaxTokens != 9 || len(r.Stop) != 1 || !r.IgnoreEOS || r.Priority != -2 || !r.Logprobs || r.TopLogprobs != 3 || !o.IncludeUsage || o.N != 3 {
		t.Errorf("options %+v", o)
	}
	c0, c1, c2 := o.Choice(0, []int32{1}), o.Choice(1, []int32{1}), o.Choice(2, []int32{1})
	if c0.Sample.Seed != 42 || c1.Sample.Seed == c0.Sample.Seed || c2.Sample.Seed == c1.Sample.Seed || len(c1.Prompt) != 1 {
		t.Errorf("choice seeds %d %d %d", c0.Sample.Seed, c1.Sample.Seed, c2.Sample.Seed)
	}
	// include_usage only applies to streams.
	if o, _ := chatOptions(t, `{`+msgs+`,"stream_options":{"include_usage":true}}`); o.IncludeUsage {
		t.Error("include_usage without stream")
	}
	// Absent seeds are random.
	a, _ := chatOptions(t, `{`+msgs+`}`)
	b, _ := chatOptions(t, `{`+msgs+`}`)
	if a.Request.Sample.Seed == b.Request.Sample.Seed {
		t.Error("two requests without a seed got the same one")
	}
}

func TestPrompts(t *testing.T) {
	cases := []struct {
		raw  string
		want string // fmt of the prompts, or "error"
	}{
		{`"hi"`, "[{hi []}]"},
		{`["a","b"]`, "[{a []} {b []}]"},
		{`[1,2,3]`, "[{ [1 2 3]}]"},
		{`[[1],[2,3]]`, "[{ [1]} { [2 3]}]"},
		{`[]`, "error"},
		{`[[]]`, "error"},
		{`[1,"a"]`, "error"},
		{`[["a"]]`, "error"},
		{`null`, "error"},
		{`{}`, "error"},
		{`[99999999999]`, "error"},
	}
	// One prompt of more token ids than MaxChoices is one prompt; as
	// many strings are too many prompts.
	ids, strs := make([]string, MaxChoices+1), make([]string, MaxChoices+1)
	for i := range ids {
		ids[i], strs[i] = "7", `"a"`
	}
	cases = append(cases,
		struct{ raw, want string }{"[" + strings.Join(ids, ",") + "]", fmt.Sprint([]Prompt{{Tokens: slices.Repeat([]int32{7}, MaxChoices+1)}})},
		struct{ raw, want string }{"[" + strings.Join(strs, ",") + "]", "error"})
	for _, tc := range cases {
		r := CompletionRequest{Prompt: []byte(tc.raw)}
		ps, err := r.Prompts()
		got := "error"
		if err == nil {
			got = fmt.Sprint(ps)
		}
		if got != tc.want {
			t.Errorf("Prompts(%s) = %s (%v), want %s", tc.raw, got, err, tc.want)
		}
	}
}

func TestMessageText(t *testing.T) {
	cases := []struct {
		msg        Message
		role, text string
		errParam   string
	}{
		{Message{Role: "user", Content: []byte(`"hi"`)}, "user", "hi", ""},
		{Message{Role: "developer", Content: []byte(`"be brief"`)}, "system", "be brief", ""},
		{Message{Role: "assistant", Content: []byte(`null`)}, "assistant", "", ""},
		{Message{Role: "assistant"}, "assistant", "", ""},
		{Message{Role: "user", Content: []byte(`[{"type":"text","text":"a"},{"type":"text","text":"b"}]`)}, "user", "a\nb", ""},
		{Message{Role: "user", Content: []byte(`[{"type":"input_audio"}]`)}, "", "", "messages[3].content[0].type"},
		{Message{Role: "user", Content: []byte(`[{"type":"text"}]`)}, "", "", "messages[3].content[0].text"},
		{Message{Role: "user", Content: []byte(`{"text":"x"}`)}, "", "", "messages[3].content"},
		{Message{Role: "robot", Content: []byte(`"x"`)}, "", "", "messages[3].role"},
	}
	for _, tc := range cases {
		role, text, err := tc.msg.Text(3)
		var e *Error
		switch {
		case tc.errParam != "":
			if !errors.As(err, &e) || e.Param != tc.errParam {
				t.Errorf("Text(%s) err = %v, want one about %s", tc.msg.Content, err, tc.errParam)
			}
		case err != nil || role != tc.role || text != tc.text:
			t.Errorf("Text(%s) = %q, %q, %v; want %q, %q", tc.msg.Content, role, text, err, tc.role, tc.text)
		}
	}
}

// TestDeliveryOptions checks Spigot's stream_options extensions: parsed,
// validated with errors that name the field, and off by default.
func TestDeliveryOptions(t *testing.T) {
	msgs := `"messages":[{"role":"user","content":"hi"}],"stream":true`
	o, err := chatOptions(t, `{`+msgs+`}`)
	if err != nil || o.Delivery != (Delivery{}) {
		t.Errorf("defaults: %+v, %v; want the zero Delivery", o.Delivery, err)
	}
	o, err = chatOptions(t, `{`+msgs+`,"stream_options":{"include_usage":true,"pace_tokens_per_second":20.5,"min_interval_ms":100,"cancel_on_disconnect":true}}`)
	want := Delivery{Pace: 20.5, MinInterval: 100 * time.Millisecond, CancelOnDisconnect: true}
	if err != nil || o.Delivery != want || !o.IncludeUsage {
		t.Errorf("options: %+v (usage %v), %v; want %+v", o.Delivery, o.IncludeUsage, err, want)
	}
	for _, tc := range []struct{ opts, param string }{
		{`{"pace_tokens_per_second":-1}`, "stream_options.pace_tokens_per_second"},
		{`{"pace_tokens_per_second":1e9}`, "stream_options.pace_tokens_per_second"},
		{`{"min_interval_ms":-5}`, "stream_options.min_interval_ms"},
		{`{"min_interval_ms":600001}`, "stream_options.min_interval_ms"},
	} {
		_, err := chatOptions(t, `{`+msgs+`,"stream_options":`+tc.opts+`}`)
		var e *Error
		if !errors.As(err, &e) || e.Status != 400 || e.Param != tc.param || !strings.Contains(e.Message, tc.param) {
			t.Errorf("stream_options %s: %v; want a 400 about %s", tc.opts, err, tc.param)
		}
	}
	var r ChatRequest
	err = Decode([]byte(`{`+msgs+`,"stream_options":{"pace_tokens_per_second":"fast"}}`), &r)
	var e *Error
	if !errors.As(err, &e) || e.Param != "stream_options.pace_tokens_per_second" {
		t.Errorf("a string pace: %v; want a 400 about stream_options.pace_tokens_per_second", err)
	}
}
