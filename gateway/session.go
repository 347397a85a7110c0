package gateway

import (
	"bytes"
	"container/list"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spigot-llm/spigot/api/openai"
	"github.com/spigot-llm/spigot/engine"
	streamlog "github.com/spigot-llm/spigot/stream"
)

// This file is the gateway's side of resumable streams. Every generation
// request runs as a session: its relay (proxy.go) goes on in a goroutine
// of its own and writes what the client is to get into the session,
// whether or not a client is reading. Before the stream starts, that is a
// head: an error answer or a whole (non-streamed) response. Once it
// starts, it is a [streamlog.Log] of the client-facing events, one entry per
// SSE event:
//
//   - Token: Event.Text is an OpenAI stream chunk, the data of one SSE
//     event, as the upstream sent it (or as a failover rewrote it);
//   - Final: an error event ends the stream; Err is the error and
//     Event.Text its data;
//   - Done: data: [DONE].
//
// Transports read the log from any position: SSE with ids STREAM:SEQ (as
// spigot serve sends them), WebSocket and gRPC with seq numbers. A client
// that goes away leaves the session running for the resume window; a
// resume attaches a new reader where the old one stopped.
//
// With several gateway instances (streams.advertise), a stream id names
// the instance that owns it, signed with the shared secret; an instance
// asked to resume another's stream forwards the request there.

// session is one generation request through the gateway.
type session struct {
	g         *Gateway
	id        string
	req       *request
	key       *clientKey // the client key that started it; nil: none
	resumable bool
	log       streamlog.Log
	// head is what the relay answered before the stream started (an
	// error, a whole response) or the stream's response headers. It is
	// final once ready is closed; streaming then says which.
	head      headWriter
	streaming bool
	ready     chan struct{}
	ctx       context.Context         // the relay's
	cancel    context.CancelCauseFunc // ends the relay (a mirror: its reading)
	relay     *relay
	// inl, if not nil, is the reader of the connection that started the
	// session, served by the relay's goroutine (see inline); set before
	// the relay runs.
	inl     *inline
	created int64 // unix seconds, for WebSocket and gRPC start events
	// owner, for a mirror of a stream another instance owns (see
	// remoteSession), is that instance's URL, and auth the client's
	// Authorization to call it with.
	owner, auth string
	// elem and bytes place a finished session in the registry's budget
	// (guarded by its mutex).
	elem  *list.Element
	bytes int64
	// promptTokens is the prompt's length in tokens, once a spigot
	// upstream has reported it (gRPC's Start event carries it).
	promptTokens atomic.Int32

	mu      sync.Mutex
	reader  context.CancelCauseFunc // the attached reader's, if any
	readers uint64
	timer   *time.Timer // the resume window, while no reader is attached
	ended   bool        // the relay returned
}

// headWriter records a response: the relay writes its answers before a
// stream starts to it.
type headWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (h *headWriter) Header() http.Header {
	if h.header == nil {
		h.header = http.Header{}
	}
	return h.header
}

func (h *headWriter) WriteHeader(status int) {
	if h.status == 0 {
		h.status = status
	}
}

func (h *headWriter) Write(b []byte) (int, error) {
	h.WriteHeader(http.StatusOK)
	return h.body.Write(b)
}

// error returns the head as an *openai.Error when it is one (the body is
// an OpenAI error object), else a generic one with its status.
func (h *headWriter) error() *openai.Error {
	e, ok := decodeError(h.body.Bytes())
	if !ok {
		e = &openai.Error{Type: openai.TypeServer, Message: strings.TrimSpace(h.body.String())}
	}
	e.Status = h.status
	if v, err := strconv.Atoi(h.header.Get("Retry-After")); err == nil {
		e.RetryAfter = v
	}
	return e
}

// streams is the gateway's registry of resumable sessions. A session
// enters when it starts and leaves when the resume window has passed
// since its end, or sooner, once finished, when finished sessions hold
// more than the budget of memory (streams.max_memory; oldest first).
// Running sessions are bounded by admission (limits.max_in_flight).
type streams struct {
	mu            sync.Mutex
	m             map[string]*session
	finished      list.List // of *session, registered and finished, oldest first
	finishedBytes int64
	budget        int64
}

func (s *streams) get(id string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[id]
}

func (s *streams) add(ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]*session{}
	}
	s.m[ss.id] = ss
}

func (s *streams) remove(ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drop(ss)
}

func (s *streams) drop(ss *session) {
	if s.m[ss.id] == ss {
		delete(s.m, ss.id)
	}
	if ss.elem != nil {
		s.finished.Remove(ss.elem)
		ss.elem = nil
		s.finishedBytes -= ss.bytes
	}
}

// finish counts a finished session against the budget, dropping the
// oldest finished sessions beyond it.
func (s *streams) finish(ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m[ss.id] != ss {
		return
	}
	ss.bytes = ss.log.Bytes()
	ss.elem = s.finished.PushBack(ss)
	s.finishedBytes += ss.bytes
	for s.finishedBytes > s.budget && s.finished.Len() > 0 {
		s.drop(s.finished.Front().Value.(*session))
	}
}

// Len returns the sessions kept (running or finished within the window).
func (s *streams) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// Errors that end a session's relay.
var (
	errAbandoned = errors.New("the client went away and did not resume the stream within the resume window")
	errReplaced  = errors.New("another connection resumed the stream")
	errCanceled  = errors.New("the stream was canceled")
)

// newSession makes the session of a request; run relays it.
func (g *Gateway) newSession(req *request, m *meter, auth string, start time.Time, resumable bool) *session {
	ctx, cancel := context.WithCancelCause(g.ctx)
	ss := &session{g: g, id: g.newStreamID(), req: req, resumable: resumable && g.cfg.Streams.ResumeWindow > 0,
		ready: make(chan struct{}), ctx: ctx, cancel: cancel, created: g.now().Unix()}
	if m != nil {
		ss.key = m.key
	}
	ss.relay = &relay{g: g, w: &ss.head, out: ss, req: req, start: start, meter: m, auth: auth}
	if ss.resumable {
		g.streams.add(ss)
	}
	return ss
}

// run relays the session's request in the calling goroutine until it is
// answered or the session canceled; release, if not nil, is called when
// the relay ends (the request's admission slot).
func (ss *session) run(release func()) {
	defer ss.cancel(nil)
	ss.g.relay(ss.ctx, ss.relay)
	if release != nil {
		release()
	}
	ss.end(ss.ctx)
}

// startSession starts relaying a request in a session and a goroutine of
// its own, for readers that attach to it (WebSocket, gRPC).
func (g *Gateway) startSession(req *request, m *meter, auth string, start time.Time, resumable bool, release func()) *session {
	ss := g.newSession(req, m, auth, start, resumable)
	g.sessions.Add(1)
	go func() {
		defer g.sessions.Done()
		ss.run(release)
	}()
	return ss
}

// append adds entries to the log and hands them to the inline reader,
// if any.
func (ss *session) append(es ...streamlog.Entry) {
	ss.log.Append(es...)
	if ss.inl != nil {
		ss.inl.push()
	}
}

// begin marks the start of the stream: head holds its headers.
func (ss *session) begin() {
	ss.streaming = true
	close(ss.ready)
	if ss.inl != nil {
		ss.inl.open()
	}
}

// end is called when the relay has returned: a stream cut without its
// end gets an error event and the Done entry, so that every reader sees
// exactly one end. The session is forgotten after the resume window.
func (ss *session) end(ctx context.Context) {
	if !ss.streaming {
		if ss.head.status == 0 { // nothing was answered: the relay was canceled
			openai.WriteError(&ss.head, openai.ErrorFor(context.Cause(ctx)))
		}
		close(ss.ready)
	} else if !ss.log.Done() {
		e := openai.ErrorFor(context.Cause(ctx))
		if c := context.Cause(ctx); errors.Is(c, errCanceled) || errors.Is(c, errAbandoned) {
			e = &openai.Error{Status: openai.StatusClientClosed, Type: openai.TypeInvalidRequest, Code: "canceled", Message: c.Error()}
		}
		ss.append(errorEntry(e), streamlog.Entry{Kind: streamlog.Done})
	}
	ss.mu.Lock()
	ss.ended = true
	if ss.timer != nil {
		ss.timer.Stop()
		ss.timer = nil
	}
	ss.mu.Unlock()
	if ss.resumable {
		ss.g.streams.finish(ss)
		time.AfterFunc(ss.g.cfg.Streams.ResumeWindow, func() { ss.g.streams.remove(ss) })
	}
}

// errorEntry is the Final entry of a stream that ends with e.
func errorEntry(e *openai.Error) streamlog.Entry {
	return streamlog.Entry{Kind: streamlog.Final, Err: e, Event: eventText(openai.AppendError(nil, e))}
}

// attach makes a reader the session's: the previous reader, if any, is
// ended (errReplaced), and the resume window stops running. The returned
// context ends with the reader's ctx or when another reader attaches;
// release must be called when the reader stops, complete reporting
// whether it read the stream to its end.
func (ss *session) attach(ctx context.Context) (context.Context, func(complete bool)) {
	rctx, cancel := context.WithCancelCause(ctx)
	ss.mu.Lock()
	if ss.reader != nil {
		ss.reader(errReplaced)
	}
	if ss.timer != nil {
		ss.timer.Stop()
		ss.timer = nil
	}
	ss.readers++
	n := ss.readers
	ss.reader = cancel
	ss.mu.Unlock()
	return rctx, func(complete bool) {
		cancel(nil)
		ss.mu.Lock()
		defer ss.mu.Unlock()
		if ss.readers != n { // replaced: the new reader owns the session
			return
		}
		ss.reader = nil
		if complete || ss.ended {
			return
		}
		if !ss.resumable {
			ss.cancel(errAbandoned)
			return
		}
		ss.timer = time.AfterFunc(ss.g.cfg.Streams.ResumeWindow, func() { ss.cancel(errAbandoned) })
	}
}

// stop cancels the stream at a client's request: the relay ends, and its
// readers get an error event (code canceled). A mirror passes the cancel
// on to the owner, whose error event then comes through the mirror.
func (ss *session) stop() {
	if ss.owner == "" {
		ss.cancel(errCanceled)
		return
	}
	ss.g.sessions.Add(1)
	go func() {
		defer ss.g.sessions.Done()
		ctx, cancel := context.WithTimeout(ss.g.ctx, ss.g.opts.WriteTimeout)
		defer cancel()
		resp, err := ss.g.peer(ctx, ss.auth, ss.owner, http.MethodPost, "/v1/streams/"+url.PathEscape(ss.id)+"/cancel", "")
		if err == nil {
			resp.Body.Close()
		}
		if err != nil || resp.StatusCode != http.StatusOK {
			ss.cancel(errCanceled)
		}
	}()
}

// abandon is called when the client goes away before the stream starts:
// it has no id to resume with, so the relay is canceled.
func (ss *session) abandon() { ss.cancel(errAbandoned) }

// newStreamID returns a new stream id: gs-RANDOM, and with
// streams.advertise gs-RANDOM.OWNER.MAC, OWNER this instance's advertised
// URL (base64url) and MAC its signature.
func (g *Gateway) newStreamID() string {
	var b [12]byte
	rand.Read(b[:])
	id := "gs-" + hex.EncodeToString(b[:])
	if g.cfg.Streams.Advertise == "" {
		return id
	}
	id += "." + base64.RawURLEncoding.EncodeToString([]byte(g.cfg.Streams.Advertise))
	return id + "." + g.streamMAC(id)
}

func (g *Gateway) streamMAC(s string) string {
	h := hmac.New(sha256.New, []byte(g.cfg.Streams.Secret))
	h.Write([]byte(s))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:16])
}

// streamOwner returns the base URL of the instance that owns stream id
// when another does, "" when it is this instance's (or names none).
func (g *Gateway) streamOwner(id string) (string, error) {
	rest, mac, ok := cutLast(id, '.')
	if !ok || g.cfg.Streams.Advertise == "" {
		return "", nil
	}
	_, owner64, ok := cutLast(rest, '.')
	if !ok || !hmac.Equal([]byte(mac), []byte(g.streamMAC(rest))) {
		return "", openai.StreamNotFound(id, g.cfg.Streams.ResumeWindow)
	}
	owner, err := base64.RawURLEncoding.DecodeString(owner64)
	if err != nil {
		return "", openai.StreamNotFound(id, g.cfg.Streams.ResumeWindow)
	}
	if string(owner) == g.cfg.Streams.Advertise {
		return "", nil
	}
	return string(owner), nil
}

func cutLast(s string, sep byte) (before, after string, ok bool) {
	i := strings.LastIndexByte(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+1:], true
}

// find returns the local session id for a client with key k, or the
// error to refuse a resume of it after event after with. A stream is
// resumed only with the key that started it.
func (g *Gateway) find(id string, k *clientKey, after uint64) (*session, error) {
	ss := g.streams.get(id)
	if ss == nil || ss.key != k {
		return nil, openai.StreamNotFound(id, g.cfg.Streams.ResumeWindow)
	}
	if last := ss.log.Last(); after > last {
		return nil, &openai.Error{Status: http.StatusRequestedRangeNotSatisfiable, Type: openai.TypeInvalidRequest, Param: "after",
			Code: "out_of_range", Message: fmt.Sprintf("stream %s has sent %d events so far; event %d is not one of them", id, last, after)}
	}
	return ss, nil
}

// eventText is an entry's Event with text b.
func eventText(b []byte) (ev engine.Event) {
	ev.Text = string(b)
	return ev
}

// decodeError reads an OpenAI error object, {"error":{...}} (code may be
// any JSON value; a string is kept).
func decodeError(b []byte) (*openai.Error, bool) {
	var v struct {
		Error *struct {
			Message string `json:"message"`
			Type    string `json:"type"`
			Param   any    `json:"param"`
			Code    any    `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &v) != nil || v.Error == nil {
		return nil, false
	}
	e := &openai.Error{Message: v.Error.Message, Type: v.Error.Type}
	e.Param, _ = v.Error.Param.(string)
	e.Code, _ = v.Error.Code.(string)
	return e, true
}

// model is the model the stream's request named, else the one its first
// chunk names.
func (ss *session) model() string {
	if ss.req != nil && ss.req.model != "" {
		return ss.req.model
	}
	var m string
	ss.log.Range(ss.log.Last(), func(e *streamlog.Entry) bool {
		if e.Kind != streamlog.Token {
			return true
		}
		var c struct {
			Model string `json:"model"`
		}
		json.Unmarshal([]byte(e.Event.Text), &c)
		m = c.Model
		return false
	})
	return m
}
