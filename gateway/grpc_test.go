package gateway

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	spigotv1 "github.com/spigot-llm/spigot/api/spigotpb/spigot/v1"
)

// grpcClient serves w's gRPC front on a loopback port and returns a
// client of it; both end with the test.
func (w *gw) grpcClient(t testing.TB) spigotv1.GenerationClient {
	t.Helper()
	return spigotv1.NewGenerationClient(mustConn(t, w))
}

// grpcRun is what a client saw of one generation's events.
type grpcRun struct {
	start    *spigotv1.Start
	text     string
	deltas   int
	tokens   int // deltas with a token (logprobs)
	finish   *spigotv1.Finish
	err      *spigotv1.Error
	stream   string
	lastSeq  uint64
	resuming bool // no Start is due
}

// add checks an event against the rules (one stream id, Start first,
// growing seqs, nothing after the end) and records it.
func (r *grpcRun) add(t testing.TB, ev *spigotv1.GenerateResponse) {
	t.Helper()
	if r.finish != nil || r.err != nil {
		t.Fatalf("event %v after the end", ev)
	}
	if r.stream == "" {
		r.stream = ev.GetStreamId()
	}
	if ev.GetStreamId() != r.stream {
		t.Fatalf("event of stream %q in stream %q", ev.GetStreamId(), r.stream)
	}
	if ev.GetStart() == nil && ev.GetError() == nil && r.start == nil && !r.resuming {
		t.Fatalf("event %v before Start", ev)
	}
	if s := ev.GetSeq(); s > 0 && s <= r.lastSeq || ev.GetStart() == nil && s == 0 && ev.GetError() == nil {
		t.Fatalf("event %v: seq after %d", ev, r.lastSeq)
	}
	r.lastSeq = max(r.lastSeq, ev.GetSeq())
	switch e := ev.GetEvent().(type) {
	case *spigotv1.GenerateResponse_Start:
		if r.start != nil || r.resuming {
			t.Fatalf("a second Start %v", e.Start)
		}
		r.start = e.Start
	case *spigotv1.GenerateResponse_Delta:
		r.text += e.Delta.GetText()
		r.deltas++
		if e.Delta.GetToken() != nil {
			r.tokens++
		}
	case *spigotv1.GenerateResponse_Finish:
		r.finish = e.Finish
	case *spigotv1.GenerateResponse_Error:
		r.err = e.Error
	}
}

// readAll reads a server stream to its end: the run and the call's
// status.
func readAll(t testing.TB, recv func() (*spigotv1.GenerateResponse, error), r *grpcRun) error {
	t.Helper()
	for {
		ev, err := recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		r.add(t, ev)
	}
}

// TestGRPCThroughGateway: the gateway's gRPC front gives the same text
// and usage as SSE; a resumable Generate cut by its client is resumed
// with Resume on the other instance and over SSE; Channel runs, cancels
// and resumes generations (one started over SSE); refusals get the
// HTTP API's errors as statuses.
func TestGRPCThroughGateway(t *testing.T) {
	rs := []*replica{newReplica(t, 4), newReplica(t, 4)}
	for _, r := range rs {
		r.model.delay.Store(int64(2 * time.Millisecond))
	}
	peers := newPeers(t, 2, replicaConfig(rs...))
	c0, c1 := peers[0].grpcClient(t), peers[1].grpcClient(t)
	ctx := context.Background()

	if h, err := grpc_health_v1.NewHealthClient(mustConn(t, peers[0])).Check(ctx, &grpc_health_v1.HealthCheckRequest{}); err != nil ||
		h.GetStatus() != grpc_health_v1.HealthCheckResponse_SERVING {
		t.Errorf("health: %v, %v", h, err)
	}

	want := &sseResumer{t: t}
	resp := open(t, http.MethodPost, peers[1].ts.URL+"/v1/completions",
		`{"model":"stories260K","prompt":"Once upon a time","temperature":0,"max_tokens":70,"ignore_eos":true,"stream":true,"stream_options":{"include_usage":true}}`)
	want.read(resp.Body)
	resp.Body.Close()
	maxTokens, temp := int32(70), 0.0
	req := &spigotv1.GenerateRequest{Model: "stories260K", Prompt: &spigotv1.GenerateRequest_Text{Text: "Once upon a time"},
		MaxTokens: &maxTokens, Temperature: &temp, IgnoreEos: true}

	// Generate, whole.
	st, err := c0.Generate(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	var r grpcRun
	if err := readAll(t, st.Recv, &r); err != nil {
		t.Fatal(err)
	}
	if r.text != want.text.String() || r.finish.GetFinishReason() != want.finishes[0] || r.start.GetModel() != "stories260K" ||
		r.start.GetPromptTokens() != int32(want.usage[0]["prompt_tokens"]) ||
		r.finish.GetUsage().GetCompletionTokens() != int32(want.usage[0]["completion_tokens"]) {
		t.Errorf("Generate: start %v, text %q, finish %v; want text %q, finish %q, usage %v", r.start, r.text, r.finish,
			want.text.String(), want.finishes, want.usage)
	}

	// A resumable Generate whose call ends after 10 deltas goes on; Resume
	// on the other instance delivers the rest.
	req.Resumable = true
	cctx, cancel := context.WithCancel(ctx)
	st, err = c0.Generate(cctx, req)
	if err != nil {
		t.Fatal(err)
	}
	var first grpcRun
	for first.deltas < 10 {
		ev, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		first.add(t, ev)
	}
	cancel()
	rst, err := c1.Resume(ctx, &spigotv1.ResumeRequest{StreamId: first.stream, After: first.lastSeq})
	if err != nil {
		t.Fatal(err)
	}
	rest := grpcRun{resuming: true}
	if err := readAll(t, rst.Recv, &rest); err != nil {
		t.Fatal(err)
	}
	if first.text+rest.text != want.text.String() || rest.finish == nil || rest.finish.GetUsage().GetTotalTokens() != int32(want.usage[0]["total_tokens"]) {
		t.Errorf("Generate cut and resumed on the other instance: %q + %q, finish %v; want %q, usage %v",
			first.text, rest.text, rest.finish, want.text.String(), want.usage)
	}
	again := &sseResumer{t: t}
	resp = open(t, http.MethodGet, peers[1].ts.URL+"/v1/streams/"+first.stream, "")
	again.read(resp.Body)
	resp.Body.Close()
	if again.text.String() != want.text.String() {
		t.Errorf("the gRPC stream over SSE: %q, want %q", again.text.String(), want.text.String())
	}
	// Resuming after the end: no events.
	rst, err = c1.Resume(ctx, &spigotv1.ResumeRequest{StreamId: first.stream, After: rest.lastSeq})
	if err == nil {
		var none grpcRun
		err = readAll(t, rst.Recv, &none)
		if none.deltas > 0 || none.finish != nil {
			t.Errorf("resume after the end sent %+v", none)
		}
	}
	if err != nil {
		t.Errorf("resume after the end: %v", err)
	}

	// Refusals, as statuses.
	bad := -1.0
	for _, tc := range []struct {
		name string
		req  *spigotv1.GenerateRequest
		code codes.Code
	}{
		{"no prompt", &spigotv1.GenerateRequest{Model: "stories260K"}, codes.InvalidArgument},
		{"unknown model", &spigotv1.GenerateRequest{Model: "nope", Prompt: &spigotv1.GenerateRequest_Text{Text: "x"}}, codes.NotFound},
		{"bad temperature (the replica refuses it)", &spigotv1.GenerateRequest{Model: "stories260K", Temperature: &bad,
			Prompt: &spigotv1.GenerateRequest_Text{Text: "x"}}, codes.InvalidArgument},
	} {
		st, err := c1.Generate(ctx, tc.req)
		if err == nil {
			_, err = st.Recv()
		}
		if status.Code(err) != tc.code || status.Convert(err).Message() == "" {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.code)
		}
	}
	for _, tc := range []struct {
		name  string
		req   *spigotv1.ResumeRequest
		code  codes.Code
		owner int
	}{
		{"unknown stream", &spigotv1.ResumeRequest{StreamId: "gs-00"}, codes.NotFound, 0},
		{"after not sent", &spigotv1.ResumeRequest{StreamId: first.stream, After: 9999}, codes.OutOfRange, 0},
		{"after not sent, on the other instance", &spigotv1.ResumeRequest{StreamId: first.stream, After: 9999}, codes.OutOfRange, 1},
	} {
		c := []spigotv1.GenerationClient{c0, c1}[tc.owner]
		st, err := c.Resume(ctx, tc.req)
		if err == nil {
			_, err = st.Recv()
		}
		if status.Code(err) != tc.code {
			t.Errorf("Resume, %s: %v, want %v", tc.name, err, tc.code)
		}
	}

	// Channel: two generations, one canceled; a resume of a stream
	// started over SSE on the other instance; refusals under their ids.
	for _, r := range rs {
		r.model.delay.Store(int64(10 * time.Millisecond))
	}
	sresp := open(t, http.MethodPost, peers[0].ts.URL+"/v1/completions",
		`{"model":"stories260K","prompt":"Once upon a time","temperature":0,"max_tokens":70,"ignore_eos":true,"stream":true,"stream_options":{"include_usage":true}}`)
	sse := &sseResumer{t: t}
	sse.read(&cutReader{r: sresp.Body, n: 1500})
	sresp.Body.Close()
	ch, err := c1.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	long := int32(2000)
	send := func(r *spigotv1.ChannelRequest) {
		if err := ch.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	send(&spigotv1.ChannelRequest{Action: &spigotv1.ChannelRequest_Start{Start: &spigotv1.StartGeneration{Id: "a", Request: req}}})
	longReq := &spigotv1.GenerateRequest{Model: "stories260K", Prompt: &spigotv1.GenerateRequest_Messages{Messages: &spigotv1.ChatMessages{
		Messages: []*spigotv1.ChatMessage{{Role: "user", Content: "hi"}}}}, MaxTokens: &long, IgnoreEos: true}
	send(&spigotv1.ChannelRequest{Action: &spigotv1.ChannelRequest_Start{Start: &spigotv1.StartGeneration{Id: "b", Request: longReq}}})
	send(&spigotv1.ChannelRequest{Action: &spigotv1.ChannelRequest_Resume{Resume: &spigotv1.ResumeGeneration{Id: "c", StreamId: sse.streamID, After: sse.lastSeq}}})
	send(&spigotv1.ChannelRequest{Action: &spigotv1.ChannelRequest_Start{Start: &spigotv1.StartGeneration{Id: "b", Request: req}}})
	send(&spigotv1.ChannelRequest{Action: &spigotv1.ChannelRequest_Start{Start: &spigotv1.StartGeneration{Request: req}}})
	send(&spigotv1.ChannelRequest{Action: &spigotv1.ChannelRequest_Resume{Resume: &spigotv1.ResumeGeneration{Id: "d", StreamId: "gs-00"}}})
	runs := map[string]*grpcRun{"a": {}, "b": {}, "c": {resuming: true}, "": {}, "d": {}}
	refusals := map[string]codes.Code{}
	canceled := false
	for len(refusals) < 3 || runs["a"].finish == nil || runs["c"].finish == nil || runs["b"].err == nil {
		m, err := ch.Recv()
		if err != nil {
			t.Fatalf("channel: %v (runs %+v, refusals %v)", err, runs, refusals)
		}
		if m.GetEvent().GetStreamId() == "" && m.GetEvent().GetError() != nil {
			refusals[m.GetId()] = codes.Code(m.GetEvent().GetError().GetCode())
			continue
		}
		r := runs[m.GetId()]
		if r == nil {
			t.Fatalf("an event for id %q", m.GetId())
		}
		r.add(t, m.GetEvent())
		if m.GetId() == "b" && r.deltas == 3 && !canceled {
			canceled = true
			send(&spigotv1.ChannelRequest{Action: &spigotv1.ChannelRequest_Cancel{Cancel: &spigotv1.CancelGeneration{Id: "b"}}})
		}
	}
	ch.CloseSend()
	if _, err := ch.Recv(); err != io.EOF {
		t.Errorf("the channel after every generation ended: %v, want EOF", err)
	}
	if runs["a"].text != want.text.String() {
		t.Errorf("channel a: %q, want %q", runs["a"].text, want.text.String())
	}
	if sse.text.String()+runs["c"].text != want.text.String() || runs["c"].finish.GetUsage().GetTotalTokens() == 0 {
		t.Errorf("channel c, resuming an SSE stream: %q + %q, finish %v; want %q", sse.text.String(), runs["c"].text, runs["c"].finish, want.text.String())
	}
	if runs["b"].err.GetCode() != int32(codes.Canceled) {
		t.Errorf("channel b canceled: %v", runs["b"].err)
	}
	if fmt.Sprint(refusals) != fmt.Sprint(map[string]codes.Code{"": codes.InvalidArgument, "b": codes.AlreadyExists, "d": codes.NotFound}) {
		t.Errorf("refusals %v", refusals)
	}
	for i, r := range rs {
		waitFor(t, fmt.Sprintf("replica %d to be idle", i), 10*time.Second, func() bool {
			s := r.eng.Stats()
			return s.Running == 0 && s.Queued == 0 && r.eng.Cache().BlocksInUse() == 0
		})
	}
}

// mustConn is a plain client connection to w's gRPC front.
func mustConn(t testing.TB, w *gw) *grpc.ClientConn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := w.g.GRPCServer()
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient("passthrough:///"+ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestGRPCGatewayAuth: with keys configured, a call needs one in its
// metadata; a stream is resumed only with the key that started it.
func TestGRPCGatewayAuth(t *testing.T) {
	a := newFake(t, okStream)
	gwy := newGW(t, fakeConfig(t, KindSpigot, fmt.Sprintf("auth: {keys: [{name: alice, sha256: %s}, {name: bob, sha256: %s}]}\n",
		keyHash("sk-alice"), keyHash("sk-bob")), nil, a))
	c := gwy.grpcClient(t)
	req := &spigotv1.GenerateRequest{Model: "m", Prompt: &spigotv1.GenerateRequest_Text{Text: "x"}, Resumable: true}
	st, err := c.Generate(context.Background(), req)
	if err == nil {
		_, err = st.Recv()
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("no key: %v, want Unauthenticated", err)
	}
	alice := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer sk-alice")
	st, err = c.Generate(alice, req)
	if err != nil {
		t.Fatal(err)
	}
	var r grpcRun
	if err := readAll(t, st.Recv, &r); err != nil || r.text != "ab" || r.finish == nil {
		t.Fatalf("with a key: %+v, %v", r, err)
	}
	bob := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer sk-bob")
	rs, err := c.Resume(bob, &spigotv1.ResumeRequest{StreamId: r.stream})
	if err == nil {
		_, err = rs.Recv()
	}
	if status.Code(err) != codes.NotFound {
		t.Errorf("another key's stream: %v, want NotFound", err)
	}
	if !strings.HasPrefix(r.stream, "gs-") {
		t.Errorf("stream id %q", r.stream)
	}
}

// TestGRPCRequestBody: a gRPC request reaches the upstream as a client
// would have written it, without the nulls of unset fields (llama.cpp's
// server refuses "n": null) or Spigot's fields at their defaults.
func TestGRPCRequestBody(t *testing.T) {
	a := newFake(t, okStream)
	gwy := newGW(t, fakeConfig(t, KindOpenAI, "", nil, a))
	temp, mt := 0.0, int32(7)
	st, err := gwy.grpcClient(t).Generate(context.Background(), &spigotv1.GenerateRequest{Model: "m",
		Prompt: &spigotv1.GenerateRequest_Text{Text: "x"}, Temperature: &temp, MaxTokens: &mt, Stop: []string{"\n"}})
	if err != nil {
		t.Fatal(err)
	}
	var r grpcRun
	if err := readAll(t, st.Recv, &r); err != nil || r.text != "ab" {
		t.Fatalf("%+v, %v", r, err)
	}
	want := `{"max_tokens":7,"model":"m","prompt":"x","stop":["\n"],"stream":true,"stream_options":{"cancel_on_disconnect":true,"include_usage":true},"temperature":0}`
	if got := a.lastBody(); got != want {
		t.Errorf("upstream got\n%s\nwant\n%s", got, want)
	}
}
