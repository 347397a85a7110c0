package openai

import (
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/spigot-llm/spigot/engine"
	"github.com/spigot-llm/spigot/engine/sample"
)

// This file is the hot path of streaming: an Encoder appends each chunk to
// a buffer the caller reuses, escaping text straight from the engine's
// events. Appending a chunk allocates nothing once the buffer has grown
// (TestEncoderAllocs).

// Kind says which endpoint a response belongs to.
type Kind int

// The two generation endpoints.
const (
	Completion Kind = iota // POST /v1/completions: text_completion objects
	Chat                   // POST /v1/chat/completions: chat.completion(.chunk) objects
)

// Usage is OpenAI's usage object.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// EncoderConfig describes the response an Encoder writes.
type EncoderConfig struct {
	Kind    Kind
	ID      string // "chatcmpl-…" or "cmpl-…"
	Created int64  // Unix seconds
	Model   string
	Choices int // number of choices (n times the number of prompts)
	// Logprobs includes a logprobs object for every token (chat
	// logprobs=true; completions logprobs=N).
	Logprobs bool
	// IncludeUsage is stream_options.include_usage: every chunk carries
	// "usage":null and AppendUsage adds the final usage chunk.
	IncludeUsage bool
	// Piece returns a token's text, for the logprobs objects.
	Piece func(id int32) string
	// TokenIDs is the return_token_ids extension (vLLM's): every choice
	// of a chunk or response carries "token_ids", the ids of the tokens
	// it holds, and a choice's first chunk (or the response's choice)
	// carries "prompt_token_ids", PromptIDs[index].
	TokenIDs  bool
	PromptIDs [][]int32
}

// Encoder appends the JSON of one response — its stream chunks as SSE
// events, or the whole response — to buffers the caller owns. It keeps the
// text offsets of the legacy completions logprobs, so it belongs to one
// response and one goroutine.
type Encoder struct {
	cfg       EncoderConfig
	chunkHead []byte // {"id":…,"object":…,"created":…,"model":…,"choices":[
	fullHead  []byte // the same for the whole (non-streamed) response
	offsets   []int  // per choice: text_offset of the next token (completions)
	started   []bool // per choice: a chunk was written (TokenIDs: the prompt ids went out)
}

// NewEncoder returns an Encoder for the response cfg describes.
func NewEncoder(cfg EncoderConfig) *Encoder {
	e := &Encoder{cfg: cfg, offsets: make([]int, max(cfg.Choices, 1)), started: make([]bool, max(cfg.Choices, 1))}
	chunkObj, fullObj := "text_completion", "text_completion"
	if cfg.Kind == Chat {
		chunkObj, fullObj = "chat.completion.chunk", "chat.completion"
	}
	e.chunkHead = e.head(chunkObj)
	e.fullHead = e.head(fullObj)
	return e
}

func (e *Encoder) head(object string) []byte {
	b := append([]byte(nil), `{"id":`...)
	b = appendString(b, e.cfg.ID)
	b = append(b, `,"object":`...)
	b = appendString(b, object)
	b = append(b, `,"created":`...)
	b = strconv.AppendInt(b, e.cfg.Created, 10)
	b = append(b, `,"model":`...)
	b = appendString(b, e.cfg.Model)
	return append(b, `,"choices":[`...)
}

// chunkStart opens an SSE event holding a chunk with one choice.
func (e *Encoder) chunkStart(dst []byte, index int) []byte {
	dst = append(dst, "data: "...)
	dst = append(dst, e.chunkHead...)
	dst = append(dst, `{"index":`...)
	return strconv.AppendInt(dst, int64(index), 10)
}

// chunkEnd closes the choice, the chunk and the event.
func (e *Encoder) chunkEnd(dst []byte) []byte {
	dst = append(dst, "}]"...)
	if e.cfg.IncludeUsage {
		dst = append(dst, `,"usage":null`...)
	}
	return append(dst, "}\n\n"...)
}

// AppendRole appends the first chunk of a chat choice, whose delta is
// {"role":"assistant","content":""}. It appends nothing for completions.
func (e *Encoder) AppendRole(dst []byte, index int) []byte {
	if e.cfg.Kind != Chat {
		return dst
	}
	dst = e.chunkStart(dst, index)
	dst = append(dst, `,"delta":{"role":"assistant","content":""}`...)
	if e.cfg.TokenIDs {
		dst = e.appendIDs(dst, index, nil)
	}
	dst = append(dst, `,"logprobs":null,"finish_reason":null`...)
	return e.chunkEnd(dst)
}

// AppendText appends a chunk carrying text for choice index (a chat
// delta's content, or a completion's text). When the response has logprobs
// the chunk carries those of the tokens in lp, usually the one event that
// released the text (evs[i:i+1]); lp is nil for echoed prompt text and for
// text flushed at the end (Token -1).
func (e *Encoder) AppendText(dst []byte, index int, text string, lp []engine.Event) []byte {
	return e.AppendTextFinish(dst, index, text, lp, "")
}

// AppendTextFinish is AppendText for the choice's last chunk when it
// carries text: finish_reason is reason instead of null (reason "" gives
// null, as AppendText).
func (e *Encoder) AppendTextFinish(dst []byte, index int, text string, lp []engine.Event, reason string) []byte {
	return e.AppendChunk(dst, index, text, lp, reason, nil)
}

// AppendChunk is AppendTextFinish for a response with TokenIDs: the chunk
// carries ids, the ids of the tokens whose text it holds (all of them,
// those whose text was held back before included), and, when it is the
// choice's first, the prompt's ids. Without TokenIDs, ids is ignored.
func (e *Encoder) AppendChunk(dst []byte, index int, text string, lp []engine.Event, reason string, ids []int32) []byte {
	dst = e.chunkStart(dst, index)
	if e.cfg.Kind == Chat {
		dst = append(dst, `,"delta":{"content":`...)
		dst = appendString(dst, text)
		dst = append(dst, '}')
	} else {
		dst = append(dst, `,"text":`...)
		dst = appendString(dst, text)
	}
	if e.cfg.TokenIDs {
		dst = e.appendIDs(dst, index, ids)
	}
	dst = append(dst, `,"logprobs":`...)
	dst = e.AppendLogprobs(dst, index, text, lp)
	if reason == "" {
		dst = append(dst, `,"finish_reason":null`...)
	} else {
		dst = append(dst, `,"finish_reason":`...)
		dst = appendString(dst, reason)
	}
	return e.chunkEnd(dst)
}

// AppendFinish appends the last chunk of choice index: an empty delta (or
// text) and the finish reason.
func (e *Encoder) AppendFinish(dst []byte, index int, reason string) []byte {
	return e.AppendFinishIDs(dst, index, reason, nil)
}

// AppendFinishIDs is AppendFinish carrying ids, the ids of tokens whose
// text was held back and never sent (a stop string's), when the response
// has TokenIDs.
func (e *Encoder) AppendFinishIDs(dst []byte, index int, reason string, ids []int32) []byte {
	dst = e.chunkStart(dst, index)
	if e.cfg.Kind == Chat {
		dst = append(dst, `,"delta":{}`...)
	} else {
		dst = append(dst, `,"text":""`...)
	}
	if e.cfg.TokenIDs {
		dst = e.appendIDs(dst, index, ids)
	}
	dst = append(dst, `,"logprobs":null,"finish_reason":`...)
	dst = appendString(dst, reason)
	return e.chunkEnd(dst)
}

// PromptIDsSent records that choice index's prompt ids went out before:
// a resumed stream's encoder sends them only once.
func (e *Encoder) PromptIDsSent(index int) {
	if index >= 0 && index < len(e.started) {
		e.started[index] = true
	}
}

// appendIDs appends a choice's "token_ids" (ids) and, in the choice's
// first chunk, its "prompt_token_ids".
func (e *Encoder) appendIDs(dst []byte, index int, ids []int32) []byte {
	if index < len(e.started) && !e.started[index] {
		e.started[index] = true
		if index < len(e.cfg.PromptIDs) {
			dst = append(dst, `,"prompt_token_ids":`...)
			dst = appendIDList(dst, e.cfg.PromptIDs[index])
		}
	}
	dst = append(dst, `,"token_ids":`...)
	return appendIDList(dst, ids)
}

// appendIDList appends ids as a JSON array.
func appendIDList(dst []byte, ids []int32) []byte {
	dst = append(dst, '[')
	for i, id := range ids {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = strconv.AppendInt(dst, int64(id), 10)
	}
	return append(dst, ']')
}

// AppendUsage appends the chunk that stream_options.include_usage asks for:
// no choices, and the usage of the whole request.
func (e *Encoder) AppendUsage(dst []byte, u Usage) []byte {
	dst = append(dst, "data: "...)
	dst = append(dst, e.chunkHead...)
	dst = append(dst, `],"usage":`...)
	dst = appendUsage(dst, u)
	return append(dst, "}\n\n"...)
}

// AppendLogprobs appends the logprobs object of a chunk of choice index
// that carries text released by the tokens in lp, exactly as
// AppendTextFinish writes it: chat's {"content":[…],"refusal":null}, the
// completions object (advancing its text offsets), or null (no logprobs
// asked for, or text without a token: lp nil or lp[0].Token < 0). It lets
// other encodings of a stream (Spigot's WebSocket messages) carry the same
// objects as the OpenAI chunks.
func (e *Encoder) AppendLogprobs(dst []byte, index int, text string, lp []engine.Event) []byte {
	switch {
	case !e.cfg.Logprobs || len(lp) == 0 || lp[0].Token < 0:
		if e.cfg.Kind == Completion && index < len(e.offsets) {
			e.offsets[index] += utf8.RuneCountInString(text)
		}
		return append(dst, "null"...)
	case e.cfg.Kind == Chat:
		return e.appendChatLogprobs(dst, lp)
	}
	dst, e.offsets[index] = e.appendLegacyLogprobs(dst, lp, e.offsets[index])
	return dst
}

// AppendUsageObject appends OpenAI's usage object,
// {"prompt_tokens","completion_tokens","total_tokens"}.
func AppendUsageObject(dst []byte, u Usage) []byte { return appendUsage(dst, u) }

// AppendErrorEvent appends an SSE event carrying an error object: how an
// error is reported once the stream has begun.
func AppendErrorEvent(dst []byte, err *Error) []byte {
	dst = append(dst, "data: "...)
	dst = AppendError(dst, err)
	return append(dst, "\n\n"...)
}

// AppendDone appends the event that ends every stream, data: [DONE].
func AppendDone(dst []byte) []byte { return append(dst, "data: [DONE]\n\n"...) }

// Choice is one finished choice of a whole (non-streamed) response.
type Choice struct {
	Text   string         // the whole text, echoed prompt included
	Echo   string         // the echoed prompt text at the start of Text, if any
	Events []engine.Event // the generated tokens, for logprobs
	Finish string
	// TokenIDs are the generated tokens' ids, written as "token_ids"
	// (with the prompt's, "prompt_token_ids") when the encoder has
	// TokenIDs.
	TokenIDs []int32
}

// AppendResponse appends the whole response: every choice, then usage.
func (e *Encoder) AppendResponse(dst []byte, choices []Choice, u Usage) []byte {
	dst = append(dst, e.fullHead...)
	for i := range choices {
		c := &choices[i]
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"index":`...)
		dst = strconv.AppendInt(dst, int64(i), 10)
		if e.cfg.Kind == Chat {
			dst = append(dst, `,"message":{"role":"assistant","content":`...)
			dst = appendString(dst, c.Text)
			dst = append(dst, '}')
		} else {
			dst = append(dst, `,"text":`...)
			dst = appendString(dst, c.Text)
		}
		if e.cfg.TokenIDs {
			if i < len(e.started) {
				e.started[i] = false
			}
			dst = e.appendIDs(dst, i, c.TokenIDs)
		}
		dst = append(dst, `,"logprobs":`...)
		evs := tokenEvents(c.Events)
		switch {
		case !e.cfg.Logprobs:
			dst = append(dst, "null"...)
		case e.cfg.Kind == Chat:
			dst = e.appendChatLogprobs(dst, evs)
		default:
			dst, _ = e.appendLegacyLogprobs(dst, evs, utf8.RuneCountInString(c.Echo))
		}
		dst = append(dst, `,"finish_reason":`...)
		dst = appendString(dst, c.Finish)
		dst = append(dst, '}')
	}
	dst = append(dst, `],"usage":`...)
	dst = appendUsage(dst, u)
	return append(dst, '}')
}

// tokenEvents drops the events of text flushed at the end (Token -1), which
// have no logprobs.
func tokenEvents(evs []engine.Event) []engine.Event {
	for i, ev := range evs {
		if ev.Token < 0 {
			out := append([]engine.Event(nil), evs[:i]...)
			for _, ev := range evs[i+1:] {
				if ev.Token >= 0 {
					out = append(out, ev)
				}
			}
			return out
		}
	}
	return evs
}

func appendUsage(dst []byte, u Usage) []byte {
	dst = append(dst, `{"prompt_tokens":`...)
	dst = strconv.AppendInt(dst, int64(u.PromptTokens), 10)
	dst = append(dst, `,"completion_tokens":`...)
	dst = strconv.AppendInt(dst, int64(u.CompletionTokens), 10)
	dst = append(dst, `,"total_tokens":`...)
	dst = strconv.AppendInt(dst, int64(u.TotalTokens), 10)
	return append(dst, '}')
}

// appendChatLogprobs appends a chat logprobs object:
// {"content":[{"token","logprob","bytes","top_logprobs":[…]}…],"refusal":null}.
func (e *Encoder) appendChatLogprobs(dst []byte, evs []engine.Event) []byte {
	dst = append(dst, `{"content":[`...)
	for i := range evs {
		if i > 0 {
			dst = append(dst, ',')
		}
		ev := &evs[i]
		dst = e.appendChatToken(dst, ev.Token, ev.Logprob)
		dst = dst[:len(dst)-1] // reopen the object
		dst = append(dst, `,"top_logprobs":[`...)
		for j, t := range ev.Top {
			if j > 0 {
				dst = append(dst, ',')
			}
			dst = e.appendChatToken(dst, t.ID, t.Logprob)
		}
		dst = append(dst, "]}"...)
	}
	return append(dst, `],"refusal":null}`...)
}

// appendChatToken appends {"token":…,"logprob":…,"bytes":[…]}.
func (e *Encoder) appendChatToken(dst []byte, id int32, lp float32) []byte {
	piece := e.cfg.Piece(id)
	dst = append(dst, `{"token":`...)
	dst = appendString(dst, piece)
	dst = append(dst, `,"logprob":`...)
	dst = appendLogprob(dst, lp)
	dst = append(dst, `,"bytes":[`...)
	for k := 0; k < len(piece); k++ {
		if k > 0 {
			dst = append(dst, ',')
		}
		dst = strconv.AppendUint(dst, uint64(piece[k]), 10)
	}
	return append(dst, "]}"...)
}

// appendLegacyLogprobs appends a completions logprobs object,
// {"tokens","token_logprobs","top_logprobs","text_offset"}, with offsets
// counted in characters from offset; it returns the offset after the
// tokens.
func (e *Encoder) appendLegacyLogprobs(dst []byte, evs []engine.Event, offset int) ([]byte, int) {
	dst = append(dst, `{"tokens":[`...)
	for i := range evs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, e.cfg.Piece(evs[i].Token))
	}
	dst = append(dst, `],"token_logprobs":[`...)
	for i := range evs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendLogprob(dst, evs[i].Logprob)
	}
	dst = append(dst, `],"top_logprobs":[`...)
	for i := range evs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = e.appendTopMap(dst, evs[i].Top)
	}
	dst = append(dst, `],"text_offset":[`...)
	for i := range evs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = strconv.AppendInt(dst, int64(offset), 10)
		offset += utf8.RuneCountInString(e.cfg.Piece(evs[i].Token))
	}
	return append(dst, "]}"...), offset
}

// appendTopMap appends the legacy {"token": logprob, …} map, most likely
// first; a token text seen twice (two ids with the same text, or byte
// pieces that both become U+FFFD) keeps its first, larger, entry so that the
// object has no duplicate keys.
func (e *Encoder) appendTopMap(dst []byte, top []sample.TokenLogprob) []byte {
	dst = append(dst, '{')
	for j, t := range top {
		piece := e.cfg.Piece(t.ID)
		dup := false
		for _, u := range top[:j] {
			if sameJSONText(e.cfg.Piece(u.ID), piece) {
				dup = true
				break
			}
		}
		if dup {
			continue
		}
		if dst[len(dst)-1] != '{' {
			dst = append(dst, ',')
		}
		dst = appendString(dst, piece)
		dst = append(dst, ':')
		dst = appendLogprob(dst, t.Logprob)
	}
	return append(dst, '}')
}

// appendLogprob appends a log probability as a JSON number. -Inf (a token
// the bias banned) and NaN, which JSON cannot carry, become -9999, the value
// OpenAI reports for tokens outside the top 20.
func appendLogprob(dst []byte, lp float32) []byte {
	if math.IsInf(float64(lp), 0) || math.IsNaN(float64(lp)) {
		return append(dst, "-9999"...)
	}
	return strconv.AppendFloat(dst, float64(lp), 'g', -1, 32)
}

// sameJSONText reports whether a and b are the same string once each byte
// of invalid UTF-8 becomes U+FFFD, as appendString writes them.
func sameJSONText(a, b string) bool {
	for len(a) > 0 && len(b) > 0 {
		ra, na := utf8.DecodeRuneInString(a)
		rb, nb := utf8.DecodeRuneInString(b)
		if ra != rb {
			return false
		}
		a, b = a[na:], b[nb:]
	}
	return len(a) == 0 && len(b) == 0
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. It escapes what JSON requires
// (quote, backslash, control characters) plus U+2028 and U+2029, and
// replaces each byte of invalid UTF-8 with U+FFFD, as encoding/json does;
// unlike encoding/json it leaves <, > and & alone, as OpenAI does.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
