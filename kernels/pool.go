package kernels

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// Pool is a persistent set of worker goroutines that lives for the process
// (or until [Pool.Close]): a parallel loop hands its work to goroutines that
// are already running instead of starting new ones, so [Pool.For] costs
// microseconds, not the tens of microseconds of spawning.
//
// Idle workers spin for a short while (tens of microseconds) on an atomic
// counter before parking on a channel, so that back-to-back loops, as in a
// forward pass, wake them without a scheduler round trip. When GOMAXPROCS is
// 1 they park at once.
//
// A Pool runs one loop at a time: For and the kernels that take a Pool
// (such as [MatMul]) may be called from several goroutines, but the calls
// are serialized by a mutex. A nil *Pool is valid and runs everything on the
// calling goroutine.
type Pool struct {
	mu      sync.Mutex // serializes jobs and Close
	threads int
	closed  atomic.Bool // set once, under mu
	workers []*worker
	wg      sync.WaitGroup // running worker goroutines

	// The current job, written by the caller before gen is bumped and read
	// by workers after they see the new gen (the atomics order them).
	fn     func(lo, hi int)
	wfn    func(w, lo, hi int)
	n      int
	chunk  int
	chunks int
	guided bool         // claim guided chunks (see run) rather than fixed ones
	spin   int          // how long idle workers poll gen before parking
	next   atomic.Int64 // next chunk to take (guided: next index)
	active atomic.Int32 // workers still running the job
	gen    atomic.Uint64
	done   chan struct{} // cap 1: the last worker out wakes the caller

	scratch  [][]float32 // per participant (0 is the caller), grown on demand
	bscratch [][]byte    // the same, for bytes
	act      []byte      // MatMul's quantized activations, shared by the participants
	xpad     []float32   // MatMul's padded float activations, shared likewise

	mm    mmJob               // the MatMul in progress
	mmRun func(w, lo, hi int) // runs p.mm; made once so MatMul allocates nothing
}

type worker struct {
	wake chan struct{} // cap 1: the caller's nudge for a parked worker
}

// spinLimit is how many times an idle worker, or a caller waiting for its
// workers, polls before parking. One poll is a few nanoseconds, so this is a
// few tens of microseconds: longer than the gap between two matmuls in a
// forward pass, far shorter than the scheduler's 10 ms preemption tick.
const spinLimit = 1 << 14

// NewPool starts a pool of threads goroutines in all: the goroutine that
// calls For is one of them, so threads-1 workers are started. threads ≤ 0
// means runtime.NumCPU().
func NewPool(threads int) *Pool {
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	p := &Pool{
		threads:  threads,
		done:     make(chan struct{}, 1),
		scratch:  make([][]float32, threads),
		bscratch: make([][]byte, threads),
	}
	for w := range p.scratch {
		// Every participant's scratch exists from the start, so that which
		// participant first runs a float unit does not decide when a
		// decode step allocates.
		p.scratch[w] = make([]float32, scratchMin)
	}
	p.mmRun = func(w, lo, hi int) { p.mm.run(w, lo, hi) }
	p.workers = make([]*worker, threads-1)
	p.wg.Add(threads - 1)
	for i := range p.workers {
		w := &worker{wake: make(chan struct{}, 1)}
		p.workers[i] = w
		go p.work(i+1, w)
	}
	return p
}

// Threads returns how many goroutines, the caller's included, run a loop:
// 1 for a nil or closed Pool.
func (p *Pool) Threads() int {
	if p == nil || p.closed.Load() {
		return 1
	}
	return p.threads
}

// For calls fn on contiguous, disjoint chunks [lo, hi) that together cover
// [0, n) exactly once, spread over the pool's goroutines (the caller's
// included), and returns when all calls have returned. Chunks are taken
// dynamically, so a goroutine that starts late does less; up to four per
// thread, never fewer than one index each. With n < 2, one thread, a nil
// Pool or a closed one, fn(0, n) runs on the calling goroutine.
//
// For does not allocate; fn should not call For on the same Pool (that
// deadlocks), and a panic in fn on a worker goroutine crashes the program.
func (p *Pool) For(n int, fn func(lo, hi int)) {
	if n <= 0 {
		return
	}
	if p == nil || n < 2 || p.threads == 1 {
		fn(0, n)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed.Load() {
		fn(0, n)
		return
	}
	p.fn = fn
	p.run(n, false)
	p.fn = nil
}

// forWorker is For with the participant's index w (0 for the caller,
// 1..Threads()-1 for workers), for kernels that keep per-thread scratch in
// p.scratch[w]. It runs inline for a nil pool, with w = 0.
func (p *Pool) forWorker(n int, fn func(w, lo, hi int)) {
	if n <= 0 {
		return
	}
	if p == nil || n < 2 || p.threads == 1 {
		fn(0, 0, n)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed.Load() {
		fn(0, 0, n)
		return
	}
	p.wfn = fn
	p.run(n, false)
	p.wfn = nil
}

// scratchMin is the floats of scratch each participant starts with.
const scratchMin = 64 << 10

// scratchFor returns participant w's scratch buffer with room for n floats.
// Only participant w may call it during a job, so it needs no lock. Each
// starts at scratchMin (256 KiB), which small models' matrices never
// outgrow; larger ones grow it once.
func (p *Pool) scratchFor(w, n int) []float32 {
	if p == nil {
		return make([]float32, n)
	}
	if cap(p.scratch[w]) < n {
		p.scratch[w] = make([]float32, max(n, scratchMin))
	}
	return p.scratch[w][:n]
}

// byteScratchFor returns participant w's byte scratch with room for n
// bytes, starting at a 64-byte boundary. Only participant w may call it
// during a job.
func (p *Pool) byteScratchFor(w, n int) []byte {
	return alignBytes(&p.bscratch[w], n)
}

// run executes the job in p.fn or p.wfn over [0, n). p.mu is held.
//
// The threads claim fixed chunks, up to four per thread; or, if guided,
// chunks of 1/(2·threads) of the indexes left (at least one), as guided
// self-scheduling does: long runs first, so that each thread walks long
// stretches of consecutive indexes (for MatMul, consecutive weight rows,
// which the hardware prefetchers stream), and short ones at the end, so
// that the threads finish together. (For decode-sized products, handing
// the units out singly interleaved the threads' rows and measured about
// 20% slower; fixed quarter-share chunks left a thread idle for up to a
// chunk, tens of microseconds, at the end of each product; guided chunks
// measured about 8% faster than those per decoded token.)
func (p *Pool) run(n int, guided bool) {
	chunks := min(n, 4*p.threads)
	p.n = n
	p.guided = guided
	p.chunks = chunks
	p.chunk = (n + chunks - 1) / chunks
	p.chunks = (n + p.chunk - 1) / p.chunk
	p.next.Store(0)
	p.active.Store(int32(len(p.workers)))
	// Spinning only helps when the workers have processors of their own.
	// (GOMAXPROCS takes a scheduler lock, so read it once per job; workers
	// use the value of their last job.)
	spin := spinLimit
	if runtime.GOMAXPROCS(0) == 1 {
		spin = 0
	}
	p.spin = spin
	p.gen.Add(1)
	for _, w := range p.workers {
		select {
		case w.wake <- struct{}{}:
		default: // a nudge is already pending
		}
	}
	p.take(0)
	for i := 0; p.active.Load() != 0; i++ {
		if i < spin {
			if i&255 == 255 {
				runtime.Gosched()
			}
			continue
		}
		<-p.done // a stale token only costs another trip round the loop
	}
}

// take runs chunks of the current job until none are left.
func (p *Pool) take(w int) {
	if p.guided {
		for {
			lo := p.next.Load()
			if lo >= int64(p.n) {
				return
			}
			hi := lo + max(1, (int64(p.n)-lo)/int64(2*p.threads))
			if !p.next.CompareAndSwap(lo, hi) {
				continue
			}
			if p.fn != nil {
				p.fn(int(lo), int(hi))
			} else {
				p.wfn(w, int(lo), int(hi))
			}
		}
	}
	for {
		c := int(p.next.Add(1) - 1)
		if c >= p.chunks {
			return
		}
		lo := c * p.chunk
		hi := min(lo+p.chunk, p.n)
		if p.fn != nil {
			p.fn(lo, hi)
		} else {
			p.wfn(w, lo, hi)
		}
	}
}

func (p *Pool) work(id int, w *worker) {
	defer p.wg.Done()
	var last uint64 // gen when the pool was made: a job may start before this goroutine does
	spin := 0       // park until the first job
	for {
		g := p.gen.Load()
		for i := 0; g == last; i++ {
			if i < spin {
				if i&255 == 255 {
					runtime.Gosched()
				}
			} else {
				<-w.wake
			}
			g = p.gen.Load()
		}
		last = g
		if p.fn == nil && p.wfn == nil {
			return // Close bumps gen with no job
		}
		spin = p.spin
		p.take(id)
		if p.active.Add(-1) == 0 {
			select {
			case p.done <- struct{}{}:
			default:
			}
		}
	}
}

// Close stops the workers and waits for them to exit. It waits for a loop in
// progress to finish first. Close is idempotent and safe to call from
// several goroutines; after it, For still works but runs on the calling
// goroutine.
func (p *Pool) Close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed.Load() {
		return
	}
	p.closed.Store(true)
	p.fn, p.wfn = nil, nil
	p.gen.Add(1)
	for _, w := range p.workers {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
	p.wg.Wait()
	p.scratch = make([][]float32, p.threads) // drop the buffers
	p.bscratch = make([][]byte, p.threads)
	p.act, p.xpad = nil, nil
}
