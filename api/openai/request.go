package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/spigot-llm/spigot/engine"
)

// Limits on what one request may ask for.
const (
	MaxBodyBytes   = 8 << 20 // request bodies larger than this get 413
	MaxChoices     = 128     // n times the number of prompts (OpenAI's limit on n)
	MaxStops       = 16      // stop strings (OpenAI allows 4)
	MaxTopLogprobs = 20      // top_logprobs, and completions' logprobs (OpenAI: 5)
)

// DefaultCompletionMaxTokens is max_tokens when a completions request omits
// it: 16, as OpenAI (and vLLM) document. Chat requests without a limit
// generate until an end-of-generation token or the context is full.
const DefaultCompletionMaxTokens = 16

// Params are the request fields both generation endpoints share. Pointer
// fields are nil when absent (or null), so that OpenAI's defaults apply.
type Params struct {
	Model            string         `json:"model"`
	MaxTokens        *int           `json:"max_tokens"`
	N                *int           `json:"n"`
	Stream           bool           `json:"stream"`
	StreamOptions    *StreamOptions `json:"stream_options"`
	Temperature      *float64       `json:"temperature"`       // [0, 2]; default 1
	TopP             *float64       `json:"top_p"`             // [0, 1]; default 1 (off)
	TopK             *int           `json:"top_k"`             // vLLM, llama.cpp; -1 or 0: off
	MinP             *float64       `json:"min_p"`             // vLLM, llama.cpp; [0, 1]
	PresencePenalty  *float64       `json:"presence_penalty"`  // [-2, 2]
	FrequencyPenalty *float64       `json:"frequency_penalty"` // [-2, 2]
	// RepetitionPenalty is vLLM's name and RepeatPenalty llama.cpp's for
	// the same multiplicative penalty (1: off).
	RepetitionPenalty *float64 `json:"repetition_penalty"`
	RepeatPenalty     *float64 `json:"repeat_penalty"`
	// LogitBias maps token ids, as strings, to a bias in [-100, 100].
	LogitBias map[string]float64 `json:"logit_bias"`
	Seed      *int64             `json:"seed"`
	Stop      json.RawMessage    `json:"stop"` // a string or an array of strings
	IgnoreEOS bool               `json:"ignore_eos"`
	Priority  int                `json:"priority"` // lower starts first (vLLM)
	// ReturnTokenIDs is vLLM's return_token_ids: choices carry the ids of
	// their tokens ("token_ids") and of the prompt ("prompt_token_ids").
	ReturnTokenIDs bool   `json:"return_token_ids"`
	User           string `json:"user"` // accepted and ignored
}

// StreamOptions is the stream_options object: OpenAI's include_usage, and
// Spigot's delivery extensions (see [Delivery]), which only streamed
// responses use.
type StreamOptions struct {
	IncludeUsage        bool     `json:"include_usage"`
	PaceTokensPerSecond *float64 `json:"pace_tokens_per_second"`
	MinIntervalMS       *float64 `json:"min_interval_ms"`
	CancelOnDisconnect  bool     `json:"cancel_on_disconnect"`
}

// Limits of the delivery extensions.
const (
	MaxPace        = 10000  // pace_tokens_per_second
	MaxMinInterval = 60_000 // min_interval_ms
)

// CompletionRequest is the body of POST /v1/completions.
type CompletionRequest struct {
	Params
	// Prompt is a string, an array of strings, an array of token ids, or an
	// array of arrays of token ids; see [CompletionRequest.Prompts].
	Prompt   json.RawMessage `json:"prompt"`
	Echo     bool            `json:"echo"`
	Logprobs *int            `json:"logprobs"` // the number of top_logprobs per token
	BestOf   *int            `json:"best_of"`  // only 1 or n (no ranking)
	Suffix   *string         `json:"suffix"`   // not supported: must be empty
}

// ChatRequest is the body of POST /v1/chat/completions.
type ChatRequest struct {
	Params
	Messages            []Message       `json:"messages"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Logprobs            *bool           `json:"logprobs"`
	TopLogprobs         *int            `json:"top_logprobs"`
	ResponseFormat      *ResponseFormat `json:"response_format"`
	// Tools and Functions are not supported: they must be absent or empty.
	Tools     json.RawMessage `json:"tools"`
	Functions json.RawMessage `json:"functions"`
}

// Message is one chat message. Content is a string, null, or an array of
// content parts of which only {"type":"text","text":…} is supported; see
// [Message.Text].
type Message struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
	Name    string          `json:"name"`
}

// ResponseFormat is response_format; only {"type":"text"} is supported.
type ResponseFormat struct {
	Type string `json:"type"`
}

// Options are a request's generation settings, validated.
type Options struct {
	Model string
	// Request holds everything but the prompt. Its Sample.Seed is the seed
	// of choice 0; see [Options.Choice].
	Request      engine.Request
	N            int
	Stream       bool
	IncludeUsage bool
	Delivery     Delivery
	// TokenIDs is return_token_ids.
	TokenIDs bool
}

// Delivery is how a stream's events are sent, from Spigot's extensions to
// stream_options. The zero Delivery is OpenAI's behaviour: each token in
// its own chunk as soon as it exists, and a stream a client disconnected
// from may be resumed (see the server package).
type Delivery struct {
	// Pace is pace_tokens_per_second: tokens are sent evenly spaced at
	// this rate (all choices together) while generation runs ahead. 0: as
	// generated.
	Pace float64
	// MinInterval is min_interval_ms: chunks carrying tokens are at least
	// this far apart, each carrying every token generated meanwhile. 0:
	// one chunk per token.
	MinInterval time.Duration
	// CancelOnDisconnect is cancel_on_disconnect: a client that goes away
	// cancels the generation at once instead of leaving it to be resumed.
	CancelOnDisconnect bool
}

// Choice returns the engine request of choice i of a prompt: Request with
// the prompt and a seed of its own, derived from the request's seed, so
// that n choices differ yet a fixed seed reproduces all of them.
func (o *Options) Choice(i int, prompt []int32) engine.Request {
	r := o.Request
	r.Prompt = prompt
	r.Sample.Seed += uint64(i) * 0x9e3779b97f4a7c15 // the golden ratio's bits: seeds far apart
	return r
}

// Decode parses a JSON request body into v (a pointer to one of this
// package's request types). Its errors are 400 *Errors that say where the
// JSON is malformed, or which field has the wrong type.
func Decode(data []byte, v any) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return BadRequest("", "the request body is empty; want a JSON object")
	}
	err := json.Unmarshal(data, v)
	if err == nil {
		return nil
	}
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		line, col := position(data, se.Offset)
		return BadRequest("", "malformed JSON at line %d, column %d (byte %d): %v", line, col, se.Offset, se)
	case errors.As(err, &te):
		// encoding/json names a field of the embedded Params "Params.x";
		// the wire name is "x".
		field := strings.TrimPrefix(te.Field, "Params.")
		if field == "" {
			return BadRequest("", "the request body must be a JSON object, not %s", te.Value)
		}
		return BadRequest(field, "%q must be %s, not %s", field, describe(te.Type), te.Value)
	}
	return BadRequest("", "malformed JSON: %v", err)
}

// position converts a byte offset into a 1-based line and column.
func position(data []byte, off int64) (line, col int) {
	off = min(max(off, 0), int64(len(data)))
	before := data[:off]
	line = bytes.Count(before, []byte{'\n'}) + 1
	col = int(off) - (bytes.LastIndexByte(before, '\n') + 1)
	if col == 0 {
		col = 1
	}
	return line, col
}

// describe names the JSON type a Go type is decoded from.
func describe(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Slice, reflect.Array:
		return "an array"
	}
	return "an object"
}

// isNull reports whether a raw field is absent or null.
func isNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || string(raw) == "null"
}

// options validates the shared fields. maxTokens is the effective limit
// field (nil: absent) and defMax the default limit.
func (p *Params) options(maxTokens *int, maxParam string, defMax int) (Options, error) {
	o := Options{Model: p.Model, N: 1, Stream: p.Stream, TokenIDs: p.ReturnTokenIDs}
	if p.N != nil {
		if *p.N < 1 || *p.N > MaxChoices {
			return o, BadRequest("n", "n is %d; it must be between 1 and %d", *p.N, MaxChoices)
		}
		o.N = *p.N
	}
	if so := p.StreamOptions; so != nil {
		o.IncludeUsage = so.IncludeUsage && p.Stream
		d := &o.Delivery
		d.CancelOnDisconnect = so.CancelOnDisconnect
		if v := so.PaceTokensPerSecond; v != nil {
			if !(*v >= 0 && *v <= MaxPace) {
				return o, BadRequest("stream_options.pace_tokens_per_second",
					"stream_options.pace_tokens_per_second is %g; it must be between 0 (off) and %d tokens per second", *v, MaxPace)
			}
			d.Pace = *v
		}
		if v := so.MinIntervalMS; v != nil {
			if !(*v >= 0 && *v <= MaxMinInterval) {
				return o, BadRequest("stream_options.min_interval_ms",
					"stream_options.min_interval_ms is %g; it must be between 0 (off) and %d milliseconds", *v, MaxMinInterval)
			}
			d.MinInterval = time.Duration(*v * float64(time.Millisecond))
		}
	}
	r := &o.Request
	r.MaxTokens = defMax
	if maxTokens != nil {
		if *maxTokens < 1 {
			return o, BadRequest(maxParam, "%s is %d; it must be at least 1", maxParam, *maxTokens)
		}
		r.MaxTokens = *maxTokens
	}
	s := &r.Sample
	s.Temperature, s.TopP = 1, 1 // OpenAI's defaults
	if err := inRange("temperature", p.Temperature, 0, 2, &s.Temperature); err != nil {
		return o, err
	}
	if err := inRange("top_p", p.TopP, 0, 1, &s.TopP); err != nil {
		return o, err
	}
	if p.TopP != nil && *p.TopP == 0 {
		// OpenAI's top_p 0 keeps only the most likely token; the sampler's
		// 0 turns top-p off, so say it with top-k.
		s.TopP, s.TopK = 1, 1
	}
	if p.TopK != nil {
		switch k := *p.TopK; {
		case k < -1:
			return o, BadRequest("top_k", "top_k is %d; it must be -1 or 0 (off) or positive", k)
		case k > 0 && s.TopK == 0:
			s.TopK = k
		}
	}
	if err := inRange("min_p", p.MinP, 0, 1, &s.MinP); err != nil {
		return o, err
	}
	if err := inRange("presence_penalty", p.PresencePenalty, -2, 2, &s.PresencePenalty); err != nil {
		return o, err
	}
	if err := inRange("frequency_penalty", p.FrequencyPenalty, -2, 2, &s.FrequencyPenalty); err != nil {
		return o, err
	}
	rp, rpName := p.RepetitionPenalty, "repetition_penalty"
	if rp == nil {
		rp, rpName = p.RepeatPenalty, "repeat_penalty"
	}
	if rp != nil && (*rp <= 0 || *rp > 100) {
		return o, BadRequest(rpName, "%s is %g; it must be above 0 and at most 100 (1: off)", rpName, *rp)
	}
	if rp != nil {
		s.RepeatPenalty = float32(*rp)
	}
	if len(p.LogitBias) > 0 {
		s.LogitBias = make(map[int32]float32, len(p.LogitBias))
		for k, v := range p.LogitBias {
			id, err := strconv.ParseInt(strings.TrimSpace(k), 10, 32)
			if err != nil || id < 0 {
				return o, BadRequest("logit_bias", "logit_bias key %q is not a token id", k)
			}
			if v < -100 || v > 100 || math.IsNaN(v) {
				return o, BadRequest("logit_bias", "logit_bias of token %d is %g; it must be between -100 and 100", id, v)
			}
			s.LogitBias[int32(id)] = float32(v)
		}
	}
	if p.Seed != nil {
		s.Seed = uint64(*p.Seed)
	} else {
		s.Seed = rand.Uint64()
	}
	stops, err := stopList(p.Stop)
	if err != nil {
		return o, err
	}
	r.Stop = stops
	r.IgnoreEOS = p.IgnoreEOS
	r.Priority = p.Priority
	return o, nil
}

// inRange checks an optional number against [lo, hi] and stores it.
func inRange(name string, v *float64, lo, hi float64, dst *float32) error {
	if v == nil {
		return nil
	}
	if !(*v >= lo && *v <= hi) {
		return BadRequest(name, "%s is %g; it must be between %g and %g", name, *v, lo, hi)
	}
	*dst = float32(*v)
	return nil
}

// stopList parses stop: null, a string, or an array of strings.
func stopList(raw json.RawMessage) ([]string, error) {
	if isNull(raw) {
		return nil, nil
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []string{one}, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, BadRequest("stop", `"stop" must be a string or an array of strings`)
	}
	if len(list) > MaxStops {
		return nil, BadRequest("stop", "stop has %d strings; at most %d are allowed", len(list), MaxStops)
	}
	return list, nil
}

// Prompt is one prompt of a completions request: text, or token ids when
// Tokens is not nil.
type Prompt struct {
	Text   string
	Tokens []int32
}

// Options validates a completions request and returns its settings.
func (r *CompletionRequest) Options() (Options, error) {
	o, err := r.Params.options(r.MaxTokens, "max_tokens", DefaultCompletionMaxTokens)
	if err != nil {
		return o, err
	}
	if r.Suffix != nil && *r.Suffix != "" {
		return o, BadRequest("suffix", "suffix is not supported")
	}
	if r.BestOf != nil && *r.BestOf != 1 && *r.BestOf != o.N {
		return o, BadRequest("best_of", "best_of is %d; only best_of = n is supported (choices are not ranked)", *r.BestOf)
	}
	if r.Logprobs != nil {
		n := *r.Logprobs
		if n < 0 || n > MaxTopLogprobs {
			return o, BadRequest("logprobs", "logprobs is %d; it must be between 0 and %d", n, MaxTopLogprobs)
		}
		if r.Echo {
			return o, BadRequest("logprobs", "logprobs together with echo is not supported (prompt tokens have no logprobs here)")
		}
		o.Request.Logprobs, o.Request.TopLogprobs = true, n
	}
	return o, nil
}

// Prompts parses prompt: a string, an array of strings, an array of token
// ids, or an array of arrays of token ids (OpenAI's four forms). Each
// prompt gets n choices.
func (r *CompletionRequest) Prompts() ([]Prompt, error) {
	raw := bytes.TrimSpace(r.Prompt)
	if isNull(raw) {
		return nil, BadRequest("prompt", "prompt is required")
	}
	bad := BadRequest("prompt", `"prompt" must be a string, an array of strings, an array of token ids or an array of arrays of token ids`)
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return nil, bad
		}
		return []Prompt{{Text: s}}, nil
	}
	var elems []json.RawMessage
	if json.Unmarshal(raw, &elems) != nil {
		return nil, bad
	}
	if len(elems) == 0 {
		return nil, BadRequest("prompt", "prompt is an empty array")
	}
	first := bytes.TrimSpace(elems[0])[0]
	if (first == '"' || first == '[') && len(elems) > MaxChoices {
		// (An array of token ids is one prompt, however long.)
		return nil, BadRequest("prompt", "prompt has %d prompts; at most %d are allowed", len(elems), MaxChoices)
	}
	switch first {
	case '"':
		var ss []string
		if json.Unmarshal(raw, &ss) != nil {
			return nil, bad
		}
		ps := make([]Prompt, len(ss))
		for i, s := range ss {
			ps[i].Text = s
		}
		return ps, nil
	case '[':
		var lists [][]int32
		if json.Unmarshal(raw, &lists) != nil {
			return nil, bad
		}
		ps := make([]Prompt, len(lists))
		for i, l := range lists {
			if len(l) == 0 {
				return nil, BadRequest("prompt", "prompt %d is an empty array of token ids", i)
			}
			ps[i].Tokens = l
		}
		return ps, nil
	}
	var ids []int32
	if json.Unmarshal(raw, &ids) != nil {
		return nil, bad
	}
	return []Prompt{{Tokens: ids}}, nil
}

// Options validates a chat request's settings (not its messages; see
// [ChatRequest.Texts]).
func (r *ChatRequest) Options() (Options, error) {
	limit, name := r.MaxCompletionTokens, "max_completion_tokens"
	if limit == nil {
		limit, name = r.MaxTokens, "max_tokens"
	}
	o, err := r.Params.options(limit, name, 0)
	if err != nil {
		return o, err
	}
	if len(r.Messages) == 0 {
		return o, BadRequest("messages", "messages is required and must not be empty")
	}
	logprobs := r.Logprobs != nil && *r.Logprobs
	if r.TopLogprobs != nil {
		n := *r.TopLogprobs
		if n < 0 || n > MaxTopLogprobs {
			return o, BadRequest("top_logprobs", "top_logprobs is %d; it must be between 0 and %d", n, MaxTopLogprobs)
		}
		if n > 0 && !logprobs {
			return o, BadRequest("top_logprobs", "top_logprobs needs logprobs set to true")
		}
		o.Request.TopLogprobs = n
	}
	o.Request.Logprobs = logprobs
	if rf := r.ResponseFormat; rf != nil && rf.Type != "" && rf.Type != "text" {
		return o, BadRequest("response_format", "response_format type %q is not supported (only \"text\")", rf.Type)
	}
	for _, f := range []struct {
		name string
		raw  json.RawMessage
	}{{"tools", r.Tools}, {"functions", r.Functions}} {
		if raw := bytes.TrimSpace(f.raw); !isNull(raw) && string(raw) != "[]" {
			return o, BadRequest(f.name, "%s are not supported", f.name)
		}
	}
	return o, nil
}

// Roles accepted in chat messages. "developer" (OpenAI's newer name for
// system instructions) is passed to the template as "system", which every
// template knows.
var roles = map[string]string{"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}

// Text returns message i's role (normalized) and its content as text:
// a string as is, null as "", and an array of text parts joined with
// newlines. Any other part type is a 400 naming it.
func (m *Message) Text(i int) (role, text string, err error) {
	role, ok := roles[m.Role]
	if !ok {
		return "", "", BadRequest(fmt.Sprintf("messages[%d].role", i), "messages[%d].role %q is not one of system, developer, user, assistant, tool", i, m.Role)
	}
	raw := bytes.TrimSpace(m.Content)
	if isNull(raw) {
		return role, "", nil
	}
	param := fmt.Sprintf("messages[%d].content", i)
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &text); err != nil {
			return "", "", BadRequest(param, "%s is not a valid string", param)
		}
		return role, text, nil
	}
	var parts []struct {
		Type string  `json:"type"`
		Text *string `json:"text"`
	}
	if raw[0] != '[' || json.Unmarshal(raw, &parts) != nil {
		return "", "", BadRequest(param, "%q must be a string or an array of content parts", param)
	}
	var b strings.Builder
	for j, p := range parts {
		if p.Type != "text" {
			return "", "", BadRequest(fmt.Sprintf("%s[%d].type", param, j), "%s[%d]: content part type %q is not supported (only \"text\")", param, j, p.Type)
		}
		if p.Text == nil {
			return "", "", BadRequest(fmt.Sprintf("%s[%d].text", param, j), "%s[%d] has no text", param, j)
		}
		if j > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(*p.Text)
	}
	return role, b.String(), nil
}
