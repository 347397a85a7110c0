package kernels

import (
	"encoding/binary"
	"math"
	"sync"
	"unsafe"

	"github.com/spigot-llm/spigot/quant"
)

// littleEndian reports whether float32s in memory have GGUF's byte order.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// This file holds the portable Go implementations. They are always built:
// they are the fallback where no assembly exists (or under -tags noasm), and
// kerneltest runs them beside the assembly so both stay correct. None of
// them allocates.
//
// Speed notes: loops are unrolled with several independent accumulators (the
// Go compiler neither vectorizes nor reassociates float adds, so one
// accumulator serializes on add latency: 8x slower for Dot), and inputs are
// resliced or converted to array pointers up front so the loop bodies index
// with constants and carry no bounds checks, only one slice check per step
// (see go build -gcflags=-d=ssa/check_bce).
// Small tables turn the int8/nibble to float conversions into loads, which
// measured 1.5x faster than converting; half floats use a 65536-entry table
// (256 KiB, built on first use), 3x faster than converting bits, since the
// weights of a layer use few distinct exponents and so few cache lines.

// i8ToF32[b] is float32(int8(b)).
var i8ToF32 = func() (t [256]float32) {
	for i := range t {
		t[i] = float32(int8(i))
	}
	return t
}()

// nibblesToF32[b] is the pair of Q4_0 values of byte b before scaling:
// low nibble - 8, high nibble - 8.
var nibblesToF32 = func() (t [256][2]float32) {
	for i := range t {
		t[i] = [2]float32{float32(i&15) - 8, float32(i>>4) - 8}
	}
	return t
}()

var (
	f16Once  sync.Once
	f16Table *[1 << 16]float32 // f16Table[h] is quant.F16ToF32(h)
)

func f16ToF32Table() *[1 << 16]float32 {
	f16Once.Do(func() {
		t := new([1 << 16]float32)
		for i := range t {
			t[i] = quant.F16ToF32(uint16(i))
		}
		f16Table = t
	})
	return f16Table
}

// dotGeneric is
//
//	for i := range a { sum += a[i] * b[i] }
//
// with len(b) == len(a), summed in eight float32 accumulators.
func dotGeneric(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3, s4, s5, s6, s7 float32
	for len(a) >= 8 {
		x := (*[8]float32)(a)
		y := (*[8]float32)(b)
		s0 += x[0] * y[0]
		s1 += x[1] * y[1]
		s2 += x[2] * y[2]
		s3 += x[3] * y[3]
		s4 += x[4] * y[4]
		s5 += x[5] * y[5]
		s6 += x[6] * y[6]
		s7 += x[7] * y[7]
		a, b = a[8:], b[8:]
	}
	for i, v := range a {
		s0 += v * b[i]
	}
	return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
}

// axpyGeneric is
//
//	for i, v := range x { y[i] += alpha * v }
//
// with len(y) == len(x).
func axpyGeneric(alpha float32, x, y []float32) {
	y = y[:len(x)]
	for len(x) >= 4 {
		a := (*[4]float32)(x)
		b := (*[4]float32)(y)
		b[0] += alpha * a[0]
		b[1] += alpha * a[1]
		b[2] += alpha * a[2]
		b[3] += alpha * a[3]
		x, y = x[4:], y[4:]
	}
	for i, v := range x {
		y[i] += alpha * v
	}
}

// dotF32Generic is dotGeneric with a as little-endian float32 bytes:
//
//	for i := range x { sum += float32frombits(le32(row[4*i:])) * x[i] }
func dotF32Generic(row []byte, x []float32) float32 {
	row = row[:4*len(x)]
	var s0, s1, s2, s3, s4, s5, s6, s7 float32
	for len(x) >= 8 {
		r := (*[32]byte)(row)
		y := (*[8]float32)(x)
		s0 += math.Float32frombits(binary.LittleEndian.Uint32(r[0:])) * y[0]
		s1 += math.Float32frombits(binary.LittleEndian.Uint32(r[4:])) * y[1]
		s2 += math.Float32frombits(binary.LittleEndian.Uint32(r[8:])) * y[2]
		s3 += math.Float32frombits(binary.LittleEndian.Uint32(r[12:])) * y[3]
		s4 += math.Float32frombits(binary.LittleEndian.Uint32(r[16:])) * y[4]
		s5 += math.Float32frombits(binary.LittleEndian.Uint32(r[20:])) * y[5]
		s6 += math.Float32frombits(binary.LittleEndian.Uint32(r[24:])) * y[6]
		s7 += math.Float32frombits(binary.LittleEndian.Uint32(r[28:])) * y[7]
		row, x = row[32:], x[8:]
	}
	for i, v := range x {
		s0 += math.Float32frombits(binary.LittleEndian.Uint32(row[4*i:])) * v
	}
	return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
}

// dotF16Generic is
//
//	for i := range x { sum += quant.F16ToF32(le16(row[2*i:])) * x[i] }
func dotF16Generic(row []byte, x []float32) float32 {
	row = row[:2*len(x)]
	t := f16ToF32Table()
	var s0, s1, s2, s3 float32
	for len(x) >= 4 {
		r := (*[8]byte)(row)
		y := (*[4]float32)(x)
		s0 += t[uint16(r[0])|uint16(r[1])<<8] * y[0]
		s1 += t[uint16(r[2])|uint16(r[3])<<8] * y[1]
		s2 += t[uint16(r[4])|uint16(r[5])<<8] * y[2]
		s3 += t[uint16(r[6])|uint16(r[7])<<8] * y[3]
		row, x = row[8:], x[4:]
	}
	for i, v := range x {
		s0 += t[binary.LittleEndian.Uint16(row[2*i:])] * v
	}
	return (s0 + s1) + (s2 + s3)
}

// dotBF16Generic is
//
//	for i := range x { sum += quant.BF16ToF32(le16(row[2*i:])) * x[i] }
func dotBF16Generic(row []byte, x []float32) float32 {
	row = row[:2*len(x)]
	var s0, s1, s2, s3, s4, s5, s6, s7 float32
	for len(x) >= 8 {
		r := (*[16]byte)(row)
		y := (*[8]float32)(x)
		s0 += math.Float32frombits(uint32(r[0])<<16|uint32(r[1])<<24) * y[0]
		s1 += math.Float32frombits(uint32(r[2])<<16|uint32(r[3])<<24) * y[1]
		s2 += math.Float32frombits(uint32(r[4])<<16|uint32(r[5])<<24) * y[2]
		s3 += math.Float32frombits(uint32(r[6])<<16|uint32(r[7])<<24) * y[3]
		s4 += math.Float32frombits(uint32(r[8])<<16|uint32(r[9])<<24) * y[4]
		s5 += math.Float32frombits(uint32(r[10])<<16|uint32(r[11])<<24) * y[5]
		s6 += math.Float32frombits(uint32(r[12])<<16|uint32(r[13])<<24) * y[6]
		s7 += math.Float32frombits(uint32(r[14])<<16|uint32(r[15])<<24) * y[7]
		row, x = row[16:], x[8:]
	}
	for i, v := range x {
		s0 += quant.BF16ToF32(binary.LittleEndian.Uint16(row[2*i:])) * v
	}
	return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
}

// dotQ8_0Generic is, for each 34-byte block b of row and its 32 elements of x,
//
//	for j := range 32 { s += float32(int8(b[2+j])) * x[j] }
//	sum += quant.F16ToF32(le16(b)) * s
func dotQ8_0Generic(row []byte, x []float32) float32 {
	nb := len(x) / quant.QK8_0
	row = row[:nb*34]
	x = x[:nb*quant.QK8_0]
	t := &i8ToF32
	var sum float32
	for len(x) >= quant.QK8_0 {
		b := (*[34]byte)(row)
		y := (*[32]float32)(x)
		var s0, s1, s2, s3 float32
		for j := 0; j < 32; j += 8 {
			q := (*[8]byte)(b[2+j:])
			v := (*[8]float32)(y[j:])
			s0 += t[q[0]] * v[0]
			s1 += t[q[1]] * v[1]
			s2 += t[q[2]] * v[2]
			s3 += t[q[3]] * v[3]
			s0 += t[q[4]] * v[4]
			s1 += t[q[5]] * v[5]
			s2 += t[q[6]] * v[6]
			s3 += t[q[7]] * v[7]
		}
		sum += quant.F16ToF32(uint16(b[0])|uint16(b[1])<<8) * ((s0 + s1) + (s2 + s3))
		row, x = row[34:], x[32:]
	}
	return sum
}

// dotQ4_0Generic is, for each 18-byte block b of row and its 32 elements of x,
//
//	for j := range 16 {
//		s += float32(int(b[2+j]&15)-8)*x[j] + float32(int(b[2+j]>>4)-8)*x[j+16]
//	}
//	sum += quant.F16ToF32(le16(b)) * s
func dotQ4_0Generic(row []byte, x []float32) float32 {
	nb := len(x) / quant.QK4_0
	row = row[:nb*18]
	x = x[:nb*quant.QK4_0]
	t := &nibblesToF32
	var sum float32
	for len(x) >= quant.QK4_0 {
		b := (*[18]byte)(row)
		lo := (*[16]float32)(x)
		hi := (*[16]float32)(x[16:])
		var s0, s1, s2, s3 float32
		for j := 0; j < 16; j += 4 {
			q := (*[4]byte)(b[2+j:])
			l := (*[4]float32)(lo[j:])
			h := (*[4]float32)(hi[j:])
			p0, p1, p2, p3 := &t[q[0]], &t[q[1]], &t[q[2]], &t[q[3]]
			s0 += p0[0] * l[0]
			s1 += p0[1] * h[0]
			s2 += p1[0] * l[1]
			s3 += p1[1] * h[1]
			s0 += p2[0] * l[2]
			s1 += p2[1] * h[2]
			s2 += p3[0] * l[3]
			s3 += p3[1] * h[3]
		}
		sum += quant.F16ToF32(uint16(b[0])|uint16(b[1])<<8) * ((s0 + s1) + (s2 + s3))
		row, x = row[18:], x[32:]
	}
	return sum
}

// dequantizeGeneric decodes one row of a type with a fast path (F32, F16,
// BF16, Q8_0, Q4_0); it reports false for other types. The values are
// exactly quant.Dequantize's.
func dequantizeGeneric(t quant.Type, dst []float32, row []byte) bool {
	switch t {
	case quant.F32:
		row = row[:4*len(dst)]
		if littleEndian && len(dst) > 0 {
			// A plain memmove into dst's bytes (a byte view is always
			// aligned, so this is checkptr-safe).
			copy(unsafe.Slice((*byte)(unsafe.Pointer(&dst[0])), 4*len(dst)), row)
			break
		}
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(row[4*i:]))
		}
	case quant.F16:
		row = row[:2*len(dst)]
		t := f16ToF32Table()
		for i := range dst {
			dst[i] = t[binary.LittleEndian.Uint16(row[2*i:])]
		}
	case quant.BF16:
		row = row[:2*len(dst)]
		for i := range dst {
			dst[i] = quant.BF16ToF32(binary.LittleEndian.Uint16(row[2*i:]))
		}
	case quant.Q8_0:
		nb := len(dst) / 32
		row = row[:nb*34]
		for len(dst) >= 32 {
			b := (*[34]byte)(row)
			y := (*[32]float32)(dst)
			d := quant.F16ToF32(uint16(b[0]) | uint16(b[1])<<8)
			for j := range y {
				y[j] = i8ToF32[b[2+j]] * d
			}
			row, dst = row[34:], dst[32:]
		}
	case quant.Q4_0:
		nb := len(dst) / 32
		row = row[:nb*18]
		for len(dst) >= 32 {
			b := (*[18]byte)(row)
			y := (*[32]float32)(dst)
			d := quant.F16ToF32(uint16(b[0]) | uint16(b[1])<<8)
			for j := range 16 {
				p := &nibblesToF32[b[2+j]]
				y[j] = p[0] * d
				y[j+16] = p[1] * d
			}
			row, dst = row[18:], dst[32:]
		}
	default:
		return false
	}
	return true
}

// The K-quant types store 256 elements per super-block in 8 sub-blocks of
// 32 (Q4_K, Q5_K: a 6-bit scale and min each) or 16 groups of 16 (Q6_K: an
// int8 scale each); quant/block.go has the layouts.

// kScaleMin unpacks the 6-bit scales and mins of the 8 sub-blocks of a
// Q4_K or Q5_K super-block from its 12 scale bytes (ggml's
// get_scale_min_k4).
func kScaleMin(q *[12]byte) (sc, m [8]uint8) {
	for j := range 4 {
		sc[j] = q[j] & 63
		m[j] = q[j+4] & 63
		sc[j+4] = q[j+8]&15 | q[j]>>6<<4
		m[j+4] = q[j+8]>>4 | q[j+4]>>6<<4
	}
	return sc, m
}

// kQuants45 sets q to the 256 unsigned quants of a Q4_K (five false) or
// Q5_K super-block, in element order: sub-block j's element l is nibble
// j%2 of qs[32(j/2)+l], plus 16 times bit j of qh[l] for Q5_K.
func kQuants45(q *[quant.QKK]uint8, blk []byte, five bool) {
	qs := (*[128]byte)(blk[16:])
	if five {
		qs = (*[128]byte)(blk[48:])
	}
	for c := range 4 {
		src := (*[32]byte)(qs[32*c:])
		lo := (*[32]uint8)(q[64*c:])
		hi := (*[32]uint8)(q[64*c+32:])
		for l, b := range src {
			lo[l] = b & 15
			hi[l] = b >> 4
		}
	}
	if five {
		qh := (*[32]byte)(blk[16:])
		for j := range 8 {
			sub := (*[32]uint8)(q[32*j:])
			for l, h := range qh {
				sub[l] |= (h >> j & 1) << 4
			}
		}
	}
}

// kQuants6 sets q to the 256 unsigned quants (0-63, before the -32) of a
// Q6_K super-block, in element order; element e has scale scales[e/16].
func kQuants6(q *[quant.QKK]uint8, blk *[210]byte) {
	for n := range 2 {
		ql := (*[64]byte)(blk[64*n:])
		qh := (*[32]byte)(blk[128+32*n:])
		y := (*[128]uint8)(q[128*n:])
		for l, h := range qh {
			y[l] = ql[l]&15 | (h&3)<<4
			y[l+32] = ql[l+32]&15 | (h>>2&3)<<4
			y[l+64] = ql[l]>>4 | (h>>4&3)<<4
			y[l+96] = ql[l+32]>>4 | (h>>6)<<4
		}
	}
}

// dequantQ4_KGeneric and dequantQ5_KGeneric decode rows exactly as
// quant.Dequantize does: element = float32(d·sc·q) - dmin·m, the products
// d·sc and dmin·m rounded to float32 first.
func dequantQ4_KGeneric(dst []float32, row []byte) { dequantK45(dst, row, false) }
func dequantQ5_KGeneric(dst []float32, row []byte) { dequantK45(dst, row, true) }

func dequantK45(dst []float32, row []byte, five bool) {
	bs := 144
	if five {
		bs = 176
	}
	nb := len(dst) / quant.QKK
	row = row[:nb*bs]
	var q [quant.QKK]uint8
	for len(dst) >= quant.QKK {
		y := (*[quant.QKK]float32)(dst)
		d := quant.F16ToF32(uint16(row[0]) | uint16(row[1])<<8)
		dmin := quant.F16ToF32(uint16(row[2]) | uint16(row[3])<<8)
		sc, m := kScaleMin((*[12]byte)(row[4:]))
		kQuants45(&q, row[:bs], five)
		for j := range 8 {
			a, b := float32(d*float32(sc[j])), float32(dmin*float32(m[j]))
			src := (*[32]uint8)(q[32*j:])
			out := (*[32]float32)(y[32*j:])
			for l, v := range src {
				out[l] = float32(a*float32(v)) - b
			}
		}
		row, dst = row[bs:], dst[quant.QKK:]
	}
}

// dequantQ6_KGeneric decodes rows exactly as quant.Dequantize does:
// element = float32(d·sc)·(q-32).
func dequantQ6_KGeneric(dst []float32, row []byte) {
	nb := len(dst) / quant.QKK
	row = row[:nb*210]
	var q [quant.QKK]uint8
	for len(dst) >= quant.QKK {
		y := (*[quant.QKK]float32)(dst)
		blk := (*[210]byte)(row)
		d := quant.F16ToF32(uint16(blk[208]) | uint16(blk[209])<<8)
		kQuants6(&q, blk)
		for g := range 16 {
			a := float32(d * float32(int8(blk[192+g])))
			src := (*[16]uint8)(q[16*g:])
			out := (*[16]float32)(y[16*g:])
			for l, v := range src {
				out[l] = a * float32(int32(v)-32)
			}
		}
		row, dst = row[210:], dst[quant.QKK:]
	}
}

// dotQ4_KGeneric, dotQ5_KGeneric and dotQ6_KGeneric are
//
//	w := make([]float32, len(x)); quant.Dequantize(t, w, row)
//	for k := range x { sum += w[k] * x[k] }
//
// a super-block at a time (dequantized exactly, then dotGeneric).
func dotQ4_KGeneric(row []byte, x []float32) float32 { return dotK(row, x, slotQ4_K) }
func dotQ5_KGeneric(row []byte, x []float32) float32 { return dotK(row, x, slotQ5_K) }
func dotQ6_KGeneric(row []byte, x []float32) float32 { return dotK(row, x, slotQ6_K) }

func dotK(row []byte, x []float32, s int) float32 {
	bs := fastLayouts[s].typeSize
	nb := len(x) / quant.QKK
	row = row[:nb*bs]
	var w [quant.QKK]float32
	var sum float32
	for b := range nb {
		// Direct calls, not through a func value, so that w stays on the
		// stack.
		blk := row[b*bs : (b+1)*bs]
		switch s {
		case slotQ4_K:
			dequantK45(w[:], blk, false)
		case slotQ5_K:
			dequantK45(w[:], blk, true)
		default:
			dequantQ6_KGeneric(w[:], blk)
		}
		sum += dotGeneric(w[:], x[b*quant.QKK:(b+1)*quant.QKK])
	}
	return sum
}
