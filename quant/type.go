// Package quant owns the tensor element types that model files use: their
// GGUF ids, block layouts and sizes, and scalar reference conversions to and
// from float32 that serve as the test oracle for the fast kernels.
package quant

import "fmt"

// Type is a tensor element type, numbered as GGUF numbers them (ggml_type).
type Type uint32

// The GGUF tensor types. Only some have kernels; the rest are known so that a
// file using them gets a clear "unsupported" error instead of "unknown".
const (
	F32     Type = 0
	F16     Type = 1
	Q4_0    Type = 2
	Q4_1    Type = 3
	Q5_0    Type = 6
	Q5_1    Type = 7
	Q8_0    Type = 8
	Q8_1    Type = 9
	Q2_K    Type = 10
	Q3_K    Type = 11
	Q4_K    Type = 12
	Q5_K    Type = 13
	Q6_K    Type = 14
	Q8_K    Type = 15
	IQ2_XXS Type = 16
	IQ2_XS  Type = 17
	IQ3_XXS Type = 18
	IQ1_S   Type = 19
	IQ4_NL  Type = 20
	IQ3_S   Type = 21
	IQ2_S   Type = 22
	IQ4_XS  Type = 23
	I8      Type = 24
	I16     Type = 25
	I32     Type = 26
	I64     Type = 27
	F64     Type = 28
	IQ1_M   Type = 29
	BF16    Type = 30
	TQ1_0   Type = 34
	TQ2_0   Type = 35
)

type layout struct {
	name      string
	blockSize int // elements per block
	typeSize  int // bytes per block
}

var layouts = map[Type]layout{
	F32:     {"F32", 1, 4},
	F16:     {"F16", 1, 2},
	Q4_0:    {"Q4_0", 32, 2 + 16},
	Q4_1:    {"Q4_1", 32, 2 + 2 + 16},
	Q5_0:    {"Q5_0", 32, 2 + 4 + 16},
	Q5_1:    {"Q5_1", 32, 2 + 2 + 4 + 16},
	Q8_0:    {"Q8_0", 32, 2 + 32},
	Q8_1:    {"Q8_1", 32, 4 + 4 + 32},
	Q2_K:    {"Q2_K", 256, 256/16 + 256/4 + 2 + 2},
	Q3_K:    {"Q3_K", 256, 256/8 + 256/4 + 12 + 2},
	Q4_K:    {"Q4_K", 256, 2 + 2 + 12 + 256/2},
	Q5_K:    {"Q5_K", 256, 2 + 2 + 12 + 256/8 + 256/2},
	Q6_K:    {"Q6_K", 256, 256/2 + 256/4 + 256/16 + 2},
	Q8_K:    {"Q8_K", 256, 4 + 256 + 256/16*2},
	IQ2_XXS: {"IQ2_XXS", 256, 2 + 256/8*2},
	IQ2_XS:  {"IQ2_XS", 256, 2 + 256/8*2 + 256/32},
	IQ3_XXS: {"IQ3_XXS", 256, 2 + 256/4 + 256/8},
	IQ1_S:   {"IQ1_S", 256, 2 + 256/8 + 256/16},
	IQ4_NL:  {"IQ4_NL", 32, 2 + 16},
	IQ3_S:   {"IQ3_S", 256, 2 + 256/4 + 256/8 + 256/32 + 4},
	IQ2_S:   {"IQ2_S", 256, 2 + 256/4 + 256/16},
	IQ4_XS:  {"IQ4_XS", 256, 2 + 2 + 256/2 + 256/64},
	I8:      {"I8", 1, 1},
	I16:     {"I16", 1, 2},
	I32:     {"I32", 1, 4},
	I64:     {"I64", 1, 8},
	F64:     {"F64", 1, 8},
	IQ1_M:   {"IQ1_M", 256, 256/8 + 256/16 + 256/32},
	BF16:    {"BF16", 1, 2},
	TQ1_0:   {"TQ1_0", 256, 2 + 4*13},
	TQ2_0:   {"TQ2_0", 256, 2 + 64},
}

// Known reports whether t is a type GGUF defines.
func (t Type) Known() bool { _, ok := layouts[t]; return ok }

// BlockSize is the number of elements in one block of t (1 for plain types).
// It is 0 for an unknown type.
func (t Type) BlockSize() int { return layouts[t].blockSize }

// TypeSize is the number of bytes one block of t takes. It is 0 for an unknown
// type.
func (t Type) TypeSize() int { return layouts[t].typeSize }

// String returns the GGUF name of t, such as "Q8_0".
func (t Type) String() string {
	if l, ok := layouts[t]; ok {
		return l.name
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// RowSize returns the bytes that n elements of t take, or an error if n is
// not a whole number of blocks or t is unknown.
func (t Type) RowSize(n int) (int, error) {
	l, ok := layouts[t]
	if !ok {
		return 0, fmt.Errorf("quant: unknown tensor type %d", uint32(t))
	}
	if n%l.blockSize != 0 {
		return 0, fmt.Errorf("quant: %d elements of %s is not a whole number of %d-element blocks", n, l.name, l.blockSize)
	}
	return n / l.blockSize * l.typeSize, nil
}

// ParseType returns the type named s (case-insensitive, such as "q8_0").
func ParseType(s string) (Type, error) {
	for t, l := range layouts {
		if equalFold(l.name, s) {
			return t, nil
		}
	}
	return 0, fmt.Errorf("quant: unknown type %q", s)
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'a' <= x && x <= 'z' {
			x -= 'a' - 'A'
		}
		if 'a' <= y && y <= 'z' {
			y -= 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
