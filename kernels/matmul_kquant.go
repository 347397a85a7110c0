package kernels

import (
	"unsafe"

	"github.com/spigot-llm/spigot/quant"
)

// MatMul's integer path for the K-quant weights Q4_K, Q5_K and Q6_K. The
// activations are quantized as for Q8_0 and Q4_0 (matmul_int.go): blocks
// of 32 int8 with a float32 scale dx, once per call, so the error bound
// is the same. A 256-element super-block of weights meets 8 activation
// blocks, one per 32 elements, which are a group of the 8-block layouts:
// sub-block j of a super-block meets the activation block whose lane is j.
// (llama.cpp instead quantizes activations to 256-element blocks with one
// scale, Q8_K, which lets it apply the weights' sub-block scales in
// integers; here the float work per block is two or three instructions
// per 32 products, and 32-element activation scales lose less precision.)
//
// Q4_K and Q5_K: sub-block j has unsigned quants q (0-15, or 0-31), scale
// a_j = d·sc_j and min b_j = dmin·m_j (float32 products of the 6-bit
// scale and min, as the dequantizer rounds them), so element l is
// a_j·q_l - b_j and its product with activation block b is
//
//	dx_b·(a_j·Σ q·xq - b_j·Σ xq)
//
// Q6_K: element l has quant q_l - 32 (q 0-63) and scale a = d·sc (sc int8)
// per 16 elements, so block b meets two scales, a_lo for its first 16
// elements and a_hi for the last 16.
//
// The canonical computation of one output, for activation block b of the
// row (lane j = b%8; t_b = dx_b·float32(Σ xq_b), Σ_lo and Σ_hi the sums
// over the halves; every product of two float32s rounded to float32):
//
//	Q4_K, Q5_K:
//		idot := Σ_32 q·xq                                       // exact
//		lane[j] = fma(float32(idot), a_j·dx_b, lane[j])
//		lane[j] = fma(-b_j, t_b, lane[j])
//	Q6_K, for h = lo, then hi:
//		idot_h := Σ_16 q·xq - 32·Σ_h xq                         // exact
//		lane[j] = fma(float32(idot_h), a_h·dx_b, lane[j])
//	out = ((lane[0]+lane[1])+(lane[2]+lane[3])) + ((lane[4]+lane[5])+(lane[6]+lane[7]))
//
// The integers are exact in float32 (|idot| ≤ 32·31·127 < 2^24), so again
// every kernel set computes exactly this (the portable one in float64,
// with the same rare last-bit exception), and an output depends only on
// its own weight row and activation row.
//
// The assembly sets' K activation row, per group of 8 blocks (a
// super-block's worth), kActGroup bytes:
//
//	[0, 256)    the quants, transposed or natural (as matmul_int.go)
//	[256, 288)  8 float32 scales dx
//	[288, 320)  8 float32 t = dx·float32(Σ xq)        (Q4_K, Q5_K)
//	[320, 352)  8 int32 -32·Σ_lo xq                   (Q6_K)
//	[352, 384)  8 int32 -32·Σ_hi xq                   (Q6_K)
//
// and a packed tile of 4 weight rows, per super-block, kTileGroup bytes:
//
//	[0, 1024)     the quants as unsigned bytes (Q6_K's before the -32),
//	              transposed as in matmul_int.go
//	[1024, 1152)  for each row r: 8 float32 a_j (Q6_K: a_lo of each block)
//	[1152, 1280)  for each row r: 8 float32 b_j (Q6_K: a_hi of each block)
//
// The direct kernels read the super-blocks in place and unpack the same
// quants and scales on the fly.

// K layout sizes and offsets, as documented above and in internal/asmgen.
const (
	kActGroup  = 384
	kActT      = 288
	kActLo     = 320
	kActHi     = 352
	kTileGroup = 1280
	kTileA     = 1024
	kTileB     = 1152
)

// kAct is a view of one activation row in the portable K layout: the
// len(x) int8 quants, then per block its scale dx, its t, and the int32
// sums of its two halves of quants (sum[2b], sum[2b+1]).
type kAct struct {
	q     []int8
	dx, t []float32
	sum   []int32
}

// kActView views the first cols+16·cols/32 bytes of a (4-byte aligned).
func kActView(a []byte, cols int) kAct {
	nb := cols / quant.ActBlock
	a = a[:cols+16*nb]
	p := unsafe.Pointer(unsafe.SliceData(a))
	return kAct{
		q:   unsafe.Slice((*int8)(p), cols),
		dx:  unsafe.Slice((*float32)(unsafe.Add(p, cols)), nb),
		t:   unsafe.Slice((*float32)(unsafe.Add(p, cols+4*nb)), nb),
		sum: unsafe.Slice((*int32)(unsafe.Add(p, cols+8*nb)), 2*nb),
	}
}

// quantActGenericK quantizes x into the portable K layout.
func quantActGenericK(dst []byte, x []float32) {
	if len(x) == 0 {
		return
	}
	v := kActView(dst, len(x))
	quant.QuantizeActivations(v.q, v.dx, x)
	for b := range v.dx {
		y := (*[32]int8)(v.q[32*b:])
		var lo, hi int32
		for l := range 16 {
			lo += int32(y[l])
			hi += int32(y[16+l])
		}
		v.sum[2*b], v.sum[2*b+1] = lo, hi
		v.t[b] = float32(v.dx[b] * float32(lo+hi))
	}
}

// qTileGenericK is the canonical computation above, with weight rows read
// in place; nc ≤ genericQ.maxCols.
func qTileGenericK(w []byte, rs, nr int, a []byte, as, nc, cols, s int, out []float32, os int) {
	nsb := cols / quant.QKK
	if nsb == 0 {
		for k := range nc {
			clear(out[k*os : k*os+nr])
		}
		return
	}
	var acts [4]kAct
	for k := range nc {
		acts[k] = kActView(a[k*as:], cols)
	}
	bs := fastLayouts[s].typeSize
	var q [quant.QKK]uint8
	var sa, sb [16]float32 // scales a and mins b per sub-block (Q6_K: a per 16)
	for r := range nr {
		row := w[r*rs : r*rs+nsb*bs]
		var lanes [4][8]float64
		for sbk := range nsb {
			blk := row[sbk*bs : (sbk+1)*bs]
			if s == slotQ6_K {
				b6 := (*[210]byte)(blk)
				kQuants6(&q, b6)
				d := quant.F16ToF32(uint16(b6[208]) | uint16(b6[209])<<8)
				for g := range 16 {
					sa[g] = float32(d * float32(int8(b6[192+g])))
				}
			} else {
				d := quant.F16ToF32(uint16(blk[0]) | uint16(blk[1])<<8)
				dmin := quant.F16ToF32(uint16(blk[2]) | uint16(blk[3])<<8)
				sc, m := kScaleMin((*[12]byte)(blk[4:]))
				kQuants45(&q, blk, s == slotQ5_K)
				for j := range 8 {
					sa[j] = float32(d * float32(sc[j]))
					sb[j] = float32(dmin * float32(m[j]))
				}
			}
			for k := range nc {
				v := &acts[k]
				lane := &lanes[k]
				for j := range 8 {
					b := 8*sbk + j
					y := (*[32]int8)(v.q[32*b:])
					qq := (*[32]uint8)(q[32*j:])
					dx := v.dx[b]
					// The products below are exact in float64 (|idot| <
					// 2^24, the other factors have 24 bits), so each line
					// rounds as a float32 fused multiply-add would, except
					// where the float64 rounding of the sum lands on a
					// float32 tie.
					if s == slotQ6_K {
						for h := range 2 {
							idot := dotU8I8x16((*[16]uint8)(qq[16*h:]), (*[16]int8)(y[16*h:])) - 32*v.sum[2*b+h]
							sc := float32(sa[2*j+h] * dx)
							lane[j] = float64(float32(lane[j] + float64(idot)*float64(sc)))
						}
						continue
					}
					idot := dotU8I8x16((*[16]uint8)(qq[:]), (*[16]int8)(y[:])) +
						dotU8I8x16((*[16]uint8)(qq[16:]), (*[16]int8)(y[16:]))
					sc := float32(sa[j] * dx)
					lane[j] = float64(float32(lane[j] + float64(idot)*float64(sc)))
					lane[j] = float64(float32(lane[j] - float64(sb[j])*float64(v.t[b])))
				}
			}
		}
		for k := range nc {
			lane := &lanes[k]
			l := [8]float32{
				float32(lane[0]), float32(lane[1]), float32(lane[2]), float32(lane[3]),
				float32(lane[4]), float32(lane[5]), float32(lane[6]), float32(lane[7]),
			}
			out[k*os+r] = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
		}
	}
}

// dotU8I8x16 is Σ q[l]·y[l].
func dotU8I8x16(q *[16]uint8, y *[16]int8) int32 {
	var s0, s1, s2, s3 int32
	for l := 0; l < 16; l += 4 {
		s0 += int32(q[l]) * int32(y[l])
		s1 += int32(q[l+1]) * int32(y[l+1])
		s2 += int32(q[l+2]) * int32(y[l+2])
		s3 += int32(q[l+3]) * int32(y[l+3])
	}
	return (s0 + s1) + (s2 + s3)
}
