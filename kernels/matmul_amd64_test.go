//go:build !noasm

package kernels

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/spigot-llm/spigot/quant"
)

// TestQuantActAVX2 checks the assembly activation quantizer, in both
// layouts, against quant.QuantizeActivations bit for bit, with its
// corrections k·Σ, for full and partial groups and blocks of zeros and of
// widely varying scale.
func TestQuantActAVX2(t *testing.T) {
	if !hasAVX2() {
		t.Skip("no AVX2")
	}
	r := rand.New(rand.NewPCG(3, 4))
	for _, nb := range []int{1, 7, 8, 9, 24, 65} {
		x := make([]float32, nb*32)
		for i := range x {
			x[i] = float32(r.NormFloat64() * math.Ldexp(1, i/32%40-20))
		}
		for i := range 32 {
			x[32*(nb/2)+i] = 0 // a zero block
		}
		q := make([]int8, len(x))
		d := make([]float32, nb)
		quant.QuantizeActivations(q, d, x)
		for _, natural := range []bool{false, true} {
			const k = -128
			dst := make([]byte, qActSize(len(x), slotQ8_0)+1)
			dst[len(dst)-1] = 0xa5
			quantAct(dst[:len(dst)-1], x, k, natural)
			if dst[len(dst)-1] != 0xa5 {
				t.Fatalf("nb=%d: wrote past its row", nb)
			}
			for b := range nb {
				g, j := b/8, b%8
				grp := dst[g*qActGroup:]
				if got := math.Float32frombits(binary.LittleEndian.Uint32(grp[actScaleOff+4*j:])); got != d[b] {
					t.Fatalf("nb=%d natural=%v block %d: scale %v, want %v", nb, natural, b, got, d[b])
				}
				var sum int32
				for e := range 32 {
					var got int8
					if natural {
						got = int8(grp[32*j+e])
					} else {
						got = int8(grp[32*(e/4)+4*j+e%4])
					}
					if want := q[32*b+e]; got != want {
						t.Fatalf("nb=%d natural=%v block %d element %d: %d, want %d", nb, natural, b, e, got, want)
					}
					sum += int32(got)
				}
				if got := int32(binary.LittleEndian.Uint32(grp[actInitOff+4*j:])); got != k*sum {
					t.Fatalf("nb=%d natural=%v block %d: correction %d, want %d", nb, natural, b, got, k*sum)
				}
			}
		}
	}
}

// TestQuantActK checks the K-layout activation quantizer, in both layouts,
// against quant.QuantizeActivations bit for bit, with its t = d·Σ and
// half-block corrections -32·Σ (matmul_kquant.go).
func TestQuantActK(t *testing.T) {
	if !hasAVX2() {
		t.Skip("no AVX2")
	}
	r := rand.New(rand.NewPCG(3, 5))
	for _, groups := range []int{1, 3, 9} {
		x := make([]float32, groups*quant.QKK)
		for i := range x {
			x[i] = float32(r.NormFloat64() * math.Ldexp(1, i/32%40-20))
		}
		for i := range 32 {
			x[32*(groups*4-1)+i] = 0 // a zero block
		}
		nb := len(x) / 32
		q := make([]int8, len(x))
		d := make([]float32, nb)
		quant.QuantizeActivations(q, d, x)
		for _, natural := range []bool{false, true} {
			dst := make([]byte, qActSize(len(x), slotQ4_K)+1)
			dst[len(dst)-1] = 0xa5
			quantActK(dst[:len(dst)-1], x, natural)
			if dst[len(dst)-1] != 0xa5 {
				t.Fatalf("groups=%d: wrote past its row", groups)
			}
			for b := range nb {
				g, j := b/8, b%8
				grp := dst[g*kActGroup:]
				word := func(off int) uint32 { return binary.LittleEndian.Uint32(grp[off+4*j:]) }
				if got := math.Float32frombits(word(actScaleOff)); got != d[b] {
					t.Fatalf("groups=%d natural=%v block %d: scale %v, want %v", groups, natural, b, got, d[b])
				}
				var sum [2]int32
				for e := range 32 {
					var got int8
					if natural {
						got = int8(grp[32*j+e])
					} else {
						got = int8(grp[32*(e/4)+4*j+e%4])
					}
					if want := q[32*b+e]; got != want {
						t.Fatalf("groups=%d natural=%v block %d element %d: %d, want %d", groups, natural, b, e, got, want)
					}
					sum[e/16] += int32(got)
				}
				if got, want := math.Float32frombits(word(kActT)), d[b]*float32(sum[0]+sum[1]); got != want {
					t.Fatalf("groups=%d natural=%v block %d: t = %v, want %v", groups, natural, b, got, want)
				}
				if got := int32(word(kActLo)); got != -32*sum[0] {
					t.Fatalf("groups=%d natural=%v block %d: first half correction %d, want %d", groups, natural, b, got, -32*sum[0])
				}
				if got := int32(word(kActHi)); got != -32*sum[1] {
					t.Fatalf("groups=%d natural=%v block %d: second half correction %d, want %d", groups, natural, b, got, -32*sum[1])
				}
			}
		}
	}
}
