package kernels

import "github.com/spigot-llm/spigot/quant"

// impl is one complete set of low-level kernels. The exported functions call
// through active, which init sets to the fastest set the CPU supports (see
// dispatch_amd64.go); generic is the portable Go set, always available.
type impl struct {
	name string
	dot  func(a, b []float32) float32
	// dot4 sets out[k] to w · x[k*stride:][:len(w)] for k < 4: one vector
	// against four (MatMul's batched path passes an activation vector as w
	// and four dequantized weight rows as x). The caller guarantees
	// len(x) ≥ 3*stride + len(w).
	dot4 func(w, x []float32, stride int, out *[4]float32)
	axpy func(alpha float32, x, y []float32)
	// rowDot[slot(t)] computes one row of type t · x; len(row) has been
	// checked. Types without a slot are dequantized and use dot/dot4.
	rowDot [numFastTypes]func(row []byte, x []float32) float32
	// dequant[slot(t)] decodes one row of type t, to exactly
	// quant.Dequantize's values; the sizes have been checked.
	dequant [numFastTypes]func(dst []float32, row []byte)
}

// The weight types with dedicated kernels, as indexes into impl.rowDot and
// impl.dequant.
const (
	slotF32 = iota
	slotF16
	slotBF16
	slotQ8_0
	slotQ4_0
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
	}
	return -1
}

var generic = impl{
	name: "generic",
	dot:  dotGeneric,
	dot4: dot4Generic,
	axpy: axpyGeneric,
	rowDot: [numFastTypes]func([]byte, []float32) float32{
		slotF32:  dotF32Generic,
		slotF16:  dotF16Generic,
		slotBF16: dotBF16Generic,
		slotQ8_0: dotQ8_0Generic,
		slotQ4_0: dotQ4_0Generic,
	},
	dequant: [numFastTypes]func([]float32, []byte){
		slotF32:  func(dst []float32, row []byte) { dequantizeGeneric(quant.F32, dst, row) },
		slotF16:  func(dst []float32, row []byte) { dequantizeGeneric(quant.F16, dst, row) },
		slotBF16: func(dst []float32, row []byte) { dequantizeGeneric(quant.BF16, dst, row) },
		slotQ8_0: func(dst []float32, row []byte) { dequantizeGeneric(quant.Q8_0, dst, row) },
		slotQ4_0: func(dst []float32, row []byte) { dequantizeGeneric(quant.Q4_0, dst, row) },
	},
}

// active is the kernel set in use. It is written only by init.
var active = generic

// Implementation names the kernel set in use: "generic" for portable Go, or
// the instruction set of the assembly kernels (such as "avx2").
func Implementation() string { return active.name }
