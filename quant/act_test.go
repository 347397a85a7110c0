package quant

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestQuantizeActivations checks the documented bound |x - d·q| ≤
// amax/127·(1/2 + 382u) and range q ∈ [-127, 127] on random blocks of
// widely varying scale, the element of largest magnitude mapping to ±127,
// and the zero and tiny blocks.
func TestQuantizeActivations(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const n = 64 * ActBlock
	x := make([]float32, n)
	q := make([]int8, n)
	d := make([]float32, n/ActBlock)
	for iter := range 50 {
		scale := math.Ldexp(1, iter-25)
		for i := range x {
			x[i] = float32(r.NormFloat64() * scale)
		}
		QuantizeActivations(q, d, x)
		for b := range d {
			var amax float64
			for _, v := range x[b*ActBlock : (b+1)*ActBlock] {
				amax = max(amax, math.Abs(float64(v)))
			}
			if d[b] != float32(amax)/127 {
				t.Fatalf("scale %g block %d: d = %v, want %v", scale, b, d[b], float32(amax)/127)
			}
			bound := amax / 127 * (0.5 + 382*0x1p-24)
			top := false
			for j := b * ActBlock; j < (b+1)*ActBlock; j++ {
				if q[j] < -127 {
					t.Fatalf("q[%d] = %d", j, q[j])
				}
				if e := math.Abs(float64(x[j]) - float64(d[b])*float64(q[j])); e > bound {
					t.Fatalf("scale %g: x[%d] = %v quantized to %v·%d, error %g > %g", scale, j, x[j], d[b], q[j], e, bound)
				}
				top = top || q[j] == 127 || q[j] == -127
			}
			if !top {
				t.Fatalf("scale %g block %d: no quant reaches ±127", scale, b)
			}
		}
	}
	// Zero and tiny blocks quantize to zero.
	for _, v := range []float32{0, 0x1p-121, -0x1p-140} {
		for i := range x {
			x[i] = v
		}
		QuantizeActivations(q, d, x)
		for i := range q {
			if q[i] != 0 || d[i/ActBlock] != 0 {
				t.Fatalf("block of %v: q[%d] = %d, d = %v, want 0", v, i, q[i], d[i/ActBlock])
			}
		}
	}
}
