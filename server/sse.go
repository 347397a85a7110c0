package server

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spigot-llm/spigot/api/openai"
	"github.com/spigot-llm/spigot/engine"
	"github.com/spigot-llm/spigot/stream"
)

// This file is the SSE transport: a session's log as OpenAI stream chunks,
// each event with an id ("id: STREAM:SEQ") that a client names in
// Last-Event-ID to resume after it.

// serveSSE answers with the session's events after seq after as
// server-sent events, until the Done entry was written or the client goes
// away (or another connection resumes the stream).
func (s *Server) serveSSE(w http.ResponseWriter, r *http.Request, ss *session, after uint64) {
	ctx, release := ss.attach(r.Context())
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	// no-transform: proxies must not compress (and so buffer) the events;
	// X-Accel-Buffering: nginx passes each event on at once.
	h.Set("Cache-Control", "no-cache, no-transform")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	sw := &sseWriter{w: w, rc: http.NewResponseController(w), timeout: s.cfg.WriteTimeout, buf: getBuf()}
	defer sw.done()
	k := newSSESink(ss, sw)
	if after > 0 {
		k.replay(after)
		sw.flush() // the headers, at once: the next event may be a while
	}
	d := ss.j.opts.Delivery
	_, err := ss.log.Deliver(ctx, after, stream.Options{Rate: d.Pace, MinInterval: d.MinInterval, KeepAlive: s.cfg.KeepAlive}, k)
	release(err == nil)
	if err != nil { // the client went away, or another connection took over
		s.log.Debug("stream delivery ended", "stream", ss.id, "err", err, "resumable", ss.resumable)
	}
}

// sseSink writes log entries as OpenAI chunks. Consecutive tokens of a
// choice are merged into one chunk when the request coalesces
// (min_interval_ms); otherwise each token has its own chunk, as OpenAI
// sends them.
type sseSink struct {
	ss       *session
	sw       *sseWriter
	enc      *openai.Encoder
	coalesce bool
	lp       []engine.Event // scratch: the tokens of a chunk
	text     []byte         // scratch: the text of merged tokens
	// held is, per choice, the ids of tokens not yet sent because their
	// text was held back (return_token_ids): the next chunk of the choice
	// carries them first.
	held [][]int32
	ids  []int32 // scratch: a chunk's ids
}

func newSSESink(ss *session, sw *sseWriter) *sseSink {
	k := &sseSink{ss: ss, sw: sw, enc: openai.NewEncoder(ss.enc), coalesce: ss.j.opts.Delivery.MinInterval > 0}
	if ss.enc.TokenIDs {
		k.held = make([][]int32, max(ss.enc.Choices, 1))
	}
	return k
}

// replay brings the encoder's state (the text offsets of completions
// logprobs) to where it was after entry after, for a resumed stream.
func (k *sseSink) replay(after uint64) {
	if k.held != nil {
		// The choices whose prompt ids went out. (No ids are held back
		// at an event: each event is numbered after the entries it
		// carries, invisible tokens' included.)
		k.ss.log.Range(after, func(e *stream.Entry) bool {
			if e.Kind == stream.Start && k.ss.enc.Kind == openai.Chat || e.Kind == stream.Token && e.Visible ||
				e.Kind == stream.End && !e.FinishSent {
				k.enc.PromptIDsSent(e.Choice)
			}
			return true
		})
	}
	if k.ss.enc.Kind != openai.Completion || !k.ss.enc.Logprobs {
		return
	}
	var scratch []byte
	k.ss.log.Range(after, func(e *stream.Entry) bool {
		if e.Kind == stream.Token && e.Visible {
			scratch = k.enc.AppendLogprobs(scratch[:0], e.Choice, e.Event.Text, k.tokens(e.Event))
		}
		return true
	})
}

// tokens returns ev as a chunk's logprob events: itself, or none for text
// without a token.
func (k *sseSink) tokens(ev engine.Event) []engine.Event {
	k.lp = k.lp[:0]
	if ev.Token >= 0 {
		k.lp = append(k.lp, ev)
	}
	return k.lp
}

// appendID appends the id line of the event for entry seq.
func (k *sseSink) appendID(dst []byte, seq uint64) []byte {
	dst = append(dst, "id: "...)
	dst = append(dst, k.ss.id...)
	dst = append(dst, ':')
	dst = strconv.AppendUint(dst, seq, 10)
	return append(dst, '\n')
}

func (k *sseSink) Write(es []stream.Entry) error {
	b := k.sw.buf
	for i := 0; i < len(es); i++ {
		e := &es[i]
		switch e.Kind {
		case stream.Start:
			if k.ss.enc.Kind == openai.Chat {
				b = k.appendID(b, e.Seq)
				b = k.enc.AppendRole(b, e.Choice)
			}
		case stream.Token:
			j := i + 1
			if k.coalesce && e.Event.Token >= 0 {
				for j < len(es) && es[j].Kind == stream.Token && es[j].Choice == e.Choice && es[j].Event.Token >= 0 {
					j++
				}
			}
			b = k.appendTokens(b, es[i:j])
			i = j - 1
		case stream.End:
			if !e.FinishSent {
				b = k.appendID(b, e.Seq)
				b = k.enc.AppendFinishIDs(b, e.Choice, e.Result.FinishReason, k.takeIDs(e.Choice, nil))
			}
		case stream.Final:
			switch {
			case e.Err != nil:
				b = k.appendID(b, e.Seq)
				b = openai.AppendErrorEvent(b, openai.ErrorFor(e.Err))
			case k.ss.enc.IncludeUsage:
				b = k.appendID(b, e.Seq)
				b = k.enc.AppendUsage(b, k.ss.usage(e.Results))
			}
		case stream.Done:
			b = k.appendID(b, e.Seq)
			b = openai.AppendDone(b)
		}
	}
	k.sw.buf = b
	if err := k.sw.flush(); err != nil {
		return err
	}
	k.ss.delivered(time.Now(), es)
	return nil
}

// appendTokens appends one chunk for the Token entries es, all of one
// choice: their text, their tokens' logprobs, and the finish reason when
// the last one carries it. Entries none of which is visible send nothing.
func (k *sseSink) appendTokens(dst []byte, es []stream.Entry) []byte {
	visible := false
	for i := range es {
		visible = visible || es[i].Visible
	}
	if !visible {
		if k.held != nil {
			for i := range es {
				if es[i].Event.Token >= 0 {
					k.held[es[i].Choice] = append(k.held[es[i].Choice], es[i].Event.Token)
				}
			}
		}
		return dst
	}
	last := &es[len(es)-1]
	text := last.Event.Text
	lp := k.tokens(es[0].Event)
	if len(es) > 1 {
		k.text = k.text[:0]
		for i := range es {
			k.text = append(k.text, es[i].Event.Text...)
			if i > 0 {
				lp = append(lp, es[i].Event) // all tokens: a merged run has no Token -1
			}
		}
		text = string(k.text)
	}
	k.lp = lp
	dst = k.appendID(dst, last.Seq)
	return k.enc.AppendChunk(dst, last.Choice, text, lp, last.Event.Finish, k.takeIDs(last.Choice, es))
}

// takeIDs returns the ids a chunk of choice carries: those held back,
// then those of es. It empties the held ids. Without return_token_ids it
// returns nil.
func (k *sseSink) takeIDs(choice int, es []stream.Entry) []int32 {
	if k.held == nil {
		return nil
	}
	k.ids = append(k.ids[:0], k.held[choice]...)
	k.held[choice] = k.held[choice][:0]
	for i := range es {
		if es[i].Event.Token >= 0 {
			k.ids = append(k.ids, es[i].Event.Token)
		}
	}
	return k.ids
}

func (k *sseSink) KeepAlive() error {
	k.sw.buf = append(k.sw.buf, ": keepalive\n\n"...)
	return k.sw.flush()
}

// parseEventID splits an event id, "STREAM:SEQ", into the stream's id and
// the sequence number.
func parseEventID(v string) (id string, seq uint64, err error) {
	i := strings.LastIndexByte(v, ':')
	if i > 0 {
		seq, err = strconv.ParseUint(v[i+1:], 10, 64)
		if err == nil {
			return v[:i], seq, nil
		}
	}
	return "", 0, openai.BadRequest("Last-Event-ID",
		"Last-Event-ID %q is not an event id of this server (STREAM:SEQ, as each event's id: field says)", v)
}

// resume answers a request to go on with the stream named id after seq
// after: the events after it, then the live rest. kind, if not -1, is the
// endpoint the request came to, which must be the stream's.
func (s *Server) resume(w http.ResponseWriter, r *http.Request, id string, after uint64, kind openai.Kind) {
	ss := s.streams.get(id)
	if ss == nil {
		openai.WriteError(w, openai.StreamNotFound(id, s.cfg.ResumeWindow))
		return
	}
	if kind >= 0 && kind != ss.j.kind {
		path := "/v1/completions"
		if ss.j.kind == openai.Chat {
			path = "/v1/chat/completions"
		}
		openai.WriteError(w, openai.BadRequest("Last-Event-ID", "stream %s is not from this endpoint; resume it at %s or GET /v1/streams/%s", id, path, id))
		return
	}
	if last := ss.log.Last(); after > last {
		openai.WriteError(w, openai.BadRequest("Last-Event-ID", "stream %s has sent %d events so far; event %d is not one of them", id, last, after))
		return
	} else if after == last && ss.log.Done() {
		// Everything was sent. 204 tells an EventSource to stop
		// reconnecting.
		w.WriteHeader(http.StatusNoContent)
		return
	}
	s.serveSSE(w, r, ss, after)
}

// handleStream serves GET /v1/streams/{id}: the stream's events from the
// start, or after the event named by the Last-Event-ID header (which
// EventSource sends when it reconnects) or the after query parameter.
func (s *Server) handleStream(w http.ResponseWriter, r *http.Request, m *Model) {
	id := r.PathValue("id")
	var after uint64
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		sid, seq, err := parseEventID(v)
		if err == nil && sid != id {
			err = openai.BadRequest("Last-Event-ID", "Last-Event-ID %q names another stream than %s", v, id)
		}
		if err != nil {
			openai.WriteError(w, err)
			return
		}
		after = seq
	} else if v := r.URL.Query().Get("after"); v != "" {
		seq, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			openai.WriteError(w, openai.BadRequest("after", "after is %q; want the sequence number of the last event received", url.QueryEscape(v)))
			return
		}
		after = seq
	}
	s.resume(w, r, id, after, -1)
}

// handleCancel serves POST /v1/streams/{id}/cancel: the generation stops
// at the engine's next step; a client still reading gets the error event
// (code "canceled") and [DONE].
func (s *Server) handleCancel(w http.ResponseWriter, r *http.Request, m *Model) {
	id := r.PathValue("id")
	ss := s.streams.get(id)
	if ss == nil {
		openai.WriteError(w, openai.StreamNotFound(id, s.cfg.ResumeWindow))
		return
	}
	running := !ss.log.Done()
	ss.cancelGen()
	writeJSON(w, http.StatusOK, struct {
		ID       string `json:"id"`
		Object   string `json:"object"`
		Canceled bool   `json:"canceled"`
	}{id, "stream.cancel", running})
}

// resumeHeader handles a generation POST that carries Last-Event-ID: it
// resumes that stream instead of starting one, as clients that re-send
// the same request when they reconnect (fetch-event-source, for one) do.
// It reports whether it answered the request.
func (s *Server) resumeHeader(w http.ResponseWriter, r *http.Request, kind openai.Kind) bool {
	v := r.Header.Get("Last-Event-ID")
	if v == "" {
		return false
	}
	id, seq, err := parseEventID(v)
	if err != nil {
		openai.WriteError(w, err)
		return true
	}
	s.resume(w, r, id, seq, kind)
	return true
}

// sseWriter writes a stream's buffered events: one Write and one Flush per
// call to flush, each under a fresh write deadline.
type sseWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	buf     []byte
	err     error // the first write error; nothing is written after it
}

func (sw *sseWriter) flush() error {
	if sw.err != nil {
		sw.buf = sw.buf[:0]
		return sw.err
	}
	if sw.timeout > 0 {
		sw.rc.SetWriteDeadline(time.Now().Add(sw.timeout)) // ErrNotSupported (tests' recorders): no deadline
	}
	if len(sw.buf) > 0 {
		_, sw.err = sw.w.Write(sw.buf)
		sw.buf = sw.buf[:0]
	}
	if sw.err == nil {
		sw.err = sw.rc.Flush()
	}
	return sw.err
}

// done clears the write deadline, which would otherwise outlive the
// response on a kept-alive connection, and recycles the buffer.
func (sw *sseWriter) done() {
	if sw.timeout > 0 {
		sw.rc.SetWriteDeadline(time.Time{})
	}
	putBuf(sw.buf)
	sw.buf = nil
}

// bufPool recycles stream buffers between requests.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func getBuf() []byte { return (*bufPool.Get().(*[]byte))[:0] }

func putBuf(b []byte) {
	if cap(b) > 1<<20 { // a request with huge chunks: let the memory go
		return
	}
	bufPool.Put(&b)
}
