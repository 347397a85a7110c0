package server

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	spigotv1 "github.com/spigot-llm/spigot/api/spigotpb/spigot/v1"
)

// grpcConn serves srv's gRPC API on a loopback port and returns a client
// connection to it; both close when the test ends.
func grpcConn(t testing.TB, srv *Server) *grpc.ClientConn {
	t.Helper()
	return grpcDial(t, grpcListen(t, srv))
}

// grpcListen serves srv's gRPC API on a loopback port until the test
// ends, and returns its address.
func grpcListen(t testing.TB, srv *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := srv.GRPCServer()
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	return ln.Addr().String()
}

// grpcDial returns a client connection to addr, closed when the test
// ends (closing it before does no harm).
func grpcDial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// grpcResult is what a client saw of one generation.
type grpcResult struct {
	text     string
	start    *spigotv1.Start
	finish   *spigotv1.Finish
	err      *spigotv1.Error
	streamID string
	events   int
	lastSeq  uint64
	resumed  bool // the events continue a stream: no Start is due
	tokens   int  // deltas with a token (logprobs)
	texts    map[int32]string
}

// streamIDPattern is a stream's id, the same on every transport.
var streamIDPattern = regexp.MustCompile(`^(chatcmpl|cmpl)-[0-9a-f]{24}$`)

// add checks an event against the rules every generation obeys (one
// stream id, growing sequence numbers, Start first, nothing after Finish
// or Error) and records it. A refusal (an Error about a Channel message)
// is the one event of its generation, with no stream and no seq.
func (r *grpcResult) add(t testing.TB, ev *spigotv1.GenerateResponse) {
	t.Helper()
	r.events++
	refusal := r.events == 1 && ev.GetError() != nil && ev.GetStreamId() == "" && ev.GetSeq() == 0
	if !refusal && (ev.GetSeq() <= r.lastSeq || r.streamID != "" && ev.GetStreamId() != r.streamID || !streamIDPattern.MatchString(ev.GetStreamId())) {
		t.Errorf("event %d: stream %q seq %d; want stream %q, seq after %d", r.events, ev.GetStreamId(), ev.GetSeq(), r.streamID, r.lastSeq)
	}
	r.streamID, r.lastSeq = ev.GetStreamId(), ev.GetSeq()
	if r.finish != nil || r.err != nil {
		t.Errorf("event %v after the final one", ev)
	}
	switch e := ev.GetEvent().(type) {
	case *spigotv1.GenerateResponse_Start:
		if r.events != 1 || r.resumed {
			t.Errorf("Start as event %d (resumed: %v)", r.events, r.resumed)
		}
		r.start = e.Start
	case *spigotv1.GenerateResponse_Delta:
		if r.start == nil && !r.resumed {
			t.Error("Delta before Start")
		}
		r.text += e.Delta.GetText()
		if r.texts == nil {
			r.texts = map[int32]string{}
		}
		r.texts[e.Delta.GetIndex()] += e.Delta.GetText()
		if tok := e.Delta.GetToken(); tok != nil {
			r.tokens++
			if tok.GetLogprob() > 0 || len(tok.GetTopLogprobs()) != 2 || tok.GetTopLogprobs()[0].GetId() != tok.GetId() {
				t.Errorf("greedy token %v: want its logprob and 2 alternatives, itself first", tok)
			}
		}
	case *spigotv1.GenerateResponse_Finish:
		r.finish = e.Finish
	case *spigotv1.GenerateResponse_Error:
		r.err = e.Error
	default:
		t.Errorf("event %v has no payload", ev)
	}
}

// generate runs a Generate call to its end.
func generate(t testing.TB, client spigotv1.GenerationClient, ctx context.Context, req *spigotv1.GenerateRequest) (*grpcResult, error) {
	t.Helper()
	st, err := client.Generate(ctx, req)
	if err != nil {
		return nil, err
	}
	r := &grpcResult{}
	for {
		ev, err := st.Recv()
		if err == io.EOF {
			if r.finish == nil {
				t.Errorf("Generate ended without Finish after %d events", r.events)
			}
			return r, nil
		}
		if err != nil {
			return r, err
		}
		r.add(t, ev)
	}
}

func ptr[T any](v T) *T { return &v }

// TestGRPCGenerate checks Generate against the HTTP API: a greedy
// completion streams llama.cpp's text, the same as /v1/completions, and a
// chat streams what /v1/chat/completions answers.
func TestGRPCGenerate(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 4})
	client := spigotv1.NewGenerationClient(grpcConn(t, fx.srv))
	ctx := context.Background()
	for i, ref := range references(t)[:4] {
		r, err := generate(t, client, ctx, &spigotv1.GenerateRequest{
			Prompt: &spigotv1.GenerateRequest_Text{Text: ref.Prompt}, MaxTokens: ptr[int32](48), Temperature: ptr(0.0),
		})
		if err != nil {
			t.Fatal(err)
		}
		if r.text != ref.OutputText || r.finish.GetFinishReason() != "length" || r.finish.GetUsage().GetCompletionTokens() != 48 ||
			r.start.GetPromptTokens() != int32(len(ref.PromptIDs)) || r.start.GetModel() != "stories260K" {
			t.Errorf("reference %d: %q, start %v, finish %v; want %q, length, 48 tokens", i, r.text, r.start, r.finish, ref.OutputText)
		}
		// The same prompt as token ids, with logprobs.
		r, err = generate(t, client, ctx, &spigotv1.GenerateRequest{
			Prompt: &spigotv1.GenerateRequest_Tokens{Tokens: &spigotv1.TokenIDs{Ids: ref.PromptIDs}}, MaxTokens: ptr[int32](48),
			Temperature: ptr(0.0), Logprobs: true, TopLogprobs: 2,
		})
		if err != nil || r.text != ref.OutputText || r.tokens != 48 {
			t.Errorf("reference %d as tokens: %q, %d tokens, %v", i, r.text, r.tokens, err)
		}
	}

	chatBody := `{"messages":[{"role":"system","content":"Tell a story."},{"role":"user","content":"Once upon a time"}],"temperature":0,"max_tokens":20}`
	_, b := fx.post(t, "/v1/chat/completions", chatBody)
	var want struct {
		Choices []struct{ Message struct{ Content string } }
	}
	decode(t, b, &want)
	r, err := generate(t, client, ctx, &spigotv1.GenerateRequest{
		Prompt: &spigotv1.GenerateRequest_Messages{Messages: &spigotv1.ChatMessages{Messages: []*spigotv1.ChatMessage{
			{Role: "system", Content: "Tell a story."}, {Role: "user", Content: "Once upon a time"}}}},
		Temperature: ptr(0.0), MaxTokens: ptr[int32](20),
	})
	if err != nil || r.text != want.Choices[0].Message.Content || r.finish.GetFinishReason() != "length" {
		t.Errorf("chat: %q (%v, %v), want the HTTP API's %q", r.text, r.finish, err, want.Choices[0].Message.Content)
	}

	// A stop string: the same cut and finish reason as the HTTP API.
	ref := references(t)[0]
	r, err = generate(t, client, ctx, &spigotv1.GenerateRequest{
		Prompt: &spigotv1.GenerateRequest_Text{Text: ref.Prompt}, MaxTokens: ptr[int32](48), Temperature: ptr(0.0), Stop: []string{"verend"},
	})
	if cut := strings.Index(ref.OutputText, "verend"); err != nil || r.text != ref.OutputText[:cut] || r.finish.GetFinishReason() != "stop" {
		t.Errorf("stop: %q %v %v", r.text, r.finish, err)
	}
}

func decode(t testing.TB, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
}

// TestGRPCErrors checks that bad requests end the call with
// INVALID_ARGUMENT (or the HTTP API's other refusals, as gRPC codes),
// naming the field in the message and in a BadRequest detail.
func TestGRPCErrors(t *testing.T) {
	fx := newFixture(t, fixtureOptions{apiKey: "sk-test"})
	client := spigotv1.NewGenerationClient(grpcConn(t, fx.srv))
	authed := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer sk-test")
	text := &spigotv1.GenerateRequest_Text{Text: "Once"}
	long := &spigotv1.GenerateRequest_Text{Text: strings.Repeat("Once upon a time, ", 40)}
	cases := []struct {
		name  string
		ctx   context.Context
		req   *spigotv1.GenerateRequest
		code  codes.Code
		field string
	}{
		{"temperature", authed, &spigotv1.GenerateRequest{Prompt: text, Temperature: ptr(3.0)}, codes.InvalidArgument, "temperature"},
		{"top_p", authed, &spigotv1.GenerateRequest{Prompt: text, TopP: ptr(-0.5)}, codes.InvalidArgument, "top_p"},
		{"max_tokens", authed, &spigotv1.GenerateRequest{Prompt: text, MaxTokens: ptr[int32](0)}, codes.InvalidArgument, "max_tokens"},
		{"top_k", authed, &spigotv1.GenerateRequest{Prompt: text, TopK: ptr[int32](-2)}, codes.InvalidArgument, "top_k"},
		{"logit_bias", authed, &spigotv1.GenerateRequest{Prompt: text, LogitBias: map[int32]float64{5: 500}}, codes.InvalidArgument, "logit_bias"},
		{"no prompt", authed, &spigotv1.GenerateRequest{}, codes.InvalidArgument, "prompt"},
		{"prompt too long", authed, &spigotv1.GenerateRequest{Prompt: long}, codes.InvalidArgument, "prompt"},
		{"token id", authed, &spigotv1.GenerateRequest{Prompt: &spigotv1.GenerateRequest_Tokens{Tokens: &spigotv1.TokenIDs{Ids: []int32{1, 99999}}}}, codes.InvalidArgument, "prompt"},
		{"role", authed, &spigotv1.GenerateRequest{Prompt: &spigotv1.GenerateRequest_Messages{Messages: &spigotv1.ChatMessages{
			Messages: []*spigotv1.ChatMessage{{Role: "robot", Content: "x"}}}}}, codes.InvalidArgument, "messages[0].role"},
		{"echo on chat", authed, &spigotv1.GenerateRequest{Echo: true, Prompt: &spigotv1.GenerateRequest_Messages{Messages: &spigotv1.ChatMessages{
			Messages: []*spigotv1.ChatMessage{{Role: "user", Content: "x"}}}}}, codes.InvalidArgument, "echo"},
		{"pace", authed, &spigotv1.GenerateRequest{Prompt: text, PaceTokensPerSecond: ptr(-1.0)}, codes.InvalidArgument, "pace_tokens_per_second"},
		{"min_interval_ms", authed, &spigotv1.GenerateRequest{Prompt: text, MinIntervalMs: ptr(1e9)}, codes.InvalidArgument, "min_interval_ms"},
		{"model", authed, &spigotv1.GenerateRequest{Prompt: text, Model: "gpt-4"}, codes.NotFound, "model"},
		{"no key", context.Background(), &spigotv1.GenerateRequest{Prompt: text}, codes.Unauthenticated, ""},
	}
	for _, tc := range cases {
		_, err := generate(t, client, tc.ctx, tc.req)
		st, _ := status.FromError(err)
		if st.Code() != tc.code || !strings.Contains(st.Message(), tc.field) {
			t.Errorf("%s: %v, want %v naming %q", tc.name, err, tc.code, tc.field)
			continue
		}
		if tc.field == "" {
			continue
		}
		var field string
		for _, d := range st.Details() {
			if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) == 1 {
				field = br.GetFieldViolations()[0].GetField()
			}
		}
		if field != tc.field {
			t.Errorf("%s: BadRequest detail names %q, want %q", tc.name, field, tc.field)
		}
	}
}

// TestGRPCCancel checks that cancelling a Generate call's context stops
// the generation at once: no sequence runs, no cache block is held, and
// the running-sequences gauge is back to 0.
func TestGRPCCancel(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 2, delay: 2 * time.Millisecond})
	client := spigotv1.NewGenerationClient(grpcConn(t, fx.srv))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := client.Generate(ctx, &spigotv1.GenerateRequest{Prompt: &spigotv1.GenerateRequest_Text{Text: "Once upon a time"},
		MaxTokens: ptr[int32](100), IgnoreEos: true})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 { // Start and two deltas
		if _, err := st.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	if got := metricValue(t, fx.srv.cfg.Registry, "spigot_engine_running_sequences"); got != 1 {
		t.Errorf("running sequences while streaming = %v, want 1", got)
	}
	fx.model.hold() // no token more until the call is cancelled
	cancel()
	fx.model.release()
	var err2 error
	for n := 0; err2 == nil && n < 100; n++ { // events already on their way may still come
		_, err2 = st.Recv()
	}
	if status.Code(err2) != codes.Canceled {
		t.Errorf("Recv after cancel = %v, want Canceled", err2)
	}
	waitFor(t, "the generation to end with no cache block in use", func() bool {
		s := fx.eng.Stats()
		return s.Running == 0 && s.FinishedCanceled == 1 && fx.eng.Cache().BlocksInUse() == 0 &&
			metricValue(t, fx.srv.cfg.Registry, "spigot_engine_running_sequences") == 0
	})
	if s := fx.eng.Stats(); s.GeneratedTokens >= 100 {
		t.Errorf("%d tokens generated, want the generation cut short", s.GeneratedTokens)
	}
}

// TestGRPCChannel runs three generations on one Channel and cancels one:
// the other two finish with their full text, the cancelled one ends with
// a CANCELLED error, and each has exactly one final event.
func TestGRPCChannel(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 4, delay: time.Millisecond})
	client := spigotv1.NewGenerationClient(grpcConn(t, fx.srv))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ch, err := client.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	refs := references(t)
	ids := []string{"a", "b", "c"}
	for i, id := range ids {
		err := ch.Send(&spigotv1.ChannelRequest{Action: &spigotv1.ChannelRequest_Start{Start: &spigotv1.StartGeneration{Id: id,
			Request: &spigotv1.GenerateRequest{Prompt: &spigotv1.GenerateRequest_Text{Text: refs[i].Prompt}, MaxTokens: ptr[int32](48),
				Temperature: ptr(0.0), IgnoreEos: id == "b"}}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	// A start under a running id is refused without disturbing it, and
	// one that is invalid fails on its own.
	dup := &spigotv1.ChannelRequest{Action: &spigotv1.ChannelRequest_Start{Start: &spigotv1.StartGeneration{Id: "c",
		Request: &spigotv1.GenerateRequest{Prompt: &spigotv1.GenerateRequest_Text{Text: "x"}}}}}
	bad := &spigotv1.ChannelRequest{Action: &spigotv1.ChannelRequest_Start{Start: &spigotv1.StartGeneration{Id: "d",
		Request: &spigotv1.GenerateRequest{Prompt: &spigotv1.GenerateRequest_Text{Text: "x"}, Temperature: ptr(9.0)}}}}
	results := map[string]*grpcResult{}
	var dupErr *spigotv1.Error
	canceled, sentExtra := false, false
	for {
		resp, err := ch.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		id, ev := resp.GetId(), resp.GetEvent()
		if id == "c" && ev.GetError() != nil && ev.GetError().GetCode() == int32(codes.AlreadyExists) {
			dupErr = ev.GetError()
			continue
		}
		if results[id] == nil {
			results[id] = &grpcResult{}
		}
		results[id].add(t, ev)
		if !sentExtra && id == "c" && ev.GetDelta() != nil {
			sentExtra = true
			for _, r := range []*spigotv1.ChannelRequest{dup, bad} {
				if err := ch.Send(r); err != nil {
					t.Fatal(err)
				}
			}
		}
		if !canceled && id == "b" && ev.GetDelta() != nil {
			canceled = true
			err := ch.Send(&spigotv1.ChannelRequest{Action: &spigotv1.ChannelRequest_Cancel{Cancel: &spigotv1.CancelGeneration{Id: "b"}}})
			if err != nil {
				t.Fatal(err)
			}
		}
		if done := func() bool {
			for _, id := range []string{"a", "b", "c", "d"} {
				if r := results[id]; r == nil || r.finish == nil && r.err == nil {
					return false
				}
			}
			return true
		}(); done && dupErr != nil {
			ch.CloseSend() // the call ends once every generation has
		}
	}
	for i, id := range []string{"a", "c"} {
		ref := refs[slices.Index(ids, id)]
		if r := results[id]; r.finish == nil || r.text != ref.OutputText {
			t.Errorf("generation %s (%d): %q, finish %v, error %v; want %q", id, i, r.text, r.finish, r.err, ref.OutputText)
		}
	}
	if r := results["b"]; r.err == nil || r.err.GetCode() != int32(codes.Canceled) || r.finish != nil || len(r.text) >= len(refs[1].OutputText) {
		t.Errorf("cancelled generation b: %q, finish %v, error %v; want a CANCELLED error", results["b"].text, r.finish, r.err)
	}
	if r := results["d"]; r.err == nil || r.err.GetCode() != int32(codes.InvalidArgument) || r.err.GetField() != "temperature" || r.events != 1 {
		t.Errorf("invalid generation d: %+v, want one INVALID_ARGUMENT event naming temperature", r)
	}
	if dupErr == nil {
		t.Error("a start under a running id was not refused")
	}
	waitFor(t, "every sequence to end with no cache block in use", func() bool {
		s := fx.eng.Stats()
		return s.Running == 0 && s.Queued == 0 && s.FinishedCanceled == 1 && fx.eng.Cache().BlocksInUse() == 0
	})
}

// TestGRPCHealthAndReflection checks the health service (NOT_SERVING
// before the model is loaded, SERVING after, unknown services refused)
// and that reflection lists the services, as grpcurl asks for them.
func TestGRPCHealthAndReflection(t *testing.T) {
	empty := New(Config{})
	health := grpc_health_v1.NewHealthClient(grpcConn(t, empty))
	ctx := context.Background()
	if r, err := health.Check(ctx, &grpc_health_v1.HealthCheckRequest{}); err != nil || r.GetStatus() != grpc_health_v1.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health before the model: %v, %v", r, err)
	}
	if _, err := generate(t, spigotv1.NewGenerationClient(grpcConn(t, empty)), ctx, &spigotv1.GenerateRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("Generate before the model: %v, want Unavailable", err)
	}

	fx := newFixture(t, fixtureOptions{})
	conn := grpcConn(t, fx.srv)
	health = grpc_health_v1.NewHealthClient(conn)
	for _, svc := range []string{"", "spigot.v1.Generation"} {
		if r, err := health.Check(ctx, &grpc_health_v1.HealthCheckRequest{Service: svc}); err != nil || r.GetStatus() != grpc_health_v1.HealthCheckResponse_SERVING {
			t.Errorf("health of %q: %v, %v", svc, r, err)
		}
	}
	if _, err := health.Check(ctx, &grpc_health_v1.HealthCheckRequest{Service: "nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("health of an unknown service: %v", err)
	}
	w, err := health.Watch(ctx, &grpc_health_v1.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := w.Recv(); err != nil || r.GetStatus() != grpc_health_v1.HealthCheckResponse_SERVING {
		t.Errorf("Watch: %v, %v", r, err)
	}
	go fx.srv.Shutdown(ctx)
	if r, err := w.Recv(); err != nil || r.GetStatus() != grpc_health_v1.HealthCheckResponse_NOT_SERVING {
		t.Errorf("Watch while shutting down: %v, %v", r, err)
	}

	refl, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := refl.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := refl.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"spigot.v1.Generation", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %v, without %s", names, want)
		}
	}
	// The file descriptor that grpcurl needs to build requests.
	if err := refl.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{
		FileContainingSymbol: "spigot.v1.Generation"}}); err != nil {
		t.Fatal(err)
	}
	if resp, err := refl.Recv(); err != nil || len(resp.GetFileDescriptorResponse().GetFileDescriptorProto()) == 0 {
		t.Errorf("file of spigot.v1.Generation: %v, %v", resp, err)
	}
	refl.CloseSend()
}
