package server

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/spigot-llm/spigot/api/openai"
	spigotv1 "github.com/spigot-llm/spigot/api/spigotpb/spigot/v1"
	"github.com/spigot-llm/spigot/engine"
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
	grpc_health_v1.RegisterHealthServer(gs, &grpcHealth{s: s})
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

// grpcCode is the gRPC code of an HTTP status from [openai.ErrorFor].
func grpcCode(httpStatus int) codes.Code {
	switch httpStatus {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		return codes.InvalidArgument
	case http.StatusNotFound:
		return codes.NotFound
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusTooManyRequests:
		return codes.ResourceExhausted
	case http.StatusServiceUnavailable:
		return codes.Unavailable
	case openai.StatusClientClosed:
		return codes.Canceled
	}
	return codes.Internal
}

// grpcError returns err's code, message and the field at fault: the
// message names the field first when it does not already.
func grpcError(err error) (codes.Code, string, string) {
	e := openai.ErrorFor(err)
	msg := e.Message
	if e.Param != "" && !strings.Contains(msg, e.Param) {
		msg = e.Param + ": " + msg
	}
	return grpcCode(e.Status), msg, e.Param
}

// grpcStatus returns the status a call ends with for err, with a
// google.rpc.BadRequest detail naming the field at fault, if any.
func grpcStatus(err error) error {
	code, msg, field := grpcError(err)
	st := status.New(code, msg)
	if field != "" {
		if d, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: field, Description: msg},
		}}); err == nil {
			st = d
		}
	}
	return st.Err()
}

// prepareGRPC validates a gRPC request by putting it in the OpenAI API's
// terms: the same fields, defaults, ranges and errors.
func prepareGRPC(m *Model, req *spigotv1.GenerateRequest) (*job, error) {
	p := openai.Params{
		Model: req.GetModel(), Stream: true, Temperature: req.Temperature, TopP: req.TopP, MinP: req.MinP,
		PresencePenalty: req.PresencePenalty, FrequencyPenalty: req.FrequencyPenalty, RepetitionPenalty: req.RepetitionPenalty,
		Seed: req.Seed, IgnoreEOS: req.GetIgnoreEos(), Priority: int(req.GetPriority()),
	}
	if req.MaxTokens != nil {
		n := int(*req.MaxTokens)
		p.MaxTokens = &n
	}
	if req.TopK != nil {
		k := int(*req.TopK)
		p.TopK = &k
	}
	if len(req.GetLogitBias()) > 0 {
		p.LogitBias = make(map[string]float64, len(req.GetLogitBias()))
		for id, b := range req.GetLogitBias() {
			p.LogitBias[strconv.Itoa(int(id))] = b
		}
	}
	if len(req.GetStop()) > 0 {
		p.Stop, _ = json.Marshal(req.GetStop())
	}
	switch pr := req.GetPrompt().(type) {
	case *spigotv1.GenerateRequest_Text, *spigotv1.GenerateRequest_Tokens:
		var raw []byte
		if t, ok := pr.(*spigotv1.GenerateRequest_Text); ok {
			raw, _ = json.Marshal(t.Text)
		} else {
			ids := pr.(*spigotv1.GenerateRequest_Tokens).Tokens.GetIds()
			if len(ids) == 0 {
				return nil, openai.BadRequest("tokens", "tokens is empty")
			}
			raw, _ = json.Marshal(ids)
		}
		r := &openai.CompletionRequest{Params: p, Prompt: raw, Echo: req.GetEcho()}
		if req.GetLogprobs() {
			n := int(req.GetTopLogprobs())
			r.Logprobs = &n
		}
		return prepareCompletionRequest(m, r)
	case *spigotv1.GenerateRequest_Messages:
		if req.GetEcho() {
			return nil, openai.BadRequest("echo", "echo is for completions (text or tokens), not messages")
		}
		r := &openai.ChatRequest{Params: p}
		for _, msg := range pr.Messages.GetMessages() {
			content, _ := json.Marshal(msg.GetContent())
			r.Messages = append(r.Messages, openai.Message{Role: msg.GetRole(), Content: content, Name: msg.GetName()})
		}
		lp := req.GetLogprobs()
		r.Logprobs = &lp
		if n := int(req.GetTopLogprobs()); n != 0 {
			r.TopLogprobs = &n
		}
		return prepareChatRequest(m, r)
	}
	return nil, openai.BadRequest("prompt", "one of text, tokens or messages is required")
}

// newStreamID returns a generation's stream id, "gen-" and 24 hex digits.
func newStreamID() string {
	return fmt.Sprintf("gen-%016x%08x", rand.Uint64(), rand.Uint32())
}

// runGRPC runs one generation of a gRPC call, handing its events to send
// in batches: Start, Deltas, and Finish. With inBand, a failure (a refused
// request, a cancel, an error while generating) ends it with an Error
// event, as Channel does; otherwise runGRPC returns the status to end the
// call with, as Generate does. send's error (the client is gone) cancels
// the generation.
func (s *Server) runGRPC(ctx context.Context, m *Model, req *spigotv1.GenerateRequest, route string, inBand bool,
	send func([]*spigotv1.GenerateResponse) error) error {
	start := time.Now()
	id := newStreamID()
	var seq uint64
	event := func(ev *spigotv1.GenerateResponse) *spigotv1.GenerateResponse {
		seq++
		ev.StreamId, ev.Seq = id, seq
		return ev
	}
	refuse := func(err error) error {
		s.metrics.Request(route, openai.ErrorFor(err).Status)
		if !inBand {
			return grpcStatus(err)
		}
		code, msg, field := grpcError(err)
		return send([]*spigotv1.GenerateResponse{event(&spigotv1.GenerateResponse{Event: &spigotv1.GenerateResponse_Error{
			Error: &spigotv1.Error{Code: int32(code), Message: msg, Field: field}}})})
	}
	j, err := prepareGRPC(m, req)
	if err != nil {
		return refuse(err)
	}
	g, err := s.startOne(ctx, m, j, start)
	if err != nil {
		return refuse(err)
	}
	batch := []*spigotv1.GenerateResponse{event(&spigotv1.GenerateResponse{Event: &spigotv1.GenerateResponse_Start{
		Start: &spigotv1.Start{Model: m.ID, Created: start.Unix(), PromptTokens: int32(j.promptTokens)}}})}
	if len(j.echo) > 0 && j.echo[0] != "" {
		batch = append(batch, event(&spigotv1.GenerateResponse{Event: &spigotv1.GenerateResponse_Delta{Delta: &spigotv1.Delta{Text: j.echo[0]}}}))
	}
	if err := send(batch); err != nil {
		g.fail(fmt.Errorf("sending to the client: %v: %w", err, context.Canceled))
	}
	batch = batch[:0]
	logprobs := j.opts.Request.Logprobs
	g.drive(func(evs []engine.Event, end error) {
		for k := range evs {
			ev := &evs[k]
			if ev.Text == "" && (!logprobs || ev.Token < 0) {
				continue
			}
			d := &spigotv1.Delta{Text: ev.Text}
			if logprobs && ev.Token >= 0 {
				piece := m.Tokenizer.Piece(ev.Token)
				d.Token = &spigotv1.Token{Id: ev.Token, Text: strings.ToValidUTF8(piece, "\uFFFD"), Bytes: []byte(piece), Logprob: ev.Logprob}
				for _, t := range ev.Top {
					piece := m.Tokenizer.Piece(t.ID)
					d.Token.TopLogprobs = append(d.Token.TopLogprobs, &spigotv1.TopLogprob{Id: t.ID,
						Text: strings.ToValidUTF8(piece, "\uFFFD"), Bytes: []byte(piece), Logprob: t.Logprob})
				}
			}
			batch = append(batch, event(&spigotv1.GenerateResponse{Event: &spigotv1.GenerateResponse_Delta{Delta: d}}))
		}
		switch {
		case end == io.EOF:
			res := g.results[0]
			batch = append(batch, event(&spigotv1.GenerateResponse{Event: &spigotv1.GenerateResponse_Finish{Finish: &spigotv1.Finish{
				FinishReason: res.FinishReason,
				Usage: &spigotv1.Usage{PromptTokens: int32(j.promptTokens), CompletionTokens: int32(res.Tokens),
					TotalTokens: int32(j.promptTokens + res.Tokens), CachedTokens: int32(res.CachedTokens)},
			}}}))
		case end != nil && inBand:
			code, msg, field := grpcError(end)
			batch = append(batch, event(&spigotv1.GenerateResponse{Event: &spigotv1.GenerateResponse_Error{
				Error: &spigotv1.Error{Code: int32(code), Message: msg, Field: field}}}))
		}
	}, func() error {
		if len(batch) == 0 {
			return nil
		}
		err := send(batch)
		clear(batch)
		batch = batch[:0]
		return err
	})
	if g.failure == nil {
		s.metrics.Request(route, http.StatusOK)
		s.metrics.E2E.Observe(time.Since(start).Seconds())
		return nil
	}
	code := openai.ErrorFor(g.failure).Status
	s.metrics.Request(route, code)
	level := slog.LevelInfo
	switch {
	case code == openai.StatusClientClosed:
		level = slog.LevelDebug
	case code >= 500:
		level = slog.LevelWarn
	}
	s.log.Log(ctx, level, "request ended early", "rpc", route, "status", code, "err", g.failure)
	if inBand {
		return nil
	}
	return grpcStatus(g.failure)
}

// Generate streams one generation.
func (gs *grpcService) Generate(req *spigotv1.GenerateRequest, stream grpc.ServerStreamingServer[spigotv1.GenerateResponse]) error {
	ctx := stream.Context()
	m, err := gs.s.grpcModel(ctx)
	if err != nil {
		return err
	}
	return gs.s.runGRPC(ctx, m, req, spigotv1.Generation_Generate_FullMethodName, false, func(evs []*spigotv1.GenerateResponse) error {
		for _, ev := range evs {
			if err := stream.Send(ev); err != nil {
				return err
			}
		}
		return nil
	})
}

// Channel runs the generations a client starts on one stream: one
// goroutine per generation, which sends its events under a lock (a gRPC
// stream takes one sender at a time).
func (gs *grpcService) Channel(stream grpc.BidiStreamingServer[spigotv1.ChannelRequest, spigotv1.ChannelResponse]) error {
	ctx := stream.Context()
	m, err := gs.s.grpcModel(ctx)
	if err != nil {
		return err
	}
	var (
		sendMu  sync.Mutex
		mu      sync.Mutex // guards running
		running = map[string]context.CancelFunc{}
		wg      sync.WaitGroup
	)
	sender := func(id string) func([]*spigotv1.GenerateResponse) error {
		return func(evs []*spigotv1.GenerateResponse) error {
			sendMu.Lock()
			defer sendMu.Unlock()
			for _, ev := range evs {
				if err := stream.Send(&spigotv1.ChannelResponse{Id: id, Event: ev}); err != nil {
					return err
				}
			}
			return nil
		}
	}
	refuse := func(id string, code codes.Code, msg string) {
		sender(id)([]*spigotv1.GenerateResponse{{StreamId: newStreamID(), Seq: 1,
			Event: &spigotv1.GenerateResponse_Error{Error: &spigotv1.Error{Code: int32(code), Message: msg, Field: "id"}}}})
	}
	route := spigotv1.Generation_Channel_FullMethodName
	var recvErr error
	for {
		req, err := stream.Recv()
		if err != nil {
			if err != io.EOF {
				recvErr = err
			}
			break
		}
		switch a := req.GetAction().(type) {
		case *spigotv1.ChannelRequest_Start:
			id := a.Start.GetId()
			mu.Lock()
			_, busy := running[id]
			mu.Unlock()
			switch {
			case id == "":
				refuse(id, codes.InvalidArgument, "id: start needs an id, to tag the generation's events with")
				continue
			case busy:
				refuse(id, codes.AlreadyExists, fmt.Sprintf("id: generation %q is still running on this channel", id))
				continue
			}
			gctx, cancel := context.WithCancel(ctx)
			mu.Lock()
			running[id] = cancel
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				gs.s.runGRPC(gctx, m, a.Start.GetRequest(), route, true, sender(id))
				mu.Lock()
				delete(running, id)
				mu.Unlock()
				cancel()
			}()
		case *spigotv1.ChannelRequest_Cancel:
			mu.Lock()
			if cancel := running[a.Cancel.GetId()]; cancel != nil {
				cancel()
			}
			mu.Unlock()
		}
	}
	if recvErr != nil {
		// The client is gone, or the call was cancelled: so is every
		// generation (their contexts derive from the call's).
		mu.Lock()
		for _, cancel := range running {
			cancel()
		}
		mu.Unlock()
	}
	wg.Wait()
	return recvErr
}

// grpcHealth is the standard health service, answered from the server's
// state: SERVING once the model is loaded, NOT_SERVING before and while
// shutting down, for the whole server ("") and for spigot.v1.Generation.
type grpcHealth struct {
	grpc_health_v1.UnimplementedHealthServer
	s *Server
}

func (h *grpcHealth) status(service string) (grpc_health_v1.HealthCheckResponse_ServingStatus, bool) {
	if service != "" && service != spigotv1.Generation_ServiceDesc.ServiceName {
		return grpc_health_v1.HealthCheckResponse_SERVICE_UNKNOWN, false
	}
	if h.s.model.Load() == nil || h.s.draining.Load() {
		return grpc_health_v1.HealthCheckResponse_NOT_SERVING, true
	}
	return grpc_health_v1.HealthCheckResponse_SERVING, true
}

func (h *grpcHealth) Check(ctx context.Context, req *grpc_health_v1.HealthCheckRequest) (*grpc_health_v1.HealthCheckResponse, error) {
	st, ok := h.status(req.GetService())
	if !ok {
		return nil, status.Errorf(codes.NotFound, "unknown service %q", req.GetService())
	}
	return &grpc_health_v1.HealthCheckResponse{Status: st}, nil
}

// Watch sends the status, then every change of it (looked at every
// 100 ms), until the call ends.
func (h *grpcHealth) Watch(req *grpc_health_v1.HealthCheckRequest, stream grpc_health_v1.Health_WatchServer) error {
	last := grpc_health_v1.HealthCheckResponse_ServingStatus(-1)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if st, _ := h.status(req.GetService()); st != last {
			if err := stream.Send(&grpc_health_v1.HealthCheckResponse{Status: st}); err != nil {
				return err
			}
			last = st
		}
		select {
		case <-stream.Context().Done():
			return stream.Context().Err()
		case <-tick.C:
		}
	}
}
