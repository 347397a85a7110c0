package gateway

import (
	"bytes"
	"encoding/json"
	"math"
	"sort"

	"github.com/spigot-llm/spigot/api/openai"
)

// request is a client's generation request as far as the gateway reads
// it: the fields routing and continuation need. The body itself is sent
// to the first upstream untouched.
type request struct {
	kind   openai.Kind
	path   string
	raw    []byte
	fields map[string]json.RawMessage

	model        string
	stream       bool
	includeUsage bool
	// cancelOnDisconnect: stream_options.cancel_on_disconnect, a client
	// that will never resume: its going away cancels the stream.
	cancelOnDisconnect bool
	n                  int
	echo               bool
	maxTokens          int    // -1 when absent
	maxField           string // the field that held it
	prompt             string // a completion's one text prompt
	promptText         bool   // prompt is one string
	messages           []json.RawMessage
	tokenIDs           bool // the client asked for return_token_ids itself
	chatLogprobs       bool // a chat request asked for logprobs

	key    uint64 // prompt-prefix affinity key
	hasKey bool
}

// parseRequest reads a completions or chat body. Its errors are 400
// *openai.Errors; deeper validation is the upstream's.
func parseRequest(body []byte, kind openai.Kind, prefixBytes int) (*request, error) {
	r := &request{kind: kind, raw: body, maxTokens: -1, n: 1, path: "/v1/completions"}
	if kind == openai.Chat {
		r.path = "/v1/chat/completions"
	}
	if err := json.Unmarshal(body, &r.fields); err != nil || r.fields == nil {
		return nil, openai.BadRequest("", "the request body must be a JSON object")
	}
	field := func(name string, v any) error {
		raw, ok := r.fields[name]
		if !ok || string(raw) == "null" {
			return nil
		}
		if err := json.Unmarshal(raw, v); err != nil {
			return openai.BadRequest(name, "%s has the wrong type", name)
		}
		return nil
	}
	var so struct {
		IncludeUsage       bool `json:"include_usage"`
		CancelOnDisconnect bool `json:"cancel_on_disconnect"`
	}
	for _, f := range []struct {
		name string
		v    any
	}{{"model", &r.model}, {"stream", &r.stream}, {"stream_options", &so}, {"n", &r.n}, {"echo", &r.echo}, {"return_token_ids", &r.tokenIDs}} {
		if err := field(f.name, f.v); err != nil {
			return nil, err
		}
	}
	r.includeUsage, r.cancelOnDisconnect = so.IncludeUsage, so.CancelOnDisconnect
	names := []string{"max_tokens"}
	if kind == openai.Chat {
		names = []string{"max_completion_tokens", "max_tokens"}
	}
	for _, name := range names {
		if raw, ok := r.fields[name]; ok && string(raw) != "null" {
			if err := field(name, &r.maxTokens); err != nil {
				return nil, err
			}
			r.maxField = name
			break
		}
	}
	var affinity []byte
	if kind == openai.Completion {
		raw := bytes.TrimSpace(r.fields["prompt"])
		if len(raw) > 0 && raw[0] == '"' {
			if err := json.Unmarshal(raw, &r.prompt); err != nil {
				return nil, openai.BadRequest("prompt", "prompt is not a valid string")
			}
			r.promptText = true
			affinity = []byte(r.prompt)
		} else {
			affinity = raw
		}
	} else {
		if err := field("messages", &r.messages); err != nil {
			return nil, err
		}
		if err := field("logprobs", &r.chatLogprobs); err != nil {
			return nil, err
		}
		affinity = r.fields["messages"]
	}
	if prefixBytes > 0 && len(affinity) > 0 {
		r.key, r.hasKey = prefixKey(affinity, prefixBytes), true
	}
	return r, nil
}

// continuable reports whether a stream cut after its first token can be
// continued on another upstream: one choice, and for completions one text
// prompt without echo.
func (r *request) continuable() bool {
	return r.n <= 1 && (r.kind == openai.Chat || (r.promptText && !r.echo))
}

// body returns the request body for an attempt that continues after text
// (sent tokens of it) was generated: the original body when nothing was,
// else the prompt extended by text (completions) or the messages followed
// by an assistant message holding text (chat, with vLLM's
// continue_final_message), and the token limit reduced by sent. left is
// the tokens the attempt may still generate, -1 for no limit.
func (r *request) body(text string, sent int) (b []byte, left int) {
	left = r.maxTokens
	if left < 0 && r.kind == openai.Completion {
		left = openai.DefaultCompletionMaxTokens
	}
	if sent == 0 && text == "" {
		return r.raw, left
	}
	if left >= 0 {
		left = max(left-sent, 0)
	}
	f := make(map[string]json.RawMessage, len(r.fields)+2)
	for k, v := range r.fields {
		f[k] = v
	}
	if left >= 0 {
		name := r.maxField
		if name == "" {
			name = "max_tokens"
		}
		f[name] = mustJSON(left)
	}
	if r.kind == openai.Completion {
		f["prompt"] = mustJSON(r.prompt + text)
	} else if text != "" {
		msgs := append(append([]json.RawMessage(nil), r.messages...),
			mustJSON(map[string]string{"role": "assistant", "content": text}))
		f["messages"] = mustJSON(msgs)
		f["continue_final_message"] = json.RawMessage("true")
		f["add_generation_prompt"] = json.RawMessage("false")
	}
	return marshalObject(f, nil), left
}

// chatOnly are the chat fields a completions request has no use for: a
// chat continued from token ids drops them.
var chatOnly = []string{"messages", "max_completion_tokens", "logprobs", "top_logprobs", "tools", "tool_choice",
	"functions", "function_call", "parallel_tool_calls", "response_format", "continue_final_message",
	"add_generation_prompt", "chat_template", "chat_template_kwargs"}

// idsBody returns the body of a completions request that continues a
// stream from token ids (the prompt's ids the upstream reported, then the
// ids generated so far), with left tokens to go (-1: no limit, which is
// the context's). A chat request becomes a completions request: its
// sampling settings, stop strings and stream options carry over.
func (r *request) idsBody(prompt []int64, left int) []byte {
	f := make(map[string]json.RawMessage, len(r.fields)+2)
	for k, v := range r.fields {
		f[k] = v
	}
	for _, k := range chatOnly {
		delete(f, k)
	}
	if left < 0 {
		left = math.MaxInt32 // generation stops at the context, as the chat's would
	}
	f["prompt"] = mustJSON(prompt)
	f["max_tokens"] = mustJSON(left)
	f["return_token_ids"] = json.RawMessage("true")
	delete(f, "echo")
	return marshalObject(f, nil)
}

// forSpigot returns a streamed request's body as a spigot upstream gets
// it: with stream_options.cancel_on_disconnect set, so that the gateway
// ending its request stops the generation there (the gateway keeps the
// stream for resuming itself, and continues a broken one elsewhere), and,
// with ids, "return_token_ids": true.
func forSpigot(body []byte, ids bool) []byte {
	var f map[string]json.RawMessage
	if json.Unmarshal(body, &f) != nil || f == nil {
		return body
	}
	so := map[string]json.RawMessage{}
	if raw, ok := f["stream_options"]; ok && json.Unmarshal(raw, &so) != nil {
		return body // the upstream will refuse it
	}
	if so == nil {
		so = map[string]json.RawMessage{}
	}
	so["cancel_on_disconnect"] = json.RawMessage("true")
	f["stream_options"] = marshalObject(so, nil)
	if ids {
		f["return_token_ids"] = json.RawMessage("true")
	}
	return marshalObject(f, nil)
}

// stripIDs removes the return_token_ids fields from an event as Spigot
// writes them (`,"token_ids":[…]` and, with prompt, `,"prompt_token_ids":[…]`).
// The arrays hold only numbers, and `,"` cannot occur inside a JSON
// string (a quote there is escaped), so the cut is exact.
func stripIDs(b []byte, tokens bool) []byte {
	names := []string{`,"prompt_token_ids":[`}
	if tokens {
		names = append(names, `,"token_ids":[`)
	}
	for _, name := range names {
		for {
			i := bytes.Index(b, []byte(name))
			if i < 0 {
				break
			}
			j := bytes.IndexByte(b[i+len(name):], ']')
			if j < 0 {
				break
			}
			b = append(b[:i:i], b[i+len(name)+j+1:]...)
		}
	}
	return b
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only called with strings, ints and string maps
	}
	return b
}

// chunkKeyOrder is the order of a chunk's usual fields, which
// marshalObject writes first (then the others sorted, usage last).
var chunkKeyOrder = []string{"id", "object", "created", "model", "system_fingerprint", "choices"}

// marshalObject writes an object with the keys in first order, then the
// rest sorted, "usage" last.
func marshalObject(f map[string]json.RawMessage, first []string) []byte {
	b := []byte{'{'}
	done := map[string]bool{}
	add := func(k string) {
		v, ok := f[k]
		if !ok || done[k] {
			return
		}
		done[k] = true
		if len(b) > 1 {
			b = append(b, ',')
		}
		b = openai.AppendString(b, k)
		b = append(b, ':')
		b = append(b, v...)
	}
	for _, k := range first {
		add(k)
	}
	keys := make([]string, 0, len(f))
	for k := range f {
		if k != "usage" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		add(k)
	}
	add("usage")
	return append(b, '}')
}
