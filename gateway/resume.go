package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spigot-llm/spigot/api/openai"
	streamlog "github.com/spigot-llm/spigot/stream"
)

// This file serves sessions over SSE: the first connection, resumes
// (GET /v1/streams/{id}, or a generation POST with Last-Event-ID, as
// spigot serve takes them), cancels, and the forwarding of both to the
// instance that owns a stream.

// forwardedHeader marks a request one instance forwarded to another: the
// owner answers it itself and never forwards it again.
const forwardedHeader = "X-Spigot-Forwarded"

// inline is the reader of the connection that started a session, served
// by the relay itself: the request's handler runs the relay, and each
// batch of events the relay appends to the log is written to the client
// at once, from the same goroutine, as a plain proxy would (a reader
// goroutine woken for every token would cost a context switch per token).
// When the client goes away (the request's context ends) or another
// connection resumes the stream, the relay goes on in the handler's
// goroutine, appending to the log for the resume, until the stream ends
// or its resume window passes.
type inline struct {
	ss      *session
	w       http.ResponseWriter
	k       *sseSink
	release func(complete bool) // ss.attach's

	mu        sync.Mutex
	live      bool // the client is there and owns the stream: write to it
	started   bool // the stream's headers were sent
	last      uint64
	buf       []streamlog.Entry
	lastWrite time.Time
	ka        *time.Timer // keepalive comments while the stream is silent
}

// serveInline answers a request by running its session's relay in the
// handler: the head when the relay answered before any stream (an error,
// a whole response), else the stream's events as they come. release, if
// not nil, frees the request's admission slot when the relay ends.
func (g *Gateway) serveInline(w http.ResponseWriter, r *http.Request, ss *session, release func()) {
	in := &inline{ss: ss, w: w, live: true,
		k: &sseSink{w: w, rc: http.NewResponseController(w), id: ss.id, timeout: g.opts.WriteTimeout}}
	rctx, rel := ss.attach(r.Context())
	in.release = rel
	stop := context.AfterFunc(rctx, in.gone)
	ss.inl = in
	g.sessions.Add(1)
	defer g.sessions.Done()
	ss.run(release)
	stop()
	in.mu.Lock()
	live := in.live
	in.live = false
	if in.ka != nil {
		in.ka.Stop()
	}
	in.mu.Unlock()
	if !live {
		return // gone, or taken over: released then
	}
	if !ss.streaming {
		h := w.Header()
		for k, v := range ss.head.header {
			h[k] = v
		}
		w.WriteHeader(ss.head.status)
		w.Write(ss.head.body.Bytes())
		rel(true)
		return
	}
	in.k.done()
	rel(in.last == ss.log.Last() && ss.log.Done())
}

// open sends the stream's headers, when the relay begins the stream.
func (in *inline) open() {
	in.mu.Lock()
	if !in.live {
		in.mu.Unlock()
		return
	}
	in.started = true
	h := in.w.Header()
	for k, v := range in.ss.head.header {
		h[k] = v
	}
	h.Set("X-Spigot-Stream", in.ss.id)
	in.w.WriteHeader(http.StatusOK)
	err := in.k.flush() // the headers, at once
	in.lastWrite = time.Now()
	if ka := in.ss.g.opts.KeepAlive; ka > 0 && err == nil {
		in.ka = time.AfterFunc(ka, in.keepalive)
	}
	in.mu.Unlock()
	if err != nil {
		in.lost()
	}
}

// push writes the entries the log has beyond what was written.
func (in *inline) push() {
	in.mu.Lock()
	if !in.live || !in.started {
		in.mu.Unlock()
		return
	}
	in.buf, _, _ = in.ss.log.Read(in.buf[:0], in.last, 0, nil)
	var err error
	if len(in.buf) > 0 {
		err = in.k.Write(in.buf)
		in.last = in.buf[len(in.buf)-1].Seq
		clear(in.buf)
		in.lastWrite = time.Now()
	}
	in.mu.Unlock()
	if err != nil {
		in.lost()
	}
}

// keepalive sends an SSE comment when nothing was written for KeepAlive,
// and arms itself for the next.
func (in *inline) keepalive() {
	in.mu.Lock()
	defer in.mu.Unlock()
	if !in.live {
		return
	}
	every := in.ss.g.opts.KeepAlive
	if since := time.Since(in.lastWrite); since < every {
		in.ka.Reset(every - since)
		return
	}
	if in.k.KeepAlive() != nil {
		in.live = false
		go in.release(false)
		return
	}
	in.lastWrite = time.Now()
	in.ka.Reset(every)
}

// lost stops writing to a client whose write failed.
func (in *inline) lost() {
	in.mu.Lock()
	was := in.live
	in.live = false
	in.mu.Unlock()
	if was {
		in.release(false)
	}
}

// gone is called when the request's context ends (the client went away)
// or another connection resumed the stream. Before the stream began,
// the client has no id to resume with: the relay is canceled.
func (in *inline) gone() {
	in.mu.Lock()
	was, started := in.live, in.started
	in.live = false
	in.mu.Unlock()
	if !was {
		return
	}
	if !started {
		in.ss.abandon()
	}
	in.release(false)
}

// serveSSE sends a started session's events after seq after as
// server-sent events, each with its id, until the Done entry was sent,
// the client goes away, or another connection resumes the stream.
func (g *Gateway) serveSSE(w http.ResponseWriter, r *http.Request, ss *session, after uint64) {
	ctx, release := ss.attach(r.Context())
	h := w.Header()
	for k, v := range ss.head.header {
		h[k] = v
	}
	h.Set("X-Spigot-Stream", ss.id)
	w.WriteHeader(http.StatusOK)
	k := &sseSink{w: w, rc: http.NewResponseController(w), id: ss.id, timeout: g.opts.WriteTimeout}
	defer k.done()
	var err error
	if err = k.flush(); err == nil { // the headers, at once
		_, err = ss.log.Deliver(ctx, after, streamlog.Options{KeepAlive: g.opts.KeepAlive}, k)
	}
	release(err == nil)
}

// sseSink writes log entries as SSE events with ids STREAM:SEQ: one
// write and one flush per call, under a fresh write deadline.
type sseSink struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	id      string
	timeout time.Duration
	buf     []byte
	err     error
}

func (k *sseSink) Write(es []streamlog.Entry) error {
	for i := range es {
		e := &es[i]
		k.buf = append(k.buf, "id: "...)
		k.buf = append(k.buf, k.id...)
		k.buf = append(k.buf, ':')
		k.buf = strconv.AppendUint(k.buf, e.Seq, 10)
		k.buf = append(k.buf, "\ndata: "...)
		if e.Kind == streamlog.Done {
			k.buf = append(k.buf, "[DONE]"...)
		} else {
			k.buf = append(k.buf, e.Event.Text...)
		}
		k.buf = append(k.buf, "\n\n"...)
	}
	return k.flush()
}

func (k *sseSink) KeepAlive() error {
	k.buf = append(k.buf, ": keepalive\n\n"...)
	return k.flush()
}

func (k *sseSink) flush() error {
	if k.err != nil {
		k.buf = k.buf[:0]
		return k.err
	}
	k.rc.SetWriteDeadline(time.Now().Add(k.timeout)) // ErrNotSupported on recorders: no deadline
	if len(k.buf) > 0 {
		_, k.err = k.w.Write(k.buf)
		k.buf = k.buf[:0]
	}
	if k.err == nil {
		k.err = k.rc.Flush()
	}
	return k.err
}

// done clears the write deadline, which would outlive the response on a
// kept-alive connection.
func (k *sseSink) done() { k.rc.SetWriteDeadline(time.Time{}) }

// parseEventID splits an SSE event id, STREAM:SEQ.
func parseEventID(v string) (id string, seq uint64, err error) {
	id, n, ok := cutLast(v, ':')
	if ok && id != "" {
		if seq, err = strconv.ParseUint(n, 10, 64); err == nil {
			return id, seq, nil
		}
	}
	return "", 0, openai.BadRequest("Last-Event-ID",
		"Last-Event-ID %q is not an event id of this gateway (STREAM:SEQ, as each event's id: field says)", v)
}

// handleStream serves GET /v1/streams/{id}: the stream's events from the
// start, or after the event named by Last-Event-ID (which EventSource
// sends when it reconnects) or the after query parameter.
func (g *Gateway) handleStream(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	v := r.Header.Get("Last-Event-ID")
	if v == "" {
		after := uint64(0)
		if q := r.URL.Query().Get("after"); q != "" {
			n, err := strconv.ParseUint(q, 10, 64)
			if err != nil {
				openai.WriteError(w, openai.BadRequest("after", "after is %q; want the sequence number of the last event received", url.QueryEscape(q)))
				return
			}
			after = n
		}
		v = id + ":" + strconv.FormatUint(after, 10)
	}
	g.resumeSSE(w, r, v, id, -1)
}

// resumeSSE answers a resume after event lastID (STREAM:SEQ): of a stream
// named pathID, if not "", and started at the endpoint of kind, if not -1.
func (g *Gateway) resumeSSE(w http.ResponseWriter, r *http.Request, lastID, pathID string, kind openai.Kind) {
	id, after, err := parseEventID(lastID)
	if err == nil && pathID != "" && id != pathID {
		err = openai.BadRequest("Last-Event-ID", "Last-Event-ID %q names another stream than %s", lastID, pathID)
	}
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	k, ok := g.lookupKey(w, r)
	if !ok {
		return
	}
	owner, err := g.streamOwner(id)
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	if owner != "" {
		g.forward(w, r, owner, http.MethodGet, "/v1/streams/"+url.PathEscape(id), id+":"+strconv.FormatUint(after, 10))
		return
	}
	ss, err := g.find(id, k, after)
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	if kind >= 0 && kind != ss.req.kind {
		openai.WriteError(w, openai.BadRequest("Last-Event-ID", "stream %s is not from this endpoint; resume it at %s or GET /v1/streams/%s", id, ss.req.path, id))
		return
	}
	if after == ss.log.Last() && ss.log.Done() {
		// Everything was sent: 204 tells an EventSource to stop
		// reconnecting.
		w.WriteHeader(http.StatusNoContent)
		return
	}
	g.serveSSE(w, r, ss, after)
}

// handleCancel serves POST /v1/streams/{id}/cancel: the relay stops and
// the upstream request is canceled; a client still reading gets an error
// event (code "canceled") and [DONE].
func (g *Gateway) handleCancel(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	k, ok := g.lookupKey(w, r)
	if !ok {
		return
	}
	owner, err := g.streamOwner(id)
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	if owner != "" {
		g.forward(w, r, owner, http.MethodPost, "/v1/streams/"+url.PathEscape(id)+"/cancel", "")
		return
	}
	ss, err := g.find(id, k, 0)
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	running := !ss.log.Done()
	ss.cancel(errCanceled)
	writeJSON(w, http.StatusOK, struct {
		ID       string `json:"id"`
		Object   string `json:"object"`
		Canceled bool   `json:"canceled"`
	}{id, "stream.cancel", running})
}

// forward passes a resume or cancel on to the instance that owns the
// stream and relays its answer as it comes.
func (g *Gateway) forward(w http.ResponseWriter, r *http.Request, owner, method, path, lastID string) {
	if r.Header.Get(forwardedHeader) != "" {
		// The owner named in the id does not think it owns it: a stale
		// address reused by another instance.
		openai.WriteError(w, openai.StreamNotFound(r.PathValue("id"), g.cfg.Streams.ResumeWindow))
		return
	}
	resp, err := g.peer(r.Context(), r.Header.Get("Authorization"), owner, method, path, lastID)
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	defer resp.Body.Close()
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			rc.SetWriteDeadline(time.Now().Add(g.opts.WriteTimeout))
			if _, werr := w.Write(buf[:n]); werr != nil || rc.Flush() != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	rc.SetWriteDeadline(time.Time{})
}

// peer sends a request to another gateway instance, as the client (auth
// is the client's Authorization).
func (g *Gateway) peer(ctx context.Context, auth, owner, method, path, lastID string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, owner+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set(forwardedHeader, "1")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := g.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &openai.Error{Status: http.StatusBadGateway, Type: openai.TypeServer, Code: "stream_owner_unreachable",
			Message: "the gateway instance that owns the stream, " + owner + ", cannot be reached: " + err.Error()}
	}
	return resp, nil
}

// remoteSession mirrors a stream another instance owns: a session whose
// log a goroutine fills from the owner's SSE events from the start, so
// that WebSocket and gRPC resumes read it as they read a local one. It
// returns once the mirror holds event after, or the error to refuse a
// resume after it with.
func (g *Gateway) remoteSession(ctx context.Context, auth, owner, id string, after uint64) (*session, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	resp, err := g.peer(ctx, auth, owner, http.MethodGet, "/v1/streams/"+url.PathEscape(id), id+":0")
	if err != nil {
		cancel(nil)
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		defer cancel(nil)
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		h := headWriter{header: resp.Header, status: resp.StatusCode}
		h.body.Write(b)
		return nil, h.error()
	}
	ss := &session{g: g, id: id, ready: make(chan struct{}), cancel: cancel, created: g.now().Unix(), streaming: true,
		owner: owner, auth: auth}
	close(ss.ready)
	g.sessions.Add(1)
	go func() {
		defer g.sessions.Done()
		defer cancel(nil)
		defer resp.Body.Close()
		src := newSSESource(resp.Body)
		var err error
		for {
			var data []byte
			_, data, err = src.next()
			if err != nil {
				break
			}
			var e streamlog.Entry
			switch {
			case string(data) == "[DONE]":
				e = streamlog.Entry{Kind: streamlog.Done}
			case strings.HasPrefix(string(data), `{"error"`):
				oe, _ := decodeError(data)
				if oe == nil {
					oe = &openai.Error{Type: openai.TypeServer, Message: string(data)}
				}
				e = streamlog.Entry{Kind: streamlog.Final, Err: oe, Event: eventText(data)}
			default:
				e = streamlog.Entry{Kind: streamlog.Token, Visible: true, Event: eventText(data)}
			}
			ss.append(e)
			if e.Kind == streamlog.Done {
				return
			}
		}
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		ss.append(errorEntry(&openai.Error{Status: http.StatusBadGateway, Type: openai.TypeServer, Code: "stream_owner_failed",
			Message: "the stream from its owner " + owner + " broke: " + err.Error()}), streamlog.Entry{Kind: streamlog.Done})
	}()
	if err := reach(ctx, &ss.log, after); err != nil {
		return nil, err
	}
	if last := ss.log.Last(); after > last {
		return nil, &openai.Error{Status: http.StatusRequestedRangeNotSatisfiable, Type: openai.TypeInvalidRequest, Param: "after",
			Code: "out_of_range", Message: fmt.Sprintf("stream %s has sent %d events; event %d is not one of them", id, last, after)}
	}
	return ss, nil
}

// reach waits until l holds entry seq or is done, or ctx ends.
func reach(ctx context.Context, l *streamlog.Log, seq uint64) error {
	wake := make(chan struct{}, 1)
	for !l.Done() {
		n := l.Last()
		if n >= seq {
			return nil
		}
		if es, _, _ := l.Read(nil, n, 1, wake); len(es) > 0 {
			continue // appended meanwhile
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
		}
	}
	return nil
}
