package kernels

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/spigot-llm/spigot/kernels/kerneltest"
	"github.com/spigot-llm/spigot/quant"
)

// The matmul benchmarks use GOMAXPROCS threads, so
//
//	go test -run - -bench MatMul -cpu 1,2 ./kernels
//
// compares one and two threads. MB/s is weight bytes read per second (the
// effective bandwidth, which bounds decode speed); GFLOP/s counts a
// multiply-add as two operations.

var benchShapes = []struct{ rows, cols int }{
	{768, 768}, {2048, 768}, {768, 2048}, {4096, 4096},
}

var benchTypes = []quant.Type{quant.F32, quant.F16, quant.BF16, quant.Q8_0, quant.Q4_0, quant.Q4_K, quant.Q5_K, quant.Q6_K}

func randMatrix(r *rand.Rand, t quant.Type, rows, cols int) Matrix {
	rs, err := t.RowSize(cols)
	if err != nil {
		panic(err)
	}
	data := make([]byte, 0, rows*rs)
	// Quantizing every row is slow for big matrices; repeat a few rows.
	var pool [][]byte
	for range 16 {
		row, _ := kerneltest.RandRow(r, t, cols)
		pool = append(pool, row)
	}
	for i := range rows {
		data = append(data, pool[i%len(pool)]...)
	}
	return Matrix{Type: t, Data: data, Rows: rows, Cols: cols}
}

func BenchmarkMatMul(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, t := range benchTypes {
		b.Run(t.String(), func(b *testing.B) {
			for _, s := range benchShapes {
				m := randMatrix(r, t, s.rows, s.cols)
				b.Run(fmt.Sprintf("%dx%d", s.rows, s.cols), func(b *testing.B) {
					for _, batch := range []int{1, 16} {
						b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
							x := make([]float32, batch*s.cols)
							for i := range x {
								x[i] = float32(r.NormFloat64())
							}
							out := make([]float32, batch*s.rows)
							// Made here, not above: the testing package
							// sets GOMAXPROCS per -cpu value only around
							// leaf benchmarks.
							p := NewPool(runtime.GOMAXPROCS(0))
							defer p.Close()
							b.SetBytes(int64(len(m.Data)))
							for b.Loop() {
								MatMul(p, out, m, x, batch)
							}
							flops := 2 * float64(s.rows) * float64(s.cols) * float64(batch) * float64(b.N)
							b.ReportMetric(flops/b.Elapsed().Seconds()/1e9, "GFLOP/s")
						})
					}
				})
			}
		})
	}
}

// BenchmarkDotRow is one row's dot product, the matvec inner loop, per
// kernel set.
func BenchmarkDotRow(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 4))
	const n = 4096
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	sets := []impl{generic}
	if active.name != generic.name {
		sets = append(sets, active)
	}
	for _, k := range sets {
		for _, t := range benchTypes {
			row, _ := kerneltest.RandRow(r, t, n)
			f := k.rowDot[slot(t)]
			b.Run(k.name+"/"+t.String(), func(b *testing.B) {
				b.SetBytes(int64(len(row)))
				var s float32
				for b.Loop() {
					s += f(row, x)
				}
				_ = s
			})
		}
	}
}

func BenchmarkDot(b *testing.B) {
	for _, n := range []int{64, 768, 4096} {
		x, y := make([]float32, n), make([]float32, n)
		for i := range x {
			x[i], y[i] = float32(i), float32(n-i)
		}
		b.Run(fmt.Sprintf("naive/%d", n), func(b *testing.B) {
			b.SetBytes(int64(8 * n))
			var s float32
			for b.Loop() {
				var sum float32
				for i := range x {
					sum += x[i] * y[i]
				}
				s += sum
			}
			_ = s
		})
		b.Run(fmt.Sprintf("Dot/%d", n), func(b *testing.B) {
			b.SetBytes(int64(8 * n))
			var s float32
			for b.Loop() {
				s += Dot(x, y)
			}
			_ = s
		})
	}
}

func BenchmarkVec(b *testing.B) {
	const n = 2048
	r := rand.New(rand.NewPCG(5, 6))
	x, y, w := make([]float32, n), make([]float32, n), make([]float32, n)
	for i := range x {
		x[i], y[i], w[i] = float32(r.NormFloat64()), float32(r.NormFloat64()), float32(r.NormFloat64())
	}
	b.Run("RMSNorm", func(b *testing.B) {
		out := make([]float32, n)
		for b.Loop() {
			RMSNorm(out, x, w, 1e-5)
		}
	})
	b.Run("Softmax", func(b *testing.B) {
		s := make([]float32, n)
		for b.Loop() {
			copy(s, x)
			Softmax(s)
		}
	})
	b.Run("SiLUMul", func(b *testing.B) {
		g := make([]float32, n)
		for b.Loop() {
			copy(g, x)
			SiLUMul(g, y)
		}
	})
	b.Run("RoPE", func(b *testing.B) {
		cos, sin := w[:32], y[:32]
		for b.Loop() {
			RoPE(x[:n], n/64, 64, 7, cos, sin, false)
		}
	})
	b.Run("Axpy", func(b *testing.B) {
		for b.Loop() {
			Axpy(1e-3, x, y)
		}
	})
}

// BenchmarkPoolFor is the fixed cost of one parallel loop with no work.
func BenchmarkPoolFor(b *testing.B) {
	fn := func(lo, hi int) {}
	b.Run("empty", func(b *testing.B) {
		p := NewPool(runtime.GOMAXPROCS(0))
		defer p.Close()
		for b.Loop() {
			p.For(64, fn)
		}
	})
}

// BenchmarkMatMulQ compares, for the integer path's weight types, the
// float path (float32 activations: DotRow per row for batch 1, as before
// the integer path; the float tiles on dequantized rows for larger
// batches) with the integer path of each kernel set: Q8_0 and Q4_0 on the
// shapes of a 110M-parameter Llama (dim 768, FFN 2048), and all of Q8_0,
// Q4_0, Q4_K, Q5_K and Q6_K on those of TinyLlama 1.1B (dim 2048, FFN
// 5632; the tl1B synth shape), at decode (batch 1), a few sequences (4),
// and prefill (64, 512). GB/s is weight bytes per second.
//
//	go test -run - -bench MatMulQ -benchtime 20x ./kernels
//	go test -run - -bench 'MatMulQ/.*/2048x5632/batch=(1|64)/int-avx512vnni' -benchtime 20x ./kernels
func BenchmarkMatMulQ(b *testing.B) {
	r := rand.New(rand.NewPCG(7, 8))
	type path struct {
		name  string
		k     impl
		float bool
	}
	paths := []path{{"float", active, true}}
	for _, k := range sets {
		paths = append(paths, path{"int-" + k.name, k, false})
	}
	type shape struct{ rows, cols int }
	small := []shape{{768, 768}, {2048, 768}, {768, 2048}}
	tl1B := []shape{{2048, 2048}, {5632, 2048}, {2048, 5632}}
	for _, t := range []quant.Type{quant.Q8_0, quant.Q4_0, quant.Q4_K, quant.Q5_K, quant.Q6_K} {
		shapes := tl1B
		if t.BlockSize() != quant.QKK {
			shapes = append(small, tl1B...)
		}
		for _, s := range shapes {
			m := randMatrix(r, t, s.rows, s.cols)
			for _, batch := range []int{1, 4, 16, 64, 512} {
				x := make([]float32, batch*s.cols)
				for i := range x {
					x[i] = float32(r.NormFloat64())
				}
				out := make([]float32, batch*s.rows)
				for _, pa := range paths {
					if (pa.k.name == generic.name || pa.float) && batch > 4 && s.rows*s.cols > 1<<21 {
						continue // minutes
					}
					if pa.k.name == generic.name && batch > 4 {
						continue
					}
					name := fmt.Sprintf("%v/%dx%d/batch=%d/%s", t, s.rows, s.cols, batch, pa.name)
					b.Run(name, func(b *testing.B) {
						p := NewPool(runtime.GOMAXPROCS(0))
						defer p.Close()
						withImpl(pa.k, func() {
							disableIntPath = pa.float
							defer func() { disableIntPath = false }()
							b.SetBytes(int64(len(m.Data)))
							for b.Loop() {
								MatMul(p, out, m, x, batch)
							}
						})
						sec := b.Elapsed().Seconds()
						flops := 2 * float64(s.rows) * float64(s.cols) * float64(batch) * float64(b.N)
						b.ReportMetric(flops/sec/1e9, "GFLOP/s")
						b.ReportMetric(float64(len(m.Data))*float64(b.N)/sec/1e9, "GB/s")
					})
				}
			}
		}
	}
}

// BenchmarkHeadsF16 scores one query per head against cache blocks of 16
// rows × 12 heads of 64 (s110M's shape), as a decode step does: head by
// head with DotTileF16, or all heads at once with DotHeadsF16, on 18
// blocks that stay in cache and on blocks taken in turn from 192 MiB.
// GB/s counts the cache bytes read.
func BenchmarkHeadsF16(b *testing.B) {
	const bs, heads, hd = 16, 12, 64
	const kv = heads * hd
	for _, nblk := range []int{18, 8192} {
		blk := make([][]uint16, nblk)
		for i := range blk {
			blk[i] = make([]uint16, bs*kv)
			for j := range blk[i] {
				blk[i][j] = quant.F32ToF16(float32(j%100) / 100)
			}
		}
		q := make([]float32, kv)
		for i := range q {
			q[i] = float32(i%7) / 7
		}
		out := make([]float32, heads*bs)
		for _, all := range []bool{false, true} {
			name := fmt.Sprintf("blocks=%d/perhead", nblk)
			if all {
				name = fmt.Sprintf("blocks=%d/heads", nblk)
			}
			b.Run(name, func(b *testing.B) {
				k := 0
				for b.Loop() {
					for range 18 {
						ks := blk[k%nblk]
						k++
						if all {
							DotHeadsF16(out, bs, ks, kv, bs, q, heads, hd)
							continue
						}
						for h := range heads {
							DotTileF16(out[h*bs:], bs, ks[h*hd:], kv, bs, q[h*hd:], hd, 1, hd)
						}
					}
				}
				b.ReportMetric(float64(18*bs*kv*2*b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
			})
		}
	}
}
