//go:build !noasm

package kernels

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/spigot-llm/spigot/kernels/kerneltest"
	"github.com/spigot-llm/spigot/quant"
	"golang.org/x/sys/cpu"
)

// ilByte is the offset, within a half group's 128 bytes, of element e of
// block jj (0-3) in layout lay (see matmul_arm64.go).
func ilByte(lay, jj, e int) int {
	switch lay {
	case layNatural:
		return 32*jj + e
	case layIL4:
		return 16*(e/4) + 4*jj + e%4
	}
	// 2-byte piece p: pieces 0-7 in vectors 0-3, 8-15 in 4-7; in each
	// vector pieces i and i+4 (at bytes 8 apart), i = 0, 2, 1, 3.
	p := e / 2
	v := 4*(p/8) + [4]int{0, 2, 1, 3}[p%4]
	return 16*v + 8*(p%8/4) + 2*jj + e%2
}

var layNames = map[int]string{layNatural: "natural", layIL4: "il4", layIL2: "il2"}

// TestQuantActNEON checks the assembly activation quantizer, in each
// layout, against quant.QuantizeActivations bit for bit, with its
// corrections k·Σ, for full and partial groups and blocks of zeros, of
// widely varying scale, and holding an infinity or a NaN.
func TestQuantActNEON(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, nb := range []int{1, 7, 8, 9, 24, 65} {
		x := make([]float32, nb*32)
		for i := range x {
			x[i] = float32(r.NormFloat64() * math.Ldexp(1, i/32%40-20))
		}
		for i := range 32 {
			x[32*(nb/2)+i] = 0 // a zero block
		}
		if nb > 8 {
			x[32*3+5] = float32(math.Inf(-1))
			x[32*5+31] = float32(math.NaN())
		}
		q := make([]int8, len(x))
		d := make([]float32, nb)
		quant.QuantizeActivations(q, d, x)
		for _, lay := range []int{layNatural, layIL4, layIL2} {
			const k = -8
			dst := make([]byte, qActSize(len(x))+1)
			dst[len(dst)-1] = 0xa5
			quantAct(dst[:len(dst)-1], x, k, lay)
			if dst[len(dst)-1] != 0xa5 {
				t.Fatalf("nb=%d %s: wrote past its row", nb, layNames[lay])
			}
			for b := range qGroups(len(x)) * qGroupBlocks {
				g, j := b/8, b%8
				grp := dst[g*qActGroup:]
				var wantD float32
				if b < nb {
					wantD = d[b]
				}
				if got := math.Float32frombits(binary.LittleEndian.Uint32(grp[actScaleOff+4*j:])); math.Float32bits(got) != math.Float32bits(wantD) {
					t.Fatalf("nb=%d %s block %d: scale %v, want %v", nb, layNames[lay], b, got, wantD)
				}
				var sum int32
				for e := range 32 {
					got := int8(grp[128*(j/4)+ilByte(lay, j%4, e)])
					var want int8
					if b < nb {
						want = q[32*b+e]
					}
					if got != want {
						t.Fatalf("nb=%d %s block %d element %d: %d, want %d", nb, layNames[lay], b, e, got, want)
					}
					sum += int32(got)
				}
				if got := int32(binary.LittleEndian.Uint32(grp[actInitOff+4*j:])); got != k*sum {
					t.Fatalf("nb=%d %s block %d: correction %d, want %d", nb, layNames[lay], b, got, k*sum)
				}
			}
		}
	}
}

// TestPackNEON checks the weight packers: each quant (Q4_0 as its nibble)
// at its place in the tile for each layout, the scales as float32, and
// zero scales for rows past the matrix.
func TestPackNEON(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, typ := range []quant.Type{quant.Q8_0, quant.Q4_0} {
		s := slot(typ)
		bs := typ.TypeSize()
		for _, nb := range []int{1, 8, 9, 17} {
			cols := nb * 32
			for _, nr := range []int{1, 3, 4} {
				var rows []byte
				for range nr {
					row, _ := kerneltest.RandRow(r, typ, cols)
					rows = append(rows, row...)
				}
				rs := len(rows) / nr
				for _, lay := range []int{layIL4, layIL2} {
					what := fmt.Sprintf("%v, %d blocks, %d rows, %s", typ, nb, nr, layNames[lay])
					dst := make([]byte, qTileSize(cols)+1)
					for i := range dst {
						dst[i] = 0xee
					}
					packRows(dst[:len(dst)-1], rows, rs, nr, cols, s, lay)
					if dst[len(dst)-1] != 0xee {
						t.Fatalf("%s: wrote past its tile", what)
					}
					for rr := range qTileRows {
						for b := range qGroups(cols) * qGroupBlocks {
							g, j := b/8, b%8
							grp := dst[g*qTileGroup:]
							h := j / 4
							scale := math.Float32frombits(binary.LittleEndian.Uint32(grp[tileScaleOff+64*h+16*rr+4*(j%4):]))
							var want float32
							if rr < nr && b < nb {
								blk := rows[rr*rs+b*bs:]
								want = quant.F16ToF32(uint16(blk[0]) | uint16(blk[1])<<8)
							}
							if math.Float32bits(scale) != math.Float32bits(want) {
								t.Fatalf("%s: row %d block %d: scale %v, want %v", what, rr, b, scale, want)
							}
							if rr >= nr {
								continue
							}
							for e := range 32 {
								off := ilByte(lay, j%4, e)
								got := grp[512*h+64*(off/16)+16*rr+off%16]
								var want byte
								if b < nb {
									blk := rows[rr*rs+b*bs:]
									switch {
									case typ == quant.Q8_0:
										want = blk[2+e]
									case e < 16:
										want = blk[2+e] & 15
									default:
										want = blk[2+e-16] >> 4
									}
								}
								if got != want {
									t.Fatalf("%s: row %d block %d element %d: %d, want %d", what, rr, b, e, got, want)
								}
							}
						}
					}
				}
			}
		}
	}
}

// TestSetsNEON checks that init chose the sets the CPU supports: neon
// always, and neondot, active, exactly when the CPU has SDOT. (Run the
// tests with QEMU_CPU=cortex-a57 to run them without it.)
func TestSetsNEON(t *testing.T) {
	want := []string{"generic", "neon"}
	if cpu.ARM64.HasASIMDDP {
		want = append(want, "neondot")
	}
	var got []string
	for _, k := range sets {
		got = append(got, k.name)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("sets = %v, want %v", got, want)
	}
	if active.name != want[len(want)-1] {
		t.Errorf("active set %s, want %s", active.name, want[len(want)-1])
	}
	t.Logf("kernel sets %v (SDOT: %v)", got, cpu.ARM64.HasASIMDDP)
}
