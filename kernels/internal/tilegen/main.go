// Command tilegen writes kernels/tile_amd64.s, the assembly of attention's
// tiles:
//
//   - AxpyTile (float32 values) and AxpyTileF16 (half-precision values):
//     register-tiled sums of weighted rows, out[k] += p[k][r]·v[r] for r in
//     order, with one fused multiply-add per element and row, as Axpy
//     rounds. Each kernel keeps a block of nq output rows × w columns in
//     registers while it walks the rows of v, so a row of v is loaded (and
//     converted) once for nq outputs.
//   - DotHeadsF16 and AxpyHeadsF16: the same products for decoding, where
//     each head has one query: 4 cache rows at a time, all heads of each
//     row in one call, so that the rows are read front to back.
//   - DotTileF16: 4 half-precision rows × c float32 rows of dot products,
//     summed exactly as MatMul's float tiles sum (kernels/matmul_float.go):
//     one 8-lane accumulator per product, a fused multiply-add per step of
//     8, lanes added ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)).
//
// Run it with go generate in package kernels; a test checks the committed
// file is its output.
//
// Go's assembler takes operands in the reverse of Intel's order
// (destination last).
package main

import (
	"bytes"
	"flag"
	"fmt"
	"log"
	"os"
)

func main() {
	out := flag.String("o", "tile_amd64.s", "output file")
	flag.Parse()
	if err := os.WriteFile(*out, Generate(), 0o644); err != nil {
		log.Fatal(err)
	}
}

// A kernel shape: nq output rows of regs vector registers each.
type shape struct {
	isa  string // "AVX2" (Y registers, 8 floats) or "AVX512" (Z, 16 floats)
	nq   int
	regs int
}

func (s shape) name() string {
	return fmt.Sprintf("axpyTile%s_%dx%d", s.isa, s.nq, s.regs*s.lanes())
}

func (s shape) lanes() int {
	if s.isa == "AVX512" {
		return 16
	}
	return 8
}

func (s shape) reg(n int) string {
	if s.isa == "AVX512" {
		return fmt.Sprintf("Z%d", n)
	}
	return fmt.Sprintf("Y%d", n)
}

// Shapes lists the generated kernels. AVX2 has 16 registers: 3 rows × 4
// accumulators and 3 broadcasts; AVX-512 has 32: 4 × 4 and 4.
var Shapes = []shape{
	{"AVX2", 1, 4}, {"AVX2", 2, 4}, {"AVX2", 3, 4}, {"AVX2", 1, 1}, {"AVX2", 2, 1}, {"AVX2", 3, 1},
	{"AVX512", 1, 4}, {"AVX512", 2, 4}, {"AVX512", 3, 4}, {"AVX512", 4, 4},
	{"AVX512", 1, 1}, {"AVX512", 2, 1}, {"AVX512", 3, 1}, {"AVX512", 4, 1},
}

type gen struct{ b bytes.Buffer }

func (g *gen) i(format string, args ...any) {
	g.b.WriteByte('\t')
	fmt.Fprintf(&g.b, format, args...)
	g.b.WriteByte('\n')
}

func (g *gen) line(format string, args ...any) {
	fmt.Fprintf(&g.b, format, args...)
	g.b.WriteByte('\n')
}

// Output row k and weight row k live at these addresses: DI and SI hold
// rows 0, AX and BX the strides in bytes, R10 and R11 rows 3.
func outRow(k, off int) string {
	switch k {
	case 0:
		return fmt.Sprintf("%d(DI)", off)
	case 1:
		return fmt.Sprintf("%d(DI)(AX*1)", off)
	case 2:
		return fmt.Sprintf("%d(DI)(AX*2)", off)
	}
	return fmt.Sprintf("%d(R10)", off)
}

func pRow(k int) string {
	switch k {
	case 0:
		return "(SI)"
	case 1:
		return "(SI)(BX*1)"
	case 2:
		return "(SI)(BX*2)"
	}
	return "(R11)"
}

func (g *gen) kernel(s shape) {
	vb := s.lanes() * 4 // bytes per register
	acc := func(k, j int) string { return s.reg(k*s.regs + j) }
	bc := func(k int) string { return s.reg(s.nq*s.regs + k) }
	g.line("// func %s(out *float32, os int, p *float32, ps int, v *float32, vs int, nr int)", s.name())
	g.line("TEXT ·%s(SB), NOSPLIT, $0-56", s.name())
	g.i("MOVQ out+0(FP), DI")
	g.i("MOVQ os+8(FP), AX")
	g.i("SHLQ $2, AX")
	g.i("MOVQ p+16(FP), SI")
	g.i("MOVQ ps+24(FP), BX")
	g.i("SHLQ $2, BX")
	g.i("MOVQ v+32(FP), DX")
	g.i("MOVQ vs+40(FP), R8")
	g.i("SHLQ $2, R8")
	g.i("MOVQ nr+48(FP), CX")
	if s.nq == 4 {
		g.i("LEAQ (DI)(AX*2), R10")
		g.i("ADDQ AX, R10")
		g.i("LEAQ (SI)(BX*2), R11")
		g.i("ADDQ BX, R11")
	}
	for k := range s.nq {
		for j := range s.regs {
			g.i("VMOVUPS %s, %s", outRow(k, j*vb), acc(k, j))
		}
	}
	g.line("loop:")
	g.i("TESTQ CX, CX")
	g.i("JEQ done")
	for k := range s.nq {
		g.i("VBROADCASTSS %s, %s", pRow(k), bc(k))
	}
	for j := range s.regs {
		for k := range s.nq {
			// acc += bc·v, rounded once, as Axpy's VFMADD231PS.
			g.i("VFMADD231PS %d(DX), %s, %s", j*vb, bc(k), acc(k, j))
		}
	}
	g.i("ADDQ $4, SI")
	if s.nq == 4 {
		g.i("ADDQ $4, R11")
	}
	g.i("ADDQ R8, DX")
	g.i("DECQ CX")
	g.i("JMP loop")
	g.line("done:")
	for k := range s.nq {
		for j := range s.regs {
			g.i("VMOVUPS %s, %s", acc(k, j), outRow(k, j*vb))
		}
	}
	g.i("VZEROUPPER")
	g.i("RET")
	g.line("")
}

// F16 value kernels: v rows hold halves, so a row's w columns are w/lanes
// conversions (VCVTPH2PS) into registers, then nq·regs multiply-adds.
// AVX2 has 16 registers: 2 rows × 4 accumulators, 4 values, 2 broadcasts.
var F16Shapes = []shape{
	{"AVX2", 1, 4}, {"AVX2", 2, 4}, {"AVX2", 1, 1}, {"AVX2", 2, 1},
	{"AVX512", 1, 4}, {"AVX512", 2, 4}, {"AVX512", 3, 4}, {"AVX512", 4, 4},
	{"AVX512", 1, 1}, {"AVX512", 2, 1}, {"AVX512", 3, 1}, {"AVX512", 4, 1},
}

func (g *gen) kernelF16(s shape) {
	vb := s.lanes() * 4 // bytes per register of floats
	hb := s.lanes() * 2 // bytes of halves it converts from
	acc := func(k, j int) string { return s.reg(k*s.regs + j) }
	val := func(j int) string { return s.reg(s.nq*s.regs + j) }
	bc := func(k int) string { return s.reg(s.nq*s.regs + s.regs + k) }
	name := fmt.Sprintf("axpyTileF16%s_%dx%d", s.isa, s.nq, s.regs*s.lanes())
	g.line("// func %s(out *float32, os int, p *float32, ps int, v *uint16, vs int, nr int)", name)
	g.line("TEXT ·%s(SB), NOSPLIT, $0-56", name)
	g.i("MOVQ out+0(FP), DI")
	g.i("MOVQ os+8(FP), AX")
	g.i("SHLQ $2, AX")
	g.i("MOVQ p+16(FP), SI")
	g.i("MOVQ ps+24(FP), BX")
	g.i("SHLQ $2, BX")
	g.i("MOVQ v+32(FP), DX")
	g.i("MOVQ vs+40(FP), R8")
	g.i("SHLQ $1, R8")
	g.i("MOVQ nr+48(FP), CX")
	if s.nq == 4 {
		g.i("LEAQ (DI)(AX*2), R10")
		g.i("ADDQ AX, R10")
		g.i("LEAQ (SI)(BX*2), R11")
		g.i("ADDQ BX, R11")
	}
	for k := range s.nq {
		for j := range s.regs {
			g.i("VMOVUPS %s, %s", outRow(k, j*vb), acc(k, j))
		}
	}
	g.line("loop:")
	g.i("TESTQ CX, CX")
	g.i("JEQ done")
	for j := range s.regs {
		g.i("VCVTPH2PS %d(DX), %s", j*hb, val(j))
	}
	for k := range s.nq {
		g.i("VBROADCASTSS %s, %s", pRow(k), bc(k))
	}
	for j := range s.regs {
		for k := range s.nq {
			g.i("VFMADD231PS %s, %s, %s", val(j), bc(k), acc(k, j))
		}
	}
	g.i("ADDQ $4, SI")
	if s.nq == 4 {
		g.i("ADDQ $4, R11")
	}
	g.i("ADDQ R8, DX")
	g.i("DECQ CX")
	g.i("JMP loop")
	g.line("done:")
	for k := range s.nq {
		for j := range s.regs {
			g.i("VMOVUPS %s, %s", acc(k, j), outRow(k, j*vb))
		}
	}
	g.i("VZEROUPPER")
	g.i("RET")
	g.line("")
}

func y(n int) string { return fmt.Sprintf("Y%d", n) }
func x(n int) string { return fmt.Sprintf("X%d", n) }

// fcol is the address of float row k of a dot tile: rows are DX bytes
// apart from DI, and R11 is DI+3·DX.
func fcol(k int) string {
	switch k {
	case 0:
		return "(DI)"
	case 1:
		return "(DI)(DX*1)"
	case 2:
		return "(DI)(DX*2)"
	case 3:
		return "(R11)"
	case 4:
		return "(R11)(DX*1)"
	case 5:
		return "(R11)(DX*2)"
	}
	panic("fcol")
}

// hrow is the address of half-precision row r: rows are BX bytes apart
// from SI, and R10 is SI+3·BX.
func hrow(r int) string {
	switch r {
	case 0:
		return "(SI)"
	case 1:
		return "(SI)(BX*1)"
	case 2:
		return "(SI)(BX*2)"
	}
	return "(R10)"
}

// DotF16Cols are the float rows per DotTileF16 kernel, by instruction set.
var DotF16Cols = map[string]int{"AVX2": 3, "AVX512": 6}

// dotF16 writes the kernel for 4 half rows × c float rows:
//
//	func name(w *uint16, ws int, x *float32, xs, steps int, out *float32, os int)
//
// ws and xs in bytes, out[k*os+r] for row r and float row k. With evex
// (AVX-512 VL) accumulators are Y2-Y25, floats Y26-Y31, the converted
// halves Y1; otherwise Y0-Y11, Y12-Y14 and Y15. Each column's four sums
// are reduced together: VHADDPS is VEX-only, so accumulators in Y16 and up
// are first moved to low registers freed by earlier columns.
//
// The AVX2 kernels take one more argument, groups, and compute that many
// tiles, each c float rows after the last (x and out move on by c rows):
// a block of keys against all of a task's queries in one call, which
// saves a call, a prologue and a loop exit per tile.
func (g *gen) dotF16(isa string, c int) {
	evex := isa == "AVX512"
	acc := func(r, k int) int { return r + 4*k }
	xr := func(k int) int { return 12 + k }
	wr := 15
	if evex {
		acc = func(r, k int) int { return 2 + r + 4*k }
		xr = func(k int) int { return 26 + k }
		wr = 1
	}
	name := fmt.Sprintf("dotTileF16%s_4x%d", isa, c)
	if evex {
		g.line("// func %s(w *uint16, ws int, x *float32, xs, steps int, out *float32, os int)", name)
		g.line("TEXT ·%s(SB), NOSPLIT, $0-56", name)
	} else {
		g.line("// func %s(w *uint16, ws int, x *float32, xs, steps int, out *float32, os, groups int)", name)
		g.line("TEXT ·%s(SB), NOSPLIT, $0-64", name)
	}
	g.i("MOVQ w+0(FP), SI")
	g.i("MOVQ ws+8(FP), BX")
	g.i("MOVQ x+16(FP), DI")
	g.i("MOVQ xs+24(FP), DX")
	g.i("MOVQ steps+32(FP), CX")
	g.i("MOVQ out+40(FP), R8")
	g.i("MOVQ os+48(FP), R9")
	g.i("SHLQ $2, R9")
	if !evex {
		// R12 counts the groups; R13 and R14 hold w and this group's x.
		g.i("MOVQ groups+56(FP), R12")
		g.i("MOVQ SI, R13")
		g.i("MOVQ DI, R14")
		g.line("group:")
		g.i("MOVQ R13, SI")
		g.i("MOVQ R14, DI")
		g.i("MOVQ steps+32(FP), CX")
	}
	g.i("LEAQ (SI)(BX*2), R10")
	g.i("ADDQ BX, R10")
	if c > 3 {
		g.i("LEAQ (DI)(DX*2), R11")
		g.i("ADDQ DX, R11")
	}
	for k := range c {
		for r := range 4 {
			a := acc(r, k)
			if a < 16 {
				g.i("VXORPS %s, %s, %s", y(a), y(a), y(a))
			} else {
				g.i("VPXORD %s, %s, %s", y(a), y(a), y(a))
			}
		}
	}
	g.line("loop:")
	for k := range c {
		g.i("VMOVUPS %s, %s", fcol(k), y(xr(k)))
	}
	for r := range 4 {
		g.i("VCVTPH2PS %s, %s", hrow(r), y(wr))
		for k := range c {
			g.i("VFMADD231PS %s, %s, %s", y(xr(k)), y(wr), y(acc(r, k)))
		}
	}
	g.i("ADDQ $16, SI")
	g.i("ADDQ $16, R10")
	g.i("ADDQ $32, DI")
	if c > 3 {
		g.i("ADDQ $32, R11")
	}
	g.i("DECQ CX")
	g.i("JNZ loop")
	t0, t1 := 12, 13
	if evex {
		t0, t1 = 0, 1
	}
	var free []int
	for k := range c {
		var a [4]int
		for r := range 4 {
			a[r] = acc(r, k)
			if a[r] >= 16 {
				f := free[0]
				free = free[1:]
				g.i("VMOVAPS %s, %s", y(a[r]), y(f))
				a[r] = f
			}
		}
		g.reduce4(a, t0, t1)
		free = append(free, a[:]...)
	}
	if !evex {
		for range c {
			g.i("ADDQ DX, R14")
		}
		g.i("DECQ R12")
		g.i("JNZ group")
	}
	g.i("VZEROUPPER")
	g.i("RET")
	g.line("")
}

// dotHeads writes DotHeadsF16's kernel: for each of heads heads, the
// dotTileF16AVX2_4x1 product of 4 half rows (ws bytes apart) with one float
// row, the head's steps×8 elements, heads side by side in the rows and in
// x; head h's 4 sums go to out+h·os floats.
//
//	func dotHeadsF16AVX2(w *uint16, ws int, x *float32, steps, heads int, out *float32, os int)
func (g *gen) dotHeads() {
	name := "dotHeadsF16AVX2"
	g.line("// func %s(w *uint16, ws int, x *float32, steps, heads int, out *float32, os int)", name)
	g.line("TEXT ·%s(SB), NOSPLIT, $0-56", name)
	g.i("MOVQ w+0(FP), SI")
	g.i("MOVQ ws+8(FP), BX")
	g.i("MOVQ x+16(FP), DI")
	g.i("MOVQ heads+32(FP), R12")
	g.i("MOVQ out+40(FP), R8")
	g.i("MOVQ os+48(FP), R9")
	g.i("SHLQ $2, R9")
	g.i("LEAQ (SI)(BX*2), R10")
	g.i("ADDQ BX, R10")
	g.i("LEAQ (R10)(BX*2), R11") // row 5, for prefetching rows 4-7
	g.line("head:")
	g.i("MOVQ steps+24(FP), CX")
	for r := range 4 {
		g.i("VXORPS %s, %s, %s", y(r), y(r), y(r))
	}
	// The head's elements follow the previous head's in every row and in
	// x, so the pointers need no adjusting between heads.
	// The caller's next 4 rows follow these: the hardware prefetchers miss
	// them (a head's part of a row is a short run), so they are
	// prefetched here, with the head they will be read for.
	g.line("loop:")
	g.i("VMOVUPS (DI), Y12")
	for r := range 4 {
		g.i("VCVTPH2PS %s, Y15", hrow(r))
		g.i("VFMADD231PS Y12, Y15, %s", y(r))
	}
	g.i("PREFETCHT0 (SI)(BX*4)")
	g.i("PREFETCHT0 (R11)")
	g.i("PREFETCHT0 (R11)(BX*1)")
	g.i("PREFETCHT0 (R10)(BX*4)")
	g.i("ADDQ $16, SI")
	g.i("ADDQ $16, R10")
	g.i("ADDQ $16, R11")
	g.i("ADDQ $32, DI")
	g.i("DECQ CX")
	g.i("JNZ loop")
	g.reduce4([4]int{0, 1, 2, 3}, 12, 13)
	g.i("DECQ R12")
	g.i("JNZ head")
	g.i("VZEROUPPER")
	g.i("RET")
	g.line("")
}

// axpyHeads writes AxpyHeadsF16's kernel: for each of heads heads, out +=
// p[r]·v[r] for 4 half rows r (vs bytes apart) in order, one fused
// multiply-add per element and row as axpyTileF16 does, over the head's
// steps×8 elements; heads are side by side in out and the rows, and head
// h's 4 weights are at p+h·ps floats.
//
//	func axpyHeadsF16AVX2(out *float32, p *float32, ps int, v *uint16, vs int, steps, heads int)
func (g *gen) axpyHeads() {
	name := "axpyHeadsF16AVX2"
	g.line("// func %s(out *float32, p *float32, ps int, v *uint16, vs int, steps, heads int)", name)
	g.line("TEXT ·%s(SB), NOSPLIT, $0-56", name)
	g.i("MOVQ out+0(FP), DI")
	g.i("MOVQ p+8(FP), SI")
	g.i("MOVQ ps+16(FP), BX")
	g.i("SHLQ $2, BX")
	g.i("MOVQ v+24(FP), DX")
	g.i("MOVQ vs+32(FP), R8")
	g.i("SHLQ $1, R8")
	g.i("LEAQ (DX)(R8*2), R10")
	g.i("ADDQ R8, R10")
	g.i("LEAQ (R10)(R8*2), R11") // row 5, for prefetching rows 4-7
	g.i("MOVQ heads+48(FP), R12")
	g.line("head:")
	for r := range 4 {
		g.i("VBROADCASTSS %d(SI), %s", 4*r, y(4+r))
	}
	g.i("MOVQ steps+40(FP), CX")
	g.line("loop:")
	g.i("VMOVUPS (DI), Y0")
	rows := []string{"(DX)", "(DX)(R8*1)", "(DX)(R8*2)", "(R10)"}
	for r := range 4 {
		g.i("VCVTPH2PS %s, %s", rows[r], y(1+r%3))
		g.i("VFMADD231PS %s, %s, Y0", y(1+r%3), y(4+r))
	}
	g.i("VMOVUPS Y0, (DI)")
	g.i("PREFETCHT0 (DX)(R8*4)")
	g.i("PREFETCHT0 (R11)")
	g.i("PREFETCHT0 (R11)(R8*1)")
	g.i("PREFETCHT0 (R10)(R8*4)")
	g.i("ADDQ $32, DI")
	g.i("ADDQ $16, DX")
	g.i("ADDQ $16, R10")
	g.i("ADDQ $16, R11")
	g.i("DECQ CX")
	g.i("JNZ loop")
	g.i("ADDQ BX, SI")
	g.i("DECQ R12")
	g.i("JNZ head")
	g.i("VZEROUPPER")
	g.i("RET")
	g.line("")
}

// reduce4 sums the 8 lanes of each of 4 accumulators (registers a, below
// 16) in the order ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)), with t0 and t1 as
// scratch, stores the 4 sums at (R8) and moves R8 on by R9.
func (g *gen) reduce4(a [4]int, t0, t1 int) {
	g.i("VHADDPS %s, %s, %s", y(a[1]), y(a[0]), y(t0))
	g.i("VHADDPS %s, %s, %s", y(a[3]), y(a[2]), y(t1))
	g.i("VHADDPS %s, %s, %s", y(t1), y(t0), y(t0))
	g.i("VEXTRACTF128 $1, %s, %s", y(t0), x(t1))
	g.i("VADDPS %s, %s, %s", x(t1), x(t0), x(t0))
	g.i("VMOVUPS %s, (R8)", x(t0))
	g.i("ADDQ R9, R8")
}

// Generate returns the assembly source.
func Generate() []byte {
	g := &gen{}
	g.line("// Code generated by kernels/internal/tilegen; DO NOT EDIT.")
	g.line("")
	g.line("//go:build !noasm")
	g.line("")
	g.line(`#include "textflag.h"`)
	g.line("")
	for _, s := range Shapes {
		g.kernel(s)
	}
	for _, s := range F16Shapes {
		g.kernelF16(s)
	}
	for _, isa := range []string{"AVX2", "AVX512"} {
		for c := 1; c <= DotF16Cols[isa]; c++ {
			g.dotF16(isa, c)
		}
	}
	g.dotHeads()
	g.axpyHeads()
	return g.b.Bytes()
}
