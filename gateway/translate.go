package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"

	"github.com/spigot-llm/spigot/api/openai"
)

// A translator turns a native stream's events (TGI's server-sent events,
// Ollama's NDJSON lines) into OpenAI chunks, written by an
// [openai.Encoder] as Spigot's own server writes them.
type translator interface {
	init(enc *openai.Encoder, r *request)
	// event translates one native event, pushing OpenAI events to q;
	// done reports the stream's last event ([DONE] was pushed).
	event(data []byte, q *queueSource) (done bool, err error)
	// whole translates a whole (non-streamed) response.
	whole(b []byte) ([]byte, error)
}

// translatedSource reads a native stream through a translator.
type translatedSource struct {
	queueSource
	sse *sseSource  // TGI: server-sent events
	lr  *lineReader // Ollama: NDJSON
	tr  translator
	end bool
}

func newTranslatedSource(r io.Reader, tr translator, sse bool) *translatedSource {
	t := &translatedSource{tr: tr}
	if sse {
		t.sse = newSSESource(r)
	} else {
		t.lr = newLineReader(r)
	}
	return t
}

func (t *translatedSource) buffered() bool {
	if len(t.q) > 0 {
		return true
	}
	if t.sse != nil {
		return t.sse.buffered()
	}
	return t.lr.r.Buffered() > 0
}

func (t *translatedSource) next() (raw, data []byte, err error) {
	for {
		if raw, data, ok := t.pop(); ok {
			return raw, data, nil
		}
		if t.end {
			return nil, nil, io.EOF
		}
		var payload []byte
		if t.sse != nil {
			_, payload, err = t.sse.next()
		} else {
			payload, err = t.lr.readLine()
			payload = bytes.TrimSpace(payload)
		}
		if err != nil {
			return nil, nil, err
		}
		if len(payload) == 0 {
			continue
		}
		done, err := t.tr.event(payload, &t.queueSource)
		if err != nil {
			return nil, nil, err
		}
		t.end = done
	}
}

// tgiTranslator translates TGI's /generate_stream events (StreamResponse:
// a token per event, the last with generated_text and details) and
// /generate's GenerateResponse. Special tokens' text (such as </s>) is
// not sent, as TGI's own OpenAI route does not.
type tgiTranslator struct {
	enc    *openai.Encoder
	usage  bool
	tokens int
}

type tgiEvent struct {
	Token *struct {
		Text    string `json:"text"`
		Special bool   `json:"special"`
	} `json:"token"`
	GeneratedText *string     `json:"generated_text"`
	Details       *tgiDetails `json:"details"`
	Error         string      `json:"error"`
}

type tgiDetails struct {
	FinishReason    string `json:"finish_reason"`
	GeneratedTokens int    `json:"generated_tokens"`
	InputLength     int    `json:"input_length"`
}

// finish maps TGI's finish reasons (length, eos_token, stop_sequence) to
// OpenAI's.
func (d *tgiDetails) finish() string {
	if d != nil && d.FinishReason == "length" {
		return "length"
	}
	return "stop"
}

func (d *tgiDetails) usage(tokens int) openai.Usage {
	u := openai.Usage{CompletionTokens: tokens}
	if d != nil {
		u.PromptTokens, u.CompletionTokens = d.InputLength, d.GeneratedTokens
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	return u
}

func (t *tgiTranslator) init(enc *openai.Encoder, r *request) { t.enc, t.usage = enc, r.includeUsage }

func (t *tgiTranslator) event(data []byte, q *queueSource) (bool, error) {
	var ev tgiEvent
	if err := json.Unmarshal(data, &ev); err != nil {
		return false, fmt.Errorf("gateway: reading a TGI event: %v", err)
	}
	if ev.Error != "" {
		return false, fmt.Errorf("gateway: TGI error event: %s", ev.Error)
	}
	if ev.Token != nil {
		t.tokens++
		if !ev.Token.Special && ev.Token.Text != "" {
			q.push(t.enc.AppendText(nil, 0, ev.Token.Text, nil))
		}
	}
	if ev.GeneratedText == nil {
		return false, nil
	}
	q.push(t.enc.AppendFinish(nil, 0, ev.Details.finish()))
	if t.usage {
		q.push(t.enc.AppendUsage(nil, ev.Details.usage(t.tokens)))
	}
	q.push(openai.AppendDone(nil))
	return true, nil
}

func (t *tgiTranslator) whole(b []byte) ([]byte, error) {
	var r struct {
		GeneratedText string      `json:"generated_text"`
		Details       *tgiDetails `json:"details"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("gateway: reading TGI's response: %v", err)
	}
	c := []openai.Choice{{Text: r.GeneratedText, Finish: r.Details.finish()}}
	return append(t.enc.AppendResponse(nil, c, r.Details.usage(0)), '\n'), nil
}

// ollamaTranslator translates Ollama's /api/generate and /api/chat NDJSON
// lines (a response or message.content per line; the last with done,
// done_reason and the token counts) and their non-streamed answers.
type ollamaTranslator struct {
	enc   *openai.Encoder
	chat  bool
	usage bool
	role  bool // the chat role chunk was pushed
}

type ollamaLine struct {
	Response string `json:"response"`
	Message  *struct {
		Content string `json:"content"`
	} `json:"message"`
	Done       bool   `json:"done"`
	DoneReason string `json:"done_reason"`
	PromptEval int    `json:"prompt_eval_count"`
	Eval       int    `json:"eval_count"`
	Error      string `json:"error"`
}

func (l *ollamaLine) text() string {
	if l.Message != nil {
		return l.Message.Content
	}
	return l.Response
}

func (l *ollamaLine) finish() string {
	if l.DoneReason == "length" {
		return "length"
	}
	return "stop"
}

func (l *ollamaLine) usage() openai.Usage {
	return openai.Usage{PromptTokens: l.PromptEval, CompletionTokens: l.Eval, TotalTokens: l.PromptEval + l.Eval}
}

func (t *ollamaTranslator) init(enc *openai.Encoder, r *request) {
	t.enc, t.chat, t.usage = enc, r.kind == openai.Chat, r.includeUsage
}

func (t *ollamaTranslator) event(data []byte, q *queueSource) (bool, error) {
	var l ollamaLine
	if err := json.Unmarshal(data, &l); err != nil {
		return false, fmt.Errorf("gateway: reading an Ollama line: %v", err)
	}
	if l.Error != "" {
		return false, fmt.Errorf("gateway: Ollama error line: %s", l.Error)
	}
	if t.chat && !t.role {
		t.role = true
		q.push(t.enc.AppendRole(nil, 0))
	}
	if s := l.text(); s != "" {
		q.push(t.enc.AppendText(nil, 0, s, nil))
	}
	if !l.Done {
		return false, nil
	}
	q.push(t.enc.AppendFinish(nil, 0, l.finish()))
	if t.usage {
		q.push(t.enc.AppendUsage(nil, l.usage()))
	}
	q.push(openai.AppendDone(nil))
	return true, nil
}

func (t *ollamaTranslator) whole(b []byte) ([]byte, error) {
	var l ollamaLine
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("gateway: reading Ollama's response: %v", err)
	}
	if l.Error != "" {
		return nil, fmt.Errorf("gateway: Ollama error: %s", l.Error)
	}
	c := []openai.Choice{{Text: l.text(), Finish: l.finish()}}
	return append(t.enc.AppendResponse(nil, c, l.usage()), '\n'), nil
}
