package main

import "fmt"

// The K-quant kernels: Q4_K, Q5_K and Q6_K weights against activations in
// the K layout (written by qQuantActK/qQuantActKN), as
// kernels/matmul_kquant.go describes, with its canonical computation.

// K layout constants; kernels/matmul_kquant.go has the same ones.
const (
	kActGroup  = 384  // bytes per group of 8 blocks (a super-block) of one activation row
	kActT      = 288  // offset of the 8 float32 t = d·Σ
	kActLo     = 320  // offset of the 8 int32 -32·Σ over each block's first half
	kActHi     = 352  // and its second half
	kTileGroup = 1280 // bytes per super-block of a packed 4-row tile
	kTileA     = 1024 // offset of the 4×8 float32 scales a (Q6_K: a_lo)
	kTileB     = 1152 // offset of the 4×8 float32 mins b (Q6_K: a_hi)
)

// kType is a K-quant weight type.
type kType int

const (
	kQ4 kType = iota
	kQ5
	kQ6
)

func (t kType) String() string { return [...]string{"Q4_K", "Q5_K", "Q6_K"}[t] }

// blockSize is the bytes of one super-block.
func (t kType) blockSize() int { return [...]int{144, 176, 210}[t] }

func (g *gen) kquant() {
	g.kConstants()
	for _, t := range []kType{kQ4, kQ5, kQ6} {
		g.kPack(t)
	}
	for _, t := range []kType{kQ4, kQ5, kQ6} {
		g.kDirect(t, true)
		g.kDirect(t, false)
	}
	for c := 1; c <= 3; c++ {
		g.kTileVNNI(false, c)
	}
	for c := 1; c <= 3; c++ {
		g.kTileVNNI(true, c)
	}
	for _, t := range []kType{kQ4, kQ5, kQ6} {
		for c := 1; c <= 2; c++ {
			g.kTileAVX2(t, c)
		}
	}
}

func (g *gen) kConstants() {
	// Byte shuffles and masks for kScales45, on the 12 scale bytes
	// q0..q11: see there.
	g.data32("kScaleCtlA", [8]uint32{0x03020100, 0x0b0a0908, 0x07060504, 0x0b0a0908})
	g.data32("kScaleCtlB", [8]uint32{0x80808080, 0x03020100, 0x80808080, 0x07060504})
	g.data32("kScaleMask", [8]uint32{0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f})
	g.data32("mask30", splat(0x30303030))
	g.data32("mask10", splat(0x10101010))
}

// kScales45 sets ya to the float32 scales a_j = d·sc_j and yb to the mins
// b_j = dmin·m_j of the 8 sub-blocks of the Q4_K or Q5_K super-block at
// SI, unpacking the 6-bit fields of its 12 scale bytes q0..q11:
//
//	sc_j = q_j & 63,                 m_j = q_{j+4} & 63               (j < 4)
//	sc_j = q_{j+4} & 15 | q_{j-4}>>6<<4, m_j = q_{j+4}>>4 | q_j>>6<<4 (j ≥ 4)
//
// t0 and t1 are scratch; all four registers are below 16.
func (g *gen) kScales45(ya, yb, t0, t1 int) {
	g.i("VMOVDQU 4(SI), %s", x(t0)) // q0..q11 and 4 bytes of quants
	// The low bits: q0-3 & 63, q8-11 & 15, q4-7 & 63, q8-11 >> 4.
	g.i("VPSHUFB kScaleCtlA<>(SB), %s, %s", x(t0), x(ya)) // q0-3 q8-11 q4-7 q8-11
	g.i("VPSRLW $4, %s, %s", x(ya), x(yb))
	g.i("VPBLENDD $8, %s, %s, %s", x(yb), x(ya), x(ya))
	g.i("VPAND kScaleMask<>(SB), %s, %s", x(ya), x(ya))
	// The high bits: q0-3 >> 6 << 4 into bytes 4-7, q4-7's into 12-15.
	g.i("VPSHUFB kScaleCtlB<>(SB), %s, %s", x(t0), x(t0)) // 0 q0-3 0 q4-7
	g.i("VPSRLW $2, %s, %s", x(t0), x(t0))
	g.i("VPAND mask30<>(SB), %s, %s", x(t0), x(t0))
	g.i("VPOR %s, %s, %s", x(t0), x(ya), x(ya)) // sc0-7 m0-7
	g.i("VPSHUFD $0xee, %s, %s", x(ya), x(yb))
	g.i("VPMOVZXBD %s, %s", x(ya), y(ya))
	g.i("VPMOVZXBD %s, %s", x(yb), y(yb))
	g.i("VCVTDQ2PS %s, %s", y(ya), y(ya))
	g.i("VCVTDQ2PS %s, %s", y(yb), y(yb))
	g.i("VPBROADCASTW 0(SI), %s", x(t0))
	g.i("VPBROADCASTW 2(SI), %s", x(t1))
	g.i("VCVTPH2PS %s, %s", x(t0), y(t0))
	g.i("VCVTPH2PS %s, %s", x(t1), y(t1))
	g.i("VMULPS %s, %s, %s", y(t0), y(ya), y(ya))
	g.i("VMULPS %s, %s, %s", y(t1), y(yb), y(yb))
}

// kScales6 sets ylo to the float32 scales a = d·sc of the first halves of
// the 8 blocks of the Q6_K super-block at SI (sc_{2j}), and yhi to those
// of the second halves (sc_{2j+1}); t0 is scratch.
func (g *gen) kScales6(ylo, yhi, t0 int) {
	g.i("VPMOVSXBW 192(SI), %s", y(yhi)) // dword j: sc_2j | sc_2j+1 << 16
	g.i("VPSLLD $16, %s, %s", y(yhi), y(ylo))
	g.i("VPSRAD $16, %s, %s", y(ylo), y(ylo))
	g.i("VPSRAD $16, %s, %s", y(yhi), y(yhi))
	g.i("VCVTDQ2PS %s, %s", y(ylo), y(ylo))
	g.i("VCVTDQ2PS %s, %s", y(yhi), y(yhi))
	g.i("VPBROADCASTW 208(SI), %s", x(t0))
	g.i("VCVTPH2PS %s, %s", x(t0), y(t0))
	g.i("VMULPS %s, %s, %s", y(t0), y(ylo), y(ylo))
	g.i("VMULPS %s, %s, %s", y(t0), y(yhi), y(yhi))
}

// kRegs are the registers kBlocks uses: mask holds 0x0f bytes; the
// others are scratch. All are below 16 and differ from the block
// registers.
type kRegs struct{ mask, a, b, h, t int }

// kBlocks unpacks the 8 blocks of 32 unsigned quants of the super-block
// of type t at SI, in element order, calling emit(j, reg) with block j in
// register reg, which emit may overwrite. dst(j) names the register for
// block j: a scratch register the caller reuses, or one per block.
func (g *gen) kBlocks(t kType, r kRegs, dst func(j int) int, emit func(j, reg int)) {
	switch t {
	case kQ4, kQ5:
		qs := 16
		if t == kQ5 {
			qs = 48
			g.i("VMOVDQU 16(SI), %s", y(r.h)) // qh: bit j of byte l is element l of block j
		}
		for c := range 4 {
			lo, hi := dst(2*c), dst(2*c+1)
			g.i("VMOVDQU %d(SI), %s", qs+32*c, y(lo))
			g.i("VPSRLW $4, %s, %s", y(lo), y(hi))
			g.i("VPAND %s, %s, %s", y(r.mask), y(lo), y(lo))
			g.i("VPAND %s, %s, %s", y(r.mask), y(hi), y(hi))
			if t == kQ5 {
				for j, q := range []int{lo, hi} {
					g.k5High(r, 2*c+j, q)
				}
			}
			emit(2*c, lo)
			emit(2*c+1, hi)
		}
	case kQ6:
		// Per 128 elements n: ql bytes A (0-31) and B (32-63), qh bytes H;
		// block 4n+k takes the low (k < 2) or high nibbles of A (k even)
		// or B, and bits 2k, 2k+1 of H as its bits 4, 5.
		for n := range 2 {
			g.i("VMOVDQU %d(SI), %s", 64*n, y(r.a))
			g.i("VMOVDQU %d(SI), %s", 64*n+32, y(r.b))
			g.i("VMOVDQU %d(SI), %s", 128+32*n, y(r.h))
			for k := range 4 {
				q := dst(4*n + k)
				src := r.a
				if k%2 == 1 {
					src = r.b
				}
				if k < 2 {
					g.i("VPAND %s, %s, %s", y(r.mask), y(src), y(q))
				} else {
					g.i("VPSRLW $4, %s, %s", y(src), y(q))
					g.i("VPAND %s, %s, %s", y(r.mask), y(q), y(q))
				}
				switch sh := 4 - 2*k; {
				case sh > 0:
					g.i("VPSLLW $%d, %s, %s", sh, y(r.h), y(r.t))
					g.i("VPAND mask30<>(SB), %s, %s", y(r.t), y(r.t))
				case sh < 0:
					g.i("VPSRLW $%d, %s, %s", -sh, y(r.h), y(r.t))
					g.i("VPAND mask30<>(SB), %s, %s", y(r.t), y(r.t))
				default:
					g.i("VPAND mask30<>(SB), %s, %s", y(r.h), y(r.t))
				}
				g.i("VPOR %s, %s, %s", y(r.t), y(q), y(q))
				emit(4*n+k, q)
			}
		}
	}
}

// k5High ors bit j of the qh bytes in r.h, as 16, into the Q5_K block j
// quants in q.
func (g *gen) k5High(r kRegs, j, q int) {
	switch {
	case j < 4:
		g.i("VPSLLW $%d, %s, %s", 4-j, y(r.h), y(r.t))
		g.i("VPAND mask10<>(SB), %s, %s", y(r.t), y(r.t))
	case j > 4:
		g.i("VPSRLW $%d, %s, %s", j-4, y(r.h), y(r.t))
		g.i("VPAND mask10<>(SB), %s, %s", y(r.t), y(r.t))
	default:
		g.i("VPAND mask10<>(SB), %s, %s", y(r.h), y(r.t))
	}
	g.i("VPOR %s, %s, %s", y(r.t), y(q), y(q))
}

// kPack writes qPack<t>, which packs one row's super-blocks into a tile's
// row slot (kernels/matmul_kquant.go):
//
//	func qPackQ4_K(dst, src *byte, groups int)
//
// Per super-block: the 8 blocks of unsigned quants transposed as
// qPackQ4_0 stores them, then the 8 scales a (Q6_K: a_lo) and 8 mins b
// (Q6_K: a_hi).
func (g *gen) kPack(t kType) {
	name := "qPack" + t.String()
	g.line("// func %s(dst, src *byte, groups int)", name)
	g.line("TEXT ·%s(SB), NOSPLIT, $0-24", name)
	g.i("MOVQ dst+0(FP), DI")
	g.i("MOVQ src+8(FP), SI")
	g.i("MOVQ groups+16(FP), CX")
	g.line("")
	g.line("loop:")
	g.i("VMOVDQU nibMask<>(SB), Y15")
	g.kBlocks(t, kRegs{mask: 15, a: 8, b: 9, h: 10, t: 11}, func(j int) int { return j }, func(int, int) {})
	g.packStore(g.transpose8([8]int{0, 1, 2, 3, 4, 5, 6, 7}, [8]int{8, 9, 10, 11, 12, 13, 14, 15}))
	if t == kQ6 {
		g.kScales6(0, 1, 2)
	} else {
		g.kScales45(0, 1, 2, 3)
	}
	g.i("VMOVUPS Y0, %d(DI)", kTileA)
	g.i("VMOVUPS Y1, %d(DI)", kTileB)
	g.i("ADDQ $%d, SI", t.blockSize())
	g.i("ADDQ $%d, DI", kTileGroup)
	g.i("DECQ CX")
	g.i("JNZ loop")
	g.i("VZEROUPPER")
	g.i("RET")
	g.line("")
}

// kDirect writes qDirect<t>VNNI (or AVX2), the direct kernel for one
// activation row in the natural K layout against weight rows read in
// place:
//
//	func name(w *byte, rs, rows int, a *byte, groups int, out *float32)
//
// For each row and super-block, block j's products go to its own int32
// accumulator Y0-Y7 (VPDPBUSD, or VPMADDUBSW and VPMADDWD), whose lanes
// are summed exactly into lane j of one vector (Q6_K: of two, one per
// half), as kernels/matmul_int.go's direct kernels do; then the scales
// are applied in the canonical order, into the row's float lanes Y12.
// Registers: Y13 int16 ones (AVX2), Y14 the nibble mask, Y8-Y11 and Y15
// scratch.
func (g *gen) kDirect(t kType, vnni bool) {
	name := "qDirect" + t.String()
	if vnni {
		name += "VNNI"
	} else {
		name += "AVX2"
	}
	g.line("// func %s(w *byte, rs, rows int, a *byte, groups int, out *float32)", name)
	g.line("TEXT ·%s(SB), NOSPLIT, $0-48", name)
	g.i("MOVQ w+0(FP), SI")
	g.i("MOVQ rs+8(FP), R11")
	g.i("MOVQ rows+16(FP), R12")
	g.i("MOVQ out+40(FP), R8")
	g.i("VMOVDQU nibMask<>(SB), Y14")
	if !vnni {
		g.i("VMOVDQU ones16<>(SB), Y13")
	}
	g.line("")
	g.line("row:")
	g.i("MOVQ SI, R13") // start of the next row, less rs
	g.i("MOVQ a+24(FP), DI")
	g.i("MOVQ groups+32(FP), CX")
	g.i("VXORPS Y12, Y12, Y12")
	g.line("")
	g.line("group:")
	g.prefetch(t.blockSize())
	regs := kRegs{mask: 14, a: 8, b: 9, h: 10, t: 11}
	scratch := func(j int) int { return 8 + j%2 } // Q4_K, Q5_K: lo, hi in Y8, Y9
	if t == kQ6 {
		scratch = func(int) int { return 15 }
	}
	if vnni {
		for j := range 8 {
			g.i("VPXOR %s, %s, %s", y(j), y(j), y(j))
		}
	}
	g.kBlocks(t, regs, scratch, func(j, q int) {
		if vnni {
			g.i("VPDPBUSD %d(DI), %s, %s", 32*j, y(q), y(j))
			return
		}
		g.i("VPMADDUBSW %d(DI), %s, %s", 32*j, y(q), y(q))
		g.i("VPMADDWD Y13, %s, %s", y(q), y(j))
	})
	// Lane sums: Y1 = [lo0..lo3 | lo4..lo7], Y2 = the same of the second
	// halves (dwords 4-7 of each accumulator).
	g.i("VPHADDD Y1, Y0, Y0")
	g.i("VPHADDD Y3, Y2, Y2")
	g.i("VPHADDD Y5, Y4, Y4")
	g.i("VPHADDD Y7, Y6, Y6")
	g.i("VPHADDD Y2, Y0, Y0")
	g.i("VPHADDD Y6, Y4, Y4")
	g.i("VPERM2I128 $0x20, Y4, Y0, Y1")
	g.i("VPERM2I128 $0x31, Y4, Y0, Y2")
	if t == kQ6 {
		g.i("VPADDD %d(DI), Y1, Y1", kActLo)
		g.i("VPADDD %d(DI), Y2, Y2", kActHi)
		g.i("VCVTDQ2PS Y1, Y1")
		g.i("VCVTDQ2PS Y2, Y2")
		g.kScales6(9, 8, 10)
		g.i("VMULPS %d(DI), Y9, Y9", actScale)
		g.i("VFMADD231PS Y9, Y1, Y12")
		g.i("VMULPS %d(DI), Y8, Y8", actScale)
		g.i("VFMADD231PS Y8, Y2, Y12")
	} else {
		g.i("VPADDD Y2, Y1, Y0")
		g.i("VCVTDQ2PS Y0, Y0")
		g.kScales45(8, 9, 10, 11)
		g.i("VMULPS %d(DI), Y8, Y8", actScale)
		g.i("VFMADD231PS Y8, Y0, Y12")
		g.i("VFNMADD231PS %d(DI), Y9, Y12", kActT)
	}
	g.i("ADDQ $%d, SI", t.blockSize())
	g.i("ADDQ $%d, DI", kActGroup)
	g.i("DECQ CX")
	g.i("JNZ group")
	// One row's sum, in the order reduce uses.
	g.i("VHADDPS Y12, Y12, Y12")
	g.i("VHADDPS Y12, Y12, Y12")
	g.i("VEXTRACTF128 $1, Y12, X0")
	g.i("VADDSS X0, X12, X12")
	g.i("MOVSS X12, (R8)")
	g.i("ADDQ $4, R8")
	g.i("LEAQ (R13)(R11*1), SI")
	g.i("DECQ R12")
	g.i("JNZ row")
	g.i("VZEROUPPER")
	g.i("RET")
	g.line("")
}

// kTileVNNI writes the AVX-512 VNNI tile kernel for packed K-quant tiles
// (qTileK4VNNI4x<c> for Q4_K and Q5_K, qTileK6VNNI4x<c> for Q6_K), 4 rows ×
// c activation rows in the transposed K layout:
//
//	func name(w, a *byte, as, groups int, out *float32, os, tiles int)
//
// Registers as tileVNNI's: float accumulators Y0-Y11, int32 ones Y12-Y23,
// weights Y24-Y27, activations Y28-Y30. Per super-block, Q4_K/Q5_K: the
// 8 steps' products from zero, then per row and column
// fma(idot, a·dx) and fma(-b, t); Q6_K: per half, the 4 steps' products
// from the activation's -32·Σ_half, then fma(idot_h, a_h·dx).
func (g *gen) kTileVNNI(q6 bool, c int) {
	name := fmt.Sprintf("qTileK4VNNI4x%d", c)
	if q6 {
		name = fmt.Sprintf("qTileK6VNNI4x%d", c)
	}
	f := func(r, k int) int { return r + 4*k }
	ia := func(r, k int) int { return 12 + r + 4*k }
	g.tileHeader(name, 0)
	for k := range c {
		for r := range 4 {
			g.i("VXORPS %s, %s, %s", y(f(r, k)), y(f(r, k)), y(f(r, k)))
		}
	}
	g.line("")
	g.line("loop:")
	steps := func(s0, s1 int) {
		for s := s0; s < s1; s++ {
			for r := range 4 {
				g.i("VMOVDQU32 %d(SI), %s", 128*s+32*r, y(24+r))
			}
			for k := range c {
				g.i("VMOVDQU32 %s, %s", col(k, 32*s), y(28+k))
			}
			for r := range 4 {
				for k := range c {
					g.i("VPDPBUSD %s, %s, %s", y(28+k), y(24+r), y(ia(r, k)))
				}
			}
		}
	}
	// scale adds idot·(scale_r·dx) for the scales at off(SI).
	scale := func(off int, mins bool) {
		for k := range c {
			g.i("VMOVUPS %s, Y28", col(k, actScale))
			if mins {
				g.i("VMOVUPS %s, Y29", col(k, kActT))
			}
			for r := range 4 {
				g.i("VMULPS %d(SI), Y28, %s", off+32*r, y(24+r))
				g.i("VCVTDQ2PS %s, %s", y(ia(r, k)), y(ia(r, k)))
				g.i("VFMADD231PS %s, %s, %s", y(ia(r, k)), y(24+r), y(f(r, k)))
				if mins {
					g.i("VFNMADD231PS %d(SI), Y29, %s", kTileB+32*r, y(f(r, k)))
				}
			}
		}
	}
	init := func(off int) {
		for k := range c {
			for r := range 4 {
				if off < 0 {
					g.i("VPXORD %s, %s, %s", y(ia(r, k)), y(ia(r, k)), y(ia(r, k)))
				} else {
					g.movdqu(col(k, off), y(ia(r, k)), ia(r, k))
				}
			}
		}
	}
	if q6 {
		init(kActLo)
		steps(0, 4)
		scale(kTileA, false)
		init(kActHi)
		steps(4, 8)
		scale(kTileB, false)
	} else {
		init(-1)
		steps(0, 8)
		scale(kTileA, true)
	}
	g.i("ADDQ $%d, SI", kTileGroup)
	g.i("ADDQ $%d, DI", kActGroup)
	g.i("DECQ CX")
	g.i("JNZ loop")
	for k := range c {
		g.reduce([4]int{f(0, k), f(1, k), f(2, k), f(3, k)}, 12, 13)
	}
	g.tileEnd()
	g.i("VZEROUPPER")
	g.i("RET")
	g.line("")
}

// kTileAVX2 writes the AVX2 tile kernel for packed tiles of K-quant type t
// (qTileQ4_KAVX2_4x<c>, and likewise Q5_K and Q6_K), 4 rows × c ≤ 2
// activation rows in the transposed K layout, with the signature of
// kTileVNNI's. The products are VPMADDUBSW pairs (unsigned weights ≤ 63
// by int8 activations, at most 2·63·127 in magnitude), added up in int16
// as far as they cannot overflow (Q4_K: a whole super-block, 8·2·15·127;
// Q5_K and Q6_K: two steps), then widened by VPMADDWD into the int32
// accumulators Y0-Y7; the float accumulators are on the stack. The
// scales are applied as kTileVNNI applies them.
func (g *gen) kTileAVX2(t kType, c int) {
	name := fmt.Sprintf("qTile%sAVX2_4x%d", t, c)
	ia := func(r, k int) int { return r + 4*k }
	facc := func(r, k int) string { return fmt.Sprintf("%d(SP)", 32*(r+4*k)) }
	g.tileHeader(name, 128*c)
	g.i("VXORPS Y0, Y0, Y0")
	for k := range c {
		for r := range 4 {
			g.i("VMOVUPS Y0, %s", facc(r, k))
		}
	}
	g.line("")
	g.line("loop:")
	init := func(off int) {
		for k := range c {
			for r := range 4 {
				if off < 0 {
					g.i("VPXOR %s, %s, %s", y(ia(r, k)), y(ia(r, k)), y(ia(r, k)))
				} else {
					g.i("VMOVDQU %s, %s", col(k, off), y(ia(r, k)))
				}
			}
		}
	}
	// steps adds the products of steps [s0, s1) to the accumulators.
	steps := func(s0, s1 int) {
		if t == kQ4 {
			// int16 accumulators, widened at the end.
			for s := s0; s < s1; s++ {
				for k := range c {
					g.i("VMOVDQU %s, %s", col(k, 32*s), y(8+k))
				}
				for r := range 4 {
					g.i("VMOVDQU %d(SI), Y10", 128*s+32*r)
					for k := range c {
						g.i("VPMADDUBSW %s, Y10, Y11", y(8+k))
						g.i("VPADDW Y11, %s, %s", y(ia(r, k)), y(ia(r, k)))
					}
				}
			}
			for k := range c {
				for r := range 4 {
					g.i("VPMADDWD ones16<>(SB), %s, %s", y(ia(r, k)), y(ia(r, k)))
				}
			}
			return
		}
		for s := s0; s < s1; s += 2 {
			for k := range c {
				g.i("VMOVDQU %s, %s", col(k, 32*s), y(8+k))
				g.i("VMOVDQU %s, %s", col(k, 32*s+32), y(10+k))
			}
			for r := range 4 {
				g.i("VMOVDQU %d(SI), Y12", 128*s+32*r)
				g.i("VMOVDQU %d(SI), Y13", 128*s+128+32*r)
				for k := range c {
					g.i("VPMADDUBSW %s, Y12, Y14", y(8+k))
					g.i("VPMADDUBSW %s, Y13, Y15", y(10+k))
					g.i("VPADDW Y15, Y14, Y14")
					g.i("VPMADDWD ones16<>(SB), Y14, Y14")
					g.i("VPADDD Y14, %s, %s", y(ia(r, k)), y(ia(r, k)))
				}
			}
		}
	}
	// scale adds idot·(scale_r·dx) for the scales at off(SI), and with
	// mins -b_r·t.
	scale := func(off int, mins bool) {
		for k := range c {
			g.i("VMOVUPS %s, Y14", col(k, actScale))
			if mins {
				g.i("VMOVUPS %s, Y15", col(k, kActT))
			}
			for r := range 4 {
				g.i("VMULPS %d(SI), Y14, Y12", off+32*r)
				g.i("VCVTDQ2PS %s, %s", y(ia(r, k)), y(ia(r, k)))
				g.i("VMOVUPS %s, Y13", facc(r, k))
				g.i("VFMADD231PS %s, Y12, Y13", y(ia(r, k)))
				if mins {
					g.i("VFNMADD231PS %d(SI), Y15, Y13", kTileB+32*r)
				}
				g.i("VMOVUPS Y13, %s", facc(r, k))
			}
		}
	}
	if t == kQ6 {
		init(kActLo)
		steps(0, 4)
		scale(kTileA, false)
		init(kActHi)
		steps(4, 8)
		scale(kTileB, false)
	} else {
		init(-1)
		steps(0, 8)
		scale(kTileA, true)
	}
	g.i("ADDQ $%d, SI", kTileGroup)
	g.i("ADDQ $%d, DI", kActGroup)
	g.i("DECQ CX")
	g.i("JNZ loop")
	for k := range c {
		for r := range 4 {
			g.i("VMOVUPS %s, %s", facc(r, k), y(r))
		}
		g.reduce([4]int{0, 1, 2, 3}, 4, 5)
	}
	g.tileEnd()
	g.i("VZEROUPPER")
	g.i("RET")
	g.line("")
}
