//go:build !noasm

package kernels

import "github.com/spigot-llm/spigot/quant"

// The AVX2 kernels in dot_amd64.s. Each is its generic counterpart in
// kernels_generic.go (same reference loop, see there) with 8-lane vectors,
// fused multiply-adds and several vector accumulators, so its summation
// order, and hence its rounding, differs from the generic one; kerneltest
// holds both to the same bounds. Selected at init when the CPU has AVX2,
// FMA and F16C (every x86-64 CPU since Haswell/Zen 1); -tags noasm leaves
// the generic set.

//go:noescape
func dotAVX2(a, b []float32) float32

//go:noescape
func axpyAVX2(alpha float32, x, y []float32)

//go:noescape
func dotF32AVX2(row []byte, x []float32) float32

//go:noescape
func dotF16AVX2(row []byte, x []float32) float32

//go:noescape
func dotBF16AVX2(row []byte, x []float32) float32

//go:noescape
func dotQ8_0AVX2(row []byte, x []float32) float32

//go:noescape
func dotQ4_0AVX2(row []byte, x []float32) float32

// The dequantizers write exactly quant.Dequantize's values (a conversion
// and at most one product per element, as there). The F16 and BF16 ones
// handle len(dst) rounded down to a multiple of 8; the wrappers below do
// the rest in Go.

//go:noescape
func dequantF16AVX2(dst []float32, row []byte)

//go:noescape
func dequantBF16AVX2(dst []float32, row []byte)

//go:noescape
func dequantQ8_0AVX2(dst []float32, row []byte)

//go:noescape
func dequantQ4_0AVX2(dst []float32, row []byte)

func dequantF16(dst []float32, row []byte) {
	n := len(dst) &^ 7
	dequantF16AVX2(dst[:n], row[:2*n])
	dequantizeGeneric(quant.F16, dst[n:], row[2*n:])
}

func dequantBF16(dst []float32, row []byte) {
	n := len(dst) &^ 7
	dequantBF16AVX2(dst[:n], row[:2*n])
	dequantizeGeneric(quant.BF16, dst[n:], row[2*n:])
}

func cpuid(eaxArg, ecxArg uint32) (eax, ebx, ecx, edx uint32)
func xgetbv() (eax, edx uint32)

// hasAVX2 reports whether the CPU and OS support AVX2, FMA and F16C.
func hasAVX2() bool {
	maxID, _, _, _ := cpuid(0, 0)
	if maxID < 7 {
		return false
	}
	_, _, c, _ := cpuid(1, 0)
	const (
		fma     = 1 << 12
		osxsave = 1 << 27
		avx     = 1 << 28
		f16c    = 1 << 29
	)
	if c&(fma|osxsave|avx|f16c) != fma|osxsave|avx|f16c {
		return false
	}
	if xcr0, _ := xgetbv(); xcr0&6 != 6 { // the OS saves XMM and YMM state
		return false
	}
	_, b, _, _ := cpuid(7, 0)
	return b&(1<<5) != 0 // AVX2
}

// hasVNNI reports whether the CPU and OS support AVX-512 F, VL and VNNI
// (the EVEX VPDPBUSD on 256-bit vectors, and registers Y16-Y31).
func hasVNNI() bool {
	if maxID, _, _, _ := cpuid(0, 0); maxID < 7 {
		return false
	}
	_, _, c, _ := cpuid(1, 0)
	if c&(1<<27) == 0 { // OSXSAVE
		return false
	}
	// The OS saves XMM, YMM, the opmask registers and all 32 ZMM.
	if xcr0, _ := xgetbv(); xcr0&0xe6 != 0xe6 {
		return false
	}
	_, b, c, _ := cpuid(7, 0)
	const (
		avx512f  = 1 << 16
		avx512vl = 1 << 31
		vnni     = 1 << 11 // in ECX
	)
	return b&(avx512f|avx512vl) == avx512f|avx512vl && c&vnni != 0
}

var avx2 = impl{
	name: "avx2",
	dot:  dotAVX2,
	axpy: axpyAVX2,
	rowDot: [numFastTypes]func([]byte, []float32) float32{
		slotF32:  dotF32AVX2,
		slotF16:  dotF16AVX2,
		slotBF16: dotBF16AVX2,
		slotQ8_0: dotQ8_0AVX2,
		slotQ4_0: dotQ4_0AVX2,
		slotQ4_K: dotQ4_KGeneric,
		slotQ5_K: dotQ5_KGeneric,
		slotQ6_K: dotQ6_KGeneric,
	},
	dequant: [numFastTypes]func([]float32, []byte){
		slotF32:  generic.dequant[slotF32],
		slotF16:  dequantF16,
		slotBF16: dequantBF16,
		slotQ8_0: dequantQ8_0AVX2,
		slotQ4_0: dequantQ4_0AVX2,
		slotQ4_K: dequantQ4_KGeneric,
		slotQ5_K: dequantQ5_KGeneric,
		slotQ6_K: dequantQ6_KGeneric,
	},
	q:       avx2Q,
	f:       avx2F,
	expSub:  expSubAVX2,
	siluMul: siluMulAVX2,
	max:     maxAVX2,
	scale:   scaleAVX2,
	axpyTile: func(out []float32, os int, p []float32, ps, nc int, v []float32, vs, nr, n int) {
		axpyTileAsm(false, out, os, p, ps, nc, v, vs, nr, n)
	},
	toF16:        toF16Asm,
	dotHeadsF16:  dotHeadsF16AVX2,
	axpyHeadsF16: axpyHeadsF16AVX2,
	dotTileF16: func(out []float32, os int, w []uint16, ws, nr int, x []float32, xs, nc, n int) {
		dotTileF16Asm(false, out, os, w, ws, nr, x, xs, nc, n)
	},
	axpyTileF16: func(out []float32, os int, p []float32, ps, nc int, v []uint16, vs, nr, n int) {
		axpyTileF16Asm(false, out, os, p, ps, nc, v, vs, nr, n)
	},
}

// avx512VNNI is avx2 with the integer path's kernels on VPDPBUSD, and
// float tiles using the 32 vector registers of AVX-512.
var avx512VNNI = func() impl {
	k := avx2
	k.name = "avx512vnni"
	k.q = vnniQ
	k.f = avx512F
	k.axpyTile = func(out []float32, os int, p []float32, ps, nc int, v []float32, vs, nr, n int) {
		axpyTileAsm(true, out, os, p, ps, nc, v, vs, nr, n)
	}
	k.dotTileF16 = func(out []float32, os int, w []uint16, ws, nr int, x []float32, xs, nc, n int) {
		dotTileF16Asm(true, out, os, w, ws, nr, x, xs, nc, n)
	}
	k.axpyTileF16 = func(out []float32, os int, p []float32, ps, nc int, v []uint16, vs, nr, n int) {
		axpyTileF16Asm(true, out, os, p, ps, nc, v, vs, nr, n)
	}
	return k
}()

func init() {
	if hasAVX2() {
		active = avx2
		sets = append(sets, avx2)
		if hasVNNI() {
			active = avx512VNNI
			sets = append(sets, avx512VNNI)
		}
	}
}
