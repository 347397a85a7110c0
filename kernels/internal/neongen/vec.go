package main

// The vectorized exp for Softmax and SiLUMul: expf (kernels/vec.go) on 4
// lanes, two vectors at a time, with fused multiply-adds in the reduction
// and the polynomial, and 2^n applied as two exact halves so subnormal
// results round once, as expf's do (the same steps as vec_amd64.s).

// Registers of the exp constants, loaded by expConsts.
const (
	cMax   = 17 // 88.72283905206835 = ln(MaxFloat32)
	cMin   = 18 // -103.97207708
	cLog2e = 19
	cHalf  = 20
	cOne   = 21
	cC1    = 22 // 0.693359375
	cC2    = 23 // -2.12194440e-4
	cP0    = 24 // P0..P5: V24-V29
	cInf   = 30
	c127   = 31 // int32 127
)

var expConstBits = []struct {
	reg  int
	bits uint32
}{
	{cMax, 0x42b17218}, {cMin, 0xc2cff1b4}, {cLog2e, 0x3fb8aa3b}, {cHalf, 0x3f000000},
	{cOne, 0x3f800000}, {cC1, 0x3f318000}, {cC2, 0xb95e8083},
	{cP0, 0x39506967},     // 1.9875691500e-4
	{cP0 + 1, 0x3ab743ce}, // 1.3981999507e-3
	{cP0 + 2, 0x3c088908}, // 8.3334519073e-3
	{cP0 + 3, 0x3d2aa9c1}, // 4.1665795894e-2
	{cP0 + 4, 0x3e2aaaaa}, // 1.6666665459e-1
	{cP0 + 5, 0x3f000000}, // 5.0000001201e-1
	{cInf, 0x7f800000}, {c127, 127},
}

func (g *gen) expConsts() {
	for _, c := range expConstBits {
		g.i("MOVW $0x%08x, R3", c.bits)
		g.i("VDUP R3, V%d.S4", c.reg)
	}
}

// expRegs are one vector's registers for exp: the input a, the masks of
// lanes above the range (mh) and below it (ml), the reduced argument r,
// n, the polynomial y (the result) and a temporary.
type expRegs struct{ a, mh, ml, r, n, y, t int }

// expVec returns the registers of vector v (0 or 1): V0-V6 or V7-V13.
func expVec(v int) expRegs {
	b := 7 * v
	return expRegs{b, b + 1, b + 2, b + 3, b + 4, b + 5, b + 6}
}

// exp sets y to exp(a), lane by lane, for each vector in vs, step by step
// interleaved: clamp a to [min, max] (a NaN stays NaN); n = floor(a·log2e
// + 1/2); r = a - n·c1 - n·c2; y = p(r)·r² + r + 1; y·2^(n>>1)·2^(n -
// n>>1); then +Inf where a > max and 0 where a < min.
func (g *gen) exp(vs ...expRegs) {
	each := func(f func(e expRegs)) {
		for _, e := range vs {
			f(e)
		}
	}
	each(func(e expRegs) { g.op("FCMGT", e.mh, e.a, cMax) })
	each(func(e expRegs) { g.op("FCMGT", e.ml, cMin, e.a) })
	each(func(e expRegs) { g.op("FMIN", e.r, e.a, cMax) })
	each(func(e expRegs) { g.op("FMAX", e.r, e.r, cMin) })
	each(func(e expRegs) { g.i("VMOV V%d.B16, V%d.B16", cHalf, e.n) })
	each(func(e expRegs) { g.vfmla(e.n, e.r, cLog2e) })
	each(func(e expRegs) { g.op2("FRINTM", e.n, e.n) })
	each(func(e expRegs) { g.i("VFMLS V%d.S4, V%d.S4, V%d.S4", cC1, e.n, e.r) })
	each(func(e expRegs) { g.i("VFMLS V%d.S4, V%d.S4, V%d.S4", cC2, e.n, e.r) })
	// Horner's rule, each step y' = y·r + P(k) as a copy of P(k) and an
	// FMLA, alternating between y and t so the result ends in y.
	each(func(e expRegs) { g.i("VMOV V%d.B16, V%d.B16", cP0+1, e.y) })
	each(func(e expRegs) { g.vfmla(e.y, cP0, e.r) })
	for k := 2; k <= 5; k++ {
		each(func(e expRegs) {
			src, dst := e.y, e.t
			if k%2 == 1 {
				src, dst = e.t, e.y
			}
			g.i("VMOV V%d.B16, V%d.B16", cP0+k, dst)
			g.vfmla(dst, src, e.r)
		})
	}
	each(func(e expRegs) { g.op("FMUL", e.t, e.r, e.r) })
	each(func(e expRegs) { g.vfmla(e.r, e.y, e.t) }) // r + p·r²
	each(func(e expRegs) { g.op("FADD", e.y, e.r, cOne) })
	each(func(e expRegs) { g.op2("FCVTNS", e.n, e.n) })
	each(func(e expRegs) { g.op2("SSHR.1", e.t, e.n) })
	each(func(e expRegs) { g.v3("VSUB", "S4", e.n, e.n, e.t) })
	each(func(e expRegs) { g.v3("VADD", "S4", e.t, e.t, c127) })
	each(func(e expRegs) { g.v3("VADD", "S4", e.n, e.n, c127) })
	each(func(e expRegs) { g.i("VSHL $23, V%d.S4, V%d.S4", e.t, e.t) })
	each(func(e expRegs) { g.i("VSHL $23, V%d.S4, V%d.S4", e.n, e.n) })
	each(func(e expRegs) { g.op("FMUL", e.y, e.y, e.t) })
	each(func(e expRegs) { g.op("FMUL", e.y, e.y, e.n) })
	each(func(e expRegs) { g.v3("VBIT", "B16", e.y, cInf, e.mh) })
	each(func(e expRegs) { g.op("BIC", e.y, e.y, e.ml) })
}

// expSub writes x[i] = exp(x[i] - m) for len(x) rounded down to a
// multiple of 8, returning the float64 sum of the new values (in two
// 2-lane accumulators, V14 and V15). A NaN gives NaN.
//
//	func expSubNEON(x []float32, m float32) float64
func (g *gen) expSub() {
	e0, e1 := expVec(0), expVec(1)
	g.line("// func expSubNEON(x []float32, m float32) float64")
	g.line("TEXT ·expSubNEON(SB), NOSPLIT, $0-40")
	g.i("MOVD x_base+0(FP), R0")
	g.i("MOVD x_len+8(FP), R2")
	g.i("LSR $3, R2")
	g.i("FMOVS m+24(FP), F16")
	g.i("VDUP V16.S[0], V16.S4")
	g.zero(14)
	g.zero(15)
	g.expConsts()
	g.i("CBZ R2, done")
	g.line("loop:")
	g.i("FLDPQ (R0), (F%d, F%d)", e0.a, e1.a)
	g.op("FSUB", e0.a, e0.a, 16)
	g.op("FSUB", e1.a, e1.a, 16)
	g.exp(e0, e1)
	g.i("FSTPQ.P (F%d, F%d), 32(R0)", e0.y, e1.y)
	for _, e := range []expRegs{e0, e1} {
		g.op2("FCVTL.2D", e.a, e.y)
		g.op2("FCVTL2.2D", e.mh, e.y)
		g.op("FADD.2D", 14, 14, e.a)
		g.op("FADD.2D", 15, 15, e.mh)
	}
	g.i("SUB $1, R2")
	g.i("CBNZ R2, loop")
	g.line("done:")
	g.op("FADD.2D", 14, 14, 15)
	g.op2("FADDP.D", 14, 14)
	g.i("FMOVD F14, ret+32(FP)")
	g.i("RET")
	g.line("")
}

// siluMul writes gate[i] = gate[i] / (1 + exp(-gate[i])) * up[i] for
// len(gate) rounded down to a multiple of 8.
//
//	func siluMulNEON(gate, up []float32)
func (g *gen) siluMul() {
	e0, e1 := expVec(0), expVec(1)
	g.line("// func siluMulNEON(gate, up []float32)")
	g.line("TEXT ·siluMulNEON(SB), NOSPLIT, $0-48")
	g.i("MOVD gate_base+0(FP), R0")
	g.i("MOVD gate_len+8(FP), R2")
	g.i("MOVD up_base+24(FP), R1")
	g.i("LSR $3, R2")
	g.expConsts()
	g.i("CBZ R2, done")
	g.line("loop:")
	g.i("VLD1 (R0), [V14.S4, V15.S4]")
	g.op2("FNEG", e0.a, 14)
	g.op2("FNEG", e1.a, 15)
	g.exp(e0, e1)
	g.i("FLDPQ.P 32(R1), (F%d, F%d)", e0.a, e1.a)
	for v, e := range []expRegs{e0, e1} {
		g.op("FADD", e.y, e.y, cOne)
		g.op("FDIV", e.y, 14+v, e.y)
		g.op("FMUL", e.y, e.y, e.a)
	}
	g.i("FSTPQ.P (F%d, F%d), 32(R0)", e0.y, e1.y)
	g.i("SUB $1, R2")
	g.i("CBNZ R2, loop")
	g.line("done:")
	g.i("RET")
	g.line("")
}

// max writes the largest of x[:len(x)&^7] ignoring NaNs, or -Inf: each
// lane of two running maxima replaced where a value compares greater
// (never by a NaN), then the largest lane.
//
//	func maxNEON(x []float32) float32
func (g *gen) max() {
	g.line("// func maxNEON(x []float32) float32")
	g.line("TEXT ·maxNEON(SB), NOSPLIT, $0-28")
	g.i("MOVD x_base+0(FP), R0")
	g.i("MOVD x_len+8(FP), R2")
	g.i("LSR $3, R2")
	g.i("MOVW $0xff800000, R3") // -Inf
	g.i("VDUP R3, V0.S4")
	g.i("VDUP R3, V1.S4")
	g.i("CBZ R2, done")
	g.line("loop:")
	g.i("VLD1.P 32(R0), [V2.S4, V3.S4]")
	g.op("FCMGT", 4, 2, 0)
	g.op("FCMGT", 5, 3, 1)
	g.v3("VBIT", "B16", 0, 2, 4)
	g.v3("VBIT", "B16", 1, 3, 5)
	g.i("SUB $1, R2")
	g.i("CBNZ R2, loop")
	g.line("done:")
	g.op("FMAX", 0, 0, 1)
	g.op2("FMAXV", 0, 0)
	g.i("FMOVS F0, ret+24(FP)")
	g.i("RET")
	g.line("")
}

// scale writes x[i] *= s for i < len(x)&^7.
//
//	func scaleNEON(x []float32, s float32)
func (g *gen) scale() {
	g.line("// func scaleNEON(x []float32, s float32)")
	g.line("TEXT ·scaleNEON(SB), NOSPLIT, $0-28")
	g.i("MOVD x_base+0(FP), R0")
	g.i("MOVD x_len+8(FP), R2")
	g.i("LSR $3, R2")
	g.i("FMOVS s+24(FP), F4")
	g.i("CBZ R2, done")
	g.line("loop:")
	g.i("VLD1 (R0), [V0.S4, V1.S4]")
	g.elem("FMUL", 0, 0, 4, 0)
	g.elem("FMUL", 1, 1, 4, 0)
	g.i("VST1.P [V0.S4, V1.S4], 32(R0)")
	g.i("SUB $1, R2")
	g.i("CBNZ R2, loop")
	g.line("done:")
	g.i("RET")
	g.line("")
}
