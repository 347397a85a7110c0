// Package tgi is the wire format of Hugging Face Text Generation
// Inference's native API, as Spigot serves it: the body of POST /generate
// and POST /generate_stream ([Request]) and its validation into engine
// settings ([Request.Options]), TGI's error object ([Error], [ErrorFor]),
// and appenders for the responses and stream events.
//
// Shapes follow TGI's OpenAPI document (docs/openapi.json in
// huggingface/text-generation-inference: GenerateRequest,
// GenerateParameters, GenerateResponse, Details, StreamResponse,
// StreamDetails, Token, ErrorResponse). Parameters are validated as TGI
// validates them (temperature, top_k, top_p, typical_p and
// repetition_penalty strictly positive, top_p at most 1, max_new_tokens at
// least 1) and errors name the parameter in TGI's words ("Input validation
// error: `temperature` must be strictly positive", status 422).
//
// Not supported, and refused with a 422 that says so: best_of above 1,
// typical_p below 1, watermark, grammar, adapter_id and
// decoder_input_details (Spigot computes no prompt logprobs). Fields this
// package does not know are ignored, as TGI ignores them.
//
// As in TGI, sampling is on when do_sample is true or any of temperature,
// top_k or top_p changes the distribution (temperature other than 1, top_k
// set, top_p below 1); otherwise decoding is greedy. Every generated token
// carries its logprob.
package tgi

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"

	"github.com/spigot-llm/spigot/api/openai"
	"github.com/spigot-llm/spigot/engine"
)

// Limits and defaults.
const (
	// DefaultMaxNewTokens is max_new_tokens when a request omits it (TGI's
	// documented default).
	DefaultMaxNewTokens = 100
	// MaxStops is the most stop sequences a request may give. TGI's
	// default --max-stop-sequences is 4; Spigot allows as many as its
	// OpenAI API does.
	MaxStops = openai.MaxStops
	// MaxTopNTokens is the most top_n_tokens (TGI's --max-top-n-tokens
	// default is 5; Spigot's sampler reports up to 20).
	MaxTopNTokens = openai.MaxTopLogprobs
)

// Finish reasons, as TGI names them.
const (
	FinishLength       = "length"
	FinishEOSToken     = "eos_token"
	FinishStopSequence = "stop_sequence"
)

// Request is the body of POST /generate and POST /generate_stream.
type Request struct {
	Inputs     *string    `json:"inputs"`
	Parameters Parameters `json:"parameters"`
}

// Parameters is GenerateParameters. Pointer fields are nil when absent or
// null.
type Parameters struct {
	AdapterID           *string         `json:"adapter_id"`
	BestOf              *int            `json:"best_of"`
	DecoderInputDetails bool            `json:"decoder_input_details"`
	Details             bool            `json:"details"`
	DoSample            bool            `json:"do_sample"`
	FrequencyPenalty    *float64        `json:"frequency_penalty"`
	Grammar             json.RawMessage `json:"grammar"`
	MaxNewTokens        *int            `json:"max_new_tokens"`
	RepetitionPenalty   *float64        `json:"repetition_penalty"`
	ReturnFullText      *bool           `json:"return_full_text"`
	Seed                *uint64         `json:"seed"`
	Stop                []string        `json:"stop"`
	Temperature         *float64        `json:"temperature"`
	TopK                *int            `json:"top_k"`
	TopNTokens          *int            `json:"top_n_tokens"`
	TopP                *float64        `json:"top_p"`
	Truncate            *int            `json:"truncate"`
	TypicalP            *float64        `json:"typical_p"`
	Watermark           bool            `json:"watermark"`
}

// Options are a request's settings, validated.
type Options struct {
	// Request is the engine request without its prompt.
	Request engine.Request
	// Details asks for the details object (stream: on the last event).
	Details bool
	// ReturnFullText prepends the inputs to generated_text.
	ReturnFullText bool
	// Truncate, when positive, keeps only the last Truncate prompt tokens.
	Truncate int
	// Sampling is false for greedy decoding; the details report Seed only
	// when it is true (TGI reports no seed for greedy requests).
	Sampling bool
	Seed     uint64
}

// Decode parses a request body; its errors are 422 *Errors.
func Decode(data []byte) (*Request, error) {
	var r Request
	if err := openai.Decode(data, &r); err != nil {
		return nil, ErrorFor(err)
	}
	return &r, nil
}

// Options validates the request.
func (r *Request) Options() (Options, error) {
	p := &r.Parameters
	o := Options{Details: p.Details, ReturnFullText: p.ReturnFullText != nil && *p.ReturnFullText}
	if r.Inputs == nil || *r.Inputs == "" {
		return o, Invalid("`inputs` cannot be empty")
	}
	req := &o.Request
	req.Logprobs = true
	req.MaxTokens = DefaultMaxNewTokens
	if p.MaxNewTokens != nil {
		if *p.MaxNewTokens < 1 {
			return o, Invalid("`max_new_tokens` must be strictly positive")
		}
		req.MaxTokens = *p.MaxNewTokens
	}
	positive := func(name string, v *float64) error {
		if v != nil && !(*v > 0) || v != nil && math.IsInf(*v, 0) {
			return Invalid("`%s` must be strictly positive", name)
		}
		return nil
	}
	for _, f := range []struct {
		name string
		v    *float64
	}{{"temperature", p.Temperature}, {"repetition_penalty", p.RepetitionPenalty}, {"top_p", p.TopP}, {"typical_p", p.TypicalP}} {
		if err := positive(f.name, f.v); err != nil {
			return o, err
		}
	}
	if p.TopP != nil && *p.TopP > 1 {
		return o, Invalid("`top_p` must be > 0.0 and <= 1.0")
	}
	if p.TypicalP != nil && *p.TypicalP < 1 {
		return o, Invalid("`typical_p` is not supported (only 1.0, which turns it off)")
	}
	if p.TopK != nil && *p.TopK <= 0 {
		return o, Invalid("`top_k` must be strictly positive")
	}
	if p.FrequencyPenalty != nil && !(*p.FrequencyPenalty >= -2 && *p.FrequencyPenalty <= 2) {
		return o, Invalid("`frequency_penalty` must be >= -2.0 and <= 2.0")
	}
	if p.BestOf != nil && *p.BestOf != 1 {
		return o, Invalid("`best_of` must be 1: best-of sampling is not supported")
	}
	if p.TopNTokens != nil && (*p.TopNTokens < 0 || *p.TopNTokens > MaxTopNTokens) {
		return o, Invalid("`top_n_tokens` must be >= 0 and <= %d", MaxTopNTokens)
	}
	if p.Truncate != nil {
		if *p.Truncate < 0 {
			return o, Invalid("`truncate` must be strictly positive")
		}
		o.Truncate = *p.Truncate
	}
	if len(p.Stop) > MaxStops {
		return o, Invalid("`stop` supports up to %d stop sequences. Given: %d", MaxStops, len(p.Stop))
	}
	switch {
	case p.Watermark:
		return o, Invalid("`watermark` is not supported")
	case len(p.Grammar) > 0 && string(p.Grammar) != "null":
		return o, Invalid("`grammar` is not supported")
	case p.AdapterID != nil && *p.AdapterID != "":
		return o, Invalid("`adapter_id` is not supported: no adapters are loaded")
	case p.DecoderInputDetails:
		return o, Invalid("`decoder_input_details` is not supported (prompt logprobs are not computed)")
	}

	s := &req.Sample
	o.Sampling = p.DoSample ||
		p.Temperature != nil && *p.Temperature != 1 ||
		p.TopK != nil ||
		p.TopP != nil && *p.TopP < 1
	if o.Sampling {
		s.Temperature = 1
		if p.Temperature != nil {
			s.Temperature = float32(*p.Temperature)
		}
		if p.TopK != nil {
			s.TopK = *p.TopK
		}
		if p.TopP != nil {
			s.TopP = float32(*p.TopP)
			if s.TopP == 0 { // below float32's range: keep the top token, never turn top-p off
				s.TopP, s.TopK = 1, 1
			}
		}
	}
	if p.RepetitionPenalty != nil {
		s.RepeatPenalty = float32(*p.RepetitionPenalty)
	}
	if p.FrequencyPenalty != nil {
		s.FrequencyPenalty = float32(*p.FrequencyPenalty)
	}
	if p.Seed != nil {
		o.Seed = *p.Seed
	} else {
		o.Seed = rand.Uint64()
	}
	s.Seed = o.Seed
	if p.TopNTokens != nil {
		req.TopLogprobs = *p.TopNTokens
	}
	req.Stop = p.Stop
	return o, nil
}

// FinishReason returns TGI's finish reason for a stream that ended
// normally: eos_token when the model ended it (tokens, the engine's count,
// exceeds sent, the tokens that produced events), else stop_sequence or
// length from the engine's reason.
func FinishReason(reason string, tokens, sent int) string {
	switch {
	case tokens > sent:
		return FinishEOSToken
	case reason == engine.FinishStop:
		return FinishStopSequence
	}
	return FinishLength
}

// Error is TGI's error object, {"error": "...", "error_type": "..."}, with
// its HTTP status.
type Error struct {
	Status  int
	Message string
	Type    string // validation, overloaded, generation, unhealthy, authentication, canceled
}

func (e *Error) Error() string { return e.Message }

// Invalid returns a 422 validation error, worded as TGI words them.
func Invalid(format string, args ...any) *Error {
	return &Error{Status: http.StatusUnprocessableEntity, Type: "validation",
		Message: "Input validation error: " + fmt.Sprintf(format, args...)}
}

// ErrorFor maps any error to the TGI error sent for it. Statuses come from
// [openai.ErrorFor], the one place that classifies errors, and are then
// put in TGI's terms: bad requests are 422 validation errors, a full queue
// is 429 overloaded, failures while generating are 424 generation errors.
func ErrorFor(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	oe := openai.ErrorFor(err)
	switch oe.Status {
	case http.StatusBadRequest, http.StatusNotFound:
		return Invalid("%s", oe.Message)
	case http.StatusRequestEntityTooLarge:
		return &Error{Status: oe.Status, Type: "validation", Message: "Input validation error: " + oe.Message}
	case http.StatusTooManyRequests:
		return &Error{Status: oe.Status, Type: "overloaded", Message: "Model is overloaded: " + oe.Message}
	case http.StatusUnauthorized:
		return &Error{Status: oe.Status, Type: "authentication", Message: oe.Message}
	case http.StatusServiceUnavailable:
		return &Error{Status: oe.Status, Type: "unhealthy", Message: oe.Message}
	case openai.StatusClientClosed:
		return &Error{Status: oe.Status, Type: "canceled", Message: oe.Message}
	}
	if oe.Status < 500 {
		return &Error{Status: oe.Status, Type: "validation", Message: oe.Message}
	}
	return &Error{Status: http.StatusFailedDependency, Type: "generation", Message: "Request failed during generation: " + oe.Message}
}

// WriteError sends err as a JSON error response (before anything else was
// written; after that, append [AppendErrorEvent]).
func WriteError(w http.ResponseWriter, err error) *Error {
	e := ErrorFor(err)
	w.Header().Set("Content-Type", "application/json")
	if e.Status == http.StatusTooManyRequests || e.Status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	w.WriteHeader(e.Status)
	w.Write(append(AppendError(make([]byte, 0, 128), e), '\n'))
	return e
}

// AppendError appends e's JSON.
func AppendError(dst []byte, e *Error) []byte {
	dst = append(dst, `{"error":`...)
	dst = openai.AppendString(dst, e.Message)
	dst = append(dst, `,"error_type":`...)
	dst = openai.AppendString(dst, e.Type)
	return append(dst, '}')
}

// AppendErrorEvent appends e as a stream event, as TGI sends an error
// that happens while streaming.
func AppendErrorEvent(dst []byte, e *Error) []byte {
	dst = append(dst, "data: "...)
	return append(AppendError(dst, e), "\n\n"...)
}

// Token is one token as TGI reports it. NoLogprob sends "logprob": null
// (a token whose logprob was not computed, such as the end-of-sequence
// token that ends a stream).
type Token struct {
	ID        int32
	Text      string
	Logprob   float32
	NoLogprob bool
	Special   bool
}

// TokenOf returns the token of an engine event.
func TokenOf(ev *engine.Event) Token {
	return Token{ID: ev.Token, Text: ev.Text, Logprob: ev.Logprob}
}

// AppendToken appends {"id","text","logprob","special"}.
func AppendToken(dst []byte, t Token) []byte {
	dst = append(dst, `{"id":`...)
	dst = strconv.AppendInt(dst, int64(t.ID), 10)
	dst = append(dst, `,"text":`...)
	dst = openai.AppendString(dst, t.Text)
	dst = append(dst, `,"logprob":`...)
	if t.NoLogprob {
		dst = append(dst, "null"...)
	} else {
		dst = openai.AppendLogprob(dst, t.Logprob)
	}
	dst = append(dst, `,"special":`...)
	dst = strconv.AppendBool(dst, t.Special)
	return append(dst, '}')
}

func appendTokens(dst []byte, ts []Token) []byte {
	dst = append(dst, '[')
	for i, t := range ts {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendToken(dst, t)
	}
	return append(dst, ']')
}

// TopTokens converts an event's top logprobs, piece names the tokens.
func TopTokens(dst []Token, ev *engine.Event, piece func(int32) string) []Token {
	for _, t := range ev.Top {
		dst = append(dst, Token{ID: t.ID, Text: piece(t.ID), Logprob: t.Logprob})
	}
	return dst
}

// End is what the last event of a stream carries.
type End struct {
	GeneratedText string
	// Details is sent when the request asked for them.
	Details         bool
	FinishReason    string
	GeneratedTokens int
	InputLength     int
	Seed            *uint64
}

// AppendEvent appends one stream event (StreamResponse) for the token at
// index (1-based, as TGI counts), with its top tokens when the request
// asked for top_n_tokens (top not nil). end is nil except on the last
// event.
func AppendEvent(dst []byte, index int, tok Token, top []Token, end *End) []byte {
	dst = append(dst, `data: {"index":`...)
	dst = strconv.AppendInt(dst, int64(index), 10)
	dst = append(dst, `,"token":`...)
	dst = AppendToken(dst, tok)
	if top != nil {
		dst = append(dst, `,"top_tokens":`...)
		dst = appendTokens(dst, top)
	}
	dst = append(dst, `,"generated_text":`...)
	if end == nil {
		return append(dst, `null,"details":null}`+"\n\n"...)
	}
	dst = openai.AppendString(dst, end.GeneratedText)
	dst = append(dst, `,"details":`...)
	if !end.Details {
		return append(dst, "null}\n\n"...)
	}
	dst = append(dst, `{"finish_reason":`...)
	dst = openai.AppendString(dst, end.FinishReason)
	dst = append(dst, `,"generated_tokens":`...)
	dst = strconv.AppendInt(dst, int64(end.GeneratedTokens), 10)
	dst = append(dst, `,"seed":`...)
	dst = appendSeed(dst, end.Seed)
	dst = append(dst, `,"input_length":`...)
	dst = strconv.AppendInt(dst, int64(end.InputLength), 10)
	return append(dst, "}}\n\n"...)
}

func appendSeed(dst []byte, seed *uint64) []byte {
	if seed == nil {
		return append(dst, "null"...)
	}
	return strconv.AppendUint(dst, *seed, 10)
}

// Response is the whole answer of POST /generate.
type Response struct {
	GeneratedText string
	Details       bool // send the details object
	FinishReason  string
	Seed          *uint64
	Tokens        []Token   // generated tokens, the end-of-sequence token included
	TopTokens     [][]Token // per token, when top_n_tokens was asked for
}

// AppendResponse appends GenerateResponse's JSON.
func AppendResponse(dst []byte, r *Response) []byte {
	dst = append(dst, `{"generated_text":`...)
	dst = openai.AppendString(dst, r.GeneratedText)
	if !r.Details {
		return append(dst, '}')
	}
	dst = append(dst, `,"details":{"finish_reason":`...)
	dst = openai.AppendString(dst, r.FinishReason)
	dst = append(dst, `,"generated_tokens":`...)
	dst = strconv.AppendInt(dst, int64(len(r.Tokens)), 10)
	dst = append(dst, `,"seed":`...)
	dst = appendSeed(dst, r.Seed)
	dst = append(dst, `,"prefill":[],"tokens":`...)
	dst = appendTokens(dst, r.Tokens)
	if r.TopTokens != nil {
		dst = append(dst, `,"top_tokens":[`...)
		for i, ts := range r.TopTokens {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendTokens(dst, ts)
		}
		dst = append(dst, ']')
	}
	return append(dst, "}}"...)
}
