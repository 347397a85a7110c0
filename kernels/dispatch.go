package kernels

import "github.com/spigot-llm/spigot/quant"

// impl is one complete set of low-level kernels. The exported functions call
// through active, which init sets to the fastest set the CPU supports (see
// dispatch_amd64.go); generic is the portable Go set, always available.
type impl struct {
	name string
	dot  func(a, b []float32) float32
	axpy func(alpha float32, x, y []float32)
	// rowDot[slot(t)] computes one row of type t · x; len(row) has been
	// checked. Types without a slot are dequantized first.
	rowDot [numFastTypes]func(row []byte, x []float32) float32
	// dequant[slot(t)] decodes one row of type t, to exactly
	// quant.Dequantize's values; the sizes have been checked.
	dequant [numFastTypes]func(dst []float32, row []byte)
	// q is MatMul's integer path for Q8_0, Q4_0 and the K-quant weights
	// (matmul_int.go, matmul_kquant.go).
	q qImpl
	// f is MatMul's batched float path (matmul_float.go).
	f fImpl
	// expSub, if not nil, sets x[i] = exp(x[i]-m) for i < len(x)&^7 and
	// returns the float64 sum of those; siluMul, if not nil, is SiLUMul's
	// loop for len(gate)&^7 elements. Both compute exp as expf does, to
	// within 2 ulp (in vectors, rounding differently).
	expSub  func(x []float32, m float32) float64
	siluMul func(gate, up []float32)
	// max, if not nil, returns the largest of x[:len(x)&^7] ignoring
	// NaNs, or -Inf; scale, if not nil, multiplies x[:len(x)&^7] by s.
	max   func(x []float32) float32
	scale func(x []float32, s float32)
	// axpyTile, if not nil, is AxpyTile after its checks.
	axpyTile func(out []float32, os int, p []float32, ps, nc int, v []float32, vs, nr, n int)
	// dotTileF16 and axpyTileF16, if not nil, are DotTileF16 for nr a
	// multiple of 4 (or w padded) and AxpyTileF16, with n a multiple of 8,
	// after their checks.
	dotTileF16  func(out []float32, os int, w []uint16, ws, nr int, x []float32, xs, nc, n int)
	axpyTileF16 func(out []float32, os int, p []float32, ps, nc int, v []uint16, vs, nr, n int)
	// dotHeadsF16 and axpyHeadsF16, if not nil, are the kernels of
	// DotHeadsF16 and AxpyHeadsF16 for 4 rows, n = 8·steps (tilegen).
	dotHeadsF16  func(w *uint16, ws int, x *float32, steps, heads int, out *float32, os int)
	axpyHeadsF16 func(out *float32, p *float32, ps int, v *uint16, vs int, steps, heads int)
	// toF16, if not nil, is ToF16 after its check.
	toF16 func(dst []uint16, src []float32)
}

// The weight types with dedicated kernels, as indexes into impl.rowDot and
// impl.dequant.
const (
	slotF32 = iota
	slotF16
	slotBF16
	slotQ8_0
	slotQ4_0
	slotQ4_K
	slotQ5_K
	slotQ6_K
	numFastTypes
)

func slot(t quant.Type) int {
	switch t {
	case quant.F32:
		return slotF32
	case quant.F16:
		return slotF16
	case quant.BF16:
		return slotBF16
	case quant.Q8_0:
		return slotQ8_0
	case quant.Q4_0:
		return slotQ4_0
	case quant.Q4_K:
		return slotQ4_K
	case quant.Q5_K:
		return slotQ5_K
	case quant.Q6_K:
		return slotQ6_K
	}
	return -1
}

// isK reports whether slot s is a K-quant type (256-element super-blocks).
func isK(s int) bool { return s >= slotQ4_K }

var generic = impl{
	name: "generic",
	dot:  dotGeneric,
	axpy: axpyGeneric,
	rowDot: [numFastTypes]func([]byte, []float32) float32{
		slotF32:  dotF32Generic,
		slotF16:  dotF16Generic,
		slotBF16: dotBF16Generic,
		slotQ8_0: dotQ8_0Generic,
		slotQ4_0: dotQ4_0Generic,
		slotQ4_K: dotQ4_KGeneric,
		slotQ5_K: dotQ5_KGeneric,
		slotQ6_K: dotQ6_KGeneric,
	},
	dequant: [numFastTypes]func([]float32, []byte){
		slotF32:  func(dst []float32, row []byte) { dequantizeGeneric(quant.F32, dst, row) },
		slotF16:  func(dst []float32, row []byte) { dequantizeGeneric(quant.F16, dst, row) },
		slotBF16: func(dst []float32, row []byte) { dequantizeGeneric(quant.BF16, dst, row) },
		slotQ8_0: func(dst []float32, row []byte) { dequantizeGeneric(quant.Q8_0, dst, row) },
		slotQ4_0: func(dst []float32, row []byte) { dequantizeGeneric(quant.Q4_0, dst, row) },
		slotQ4_K: dequantQ4_KGeneric,
		slotQ5_K: dequantQ5_KGeneric,
		slotQ6_K: dequantQ6_KGeneric,
	},
	q: genericQ,
	f: genericF,
}

// active is the kernel set in use. It is written only by init.
var active = generic

// sets lists every kernel set this CPU can run, generic first and active
// last; init appends to it. Tests run them all.
var sets = []impl{generic}

// Implementation names the kernel set in use: "generic" for portable Go, or
// the instruction set of the assembly kernels (such as "avx2").
func Implementation() string { return active.name }
