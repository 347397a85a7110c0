package quant

import "math"

// Block layouts, as ggml-common.h declares them. All multi-byte fields are
// little endian, and a row is its blocks back to back with no padding.
//
//	Q8_0 (34 bytes, 32 elements):  d f16 | qs [32]int8           x = d*qs[j]
//	Q4_0 (18 bytes, 32 elements):  d f16 | qs [16]byte           x[j] = d*((qs[j]&15)-8), x[j+16] = d*((qs[j]>>4)-8)
//	Q4_1 (20 bytes, 32 elements):  d f16 | m f16 | qs [16]byte   x[j] = d*(qs[j]&15)+m, x[j+16] = d*(qs[j]>>4)+m
//	Q5_0 (22 bytes, 32 elements):  d f16 | qh u32 | qs [16]byte  as Q4_0 with bit 4 of element j in qh bit j, minus 16
//	Q5_1 (24 bytes, 32 elements):  d f16 | m f16 | qh u32 | qs [16]byte
//	Q4_K (144 bytes, 256 elements): d f16 | dmin f16 | scales [12]byte | qs [128]byte
//	Q5_K (176 bytes, 256 elements): d f16 | dmin f16 | scales [12]byte | qh [32]byte | qs [128]byte
//	Q6_K (210 bytes, 256 elements): ql [128]byte | qh [64]byte | scales [16]int8 | d f16
const (
	// QK8_0 is the number of elements in a Q8_0 block.
	QK8_0 = 32
	// QK4_0 is the number of elements in a Q4_0 block.
	QK4_0 = 32
	// QKK is the number of elements in a K-quant super-block.
	QKK = 256
)

func le16(b []byte) uint16 { return uint16(b[0]) | uint16(b[1])<<8 }

func put16(b []byte, v uint16) { b[0] = byte(v); b[1] = byte(v >> 8) }

// quantizeQ8_0 is ggml's quantize_row_q8_0_ref. len(src) is a multiple of 32
// and len(dst) is len(src)/32*34.
func quantizeQ8_0(dst []byte, src []float32) {
	for len(src) >= QK8_0 {
		x := (*[QK8_0]float32)(src)
		y := (*[34]byte)(dst)
		var amax float32
		for _, v := range x {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		d := amax / 127
		var id float32
		if d != 0 {
			id = 1 / d
		}
		put16(y[0:2], F32ToF16(d))
		for j, v := range x {
			y[2+j] = byte(int8(clampRound(float32(v*id), -128, 127)))
		}
		src, dst = src[QK8_0:], dst[34:]
	}
}

// clampRound is C's roundf (half away from zero) clamped to [lo, hi]; NaN
// becomes 0. For finite, in-range input it equals the C conversion the
// reference quantizers do; the clamp only keeps NaN and Inf inputs from
// producing undefined values.
func clampRound(v float32, lo, hi int) int {
	r := math.Round(float64(v))
	if !(r >= float64(lo)) { // also catches NaN
		if r != r {
			return 0
		}
		return lo
	}
	if r > float64(hi) {
		return hi
	}
	return int(r)
}

// quantizeQ4_0 is ggml's quantize_row_q4_0_ref: the scale is the element of
// largest magnitude divided by -8, so that element maps exactly to -8 (code 0).
func quantizeQ4_0(dst []byte, src []float32) {
	for len(src) >= QK4_0 {
		x := (*[QK4_0]float32)(src)
		y := (*[18]byte)(dst)
		var amax, vmax float32
		for _, v := range x {
			if a := float32(math.Abs(float64(v))); amax < a {
				amax, vmax = a, v
			}
		}
		d := vmax / -8
		var id float32
		if d != 0 {
			id = 1 / d
		}
		put16(y[0:2], F32ToF16(d))
		for j := range QK4_0 / 2 {
			x0 := float32(x[j] * id)
			x1 := float32(x[j+QK4_0/2] * id)
			y[2+j] = byte(truncClamp(x0+8.5, 15) | truncClamp(x1+8.5, 15)<<4)
		}
		src, dst = src[QK4_0:], dst[18:]
	}
}

// quantizeQ5_0 is ggml's quantize_row_q5_0_ref: as Q4_0 with 5-bit codes,
// the element of largest magnitude mapping to -16 (code 0).
func quantizeQ5_0(dst []byte, src []float32) {
	for len(src) >= 32 {
		x := (*[32]float32)(src)
		y := (*[22]byte)(dst)
		var amax, vmax float32
		for _, v := range x {
			if a := float32(math.Abs(float64(v))); amax < a {
				amax, vmax = a, v
			}
		}
		d := vmax / -16
		var id float32
		if d != 0 {
			id = 1 / d
		}
		put16(y[0:2], F32ToF16(d))
		var qh uint32
		for j := range 16 {
			x0 := truncClamp(float32(x[j]*id)+16.5, 31)
			x1 := truncClamp(float32(x[j+16]*id)+16.5, 31)
			y[6+j] = byte(x0&15 | (x1&15)<<4)
			qh |= uint32(x0>>4) << j
			qh |= uint32(x1>>4) << (j + 16)
		}
		y[2], y[3], y[4], y[5] = byte(qh), byte(qh>>8), byte(qh>>16), byte(qh>>24)
		src, dst = src[32:], dst[22:]
	}
}

// quantizeQ5_1 is ggml's quantize_row_q5_1_ref: d = (max-min)/31 and m =
// min, code = trunc((x-min)/d + 0.5).
func quantizeQ5_1(dst []byte, src []float32) {
	for len(src) >= 32 {
		x := (*[32]float32)(src)
		y := (*[24]byte)(dst)
		lo, hi := float32(math.MaxFloat32), float32(-math.MaxFloat32)
		for _, v := range x {
			lo = min32(lo, v)
			hi = max32(hi, v)
		}
		d := (hi - lo) / 31
		var id float32
		if d != 0 {
			id = 1 / d
		}
		put16(y[0:2], F32ToF16(d))
		put16(y[2:4], F32ToF16(lo))
		var qh uint32
		for j := range 16 {
			x0 := truncClamp(float32((x[j]-lo)*id)+0.5, 31)
			x1 := truncClamp(float32((x[j+16]-lo)*id)+0.5, 31)
			y[8+j] = byte(x0&15 | (x1&15)<<4)
			qh |= uint32(x0>>4) << j
			qh |= uint32(x1>>4) << (j + 16)
		}
		y[4], y[5], y[6], y[7] = byte(qh), byte(qh>>8), byte(qh>>16), byte(qh>>24)
		src, dst = src[32:], dst[24:]
	}
}

// truncClamp is C's conversion of v ≥ 0 to an integer (truncation) clamped
// to [0, hi]; NaN and negative values give 0 instead of undefined behaviour.
func truncClamp(v float32, hi int) int {
	if !(v >= 0) {
		return 0
	}
	if v >= float32(hi) {
		return hi
	}
	return int(v)
}

func dequantizeQ8_0(dst []float32, src []byte) {
	for len(dst) >= QK8_0 {
		y := (*[QK8_0]float32)(dst)
		x := (*[34]byte)(src)
		d := F16ToF32(le16(x[0:2]))
		for j := range y {
			y[j] = float32(int8(x[2+j])) * d
		}
		dst, src = dst[QK8_0:], src[34:]
	}
}

func dequantizeQ4_0(dst []float32, src []byte) {
	for len(dst) >= QK4_0 {
		y := (*[QK4_0]float32)(dst)
		x := (*[18]byte)(src)
		d := F16ToF32(le16(x[0:2]))
		for j := range 16 {
			q := x[2+j]
			y[j] = float32(int(q&15)-8) * d
			y[j+16] = float32(int(q>>4)-8) * d
		}
		dst, src = dst[QK4_0:], src[18:]
	}
}

func dequantizeQ4_1(dst []float32, src []byte) {
	for len(dst) >= 32 {
		y := (*[32]float32)(dst)
		x := (*[20]byte)(src)
		d := F16ToF32(le16(x[0:2]))
		m := F16ToF32(le16(x[2:4]))
		for j := range 16 {
			q := x[4+j]
			y[j] = float32(float32(q&15)*d) + m
			y[j+16] = float32(float32(q>>4)*d) + m
		}
		dst, src = dst[32:], src[20:]
	}
}

func dequantizeQ5_0(dst []float32, src []byte) {
	for len(dst) >= 32 {
		y := (*[32]float32)(dst)
		x := (*[22]byte)(src)
		d := F16ToF32(le16(x[0:2]))
		qh := uint32(x[2]) | uint32(x[3])<<8 | uint32(x[4])<<16 | uint32(x[5])<<24
		for j := range 16 {
			q := x[6+j]
			h0 := (qh >> j << 4) & 0x10
			h1 := (qh >> (j + 12)) & 0x10
			y[j] = float32(int32(uint32(q&15)|h0)-16) * d
			y[j+16] = float32(int32(uint32(q>>4)|h1)-16) * d
		}
		dst, src = dst[32:], src[22:]
	}
}

func dequantizeQ5_1(dst []float32, src []byte) {
	for len(dst) >= 32 {
		y := (*[32]float32)(dst)
		x := (*[24]byte)(src)
		d := F16ToF32(le16(x[0:2]))
		m := F16ToF32(le16(x[2:4]))
		qh := uint32(x[4]) | uint32(x[5])<<8 | uint32(x[6])<<16 | uint32(x[7])<<24
		for j := range 16 {
			q := x[8+j]
			h0 := (qh >> j << 4) & 0x10
			h1 := (qh >> (j + 12)) & 0x10
			y[j] = float32(float32(uint32(q&15)|h0)*d) + m
			y[j+16] = float32(float32(uint32(q>>4)|h1)*d) + m
		}
		dst, src = dst[32:], src[24:]
	}
}

// scaleMinK4 is ggml's get_scale_min_k4: the 6-bit scale and min of
// sub-block j (0..7) packed into the 12 scale bytes of a Q4_K or Q5_K block.
func scaleMinK4(j int, q *[12]byte) (sc, m uint8) {
	if j < 4 {
		return q[j] & 63, q[j+4] & 63
	}
	return q[j+4]&0xf | (q[j-4]>>6)<<4, q[j+4]>>4 | (q[j]>>6)<<4
}

func dequantizeQ4_K(dst []float32, src []byte) {
	for len(dst) >= QKK {
		y := (*[QKK]float32)(dst)
		x := (*[144]byte)(src)
		d := F16ToF32(le16(x[0:2]))
		dmin := F16ToF32(le16(x[2:4]))
		scales := (*[12]byte)(x[4:16])
		q := x[16:144]
		for j := range 4 { // 64 elements, two sub-blocks, per step
			sc, m := scaleMinK4(2*j, scales)
			d1, m1 := d*float32(sc), dmin*float32(m)
			sc, m = scaleMinK4(2*j+1, scales)
			d2, m2 := d*float32(sc), dmin*float32(m)
			qs := q[32*j : 32*j+32]
			out := y[64*j : 64*j+64]
			for l, b := range qs {
				out[l] = float32(d1*float32(b&15)) - m1
				out[l+32] = float32(d2*float32(b>>4)) - m2
			}
		}
		dst, src = dst[QKK:], src[144:]
	}
}

func dequantizeQ5_K(dst []float32, src []byte) {
	for len(dst) >= QKK {
		y := (*[QKK]float32)(dst)
		x := (*[176]byte)(src)
		d := F16ToF32(le16(x[0:2]))
		dmin := F16ToF32(le16(x[2:4]))
		scales := (*[12]byte)(x[4:16])
		qh := x[16:48]
		q := x[48:176]
		for j := range 4 {
			sc, m := scaleMinK4(2*j, scales)
			d1, m1 := d*float32(sc), dmin*float32(m)
			sc, m = scaleMinK4(2*j+1, scales)
			d2, m2 := d*float32(sc), dmin*float32(m)
			u1, u2 := byte(1)<<(2*j), byte(2)<<(2*j)
			qs := q[32*j : 32*j+32]
			out := y[64*j : 64*j+64]
			for l, b := range qs {
				lo, hi := b&15, b>>4
				if qh[l]&u1 != 0 {
					lo += 16
				}
				if qh[l]&u2 != 0 {
					hi += 16
				}
				out[l] = float32(d1*float32(lo)) - m1
				out[l+32] = float32(d2*float32(hi)) - m2
			}
		}
		dst, src = dst[QKK:], src[176:]
	}
}

func dequantizeQ6_K(dst []float32, src []byte) {
	for len(dst) >= QKK {
		y := (*[QKK]float32)(dst)
		x := (*[210]byte)(src)
		d := F16ToF32(le16(x[208:210]))
		for n := range 2 { // 128 elements per step
			ql := x[64*n : 64*n+64]
			qh := x[128+32*n : 128+32*n+32]
			sc := x[192+8*n : 192+8*n+8]
			out := y[128*n : 128*n+128]
			for l := range 32 {
				is := l / 16
				q1 := int8(ql[l]&15|(qh[l]>>0&3)<<4) - 32
				q2 := int8(ql[l+32]&15|(qh[l]>>2&3)<<4) - 32
				q3 := int8(ql[l]>>4|(qh[l]>>4&3)<<4) - 32
				q4 := int8(ql[l+32]>>4|(qh[l]>>6&3)<<4) - 32
				out[l] = float32(d*float32(int8(sc[is]))) * float32(q1)
				out[l+32] = float32(d*float32(int8(sc[is+2]))) * float32(q2)
				out[l+64] = float32(d*float32(int8(sc[is+4]))) * float32(q3)
				out[l+96] = float32(d*float32(int8(sc[is+6]))) * float32(q4)
			}
		}
		dst, src = dst[QKK:], src[210:]
	}
}
