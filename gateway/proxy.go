package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/spigot-llm/spigot/api/openai"
	streamlog "github.com/spigot-llm/spigot/stream"
)

// Limits on what the gateway reads from an upstream in one piece.
const (
	maxErrorBody    = 1 << 20  // an error response
	maxResponseBody = 64 << 20 // a whole (non-streamed) response
)

// handleGenerate serves POST /v1/completions and /v1/chat/completions:
// a request that carries Last-Event-ID resumes that stream; any other
// starts a session whose relay answers it. m, if not nil, charges the
// request's tokens to its key; release (called once) frees its admission
// slot when the relay ends.
func (g *Gateway) handleGenerate(w http.ResponseWriter, r *http.Request, kind openai.Kind, m *meter, release func()) {
	start := g.now()
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		release()
		g.resumeSSE(w, r, v, "", kind)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, openai.MaxBodyBytes))
	if err == nil {
		var req *request
		if req, err = parseRequest(body, kind, g.cfg.Routing.PrefixBytes); err == nil {
			if !g.serves(req.model) {
				err = openai.ModelNotFound(req.model)
			} else {
				m.estimatePrompt(len(body))
				auth := ""
				if len(g.keys) == 0 {
					auth = r.Header.Get("Authorization") // an open gateway passes the client's key on
				}
				ss := g.newSession(req, m, auth, start, req.stream && !req.cancelOnDisconnect)
				g.serveInline(w, r, ss, release)
				return
			}
		}
	}
	release()
	openai.WriteError(w, err)
}

// relay runs a request's attempts on upstreams until one answers it, the
// attempts run out, or ctx ends (the session was canceled).
func (g *Gateway) relay(ctx context.Context, st *relay) {
	req := st.req
	var tried []*Upstream
	var last error
	for attempt := 0; attempt < g.cfg.Routing.MaxAttempts; attempt++ {
		if st.complete() {
			return
		}
		u, hit := g.pick(req.model, req.key, req.hasKey, tried)
		if u == nil {
			break
		}
		switch {
		case attempt == 0 && req.hasKey:
			result := "miss"
			if hit {
				result = "hit"
			}
			g.m.affinity.WithLabelValues(result).Inc()
		case attempt > 0:
			stage := "before_first_token"
			if st.tokens > 0 {
				stage = "mid_stream"
			}
			g.m.failovers.WithLabelValues(stage).Inc()
			g.log.Info("failing over", "from", tried[len(tried)-1].cfg.Name, "to", u.cfg.Name, "stage", stage, "err", last)
		}
		tried = append(tried, u)
		outcome, err := st.attempt(ctx, u)
		g.m.requests.WithLabelValues(u.cfg.Name, outcome).Inc()
		switch outcome {
		case outcomeFailed:
			u.eject(g.now(), g.cfg.Health.Cooldown)
		case outcomeRejected:
		default:
			return // answered, or canceled
		}
		last = err
		if st.started && !req.continuable() {
			break
		}
		if ctx.Err() != nil {
			return
		}
	}
	if ctx.Err() != nil {
		return // the session ends the stream
	}
	st.giveUp(last)
}

// relay is one client request in progress: what was sent to the client,
// so that a failover continues it without losing or repeating anything.
type relay struct {
	g     *Gateway
	w     http.ResponseWriter // the session's head: answers before the stream starts
	out   *session            // the stream's events go to its log
	req   *request
	start time.Time
	auth  string // the client's Authorization, sent to upstreams without a key of their own
	touch func() // the current attempt got something: its stall timer restarts
	meter *meter // charges the key's tokens; nil: none

	started bool              // the response status and headers were sent
	pending []streamlog.Entry // events not yet in the log
	c       chunk             // the event being read

	// The stream's identity, from its first chunk: continuations' chunks
	// are rewritten to it.
	haveID  bool
	id      json.RawMessage
	created json.RawMessage
	model   json.RawMessage

	text strings.Builder // choice 0's text so far
	// Token ids, from spigot upstreams asked for return_token_ids:
	// promptIDs are the ids the first upstream was given, ids those of
	// choice 0's tokens sent so far. idsLost is set once a chunk with
	// text came without ids, or the stream was continued from text: ids
	// no longer account for everything sent.
	promptIDs []int64
	ids       []int64
	idsLost   bool
	tokens    int // chunks with text sent: tokens, as Spigot and vLLM send one per token
	roleSent  map[int]bool
	finished  bool // a finish_reason was sent
	usage     bool // the usage chunk was sent
	terminal  bool // an error event was sent: only [DONE] may follow
	done      bool // [DONE] was sent

	// The current attempt.
	cont       bool // it continues a stream: rewrite its chunks
	base       int  // tokens sent before it
	extended   bool // its prompt holds text already generated
	asked      bool // it was asked for token ids the client did not ask for: strip them
	asChat     bool // it continues a chat on /v1/completions: re-encode its chunks as chat chunks
	sentAt     time.Time
	upFirst    time.Time // when it read its first token
	overheadOK bool      // the overhead was observed
}

// attempt sends the request to u and relays its answer. It returns the
// attempt's outcome and, for failed and rejected ones, why.
func (st *relay) attempt(parent context.Context, u *Upstream) (string, error) {
	body, left := st.req.body(st.text.String(), st.sent())
	r := st.req
	spigot := st.req.stream && st.req.continuable() && u.cfg.Kind == KindSpigot
	st.asked, st.asChat = false, false
	fromIDs := false
	switch {
	case st.haveID && spigot && st.byIDs() && !(st.req.kind == openai.Chat && st.req.chatLogprobs):
		// Continue from token ids: the prompt's and those generated,
		// exactly what the model had, whatever they decode to.
		prompt := append(append(make([]int64, 0, len(st.promptIDs)+len(st.ids)), st.promptIDs...), st.ids...)
		body = st.req.idsBody(prompt, left)
		c := *st.req
		c.kind, c.path = openai.Completion, "/v1/completions"
		r = &c
		st.asked, st.asChat, fromIDs = !st.req.tokenIDs, st.req.kind == openai.Chat, true
	case st.haveID && st.tokens > 0:
		st.idsLost = true // continued from text: ids no longer describe it
	case spigot && !st.req.tokenIDs:
		st.asked = true
	}
	if st.req.stream && u.cfg.Kind == KindSpigot {
		body = forSpigot(body, st.asked)
	}
	body = st.meter.withPriority(body, u)
	u.inflight.Add(1)
	defer u.inflight.Add(-1)
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	// A stream's upstream that sends nothing for StallTimeout (no
	// headers, no event) is given up on, as one that closed the
	// connection. (A whole response comes only at the end: no limit.)
	st.touch = func() {}
	if st.req.stream {
		stall := st.g.cfg.Routing.StallTimeout
		timer := time.AfterFunc(stall, func() { cancel(fmt.Errorf("upstream %s sent nothing for %v", u.cfg.Name, stall)) })
		defer timer.Stop()
		st.touch = func() { timer.Reset(stall) }
	}
	st.sentAt = st.g.now()
	resp, src, err := st.g.send(ctx, u, r, body, st.auth)
	if err != nil {
		if parent.Err() != nil {
			return outcomeCanceled, err
		}
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		var te *translateError
		if errors.As(err, &te) {
			if !st.started {
				openai.WriteError(st.w, te.err)
				st.started, st.done = true, true
			} else {
				st.endWithError(te.err)
			}
			return outcomeClientError, err
		}
		return outcomeFailed, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		err := &upstreamError{u.cfg.Name, fmt.Sprintf("status %d: %s", resp.StatusCode, bytes.TrimSpace(msg))}
		switch {
		case resp.StatusCode == http.StatusTooManyRequests:
			return outcomeRejected, err
		case resp.StatusCode >= 500:
			return outcomeFailed, err
		}
		// The request itself is at fault: the client gets the answer.
		e := upstreamClientError(u, resp, msg)
		if !st.started {
			if e == nil { // an OpenAI error object: passed on as is
				copyHeader(st.w.Header(), resp.Header, "Content-Type", "Retry-After")
				st.w.WriteHeader(resp.StatusCode)
				st.w.Write(msg)
			} else {
				openai.WriteError(st.w, e)
			}
			st.started, st.done = true, true
		} else {
			if e == nil {
				e = &openai.Error{Status: resp.StatusCode, Type: openai.TypeInvalidRequest, Message: err.Error()}
			}
			st.endWithError(e)
		}
		return outcomeClientError, err
	}
	if !st.req.stream {
		b, err := src.whole()
		if err != nil {
			if parent.Err() != nil {
				return outcomeCanceled, err
			}
			if ctx.Err() != nil {
				err = context.Cause(ctx)
			}
			return outcomeFailed, err
		}
		st.meter.whole(b)
		h := st.w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("X-Spigot-Upstream", u.cfg.Name)
		st.w.WriteHeader(http.StatusOK)
		st.w.Write(b)
		st.started, st.done = true, true
		return outcomeOK, nil
	}
	if !st.started {
		h := st.w.Header()
		copyHeader(h, resp.Header, "Content-Type")
		if h.Get("Content-Type") == "" {
			h.Set("Content-Type", "text/event-stream")
		}
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no")
		h.Set("X-Spigot-Upstream", u.cfg.Name)
		st.started = true
		st.out.begin()
	}
	st.cont, st.base, st.extended = st.haveID, st.sent(), st.sent() > 0 || st.text.Len() > 0
	if st.cont && st.g.onContinue != nil {
		st.g.onContinue(st.req, st.text.String(), st.sent(), fromIDs)
	}
	st.upFirst = time.Time{}
	err = st.pump(src.stream)
	switch {
	case err == nil:
		return outcomeOK, nil
	case parent.Err() != nil:
		return outcomeCanceled, err
	case ctx.Err() != nil:
		return outcomeFailed, context.Cause(ctx)
	}
	return outcomeFailed, err
}

// complete ends a broken stream that needs nothing more from an upstream
// and reports whether it did: one cut after its finish_reason (only
// [DONE] was missing, and usage, which is lost with it), or one whose
// token limit was reached (finish_reason length).
func (st *relay) complete() bool {
	if !st.started || st.done || !st.req.continuable() {
		return false
	}
	if st.finished {
		st.endLocally("")
		return true
	}
	if _, left := st.req.body(st.text.String(), st.sent()); left == 0 {
		st.endLocally("length")
		return true
	}
	return false
}

// byIDs reports whether the stream so far is described by token ids: the
// prompt's, and every token sent.
func (st *relay) byIDs() bool { return st.promptIDs != nil && !st.idsLost }

// sent is the count of tokens sent so far: the ids', exact, when the
// stream has them, else the chunks with text (see the package doc).
func (st *relay) sent() int {
	if st.byIDs() {
		return len(st.ids)
	}
	return st.tokens
}

// pump relays src's events to the client until [DONE] or an error.
func (st *relay) pump(src source) error {
	for {
		_, data, err := src.next()
		st.touch()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF // no [DONE]
			}
			st.flush()
			return err
		}
		if err := st.event(data); err != nil {
			st.flush()
			return err
		}
		if st.done || !src.buffered() {
			if err := st.flush(); err != nil {
				return err
			}
		}
		if st.done {
			return nil
		}
	}
}

var doneData = []byte("[DONE]")

// event handles one upstream event: it is passed on as is, rewritten
// (a continuation's), or dropped (a continuation's role chunk). A server
// error event returns an error: the stream is continued elsewhere.
func (st *relay) event(data []byte) error {
	if bytes.Equal(data, doneData) {
		st.done = true
		st.pending = append(st.pending, streamlog.Entry{Kind: streamlog.Done})
		return nil
	}
	c := &st.c
	if !parseChunk(data, c) {
		st.put(data) // not a chunk: passed on
		return nil
	}
	if c.Error != nil {
		if c.Error.Type == openai.TypeServer || c.Error.Type == "" {
			return fmt.Errorf("upstream error event: %s", c.Error.Message)
		}
		st.terminal = true
		e := &openai.Error{Status: http.StatusBadRequest, Type: c.Error.Type, Message: c.Error.Message, Code: c.Error.Code}
		st.pending = append(st.pending, streamlog.Entry{Kind: streamlog.Final, Err: e, Event: eventText(data)})
		return nil
	}
	if !st.haveID && len(c.ID) > 0 {
		var f map[string]json.RawMessage
		if json.Unmarshal(data, &f) == nil {
			st.haveID, st.id, st.created, st.model = true, f["id"], f["created"], f["model"]
		}
	}
	drop := len(c.Choices) > 0
	for i := range c.Choices {
		ch := &c.Choices[i]
		text := ch.text()
		if ch.Index == 0 {
			switch {
			case ch.PromptTokenIDs != nil && !st.cont && st.promptIDs == nil:
				st.promptIDs = ch.PromptTokenIDs
				st.out.promptTokens.Store(int32(len(st.promptIDs)))
			case ch.PromptTokenIDs == nil && !st.cont && st.promptIDs == nil && text != "":
				st.idsLost = true // an upstream without ids began the stream
			}
			if ch.HasTokenIDs {
				st.ids = append(st.ids, ch.TokenIDs...)
			} else if text != "" {
				st.idsLost = true
			}
		}
		roleOnly := ch.Delta && ch.Role != "" && text == "" && !ch.HasFinish
		if roleOnly && st.roleSent[ch.Index] {
			continue // a continuation's new start
		}
		drop = false
		if roleOnly {
			if st.roleSent == nil {
				st.roleSent = map[int]bool{}
			}
			st.roleSent[ch.Index] = true
		}
		if text != "" {
			if ch.Index == 0 {
				st.text.WriteString(text)
			}
			st.tokens++
			st.meter.token()
			if st.upFirst.IsZero() {
				st.upFirst = st.g.now()
			}
		}
		if ch.HasFinish && ch.FinishReason != "" {
			st.finished = true
		}
	}
	if drop {
		return nil
	}
	if c.Usage != nil {
		st.usage = true
		st.meter.usage(st.adjust(*c.Usage))
	}
	if st.asked || st.cont {
		// Ids the client did not ask for go; a continuation's prompt ids
		// (the prompt plus the text so far) go in any case.
		data = stripIDs(data, st.asked)
	}
	if !st.cont {
		st.put(data)
		return nil
	}
	var f map[string]json.RawMessage
	if json.Unmarshal(data, &f) != nil {
		st.put(data)
		return nil
	}
	if st.asChat {
		f["object"] = mustJSON("chat.completion.chunk")
		f["choices"] = st.chatChoices(c)
	}
	for k, v := range map[string]json.RawMessage{"id": st.id, "created": st.created, "model": st.model} {
		if _, ok := f[k]; ok && v != nil {
			f[k] = v
		}
	}
	if c.Usage != nil {
		f["usage"] = mustJSON(st.adjust(*c.Usage))
	}
	st.put(marshalObject(f, chunkKeyOrder))
	return nil
}

// put queues a chunk for the log.
func (st *relay) put(data []byte) {
	st.pending = append(st.pending, streamlog.Entry{Kind: streamlog.Token, Visible: true, Event: eventText(data)})
}

// adjust makes the current attempt's usage the whole stream's: a
// continuation's counts the tokens sent before it as completion tokens,
// not as prompt tokens.
func (st *relay) adjust(u openai.Usage) openai.Usage {
	if !st.cont {
		return u
	}
	u.CompletionTokens += st.base
	if st.extended {
		u.PromptTokens = max(u.PromptTokens-st.base, 0)
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	return u
}

// chatChoices re-encodes the choices of a completions chunk (a chat's
// continuation from token ids) as a chat chunk's: text as delta.content.
func (st *relay) chatChoices(c *chunk) json.RawMessage {
	b := []byte{'['}
	for i := range c.Choices {
		ch := &c.Choices[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"index":`...)
		b = strconv.AppendInt(b, int64(ch.Index), 10)
		if ch.HasText && ch.Text != "" {
			b = append(b, `,"delta":{"content":`...)
			b = openai.AppendString(b, ch.Text)
			b = append(b, '}')
		} else {
			b = append(b, `,"delta":{}`...)
		}
		if st.req.tokenIDs && ch.HasTokenIDs {
			b = append(b, `,"token_ids":`...)
			b = append(b, mustJSON(ch.TokenIDs)...)
		}
		b = append(b, `,"logprobs":null,"finish_reason":`...)
		if ch.HasFinish {
			b = openai.AppendString(b, ch.FinishReason)
		} else {
			b = append(b, "null"...)
		}
		b = append(b, '}')
	}
	return append(b, ']')
}

// flush appends the queued events to the log, where readers get them.
func (st *relay) flush() error {
	if len(st.pending) > 0 {
		st.out.append(st.pending...)
		clear(st.pending)
		st.pending = st.pending[:0]
	}
	if !st.upFirst.IsZero() && !st.overheadOK {
		st.overheadOK = true
		total := st.g.now().Sub(st.start)
		up := st.upFirst.Sub(st.sentAt)
		st.g.m.overhead.Observe(max(total-up, 0).Seconds())
	}
	return nil
}

// endLocally ends a stream whose last upstream broke after all its text
// was sent: the finish chunk (unless sent) and [DONE].
func (st *relay) endLocally(reason string) {
	if !st.finished && !st.terminal {
		c := map[string]json.RawMessage{"id": st.id, "created": st.created, "model": st.model}
		if st.req.kind == openai.Chat {
			c["object"] = mustJSON("chat.completion.chunk")
			c["choices"] = json.RawMessage(`[{"index":0,"delta":{},"logprobs":null,"finish_reason":` + strconv.Quote(reason) + `}]`)
		} else {
			c["object"] = mustJSON("text_completion")
			c["choices"] = json.RawMessage(`[{"index":0,"text":"","logprobs":null,"finish_reason":` + strconv.Quote(reason) + `}]`)
		}
		st.put(marshalObject(c, chunkKeyOrder))
		st.finished = true
	}
	st.pending = append(st.pending, streamlog.Entry{Kind: streamlog.Done})
	st.done = true
	st.flush()
}

// endWithError ends a started stream with an error event and [DONE].
func (st *relay) endWithError(e *openai.Error) {
	if !st.terminal {
		st.pending = append(st.pending, errorEntry(e))
		st.terminal = true
	}
	st.pending = append(st.pending, streamlog.Entry{Kind: streamlog.Done})
	st.done = true
	st.flush()
}

// giveUp answers a request that no upstream could finish.
func (st *relay) giveUp(last error) {
	if st.done {
		return
	}
	msg := "no upstream could serve the request"
	if last != nil {
		msg += ": " + last.Error()
	}
	if !st.started {
		e := &openai.Error{Status: http.StatusBadGateway, Type: openai.TypeServer, Code: "upstream_unavailable", Message: msg}
		var ue *upstreamError
		if errors.As(last, &ue) && strings.HasPrefix(ue.msg, "status 429") {
			e = &openai.Error{Status: http.StatusTooManyRequests, Type: openai.TypeRateLimit, Code: "upstreams_busy", Message: msg, RetryAfter: 1}
		}
		openai.WriteError(st.w, e)
		return
	}
	if st.finished && !st.terminal {
		st.endLocally("")
		return
	}
	st.endWithError(&openai.Error{Status: http.StatusBadGateway, Type: openai.TypeServer, Code: "upstream_failed", Message: msg})
}

func copyHeader(dst, src http.Header, names ...string) {
	for _, n := range names {
		if v := src.Get(n); v != "" {
			dst.Set(n, v)
		}
	}
}
