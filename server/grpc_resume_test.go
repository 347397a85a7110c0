package server

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	spigotv1 "github.com/spigot-llm/spigot/api/spigotpb/spigot/v1"
)

// takeGRPC reads events with recv into r until the generation's final
// event (Finish or Error), the end of the call, or n events (n <= 0: no
// limit). It reports whether the final event came; err is the call's
// error, if it ended with one.
func takeGRPC(t testing.TB, r *grpcResult, n int, recv func() (*spigotv1.GenerateResponse, error)) (final bool, err error) {
	t.Helper()
	for k := 0; n <= 0 || k < n; k++ {
		ev, err := recv()
		if err == io.EOF {
			return r.finish != nil || r.err != nil, nil
		}
		if err != nil {
			return r.finish != nil || r.err != nil, err
		}
		r.add(t, ev)
		if r.finish != nil || r.err != nil {
			return true, nil
		}
	}
	return false, nil
}

// channelRecv returns a recv for takeGRPC of one generation's events on
// a Channel (every event the test gets is that generation's).
func channelRecv(t testing.TB, ch spigotv1.Generation_ChannelClient, id string) func() (*spigotv1.GenerateResponse, error) {
	return func() (*spigotv1.GenerateResponse, error) {
		resp, err := ch.Recv()
		if err != nil {
			return nil, err
		}
		if resp.GetId() != id {
			t.Errorf("event for %q on a channel that runs only %q", resp.GetId(), id)
		}
		return resp.GetEvent(), nil
	}
}

// TestGRPCResumeRandomCuts cuts gRPC streams of greedy generations many
// times, at random events: by cancelling the call's context, or by
// closing the client's connection. Each time the client resumes after the
// last event it got, alternately with the Resume rpc and a resume on a
// Channel (whose call is cut the same ways). The pieces put together must
// be exactly an uncut run's text, finish and usage, with no event twice
// (grpcResult.add checks that sequence numbers grow), and no generation
// may have been cancelled by a cut.
func TestGRPCResumeRandomCuts(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 4, delay: time.Millisecond})
	addr := grpcListen(t, fx.srv)
	shared := spigotv1.NewGenerationClient(grpcDial(t, addr))
	ref := references(t)[1]
	text := &spigotv1.GenerateRequest_Text{Text: ref.Prompt}
	cases := []struct {
		name   string
		runs   int
		maxCut int // events a call may get before it is cut
		req    *spigotv1.GenerateRequest
	}{
		{"completion", 4, 25, &spigotv1.GenerateRequest{Prompt: text, MaxTokens: ptr[int32](100), Temperature: ptr(0.0), IgnoreEos: true}},
		{"chat logprobs", 3, 25, &spigotv1.GenerateRequest{Prompt: &spigotv1.GenerateRequest_Messages{Messages: &spigotv1.ChatMessages{
			Messages: []*spigotv1.ChatMessage{{Role: "user", Content: "Once upon a time"}}}},
			MaxTokens: ptr[int32](80), Temperature: ptr(0.0), IgnoreEos: true, Logprobs: true, TopLogprobs: 2}},
		{"paced and coalesced", 3, 4, &spigotv1.GenerateRequest{Prompt: text, MaxTokens: ptr[int32](100), Temperature: ptr(0.0), IgnoreEos: true,
			PaceTokensPerSecond: ptr(1000.0), MinIntervalMs: ptr(15.0)}},
		{"echo stop", 3, 25, &spigotv1.GenerateRequest{Prompt: &spigotv1.GenerateRequest_Text{Text: "Once upon a time"}, Echo: true,
			MaxTokens: ptr[int32](80), Temperature: ptr(0.0), Stop: []string{"zzz", "ot beo"}}},
	}
	for ci, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want, err := generate(t, shared, context.Background(), tc.req)
			if err != nil || want.finish == nil {
				t.Fatalf("uncut run: %+v, %v", want, err)
			}
			tc.req.Resumable = true
			for run := range tc.runs {
				seed := uint64(ci*100 + run)
				rng := rand.New(rand.NewPCG(seed, 2))
				got := &grpcResult{}
				conns := 0
				for {
					conns++
					if conns > 1000 {
						t.Fatalf("seed %d: no final event after %d calls", seed, conns)
					}
					// Each call gets its own connection, so that a cut may
					// close it.
					conn := grpcDial(t, addr)
					client := spigotv1.NewGenerationClient(conn)
					ctx, cancel := context.WithCancel(context.Background())
					var recv func() (*spigotv1.GenerateResponse, error)
					switch {
					case conns == 1:
						st, err := client.Generate(ctx, tc.req)
						if err != nil {
							t.Fatal(err)
						}
						recv = st.Recv
					case conns%2 == 0:
						st, err := client.Resume(ctx, &spigotv1.ResumeRequest{StreamId: got.streamID, After: got.lastSeq})
						if err != nil {
							t.Fatal(err)
						}
						recv = st.Recv
					default:
						ch, err := client.Channel(ctx)
						if err != nil {
							t.Fatal(err)
						}
						id := "r" + strconv.Itoa(conns)
						err = ch.Send(&spigotv1.ChannelRequest{Action: &spigotv1.ChannelRequest_Resume{Resume: &spigotv1.ResumeGeneration{
							Id: id, StreamId: got.streamID, After: got.lastSeq}}})
						if err != nil {
							t.Fatal(err)
						}
						recv = channelRecv(t, ch, id)
					}
					final, err := takeGRPC(t, got, 1+rng.IntN(tc.maxCut), recv)
					if rng.IntN(2) == 0 {
						cancel()
					} else {
						conn.Close()
					}
					cancel()
					if err != nil {
						t.Fatalf("seed %d, call %d: %v", seed, conns, err)
					}
					if final {
						break
					}
					got.resumed = true
				}
				// Usage but its cached tokens: the uncut run filled the prefix cache.
				gu, wu := got.finish.GetUsage(), want.finish.GetUsage()
				if got.text != want.text || got.err != nil || got.finish.GetFinishReason() != want.finish.GetFinishReason() || got.tokens != want.tokens ||
					gu.GetPromptTokens() != wu.GetPromptTokens() || gu.GetCompletionTokens() != wu.GetCompletionTokens() || gu.GetTotalTokens() != wu.GetTotalTokens() {
					t.Errorf("seed %d, %d calls: %q, finish %v, error %v, %d tokens\nwant %q, finish %v, %d tokens",
						seed, conns, got.text, got.finish, got.err, got.tokens, want.text, want.finish, want.tokens)
				}
				t.Logf("seed %d: %d events over %d calls", seed, got.events, conns)
			}
		})
	}
	waitFor(t, "the engine to be idle", func() bool {
		s := fx.eng.Stats()
		return s.Running == 0 && s.Queued == 0 && fx.eng.Cache().BlocksInUse() == 0
	})
	if s := fx.eng.Stats(); s.FinishedCanceled != 0 || s.FinishedError != 0 {
		t.Errorf("engine stats %+v: a cut call canceled or failed a generation", s)
	}
}

// TestGRPCResumeAcrossTransports resumes a stream started over gRPC with
// SSE, and streams started over SSE (one of two choices) with gRPC: the
// text put together is an uncut run's.
func TestGRPCResumeAcrossTransports(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 4, delay: time.Millisecond})
	client := spigotv1.NewGenerationClient(grpcConn(t, fx.srv))
	ref := references(t)[2]

	t.Run("gRPC then SSE", func(t *testing.T) {
		req := &spigotv1.GenerateRequest{Prompt: &spigotv1.GenerateRequest_Text{Text: ref.Prompt}, MaxTokens: ptr[int32](48),
			Temperature: ptr(0.0), Resumable: true}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		st, err := client.Generate(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		got := &grpcResult{}
		if final, err := takeGRPC(t, got, 6, st.Recv); final || err != nil {
			t.Fatalf("the first call ended: %v, %v", final, err)
		}
		cancel()
		resp := fx.open(t, http.MethodGet, "/v1/streams/"+got.streamID, "", "Last-Event-ID", got.streamID+":"+strconv.FormatUint(got.lastSeq, 10))
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("resume over SSE: status %d", resp.StatusCode)
		}
		rest := collect(t, resp.Body)
		if text := got.text + rest.texts[0]; text != ref.OutputText || fmt.Sprint(rest.finishes[0]) != "[length]" || !rest.done {
			t.Errorf("gRPC %q + SSE %q (finishes %v)\nwant %q", got.text, rest.texts[0], rest.finishes, ref.OutputText)
		}
	})

	t.Run("SSE then gRPC", func(t *testing.T) {
		body := `{"prompt":` + jsonString(ref.Prompt) + `,"temperature":0,"max_tokens":48,"n":2,"stream":true}`
		resp := fx.open(t, http.MethodPost, "/v1/completions", body)
		c := newResumer(t)
		done := c.read(&cutReader{r: resp.Body, n: 1500})
		resp.Body.Close()
		if done || c.streamID == "" {
			t.Fatalf("the SSE connection was not cut mid-stream: done %v, stream %q", done, c.streamID)
		}
		st, err := client.Resume(context.Background(), &spigotv1.ResumeRequest{StreamId: c.streamID, After: c.lastSeq})
		if err != nil {
			t.Fatal(err)
		}
		got := &grpcResult{resumed: true, lastSeq: c.lastSeq, streamID: c.streamID}
		if final, err := takeGRPC(t, got, 0, st.Recv); !final || err != nil {
			t.Fatalf("Resume: final %v, %v", final, err)
		}
		for i := range 2 {
			if text := c.res.texts[i] + got.texts[int32(i)]; text != ref.OutputText {
				t.Errorf("choice %d: SSE %q + gRPC %q\nwant %q", i, c.res.texts[i], got.texts[int32(i)], ref.OutputText)
			}
		}
		if fmt.Sprint(got.finish.GetFinishReasons()) != "[length length]" || got.finish.GetUsage().GetCompletionTokens() != 96 {
			t.Errorf("finish %v, want both choices' length and 96 tokens", got.finish)
		}
		// Everything was sent: resuming after the last event gets nothing.
		st, err = client.Resume(context.Background(), &spigotv1.ResumeRequest{StreamId: c.streamID, After: got.lastSeq})
		if err != nil {
			t.Fatal(err)
		}
		if ev, err := st.Recv(); err != io.EOF {
			t.Errorf("Resume after the last event: %v, %v; want the call to end", ev, err)
		}
	})
}

// TestGRPCResumeErrors checks the refusals of Resume and Channel's
// resume, that a stream not started resumable cannot be resumed, and that
// a call whose stream another call resumes ends with ABORTED.
func TestGRPCResumeErrors(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 4, delay: 2 * time.Millisecond})
	client := spigotv1.NewGenerationClient(grpcConn(t, fx.srv))
	ctx := context.Background()
	resumeErr := func(id string, after uint64) error {
		st, err := client.Resume(ctx, &spigotv1.ResumeRequest{StreamId: id, After: after})
		if err != nil {
			return err
		}
		_, err = st.Recv()
		return err
	}
	if err := resumeErr("cmpl-000000000000000000000000", 0); status.Code(err) != codes.NotFound {
		t.Errorf("unknown stream: %v, want NOT_FOUND", err)
	}

	// Not resumable: its id is not held once it runs.
	plain, err := generate(t, client, ctx, &spigotv1.GenerateRequest{Prompt: &spigotv1.GenerateRequest_Text{Text: "Once"}, MaxTokens: ptr[int32](4)})
	if err != nil {
		t.Fatal(err)
	}
	if err := resumeErr(plain.streamID, 1); status.Code(err) != codes.NotFound {
		t.Errorf("stream not started resumable: %v, want NOT_FOUND", err)
	}

	req := &spigotv1.GenerateRequest{Prompt: &spigotv1.GenerateRequest_Text{Text: "Once upon a time"}, MaxTokens: ptr[int32](200),
		IgnoreEos: true, Temperature: ptr(0.0), Resumable: true}
	first, err := client.Generate(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	r := &grpcResult{}
	if _, err := takeGRPC(t, r, 3, first.Recv); err != nil {
		t.Fatal(err)
	}
	if err := resumeErr(r.streamID, r.lastSeq+100000); status.Code(err) != codes.OutOfRange {
		t.Errorf("resume after an event not sent yet: %v, want OUT_OF_RANGE", err)
	}
	// A second call takes the stream over; the first one ends ABORTED.
	second, err := client.Resume(ctx, &spigotv1.ResumeRequest{StreamId: r.streamID, After: r.lastSeq})
	if err != nil {
		t.Fatal(err)
	}
	var firstErr error
	for firstErr == nil {
		_, firstErr = first.Recv()
	}
	if status.Code(firstErr) != codes.Aborted {
		t.Errorf("the call whose stream was resumed elsewhere: %v, want ABORTED", firstErr)
	}
	// Channel: an unknown stream, then a Cancel of a resumed one.
	ch, err := client.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, msg := range []*spigotv1.ChannelRequest{
		{Action: &spigotv1.ChannelRequest_Resume{Resume: &spigotv1.ResumeGeneration{Id: "x", StreamId: "chatcmpl-nope"}}},
		{Action: &spigotv1.ChannelRequest_Resume{Resume: &spigotv1.ResumeGeneration{Id: "y", StreamId: r.streamID, After: r.lastSeq}}},
		{Action: &spigotv1.ChannelRequest_Cancel{Cancel: &spigotv1.CancelGeneration{Id: "y"}}},
	} {
		if err := ch.Send(msg); err != nil {
			t.Fatal(err)
		}
	}
	results := map[string]*grpcResult{"x": {}, "y": {resumed: true, streamID: r.streamID, lastSeq: r.lastSeq}}
	for results["x"].err == nil || results["y"].err == nil {
		resp, err := ch.Recv()
		if err != nil {
			t.Fatal(err)
		}
		results[resp.GetId()].add(t, resp.GetEvent())
	}
	ch.CloseSend()
	if e := results["x"].err; e.GetCode() != int32(codes.NotFound) {
		t.Errorf("Channel resume of an unknown stream: %v, want NOT_FOUND", e)
	}
	if e := results["y"].err; e.GetCode() != int32(codes.Canceled) {
		t.Errorf("cancelled resumed generation: %v, want CANCELLED", e)
	}
	// The Resume call that the channel took the stream from ends ABORTED.
	var secondErr error
	for secondErr == nil {
		_, secondErr = second.Recv()
	}
	if status.Code(secondErr) != codes.Aborted {
		t.Errorf("the Resume call whose stream the channel took: %v, want ABORTED", secondErr)
	}
}

// TestGRPCPace checks that pace_tokens_per_second reaches gRPC delivery:
// tokens come no faster than the rate, while the generation itself is
// much faster.
func TestGRPCPace(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 2})
	client := spigotv1.NewGenerationClient(grpcConn(t, fx.srv))
	const tokens, rate = 30, 100.0
	start := time.Now()
	r, err := generate(t, client, context.Background(), &spigotv1.GenerateRequest{Prompt: &spigotv1.GenerateRequest_Text{Text: "Once"},
		MaxTokens: ptr[int32](tokens), IgnoreEos: true, Temperature: ptr(0.0), PaceTokensPerSecond: ptr(rate)})
	if err != nil {
		t.Fatal(err)
	}
	// The first token goes at once; each of the others waits its turn.
	if took, least := time.Since(start), time.Duration(float64(tokens-1)/rate*float64(time.Second)); took < least {
		t.Errorf("%d tokens paced at %g/s took %v, want at least %v", r.finish.GetUsage().GetCompletionTokens(), rate, took, least)
	}
}
