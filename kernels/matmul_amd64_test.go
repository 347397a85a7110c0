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
