package engine

import (
	"context"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/spigot-llm/spigot/engine/sample"
	"github.com/spigot-llm/spigot/gguf"
	"github.com/spigot-llm/spigot/kernels"
	"github.com/spigot-llm/spigot/model"
	"github.com/spigot-llm/spigot/tokenizer"
)

// decodeBench is an engine whose loop is not running, with 16 sequences
// decoding: steps are driven by hand.
type decodeBench struct {
	e      *Engine
	sts    []*Stream
	evs    []Event
	closed context.Context
}

// benchMaxTokens keeps requests inside stories260K's 128-token context.
const benchMaxTokens = 100

func newDecodeBench(tb testing.TB) *decodeBench {
	f, err := gguf.Open(filepath.Join(sharedDir, "models", "stories260K.gguf"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() })
	pool := kernels.NewPool(0)
	tb.Cleanup(pool.Close)
	m, err := model.Load(f, model.Options{Pool: pool})
	if err != nil {
		tb.Fatal(err)
	}
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		tb.Fatal(err)
	}
	e, err := newEngine(Config{Model: m, Tokenizer: tok, Parallel: 16, StepTarget: -1})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d := &decodeBench{e: e, closed: ctx}
	d.refill(tb)
	return d
}

// refill starts new requests in the free slots and steps until every
// sequence is decoding.
func (d *decodeBench) refill(tb testing.TB) {
	for i := len(d.e.seqs); i < 16; i++ {
		st, err := d.e.Submit(context.Background(), Request{
			Prompt: []int32{1, int32(20 + i), 30, 40}, MaxTokens: benchMaxTokens, IgnoreEOS: true,
			Sample: benchParams(i),
		})
		if err != nil {
			tb.Fatal(err)
		}
		d.sts = append(d.sts, st)
	}
	d.e.admit()
	for d.prefilling() {
		d.step()
	}
	if len(d.e.seqs) < 16 {
		d.refill(tb)
	}
}

func (d *decodeBench) prefilling() bool {
	for _, s := range d.e.seqs {
		if s.next < len(s.req.Prompt) {
			return true
		}
	}
	return false
}

// finishing reports whether a sequence ends in the next step.
func (d *decodeBench) finishing() bool {
	for _, s := range d.e.seqs {
		if s.res.Tokens+1 >= benchMaxTokens || s.kv.Len()+2 >= d.e.cfg.Context {
			return true
		}
	}
	return false
}

// step runs one engine step and reads every stream's events, as a server
// would, into a reused buffer.
func (d *decodeBench) step() {
	d.e.step()
	live := d.sts[:0]
	for _, st := range d.sts {
		var err error
		d.evs, err = st.Recv(d.closed, d.evs[:0])
		if err == nil || err == context.Canceled {
			live = append(live, st)
		}
	}
	clear(d.sts[len(live):])
	d.sts = live
}

// benchParams gives request i sampling parameters: half greedy, half
// sampled with the usual filters.
func benchParams(i int) (p sample.Params) {
	if i%2 == 1 {
		p.Temperature, p.TopK, p.TopP, p.Seed = 0.8, 40, 0.95, uint64(i)
	}
	return p
}

// BenchmarkDecodeStep measures one engine step with 16 sequences decoding
// (half greedy, half sampled) on stories260K, the events read as a server
// reads them. Steps that admit or finish a request are not timed: allocs/op
// is the steady state, and must be 0.
func BenchmarkDecodeStep(b *testing.B) {
	d := newDecodeBench(b)
	b.ReportAllocs()
	for b.Loop() {
		if d.finishing() {
			b.StopTimer()
			d.step()
			d.refill(b)
			b.StartTimer()
		}
		d.step()
	}
}

// TestDecodeStepAllocs checks that steady-state decode steps (16
// sequences, sampling and detokenizing, events read) do not allocate: 80
// steps may make at most one new text chunk per sequence. It counts, with
// the memory profiler sampling every allocation, those made by Spigot's
// code on any goroutine (the step's and the kernel pool's), leaving out the
// runtime's own bookkeeping (a parked worker's channel wait, new threads).
func TestDecodeStepAllocs(t *testing.T) {
	defer func(r int) { runtime.MemProfileRate = r }(runtime.MemProfileRate)
	runtime.MemProfileRate = 1
	d := newDecodeBench(t)
	for range 10 {
		d.step() // grow buffers, start the text chunks
	}
	before := spigotAllocs()
	for range 80 {
		d.step()
	}
	after := spigotAllocs()
	if len(d.e.seqs) != 16 {
		t.Fatalf("%d sequences running, want 16", len(d.e.seqs))
	}
	n := 0
	for stack, count := range after {
		if extra := count - before[stack]; extra > 0 {
			n += int(extra)
			if !strings.Contains(stack, "textArena") {
				t.Errorf("%d allocations at %s", extra, stack)
			}
		}
	}
	if n > 16 {
		t.Errorf("80 decode steps allocated %d times, want at most 16 (text chunks)", n)
	}
}

// spigotAllocs returns the allocations so far (as of a fresh garbage
// collection) by call stack, for stacks that run through this module's
// code outside this file and not through the runtime's scheduler.
func spigotAllocs() map[string]int64 {
	runtime.GC()
	runtime.GC()
	n, _ := runtime.MemProfile(nil, true)
	recs := make([]runtime.MemProfileRecord, n+64)
	n, _ = runtime.MemProfile(recs, true)
	out := map[string]int64{}
	for _, r := range recs[:n] {
		var b strings.Builder
		ours, runtimeOwn := false, false
		frames := runtime.CallersFrames(r.Stack())
		for {
			f, more := frames.Next()
			switch {
			case strings.Contains(f.Function, "acquireSudog"), strings.Contains(f.Function, "runtime.allocm"):
				runtimeOwn = true
			case strings.Contains(f.Function, "spigot-llm/spigot/") && !strings.HasSuffix(f.File, "step_test.go"):
				ours = true
			}
			b.WriteString(" <- " + f.Function)
			if !more {
				break
			}
		}
		if ours && !runtimeOwn {
			out[b.String()] += r.AllocObjects
		}
	}
	return out
}
