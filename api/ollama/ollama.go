// Package ollama is the wire format of Ollama's native API, as Spigot
// serves it: the bodies of POST /api/generate and POST /api/chat and their
// options map ([ParseOptions]), the NDJSON stream chunks and final
// objects, the model listings (/api/tags, /api/show, /api/ps,
// /api/version) and Ollama's error object, {"error": "..."}.
//
// Shapes follow Ollama's docs/api.md and the Go types of its api package
// (github.com/ollama/ollama/api: GenerateResponse, ChatResponse, Metrics,
// ListModelResponse, ShowResponse, ProcessModelResponse, ModelDetails),
// whose client the server's tests use. Sampling defaults are Ollama's
// (temperature 0.8, top_k 40, top_p 0.9, repeat_penalty 1.1,
// repeat_last_n 64), so that tools written for Ollama behave the same.
//
// Not supported, and refused with a 400 that says so: images, format
// (JSON mode and schemas), tools, suffix, a custom template and think.
// Options Spigot has no use for (num_gpu, num_thread, use_mmap, mirostat,
// ...) are accepted and ignored, as Ollama ignores options a runner does
// not know.
package ollama

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/spigot-llm/spigot/api/openai"
	"github.com/spigot-llm/spigot/engine"
)

// Version is what GET /api/version reports: the Ollama release whose API
// (and Go client) Spigot's is tested against.
const Version = "0.17.4"

// Done reasons.
const (
	DoneStop   = "stop"
	DoneLength = "length"
	DoneLoad   = "load" // an empty prompt or no messages: nothing to generate
)

// GenerateRequest is the body of POST /api/generate.
type GenerateRequest struct {
	Model     string                     `json:"model"`
	Prompt    string                     `json:"prompt"`
	Suffix    string                     `json:"suffix"`
	System    string                     `json:"system"`
	Template  string                     `json:"template"`
	Context   []int64                    `json:"context"`
	Stream    *bool                      `json:"stream"`
	Raw       bool                       `json:"raw"`
	Format    json.RawMessage            `json:"format"`
	Images    []json.RawMessage          `json:"images"`
	KeepAlive json.RawMessage            `json:"keep_alive"`
	Think     json.RawMessage            `json:"think"`
	Options   map[string]json.RawMessage `json:"options"`
}

// ChatRequest is the body of POST /api/chat.
type ChatRequest struct {
	Model     string                     `json:"model"`
	Messages  []Message                  `json:"messages"`
	Stream    *bool                      `json:"stream"`
	Format    json.RawMessage            `json:"format"`
	Tools     json.RawMessage            `json:"tools"`
	KeepAlive json.RawMessage            `json:"keep_alive"`
	Think     json.RawMessage            `json:"think"`
	Options   map[string]json.RawMessage `json:"options"`
}

// Message is one chat message.
type Message struct {
	Role      string            `json:"role"`
	Content   string            `json:"content"`
	Images    []json.RawMessage `json:"images,omitempty"`
	ToolCalls json.RawMessage   `json:"tool_calls,omitempty"`
	Thinking  string            `json:"thinking,omitempty"`
	ToolName  string            `json:"tool_name,omitempty"`
}

// Error is Ollama's error object with its HTTP status.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string { return e.Message }

// BadRequest returns a 400 error.
func BadRequest(format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Message: fmt.Sprintf(format, args...)}
}

// ModelNotFound is Ollama's 404 for a model it does not have.
func ModelNotFound(name string) *Error {
	return &Error{Status: http.StatusNotFound, Message: fmt.Sprintf("model %q not found, try pulling it first", name)}
}

// ErrorFor maps any error to the Ollama error sent for it, with the status
// [openai.ErrorFor] (the one place that classifies errors) gives it.
func ErrorFor(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	oe := openai.ErrorFor(err)
	return &Error{Status: oe.Status, Message: oe.Message}
}

// WriteError sends err as {"error": "..."} before anything else was
// written; after that, append [AppendErrorLine].
func WriteError(w http.ResponseWriter, err error) *Error {
	e := ErrorFor(err)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	if e.Status == http.StatusTooManyRequests || e.Status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	w.WriteHeader(e.Status)
	w.Write(AppendErrorLine(make([]byte, 0, 128), e))
	return e
}

// AppendErrorLine appends {"error": "..."} and a newline, as Ollama ends a
// stream that fails.
func AppendErrorLine(dst []byte, e *Error) []byte {
	dst = append(dst, `{"error":`...)
	dst = openai.AppendString(dst, e.Message)
	return append(dst, "}\n"...)
}

// Decode parses a request body into v; its errors are 400 *Errors.
func Decode(data []byte, v any) error {
	if err := openai.Decode(data, v); err != nil {
		return ErrorFor(err)
	}
	return nil
}

// Unsupported returns an error for a request field Spigot does not
// support, or nil when raw is absent, null, false, "" or empty.
func Unsupported(name string, raw json.RawMessage) error {
	switch string(bytes.TrimSpace(raw)) {
	case "", "null", "false", `""`, "[]", "{}":
		return nil
	}
	return BadRequest("%s is not supported", name)
}

// Options are a request's settings from its options map, validated.
type Options struct {
	// Request is the engine request without its prompt.
	Request engine.Request
	// NumCtx is num_ctx, 0 when absent; see [Options.Fit].
	NumCtx int
}

// Ollama's default sampling settings (api.DefaultOptions).
const (
	defaultTemperature   = 0.8
	defaultTopK          = 40
	defaultTopP          = 0.9
	defaultRepeatPenalty = 1.1
	defaultRepeatLastN   = 64
)

// ignored lists the options Ollama accepts that mean nothing to Spigot
// (runner, hardware and samplers it does not have).
var ignored = map[string]bool{
	"num_keep": true, "typical_p": true, "mirostat": true, "mirostat_tau": true, "mirostat_eta": true,
	"penalize_newline": true, "numa": true, "num_batch": true, "num_gpu": true, "main_gpu": true,
	"low_vram": true, "vocab_only": true, "use_mmap": true, "use_mlock": true, "num_thread": true,
	"tfs_z": true, "f16_kv": true, "logits_all": true, "embedding_only": true, "rope_frequency_base": true,
	"rope_frequency_scale": true, "num_gqa": true,
}

// ParseOptions validates an options map. Unknown keys are ignored, as
// Ollama ignores them; a known key with a value of the wrong type or out
// of range is a 400 naming the option.
func ParseOptions(opts map[string]json.RawMessage) (Options, error) {
	o := Options{}
	r := &o.Request
	s := &r.Sample
	s.Temperature, s.TopK, s.TopP, s.RepeatPenalty, s.RepeatLastN = defaultTemperature, defaultTopK, defaultTopP, defaultRepeatPenalty, defaultRepeatLastN
	seeded := false
	for key, raw := range opts {
		if ignored[key] {
			continue
		}
		if string(bytes.TrimSpace(raw)) == "null" {
			continue
		}
		var err error
		switch key {
		case "num_predict":
			var n int
			if n, err = integer(key, raw); err == nil {
				switch {
				case n == -1 || n == -2:
					r.MaxTokens = 0 // until the end or the context is full
				case n > 0:
					r.MaxTokens = n
				default:
					err = BadRequest("option %q is %d; it must be positive, or -1 (no limit) or -2 (fill the context)", key, n)
				}
			}
		case "num_ctx":
			if o.NumCtx, err = integer(key, raw); err == nil && o.NumCtx < 1 {
				err = BadRequest("option %q is %d; it must be positive", key, o.NumCtx)
			}
		case "seed":
			var n int
			if n, err = integer(key, raw); err == nil && n >= 0 {
				s.Seed, seeded = uint64(n), true
			}
		case "top_k":
			if s.TopK, err = integer(key, raw); err == nil && s.TopK < 0 {
				err = BadRequest("option %q is %d; it must be at least 0 (0 turns it off)", key, s.TopK)
			}
		case "repeat_last_n":
			if s.RepeatLastN, err = integer(key, raw); err == nil && s.RepeatLastN < -1 {
				err = BadRequest("option %q is %d; it must be -1 (the whole context), 0 (off) or positive", key, s.RepeatLastN)
			}
		case "temperature":
			err = number(key, raw, 0, math.Inf(1), &s.Temperature)
		case "top_p":
			err = number(key, raw, 0, 1, &s.TopP)
		case "min_p":
			err = number(key, raw, 0, 1, &s.MinP)
		case "repeat_penalty":
			err = number(key, raw, 0, math.Inf(1), &s.RepeatPenalty)
		case "presence_penalty":
			err = number(key, raw, math.Inf(-1), math.Inf(1), &s.PresencePenalty)
		case "frequency_penalty":
			err = number(key, raw, math.Inf(-1), math.Inf(1), &s.FrequencyPenalty)
		case "stop":
			r.Stop, err = stops(raw)
		}
		if err != nil {
			return o, err
		}
	}
	if s.RepeatLastN == 0 {
		// Ollama's (llama.cpp's) repeat_last_n 0 turns the penalties off;
		// the sampler's 0 means its default window.
		s.RepeatPenalty, s.PresencePenalty, s.FrequencyPenalty = 1, 0, 0
	}
	if s.TopP == 0 {
		s.TopP, s.TopK = 1, 1 // only the most likely token, as llama.cpp's top_p 0
	}
	if !seeded {
		s.Seed = rand.Uint64()
	}
	return o, nil
}

// integer parses an integer option; like Ollama, it accepts a number with
// no fractional part written as a float (1.0).
func integer(key string, raw json.RawMessage) (int, error) {
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, BadRequest("option %q must be an integer, not %s", key, short(raw))
	}
	return int(f), nil
}

func number(key string, raw json.RawMessage, lo, hi float64, dst *float32) error {
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil {
		return BadRequest("option %q must be a number, not %s", key, short(raw))
	}
	if !(f >= lo && f <= hi) || math.IsInf(float64(float32(f)), 0) {
		switch {
		case math.IsInf(lo, -1):
			return BadRequest("option %q is %g; it must be finite", key, f)
		case math.IsInf(hi, 1):
			return BadRequest("option %q is %g; it must be at least %g", key, f, lo)
		}
		return BadRequest("option %q is %g; it must be between %g and %g", key, f, lo, hi)
	}
	*dst = float32(f)
	return nil
}

func stops(raw json.RawMessage) ([]string, error) {
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []string{one}, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, BadRequest(`option "stop" must be a string or an array of strings, not %s`, short(raw))
	}
	if len(list) > openai.MaxStops {
		return nil, BadRequest(`option "stop" has %d strings; at most %d are allowed`, len(list), openai.MaxStops)
	}
	return list, nil
}

// short quotes the start of a raw value for an error message.
func short(raw json.RawMessage) string {
	s := string(bytes.TrimSpace(raw))
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return s
}

// Fit applies num_ctx to a prompt of n tokens on an engine whose context
// is ctx: with num_ctx below ctx, the prompt must fit in num_ctx and
// generation stops when prompt and output fill it. A num_ctx above the
// engine's context cannot be had; the engine's is used.
func (o *Options) Fit(n, ctx int) error {
	if o.NumCtx == 0 || o.NumCtx >= ctx {
		return nil
	}
	if n >= o.NumCtx {
		return BadRequest("the prompt is %d tokens, but num_ctx is %d; raise num_ctx (at most %d) or shorten the prompt", n, o.NumCtx, ctx)
	}
	left := o.NumCtx - n
	if o.Request.MaxTokens == 0 || o.Request.MaxTokens > left {
		o.Request.MaxTokens = left
	}
	return nil
}

// appendHead appends {"model":…,"created_at":…, the start of every
// response object.
func appendHead(dst []byte, model string, at time.Time) []byte {
	dst = append(dst, `{"model":`...)
	dst = openai.AppendString(dst, model)
	dst = append(dst, `,"created_at":"`...)
	dst = at.AppendFormat(dst, time.RFC3339Nano)
	return append(dst, '"')
}

// AppendGenerateChunk appends a /api/generate stream line carrying text.
func AppendGenerateChunk(dst []byte, model string, at time.Time, text string) []byte {
	dst = appendHead(dst, model, at)
	dst = append(dst, `,"response":`...)
	dst = openai.AppendString(dst, text)
	return append(dst, `,"done":false}`+"\n"...)
}

// AppendChatChunk appends a /api/chat stream line carrying text.
func AppendChatChunk(dst []byte, model string, at time.Time, text string) []byte {
	dst = appendHead(dst, model, at)
	dst = append(dst, `,"message":{"role":"assistant","content":`...)
	dst = openai.AppendString(dst, text)
	return append(dst, `},"done":false}`+"\n"...)
}

// Metrics are the timings and counts of a finished request. Zero fields
// are left out, as Ollama leaves them out.
type Metrics struct {
	TotalDuration      time.Duration `json:"total_duration,omitempty"`
	LoadDuration       time.Duration `json:"load_duration,omitempty"`
	PromptEvalCount    int           `json:"prompt_eval_count,omitempty"`
	PromptEvalDuration time.Duration `json:"prompt_eval_duration,omitempty"`
	EvalCount          int           `json:"eval_count,omitempty"`
	EvalDuration       time.Duration `json:"eval_duration,omitempty"`
}

// GenerateResponse is the last line of a /api/generate stream, or the
// whole answer with "stream": false.
type GenerateResponse struct {
	Model      string    `json:"model"`
	CreatedAt  time.Time `json:"created_at"`
	Response   string    `json:"response"`
	Done       bool      `json:"done"`
	DoneReason string    `json:"done_reason,omitempty"`
	Context    []int32   `json:"context,omitempty"`
	Metrics
}

// ChatResponse is the last line of a /api/chat stream, or the whole
// answer.
type ChatResponse struct {
	Model      string    `json:"model"`
	CreatedAt  time.Time `json:"created_at"`
	Message    Message   `json:"message"`
	Done       bool      `json:"done"`
	DoneReason string    `json:"done_reason,omitempty"`
	Metrics
}

// DoneReason returns Ollama's done_reason for the engine's finish reason.
func DoneReason(finish string) string {
	if finish == engine.FinishLength {
		return DoneLength
	}
	return DoneStop
}

// MetricsOf returns a finished request's metrics: total is the time since
// the request came in. Ollama's load_duration (the wait for a loaded
// model) is the time the request queued.
func MetricsOf(res engine.Result, total time.Duration) Metrics {
	return Metrics{
		TotalDuration:      total,
		LoadDuration:       res.QueueTime,
		PromptEvalCount:    res.PromptTokens,
		PromptEvalDuration: res.TTFT,
		EvalCount:          res.Tokens,
		EvalDuration:       max(res.Elapsed-res.TTFT, 0),
	}
}

// ModelDetails is the details object of the model listings.
type ModelDetails struct {
	ParentModel       string   `json:"parent_model"`
	Format            string   `json:"format"`
	Family            string   `json:"family"`
	Families          []string `json:"families"`
	ParameterSize     string   `json:"parameter_size"`
	QuantizationLevel string   `json:"quantization_level"`
}

// ListModel is one model of GET /api/tags.
type ListModel struct {
	Name       string       `json:"name"`
	Model      string       `json:"model"`
	ModifiedAt time.Time    `json:"modified_at"`
	Size       int64        `json:"size"`
	Digest     string       `json:"digest"`
	Details    ModelDetails `json:"details"`
}

// ListResponse is the body of GET /api/tags.
type ListResponse struct {
	Models []ListModel `json:"models"`
}

// ProcessModel is one model of GET /api/ps.
type ProcessModel struct {
	Name          string       `json:"name"`
	Model         string       `json:"model"`
	Size          int64        `json:"size"`
	Digest        string       `json:"digest"`
	Details       ModelDetails `json:"details"`
	ExpiresAt     time.Time    `json:"expires_at"`
	SizeVRAM      int64        `json:"size_vram"`
	ContextLength int          `json:"context_length"`
}

// ProcessResponse is the body of GET /api/ps.
type ProcessResponse struct {
	Models []ProcessModel `json:"models"`
}

// ShowRequest is the body of POST /api/show ("name" is the older
// spelling of "model").
type ShowRequest struct {
	Model   string `json:"model"`
	Name    string `json:"name"`
	Verbose bool   `json:"verbose"`
}

// ShowResponse is the body POST /api/show answers.
type ShowResponse struct {
	Modelfile    string         `json:"modelfile,omitempty"`
	Parameters   string         `json:"parameters,omitempty"`
	Template     string         `json:"template,omitempty"`
	Details      ModelDetails   `json:"details"`
	ModelInfo    map[string]any `json:"model_info"`
	Capabilities []string       `json:"capabilities,omitempty"`
	ModifiedAt   time.Time      `json:"modified_at"`
}

// VersionResponse is the body of GET /api/version.
type VersionResponse struct {
	Version string `json:"version"`
}

// Name returns the name Ollama would list a model id under: with a tag,
// ":latest" when it has none.
func Name(id string) string {
	if i := strings.LastIndexByte(id, ':'); i >= 0 && !strings.Contains(id[i:], "/") {
		return id
	}
	return id + ":latest"
}

// ParameterSize formats a parameter count as Ollama does ("8.0B",
// "260K").
func ParameterSize(n int64) string {
	switch {
	case n >= 1e9:
		return strconv.FormatFloat(float64(n)/1e9, 'f', 1, 64) + "B"
	case n >= 1e6:
		return strconv.FormatFloat(float64(n)/1e6, 'f', 1, 64) + "M"
	case n >= 1e3:
		return strconv.FormatFloat(float64(n)/1e3, 'f', 0, 64) + "K"
	}
	return strconv.FormatInt(n, 10)
}
