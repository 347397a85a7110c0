package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/spigot-llm/spigot/api/openai"
	"github.com/spigot-llm/spigot/api/wsapi"
	streamlog "github.com/spigot-llm/spigot/stream"
)

// This file is the WebSocket front, GET /v1/ws, with spigot serve's
// protocol (package wsapi): the client sends chat, completion, cancel,
// resume and ping messages, each generation under an id it picks; the
// gateway answers start, delta, done, error and pong. The generations are
// sessions like SSE's, so a stream started on a socket can be resumed
// over SSE, another socket or gRPC, on any instance, and the other way
// round.

// wsConn is one socket.
type wsConn struct {
	g      *Gateway
	c      *websocket.Conn
	key    *clientKey
	auth   string // the client's Authorization, for peers and open gateways
	ctx    context.Context
	cancel context.CancelFunc

	mu   sync.Mutex
	gens map[string]*wsGen
	wg   sync.WaitGroup
}

// wsGen is a generation on a socket: ss is nil until its session starts.
type wsGen struct {
	ss       *session
	canceled bool
}

// handleWS serves GET /v1/ws.
func (g *Gateway) handleWS(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		w.Header().Set("Upgrade", "websocket")
		openai.WriteError(w, &openai.Error{Status: http.StatusUpgradeRequired, Type: openai.TypeInvalidRequest, Code: "websocket_required",
			Message: "GET /v1/ws is a WebSocket endpoint: connect with a WebSocket client"})
		return
	}
	auth := r.Header.Get("Authorization")
	token, found := strings.CutPrefix(auth, "Bearer ")
	if !found {
		token = ""
	}
	if token == "" {
		// A browser cannot set headers: the key may come as a
		// subprotocol.
		if token = wsapi.Key(r); token != "" {
			auth = "Bearer " + token
		}
	}
	k, err := g.keyFor(token)
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	if len(g.keys) > 0 {
		auth = "Bearer " + token
	}
	opts := &websocket.AcceptOptions{Subprotocols: []string{wsapi.Protocol}}
	if len(g.cfg.CORS.AllowedOrigins) > 0 {
		opts.OriginPatterns = g.cfg.CORS.AllowedOrigins
	}
	c, err := websocket.Accept(w, r, opts)
	if err != nil {
		g.log.Debug("websocket handshake failed", "err", err)
		return
	}
	c.SetReadLimit(openai.MaxBodyBytes)
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	wc := &wsConn{g: g, c: c, key: k, auth: auth, ctx: ctx, cancel: cancel, gens: map[string]*wsGen{}}
	pinged := make(chan struct{})
	go func() {
		defer close(pinged)
		wc.keepalive()
	}()
	clean := wc.readLoop()
	if clean {
		// The client said goodbye: its generations are over too. A
		// socket that dropped leaves them to be resumed.
		wc.mu.Lock()
		for _, gen := range wc.gens {
			gen.canceled = true
			if gen.ss != nil {
				gen.ss.stop()
			}
		}
		wc.mu.Unlock()
	}
	cancel()
	wc.wg.Wait()
	<-pinged
	c.CloseNow()
}

// readLoop handles messages until the socket ends; it reports whether
// the client closed it with a close frame.
func (wc *wsConn) readLoop() bool {
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
		switch {
		case err != nil:
			wc.reject(msg.ID, err)
			continue
		case msg.Type == "ping":
			wc.send(wsapi.Pong)
			continue
		}
		wc.handle(&msg)
	}
}

// handle acts on a chat, completion, cancel or resume message.
func (wc *wsConn) handle(msg *wsapi.Message) {
	wc.mu.Lock()
	gen, taken := wc.gens[msg.ID]
	running := len(wc.gens)
	if msg.Type == "cancel" {
		if taken {
			gen.canceled = true
			if gen.ss != nil {
				gen.ss.stop() // its delivery sends the error (code canceled)
			}
		}
		wc.mu.Unlock()
		if !taken {
			wc.reject(msg.ID, &openai.Error{Status: http.StatusNotFound, Type: openai.TypeInvalidRequest, Code: "generation_not_found",
				Message: "no generation " + strconv.Quote(msg.ID) + " is running on this socket"})
		}
		return
	}
	if !taken && running < wsapi.MaxGenerations {
		wc.gens[msg.ID] = &wsGen{}
	}
	wc.mu.Unlock()
	switch {
	case taken:
		wc.reject(msg.ID, openai.BadRequest("id", "generation %q is already running on this socket; pick another id", msg.ID))
		return
	case running >= wsapi.MaxGenerations:
		wc.reject(msg.ID, &openai.Error{Status: http.StatusTooManyRequests, Type: openai.TypeRateLimit, Code: "too_many_generations",
			Message: "this socket already runs " + strconv.Itoa(running) + " generations; wait for one to end"})
		return
	}
	wc.wg.Add(1)
	go func() {
		defer wc.wg.Done()
		ss, after, err := wc.open(msg)
		if err == nil {
			wc.mu.Lock()
			g := wc.gens[msg.ID]
			g.ss = ss
			if g.canceled {
				ss.stop()
			}
			wc.mu.Unlock()
			err = wc.deliver(msg.ID, ss, after)
		}
		wc.mu.Lock()
		delete(wc.gens, msg.ID)
		wc.mu.Unlock()
		if err != nil {
			wc.reject(msg.ID, err)
		}
	}()
}

// open starts a generation's session, or finds the one a resume names
// (mirroring it from its owner when another instance has it), and
// returns it with the entry to deliver after.
func (wc *wsConn) open(msg *wsapi.Message) (*session, uint64, error) {
	g := wc.g
	if msg.Type == "resume" {
		owner, err := g.streamOwner(msg.Stream)
		if err != nil {
			return nil, 0, err
		}
		var ss *session
		if owner != "" {
			ss, err = g.remoteSession(wc.ctx, wc.auth, owner, msg.Stream, msg.After)
		} else {
			ss, err = g.find(msg.Stream, wc.key, msg.After)
		}
		if err != nil {
			return nil, 0, err
		}
		return ss, msg.After, nil
	}
	kind := openai.Chat
	if msg.Type == "completion" {
		kind = openai.Completion
	}
	req, err := streamingRequest(msg.Request, kind, g.cfg.Routing.PrefixBytes)
	if err != nil {
		return nil, 0, err
	}
	if !g.serves(req.model) {
		return nil, 0, openai.ModelNotFound(req.model)
	}
	m, release, err := g.admit(wc.ctx, wc.key)
	if err != nil {
		return nil, 0, err
	}
	m.estimatePrompt(len(req.raw))
	auth := ""
	if len(g.keys) == 0 {
		auth = wc.auth
	}
	ss := g.startSession(req, m, auth, g.now(), !req.cancelOnDisconnect, release)
	select {
	case <-ss.ready:
	case <-wc.ctx.Done():
		ss.abandon()
		return nil, 0, wc.ctx.Err()
	}
	if !ss.streaming {
		return nil, 0, ss.head.error()
	}
	return ss, 0, nil
}

// streamingRequest parses a generation body from a front that always
// streams with usage (WebSocket, gRPC): stream and
// stream_options.include_usage are set in it.
func streamingRequest(body []byte, kind openai.Kind, prefixBytes int) (*request, error) {
	var f map[string]json.RawMessage
	if json.Unmarshal(body, &f) != nil || f == nil {
		return nil, openai.BadRequest("request", "request must be a JSON object: the body of a %s request", kindPath(kind))
	}
	so := map[string]json.RawMessage{}
	if raw, ok := f["stream_options"]; ok && string(raw) != "null" {
		if json.Unmarshal(raw, &so) != nil {
			return nil, openai.BadRequest("stream_options", "stream_options has the wrong type")
		}
	}
	so["include_usage"] = json.RawMessage("true")
	f["stream"], f["stream_options"] = json.RawMessage("true"), mustJSON(so)
	return parseRequest(marshalObject(f, nil), kind, prefixBytes)
}

// deliver sends a session's entries after seq after as messages: start,
// then deltas, then done or error. It returns the error to send instead
// when the stream cannot be delivered (ended, or resumed elsewhere).
func (wc *wsConn) deliver(id string, ss *session, after uint64) error {
	k := &wsSink{wc: wc, id: id}
	if after > 0 {
		k.r.replay(&ss.log, after)
		if ss.log.Done() && (after >= ss.log.Last() || k.r.ended) {
			return &openai.Error{Status: http.StatusGone, Type: openai.TypeInvalidRequest, Code: "stream_ended",
				Message: "stream " + ss.id + " has ended; its last event was sent"}
		}
	}
	ctx, release := ss.attach(wc.ctx)
	wc.send(wsapi.AppendStart(nil, id, ss.id, ss.model(), ss.created))
	_, err := ss.log.Deliver(ctx, after, streamlog.Options{}, k)
	release(err == nil)
	switch {
	case err == nil || wc.ctx.Err() != nil:
		return nil // delivered, or the socket is gone
	case errors.Is(context.Cause(ctx), errReplaced):
		return &openai.Error{Status: http.StatusConflict, Type: openai.TypeInvalidRequest, Code: "stream_resumed_elsewhere",
			Message: "another connection resumed stream " + ss.id + "; it is delivered there"}
	}
	return err
}

// keepalive pings the client every KeepAlive; one that does not answer
// is cut off.
func (wc *wsConn) keepalive() {
	every := wc.g.opts.KeepAlive
	if every <= 0 {
		<-wc.ctx.Done()
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-wc.ctx.Done():
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(wc.ctx, max(every, wc.g.opts.WriteTimeout))
			err := wc.c.Ping(ctx)
			cancel()
			if err != nil && wc.ctx.Err() == nil {
				wc.c.CloseNow()
				return
			}
		}
	}
}

func (wc *wsConn) send(b []byte) error {
	ctx, cancel := context.WithTimeout(wc.ctx, wc.g.opts.WriteTimeout)
	defer cancel()
	return wc.c.Write(ctx, websocket.MessageText, b)
}

func (wc *wsConn) reject(id string, err error) {
	wc.send(wsapi.AppendError(nil, id, 0, openai.ErrorFor(err)))
}

// wsSink writes a session's entries as messages.
type wsSink struct {
	wc  *wsConn
	id  string
	r   eventReader
	buf []byte
}

func (k *wsSink) Write(es []streamlog.Entry) error {
	for i := range es {
		e := &es[i]
		switch e.Kind {
		case streamlog.Token:
			for _, d := range k.r.read(e) {
				b := wsapi.AppendDelta(k.buf[:0], k.id, e.Seq, d.index, d.text)
				if d.logprobs != nil {
					b = append(b, `,"logprobs":`...)
					b = append(b, d.logprobs...)
				}
				if err := k.send(append(b, '}')); err != nil {
					return err
				}
			}
		case streamlog.Final:
			k.r.read(e)
			if err := k.send(wsapi.AppendError(k.buf[:0], k.id, e.Seq, openai.ErrorFor(e.Err))); err != nil {
				return err
			}
		case streamlog.Done:
			if k.r.ended {
				continue // the error was the end
			}
			if err := k.send(wsapi.AppendDone(k.buf[:0], k.id, e.Seq, k.r.finishReasons(), k.r.usage)); err != nil {
				return err
			}
		}
	}
	return nil
}

func (k *wsSink) send(b []byte) error {
	k.buf = b
	return k.wc.send(b)
}

func (k *wsSink) KeepAlive() error { return nil }
