package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/spigot-llm/spigot/api/openai"
	"github.com/spigot-llm/spigot/api/wsapi"
	"github.com/spigot-llm/spigot/engine"
	"github.com/spigot-llm/spigot/stream"
)

// This file is the WebSocket transport, GET /v1/ws, with the protocol of
// package wsapi: several generations on one socket, each under an id the
// client picks. The requests are the HTTP endpoints' bodies, parsed by the
// same code; the output is the same session log as SSE's and gRPC's, so a
// stream started on a socket can be resumed on another socket, over SSE
// or over gRPC, and the other way round.

// wsConn is one socket.
type wsConn struct {
	s      *Server
	c      *websocket.Conn
	ctx    context.Context // done when the socket ends
	cancel context.CancelFunc

	mu   sync.Mutex
	gens map[string]*session // running generations by client id
	wg   sync.WaitGroup      // their deliveries
}

// handleWS serves GET /v1/ws.
func (s *Server) handleWS(w http.ResponseWriter, r *http.Request, m *Model) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		w.Header().Set("Upgrade", "websocket")
		openai.WriteError(w, &openai.Error{Status: http.StatusUpgradeRequired, Type: openai.TypeInvalidRequest, Code: "websocket_required",
			Message: "GET /v1/ws is a WebSocket endpoint: connect with a WebSocket client"})
		return
	}
	// Origins other than the server's own are refused (403), so that a
	// web page elsewhere cannot use the server through its visitors'
	// browsers.
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{wsapi.Protocol}})
	if err != nil {
		s.log.Debug("websocket handshake failed", "err", err)
		return
	}
	c.SetReadLimit(s.cfg.MaxBodyBytes)
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	wc := &wsConn{s: s, c: c, ctx: ctx, cancel: cancel, gens: make(map[string]*session)}
	s.sockets.Add(1)
	defer s.sockets.Done()
	pinged := make(chan struct{})
	go func() {
		defer close(pinged)
		wc.keepalive()
	}()
	clean := wc.readLoop(m)
	wc.mu.Lock()
	gens := make([]*session, 0, len(wc.gens))
	for _, ss := range wc.gens {
		gens = append(gens, ss)
	}
	wc.mu.Unlock()
	if clean {
		// The client said goodbye: its generations are over too. A socket
		// that dropped without a close frame leaves them to be resumed
		// within the window, as a cut SSE connection does.
		for _, ss := range gens {
			ss.cancelGen()
		}
	}
	cancel()
	wc.wg.Wait()
	<-pinged
	c.CloseNow()
}

// readLoop reads and handles messages until the socket ends. It reports
// whether the client closed it with a close frame (normal closure or going
// away).
func (wc *wsConn) readLoop(m *Model) bool {
	for {
		typ, data, err := wc.c.Read(wc.ctx)
		if err != nil {
			st := websocket.CloseStatus(err)
			return st == websocket.StatusNormalClosure || st == websocket.StatusGoingAway
		}
		if typ != websocket.MessageText {
			wc.reject("", openai.BadRequest("", "binary messages are not understood; send JSON text messages"))
			continue
		}
		msg, err := wsapi.ParseMessage(data)
		if err != nil {
			wc.reject(msg.ID, err)
			continue
		}
		wc.handle(m, &msg)
	}
}

// handle acts on one message that parseWSMessage accepted.
func (wc *wsConn) handle(m *Model, msg *wsapi.Message) {
	s := wc.s
	if msg.Type == "ping" {
		wc.send(wsapi.Pong)
		return
	}
	if msg.Type == "cancel" {
		wc.mu.Lock()
		ss := wc.gens[msg.ID]
		wc.mu.Unlock()
		if ss == nil {
			wc.reject(msg.ID, &openai.Error{Status: http.StatusNotFound, Type: openai.TypeInvalidRequest, Code: "generation_not_found",
				Message: "no generation " + strconv.Quote(msg.ID) + " is running on this socket"})
			return
		}
		ss.cancelGen() // its delivery sends the error event (code canceled)
		return
	}
	wc.mu.Lock()
	_, taken := wc.gens[msg.ID]
	running := len(wc.gens)
	wc.mu.Unlock()
	switch {
	case taken:
		wc.reject(msg.ID, openai.BadRequest("id", "generation %q is already running on this socket; pick another id", msg.ID))
		return
	case running >= wsapi.MaxGenerations:
		wc.reject(msg.ID, &openai.Error{Status: http.StatusTooManyRequests, Type: openai.TypeRateLimit, Code: "too_many_generations",
			Message: "this socket already runs " + strconv.Itoa(running) + " generations; wait for one to end"})
		return
	case s.draining.Load():
		wc.reject(msg.ID, openai.Unavailable("shutting_down", "the server is shutting down"))
		return
	}

	var (
		ss    *session
		after uint64
	)
	if msg.Type == "resume" {
		ss = s.streams.get(msg.Stream)
		if ss == nil {
			wc.reject(msg.ID, openai.StreamNotFound(msg.Stream, s.cfg.ResumeWindow))
			return
		}
		if last := ss.log.Last(); msg.After > last {
			wc.reject(msg.ID, openai.BadRequest("after", "stream %s has sent %d events so far; event %d is not one of them", msg.Stream, last, msg.After))
			return
		} else if msg.After+1 >= last && ss.log.Done() {
			// After the Final entry (a done or error message) only the
			// Done entry is left, which sends nothing here.
			wc.reject(msg.ID, &openai.Error{Status: http.StatusGone, Type: openai.TypeInvalidRequest, Code: "stream_ended",
				Message: fmt.Sprintf("stream %s has ended; event %d was its last", msg.Stream, last-1)})
			return
		}
		after = msg.After
	} else {
		start := time.Now()
		var (
			j   *job
			err error
		)
		if msg.Type == "chat" {
			j, err = prepareChat(m, msg.Request)
		} else {
			j, err = prepareCompletion(m, msg.Request)
		}
		if err == nil {
			j.opts.Stream = true // a socket always streams
			ss, err = s.startSession(wc.ctx, m, j, start)
		}
		if err != nil {
			wc.reject(msg.ID, err)
			return
		}
	}
	wc.mu.Lock()
	wc.gens[msg.ID] = ss
	wc.mu.Unlock()
	// Attached before the start message goes out, so that a resume by
	// another connection right after it replaces this one.
	ctx, release := ss.attach(wc.ctx)
	wc.send(wsapi.AppendStart(nil, msg.ID, ss.id, ss.enc.Model, ss.enc.Created))
	wc.wg.Add(1)
	go wc.deliver(ctx, release, msg.ID, ss, after)
}

// deliver sends a generation's log until its end, the socket's, or
// another connection resuming the stream (the client is told so).
func (wc *wsConn) deliver(ctx context.Context, release func(bool), id string, ss *session, after uint64) {
	defer wc.wg.Done()
	k := &wsSink{wc: wc, id: id, ss: ss, enc: openai.NewEncoder(ss.enc), coalesce: ss.j.opts.Delivery.MinInterval > 0}
	if after > 0 && ss.enc.Kind == openai.Completion && ss.enc.Logprobs {
		var scratch []byte
		ss.log.Range(after, func(e *stream.Entry) bool {
			if e.Kind == stream.Token && e.Visible {
				lp := []engine.Event(nil)
				if e.Event.Token >= 0 {
					lp = []engine.Event{e.Event}
				}
				scratch = k.enc.AppendLogprobs(scratch[:0], e.Choice, e.Event.Text, lp)
			}
			return true
		})
	}
	d := ss.j.opts.Delivery
	_, err := ss.log.Deliver(ctx, after, stream.Options{Rate: d.Pace, MinInterval: d.MinInterval}, k)
	release(err == nil)
	wc.mu.Lock()
	if wc.gens[id] == ss {
		delete(wc.gens, id)
	}
	wc.mu.Unlock()
	if err != nil && errors.Is(context.Cause(ctx), errReplaced) {
		wc.reject(id, &openai.Error{Status: http.StatusConflict, Type: openai.TypeInvalidRequest, Code: "stream_resumed_elsewhere",
			Message: "another connection resumed stream " + ss.id + "; it is delivered there"})
	}
}

// keepalive pings the client every KeepAlive; a client that does not
// answer within the interval (or WriteTimeout, if longer) is cut off.
func (wc *wsConn) keepalive() {
	every := wc.s.cfg.KeepAlive
	var tick <-chan time.Time // nil: no pings
	if every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-wc.ctx.Done():
			return
		case <-wc.s.shutdown:
			wc.closeAfterDeliveries()
			return
		case <-tick:
			ctx, cancel := context.WithTimeout(wc.ctx, max(every, wc.s.cfg.WriteTimeout))
			err := wc.c.Ping(ctx)
			cancel()
			if err != nil && wc.ctx.Err() == nil {
				wc.s.log.Debug("websocket ping failed; closing", "err", err)
				wc.c.CloseNow()
				return
			}
		}
	}
}

// closeAfterDeliveries ends a socket when the server shuts down: its
// generations have been ended by the engine, so their last messages go
// out, then the socket closes (going away).
func (wc *wsConn) closeAfterDeliveries() {
	done := make(chan struct{})
	go func() {
		for {
			wc.mu.Lock()
			n := len(wc.gens)
			wc.mu.Unlock()
			if n == 0 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	case <-wc.ctx.Done():
	}
	wc.c.Close(websocket.StatusGoingAway, "server shutting down")
}

// send writes one message, giving up after WriteTimeout (which closes the
// socket).
func (wc *wsConn) send(b []byte) error {
	ctx, cancel := context.WithTimeout(wc.ctx, wc.s.cfg.WriteTimeout)
	defer cancel()
	return wc.c.Write(ctx, websocket.MessageText, b)
}

// reject sends an error message about a client message or a generation.
func (wc *wsConn) reject(id string, err error) {
	e := openai.ErrorFor(err)
	wc.send(wsapi.AppendError(nil, id, 0, e))
}

// wsSink writes a generation's log entries as WebSocket messages, one per
// delta, done or error. Consecutive tokens of a choice are merged into one
// delta when the request coalesces, as SSE does.
type wsSink struct {
	wc       *wsConn
	id       string
	ss       *session
	enc      *openai.Encoder
	coalesce bool
	buf      []byte
	text     []byte
	lp       []engine.Event
	reasons  []string
}

func (k *wsSink) Write(es []stream.Entry) error {
	for i := 0; i < len(es); i++ {
		e := &es[i]
		k.buf = k.buf[:0]
		switch e.Kind {
		case stream.Token:
			j := i + 1
			if k.coalesce && e.Event.Token >= 0 {
				for j < len(es) && es[j].Kind == stream.Token && es[j].Choice == e.Choice && es[j].Event.Token >= 0 {
					j++
				}
			}
			k.appendDelta(es[i:j])
			i = j - 1
		case stream.Final:
			if e.Err != nil {
				k.buf = wsapi.AppendError(k.buf, k.id, e.Seq, openai.ErrorFor(e.Err))
			} else {
				k.appendDone(e)
			}
		}
		if len(k.buf) == 0 {
			continue
		}
		if err := k.wc.send(k.buf); err != nil {
			return err
		}
	}
	k.ss.delivered(time.Now(), es)
	return nil
}

// appendDelta appends a delta message for the Token entries es of one
// choice, if any is visible.
func (k *wsSink) appendDelta(es []stream.Entry) {
	visible := false
	for i := range es {
		visible = visible || es[i].Visible
	}
	if !visible {
		return
	}
	last := &es[len(es)-1]
	k.text = k.text[:0]
	k.lp = k.lp[:0]
	for i := range es {
		k.text = append(k.text, es[i].Event.Text...)
		if es[i].Event.Token >= 0 {
			k.lp = append(k.lp, es[i].Event)
		}
	}
	b := wsapi.AppendDelta(k.buf, k.id, last.Seq, last.Choice, string(k.text))
	if k.ss.enc.Logprobs {
		b = append(b, `,"logprobs":`...)
		b = k.enc.AppendLogprobs(b, last.Choice, string(k.text), k.lp)
	}
	k.buf = append(b, '}')
}

// appendDone appends the done message: every choice's finish reason and
// the usage.
func (k *wsSink) appendDone(e *stream.Entry) {
	k.reasons = k.reasons[:0]
	for _, r := range e.Results {
		k.reasons = append(k.reasons, r.FinishReason)
	}
	u := k.ss.usage(e.Results)
	k.buf = wsapi.AppendDone(k.buf, k.id, e.Seq, k.reasons, &u)
}

// KeepAlive is not used: the socket's pings keep it alive.
func (k *wsSink) KeepAlive() error { return nil }
