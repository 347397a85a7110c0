package main

import "fmt"

// Encodings of the Advanced SIMD instructions Go's arm64 assembler has no
// mnemonic for, from the Arm Architecture Reference Manual (A64 encoding
// index: "Advanced SIMD three same", "three different", "two-register
// miscellaneous", "across lanes", "scalar pairwise", "vector x indexed
// element", "shift by immediate", "Floating-point data-processing (1
// source)" and SDOT under "three same extra"). Each is a base word with
// the register fields Rd (bits 0-4), Rn (5-9) and Rm (16-20) or'ed in;
// the text is the instruction in the Arm manual's syntax, which is what
// the generated WORD's comment shows and what TestEncodings checks
// against GNU as.

type op struct {
	base uint32
	// rm reports whether the instruction has an Rm operand.
	rm bool
	// form formats the operands as the Arm manual writes them, given the
	// register numbers d, n, m.
	form func(d, n, m int) string
}

func f3(td, tn, tm string) func(d, n, m int) string {
	return func(d, n, m int) string {
		return fmt.Sprintf("V%d.%s, V%d.%s, V%d.%s", d, td, n, tn, m, tm)
	}
}

func f2(td, tn string) func(d, n, m int) string {
	return func(d, n, _ int) string { return fmt.Sprintf("V%d.%s, V%d.%s", d, td, n, tn) }
}

var ops = map[string]op{
	// ARMv8.2 dot product: each 32-bit lane of Vd gets the sum of the
	// products of the 4 signed bytes in that lane of Vn and Vm.
	"SDOT": {0x4e809400, true, f3("4S", "16B", "16B")},
	// Signed widening multiplies: bytes 0-7 (or 8-15 for the "2" forms)
	// to 16-bit products, written or accumulated.
	"SMULL":  {0x0e20c000, true, f3("8H", "8B", "8B")},
	"SMULL2": {0x4e20c000, true, f3("8H", "16B", "16B")},
	"SMLAL":  {0x0e208000, true, f3("8H", "8B", "8B")},
	"SMLAL2": {0x4e208000, true, f3("8H", "16B", "16B")},
	// Signed add (and accumulate) long pairwise: adjacent lanes summed
	// into lanes twice as wide.
	"SADDLP.8H": {0x4e202800, false, f2("8H", "16B")},
	"SADDLP.4S": {0x4e602800, false, f2("4S", "8H")},
	"SADALP.8H": {0x4e206800, false, f2("8H", "16B")},
	"SADALP.4S": {0x4e606800, false, f2("4S", "8H")},
	// Sign extension (SSHLL #0) of the low or high half.
	"SXTL.8H":  {0x0f08a400, false, f2("8H", "8B")},
	"SXTL2.8H": {0x4f08a400, false, f2("8H", "16B")},
	"SXTL.4S":  {0x0f10a400, false, f2("4S", "4H")},
	"SXTL2.4S": {0x4f10a400, false, f2("4S", "8H")},
	// Signed saturating narrowing to the low half (clearing the high
	// half) or into the high half (keeping the low).
	"SQXTN.4H":   {0x0e614800, false, f2("4H", "4S")},
	"SQXTN2.8H":  {0x4e614800, false, f2("8H", "4S")},
	"SQXTN.8B":   {0x0e214800, false, f2("8B", "8H")},
	"SQXTN2.16B": {0x4e214800, false, f2("16B", "8H")},
	// Half to single precision, low or high four lanes.
	"FCVTL":  {0x0e217800, false, f2("4S", "4H")},
	"FCVTL2": {0x4e217800, false, f2("4S", "8H")},
	// Shift left long by the element size: a bfloat16 to float32.
	"SHLL": {0x2e613800, false, func(d, n, _ int) string {
		return fmt.Sprintf("V%d.4S, V%d.4H, #16", d, n)
	}},
	"SHLL2": {0x6e613800, false, func(d, n, _ int) string {
		return fmt.Sprintf("V%d.4S, V%d.8H, #16", d, n)
	}},
	// Conversions between int32 and float32 lanes; FCVTNS rounds to
	// nearest with ties to even and saturates.
	"SCVTF":  {0x4e21d800, false, f2("4S", "4S")},
	"FCVTNS": {0x4e21a800, false, f2("4S", "4S")},
	"FABS":   {0x4ea0f800, false, f2("4S", "4S")},
	"FADD":   {0x4e20d400, true, f3("4S", "4S", "4S")},
	"FMUL":   {0x6e20dc00, true, f3("4S", "4S", "4S")},
	"FDIV":   {0x6e20fc00, true, f3("4S", "4S", "4S")},
	"FMAX":   {0x4e20f400, true, f3("4S", "4S", "4S")},
	"FCMGE":  {0x6e20e400, true, f3("4S", "4S", "4S")},
	"FSUB":   {0x4ea0d400, true, f3("4S", "4S", "4S")},
	"FMIN":   {0x4ea0f400, true, f3("4S", "4S", "4S")},
	"FCMGT":  {0x6ea0e400, true, f3("4S", "4S", "4S")},
	"FNEG":   {0x6ea0f800, false, f2("4S", "4S")},
	// Round toward minus infinity, to an integral float.
	"FRINTM": {0x4e219800, false, f2("4S", "4S")},
	// Arithmetic shift right of int32 lanes by one.
	"SSHR.1": {0x4f3f0400, false, func(d, n, _ int) string {
		return fmt.Sprintf("V%d.4S, V%d.4S, #1", d, n)
	}},
	// Vd = Vn AND NOT Vm.
	"BIC": {0x4e601c00, true, f3("16B", "16B", "16B")},
	// Double precision: widening from single, add, and the pairwise sum
	// of the two lanes.
	"FCVTL.2D":  {0x0e617800, false, f2("2D", "2S")},
	"FCVTL2.2D": {0x4e617800, false, f2("2D", "4S")},
	"FADD.2D":   {0x4e60d400, true, f3("2D", "2D", "2D")},
	"FADDP.D": {0x7e70d800, false, func(d, n, _ int) string {
		return fmt.Sprintf("D%d, V%d.2D", d, n)
	}},
	// FADDP Vd = [n0+n1, n2+n3, m0+m1, m2+m3].
	"FADDP": {0x6e20d400, true, f3("4S", "4S", "4S")},
	"MUL":   {0x4ea09c00, true, f3("4S", "4S", "4S")},
	// Scalar results: the largest lane, and the sum of lanes 0 and 1.
	"FMAXV": {0x6e30f800, false, func(d, n, _ int) string { return fmt.Sprintf("S%d, V%d.4S", d, n) }},
	"FADDP.S": {0x7e30d800, false, func(d, n, _ int) string {
		return fmt.Sprintf("S%d, V%d.2S", d, n)
	}},
	// Scalar half to single.
	"FCVT.SH": {0x1ee24000, false, func(d, n, _ int) string { return fmt.Sprintf("S%d, H%d", d, n) }},
}

// encode returns the word and the Arm-syntax text of instruction name
// (a key of ops) on registers d, n, m.
func encode(name string, d, n, m int) (uint32, string) {
	o, ok := ops[name]
	if !ok {
		panic("neongen: no instruction " + name)
	}
	for _, r := range []int{d, n, m} {
		if r < 0 || r > 31 {
			panic(fmt.Sprintf("neongen: %s: register %d", name, r))
		}
	}
	mnemonic := name
	for i := range len(name) {
		if name[i] == '.' {
			mnemonic = name[:i]
			break
		}
	}
	w := o.base | uint32(n)<<5 | uint32(d)
	if o.rm {
		w |= uint32(m) << 16
	} else if m != 0 {
		panic(fmt.Sprintf("neongen: %s takes no third register", name))
	}
	return w, mnemonic + " " + o.form(d, n, m)
}

// encodeElem returns FMUL or FMLA (name) Vd.4S, Vn.4S, Vm.S[idx]: the
// "vector x indexed element" form, with the index in bits H (11) and L
// (21) and the 5-bit Rm in bits 16-20.
func encodeElem(name string, d, n, m, idx int) (uint32, string) {
	var base uint32
	switch name {
	case "FMUL":
		base = 0x4f809000
	case "FMLA":
		base = 0x4f801000
	default:
		panic("neongen: no indexed instruction " + name)
	}
	if idx < 0 || idx > 3 || d < 0 || d > 31 || n < 0 || n > 31 || m < 0 || m > 31 {
		panic("neongen: bad operands for " + name)
	}
	w := base | uint32(idx&1)<<21 | uint32(idx>>1)<<11 | uint32(m)<<16 | uint32(n)<<5 | uint32(d)
	return w, fmt.Sprintf("%s V%d.4S, V%d.4S, V%d.S[%d]", name, d, n, m, idx)
}
