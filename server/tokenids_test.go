package server

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// idChunk is what TestReturnTokenIDs reads of a chunk or response.
type idChunk struct {
	Choices []struct {
		Index   int    `json:"index"`
		Text    string `json:"text"`
		Message *struct {
			Content string `json:"content"`
		} `json:"message"`
		Delta *struct {
			Content *string `json:"content"`
		} `json:"delta"`
		TokenIDs       *[]int32 `json:"token_ids"`
		PromptTokenIDs []int32  `json:"prompt_token_ids"`
		FinishReason   *string  `json:"finish_reason"`
	} `json:"choices"`
}

// tokenIDsRun is one request's text, generated ids and prompt ids.
type tokenIDsRun struct {
	text    string
	ids     []int32
	prompt  []int32
	prompts int // chunks that carried prompt_token_ids
	finish  string
}

// runTokenIDs sends body to path and gathers what return_token_ids gave.
func runTokenIDs(t *testing.T, fx *fixture, path, body string, stream bool) tokenIDsRun {
	t.Helper()
	resp, b := fx.post(t, path, body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s: status %d: %s", body, resp.StatusCode, b)
	}
	var run tokenIDsRun
	add := func(c idChunk) {
		for _, ch := range c.Choices {
			if ch.TokenIDs == nil {
				t.Fatalf("%s: a choice without token_ids: %+v", body, ch)
			}
			run.ids = append(run.ids, *ch.TokenIDs...)
			run.text += ch.Text
			if ch.Delta != nil && ch.Delta.Content != nil {
				run.text += *ch.Delta.Content
			}
			if ch.Message != nil {
				run.text += ch.Message.Content
			}
			if ch.PromptTokenIDs != nil {
				run.prompt = ch.PromptTokenIDs
				run.prompts++
			}
			if ch.FinishReason != nil {
				run.finish = *ch.FinishReason
			}
		}
	}
	if !stream {
		var c idChunk
		if err := json.Unmarshal(b, &c); err != nil {
			t.Fatal(err)
		}
		add(c)
		return run
	}
	res := collect(t, strings.NewReader(string(b)))
	for _, ev := range res.events {
		if ev == "[DONE]" {
			continue
		}
		var c idChunk
		if err := json.Unmarshal([]byte(ev), &c); err != nil {
			t.Fatal(err)
		}
		if len(c.Choices) > 0 {
			add(c)
		}
	}
	return run
}

// TestReturnTokenIDs checks vLLM's return_token_ids extension: every
// choice carries the ids of its tokens, which together are exactly the
// generated ids (llama.cpp's greedy output), streamed token by token,
// coalesced or whole, and the first carries the prompt's ids, which given
// back as a prompt continue the generation exactly.
func TestReturnTokenIDs(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 2})
	for _, ref := range references(t)[:3] {
		n := min(len(ref.OutputIDs), 24)
		want := ref.OutputIDs[:n]
		for _, mode := range []struct {
			stream bool
			extra  string
		}{{false, ""}, {true, ""}, {true, `,"stream_options":{"min_interval_ms":20}`}} {
			body := fmt.Sprintf(`{"prompt":%s,"temperature":0,"max_tokens":%d,"return_token_ids":true,"stream":%v%s}`,
				jsonString(ref.Prompt), n, mode.stream, mode.extra)
			run := runTokenIDs(t, fx, "/v1/completions", body, mode.stream)
			if !slices.Equal(run.ids, want) {
				t.Errorf("%s:\ntoken_ids %v\nwant      %v", body, run.ids, want)
			}
			if !slices.Equal(run.prompt, ref.PromptIDs) || run.prompts != 1 {
				t.Errorf("%s: prompt_token_ids %v (%d times), want %v once", body, run.prompt, run.prompts, ref.PromptIDs)
			}
			if got := fx.tok.Decode(run.ids); got != run.text {
				t.Errorf("%s: the ids decode to %q, the text is %q", body, got, run.text)
			}
		}
		// Continuing from prompt and generated ids gives the rest of the
		// greedy output exactly.
		half := n / 2
		prompt, _ := json.Marshal(append(slices.Clone(ref.PromptIDs), want[:half]...))
		run := runTokenIDs(t, fx, "/v1/completions", fmt.Sprintf(`{"prompt":%s,"temperature":0,"max_tokens":%d,"return_token_ids":true,"stream":true}`, prompt, n-half), true)
		if !slices.Equal(run.ids, want[half:]) {
			t.Errorf("continued from ids: %v, want %v", run.ids, want[half:])
		}
	}

	// Held-back text: a stop string's tokens are still reported, in the
	// finish chunk when no text carries them.
	ref := references(t)[0]
	cut := strings.Index(ref.OutputText, "verend")
	for _, stream := range []bool{false, true} {
		body := fmt.Sprintf(`{"prompt":%s,"temperature":0,"max_tokens":48,"stop":["verend"],"return_token_ids":true,"stream":%v}`, jsonString(ref.Prompt), stream)
		run := runTokenIDs(t, fx, "/v1/completions", body, stream)
		if run.text != ref.OutputText[:cut] || run.finish != "stop" {
			t.Errorf("stop, stream=%v: text %q finish %q", stream, run.text, run.finish)
		}
		if len(run.ids) > len(ref.OutputIDs) || !slices.Equal(run.ids, ref.OutputIDs[:len(run.ids)]) ||
			!strings.HasPrefix(fx.tok.Decode(run.ids), ref.OutputText[:cut+len("verend")]) {
			t.Errorf("stop, stream=%v: ids %v (%q) do not reach through the stop string", stream, run.ids, fx.tok.Decode(run.ids))
		}
	}

	// Chat: the prompt ids are the rendered template's; continuing them
	// with the generated ids on the completions endpoint gives the rest.
	chat := `{"messages":[{"role":"user","content":"Tell me a story."}],"temperature":0,"max_tokens":20,"return_token_ids":true,"stream":%v}`
	whole := runTokenIDs(t, fx, "/v1/chat/completions", fmt.Sprintf(chat, false), false)
	streamed := runTokenIDs(t, fx, "/v1/chat/completions", fmt.Sprintf(chat, true), true)
	if !slices.Equal(whole.ids, streamed.ids) || !slices.Equal(whole.prompt, streamed.prompt) || streamed.prompts != 1 || len(whole.ids) == 0 {
		t.Errorf("chat: whole %v %v, streamed %v %v (prompt ids %d times)", whole.prompt, whole.ids, streamed.prompt, streamed.ids, streamed.prompts)
	}
	// (Decode drops the leading space of a text's first piece.)
	if fx.tok.Decode(streamed.ids) != strings.TrimPrefix(streamed.text, " ") {
		t.Errorf("chat: ids decode to %q, text %q", fx.tok.Decode(streamed.ids), streamed.text)
	}
	if half := len(whole.ids) / 2; half > 0 {
		prompt, _ := json.Marshal(append(slices.Clone(whole.prompt), whole.ids[:half]...))
		run := runTokenIDs(t, fx, "/v1/completions", fmt.Sprintf(`{"prompt":%s,"temperature":0,"max_tokens":%d,"return_token_ids":true,"stream":true}`, prompt, 20-half), true)
		if !slices.Equal(run.ids, whole.ids[half:]) {
			t.Errorf("chat continued from ids: %v, want %v", run.ids, whole.ids[half:])
		}
	}

	// Without the extension no chunk carries ids.
	_, b := fx.post(t, "/v1/completions", fmt.Sprintf(`{"prompt":%s,"max_tokens":4,"stream":true}`, jsonString(ref.Prompt)))
	if strings.Contains(string(b), "token_ids") {
		t.Errorf("token_ids without return_token_ids: %s", b)
	}
}

// TestReturnTokenIDsResume: a stream resumed after any of its events
// gives, with the events before, exactly the ids of the whole stream, and
// the prompt's ids once (a resumed connection does not send them again).
func TestReturnTokenIDsResume(t *testing.T) {
	fx := newFixture(t, fixtureOptions{})
	ref := references(t)[0]
	for _, tc := range []struct{ path, body string }{
		{"/v1/completions", fmt.Sprintf(`{"prompt":%s,"temperature":0,"max_tokens":48,"stop":["verend"],"return_token_ids":true,"stream":true}`, jsonString(ref.Prompt))},
		{"/v1/chat/completions", `{"messages":[{"role":"user","content":"Tell me a story."}],"temperature":0,"max_tokens":24,"stop":["om"],"return_token_ids":true,"stream":true}`},
	} {
		resp, b := fx.post(t, tc.path, tc.body)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
		type event struct {
			id     string
			ids    []int32
			prompt int
		}
		parse := func(body string) []event {
			var evs []event
			r := newSSEReader(t, strings.NewReader(body))
			for {
				id, data, err := r.event()
				if err != nil {
					return evs
				}
				ev := event{id: id}
				var c idChunk
				if data != "[DONE]" && json.Unmarshal([]byte(data), &c) == nil {
					for _, ch := range c.Choices {
						if ch.TokenIDs != nil {
							ev.ids = append(ev.ids, *ch.TokenIDs...)
						}
						if ch.PromptTokenIDs != nil {
							ev.prompt++
						}
					}
				}
				evs = append(evs, ev)
			}
		}
		all := parse(string(b))
		var whole []int32
		for _, ev := range all {
			whole = append(whole, ev.ids...)
		}
		if len(whole) == 0 {
			t.Fatalf("%s: no ids in %s", tc.path, b)
		}
		for k := range len(all) - 1 {
			var ids []int32
			prompts := 0
			for _, ev := range all[:k+1] {
				ids, prompts = append(ids, ev.ids...), prompts+ev.prompt
			}
			stream, seq, _ := strings.Cut(all[k].id, ":")
			resp, rb := fx.do(t, "GET", "/v1/streams/"+stream+"?after="+seq, "")
			if resp.StatusCode != 200 {
				t.Fatalf("resume after %s: status %d: %s", all[k].id, resp.StatusCode, rb)
			}
			for _, ev := range parse(string(rb)) {
				ids, prompts = append(ids, ev.ids...), prompts+ev.prompt
			}
			if !slices.Equal(ids, whole) || prompts != 1 {
				t.Errorf("%s resumed after %s: ids %v, prompt ids %d times; want %v once", tc.path, all[k].id, ids, prompts, whole)
			}
		}
	}
}
