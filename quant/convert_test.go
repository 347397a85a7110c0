package quant

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

func mustRowSize(t testing.TB, typ Type, n int) int {
	t.Helper()
	s, err := typ.RowSize(n)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestQ8_0Known checks two blocks computed by hand from ggml's
// quantize_row_q8_0_ref: d = amax/127, q = roundf(x/d), half away from zero.
func TestQ8_0Known(t *testing.T) {
	src := make([]float32, 64)
	// Block 0: amax 127, so d = 1 and q = roundf(x).
	copy(src, []float32{127, -127, 0, 1, 2.5, -2.5, 1.49, -0.5, 0.5, 100.7})
	// Block 1: amax 63.5, so d = 0.5 and q = roundf(2x).
	copy(src[32:], []float32{63.5, 0.25, -0.75, -63.5, 10})
	want := make([]byte, 68)
	copy(want, []byte{0x00, 0x3c, 0x7f, 0x81, 0, 1, 3, 0xfd, 1, 0xff, 1, 101})
	copy(want[34:], []byte{0x00, 0x38, 0x7f, 1, 0xfe, 0x81, 20})
	got := make([]byte, 68)
	if err := Quantize(Q8_0, got, src); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("Quantize(Q8_0) =\n%x\nwant\n%x", got, want)
	}
	dq := make([]float32, 64)
	if err := Dequantize(Q8_0, dq, got); err != nil {
		t.Fatal(err)
	}
	wantDQ := map[int]float32{0: 127, 1: -127, 3: 1, 4: 3, 5: -3, 6: 1, 7: -1, 8: 1, 9: 101, 32: 63.5, 33: 0.5, 34: -1, 35: -63.5, 36: 10}
	for i, v := range dq {
		if v != wantDQ[i] {
			t.Errorf("Dequantize(Q8_0)[%d] = %v, want %v", i, v, wantDQ[i])
		}
	}
}

// TestQ4_0Known checks two blocks computed by hand from ggml's
// quantize_row_q4_0_ref: d = max/-8 where max is the element of largest
// magnitude (with its sign), code = MIN(15, trunc(x/d + 8.5)), and element j
// is the low nibble of byte j, element j+16 the high nibble.
func TestQ4_0Known(t *testing.T) {
	src := make([]float32, 64)
	// Block 0: max -8, so d = 1 and code = trunc(x + 8.5).
	copy(src, []float32{-8, 7, 7.9, 0, -0.5, 0.49, 0.5, -3.2})
	src[16] = 1   // code 9, high nibble of byte 0
	src[17] = -1  // code 7
	src[31] = 3.5 // code 12 (trunc 12.0)
	// Block 1: max +4, so d = -0.5 and code = trunc(-2x + 8.5); the
	// positive maximum maps to code 0 and -4 can only reach code 15 (-3.5).
	copy(src[32:], []float32{4, -4, 1})
	wantCodes := [64]byte{0, 15, 15, 8, 8, 8, 9, 5}
	for j := 8; j < 32; j++ {
		wantCodes[j] = 8
	}
	wantCodes[16], wantCodes[17], wantCodes[31] = 9, 7, 12
	copy(wantCodes[32:], []byte{0, 15, 6})
	for j := 35; j < 64; j++ {
		wantCodes[j] = 8
	}
	want := make([]byte, 36)
	copy(want[0:2], []byte{0x00, 0x3c})   // 1.0
	copy(want[18:20], []byte{0x00, 0xb8}) // -0.5
	for b := range 2 {
		for j := range 16 {
			want[18*b+2+j] = wantCodes[32*b+j] | wantCodes[32*b+j+16]<<4
		}
	}
	got := make([]byte, 36)
	if err := Quantize(Q4_0, got, src); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("Quantize(Q4_0) =\n%x\nwant\n%x", got, want)
	}
	dq := make([]float32, 64)
	if err := Dequantize(Q4_0, dq, got); err != nil {
		t.Fatal(err)
	}
	for i, v := range dq {
		d := float32(1)
		if i >= 32 {
			d = -0.5
		}
		if w := float32(int(wantCodes[i])-8) * d; v != w {
			t.Errorf("Dequantize(Q4_0)[%d] = %v, want %v", i, v, w)
		}
	}
}

func randRow(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

func TestRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	const n = 32 * 40
	for _, typ := range []Type{F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q5_1} {
		t.Run(typ.String(), func(t *testing.T) {
			for trial := range 20 {
				x := randRow(r, n)
				if trial%4 == 1 {
					for i := range x {
						x[i] *= 1e-3
					}
				}
				if trial == 2 {
					clear(x[32:64]) // an all-zero block gets d = 0
				}
				q := make([]byte, mustRowSize(t, typ, n))
				if err := Quantize(typ, q, x); err != nil {
					t.Fatal(err)
				}
				y := make([]float32, n)
				if err := Dequantize(typ, y, q); err != nil {
					t.Fatal(err)
				}
				for b := 0; b < n; b += 32 {
					var amax float64
					lo, hi := math.Inf(1), math.Inf(-1)
					for _, v := range x[b : b+32] {
						amax = max(amax, math.Abs(float64(v)))
						lo, hi = min(lo, float64(v)), max(hi, float64(v))
					}
					for i := b; i < b+32; i++ {
						var tol float64
						// halfErr bounds the error of storing v as a half:
						// half an ulp of an 11-bit significand, or half the
						// subnormal spacing 2^-24.
						halfErr := func(v float64) float64 { return max(math.Abs(v)*0x1p-11, 0x1p-25) }
						switch typ {
						case F16:
							tol = halfErr(float64(x[i]))
						case BF16:
							tol = math.Abs(float64(x[i])) * 0x1p-8 // half an ulp, 8-bit significand
						case Q8_0:
							// Half a step (d/2, d = amax/127), plus the error of
							// storing d as a half (|q| ≤ 127 times halfErr(d)),
							// plus float32 rounding.
							d := amax / 127
							tol = d/2 + 127*halfErr(d) + 1e-6*amax
						case Q4_0:
							// Half a step (|d| = amax/8), except at the clamped
							// end where -max maps to 7|d| (a full step), plus
							// the half-precision error of d.
							d := amax / 8
							tol = d + 8*halfErr(d) + 1e-6*amax
						case Q5_0:
							// As Q4_0 with 16 steps each side.
							d := amax / 16
							tol = d + 16*halfErr(d) + 1e-6*amax
						case Q5_1:
							// Half a step of d = (max-min)/31, plus the
							// half-precision errors of the min and of d.
							d := (hi - lo) / 31
							tol = d/2 + halfErr(lo) + 31*halfErr(d) + 1e-6*amax
						}
						if err := math.Abs(float64(y[i] - x[i])); err > tol {
							t.Fatalf("trial %d: element %d: %v round-trips to %v, error %g > %g", trial, i, x[i], y[i], err, tol)
						}
					}
				}
				// Quantizing the dequantized row again reproduces the bytes
				// for the float types (they are exact on their own values).
				if typ == F32 || typ == F16 || typ == BF16 {
					q2 := make([]byte, len(q))
					if err := Quantize(typ, q2, y); err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(q, q2) {
						t.Fatalf("re-quantizing changed the bytes")
					}
				}
			}
		})
	}
}

// Element-wise formulations of the K-quant layouts, written from the
// ggml-common.h block descriptions independently of the loops in block.go.

func kScaleMin(scales []byte, s int) (sc, m int) {
	if s < 4 {
		return int(scales[s] & 63), int(scales[s+4] & 63)
	}
	lo := scales[s+4]
	return int(lo&15) | int(scales[s-4]>>6)<<4, int(lo>>4) | int(scales[s]>>6)<<4
}

func elemQ4_K(blk []byte, e int) float32 {
	d, dmin := F16ToF32(le16(blk)), F16ToF32(le16(blk[2:]))
	s := e / 32 // sub-block, with its own 6-bit scale and min
	sc, m := kScaleMin(blk[4:16], s)
	b := blk[16+32*(s/2)+e%32] // sub-blocks 2c and 2c+1 share 32 bytes
	nib := b & 15
	if s%2 == 1 {
		nib = b >> 4
	}
	return float32(d*float32(sc))*float32(nib) - dmin*float32(m)
}

func elemQ5_K(blk []byte, e int) float32 {
	d, dmin := F16ToF32(le16(blk)), F16ToF32(le16(blk[2:]))
	s := e / 32
	sc, m := kScaleMin(blk[4:16], s)
	b := blk[48+32*(s/2)+e%32]
	q := int(b & 15)
	if s%2 == 1 {
		q = int(b >> 4)
	}
	q |= int(blk[16+e%32]>>s&1) << 4 // bit s of qh[e%32] is the fifth bit
	return float32(d*float32(sc))*float32(q) - dmin*float32(m)
}

func elemQ6_K(blk []byte, e int) float32 {
	d := F16ToF32(le16(blk[208:]))
	half, r := e/128, e%128
	g, l := r/32, r%32 // quarter of the half, and position in it
	b := blk[64*half+l+32*(g%2)]
	q := int(b & 15)
	if g >= 2 {
		q = int(b >> 4)
	}
	q |= int(blk[128+32*half+l]>>(2*g)&3) << 4
	sc := int8(blk[192+8*half+l/16+2*g])
	return float32(d*float32(sc)) * float32(q-32)
}

func TestDequantizeKQuants(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	tests := []struct {
		typ  Type
		elem func([]byte, int) float32
	}{
		{Q4_K, elemQ4_K},
		{Q5_K, elemQ5_K},
		{Q6_K, elemQ6_K},
	}
	for _, tc := range tests {
		t.Run(tc.typ.String(), func(t *testing.T) {
			const nb = 3
			ts := tc.typ.TypeSize()
			src := make([]byte, nb*ts)
			for i := range src {
				src[i] = byte(r.Uint32())
			}
			// Give the scales sane half values so the results are finite.
			for b := range nb {
				blk := src[b*ts : (b+1)*ts]
				if tc.typ == Q6_K {
					put16(blk[208:], F32ToF16(float32(r.NormFloat64())*1e-2))
				} else {
					put16(blk, F32ToF16(float32(r.NormFloat64())*1e-2))
					put16(blk[2:], F32ToF16(float32(r.NormFloat64())*1e-2))
				}
			}
			got := make([]float32, nb*QKK)
			if err := Dequantize(tc.typ, got, src); err != nil {
				t.Fatal(err)
			}
			for i, v := range got {
				if w := tc.elem(src[i/QKK*ts:(i/QKK+1)*ts], i%QKK); v != w {
					t.Fatalf("Dequantize(%v)[%d] = %v, want %v", tc.typ, i, v, w)
				}
			}
		})
	}
}

func TestOtherLegacyQuants(t *testing.T) {
	// Q4_1, Q5_0, Q5_1: one hand-built block each.
	t.Run("Q4_1", func(t *testing.T) {
		blk := make([]byte, 20)
		put16(blk, F32ToF16(0.5))
		put16(blk[2:], F32ToF16(-1))
		blk[4] = 0x3a // element 0: 10, element 16: 3
		got := make([]float32, 32)
		if err := Dequantize(Q4_1, got, blk); err != nil {
			t.Fatal(err)
		}
		if got[0] != 4 || got[16] != 0.5 || got[1] != -1 {
			t.Errorf("Dequantize(Q4_1) = %v", got)
		}
	})
	t.Run("Q5_0", func(t *testing.T) {
		blk := make([]byte, 22)
		put16(blk, F32ToF16(2))
		blk[2] = 0x01 // qh bit 0: fifth bit of element 0
		blk[5] = 0x80 // qh bit 31: fifth bit of element 31
		blk[6] = 0x3a // element 0: 16|10 - 16 = 10, element 16: 3 - 16
		blk[21] = 0xf0
		got := make([]float32, 32)
		if err := Dequantize(Q5_0, got, blk); err != nil {
			t.Fatal(err)
		}
		if got[0] != 20 || got[16] != -26 || got[31] != 30 || got[15] != -32 {
			t.Errorf("Dequantize(Q5_0) = %v", got)
		}
	})
	t.Run("Q5_1", func(t *testing.T) {
		blk := make([]byte, 24)
		put16(blk, F32ToF16(1))
		put16(blk[2:], F32ToF16(0.5))
		blk[7] = 0x80 // element 31 gets 16
		blk[23] = 0x20
		got := make([]float32, 32)
		if err := Dequantize(Q5_1, got, blk); err != nil {
			t.Fatal(err)
		}
		if got[31] != 18.5 || got[15] != 0.5 {
			t.Errorf("Dequantize(Q5_1) = %v", got)
		}
	})
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name    string
		typ     Type
		n, size int
		want    error
	}{
		{"unsupported", Q2_K, 256, 84, ErrUnsupported},
		{"unknown", Type(99), 1, 1, ErrUnsupported},
		{"partial block", Q8_0, 33, 68, ErrSize},
		{"short src", Q8_0, 32, 33, ErrSize},
		{"long src", Q8_0, 32, 35, ErrSize},
		{"f16 odd bytes", F16, 3, 5, ErrSize},
		{"empty ok", Q4_0, 0, 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst := make([]float32, tc.n)
			for i := range dst {
				dst[i] = 42
			}
			err := Dequantize(tc.typ, dst, make([]byte, tc.size))
			if !errors.Is(err, tc.want) {
				t.Errorf("Dequantize(%v, %d, %d bytes) = %v, want %v", tc.typ, tc.n, tc.size, err, tc.want)
			}
			if err != nil && dst[0] != 42 {
				t.Errorf("Dequantize wrote to dst on error")
			}
			if CanQuantize(tc.typ) || tc.want == ErrUnsupported {
				if err := Quantize(tc.typ, make([]byte, tc.size), dst); !errors.Is(err, tc.want) {
					t.Errorf("Quantize(%v, %d bytes, %d) = %v, want %v", tc.typ, tc.size, tc.n, err, tc.want)
				}
			}
		})
	}
}

// FuzzDequantize feeds arbitrary bytes to every type: whatever the type and
// sizes, Dequantize returns an error or fills dst, and never panics.
func FuzzDequantize(f *testing.F) {
	f.Add(uint8(Q8_0), 32, make([]byte, 34))
	f.Add(uint8(Q4_0), 64, bytes.Repeat([]byte{0xff}, 36))
	f.Add(uint8(Q6_K), 256, bytes.Repeat([]byte{0x7f}, 210))
	f.Add(uint8(Q4_K), 256, bytes.Repeat([]byte{0x80}, 144))
	f.Add(uint8(Q5_K), 256, bytes.Repeat([]byte{0x81}, 176))
	f.Add(uint8(F16), 3, []byte{0, 0x7c, 1, 0x7c, 0, 0xfc})
	f.Add(uint8(BF16), 1, []byte{1, 2})
	f.Add(uint8(F32), -1, []byte{})
	f.Fuzz(func(t *testing.T, typ uint8, n int, data []byte) {
		tp := Type(typ)
		// As given (mostly wrong sizes), bounded so the fuzzer can't ask
		// for huge allocations.
		if n >= 0 && n <= 1<<16 {
			err := Dequantize(tp, make([]float32, n), data)
			if err == nil && !CanDequantize(tp) {
				t.Fatalf("Dequantize(%v) succeeded on an unsupported type", tp)
			}
		}
		// As many whole blocks as data holds, so the decoders do run.
		if bs, ts := tp.BlockSize(), tp.TypeSize(); bs > 0 {
			nb := len(data) / ts
			dst := make([]float32, nb*bs)
			err := Dequantize(tp, dst, data[:nb*ts])
			if err != nil && CanDequantize(tp) {
				t.Fatalf("Dequantize(%v, %d blocks) = %v", tp, nb, err)
			}
		}
	})
}
