package quant

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// ErrUnsupported is returned (wrapped) by [Dequantize] and [Quantize] for a
// type they have no conversion for.
var ErrUnsupported = errors.New("quant: unsupported type")

// ErrSize is returned (wrapped) by [Dequantize] and [Quantize] when the
// buffers do not hold a whole number of blocks or do not match each other.
var ErrSize = errors.New("quant: wrong buffer size")

var dequantizers = map[Type]func(dst []float32, src []byte){
	F32:  dequantizeF32,
	F16:  dequantizeF16,
	BF16: dequantizeBF16,
	Q8_0: dequantizeQ8_0,
	Q4_0: dequantizeQ4_0,
	Q4_1: dequantizeQ4_1,
	Q5_0: dequantizeQ5_0,
	Q5_1: dequantizeQ5_1,
	Q4_K: dequantizeQ4_K,
	Q5_K: dequantizeQ5_K,
	Q6_K: dequantizeQ6_K,
}

var quantizers = map[Type]func(dst []byte, src []float32){
	F32:  quantizeF32,
	F16:  quantizeF16,
	BF16: quantizeBF16,
	Q8_0: quantizeQ8_0,
	Q4_0: quantizeQ4_0,
	Q5_0: quantizeQ5_0,
	Q5_1: quantizeQ5_1,
	Q4_K: quantizeQ4_K,
	Q5_K: quantizeQ5_K,
	Q6_K: quantizeQ6_K,
}

// CanDequantize reports whether [Dequantize] supports t.
func CanDequantize(t Type) bool { _, ok := dequantizers[t]; return ok }

// CanQuantize reports whether [Quantize] supports t.
func CanQuantize(t Type) bool { _, ok := quantizers[t]; return ok }

// Dequantize decodes src, whole blocks of type t, into dst: len(dst)
// elements, which must be a multiple of t's block size, from exactly
// t.RowSize(len(dst)) bytes of src. It supports F32, F16, BF16, Q8_0, Q4_0,
// Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K, and is the scalar reference the
// fast kernels are tested against: each element is computed exactly as
// ggml's dequantize_row_* computes it (float32 arithmetic, same operation
// order). It returns an error wrapping [ErrUnsupported] or [ErrSize] and
// writes nothing if the type or sizes are wrong; it never panics.
func Dequantize(t Type, dst []float32, src []byte) error {
	f, ok := dequantizers[t]
	if !ok {
		return fmt.Errorf("dequantizing %v: %w", t, ErrUnsupported)
	}
	if err := checkSize(t, len(dst), len(src)); err != nil {
		return fmt.Errorf("dequantizing: %w", err)
	}
	f(dst, src)
	return nil
}

// Quantize encodes src into dst as type t: len(src) must be a multiple of
// t's block size and len(dst) exactly t.RowSize(len(src)). It supports F32,
// F16, BF16 (round to nearest even), Q8_0, Q4_0, Q5_0, Q5_1, Q4_K, Q5_K and
// Q6_K, the quantized types exactly as ggml's quantize_row_*_ref functions
// do, so a file quantized here has the same bytes as one quantized by
// llama.cpp without an importance matrix. (The K types search each
// sub-block's scale and min by weighted least squares, as ggml's
// make_qkx2_quants and make_qx_quants do, which makes them tens of times
// slower per element than Q8_0 and Q4_0: see BenchmarkQuantize.)
//
// Every block is quantized on its own. Quantize never panics and always
// writes codes in range; a block holding a NaN or an infinity, or values
// so large (or, for K types, so small) that its half-precision scale
// overflows (or underflows), decodes to unspecified values, as it does in
// ggml. It returns an error wrapping [ErrUnsupported] or [ErrSize] and
// writes nothing if the type or sizes are wrong.
func Quantize(t Type, dst []byte, src []float32) error {
	f, ok := quantizers[t]
	if !ok {
		return fmt.Errorf("quantizing to %v: %w", t, ErrUnsupported)
	}
	if err := checkSize(t, len(src), len(dst)); err != nil {
		return fmt.Errorf("quantizing: %w", err)
	}
	f(dst, src)
	return nil
}

func checkSize(t Type, n, nbytes int) error {
	bs, ts := t.BlockSize(), t.TypeSize()
	if bs == 0 {
		return fmt.Errorf("unknown type %v: %w", t, ErrUnsupported)
	}
	if n%bs != 0 {
		return fmt.Errorf("%d elements of %v is not a whole number of %d-element blocks: %w", n, t, bs, ErrSize)
	}
	if nb := n / bs; nb > math.MaxInt/ts || nb*ts != nbytes {
		return fmt.Errorf("%d elements of %v need %d bytes, have %d: %w", n, t, n/bs*ts, nbytes, ErrSize)
	}
	return nil
}

func dequantizeF32(dst []float32, src []byte) {
	src = src[:4*len(dst)]
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

func dequantizeF16(dst []float32, src []byte) {
	src = src[:2*len(dst)]
	for i := range dst {
		dst[i] = F16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
	}
}

func dequantizeBF16(dst []float32, src []byte) {
	src = src[:2*len(dst)]
	for i := range dst {
		dst[i] = BF16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
	}
}

func quantizeF32(dst []byte, src []float32) {
	dst = dst[:4*len(src)]
	for i, v := range src {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
}

func quantizeF16(dst []byte, src []float32) {
	dst = dst[:2*len(src)]
	for i, v := range src {
		binary.LittleEndian.PutUint16(dst[2*i:], F32ToF16(v))
	}
}

func quantizeBF16(dst []byte, src []float32) {
	dst = dst[:2*len(src)]
	for i, v := range src {
		binary.LittleEndian.PutUint16(dst[2*i:], F32ToBF16(v))
	}
}
