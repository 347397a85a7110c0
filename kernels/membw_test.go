package kernels

import (
	"runtime"
	"testing"
)

// BenchmarkMemoryBandwidth measures the machine's read bandwidth the way
// decoding uses it: GOMAXPROCS threads of the kernel pool stream through a
// 1 GiB buffer (far larger than any cache), 64 KiB chunks handed out in
// order, each read once by the set's vector max (one load and one compare
// per 8 floats, so the loop waits on memory, not arithmetic). MB/s is the
// bandwidth; BENCHMARKS.md divides decode's weight bytes per second by it.
//
//	go test -run - -bench MemoryBandwidth -benchtime 10x ./kernels
func BenchmarkMemoryBandwidth(b *testing.B) {
	const size = 1 << 30
	const chunk = 16 << 10 // floats: 64 KiB
	buf := make([]float32, size/4)
	for i := range buf {
		buf[i] = float32(i & 1023)
	}
	p := NewPool(runtime.GOMAXPROCS(0))
	defer p.Close()
	sums := make([]float32, len(buf)/chunk)
	fn := func(lo, hi int) {
		for c := lo; c < hi; c++ {
			sums[c] = maxOf(buf[c*chunk : (c+1)*chunk])
		}
	}
	p.For(len(sums), fn) // fault the pages in and warm up
	b.SetBytes(size)
	for b.Loop() {
		p.For(len(sums), fn)
	}
}

// maxOf is the largest element of x (a multiple of 8 long), through the
// kernel set's vector max when it has one.
func maxOf(x []float32) float32 {
	if active.max != nil {
		return active.max(x)
	}
	m := x[0]
	for _, v := range x {
		m = max(m, v)
	}
	return m
}
