package gateway

import (
	"encoding/json"
	"unsafe"

	"github.com/spigot-llm/spigot/api/openai"
	streamlog "github.com/spigot-llm/spigot/stream"
)

// This file reads a session's log (OpenAI chunks) as the events of
// spigot serve's WebSocket and gRPC APIs: a delta per choice's text, and
// at the end one done (every choice's finish reason, the usage) or one
// error.

// delta is one choice's text from one chunk.
type delta struct {
	index    int
	text     string
	logprobs json.RawMessage // nil or null: none
}

// eventReader turns entries into deltas and keeps what the end needs.
type eventReader struct {
	finish []string // by choice
	usage  *openai.Usage
	ended  bool // a Final entry (an error) was read
	deltas []delta
	c      chunk
}

// read returns the deltas of a Token entry (valid until the next call)
// and notes its finish reasons and usage.
func (d *eventReader) read(e *streamlog.Entry) []delta {
	d.deltas = d.deltas[:0]
	if e.Kind == streamlog.Final {
		d.ended = true
	}
	if e.Kind != streamlog.Token {
		return nil
	}
	c := &d.c
	if !parseChunk(unsafe.Slice(unsafe.StringData(e.Event.Text), len(e.Event.Text)), c) { // read only
		return nil
	}
	for i := range c.Choices {
		ch := &c.Choices[i]
		text := ch.text()
		if ch.Index < 0 || ch.Index > 1<<16 {
			continue
		}
		if text != "" {
			lp := ch.Logprobs
			if string(lp) == "null" {
				lp = nil
			}
			d.deltas = append(d.deltas, delta{index: ch.Index, text: text, logprobs: lp})
		}
		if ch.HasFinish && ch.FinishReason != "" {
			for len(d.finish) <= ch.Index {
				d.finish = append(d.finish, "")
			}
			d.finish[ch.Index] = ch.FinishReason
		}
	}
	if c.Usage != nil {
		d.usage = c.Usage
	}
	return d.deltas
}

// replay reads the entries up to after, so that a resumed reader's end
// carries what came before it.
func (d *eventReader) replay(l *streamlog.Log, after uint64) {
	l.Range(after, func(e *streamlog.Entry) bool {
		d.read(e)
		return true
	})
}

// finishReasons returns every choice's finish reason (at least one).
func (d *eventReader) finishReasons() []string {
	if len(d.finish) == 0 {
		return []string{""}
	}
	return d.finish
}

// kindPath is the endpoint of a kind of request.
func kindPath(k openai.Kind) string {
	if k == openai.Chat {
		return "/v1/chat/completions"
	}
	return "/v1/completions"
}
