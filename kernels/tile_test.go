package kernels

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/spigot-llm/spigot/quant"
)

// TestAxpyTile checks, on every kernel set, that AxpyTile gives exactly the
// Axpy loop it is defined by, for shapes that reach every kernel and the
// column tail, with strided rows.
func TestAxpyTile(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, k := range sets {
		withImpl(k, func() {
			for _, n := range []int{1, 7, 8, 16, 24, 64, 72, 96, 128, 200} {
				for _, nc := range []int{1, 2, 3, 4, 5, 9} {
					for _, nr := range []int{0, 1, 5, 17} {
						os, ps, vs := n+3, nr+2, n+5
						out := tileRand(r, (nc-1)*os+n)
						p := tileRand(r, (nc-1)*ps+max(nr, 1))
						v := tileRand(r, max(nr-1, 0)*vs+n)
						want := append([]float32(nil), out...)
						for q := range nc {
							for j := range nr {
								Axpy(p[q*ps+j], v[j*vs:j*vs+n], want[q*os:q*os+n])
							}
						}
						AxpyTile(out, os, p, ps, nc, v, vs, nr, n)
						for i := range out {
							if math.Float32bits(out[i]) != math.Float32bits(want[i]) {
								t.Fatalf("%s: n=%d nc=%d nr=%d: out[%d] = %v, Axpy loop gives %v", k.name, n, nc, nr, i, out[i], want[i])
							}
						}
					}
				}
			}
		})
	}
}

// TestDotTile checks, on every kernel set, that each DotTile result is the
// one a 1×1 tile gives (so it does not depend on the tile), that it is
// close to the float64 dot product, and that rows past nr are neither
// needed nor written.
func TestDotTile(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, k := range sets {
		withImpl(k, func() {
			for _, n := range []int{8, 16, 64, 128, 12} {
				for _, nc := range []int{1, 2, 3, 5, 7, 13} {
					for _, nr := range []int{1, 3, 4, 6, 16, 17} {
						ws, xs, os := n+8, n+3, nr+1
						for _, padded := range []bool{false, true} {
							rows := nr
							if padded {
								rows = (nr + 3) &^ 3
							}
							w := tileRand(r, (rows-1)*ws+n)
							x := tileRand(r, (nc-1)*xs+n)
							out := make([]float32, (nc-1)*os+nr+1)
							for i := range out {
								out[i] = 42
							}
							DotTile(out, os, w, ws, nr, x, xs, nc, n)
							for q := range nc {
								if out[q*os+nr] != 42 && (q+1)*os > q*os+nr {
									t.Fatalf("%s: n=%d nc=%d nr=%d: wrote past row %d", k.name, n, nc, nr, nr)
								}
								for j := range nr {
									var one [1]float32
									DotTile(one[:], 1, w[j*ws:j*ws+n], ws, 1, x[q*xs:q*xs+n], xs, 1, n)
									got := out[q*os+j]
									if math.Float32bits(got) != math.Float32bits(one[0]) {
										t.Fatalf("%s: n=%d nc=%d nr=%d: out[%d][%d] = %v, alone %v", k.name, n, nc, nr, q, j, got, one[0])
									}
									var ref, mag float64
									for i := range n {
										ref += float64(w[j*ws+i]) * float64(x[q*xs+i])
										mag += math.Abs(float64(w[j*ws+i]) * float64(x[q*xs+i]))
									}
									if d := math.Abs(float64(got) - ref); d > 1e-6*mag+1e-30 {
										t.Fatalf("%s: n=%d: got %v, float64 %v", k.name, n, got, ref)
									}
								}
							}
						}
					}
				}
			}
		})
	}
}

func tileRand(r *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.NormFloat64())
	}
	return s
}

// TestTilesF16 checks, on every kernel set, that DotTileF16 and
// AxpyTileF16 give bit for bit what DotTile and AxpyTile give on the rows
// widened to float32.
func TestTilesF16(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	half := func(n int) ([]uint16, []float32) {
		h := make([]uint16, n)
		f := make([]float32, n)
		for i := range h {
			h[i] = quant.F32ToF16(float32(r.NormFloat64()))
			f[i] = quant.F16ToF32(h[i])
		}
		return h, f
	}
	same := func(a, b []float32) int {
		for i := range a {
			if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
				return i
			}
		}
		return -1
	}
	for _, k := range sets {
		withImpl(k, func() {
			for _, n := range []int{8, 12, 16, 24, 64, 72, 128} {
				for _, nc := range []int{1, 2, 3, 4, 5, 6, 7, 13} {
					for _, nr := range []int{1, 3, 4, 6, 16, 17} {
						ws, xs, os := n+8, n+3, nr+1
						for _, padded := range []bool{false, true} {
							rows := nr
							if padded {
								rows = (nr + 3) &^ 3
							}
							wh, wf := half((rows-1)*ws + n)
							x := tileRand(r, (nc-1)*xs+n)
							got := make([]float32, (nc-1)*os+nr+1)
							want := make([]float32, len(got))
							DotTileF16(got, os, wh, ws, nr, x, xs, nc, n)
							DotTile(want, os, wf, ws, nr, x, xs, nc, n)
							if i := same(got, want); i >= 0 {
								t.Fatalf("%s: DotTileF16 n=%d nc=%d nr=%d padded=%v: out[%d] = %v, DotTile %v", k.name, n, nc, nr, padded, i, got[i], want[i])
							}
						}
						vs, ps, oas := n+5, nr+2, n+3
						vh, vf := half((nr-1)*vs + n)
						p := tileRand(r, (nc-1)*ps+nr)
						got := tileRand(r, (nc-1)*oas+n)
						want := append([]float32(nil), got...)
						AxpyTileF16(got, oas, p, ps, nc, vh, vs, nr, n)
						AxpyTile(want, oas, p, ps, nc, vf, vs, nr, n)
						if i := same(got, want); i >= 0 {
							t.Fatalf("%s: AxpyTileF16 n=%d nc=%d nr=%d: out[%d] = %v, AxpyTile %v", k.name, n, nc, nr, i, got[i], want[i])
						}
					}
				}
			}
		})
	}
}

// TestHeadsF16 checks, on every kernel set, that DotHeadsF16 and
// AxpyHeadsF16 give bit for bit what DotTileF16 and AxpyTileF16 give head
// by head, and write nothing else.
func TestHeadsF16(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	half := func(n int) []uint16 {
		h := make([]uint16, n)
		for i := range h {
			h[i] = quant.F32ToF16(float32(r.NormFloat64()))
		}
		return h
	}
	for _, k := range sets {
		withImpl(k, func() {
			for _, n := range []int{8, 12, 64, 72} {
				for _, heads := range []int{1, 2, 5, 12} {
					for _, nr := range []int{1, 3, 4, 7, 16, 17} {
						ws := heads*n + 8
						w := half((nr-1)*ws + heads*n)
						x := tileRand(r, heads*n)
						os := nr + 3
						got := tileRand(r, (heads-1)*os+nr+1)
						want := append([]float32(nil), got...)
						DotHeadsF16(got, os, w, ws, nr, x, heads, n)
						for h := range heads {
							DotTileF16(want[h*os:], os, w[h*n:], ws, nr, x[h*n:], n, 1, n)
						}
						for i := range got {
							if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
								t.Fatalf("%s: DotHeadsF16 n=%d heads=%d nr=%d: out[%d] = %v, want %v", k.name, n, heads, nr, i, got[i], want[i])
							}
						}
						ps := nr + 2
						p := tileRand(r, (heads-1)*ps+nr)
						got = tileRand(r, heads*n+1)
						want = append([]float32(nil), got...)
						AxpyHeadsF16(got[:heads*n], p, ps, w, ws, nr, heads, n)
						for h := range heads {
							AxpyTileF16(want[h*n:], n, p[h*ps:], ps, 1, w[h*n:], ws, nr, n)
						}
						for i := range got {
							if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
								t.Fatalf("%s: AxpyHeadsF16 n=%d heads=%d nr=%d: out[%d] = %v, want %v", k.name, n, heads, nr, i, got[i], want[i])
							}
						}
					}
				}
			}
		})
	}
}

// TestToF16 checks ToF16 against quant.F32ToF16 on every kernel set, for
// random values of every magnitude (subnormal halves, overflow, ties) and
// the special values; NaNs need only stay NaNs.
func TestToF16(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	src := []float32{0, float32(math.Copysign(0, -1)), 1, -1, 65504, 65520, 65519.99, 1e-8, -6e-8, 3e-5,
		float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), 1 + 1.0/2048, 1 + 3.0/2048}
	for range 5000 {
		src = append(src, math.Float32frombits(r.Uint32()))
		src = append(src, float32(r.NormFloat64()*math.Pow(2, float64(r.IntN(50)-30))))
	}
	for _, k := range sets {
		withImpl(k, func() {
			for _, n := range []int{len(src), 7, 8, 17} {
				dst := make([]uint16, n)
				ToF16(dst, src[:n])
				for i, x := range src[:n] {
					want := quant.F32ToF16(x)
					if x != x {
						if dst[i]&0x7c00 != 0x7c00 || dst[i]&0x3ff == 0 {
							t.Fatalf("%s: ToF16(NaN) = %#04x", k.name, dst[i])
						}
						continue
					}
					if dst[i] != want {
						t.Fatalf("%s: ToF16(%v) = %#04x, quant.F32ToF16 %#04x", k.name, x, dst[i], want)
					}
				}
			}
		})
	}
}
