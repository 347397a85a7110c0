package server

import (
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spigot-llm/spigot/api/openai"
	"github.com/spigot-llm/spigot/api/tgi"
	"github.com/spigot-llm/spigot/engine"
)

// Hugging Face TGI's native API (package api/tgi holds the wire format):
//
//	POST /generate          one JSON object: generated_text (and details)
//	POST /generate_stream   SSE: one event per token, generated_text (and
//	                        details) on the last; an error is an event
//	                        {"error","error_type"}

func writeTGIError(w http.ResponseWriter, err error) { tgi.WriteError(w, err) }

func (s *Server) handleTGIGenerate(w http.ResponseWriter, r *http.Request, m *Model) {
	s.serveTGI(w, r, m, false)
}

func (s *Server) handleTGIStream(w http.ResponseWriter, r *http.Request, m *Model) {
	s.serveTGI(w, r, m, true)
}

// tgiJob is a validated TGI request.
type tgiJob struct {
	job
	opts   tgi.Options
	inputs string
}

// prepareTGI parses and validates a TGI body; every error is a *tgi.Error.
func prepareTGI(m *Model, body []byte) (*tgiJob, error) {
	req, err := tgi.Decode(body)
	if err != nil {
		return nil, err
	}
	opts, err := req.Options()
	if err != nil {
		return nil, err
	}
	ids := m.Tokenizer.Encode(*req.Inputs, true, true)
	if opts.Truncate > 0 && len(ids) > opts.Truncate {
		ids = ids[len(ids)-opts.Truncate:]
	}
	oo := openai.Options{Request: opts.Request, N: 1}
	if err := validate(m, oo, ids, "inputs"); err != nil {
		return nil, tgi.ErrorFor(err)
	}
	return &tgiJob{
		job:    job{kind: openai.Completion, opts: oo, reqs: []engine.Request{oo.Choice(0, ids)}, promptTokens: len(ids)},
		opts:   opts,
		inputs: *req.Inputs,
	}, nil
}

func (s *Server) serveTGI(w http.ResponseWriter, r *http.Request, m *Model, stream bool) {
	start := time.Now()
	body, err := s.readBody(w, r)
	if err != nil {
		tgi.WriteError(w, err)
		return
	}
	tj, err := prepareTGI(m, body)
	if err != nil {
		tgi.WriteError(w, err)
		return
	}
	g, err := s.startOne(r.Context(), m, &tj.job, start)
	if err != nil {
		tgi.WriteError(w, err)
		return
	}
	t := &tgiResponse{g: g, m: m, tj: tj}
	if tj.opts.ReturnFullText {
		t.text.WriteString(tj.inputs)
	}
	if stream {
		t.stream(w)
	} else {
		t.respond(w)
	}
	g.finish(w, r)
}

// tgiResponse is one TGI response in progress.
type tgiResponse struct {
	g    *generation
	m    *Model
	tj   *tgiJob
	text strings.Builder // generated_text so far
	sent int             // tokens reported so far
}

// eos returns the end-of-sequence token that ended a stream: its own
// text, special, when it carries no text; when the end released text that
// was held back (a partial UTF-8 character or stop string), that text, not
// special, so that clients that skip special tokens still see it.
func (t *tgiResponse) eos(held string) tgi.Token {
	id := t.m.Tokenizer.EOS()
	if id < 0 {
		id = t.m.Tokenizer.EOT()
	}
	if held != "" {
		return tgi.Token{ID: max(id, 0), Text: held, NoLogprob: true}
	}
	return tgi.Token{ID: max(id, 0), Text: t.m.Tokenizer.PieceSpecial(id), NoLogprob: true, Special: true}
}

// last returns the final token and finish reason of a stream that ended
// normally; pending is the event that ended it, if one did.
func (t *tgiResponse) last(pending *engine.Event) (tgi.Token, string) {
	res := t.g.results[0]
	sent := t.sent
	if pending != nil && pending.Token >= 0 {
		sent++
	}
	reason := tgi.FinishReason(res.FinishReason, res.Tokens, sent)
	switch {
	case pending != nil && pending.Token >= 0:
		return tgi.TokenOf(pending), reason
	case pending != nil:
		return t.eos(pending.Text), reason
	}
	return t.eos(""), reason
}

func (t *tgiResponse) seed() *uint64 {
	if !t.tj.opts.Sampling {
		return nil
	}
	seed := t.tj.opts.Seed
	return &seed
}

func (t *tgiResponse) top(dst []tgi.Token, ev *engine.Event) []tgi.Token {
	if t.tj.opts.Request.TopLogprobs == 0 {
		return nil
	}
	return tgi.TopTokens(dst[:0], ev, t.m.Tokenizer.Piece)
}

// stream answers with one event per token. The event that ends the stream
// (the last token, or the end-of-sequence token) is held until the engine
// says how the stream ended, and carries generated_text. While the
// stream is silent for Config.KeepAlive (queued, prefilling), a
// keepalive comment goes out, as on the OpenAI routes; TGI's clients
// skip comments.
func (t *tgiResponse) stream(w http.ResponseWriter) {
	sw := t.g.s.streamWriter(w, "text/event-stream")
	defer sw.done()
	sw.flush()
	var pending *engine.Event
	var top []tgi.Token
	t.g.driveKeepAlive(func(evs []engine.Event, end error) {
		for k := range evs {
			ev := &evs[k]
			t.text.WriteString(ev.Text)
			if ev.Finish != "" || ev.Token < 0 {
				p := *ev
				pending = &p
				continue
			}
			t.sent++
			top = t.top(top, ev)
			sw.buf = tgi.AppendEvent(sw.buf, t.sent, tgi.TokenOf(ev), top, nil)
		}
		switch {
		case end == io.EOF:
			tok, reason := t.last(pending)
			if pending != nil && pending.Token >= 0 {
				top = t.top(top, pending)
			} else {
				top = top[:0]
				if t.tj.opts.Request.TopLogprobs == 0 {
					top = nil
				}
			}
			sw.buf = tgi.AppendEvent(sw.buf, t.sent+1, tok, top, &tgi.End{
				GeneratedText: t.text.String(), Details: t.tj.opts.Details, FinishReason: reason,
				GeneratedTokens: t.g.results[0].Tokens, InputLength: t.tj.promptTokens, Seed: t.seed(),
			})
		case end != nil:
			sw.buf = tgi.AppendErrorEvent(sw.buf, tgi.ErrorFor(end))
		}
	}, sw.flush, t.g.s.cfg.KeepAlive, func() error {
		sw.buf = append(sw.buf, ": keepalive\n\n"...)
		return sw.flush()
	})
}

// respond collects the whole text (and the details' tokens) and answers
// with one object.
func (t *tgiResponse) respond(w http.ResponseWriter) {
	resp := tgi.Response{Details: t.tj.opts.Details, Seed: t.seed()}
	var pending *engine.Event
	t.g.drive(func(evs []engine.Event, end error) {
		for k := range evs {
			ev := &evs[k]
			t.text.WriteString(ev.Text)
			if ev.Finish != "" || ev.Token < 0 {
				p := *ev
				pending = &p
				continue
			}
			t.sent++
			if resp.Details {
				resp.Tokens = append(resp.Tokens, tgi.TokenOf(ev))
				if top := t.top(nil, ev); top != nil {
					resp.TopTokens = append(resp.TopTokens, top)
				}
			}
		}
		if end != io.EOF {
			return
		}
		tok, reason := t.last(pending)
		resp.FinishReason = reason
		if resp.Details {
			if pending != nil && pending.Token >= 0 {
				resp.Tokens = append(resp.Tokens, tok)
				if top := t.top(nil, pending); top != nil {
					resp.TopTokens = append(resp.TopTokens, top)
				}
			} else if reason == tgi.FinishEOSToken {
				resp.Tokens = append(resp.Tokens, t.eos(""))
				if t.tj.opts.Request.TopLogprobs > 0 {
					resp.TopTokens = append(resp.TopTokens, []tgi.Token{})
				}
			}
		}
	}, nil)
	if t.g.failure != nil {
		tgi.WriteError(w, t.g.failure)
		return
	}
	resp.GeneratedText = t.text.String()
	w.Header().Set("Content-Type", "application/json")
	if _, err := w.Write(append(tgi.AppendResponse(make([]byte, 0, 256), &resp), '\n')); err != nil {
		t.g.failure = err
	}
}
