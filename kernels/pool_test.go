package kernels

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestPoolForCoversOnce(t *testing.T) {
	for _, threads := range []int{1, 2, 3, 4, 8} {
		p := NewPool(threads)
		if got := p.Threads(); got != threads {
			t.Errorf("NewPool(%d).Threads() = %d", threads, got)
		}
		for _, n := range []int{0, 1, 2, 3, 5, 7, 8, 9, 16, 31, 100, 1000, 12345} {
			counts := make([]int32, n)
			var calls atomic.Int32
			p.For(n, func(lo, hi int) {
				calls.Add(1)
				if lo < 0 || hi > n || lo >= hi {
					t.Errorf("threads=%d n=%d: bad chunk [%d, %d)", threads, n, lo, hi)
					return
				}
				for i := lo; i < hi; i++ {
					atomic.AddInt32(&counts[i], 1)
				}
			})
			for i, c := range counts {
				if c != 1 {
					t.Fatalf("threads=%d n=%d: index %d ran %d times", threads, n, i, c)
				}
			}
			if n > 0 && int(calls.Load()) > 4*threads {
				t.Errorf("threads=%d n=%d: %d chunks, want at most %d", threads, n, calls.Load(), 4*threads)
			}
		}
		p.Close()
	}
}

// TestPoolGuidedCoversOnce checks run's guided chunks (MatMul's): every
// index exactly once, chunks no longer than 1/(2·threads) of what was left
// (so at most the first is n/(2·threads)), and the participants' indexes
// in range.
func TestPoolGuidedCoversOnce(t *testing.T) {
	for _, threads := range []int{2, 3, 4, 8} {
		p := NewPool(threads)
		for _, n := range []int{2, 3, 5, 7, 16, 31, 100, 1000, 12345} {
			counts := make([]int32, n)
			var bad atomic.Int32
			p.mu.Lock()
			p.wfn = func(w, lo, hi int) {
				if w < 0 || w >= threads || lo < 0 || hi > n || lo >= hi || hi-lo > max(1, n/(2*threads)) {
					bad.Add(1)
					return
				}
				for i := lo; i < hi; i++ {
					atomic.AddInt32(&counts[i], 1)
				}
			}
			p.run(n, true)
			p.wfn = nil
			p.mu.Unlock()
			if bad.Load() != 0 {
				t.Fatalf("threads=%d n=%d: %d bad chunks", threads, n, bad.Load())
			}
			for i, c := range counts {
				if c != 1 {
					t.Fatalf("threads=%d n=%d: index %d ran %d times", threads, n, i, c)
				}
			}
		}
		p.Close()
	}
}

func TestPoolNil(t *testing.T) {
	var p *Pool
	if p.Threads() != 1 {
		t.Errorf("nil Pool Threads() = %d, want 1", p.Threads())
	}
	var got [2]int
	p.For(10, func(lo, hi int) { got = [2]int{lo, hi} })
	if got != [2]int{0, 10} {
		t.Errorf("nil Pool For(10) ran %v, want [0 10]", got)
	}
	p.Close()
}

// TestPoolWorkerIndex checks that forWorker's participant index is in range
// and never used by two chunks at once, which per-thread scratch relies on.
func TestPoolWorkerIndex(t *testing.T) {
	p := NewPool(3)
	defer p.Close()
	var busy [3]atomic.Bool
	var seen [3]atomic.Bool
	for range 200 {
		p.forWorker(64, func(w, lo, hi int) {
			if w < 0 || w >= 3 {
				t.Errorf("worker index %d out of range", w)
				return
			}
			if !busy[w].CompareAndSwap(false, true) {
				t.Errorf("worker index %d used concurrently", w)
			}
			seen[w].Store(true)
			for i := 0; i < 2000; i++ { // long enough that workers overlap
				_ = i
			}
			busy[w].Store(false)
		})
	}
	if !seen[0].Load() {
		t.Errorf("the calling goroutine (index 0) never ran a chunk")
	}
}

// TestPoolConcurrentCallers checks For is safe from several goroutines.
func TestPoolConcurrentCallers(t *testing.T) {
	p := NewPool(3)
	defer p.Close()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				n := 100 + g
				var sum atomic.Int64
				p.For(n, func(lo, hi int) {
					for i := lo; i < hi; i++ {
						sum.Add(int64(i))
					}
				})
				if want := int64(n * (n - 1) / 2); sum.Load() != want {
					t.Errorf("sum = %d, want %d", sum.Load(), want)
				}
			}
		}()
	}
	wg.Wait()
}

// TestPoolClose checks that concurrent Closes are safe, that For still runs
// (inline) after Close, and that no goroutine outlives the pools.
func TestPoolClose(t *testing.T) {
	base := runtime.NumGoroutine()
	for range 5 {
		p := NewPool(4)
		p.For(1000, func(lo, hi int) {})
		// A loop in flight while Close is called: Close waits for it.
		started := make(chan struct{})
		var finished atomic.Bool
		go func() {
			p.For(2, func(lo, hi int) {
				if lo == 0 {
					close(started)
					time.Sleep(10 * time.Millisecond)
					finished.Store(true)
				}
			})
		}()
		<-started
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() { defer wg.Done(); p.Close() }()
		}
		wg.Wait()
		if !finished.Load() {
			t.Errorf("Close returned before the loop in progress finished")
		}
		if p.Threads() != 1 {
			t.Errorf("Threads() after Close = %d, want 1", p.Threads())
		}
		var ran [2]int
		p.For(7, func(lo, hi int) { ran = [2]int{lo, hi} })
		if ran != [2]int{0, 7} {
			t.Errorf("For after Close ran %v, want [0 7] inline", ran)
		}
	}
	// Exited goroutines may take a moment to be reaped.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base {
		t.Errorf("%d goroutines after Close, %d before", n, base)
	}
}

func TestNewPoolDefault(t *testing.T) {
	p := NewPool(0)
	defer p.Close()
	if p.Threads() != runtime.NumCPU() {
		t.Errorf("NewPool(0).Threads() = %d, want NumCPU %d", p.Threads(), runtime.NumCPU())
	}
}
