package quant

import "math"

// F16ToF32 converts an IEEE 754 binary16 value, given by its bits, to
// float32. Every half value, subnormals, infinities and NaNs included, is
// exactly representable as a float32, so the conversion is exact; a NaN
// keeps its sign and payload.
func F16ToF32(h uint16) float32 {
	// Shift exponent and mantissa into float32 position, then rescale the
	// exponent from bias 15 to bias 127 with one exact multiply by 2^112.
	// The multiply also normalizes half subnormals. Inf and NaN, whose
	// rescaled value lands at or above 2^16, get the all-ones exponent.
	// (Fabian Giesen's half_to_float_fast5.)
	const magic = 0x77800000 // 2^112
	const wasInfNaN = 0x47800000
	o := uint32(h&0x7fff) << 13
	f := math.Float32frombits(o) * math.Float32frombits(magic)
	o = math.Float32bits(f)
	if f >= math.Float32frombits(wasInfNaN) {
		o |= 255 << 23
	}
	return math.Float32frombits(o | uint32(h&0x8000)<<16)
}

// F32ToF16 converts f to IEEE 754 binary16 bits, rounding to nearest with
// ties to even, as the F16C instruction VCVTPS2PH (and so ggml's
// GGML_FP32_TO_FP16 on x86) does. Values too large for a half become
// infinity, values too small become (signed) zero or a subnormal, and a NaN
// stays a quiet NaN with the top bits of its payload.
func F32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant == 0 {
			return sign | 0x7c00
		}
		return sign | 0x7e00 | uint16(mant>>13)
	}
	e := exp - 127 + 15 // biased half exponent
	if e >= 31 {
		return sign | 0x7c00
	}
	if e <= 0 {
		// Half subnormal (or zero): value = m * 2^-24.
		if e < -10 {
			return sign // below half of the smallest subnormal
		}
		mant |= 0x800000
		shift := uint(14 - e) // 14..24
		h := mant >> shift
		rem := mant & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || rem == half && h&1 == 1 {
			h++ // may carry into the smallest normal, which is correct
		}
		return sign | uint16(h)
	}
	h := uint32(e)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || rem == 0x1000 && h&1 == 1 {
		h++ // may carry into the exponent, up to infinity, which is correct
	}
	return sign | uint16(h)
}

// BF16ToF32 converts a bfloat16 value, given by its bits, to float32. The
// conversion is exact: bfloat16 is the top half of a float32.
func BF16ToF32(h uint16) float32 {
	return math.Float32frombits(uint32(h) << 16)
}

// F32ToBF16 converts f to bfloat16 bits, rounding to nearest with ties to
// even exactly as ggml's GGML_FP32_TO_BF16 (ggml_compute_fp32_to_bf16) does:
// a NaN is truncated and forced quiet; everything else, including values that
// round up to infinity, is rounded.
func F32ToBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 {
		return uint16(u>>16) | 64
	}
	return uint16((u + 0x7fff + (u>>16)&1) >> 16)
}
