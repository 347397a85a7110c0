package quant

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"
)

// TestNearestInt checks ggml's nearest_int trick: ties go to even, and
// out-of-range, infinite and NaN inputs give some value in [-2^22, 2^22)
// instead of trapping.
func TestNearestInt(t *testing.T) {
	for _, tc := range []struct {
		v    float32
		want int
	}{
		{0, 0}, {0.5, 0}, {1.5, 2}, {2.5, 2}, {-0.5, 0}, {-1.5, -2}, {-2.5, -2},
		{0.49999997, 0}, {3.7, 4}, {-3.7, -4}, {63, 63}, {4194303, 4194303}, {-4194303, -4194303},
	} {
		if got := nearestInt(tc.v); got != tc.want {
			t.Errorf("nearestInt(%v) = %d, want %d", tc.v, got, tc.want)
		}
	}
	for _, v := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), 1e30, -1e30, 5e6} {
		if got := nearestInt(v); got < -1<<22 || got >= 1<<22 {
			t.Errorf("nearestInt(%v) = %d, outside [-2^22, 2^22)", v, got)
		}
	}
}

// TestKQuantExact builds super-blocks that each K type can represent
// exactly (sub-block scales that are whole multiples of a power-of-two
// super-block scale, every code used) and checks that quantizing finds that
// representation: the round trip is exact and the stored super-block scale
// is the expected power of two. The layouts are checked independently by
// TestDequantizeKQuants, so this tests the search and the packing.
func TestKQuantExact(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		typ   Type
		build func(x []float32) // fills one super-block
		d     float32           // the super-block scale it must store
	}{
		{Q4_K, func(x []float32) { exactAffine(r, x, 15) }, 0x1p-6},
		{Q5_K, func(x []float32) { exactAffine(r, x, 31) }, 0x1p-6},
		{Q6_K, func(x []float32) { exactSymmetric(r, x) }, -0x1p-11},
	} {
		t.Run(tc.typ.String(), func(t *testing.T) {
			x := make([]float32, 3*QKK)
			for b := 0; b < len(x); b += QKK {
				tc.build(x[b : b+QKK])
			}
			q := make([]byte, mustRowSize(t, tc.typ, len(x)))
			if err := Quantize(tc.typ, q, x); err != nil {
				t.Fatal(err)
			}
			y := make([]float32, len(x))
			if err := Dequantize(tc.typ, y, q); err != nil {
				t.Fatal(err)
			}
			for i := range x {
				if y[i] != x[i] {
					t.Fatalf("element %d: %v round-trips to %v", i, x[i], y[i])
				}
			}
			ts := tc.typ.TypeSize()
			for b := range 3 {
				off := b * ts // d is the first field of Q4_K and Q5_K, the last of Q6_K
				if tc.typ == Q6_K {
					off += 208
				}
				if d := F16ToF32(le16(q[off:])); d != tc.d {
					t.Errorf("block %d: d = %v, want %v", b, d, tc.d)
				}
			}
		})
	}
}

// exactAffine fills a Q4_K/Q5_K super-block: sub-block j holds k_j·2^-6·l
// for codes l = 0..nmax (each at least once), with k_0 = 63 so that the
// largest sub-block scale is 63·2^-6 and d = 2^-6, and no min.
func exactAffine(r *rand.Rand, x []float32, nmax int) {
	for j := range 8 {
		k := 1 + r.IntN(63)
		if j == 0 {
			k = 63
		}
		for i := range 32 {
			l := i % (nmax + 1)
			x[32*j+i] = float32(k*l) * 0x1p-6
		}
		r.Shuffle(32, func(a, b int) { x[32*j+a], x[32*j+b] = x[32*j+b], x[32*j+a] })
	}
}

// exactSymmetric fills a Q6_K super-block: sub-block j holds k_j·2^-11·l for
// l = -32..31 (-32 always, so it is the element of largest magnitude), with
// k_0 = 128, so the super-block scale is -2^-11 and the 8-bit scales -k_j.
func exactSymmetric(r *rand.Rand, x []float32) {
	for j := range 16 {
		k := 1 + r.IntN(127)
		if j == 0 {
			k = 128
		}
		x[16*j] = float32(-32*k) * 0x1p-11
		for i := 1; i < 16; i++ {
			x[16*j+i] = float32((r.IntN(63)-31)*k) * 0x1p-11
		}
	}
}

// kRows are the rows the error tests quantize: the row widths of the synth
// shapes' matrices (s110M: 768 and 2048; tl1B: 2048 and 5632) filled as
// synth fills them, N(0, 0.02²).
func kRows(r *rand.Rand) [][]float32 {
	var rows [][]float32
	for _, n := range []int{768, 2048, 5632} {
		for range 8 {
			x := randRow(r, n)
			for i := range x {
				x[i] *= 0.02
			}
			rows = append(rows, x)
		}
	}
	return rows
}

// relRMS is the root-mean-square of y-x relative to that of x.
func relRMS(x, y []float32) float64 {
	var e, s float64
	for i := range x {
		d := float64(y[i]) - float64(x[i])
		e += d * d
		s += float64(x[i]) * float64(x[i])
	}
	return math.Sqrt(e / s)
}

func roundTrip(t *testing.T, typ Type, x []float32) (q []byte, y []float32) {
	t.Helper()
	q = make([]byte, mustRowSize(t, typ, len(x)))
	if err := Quantize(typ, q, x); err != nil {
		t.Fatal(err)
	}
	y = make([]float32, len(x))
	if err := Dequantize(typ, y, q); err != nil {
		t.Fatal(err)
	}
	return q, y
}

// TestKQuantError measures the round-trip error on normal rows. The bounds
// sit a little above the worst row measured here (relative RMS error 0.0746
// for Q4_K, 0.0377 for Q5_K, 0.0185 for Q6_K); llama.cpp's reference
// quantizers write the same bytes, so their error is the same. On these
// rows Q8_0 measures 0.0057, Q5_1 0.041, Q5_0 0.047 and Q4_0 0.090, and each
// K type must beat the legacy type of about its size on every row.
// Quantizing a dequantized row again must land close to it: Q4_K
// reproduces it exactly here, Q5_K and Q6_K may pick other scales, but move
// the values by well under their own error (0.0108 and 0.0016 measured).
func TestKQuantError(t *testing.T) {
	rows := kRows(rand.New(rand.NewPCG(3, 4)))
	for _, tc := range []struct {
		typ, legacy  Type // legacy: a type of about the same size it must beat
		rms, requant float64
	}{
		{Q4_K, Q4_0, 0.078, 0.001},
		{Q5_K, Q5_1, 0.040, 0.013},
		{Q6_K, Q5_1, 0.0195, 0.002},
	} {
		t.Run(tc.typ.String(), func(t *testing.T) {
			var worst, worstRequant float64
			for _, x := range rows {
				_, y := roundTrip(t, tc.typ, x)
				e := relRMS(x, y)
				worst = max(worst, e)
				if e > tc.rms {
					t.Errorf("%d-element row: relative RMS error %.4f > %.4f", len(x), e, tc.rms)
				}
				if _, yl := roundTrip(t, tc.legacy, x); e >= relRMS(x, yl) {
					t.Errorf("%d-element row: %s's error %.4f is not below %s's %.4f", len(x), tc.typ, e, tc.legacy, relRMS(x, yl))
				}
				_, y2 := roundTrip(t, tc.typ, y)
				e2 := relRMS(y, y2)
				worstRequant = max(worstRequant, e2)
				if e2 > tc.requant {
					t.Errorf("%d-element row: re-quantizing moved it by %.4f relative RMS > %.4f", len(x), e2, tc.requant)
				}
			}
			t.Logf("%s: worst relative RMS error %.4f, worst re-quantization change %.4f", tc.typ, worst, worstRequant)
		})
	}
}

// TestKQuantEdgeBlocks covers blocks the search treats specially: all
// zero, a zero sub-block inside a non-zero block, all equal, all positive
// (no min), tiny and large (but representable) magnitudes, and a lone
// outlier.
func TestKQuantEdgeBlocks(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	normal := func(scale float32) []float32 {
		x := randRow(r, QKK)
		for i := range x {
			x[i] *= scale
		}
		return x
	}
	cases := map[string][]float32{
		"zero":     make([]float32, QKK),
		"equal":    bytes32(QKK, 0.25),
		"negequal": bytes32(QKK, -3),
		"small":    normal(1e-3),
		"large":    normal(1e3),
	}
	zsub := normal(1)
	clear(zsub[32:64])
	cases["zero sub-block"] = zsub
	pos := normal(1)
	for i := range pos {
		pos[i] = abs32(pos[i]) + 1
	}
	cases["positive"] = pos
	out := normal(0.02)
	out[77] = 1
	cases["outlier"] = out
	for _, typ := range []Type{Q4_K, Q5_K, Q6_K} {
		for name, x := range cases {
			_, y := roundTrip(t, typ, x)
			for i := range x {
				if math.IsNaN(float64(y[i])) || math.IsInf(float64(y[i]), 0) {
					t.Fatalf("%s %s: element %d: %v dequantizes to %v", typ, name, i, x[i], y[i])
				}
			}
			switch name {
			case "zero":
				for i, v := range y {
					if v != 0 {
						t.Errorf("%s zero block: element %d = %v", typ, i, v)
					}
				}
			case "outlier":
				// The outlier must survive (it is why the model needs it);
				// within a fifth of itself is far tighter than losing it.
				if math.Abs(float64(y[77]-1)) > 0.2 {
					t.Errorf("%s: outlier 1 dequantizes to %v", typ, y[77])
				}
			default:
				if e := relRMS(x, y); e > 0.15 {
					t.Errorf("%s %s: relative RMS error %.4f", typ, name, e)
				}
			}
		}
	}
}

func bytes32(n int, v float32) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = v
	}
	return x
}

// TestQuantizeNonFinite pins down what the quantizers promise for input
// they cannot represent (NaN, ±Inf, magnitudes past half precision's range
// once divided into a scale): no panic, every code in range (Dequantize
// accepts anything, so that is the layout's job), and no effect on any
// other block of the row. The values such a block decodes to are
// unspecified; package quantize refuses to write them.
func TestQuantizeNonFinite(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	bad := map[string]func(x []float32){
		"nan":      func(x []float32) { x[5] = nan },
		"all nan":  func(x []float32) { copy(x, bytes32(len(x), nan)) },
		"inf":      func(x []float32) { x[7] = inf },
		"-inf":     func(x []float32) { x[0] = -inf },
		"inf-inf":  func(x []float32) { x[1], x[2] = inf, -inf },
		"huge":     func(x []float32) { x[3] = 3e38 },
		"huge-neg": func(x []float32) { x[3], x[4] = 3e38, -3e38 },
		"max":      func(x []float32) { copy(x, bytes32(len(x), math.MaxFloat32)) },
	}
	for typ := range quantizers {
		bs := typ.BlockSize()
		n := max(bs, QKK)
		for name, spoil := range bad {
			x := randRow(r, 3*n)
			clean := make([]byte, mustRowSize(t, typ, 3*n))
			if err := Quantize(typ, clean, x); err != nil {
				t.Fatal(err)
			}
			w := max(bs, 32)
			spoil(x[n : n+w]) // the first block (or 32 elements) of the middle third
			q := make([]byte, len(clean))
			if err := Quantize(typ, q, x); err != nil {
				t.Fatal(err)
			}
			// Blocks other than the spoiled one are unchanged.
			per := typ.TypeSize()
			from, to := n/bs*per, (n+w)/bs*per
			if !bytes.Equal(q[:from], clean[:from]) || !bytes.Equal(q[to:], clean[to:]) {
				t.Errorf("%s %s: a bad value changed other blocks", typ, name)
			}
			if err := Dequantize(typ, make([]float32, 3*n), q); err != nil {
				t.Errorf("%s %s: %v", typ, name, err)
			}
		}
	}
}

// FuzzQuantize quantizes arbitrary float32 bit patterns with every type:
// it never panics, is deterministic, and touches only dst.
func FuzzQuantize(f *testing.F) {
	f.Add(make([]byte, 4*QKK))
	f.Add(bytes.Repeat([]byte{0, 0, 0xc0, 0x7f}, QKK)) // NaN
	f.Add(bytes.Repeat([]byte{0, 0, 0x80, 0x7f}, 40))  // +Inf
	f.Add(bytes.Repeat([]byte{0xff, 0xff, 0x7f, 0x7f}, QKK))
	f.Add(bytes.Repeat([]byte{1, 0, 0, 0}, QKK)) // subnormal
	f.Fuzz(func(t *testing.T, data []byte) {
		// Three super-blocks: the K quantizers are slow, and blocks are
		// independent, so longer inputs would only slow the fuzzer down.
		data = data[:min(len(data), 3*4*QKK)]
		x := make([]float32, len(data)/4)
		for i := range x {
			x[i] = math.Float32frombits(uint32(data[4*i]) | uint32(data[4*i+1])<<8 | uint32(data[4*i+2])<<16 | uint32(data[4*i+3])<<24)
		}
		for typ := range quantizers {
			bs := typ.BlockSize()
			src := x[:len(x)/bs*bs]
			size, err := typ.RowSize(len(src))
			if err != nil {
				t.Fatal(err)
			}
			a := make([]byte, size+8)
			b := make([]byte, size)
			if err := Quantize(typ, a[:size], src); err != nil {
				t.Fatalf("Quantize(%v): %v", typ, err)
			}
			if err := Quantize(typ, b, src); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a[:size], b) {
				t.Fatalf("Quantize(%v) is not deterministic", typ)
			}
			if !bytes.Equal(a[size:], make([]byte, 8)) {
				t.Fatalf("Quantize(%v) wrote past dst", typ)
			}
			if err := Dequantize(typ, make([]float32, len(src)), b); err != nil {
				t.Fatalf("Dequantize(%v) of Quantize's output: %v", typ, err)
			}
		}
	})
}

func BenchmarkQuantize(b *testing.B) {
	x := randRow(rand.New(rand.NewPCG(1, 1)), 4096)
	for _, typ := range []Type{Q8_0, Q4_0, Q4_K, Q5_K, Q6_K} {
		b.Run(typ.String(), func(b *testing.B) {
			q := make([]byte, mustRowSize(b, typ, len(x)))
			b.SetBytes(int64(4 * len(x)))
			for b.Loop() {
				if err := Quantize(typ, q, x); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
