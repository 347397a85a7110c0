package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/spigot-llm/spigot/api/openai"
	"github.com/spigot-llm/spigot/api/spigotpb"
	spigotv1 "github.com/spigot-llm/spigot/api/spigotpb/spigot/v1"
	streamlog "github.com/spigot-llm/spigot/stream"
)

// This file is the gRPC front: spigot.v1.Generation as spigot serve
// offers it (Generate, Resume, Channel), with the standard health
// service and reflection. A GenerateRequest becomes the OpenAI request it
// means (api/spigotpb), which the gateway routes, limits and relays like
// any other; its events are read from the session's log, so a stream
// started over gRPC can be resumed over SSE or a WebSocket, on any
// instance, and the other way round.
//
// What differs from spigot serve: the Start event comes before the first
// Delta with seq 0 (the gateway's log has no start entry) and its
// prompt_tokens is known only from spigot upstreams (0 otherwise); a
// Delta's token, with logprobs, has the upstream's text, bytes and
// log-probabilities but id -1, as OpenAI chunks carry no ids.

// GRPCServer returns a gRPC server for the gateway's API, health and
// reflection. Serve it on a listener of its own; stop it with
// GracefulStop before Close.
func (g *Gateway) GRPCServer(opts ...grpc.ServerOption) *grpc.Server {
	gs := grpc.NewServer(opts...)
	spigotv1.RegisterGenerationServer(gs, &grpcFront{g: g})
	grpc_health_v1.RegisterHealthServer(gs, spigotpb.Health(func() bool { ok, _ := g.ready(); return ok }))
	reflection.Register(gs)
	return gs
}

type grpcFront struct {
	spigotv1.UnimplementedGenerationServer
	g *Gateway
}

// grpcKey checks the call's API key (metadata "authorization: Bearer
// KEY"): its key, nil when none are configured, and the Authorization
// to pass on.
func (g *Gateway) grpcKey(ctx context.Context) (*clientKey, string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	auth := strings.Join(md.Get("authorization"), "")
	token, found := strings.CutPrefix(auth, "Bearer ")
	if !found {
		token = ""
	}
	k, err := g.keyFor(token)
	if err != nil {
		return nil, "", spigotpb.Status(err)
	}
	return k, auth, nil
}

// startGRPC starts a gRPC request's session, once its stream has started:
// the error is the status to refuse it with.
func (g *Gateway) startGRPC(ctx context.Context, k *clientKey, auth string, in *spigotv1.GenerateRequest) (*session, error) {
	kind, oreq, err := spigotpb.OpenAIRequest(in)
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(oreq)
	if err != nil {
		return nil, err
	}
	body = compact(body)
	req, err := streamingRequest(body, kind, g.cfg.Routing.PrefixBytes)
	if err != nil {
		return nil, err
	}
	if !g.serves(req.model) {
		return nil, openai.ModelNotFound(req.model)
	}
	m, release, err := g.admit(ctx, k)
	if err != nil {
		return nil, err
	}
	m.estimatePrompt(len(body))
	if len(g.keys) > 0 {
		auth = "" // the gateway's own keys are not the upstreams'
	}
	ss := g.startSession(req, m, auth, g.now(), in.GetResumable(), release)
	select {
	case <-ss.ready:
	case <-ctx.Done():
		ss.abandon()
		return nil, ctx.Err()
	}
	if !ss.streaming {
		return nil, ss.head.error()
	}
	return ss, nil
}

// unsetDefaults are request fields whose value means the same as their
// absence, and which only Spigot knows.
var unsetDefaults = map[string]string{"ignore_eos": "false", "priority": "0", "return_token_ids": "false", "user": `""`, "echo": "false"}

// compact returns a request body as a client would have written it: the
// unset fields the OpenAI request types marshal as null, and Spigot's own
// fields at their defaults, are left out (llama.cpp's server refuses
// "n": null, and other servers need not know Spigot's fields).
func compact(body []byte) []byte {
	var f map[string]json.RawMessage
	if json.Unmarshal(body, &f) != nil {
		return body
	}
	for k, v := range f {
		if string(v) == "null" || unsetDefaults[k] == string(v) {
			delete(f, k)
		}
	}
	if raw, ok := f["stream_options"]; ok {
		var so map[string]json.RawMessage
		if json.Unmarshal(raw, &so) == nil {
			for k, v := range so {
				if string(v) == "null" {
					delete(so, k)
				}
			}
			f["stream_options"] = marshalObject(so, nil)
		}
	}
	return marshalObject(f, nil)
}

// findGRPC returns the stream a resume names, mirrored from its owner
// when another instance has it, and whether nothing is left to send after
// event after.
func (g *Gateway) findGRPC(ctx context.Context, k *clientKey, auth, id string, after uint64) (*session, bool, error) {
	owner, err := g.streamOwner(id)
	if err != nil {
		return nil, false, err
	}
	var ss *session
	if owner != "" {
		ss, err = g.remoteSession(ctx, auth, owner, id, after)
	} else {
		ss, err = g.find(id, k, after)
	}
	if err != nil {
		return nil, false, err
	}
	return ss, ss.log.Done() && after+1 >= ss.log.Last(), nil
}

// grpcStatus is the status to end a call with for err.
func grpcStatus(err error) error {
	if s, ok := status.FromError(err); ok {
		return s.Err()
	}
	return spigotpb.Status(err)
}

// errGRPCReplaced ends a delivery that another connection took over.
var errGRPCReplaced = status.Error(codes.Aborted, "another connection resumed the stream; it is delivered there")

// deliverGRPC sends a session's log after entry after as gRPC events,
// until the Done entry, the end of ctx, or another connection resuming
// the stream. With inBand (Channel), the stream's failure and a takeover
// end it with an Error event and deliverGRPC returns nil; otherwise it
// returns the status to end the call with.
func deliverGRPC(ctx context.Context, ss *session, after uint64, inBand bool, send func([]*spigotv1.GenerateResponse) error) error {
	k := &grpcSink{ss: ss, send: send, inBand: inBand, started: after > 0}
	if after > 0 {
		k.r.replay(&ss.log, after)
	}
	dctx, release := ss.attach(ctx)
	_, err := ss.log.Deliver(dctx, after, streamlog.Options{}, k)
	release(err == nil)
	var st error
	switch {
	case err == nil && k.failure == nil:
		return nil
	case err == nil:
		st = spigotpb.Status(k.failure)
	case errors.Is(context.Cause(dctx), errReplaced):
		if inBand {
			send([]*spigotv1.GenerateResponse{{StreamId: ss.id, Event: &spigotv1.GenerateResponse_Error{Error: &spigotv1.Error{
				Code: int32(codes.Aborted), Message: "another connection resumed stream " + ss.id + "; it is delivered there"}}}})
		}
		st = errGRPCReplaced
	case ctx.Err() != nil:
		st = status.FromContextError(ctx.Err()).Err()
	default: // the send failed
		st = err
	}
	if inBand {
		return nil
	}
	return st
}

// grpcSink writes a session's entries as gRPC events: Start before the
// first (unless resuming), a Delta per choice's text in a chunk, and
// Finish (or, in band, Error) at the end.
type grpcSink struct {
	ss      *session
	send    func([]*spigotv1.GenerateResponse) error
	inBand  bool
	started bool
	r       eventReader
	batch   []*spigotv1.GenerateResponse
	failure error
}

func (k *grpcSink) event(seq uint64, ev *spigotv1.GenerateResponse) {
	ev.StreamId, ev.Seq = k.ss.id, seq
	k.batch = append(k.batch, ev)
}

func (k *grpcSink) Write(es []streamlog.Entry) error {
	if !k.started {
		k.started = true
		k.event(0, &spigotv1.GenerateResponse{Event: &spigotv1.GenerateResponse_Start{Start: &spigotv1.Start{
			Model: k.ss.model(), Created: k.ss.created, PromptTokens: k.ss.promptTokens.Load()}}})
	}
	for i := range es {
		e := &es[i]
		switch e.Kind {
		case streamlog.Token:
			for _, d := range k.r.read(e) {
				k.event(e.Seq, &spigotv1.GenerateResponse{Event: &spigotv1.GenerateResponse_Delta{Delta: &spigotv1.Delta{
					Text: d.text, Index: int32(d.index), Token: logprobToken(d.logprobs)}}})
			}
		case streamlog.Final:
			k.r.read(e)
			k.failure = e.Err
			if k.inBand {
				code, msg, field := spigotpb.Error(e.Err)
				k.event(e.Seq, &spigotv1.GenerateResponse{Event: &spigotv1.GenerateResponse_Error{
					Error: &spigotv1.Error{Code: int32(code), Message: msg, Field: field}}})
			}
		case streamlog.Done:
			if k.r.ended {
				continue // the error was the end
			}
			fr := k.r.finishReasons()
			f := &spigotv1.Finish{FinishReason: fr[0], FinishReasons: fr}
			if u := k.r.usage; u != nil {
				f.Usage = &spigotv1.Usage{PromptTokens: int32(u.PromptTokens), CompletionTokens: int32(u.CompletionTokens),
					TotalTokens: int32(u.TotalTokens)}
			}
			k.event(e.Seq, &spigotv1.GenerateResponse{Event: &spigotv1.GenerateResponse_Finish{Finish: f}})
		}
	}
	if len(k.batch) == 0 {
		return nil
	}
	err := k.send(k.batch)
	clear(k.batch)
	k.batch = k.batch[:0]
	return err
}

// KeepAlive is not used: HTTP/2 pings keep a gRPC connection alive.
func (k *grpcSink) KeepAlive() error { return nil }

// logprobToken reads the first token of a chunk choice's logprobs, in
// the chat form ({"content":[{token, logprob, bytes, top_logprobs}]}) or
// the completions form ({tokens, token_logprobs, top_logprobs: [{text:
// logprob}]}); nil when there is none. Ids are not in OpenAI chunks: -1.
func logprobToken(raw json.RawMessage) *spigotv1.Token {
	if len(raw) == 0 {
		return nil
	}
	type alt struct {
		Token   string  `json:"token"`
		Logprob float64 `json:"logprob"`
		Bytes   []byte  `json:"-"`
		Raw     []int   `json:"bytes"`
	}
	var v struct {
		Content []struct {
			alt
			Top []alt `json:"top_logprobs"`
		} `json:"content"`
		Tokens        []string             `json:"tokens"`
		TokenLogprobs []float64            `json:"token_logprobs"`
		TopLogprobs   []map[string]float64 `json:"top_logprobs"`
	}
	if json.Unmarshal(raw, &v) != nil {
		return nil
	}
	piece := func(text string, raw []int) []byte {
		if raw == nil {
			return []byte(text)
		}
		b := make([]byte, len(raw))
		for i, c := range raw {
			b[i] = byte(c)
		}
		return b
	}
	switch {
	case len(v.Content) > 0:
		c := v.Content[0]
		t := &spigotv1.Token{Id: -1, Text: c.Token, Logprob: float32(c.Logprob), Bytes: piece(c.Token, c.Raw)}
		for _, a := range c.Top {
			t.TopLogprobs = append(t.TopLogprobs, &spigotv1.TopLogprob{Id: -1, Text: a.Token, Logprob: float32(a.Logprob), Bytes: piece(a.Token, a.Raw)})
		}
		return t
	case len(v.Tokens) > 0 && len(v.TokenLogprobs) > 0:
		t := &spigotv1.Token{Id: -1, Text: v.Tokens[0], Logprob: float32(v.TokenLogprobs[0]), Bytes: []byte(v.Tokens[0])}
		if len(v.TopLogprobs) > 0 {
			for text, lp := range v.TopLogprobs[0] {
				t.TopLogprobs = append(t.TopLogprobs, &spigotv1.TopLogprob{Id: -1, Text: text, Logprob: float32(lp), Bytes: []byte(text)})
			}
			slices.SortFunc(t.TopLogprobs, func(a, b *spigotv1.TopLogprob) int {
				if a.Logprob != b.Logprob {
					if a.Logprob > b.Logprob {
						return -1
					}
					return 1
				}
				return strings.Compare(a.Text, b.Text)
			})
		}
		return t
	}
	return nil
}

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
func (f *grpcFront) Generate(req *spigotv1.GenerateRequest, st grpc.ServerStreamingServer[spigotv1.GenerateResponse]) error {
	ctx := st.Context()
	k, auth, err := f.g.grpcKey(ctx)
	if err != nil {
		return err
	}
	ss, err := f.g.startGRPC(ctx, k, auth, req)
	if err != nil {
		return grpcStatus(err)
	}
	return deliverGRPC(ctx, ss, 0, false, streamSender(st))
}

// Resume continues a resumable stream after an event.
func (f *grpcFront) Resume(req *spigotv1.ResumeRequest, st grpc.ServerStreamingServer[spigotv1.GenerateResponse]) error {
	ctx := st.Context()
	k, auth, err := f.g.grpcKey(ctx)
	if err != nil {
		return err
	}
	ss, done, err := f.g.findGRPC(ctx, k, auth, req.GetStreamId(), req.GetAfter())
	if err != nil {
		return grpcStatus(err)
	}
	if done {
		return nil
	}
	return deliverGRPC(ctx, ss, req.GetAfter(), false, streamSender(st))
}

// Channel runs the generations a client starts or resumes on one stream,
// one goroutine each, sending under a lock.
func (f *grpcFront) Channel(cs grpc.BidiStreamingServer[spigotv1.ChannelRequest, spigotv1.ChannelResponse]) error {
	g := f.g
	ctx := cs.Context()
	k, auth, err := g.grpcKey(ctx)
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
	refuse := func(id string, err error) {
		e := &spigotv1.Error{}
		if st, ok := status.FromError(err); ok {
			e.Code, e.Message = int32(st.Code()), st.Message()
		} else {
			code, msg, field := spigotpb.Error(err)
			e.Code, e.Message, e.Field = int32(code), msg, field
		}
		sender(id)([]*spigotv1.GenerateResponse{{Event: &spigotv1.GenerateResponse_Error{Error: e}}})
	}
	var recvErr error
	for {
		req, err := cs.Recv()
		if err != nil {
			if err != io.EOF {
				recvErr = err
			}
			break
		}
		var id string
		switch a := req.GetAction().(type) {
		case *spigotv1.ChannelRequest_Cancel:
			mu.Lock()
			if ss := running[a.Cancel.GetId()]; ss != nil {
				ss.stop() // its delivery sends the Error event (CANCELLED)
			}
			mu.Unlock()
			continue
		case *spigotv1.ChannelRequest_Start:
			id = a.Start.GetId()
		case *spigotv1.ChannelRequest_Resume:
			id = a.Resume.GetId()
		default:
			refuse("", openai.BadRequest("action", "a ChannelRequest needs an action: start, cancel or resume"))
			continue
		}
		mu.Lock()
		_, busy := running[id]
		if id != "" && !busy {
			running[id] = nil // taken while it starts
		}
		mu.Unlock()
		switch {
		case id == "":
			refuse(id, openai.BadRequest("id", "a start or resume needs an id, to tag the generation's events with"))
			continue
		case busy:
			refuse(id, status.Error(codes.AlreadyExists, fmt.Sprintf("id: generation %q is still running on this channel", id)))
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				mu.Lock()
				delete(running, id)
				mu.Unlock()
			}()
			var (
				ss    *session
				after uint64
				err   error
			)
			if a, ok := req.GetAction().(*spigotv1.ChannelRequest_Resume); ok {
				var done bool
				after = a.Resume.GetAfter()
				ss, done, err = g.findGRPC(ctx, k, auth, a.Resume.GetStreamId(), after)
				if err == nil && done {
					err = status.Error(codes.OutOfRange, fmt.Sprintf("after: stream %s has ended; event %d was its last", a.Resume.GetStreamId(), after))
				}
			} else {
				ss, err = g.startGRPC(ctx, k, auth, req.GetStart().GetRequest())
			}
			if err != nil {
				if ctx.Err() == nil {
					refuse(id, err)
				}
				return
			}
			mu.Lock()
			running[id] = ss
			mu.Unlock()
			deliverGRPC(ctx, ss, after, true, sender(id))
		}()
	}
	// The client is gone, or closed its side: every delivery ends with
	// the call (their contexts are its), which stops the generations not
	// started resumable and leaves the others for the resume window.
	wg.Wait()
	return recvErr
}
