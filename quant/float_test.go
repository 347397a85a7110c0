package quant

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
)

// f16Value is the value of half bits h computed from the IEEE 754 definition,
// independently of F16ToF32.
func f16Value(h uint16) float64 {
	sign := 1.0
	if h&0x8000 != 0 {
		sign = -1
	}
	e := int(h>>10) & 31
	m := float64(h & 0x3ff)
	switch e {
	case 0:
		return sign * m * math.Pow(2, -24)
	case 31:
		if m == 0 {
			return math.Inf(int(sign))
		}
		return math.NaN()
	}
	return sign * (1 + m/1024) * math.Pow(2, float64(e-15))
}

func TestF16ToF32Exhaustive(t *testing.T) {
	for i := range 1 << 16 {
		h := uint16(i)
		got := F16ToF32(h)
		want := f16Value(h)
		if math.IsNaN(want) {
			b := math.Float32bits(got)
			// A NaN keeps its sign and its payload in the top mantissa bits.
			if !math.IsNaN(float64(got)) || uint16(b>>16)&0x8000 != h&0x8000 || b&0x7fffff != uint32(h&0x3ff)<<13 {
				t.Fatalf("F16ToF32(%#04x) = %#08x, want NaN with same sign and payload", h, b)
			}
			continue
		}
		if float64(got) != want || math.Signbit(float64(got)) != (h&0x8000 != 0) {
			t.Fatalf("F16ToF32(%#04x) = %v, want %v", h, got, want)
		}
		// Every half is a float32, so the round trip is exact.
		if back := F32ToF16(got); back != h {
			t.Fatalf("F32ToF16(F16ToF32(%#04x)) = %#04x", h, back)
		}
	}
}

// refF32ToF16 rounds f to the nearest half by searching the table of all
// finite halves, ties to the even code, as an oracle for F32ToF16.
func refF32ToF16(f float32) uint16 {
	a := math.Abs(float64(f))
	var sign uint16
	if math.Signbit(float64(f)) {
		sign = 0x8000
	}
	if math.IsNaN(a) {
		panic("NaN")
	}
	// 65520 is halfway between the largest half (65504) and the next
	// binade's first value (65536); ties go to the even code, 0x7c00 (inf).
	if a >= 65520 {
		return sign | 0x7c00
	}
	// Codes 0..0x7bff are the non-negative finite halves in increasing order.
	lo := sort.Search(0x7c00, func(h int) bool { return f16Value(uint16(h)) > a }) - 1
	if lo == 0x7bff {
		return sign | uint16(lo)
	}
	dl, dh := a-f16Value(uint16(lo)), f16Value(uint16(lo+1))-a
	if dh < dl || dh == dl && lo&1 == 1 {
		lo++
	}
	return sign | uint16(lo)
}

func TestF32ToF16(t *testing.T) {
	tests := []struct {
		f    float32
		want uint16
	}{
		{0, 0x0000},
		{float32(math.Copysign(0, -1)), 0x8000},
		{1, 0x3c00},
		{-2, 0xc000},
		{0.1, 0x2e66},
		{1.0 / 3, 0x3555},
		{65504, 0x7bff},
		{65519.99, 0x7bff},
		{65520, 0x7c00}, // tie rounds to even, which is infinity
		{1e10, 0x7c00},
		{float32(math.Inf(-1)), 0xfc00},
		{0x1p-14, 0x0400},             // smallest normal
		{0x1p-24, 0x0001},             // smallest subnormal
		{0x1p-25, 0x0000},             // tie between 0 and the smallest subnormal: even
		{0x1.000002p-25, 0x0001},      // just above the tie
		{0x3p-25, 0x0002},             // tie between 1 and 2 (×2^-24): even
		{0x1.ffcp-15, 0x0400},         // rounds up from the largest subnormal to the smallest normal
		{1 + 0x1p-11, 0x3c00},         // tie: even
		{1 + 0x3p-11, 0x3c02},         // tie: even
		{float32(math.NaN()), 0x7e00}, // quiet NaN
	}
	for _, tc := range tests {
		if got := F32ToF16(tc.f); got != tc.want {
			t.Errorf("F32ToF16(%v) = %#04x, want %#04x", tc.f, got, tc.want)
		}
	}
	// Random bit patterns, and random values in the ranges models use.
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 200000 {
		var f float32
		if i%2 == 0 {
			f = math.Float32frombits(r.Uint32())
		} else {
			f = float32(r.NormFloat64() * math.Pow(2, float64(r.IntN(40)-30)))
		}
		if f != f {
			continue
		}
		if got, want := F32ToF16(f), refF32ToF16(f); got != want {
			t.Fatalf("F32ToF16(%v [%#08x]) = %#04x, want %#04x", f, math.Float32bits(f), got, want)
		}
	}
}

func TestBF16(t *testing.T) {
	tests := []struct {
		f    float32
		want uint16
	}{
		{1, 0x3f80},
		{-1, 0xbf80},
		{1 + 0x1p-8, 0x3f80},   // tie: even
		{1 + 0x3p-8, 0x3f82},   // tie: even
		{1 + 0x1p-9, 0x3f80},   // below the tie
		{1 + 0x1.8p-8, 0x3f81}, // above the tie
		{math.MaxFloat32, 0x7f80},
		{float32(math.Inf(1)), 0x7f80},
		{math.Float32frombits(0x7fc00001), 0x7fc0},
		{math.Float32frombits(0x7f800001), 0x7fc0}, // signaling NaN made quiet
		{math.Float32frombits(0xff812345), 0xffc1},
	}
	for _, tc := range tests {
		if got := F32ToBF16(tc.f); got != tc.want {
			t.Errorf("F32ToBF16(%v [%#08x]) = %#04x, want %#04x", tc.f, math.Float32bits(tc.f), got, tc.want)
		}
	}
	for i := range 1 << 16 {
		h := uint16(i)
		f := BF16ToF32(h)
		if math.Float32bits(f) != uint32(h)<<16 {
			t.Fatalf("BF16ToF32(%#04x) = %#08x", h, math.Float32bits(f))
		}
		if f != f {
			continue
		}
		if back := F32ToBF16(f); back != h {
			t.Fatalf("F32ToBF16(BF16ToF32(%#04x)) = %#04x", h, back)
		}
	}
	// Against a float64 oracle: the result is one of the two neighbours and
	// the nearer one, ties to even.
	r := rand.New(rand.NewPCG(3, 4))
	for range 100000 {
		u := r.Uint32()
		f := math.Float32frombits(u)
		if f != f || math.IsInf(float64(f), 0) {
			continue
		}
		got := F32ToBF16(f)
		lo := uint16(u >> 16)
		d := math.Abs(float64(f)) - math.Abs(float64(BF16ToF32(lo)))
		next := math.Abs(float64(BF16ToF32(lo + 1)))
		if math.IsInf(next, 0) {
			next = 0x1p128 // IEEE rounding treats infinity as the next binade's first value
		}
		dh := next - math.Abs(float64(f))
		want := lo
		if dh < d || dh == d && lo&1 == 1 {
			want = lo + 1
		}
		if got != want {
			t.Fatalf("F32ToBF16(%#08x) = %#04x, want %#04x", u, got, want)
		}
	}
}
