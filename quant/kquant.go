package quant

import "math"

// The K-quant quantizers below follow ggml's quantize_row_q4_K_ref,
// quantize_row_q5_K_ref and quantize_row_q6_K_ref (the path llama-quantize
// takes without an importance matrix) step for step, in float32 with the
// same operation order, so that for finite input they write the same bytes.
// Every product that feeds a sum is converted to float32 explicitly: Go may
// otherwise fuse a*b+c into one FMA (it does on arm64), and ggml's portable
// code, which llama-quantize runs, does not.
//
// A super-block of 256 elements is split into sub-blocks (8 of 32 for Q4_K
// and Q5_K, 16 of 16 for Q6_K). Each sub-block first gets a float scale (and
// for Q4_K/Q5_K a min) from a small weighted least-squares search; the
// sub-block scales are then themselves quantized to 6 (Q4_K, Q5_K) or 8
// (Q6_K) bits against one half-precision super-block scale, and finally
// every element is quantized against its sub-block's stored scale.

// groupMaxEps is ggml's GROUP_MAX_EPS: a sub-block whose largest magnitude
// is below it counts as all zero.
const groupMaxEps = 1e-15

// nearestInt is ggml's nearest_int: v rounded to the nearest integer, ties
// to even, by adding 1.5·2²³ and reading the low 23 bits of the sum. It is
// exact for |v| < 2²²; for larger magnitudes, infinities and NaN it still
// returns a value in [-2²², 2²²) (the bits of the sum), as the C function
// does when its assertion is compiled out, so it is total and never traps.
func nearestInt(v float32) int {
	return int(math.Float32bits(v+12582912)&0x7fffff) - 0x400000
}

func clampInt(v, lo, hi int) int { return max(lo, min(hi, v)) }

func abs32(v float32) float32 { return math.Float32frombits(math.Float32bits(v) &^ (1 << 31)) }

func sqrt32(v float32) float32 { return float32(math.Sqrt(float64(v))) }

// makeQKX2 is ggml's make_qkx2_quants with squared error: it finds scale and
// min ≥ 0 minimising Σ w·(scale·l + (-min) − x)² over codes l in [0, nmax],
// trying nstep+1 candidate scales (nmax + rmin + rdelta·i)/(max − min) and
// refitting scale and min by weighted least squares for each. It writes the
// codes to L (Laux is scratch of the same length) and returns scale and the
// min to subtract.
func makeQKX2(x, w []float32, L, Laux []uint8, nmax int, rmin, rdelta float32, nstep int) (scale, negMin float32) {
	n := len(x)
	L, Laux, w = L[:n], Laux[:n], w[:n]
	lo, hi := x[0], x[0]
	sumW := w[0]
	sumX := float32(sumW * x[0])
	for i := 1; i < n; i++ {
		lo = min32(lo, x[i])
		hi = max32(hi, x[i])
		sumW += w[i]
		sumX += float32(w[i] * x[i])
	}
	if lo > 0 {
		lo = 0
	}
	if hi == lo {
		clear(L)
		return 0, -lo
	}
	fmax := float32(nmax)
	iscale := fmax / (hi - lo)
	scale = 1 / iscale
	var bestErr float32
	for i, v := range x {
		l := clampInt(nearestInt(iscale*(v-lo)), 0, nmax)
		L[i] = uint8(l)
		diff := float32(float32(scale*float32(l))+lo) - v
		bestErr += float32(w[i] * float32(diff*diff))
	}
	for is := 0; is <= nstep; is++ {
		iscale = (float32(rmin+float32(rdelta*float32(is))) + fmax) / (hi - lo)
		var sumL, sumL2, sumXL float32
		for i, v := range x {
			l := clampInt(nearestInt(iscale*(v-lo)), 0, nmax)
			Laux[i] = uint8(l)
			wl := float32(w[i] * float32(l))
			sumL += wl
			sumL2 += float32(wl * float32(l))
			sumXL += float32(wl * v)
		}
		D := float32(sumW*sumL2) - float32(sumL*sumL)
		if !(D > 0) {
			continue
		}
		thisScale := (float32(sumW*sumXL) - float32(sumX*sumL)) / D
		thisMin := (float32(sumL2*sumX) - float32(sumL*sumXL)) / D
		if thisMin > 0 {
			thisMin = 0
			thisScale = sumXL / sumL2
		}
		var curErr float32
		for i, v := range x {
			diff := float32(float32(thisScale*float32(Laux[i]))+thisMin) - v
			curErr += float32(w[i] * float32(diff*diff))
		}
		if curErr < bestErr {
			copy(L, Laux)
			bestErr, scale, lo = curErr, thisScale, thisMin
		}
	}
	return scale, -lo
}

// min32 and max32 are C's (x < m ? x : m) comparisons, which keep m when x
// is NaN (the builtin min and max would return NaN).
func min32(m, x float32) float32 {
	if x < m {
		return x
	}
	return m
}

func max32(m, x float32) float32 {
	if x > m {
		return x
	}
	return m
}

// makeQX is ggml's make_qx_quants with rmse_type 1 and no importance
// weights: symmetric codes l in [-nmax, nmax-1], stored in L as l+nmax,
// with the scale that minimises Σ x²·(scale·l − x)² among 19 candidate
// rounding grids around nmax/max. It returns the scale (negative when the
// element of largest magnitude is positive, as in ggml).
func makeQX(x []float32, L []uint8, nmax int) float32 {
	L = L[:len(x)]
	var amax, vmax float32
	for _, v := range x {
		if a := abs32(v); a > amax {
			amax, vmax = a, v
		}
	}
	if amax < groupMaxEps {
		clear(L)
		return 0
	}
	fn := float32(nmax)
	sums := func(iscale float32) (sumLX, sumL2 float32) {
		for _, v := range x {
			l := float32(clampInt(nearestInt(iscale*v), -nmax, nmax-1))
			w := float32(v * v)
			sumLX += float32(float32(w*v) * l)
			sumL2 += float32(float32(w*l) * l)
		}
		return sumLX, sumL2
	}
	codes := func(iscale float32) {
		for i, v := range x {
			L[i] = uint8(nmax + clampInt(nearestInt(iscale*v), -nmax, nmax-1))
		}
	}
	iscale := -fn / vmax
	codes(iscale)
	sumLX, sumL2 := sums(iscale)
	var scale float32
	if sumL2 != 0 {
		scale = sumLX / sumL2
	}
	best := scale * sumLX
	for is := -9; is <= 9; is++ {
		if is == 0 {
			continue
		}
		iscale = -(fn + float32(0.1*float32(is))) / vmax
		sumLX, sumL2 = sums(iscale)
		if sumL2 > 0 && float32(sumLX*sumLX) > float32(best*sumL2) {
			codes(iscale)
			scale = sumLX / sumL2
			best = scale * sumLX
		}
	}
	return scale
}

// quantizeKScaleMins is the part Q4_K and Q5_K share: the per-sub-block
// scale and min search, their 6-bit quantization into the 12 scale bytes
// against d and dmin (written to blk[0:16]), and the final codes in [0,
// nmax] written to L.
func quantizeKScaleMins(blk *[16]byte, x *[QKK]float32, L *[QKK]uint8, nmax int, rmin float32, nstep int) {
	var scales, mins [QKK / 32]float32
	var weights [32]float32
	var laux [32]uint8
	var maxScale, maxMin float32
	for j := range QKK / 32 {
		xs := x[32*j : 32*j+32]
		var sumX2 float32
		for _, v := range xs {
			sumX2 += float32(v * v)
		}
		avX := sqrt32(sumX2 / 32)
		for l, v := range xs {
			weights[l] = avX + abs32(v)
		}
		scales[j], mins[j] = makeQKX2(xs, weights[:], L[32*j:32*j+32], laux[:], nmax, rmin, 0.1, nstep)
		maxScale = max32(maxScale, scales[j])
		maxMin = max32(maxMin, mins[j])
	}
	var invScale, invMin float32
	if maxScale > 0 {
		invScale = 63 / maxScale
	}
	if maxMin > 0 {
		invMin = 63 / maxMin
	}
	sc := (*[12]byte)(blk[4:16])
	for j := range QKK / 32 {
		// ggml stores nearest_int's result in a uint8_t before the
		// MIN(63, ·): a (pathological) negative value wraps to a large one
		// and then clamps to 63.
		ls := min(63, uint8(nearestInt(invScale*scales[j])))
		lm := min(63, uint8(nearestInt(invMin*mins[j])))
		if j < 4 {
			sc[j] = ls
			sc[j+4] = lm
		} else {
			sc[j+4] = ls&0xf | (lm&0xf)<<4
			sc[j-4] |= (ls >> 4) << 6
			sc[j] |= (lm >> 4) << 6
		}
	}
	put16(blk[0:2], F32ToF16(maxScale/63))
	put16(blk[2:4], F32ToF16(maxMin/63))
	d, dmin := F16ToF32(le16(blk[0:2])), F16ToF32(le16(blk[2:4]))
	for j := range QKK / 32 {
		s, m := scaleMinK4(j, sc)
		dj := d * float32(s)
		if dj == 0 {
			continue // keeps the search's codes, as ggml does
		}
		dm := dmin * float32(m)
		for i := 32 * j; i < 32*j+32; i++ {
			L[i] = uint8(clampInt(nearestInt((x[i]+dm)/dj), 0, nmax))
		}
	}
}

// quantizeQ4_K is ggml's quantize_row_q4_K_ref.
func quantizeQ4_K(dst []byte, src []float32) {
	var L [QKK]uint8
	for len(src) >= QKK {
		x := (*[QKK]float32)(src)
		y := (*[144]byte)(dst)
		quantizeKScaleMins((*[16]byte)(y[:16]), x, &L, 15, -1, 20)
		q := y[16:]
		for j := 0; j < QKK; j += 64 {
			for l := range 32 {
				q[l] = L[j+l] | L[j+l+32]<<4
			}
			q = q[32:]
		}
		src, dst = src[QKK:], dst[144:]
	}
}

// quantizeQ5_K is ggml's quantize_row_q5_K_ref.
func quantizeQ5_K(dst []byte, src []float32) {
	var L [QKK]uint8
	for len(src) >= QKK {
		x := (*[QKK]float32)(src)
		y := (*[176]byte)(dst)
		quantizeKScaleMins((*[16]byte)(y[:16]), x, &L, 31, -0.5, 15)
		qh := y[16:48]
		clear(qh)
		ql := y[48:]
		m1, m2 := byte(1), byte(2)
		for n := 0; n < QKK; n += 64 {
			for j := range 32 {
				l1, l2 := L[n+j], L[n+j+32]
				if l1 > 15 {
					l1 -= 16
					qh[j] |= m1
				}
				if l2 > 15 {
					l2 -= 16
					qh[j] |= m2
				}
				ql[j] = l1 | l2<<4
			}
			m1 <<= 2
			m2 <<= 2
			ql = ql[32:]
		}
		src, dst = src[QKK:], dst[176:]
	}
}

// quantizeQ6_K is ggml's quantize_row_q6_K_ref.
func quantizeQ6_K(dst []byte, src []float32) {
	var L [QKK]uint8
	for len(src) >= QKK {
		x := (*[QKK]float32)(src)
		y := (*[210]byte)(dst)
		var scales [QKK / 16]float32
		var maxScale, maxAbs float32
		for ib := range QKK / 16 {
			s := makeQX(x[16*ib:16*ib+16], L[16*ib:16*ib+16], 32)
			scales[ib] = s
			if a := abs32(s); a > maxAbs {
				maxAbs, maxScale = a, s
			}
		}
		src, dst = src[QKK:], dst[210:]
		if maxAbs < groupMaxEps {
			clear(y[:]) // d = 0
			continue
		}
		iscale := -128 / maxScale
		put16(y[208:210], F32ToF16(1/iscale))
		sc := y[192:208]
		for ib := range sc {
			// ggml: MIN(127, nearest_int(·)) stored in an int8_t.
			sc[ib] = byte(int8(min(127, nearestInt(iscale*scales[ib]))))
		}
		d := F16ToF32(le16(y[208:210]))
		for j := range QKK / 16 {
			dj := d * float32(int8(sc[j]))
			if dj == 0 {
				continue
			}
			for i := 16 * j; i < 16*j+16; i++ {
				L[i] = uint8(clampInt(nearestInt(x[i]/dj), -32, 31) + 32)
			}
		}
		ql, qh := y[0:128], y[128:192]
		for j := 0; j < QKK; j += 128 {
			for l := range 32 {
				a, b, c, e := L[j+l], L[j+l+32], L[j+l+64], L[j+l+96]
				ql[l] = a&0xf | (c&0xf)<<4
				ql[l+32] = b&0xf | (e&0xf)<<4
				qh[l] = a>>4 | (b>>4)<<2 | (c>>4)<<4 | (e>>4)<<6
			}
			ql, qh = ql[64:], qh[32:]
		}
	}
}
