package kernels

import (
	"runtime"
	"testing"
)

// BenchmarkMemoryBandwidth measures the machine's read bandwidth the way
// decoding uses it: GOMAXPROCS threads of the kernel pool stream through a
// 1 GiB buffer (far larger than any cache) with the fastest float dot
// product, each 64 KiB chunk against the same 64 KiB vector (which stays in
// cache), so the only memory traffic is the buffer. MB/s is the bandwidth;
// BENCHMARKS.md divides decode's weight bytes per second by it.
//
//	go test -run - -bench MemoryBandwidth -benchtime 10x ./kernels
func BenchmarkMemoryBandwidth(b *testing.B) {
	const size = 1 << 30
	const chunk = 16 << 10 // floats: 64 KiB
	buf := make([]float32, size/4)
	for i := range buf {
		buf[i] = float32(i & 1023)
	}
	x := make([]float32, chunk)
	for i := range x {
		x[i] = 1
	}
	p := NewPool(runtime.GOMAXPROCS(0))
	defer p.Close()
	sums := make([]float32, len(buf)/chunk)
	fn := func(lo, hi int) {
		for c := lo; c < hi; c++ {
			sums[c] = Dot(buf[c*chunk:(c+1)*chunk], x)
		}
	}
	p.For(len(sums), fn) // fault the pages in and warm up
	b.SetBytes(size)
	for b.Loop() {
		p.For(len(sums), fn)
	}
}
