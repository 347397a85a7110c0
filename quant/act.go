package quant

import "math"

// ActBlock is the number of activations that share one scale in
// [QuantizeActivations].
const ActBlock = 32

// ActMinAmax is the smallest block maximum [QuantizeActivations] scales;
// blocks below it (all but zero, and small enough that 127/max could
// overflow float32) quantize to zero.
const ActMinAmax = 0x1p-120

// QuantizeActivations quantizes float32 activations to blocks of 32 int8
// values with one float32 scale each: the form in which matrix products
// over Q8_0 and Q4_0 weights take their activations, so that the inner
// products are integer ones. It is ggml's quantize_row_q8_0 as its AVX2
// path computes it, except that the scale stays float32 (ggml rounds it to
// half). For block b of x (len(x) a multiple of 32, len(q) ≥ len(x),
// len(d) ≥ len(x)/32):
//
//	amax := max_j |x[j]|
//	d[b] = amax / 127
//	q[j] = roundHalfEven(x[j] * (127 / amax))
//
// each operation rounded to float32, with d[b] = 0 and q = 0 when
// amax < [ActMinAmax]. For finite x, q[j] ∈ [-127, 127] and
//
//	|x[j] - d[b]·q[j]| ≤ amax/127 · (1/2 + 382u),  u = 2^-24
//
// (the rounding to an integer contributes 1/2; 127/amax, the product and
// d[b] each carry a relative rounding error of at most u, which scaled by
// |x[j]·127/amax| ≤ 127 or |q[j]| ≤ 127 gives the rest). Results for NaN or
// infinite inputs are unspecified.
func QuantizeActivations(q []int8, d []float32, x []float32) {
	nb := len(x) / ActBlock
	q = q[:nb*ActBlock]
	d = d[:nb]
	for b := range nb {
		xb := (*[ActBlock]float32)(x[b*ActBlock:])
		qb := (*[ActBlock]int8)(q[b*ActBlock:])
		var amax float32
		for _, v := range xb {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		if !(amax >= ActMinAmax) {
			d[b] = 0
			*qb = [ActBlock]int8{}
			continue
		}
		d[b] = amax / 127
		id := 127 / amax
		for j, v := range xb {
			qb[j] = int8(clampRound(float32(math.RoundToEven(float64(v*id))), -128, 127))
		}
	}
}
