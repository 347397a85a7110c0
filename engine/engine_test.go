package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/spigot-llm/spigot/engine/sample"
)

// drain reads a stream to its end, returning its events and final error.
func drain(t *testing.T, st *Stream) ([]Event, error) {
	t.Helper()
	var all []Event
	for {
		evs, err := st.Recv(context.Background(), nil)
		all = append(all, evs...)
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return all, err
		}
	}
}

func ids(evs []Event) []int32 {
	var out []int32
	for _, ev := range evs {
		if ev.Token >= 0 {
			out = append(out, ev.Token)
		}
	}
	return out
}

// TestConcurrentGreedyMatchesReference runs all reference prompts at once:
// batching sequences together must not change any of them.
func TestConcurrentGreedyMatchesReference(t *testing.T) {
	e, refs := setup(t)
	streams := make([]*Stream, len(refs))
	for i, r := range refs {
		st, err := e.Submit(context.Background(), Request{Prompt: r.PromptIDs, MaxTokens: len(r.OutputIDs)})
		if err != nil {
			t.Fatal(err)
		}
		streams[i] = st
	}
	for i, st := range streams {
		evs, err := drain(t, st)
		if err != nil {
			t.Fatal(err)
		}
		if got := ids(evs); !equal(got, refs[i].OutputIDs) {
			t.Errorf("%q in a batch:\n got %v\nwant %v", refs[i].Prompt, got, refs[i].OutputIDs)
		}
	}
}

// TestManyStreams runs 32 streams of different lengths and priorities,
// cancelling some midway: each ends exactly once, and afterwards no block
// is in use and no goroutine is left.
func TestManyStreams(t *testing.T) {
	e, refs := setup(t)
	base := runtime.NumGoroutine() // the model's pool and the engine loop included
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			r := refs[i%len(refs)]
			max := 4 + i*3
			st, err := e.Submit(ctx, Request{Prompt: r.PromptIDs, MaxTokens: max, Priority: i % 3, IgnoreEOS: true,
				Sample: sample.Params{Temperature: 0.8, Seed: uint64(i)}})
			if err != nil {
				errs <- err
				return
			}
			cancelAt := -1
			if i%4 == 3 {
				cancelAt = 2
			}
			n := 0
			for {
				evs, err := st.Recv(context.Background(), nil)
				for _, ev := range evs {
					if ev.Token >= 0 {
						n++
					}
				}
				if cancelAt >= 0 && n >= cancelAt {
					cancel()
					cancelAt = -1
				}
				if err == io.EOF {
					if res := st.Result(); res.Tokens != max || res.FinishReason != FinishLength || n != max {
						errs <- fmt.Errorf("stream %d: %d events, result %+v, want %d tokens", i, n, res, max)
					}
					return
				}
				if err != nil {
					if i%4 != 3 || !errors.Is(err, ErrCanceled) {
						errs <- fmt.Errorf("stream %d: %v", i, err)
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := e.Cache().BlocksInUse(); n != 0 {
		t.Errorf("%d KV blocks in use after all streams ended", n)
	}
	st := e.Stats()
	if st.Running != 0 || st.Queued != 0 || st.FinishedCanceled == 0 {
		t.Errorf("stats after the run: %+v", st)
	}
	e.Close()
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() >= base && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n >= base {
		t.Errorf("%d goroutines after Close, %d with the engine running; want the loop gone and nothing else left", n, base)
	}
}

func TestPrefixCacheReuse(t *testing.T) {
	e, refs := setup(t)
	r := refs[1] // 24 prompt tokens: one full 16-token block
	first, err := e.Generate(context.Background(), Request{Prompt: r.PromptIDs, MaxTokens: 8}, func(Event) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	var c collected
	second, err := e.Generate(context.Background(), Request{Prompt: r.PromptIDs, MaxTokens: 8}, c.emit)
	if err != nil {
		t.Fatal(err)
	}
	if first.CachedTokens != 0 || second.CachedTokens != 16 {
		t.Errorf("cached tokens: first %d, second %d; want 0 and 16", first.CachedTokens, second.CachedTokens)
	}
	if !equal(c.ids, r.OutputIDs[:8]) {
		t.Errorf("output with a cached prefix %v, want %v", c.ids, r.OutputIDs[:8])
	}
	if st := e.Stats(); st.PrefixHitTokens != 16 {
		t.Errorf("PrefixHitTokens = %d, want 16", st.PrefixHitTokens)
	}
}

// blocker starts a request that runs until cancelled, and waits until it
// produces tokens, so the engine's only slot is busy.
func blocker(t *testing.T, e *Engine, prompt []int32) context.CancelFunc {
	ctx, cancel := context.WithCancel(context.Background())
	st, err := e.Submit(ctx, Request{Prompt: prompt, IgnoreEOS: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	return cancel
}

func TestQueueFullAndPriority(t *testing.T) {
	e0, refs := setup(t)
	e0.Close()
	e, err := New(Config{Model: e0.cfg.Model, Tokenizer: e0.cfg.Tokenizer, Parallel: 1, MaxQueue: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	// The blocker hogs the slot until cancelled, or until the context
	// limit (128) ends it, which on a loaded machine can come before the
	// other two are queued: then try again.
	for attempt := 0; ; attempt++ {
		stop := blocker(t, e, refs[0].PromptIDs)
		low, err := e.Submit(context.Background(), Request{Prompt: refs[1].PromptIDs, MaxTokens: 2, Priority: 5})
		if err != nil {
			t.Fatal(err)
		}
		high, err := e.Submit(context.Background(), Request{Prompt: refs[2].PromptIDs, MaxTokens: 2, Priority: 1})
		if err != nil {
			t.Fatal(err)
		}
		third, err := e.Submit(context.Background(), Request{Prompt: refs[3].PromptIDs, MaxTokens: 2})
		stop()
		if err == nil { // the blocker had already finished
			for _, st := range []*Stream{low, high, third} {
				drain(t, st)
			}
			if attempt == 10 {
				t.Fatal("the blocker always finished before the queue filled")
			}
			continue
		}
		if !errors.Is(err, ErrQueueFull) {
			t.Errorf("third queued request: %v, want ErrQueueFull", err)
		}
		if _, err := drain(t, low); err != nil {
			t.Fatal(err)
		}
		if _, err := drain(t, high); err != nil {
			t.Fatal(err)
		}
		// The priority-1 request left the queue first, so it waited less.
		if lq, hq := low.Result().QueueTime, high.Result().QueueTime; hq >= lq {
			t.Errorf("queue times: priority 1 waited %v, priority 5 waited %v", hq, lq)
		}
		return
	}
}

// TestChunkedPrefillKeepsStreamsFlowing submits a long prompt while another
// stream decodes: with a small step budget the prompt takes many steps, and
// the running stream gets a token in each of them.
func TestChunkedPrefillKeepsStreamsFlowing(t *testing.T) {
	e0, refs := setup(t)
	e0.Close()
	e, err := New(Config{Model: e0.cfg.Model, Tokenizer: e0.cfg.Tokenizer, Parallel: 2, StepTokens: 8, StepTarget: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	start := e.Stats().Steps
	running, err := e.Submit(context.Background(), Request{Prompt: refs[0].PromptIDs, IgnoreEOS: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := running.Recv(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	long := make([]int32, 100)
	for i := range long {
		long[i] = int32(3 + i%500)
	}
	before := e.Stats().Steps
	lst, err := e.Submit(context.Background(), Request{Prompt: long, MaxTokens: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := drain(t, lst); err != nil {
		t.Fatal(err)
	}
	steps := e.Stats().Steps - before
	// 100 prompt tokens at 7 per step (one of the 8 goes to the running
	// stream) is 15 steps.
	if steps < 14 {
		t.Errorf("the 100-token prompt took %d steps, want at least 14", steps)
	}
	if _, err := drain(t, running); err != nil {
		t.Fatal(err)
	}
	// The running stream made a token in every step of its life, the
	// long prompt's prefill steps included: had any step stalled it, the
	// engine would have needed more steps than it made tokens.
	// Its own 10-token prompt took two 8-token steps, the second of which
	// made its first token.
	res := running.Result()
	want := uint64(res.Tokens) + uint64((len(refs[0].PromptIDs)+7)/8) - 1
	if total := e.Stats().Steps - start; res.Tokens != 128-len(refs[0].PromptIDs) || total != want {
		t.Errorf("running stream made %d tokens in %d steps; want %d tokens in %d steps", res.Tokens, total, 128-len(refs[0].PromptIDs), want)
	}
}

func TestShutdown(t *testing.T) {
	e, refs := setup(t)
	st, err := e.Submit(context.Background(), Request{Prompt: refs[0].PromptIDs, MaxTokens: 4})
	if err != nil {
		t.Fatal(err)
	}
	// A generous deadline: the short request finishes normally.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if _, err := drain(t, st); err != nil {
		t.Errorf("request in flight at Shutdown ended with %v", err)
	}
	if _, err := e.Submit(context.Background(), Request{Prompt: refs[0].PromptIDs}); !errors.Is(err, ErrShutdown) {
		t.Errorf("Submit after Shutdown: %v, want ErrShutdown", err)
	}
}

func TestShutdownDeadline(t *testing.T) {
	e0, refs := setup(t)
	e0.Close()
	e, err := New(Config{Model: e0.cfg.Model, Tokenizer: e0.cfg.Tokenizer, Parallel: 1})
	if err != nil {
		t.Fatal(err)
	}
	// A stream that cannot finish before the deadline: its reader is
	// slow, but the engine does not wait for readers, so it is the queued
	// request behind it that is still unfinished at the deadline.
	long, _ := e.Submit(context.Background(), Request{Prompt: refs[0].PromptIDs, IgnoreEOS: true})
	queued, _ := e.Submit(context.Background(), Request{Prompt: refs[1].PromptIDs, IgnoreEOS: true})
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // deadline already passed
	if err := e.Shutdown(ctx); err == nil {
		t.Error("Shutdown past its deadline returned nil")
	}
	_, err1 := drain(t, long)
	_, err2 := drain(t, queued)
	if !errors.Is(err1, ErrShutdown) && err1 != nil || !errors.Is(err2, ErrShutdown) {
		t.Errorf("after the deadline: running stream %v, queued stream %v; want ErrShutdown", err1, err2)
	}
}

// TestStepTargetShrinksChunks: once the engine has timed a step, a tiny
// StepTarget cuts prompts into the smallest chunks (16 tokens beside the
// one running sequence), where StepTokens alone would take them whole.
func TestStepTargetShrinksChunks(t *testing.T) {
	e0, _ := setup(t)
	e0.Close()
	e, err := New(Config{Model: e0.cfg.Model, Tokenizer: e0.cfg.Tokenizer, Parallel: 1, StepTokens: 512, StepTarget: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	prompt := func(off int) []int32 {
		p := make([]int32, 100)
		for i := range p {
			p[i] = int32(3 + (i*7+off)%500)
		}
		return p
	}
	steps := func(p []int32) uint64 {
		before := e.Stats().Steps
		if _, err := e.Generate(context.Background(), Request{Prompt: p, MaxTokens: 1}, func(Event) error { return nil }); err != nil {
			t.Fatal(err)
		}
		return e.Stats().Steps - before
	}
	if n := steps(prompt(0)); n != 1 {
		t.Errorf("first prompt (no timing yet) took %d steps, want 1", n)
	}
	if n := steps(prompt(1)); n != 6 { // ceil(100/17): 16 prompt tokens + 1 for the only slot
		t.Errorf("second prompt took %d steps, want 6", n)
	}
}

// TestRunningCountAfterCancel: the running gauge drops when the last
// sequence is cancelled, not only when the next request arrives.
func TestRunningCountAfterCancel(t *testing.T) {
	e, refs := setup(t)
	for attempt := 0; attempt < 20; attempt++ {
		ctx, cancel := context.WithCancel(context.Background())
		st, err := e.Submit(ctx, Request{Prompt: refs[0].PromptIDs, IgnoreEOS: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		cancel()
		if _, err := drain(t, st); !errors.Is(err, ErrCanceled) {
			continue // it finished before the cancel landed; try again
		}
		deadline := time.Now().Add(2 * time.Second)
		for e.Stats().Running != 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if st := e.Stats(); st.Running != 0 || st.BlocksInUse != 0 {
			t.Errorf("after cancelling the only stream: %+v", st)
		}
		return
	}
	t.Fatal("no attempt was cancelled mid-stream")
}

// TestRecvPoll: Recv with a cancelled context reports what is there
// without blocking, and ctx.Err() only when nothing is.
func TestRecvPoll(t *testing.T) {
	e, refs := setup(t)
	st, err := e.Submit(context.Background(), Request{Prompt: refs[0].PromptIDs, MaxTokens: 3})
	if err != nil {
		t.Fatal(err)
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	var got []Event
	for {
		evs, err := st.Recv(done, nil)
		got = append(got, evs...)
		if err == io.EOF {
			break
		}
		if err != nil && err != context.Canceled {
			t.Fatal(err)
		}
		if err == context.Canceled && len(evs) > 0 {
			t.Fatal("events and ctx.Err() together")
		}
	}
	if len(ids(got)) != 3 {
		t.Errorf("polled %d tokens, want 3", len(ids(got)))
	}
}

// TestFinalEventCarriesReason: a stream cut by max tokens or a stop string
// marks its last event with the reason, so transports can send it with the
// last text instead of in a chunk of its own.
func TestFinalEventCarriesReason(t *testing.T) {
	e, refs := setup(t)
	r := refs[1]
	for _, tc := range []struct {
		req  Request
		want string
	}{
		{Request{Prompt: r.PromptIDs, MaxTokens: 5}, FinishLength},
		{Request{Prompt: r.PromptIDs, MaxTokens: 48, Stop: []string{string([]rune(r.OutputText)[10:13])}}, FinishStop},
	} {
		st, err := e.Submit(context.Background(), tc.req)
		if err != nil {
			t.Fatal(err)
		}
		evs, err := drain(t, st)
		if err != nil {
			t.Fatal(err)
		}
		for i, ev := range evs {
			if last := i == len(evs)-1; (ev.Finish != "") != last || last && ev.Finish != tc.want {
				t.Errorf("event %d of %d: Finish %q, want %q on the last only", i, len(evs), ev.Finish, tc.want)
			}
		}
		if st.Result().FinishReason != tc.want {
			t.Errorf("result %+v, want %s", st.Result(), tc.want)
		}
	}
}

// TestSamePromptTogetherSharesPrefix: requests with the same prompt that
// arrive together (an n > 1 request) compute the shared blocks once.
func TestSamePromptTogetherSharesPrefix(t *testing.T) {
	e, refs := setup(t)
	r := refs[1] // 24 tokens: one full block
	var sts []*Stream
	for i := range 3 {
		st, err := e.Submit(context.Background(), Request{Prompt: r.PromptIDs, MaxTokens: 4, Sample: sample.Params{Temperature: 1, Seed: uint64(i)}})
		if err != nil {
			t.Fatal(err)
		}
		sts = append(sts, st)
	}
	cached := 0
	for _, st := range sts {
		if _, err := drain(t, st); err != nil {
			t.Fatal(err)
		}
		cached += st.Result().CachedTokens
	}
	if cached != 2*16 {
		t.Errorf("%d prompt tokens came from the cache, want 32 (two of three requests reuse the first block)", cached)
	}
}

// TestDeferredRequestDoesNotBlockOthers: while a request waits for another
// to publish the prompt blocks they share, a different request behind it
// takes the free slot.
func TestDeferredRequestDoesNotBlockOthers(t *testing.T) {
	e0, refs := setup(t)
	e0.Close()
	e, err := New(Config{Model: e0.cfg.Model, Tokenizer: e0.cfg.Tokenizer, Parallel: 2, StepTokens: 16, StepTarget: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	long := make([]int32, 100) // prefilled over 7 steps of 16 tokens
	for i := range long {
		long[i] = int32(3 + i%500)
	}
	a, _ := e.Submit(context.Background(), Request{Prompt: long, MaxTokens: 2})
	b, _ := e.Submit(context.Background(), Request{Prompt: long, MaxTokens: 2})
	c, _ := e.Submit(context.Background(), Request{Prompt: refs[0].PromptIDs, MaxTokens: 2})
	for _, st := range []*Stream{a, b, c} {
		if _, err := drain(t, st); err != nil {
			t.Fatal(err)
		}
	}
	if got := b.Result().CachedTokens; got != 96 {
		t.Errorf("the deferred request reused %d prompt tokens, want 96", got)
	}
	if cq, bq := c.Result().QueueTime, b.Result().QueueTime; cq >= bq {
		t.Errorf("the request behind the deferred one waited %v, the deferred one %v: it should have started first", cq, bq)
	}
}
