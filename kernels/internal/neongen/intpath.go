package main

import "fmt"

// Layouts of a half group (4 blocks, 128 bytes) of quants: as they are,
// or transposed for the tile kernels (see kernels/matmul_arm64.go).
type layout int

const (
	natural layout = iota
	il4            // 4-byte pieces of the 4 blocks interleaved, for SDOT
	il2            // 2-byte pieces, for SMULL/SMLAL2 and SADALP
)

// transpose emits the interleaving of the 16-byte vectors in (one from
// each of 4 blocks a, b, c, d: the same 16 bytes of each) into 4 vectors,
// using tmp as scratch, and returns the registers of vectors 0-3.
//
// il4: out[k] = [a.S[k], b.S[k], c.S[k], d.S[k]], a 4×4 transpose of
// 32-bit lanes. il2: out[k] = [a.H[i], b.H[i], c.H[i], d.H[i], a.H[i+4],
// b.H[i+4], c.H[i+4], d.H[i+4]] for i = 0, 2, 1, 3: 32-bit lane j of a
// vector then holds 16-bit lanes i and i+4 of block j, so that
// SMULL/SMLAL2 followed by SADALP sums block j's products into lane j.
func (g *gen) transpose(il layout, in, tmp, out [4]int) [4]int {
	a, b, c, d := in[0], in[1], in[2], in[3]
	t := tmp
	switch il {
	case il4:
		g.v3("VTRN1", "S4", t[0], a, b) // a0 b0 a2 b2
		g.v3("VTRN2", "S4", t[1], a, b) // a1 b1 a3 b3
		g.v3("VTRN1", "S4", t[2], c, d) // c0 d0 c2 d2
		g.v3("VTRN2", "S4", t[3], c, d) // c1 d1 c3 d3
		g.v3("VTRN1", "D2", out[0], t[0], t[2])
		g.v3("VTRN1", "D2", out[1], t[1], t[3])
		g.v3("VTRN2", "D2", out[2], t[0], t[2])
		g.v3("VTRN2", "D2", out[3], t[1], t[3])
	case il2:
		g.v3("VTRN1", "H8", t[0], a, b) // a0 b0 a2 b2 a4 b4 a6 b6
		g.v3("VTRN2", "H8", t[1], a, b) // a1 b1 a3 b3 ...
		g.v3("VTRN1", "H8", t[2], c, d)
		g.v3("VTRN2", "H8", t[3], c, d)
		g.v3("VTRN1", "S4", out[0], t[0], t[2]) // a0 b0 c0 d0 a4 b4 c4 d4
		g.v3("VTRN2", "S4", out[1], t[0], t[2]) // a2 b2 c2 d2 a6 ...
		g.v3("VTRN1", "S4", out[2], t[1], t[3]) // a1 b1 c1 d1 a5 ...
		g.v3("VTRN2", "S4", out[3], t[1], t[3]) // a3 ...
	default:
		panic("transpose")
	}
	return out
}

// quantize writes an activation quantizer:
//
//	func name(dst *byte, x *float32, groups, k int)
//
// Per group of 8 blocks: the largest magnitude of each block (pass 1);
// the scales d = amax/127 and inverse scales 127/amax of all 8, zeroed
// where amax < 2^-120 (or NaN); then (pass 2) each block scaled, rounded
// to nearest even and narrowed with saturation to int8, as
// quant.QuantizeActivations does; the byte sum of each block times k for
// the corrections; the quants stored in layout il.
func (g *gen) quantize(name string, il layout) {
	g.line("// func %s(dst *byte, x *float32, groups, k int)", name)
	g.line("TEXT ·%s(SB), NOSPLIT, $0-32", name)
	g.i("MOVD dst+0(FP), R0")
	g.i("MOVD x+8(FP), R1")
	g.i("MOVD groups+16(FP), R2")
	g.i("MOVD k+24(FP), R3")
	g.i("VDUP R3, V31.S4")
	g.i("MOVW $0x42fe0000, R3") // 127.0
	g.i("VDUP R3, V30.S4")
	g.i("MOVW $0x03800000, R3") // 2^-120
	g.i("VDUP R3, V29.S4")
	g.line("group:")
	g.i("MOVD R1, R4")
	// Pass 1: block maxima into V24 (blocks 0-3) and V25 (4-7).
	for j := range 8 {
		g.i("VLD1.P 64(R1), [V0.S4, V1.S4, V2.S4, V3.S4]")
		g.i("VLD1.P 64(R1), [V4.S4, V5.S4, V6.S4, V7.S4]")
		for r := range 8 {
			g.op2("FABS", r, r)
		}
		g.op("FMAX", 0, 0, 1)
		g.op("FMAX", 2, 2, 3)
		g.op("FMAX", 4, 4, 5)
		g.op("FMAX", 6, 6, 7)
		g.op("FMAX", 0, 0, 2)
		g.op("FMAX", 4, 4, 6)
		g.op("FMAX", 0, 0, 4)
		g.op2("FMAXV", 0, 0)
		g.i("VMOV V0.S[0], V%d.S[%d]", 24+j/4, j%4)
	}
	// d (V28, V23) and 1/d (V26, V27), masked.
	g.op("FDIV", 28, 24, 30)
	g.op("FDIV", 26, 30, 24)
	g.op("FCMGE", 24, 24, 29)
	g.v3("VAND", "B16", 28, 28, 24)
	g.v3("VAND", "B16", 26, 26, 24)
	g.op("FDIV", 23, 25, 30)
	g.op("FDIV", 27, 30, 25)
	g.op("FCMGE", 25, 25, 29)
	g.v3("VAND", "B16", 23, 23, 25)
	g.v3("VAND", "B16", 27, 27, 25)
	g.i("FSTPQ (F28, F23), %d(R0)", actScale)
	// Pass 2, a half group at a time: block jj's quants in V(8+2jj) (0-15)
	// and V(9+2jj) (16-31).
	for h := range 2 {
		for jj := range 4 {
			q := 8 + 2*jj
			g.i("VLD1.P 64(R4), [V0.S4, V1.S4, V2.S4, V3.S4]")
			g.i("VLD1.P 64(R4), [V4.S4, V5.S4, V6.S4, V7.S4]")
			for r := range 8 {
				g.elem("FMUL", r, r, 26+h, jj)
			}
			for r := range 8 {
				g.op2("FCVTNS", r, r)
			}
			for r := 0; r < 8; r += 2 {
				g.op2("SQXTN.4H", r, r)
				g.op2("SQXTN2.8H", r, r+1)
			}
			g.op2("SQXTN.8B", q, 0)
			g.op2("SQXTN2.16B", q, 2)
			g.op2("SQXTN.8B", q+1, 4)
			g.op2("SQXTN2.16B", q+1, 6)
		}
		// Corrections: 8 pairwise sums of each block's bytes, then 4 rounds
		// of pairwise adds leave block jj's sum in 16-bit lane jj.
		for jj := range 4 {
			g.op2("SADDLP.8H", 16+jj, 8+2*jj)
			g.op2("SADALP.8H", 16+jj, 9+2*jj)
		}
		g.v3("VADDP", "H8", 16, 16, 17)
		g.v3("VADDP", "H8", 18, 18, 19)
		g.v3("VADDP", "H8", 16, 16, 18)
		g.v3("VADDP", "H8", 16, 16, 16)
		g.op2("SXTL.4S", 16, 16)
		g.op("MUL", 16, 16, 31)
		g.i("FMOVQ F16, %d(R0)", actInit+16*h)
		if il == natural {
			for p := range 4 {
				g.i("FSTPQ (F%d, F%d), %d(R0)", 8+2*p, 9+2*p, 128*h+32*p)
			}
			continue
		}
		for half := range 2 {
			out := g.transpose(il, [4]int{8 + half, 10 + half, 12 + half, 14 + half}, [4]int{16, 17, 18, 19}, [4]int{20, 21, 22, 23})
			g.i("FSTPQ (F%d, F%d), %d(R0)", out[0], out[1], 128*h+64*half)
			g.i("FSTPQ (F%d, F%d), %d(R0)", out[2], out[3], 128*h+64*half+32)
		}
	}
	g.i("ADD $%d, R0", actGroup)
	g.i("SUB $1, R2")
	g.i("CBNZ R2, group")
	g.i("RET")
	g.line("")
}

func packName(q4 bool, il layout) string {
	t := "Q8"
	if q4 {
		t = "Q4"
	}
	return fmt.Sprintf("qPack%sIL%d", t, map[layout]int{il4: 4, il2: 2}[il])
}

// pack writes a packer of groups×8 Q8_0 or Q4_0 blocks of one row into
// row slot r of a tile, in layout il:
//
//	func name(dst, src *byte, groups, r int)
//
// Q4_0 nibbles are stored as bytes 0-15 in element order; the 8 half
// scales are gathered into V24 and stored as float32.
func (g *gen) pack(q4 bool, il layout) {
	name := packName(q4, il)
	g.line("// func %s(dst, src *byte, groups, r int)", name)
	g.line("TEXT ·%s(SB), NOSPLIT, $0-32", name)
	g.i("MOVD dst+0(FP), R0")
	g.i("MOVD r+24(FP), R3")
	g.i("ADD R3<<4, R0, R0")
	g.i("MOVD src+8(FP), R1")
	g.i("MOVD groups+16(FP), R2")
	if q4 {
		g.i("VMOVI $15, V31.B16")
	}
	g.line("group:")
	for h := range 2 {
		for jj := range 4 {
			q := 8 + 2*jj
			g.i("VLD1.P 2(R1), V24.H[%d]", 4*h+jj)
			if q4 {
				g.i("VLD1.P 16(R1), [V%d.B16]", q+1)
				g.v3("VAND", "B16", q, q+1, 31)
				g.i("VUSHR $4, V%d.B16, V%d.B16", q+1, q+1)
			} else {
				g.i("VLD1.P 32(R1), [V%d.B16, V%d.B16]", q, q+1)
			}
		}
		for half := range 2 {
			out := g.transpose(il, [4]int{8 + half, 10 + half, 12 + half, 14 + half}, [4]int{16, 17, 18, 19}, [4]int{20, 21, 22, 23})
			for v, r := range out {
				g.i("FMOVQ F%d, %d(R0)", r, 512*h+64*(4*half+v))
			}
		}
	}
	g.op2("FCVTL", 25, 24)
	g.op2("FCVTL2", 26, 24)
	g.i("FMOVQ F25, %d(R0)", tileScale)
	g.i("FMOVQ F26, %d(R0)", tileScale+64)
	g.i("ADD $%d, R0", tileGroup)
	g.i("SUB $1, R2")
	g.i("CBNZ R2, group")
	g.i("RET")
	g.line("")
}

func tileName(q4, sdot bool, c int) string {
	t := "Q8"
	if q4 {
		t = "Q4"
	}
	set := ""
	if sdot {
		set = "Dot"
	}
	return fmt.Sprintf("qTile%s%s_4x%d", set, t, c)
}

// tile writes an integer tile kernel for 4 weight rows × c activation
// rows:
//
//	func name(w, a *byte, as, groups int, out *float32, os, tiles int)
//
// Per half group (4 blocks): each of the 4c products gets an int32
// accumulator I(r, k), lane j for block j: with SDOT (il4 layout), 8
// SDOTs of 16 bytes; without (il2), SMULL and SMLAL2 into 16-bit
// products (Q8_0: two at most 128·127 each, so their sum fits) added
// pairwise into I by SADALP, or for Q4_0 (nibbles at most 15, so 16
// products fit in 16 bits) SMULL/SMLAL/SMLAL2 over all 8 vectors and one
// SADDLP. Q4_0 then adds the corrections. Each product's 8 float lanes
// (V(h, r, k): blocks 0-3 and 4-7) get float32(I)·(dw·dx) by FMLA, and
// at the end the lanes are summed in the canonical order.
func (g *gen) tile(q4, sdot bool, c int) {
	name := tileName(q4, sdot, c)
	f := func(h, r, k int) int { return h*4*c + r*c + k }
	ia := func(r, k int) int { return 16 + r*c + k }
	col := func(k int) string { return fmt.Sprintf("R%d", 7+k) }
	g.line("// func %s(w, a *byte, as, groups int, out *float32, os, tiles int)", name)
	g.line("TEXT ·%s(SB), NOSPLIT, $0-56", name)
	g.i("MOVD w+0(FP), R0")
	g.i("MOVD as+16(FP), R2")
	g.i("MOVD out+32(FP), R4")
	g.i("MOVD os+40(FP), R5")
	g.i("LSL $2, R5")
	g.i("MOVD tiles+48(FP), R6")
	g.line("tile:")
	g.i("MOVD a+8(FP), R7")
	for k := 1; k < c; k++ {
		g.i("ADD R2, %s, %s", col(k-1), col(k))
	}
	g.i("MOVD groups+24(FP), R3")
	g.i("MOVD R4, R9")
	for h := range 2 {
		for r := range 4 {
			for k := range c {
				g.zero(f(h, r, k))
			}
		}
	}
	g.line("group:")
	for h := range 2 {
		if sdot || !q4 {
			for r := range 4 {
				for k := range c {
					g.zero(ia(r, k))
				}
			}
		}
		for v := range 8 {
			for k := range c {
				g.i("FMOVQ %d(%s), F%d", 128*h+16*v, col(k), 24+k)
			}
			g.i("VLD1.P 64(R0), [V26.B16, V27.B16, V28.B16, V29.B16]")
			for r := range 4 {
				for k := range c {
					acc, w, a := ia(r, k), 26+r, 24+k
					switch {
					case sdot:
						g.op("SDOT", acc, w, a)
					case q4:
						if v == 0 {
							g.op("SMULL", acc, w, a)
						} else {
							g.op("SMLAL", acc, w, a)
						}
						g.op("SMLAL2", acc, w, a)
					default:
						t := 30 + (r*c+k)%2
						g.op("SMULL", t, w, a)
						g.op("SMLAL2", t, w, a)
						g.op2("SADALP.4S", acc, t)
					}
				}
			}
		}
		if q4 {
			for k := range c {
				g.i("FMOVQ %d(%s), F%d", actInit+16*h, col(k), 24+k)
			}
			for r := range 4 {
				for k := range c {
					if !sdot {
						g.op2("SADDLP.4S", ia(r, k), ia(r, k))
					}
					g.v3("VADD", "S4", ia(r, k), ia(r, k), 24+k)
				}
			}
		}
		for k := range c {
			g.i("FMOVQ %d(%s), F%d", actScale+16*h, col(k), 24+k)
		}
		// R0 has moved 512 bytes per half group past the group's start.
		for r := range 4 {
			g.i("FMOVQ %d(R0), F%d", tileScale+64*h+16*r-512*(h+1), 26+r)
		}
		for r := range 4 {
			for k := range c {
				g.op("FMUL", 30, 26+r, 24+k)
				g.op2("SCVTF", ia(r, k), ia(r, k))
				g.vfmla(f(h, r, k), ia(r, k), 30)
			}
		}
	}
	g.i("ADD $%d, R0", tileGroup-tileScale)
	for k := range c {
		g.i("ADD $%d, %s", actGroup, col(k))
	}
	g.i("SUB $1, R3")
	g.i("CBNZ R3, group")
	for k := range c {
		g.reduce4(f(0, 0, k), f(0, 1, k), f(0, 2, k), f(0, 3, k), f(1, 0, k), f(1, 1, k), f(1, 2, k), f(1, 3, k))
		g.i("FMOVQ F%d, (R9)", f(0, 0, k))
		g.i("ADD R5, R9")
	}
	g.i("ADD $16, R4")
	g.i("SUB $1, R6")
	g.i("CBNZ R6, tile")
	g.i("RET")
	g.line("")
}

// reduce4 sums the 8 lanes of each of 4 rows, lanes 0-3 in lo[r] and 4-7
// in hi[r], in the canonical order ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)),
// into the 4 lanes of register lo0 (row r in lane r), clobbering lo.
func (g *gen) reduce4(lo0, lo1, lo2, lo3, hi0, hi1, hi2, hi3 int) {
	g.op("FADDP", lo0, lo0, hi0) // l0+l1, l2+l3, l4+l5, l6+l7
	g.op("FADDP", lo1, lo1, hi1)
	g.op("FADDP", lo2, lo2, hi2)
	g.op("FADDP", lo3, lo3, hi3)
	g.op("FADDP", lo0, lo0, lo1) // row 0's two halves, row 1's
	g.op("FADDP", lo2, lo2, lo3)
	g.op("FADDP", lo0, lo0, lo2)
}

// direct writes a batch-1 kernel for one activation row in the natural
// layout against weight rows read in place:
//
//	func name(w *byte, rs, rows int, a *byte, nb int, out *float32)
//
// Per row and group of 8 blocks, block j's products go to int32
// accumulator Vj (4 lanes), which ADDP then sums exactly into lane j%4 of
// V0 (blocks 0-3) or V4 (4-7): the integer dot products the tiles
// compute, scaled and accumulated the same way, so the result is bit for
// bit a tile's. The last group may be partial (nb%8 blocks); its missing
// blocks are skipped, leaving their lanes and scales zero.
func (g *gen) direct(q4, sdot bool) {
	t := "Q8"
	if q4 {
		t = "Q4"
	}
	set := ""
	if sdot {
		set = "Dot"
	}
	name := fmt.Sprintf("qDirect%s%s", set, t)
	g.line("// func %s(w *byte, rs, rows int, a *byte, nb int, out *float32)", name)
	g.line("TEXT ·%s(SB), NOSPLIT, $0-48", name)
	g.i("MOVD w+0(FP), R0")
	g.i("MOVD rs+8(FP), R1")
	g.i("MOVD rows+16(FP), R2")
	g.i("MOVD out+40(FP), R5")
	if q4 {
		g.i("VMOVI $15, V31.B16")
	}
	g.line("row:")
	g.i("MOVD R0, R9")
	g.i("MOVD a+24(FP), R6")
	g.i("MOVD nb+32(FP), R7")
	g.zero(28)
	g.zero(29)
	block := func(j int) {
		g.i("VLD1.P 2(R0), V8.H[%d]", j)
		g.i("FLDPQ %d(R6), (F12, F13)", 32*j)
		if q4 {
			g.i("VLD1.P 16(R0), [V10.B16]")
			g.v3("VAND", "B16", 11, 10, 31)
			g.i("VUSHR $4, V10.B16, V10.B16")
			if sdot {
				g.op("SDOT", j, 11, 12)
				g.op("SDOT", j, 10, 13)
			} else {
				g.op("SMULL", 14, 11, 12)
				g.op("SMLAL2", 14, 11, 12)
				g.op("SMLAL", 14, 10, 13)
				g.op("SMLAL2", 14, 10, 13)
				g.op2("SADDLP.4S", j, 14)
			}
			return
		}
		g.i("VLD1.P 32(R0), [V10.B16, V11.B16]")
		if sdot {
			g.op("SDOT", j, 10, 12)
			g.op("SDOT", j, 11, 13)
		} else {
			g.op("SMULL", 14, 10, 12)
			g.op("SMLAL2", 14, 10, 12)
			g.op("SMULL", 15, 11, 13)
			g.op("SMLAL2", 15, 11, 13)
			g.op2("SADDLP.4S", j, 14)
			g.op2("SADALP.4S", j, 15)
		}
	}
	// A whole group: every accumulator and scale lane is written (SDOT
	// accumulates, so its accumulators start at zero).
	g.line("group:")
	g.i("CMP $8, R7")
	g.i("BLT partial")
	if sdot {
		for j := range 8 {
			g.zero(j)
		}
	}
	for j := range 8 {
		block(j)
	}
	g.i("B blocks")
	// The last, partial group: R7 blocks.
	g.line("partial:")
	for j := range 9 {
		g.zero(j)
	}
	for j := range 8 {
		if j > 0 {
			g.i("CMP $%d, R7", j+1)
			g.i("BLT blocks")
		}
		block(j)
	}
	g.line("blocks:")
	g.v3("VADDP", "S4", 0, 0, 1)
	g.v3("VADDP", "S4", 2, 2, 3)
	g.v3("VADDP", "S4", 0, 0, 2)
	g.v3("VADDP", "S4", 4, 4, 5)
	g.v3("VADDP", "S4", 6, 6, 7)
	g.v3("VADDP", "S4", 4, 4, 6)
	if q4 {
		g.i("FLDPQ %d(R6), (F12, F13)", actInit)
		g.v3("VADD", "S4", 0, 0, 12)
		g.v3("VADD", "S4", 4, 4, 13)
	}
	g.op2("SCVTF", 0, 0)
	g.op2("SCVTF", 4, 4)
	g.op2("FCVTL", 9, 8)
	g.op2("FCVTL2", 8, 8)
	g.i("FLDPQ %d(R6), (F12, F13)", actScale)
	g.op("FMUL", 9, 9, 12)
	g.op("FMUL", 8, 8, 13)
	g.vfmla(28, 0, 9)
	g.vfmla(29, 4, 8)
	g.i("ADD $%d, R6", actGroup)
	g.i("SUBS $8, R7")
	g.i("BGT group")
	g.op("FADDP", 28, 28, 29)
	g.op("FADDP", 28, 28, 28)
	g.op2("FADDP.S", 28, 28)
	g.i("FMOVS.P F28, 4(R5)")
	g.i("ADD R1, R9, R0")
	g.i("SUB $1, R2")
	g.i("CBNZ R2, row")
	g.i("RET")
	g.line("")
}

// tileF32 writes a float32 kernel for tiles of 4 weight rows × c
// activation rows, the tiles' rows following one another:
//
//	func name(w *byte, ws int, x *float32, xs, steps int, out *float32, os, tiles int)
//
// Each of the 4c products has two accumulators, lanes 0-3 and 4-7 of the
// canonical 8 (kernels/matmul_float.go), to which each step of 8
// elements adds its products with a fused multiply-add; the lanes are
// then summed as reduce4 does. Accumulators V0-V23, activations V24-V29,
// weights V30-V31.
func (g *gen) tileF32(c int) {
	name := fmt.Sprintf("fTileNEON_4x%d", c)
	acc := func(r, k, h int) int { return 8*k + 2*r + h }
	col := func(k int) string { return fmt.Sprintf("R%d", 12+k) }
	row := func(r int) string { return fmt.Sprintf("R%d", 8+r) }
	g.line("// func %s(w *byte, ws int, x *float32, xs, steps int, out *float32, os, tiles int)", name)
	g.line("TEXT ·%s(SB), NOSPLIT, $0-64", name)
	g.i("MOVD w+0(FP), R0")
	g.i("MOVD ws+8(FP), R1")
	g.i("MOVD xs+24(FP), R3")
	g.i("MOVD out+40(FP), R5")
	g.i("MOVD os+48(FP), R6")
	g.i("LSL $2, R6")
	g.i("MOVD tiles+56(FP), R7")
	g.line("tile:")
	g.i("MOVD R0, R8")
	for r := 1; r < 4; r++ {
		g.i("ADD R1, %s, %s", row(r-1), row(r))
	}
	g.i("MOVD x+16(FP), R12")
	for k := 1; k < c; k++ {
		g.i("ADD R3, %s, %s", col(k-1), col(k))
	}
	g.i("MOVD steps+32(FP), R15")
	for a := range 8 * c {
		g.zero(a)
	}
	g.line("loop:")
	for k := range c {
		g.i("VLD1.P 32(%s), [V%d.S4, V%d.S4]", col(k), 24+2*k, 25+2*k)
	}
	for r := range 4 {
		g.i("VLD1.P 32(%s), [V30.S4, V31.S4]", row(r))
		for k := range c {
			g.vfmla(acc(r, k, 0), 30, 24+2*k)
			g.vfmla(acc(r, k, 1), 31, 25+2*k)
		}
	}
	g.i("SUB $1, R15")
	g.i("CBNZ R15, loop")
	g.i("MOVD R5, R4")
	for k := range c {
		g.reduce4(acc(0, k, 0), acc(1, k, 0), acc(2, k, 0), acc(3, k, 0), acc(0, k, 1), acc(1, k, 1), acc(2, k, 1), acc(3, k, 1))
		g.i("FMOVQ F%d, (R4)", acc(0, k, 0))
		g.i("ADD R6, R4")
	}
	g.i("ADD R1<<2, R0, R0")
	g.i("ADD $16, R5")
	g.i("SUB $1, R7")
	g.i("CBNZ R7, tile")
	g.i("RET")
	g.line("")
}
