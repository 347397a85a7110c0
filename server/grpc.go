package server

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/spigot-llm/spigot/api/openai"
	"github.com/spigot-llm/spigot/api/spigotpb"
	spigotv1 "github.com/spigot-llm/spigot/api/spigotpb/spigot/v1"
	"github.com/spigot-llm/spigot/stream"
)

// This file serves the gRPC API, spigot.v1.Generation (the proto is
// api/spigotpb/spigot/v1/spigot.proto), with the standard health service
// (SERVING once the model is loaded, NOT_SERVING before and while
// shutting down) and server reflection, so that grpcurl can list and call
// it. A gRPC request is put in the terms of the OpenAI API's request and
// goes through the same validation, so it takes the same parameters and
// gets the same errors, as gRPC statuses.

// GRPCServer returns a gRPC server for s's API, health and reflection.
// Serve it on a listener of its own; stop it after s.Shutdown (which ends
// every generation) with GracefulStop.
func (s *Server) GRPCServer(opts ...grpc.ServerOption) *grpc.Server {
	gs := grpc.NewServer(opts...)
	spigotv1.RegisterGenerationServer(gs, &grpcService{s: s})
	grpc_health_v1.RegisterHealthServer(gs, spigotpb.Health(func() bool { return s.model.Load() != nil && !s.draining.Load() }))
	reflection.Register(gs)
	return gs
}

type grpcService struct {
	spigotv1.UnimplementedGenerationServer
	s *Server
}

// model checks the API key (metadata "authorization: Bearer KEY") and
// returns the served model, or the status to end the call with.
func (s *Server) grpcModel(ctx context.Context) (*Model, error) {
	if s.cfg.APIKey != "" {
		md, _ := metadata.FromIncomingContext(ctx)
		got := strings.Join(md.Get("authorization"), "")
		if subtle.ConstantTimeCompare([]byte(got), []byte("Bearer "+s.cfg.APIKey)) != 1 {
			return nil, grpcStatus(openai.Unauthorized(got == ""))
		}
	}
	if s.draining.Load() {
		return nil, grpcStatus(openai.Unavailable("shutting_down", "the server is shutting down"))
	}
	m := s.model.Load()
	if m == nil {
		return nil, grpcStatus(openai.Unavailable("model_loading", "the model is loading; the health service says when it is ready"))
	}
	return m, nil
}

func grpcError(err error) (codes.Code, string, string) { return spigotpb.Error(err) }

func grpcStatus(err error) error { return spigotpb.Status(err) }

// prepareGRPC validates a gRPC request by putting it in the OpenAI API's
// terms: the same fields, defaults, ranges and errors. Its delivery
// options are stream_options' (pacing; resumable is the opposite of
// cancel_on_disconnect), named as the gRPC request's fields in errors.
func prepareGRPC(m *Model, req *spigotv1.GenerateRequest) (*job, error) {
	j, err := prepareGRPCRequest(m, req)
	var e *openai.Error
	if errors.As(err, &e) && strings.HasPrefix(e.Param, "stream_options.") {
		c := *e
		c.Param = strings.TrimPrefix(c.Param, "stream_options.")
		c.Message = strings.ReplaceAll(c.Message, "stream_options.", "")
		return nil, &c
	}
	return j, err
}

func prepareGRPCRequest(m *Model, req *spigotv1.GenerateRequest) (*job, error) {
	_, r, err := spigotpb.OpenAIRequest(req)
	if err != nil {
		return nil, err
	}
	if c, ok := r.(*openai.CompletionRequest); ok {
		return prepareCompletionRequest(m, c)
	}
	return prepareChatRequest(m, r.(*openai.ChatRequest))
}

// startGRPC validates a gRPC request and starts its session.
func (s *Server) startGRPC(ctx context.Context, m *Model, req *spigotv1.GenerateRequest) (*session, error) {
	start := time.Now()
	j, err := prepareGRPC(m, req)
	if err != nil {
		return nil, err
	}
	return s.startSession(ctx, m, j, start)
}

// findStream returns the resumable stream id, checking that it has
// reached entry after: the session and the entry to deliver after, or
// the error to refuse the resume with. done reports a stream with nothing
// left to send over gRPC after entry after (only its Done entry, or not
// even that).
func (s *Server) findStream(id string, after uint64) (ss *session, done bool, err error) {
	ss = s.streams.get(id)
	if ss == nil {
		return nil, false, openai.StreamNotFound(id, s.cfg.ResumeWindow)
	}
	last := ss.log.Last()
	if after > last {
		return nil, false, &openai.Error{Status: http.StatusRequestedRangeNotSatisfiable, Type: openai.TypeInvalidRequest, Param: "after",
			Code: "out_of_range", Message: fmt.Sprintf("stream %s has sent %d events so far; event %d is not one of them", id, last, after)}
	}
	return ss, after+1 >= last && ss.log.Done(), nil
}

// errGRPCReplaced is the status of a gRPC delivery that another
// connection took over.
var errGRPCReplaced = status.Error(codes.Aborted, "another connection resumed the stream; it is delivered there")

// deliverGRPC sends a session's log after entry after as gRPC events,
// until the Done entry, the end of ctx (the call's, or a Channel
// generation's), or another connection resuming the stream. Events go to
// send in batches, one per write of the log. With inBand, the request's
// failure and a takeover end the delivery with an Error event, as Channel
// does, and deliverGRPC returns nil; otherwise it returns the status to
// end the call with, as Generate and Resume do.
func (s *Server) deliverGRPC(ctx context.Context, ss *session, after uint64, route string, inBand bool,
	send func([]*spigotv1.GenerateResponse) error) error {
	dctx, release := ss.attach(ctx)
	k := &grpcSink{ss: ss, send: send, inBand: inBand,
		coalesce: ss.j.opts.Delivery.MinInterval > 0 && !ss.enc.Logprobs}
	d := ss.j.opts.Delivery
	_, err := ss.log.Deliver(dctx, after, stream.Options{Rate: d.Pace, MinInterval: d.MinInterval}, k)
	release(err == nil)
	var st error
	switch {
	case err == nil && k.failure == nil:
		s.metrics.Request(route, http.StatusOK)
		return nil
	case err == nil:
		s.metrics.Request(route, openai.ErrorFor(k.failure).Status)
		st = grpcStatus(k.failure)
	case errors.Is(context.Cause(dctx), errReplaced):
		s.metrics.Request(route, http.StatusConflict)
		if inBand {
			send([]*spigotv1.GenerateResponse{{StreamId: ss.id, Event: &spigotv1.GenerateResponse_Error{Error: &spigotv1.Error{
				Code: int32(codes.Aborted), Message: "another connection resumed stream " + ss.id + "; it is delivered there"}}}})
		}
		st = errGRPCReplaced
	default: // the client is gone (or its send failed)
		s.metrics.Request(route, openai.StatusClientClosed)
		s.log.Debug("stream delivery ended", "rpc", route, "stream", ss.id, "err", err, "resumable", ss.resumable)
		if ctx.Err() != nil {
			st = status.FromContextError(ctx.Err()).Err()
		} else {
			st = err
		}
	}
	if inBand {
		return nil
	}
	return st
}

// grpcSink writes log entries as gRPC events: Start (of choice 0), a
// Delta per visible token (consecutive tokens of a choice merged into one
// when the request coalesces and has no logprobs, as a Delta carries one
// token), and Finish or Error for the Final entry. Each event's seq is
// its entry's (a merged Delta's: the last one's).
type grpcSink struct {
	ss       *session
	send     func([]*spigotv1.GenerateResponse) error
	inBand   bool
	coalesce bool
	batch    []*spigotv1.GenerateResponse
	text     []byte
	failure  error // the Final entry's error, for a call that ends with a status
}

func (k *grpcSink) event(seq uint64, ev *spigotv1.GenerateResponse) {
	ev.StreamId, ev.Seq = k.ss.id, seq
	k.batch = append(k.batch, ev)
}

func (k *grpcSink) Write(es []stream.Entry) error {
	ss := k.ss
	for i := 0; i < len(es); i++ {
		e := &es[i]
		switch e.Kind {
		case stream.Start:
			if e.Choice == 0 {
				k.event(e.Seq, &spigotv1.GenerateResponse{Event: &spigotv1.GenerateResponse_Start{Start: &spigotv1.Start{
					Model: ss.enc.Model, Created: ss.enc.Created, PromptTokens: int32(ss.j.promptTokens)}}})
			}
		case stream.Token:
			j := i + 1
			if k.coalesce && e.Event.Token >= 0 {
				for j < len(es) && es[j].Kind == stream.Token && es[j].Choice == e.Choice && es[j].Event.Token >= 0 {
					j++
				}
			}
			k.delta(es[i:j])
			i = j - 1
		case stream.Final:
			if e.Err != nil {
				k.failure = e.Err
				if k.inBand {
					code, msg, field := grpcError(e.Err)
					k.event(e.Seq, &spigotv1.GenerateResponse{Event: &spigotv1.GenerateResponse_Error{
						Error: &spigotv1.Error{Code: int32(code), Message: msg, Field: field}}})
				}
				continue
			}
			f := &spigotv1.Finish{FinishReason: e.Results[0].FinishReason}
			u := ss.usage(e.Results)
			cached := 0
			for _, r := range e.Results {
				f.FinishReasons = append(f.FinishReasons, r.FinishReason)
				cached += r.CachedTokens
			}
			f.Usage = &spigotv1.Usage{PromptTokens: int32(u.PromptTokens), CompletionTokens: int32(u.CompletionTokens),
				TotalTokens: int32(u.TotalTokens), CachedTokens: int32(cached)}
			k.event(e.Seq, &spigotv1.GenerateResponse{Event: &spigotv1.GenerateResponse_Finish{Finish: f}})
		}
	}
	if len(k.batch) > 0 {
		err := k.send(k.batch)
		clear(k.batch)
		k.batch = k.batch[:0]
		if err != nil {
			return err
		}
	}
	ss.delivered(time.Now(), es)
	return nil
}

// delta adds one Delta for the Token entries es of one choice, if any is
// visible.
func (k *grpcSink) delta(es []stream.Entry) {
	visible := false
	for i := range es {
		visible = visible || es[i].Visible
	}
	if !visible {
		return
	}
	last := &es[len(es)-1]
	d := &spigotv1.Delta{Text: last.Event.Text, Index: int32(last.Choice)}
	if len(es) > 1 {
		k.text = k.text[:0]
		for i := range es {
			k.text = append(k.text, es[i].Event.Text...)
		}
		d.Text = string(k.text)
	}
	if ev := &last.Event; k.ss.enc.Logprobs && ev.Token >= 0 { // not merged: one entry
		piece := k.ss.enc.Piece(ev.Token)
		d.Token = &spigotv1.Token{Id: ev.Token, Text: strings.ToValidUTF8(piece, "\uFFFD"), Bytes: []byte(piece), Logprob: ev.Logprob}
		for _, t := range ev.Top {
			piece := k.ss.enc.Piece(t.ID)
			d.Token.TopLogprobs = append(d.Token.TopLogprobs, &spigotv1.TopLogprob{Id: t.ID,
				Text: strings.ToValidUTF8(piece, "\uFFFD"), Bytes: []byte(piece), Logprob: t.Logprob})
		}
	}
	k.event(last.Seq, &spigotv1.GenerateResponse{Event: &spigotv1.GenerateResponse_Delta{Delta: d}})
}

// KeepAlive is not used: HTTP/2 pings (grpc keepalive options) keep a
// gRPC connection alive.
func (k *grpcSink) KeepAlive() error { return nil }

// streamSender sends a server stream's events one by one.
func streamSender(st grpc.ServerStreamingServer[spigotv1.GenerateResponse]) func([]*spigotv1.GenerateResponse) error {
	return func(evs []*spigotv1.GenerateResponse) error {
		for _, ev := range evs {
			if err := st.Send(ev); err != nil {
				return err
			}
		}
		return nil
	}
}

// Generate streams one generation.
func (gs *grpcService) Generate(req *spigotv1.GenerateRequest, st grpc.ServerStreamingServer[spigotv1.GenerateResponse]) error {
	ctx := st.Context()
	route := spigotv1.Generation_Generate_FullMethodName
	m, err := gs.s.grpcModel(ctx)
	if err != nil {
		return err
	}
	ss, err := gs.s.startGRPC(ctx, m, req)
	if err != nil {
		gs.s.metrics.Request(route, openai.ErrorFor(err).Status)
		return grpcStatus(err)
	}
	return gs.s.deliverGRPC(ctx, ss, 0, route, false, streamSender(st))
}

// Resume continues a resumable stream after an event.
func (gs *grpcService) Resume(req *spigotv1.ResumeRequest, st grpc.ServerStreamingServer[spigotv1.GenerateResponse]) error {
	ctx := st.Context()
	route := spigotv1.Generation_Resume_FullMethodName
	if _, err := gs.s.grpcModel(ctx); err != nil {
		return err
	}
	ss, done, err := gs.s.findStream(req.GetStreamId(), req.GetAfter())
	if err != nil {
		gs.s.metrics.Request(route, openai.ErrorFor(err).Status)
		if openai.ErrorFor(err).Status == http.StatusRequestedRangeNotSatisfiable {
			return status.Error(codes.OutOfRange, openai.ErrorFor(err).Message)
		}
		return grpcStatus(err)
	}
	if done {
		gs.s.metrics.Request(route, http.StatusOK)
		return nil
	}
	return gs.s.deliverGRPC(ctx, ss, req.GetAfter(), route, false, streamSender(st))
}

// Channel runs the generations a client starts or resumes on one stream:
// one goroutine per generation, which sends its events under a lock (a
// gRPC stream takes one sender at a time).
func (gs *grpcService) Channel(cs grpc.BidiStreamingServer[spigotv1.ChannelRequest, spigotv1.ChannelResponse]) error {
	ctx := cs.Context()
	m, err := gs.s.grpcModel(ctx)
	if err != nil {
		return err
	}
	var (
		sendMu  sync.Mutex
		mu      sync.Mutex // guards running
		running = map[string]*session{}
		wg      sync.WaitGroup
	)
	sender := func(id string) func([]*spigotv1.GenerateResponse) error {
		return func(evs []*spigotv1.GenerateResponse) error {
			sendMu.Lock()
			defer sendMu.Unlock()
			for _, ev := range evs {
				if err := cs.Send(&spigotv1.ChannelResponse{Id: id, Event: ev}); err != nil {
					return err
				}
			}
			return nil
		}
	}
	// refuse answers a message that starts nothing with an Error under
	// its id (no stream, no seq).
	refuse := func(id string, code codes.Code, field, msg string) {
		sender(id)([]*spigotv1.GenerateResponse{{
			Event: &spigotv1.GenerateResponse_Error{Error: &spigotv1.Error{Code: int32(code), Message: msg, Field: field}}}})
	}
	refuseErr := func(id string, err error) {
		code, msg, field := grpcError(err)
		if openai.ErrorFor(err).Status == http.StatusRequestedRangeNotSatisfiable {
			code = codes.OutOfRange
		}
		refuse(id, code, field, msg)
	}
	route := spigotv1.Generation_Channel_FullMethodName
	var recvErr error
	for {
		req, err := cs.Recv()
		if err != nil {
			if err != io.EOF {
				recvErr = err
			}
			break
		}
		var (
			id    string
			ss    *session
			after uint64
		)
		switch a := req.GetAction().(type) {
		case *spigotv1.ChannelRequest_Cancel:
			mu.Lock()
			if ss := running[a.Cancel.GetId()]; ss != nil {
				ss.cancelGen() // its delivery sends the Error event (CANCELLED)
			}
			mu.Unlock()
			continue
		case *spigotv1.ChannelRequest_Start:
			id = a.Start.GetId()
		case *spigotv1.ChannelRequest_Resume:
			id = a.Resume.GetId()
		default:
			refuse("", codes.InvalidArgument, "action", "a ChannelRequest needs an action: start, cancel or resume")
			continue
		}
		mu.Lock()
		_, busy := running[id]
		mu.Unlock()
		switch {
		case id == "":
			refuse(id, codes.InvalidArgument, "id", "id: a start or resume needs an id, to tag the generation's events with")
			continue
		case busy:
			refuse(id, codes.AlreadyExists, "id", fmt.Sprintf("id: generation %q is still running on this channel", id))
			continue
		}
		if a, ok := req.GetAction().(*spigotv1.ChannelRequest_Resume); ok {
			var done bool
			ss, done, err = gs.s.findStream(a.Resume.GetStreamId(), a.Resume.GetAfter())
			if err == nil && done {
				err = &openai.Error{Status: http.StatusRequestedRangeNotSatisfiable, Type: openai.TypeInvalidRequest, Param: "after",
					Message: fmt.Sprintf("stream %s has ended; event %d was its last", a.Resume.GetStreamId(), a.Resume.GetAfter())}
			}
			after = a.Resume.GetAfter()
		} else {
			ss, err = gs.s.startGRPC(ctx, m, req.GetStart().GetRequest())
		}
		if err != nil {
			gs.s.metrics.Request(route, openai.ErrorFor(err).Status)
			refuseErr(id, err)
			continue
		}
		mu.Lock()
		running[id] = ss
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			gs.s.deliverGRPC(ctx, ss, after, route, true, sender(id))
			mu.Lock()
			delete(running, id)
			mu.Unlock()
		}()
	}
	// The client is gone, or the call was cancelled: so is every delivery
	// (their contexts are the call's), which stops the generations that
	// may not be resumed and leaves the others for the resume window.
	wg.Wait()
	return recvErr
}
