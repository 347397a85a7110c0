package kernels

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/spigot-llm/spigot/kernels/kerneltest"
	"github.com/spigot-llm/spigot/quant"
)

// TestIntPathDirectMatchesTiles checks, on every kernel set, that the
// integer path's batch-1 kernels (which read the weights in place and
// handle a row's last, partial group of blocks themselves) give the tiles'
// results bit for bit, for every block count from 1 to 17: whole groups of
// 8, partial ones of each size, and both together. Batch 3 takes the
// tiles; its middle entry is the batch-1 activation row.
func TestIntPathDirectMatchesTiles(t *testing.T) {
	r := rand.New(rand.NewPCG(10, 10))
	for _, typ := range []quant.Type{quant.Q8_0, quant.Q4_0} {
		for nb := 1; nb <= 17; nb++ {
			cols := nb * quant.ActBlock
			const rows = 6 // a whole tile and a partial one
			var data []byte
			for range rows {
				row, _ := kerneltest.RandRow(r, typ, cols)
				data = append(data, row...)
			}
			m := Matrix{Type: typ, Data: data, Rows: rows, Cols: cols}
			x := make([]float32, 3*cols)
			for i := range x {
				x[i] = float32(r.NormFloat64())
			}
			for _, k := range sets {
				withImpl(k, func() {
					tiles := make([]float32, 3*rows)
					MatMul(nil, tiles, m, x, 3)
					direct := make([]float32, rows)
					MatMul(nil, direct, m, x[cols:2*cols], 1)
					for i, v := range direct {
						if w := tiles[rows+i]; math.Float32bits(v) != math.Float32bits(w) {
							t.Fatalf("%s: %v with %d blocks: row %d batch 1 = %v, in a batch of 3 %v", k.name, typ, nb, i, v, w)
						}
					}
				})
			}
		}
	}
}

// TestPackedTiles checks, on every kernel set, that products reading
// tiles packed once by PackTiles give bit for bit what packing at every
// call gives, with and without a pool, for rows that end in a partial tile
// and batches that end in a partial tile of activation rows; and that
// PackTiles declines what it should.
func TestPackedTiles(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	pool := NewPool(3)
	defer pool.Close()
	for _, typ := range []quant.Type{quant.Q8_0, quant.Q4_0, quant.Q4_K, quant.Q5_K, quant.Q6_K} {
		cols := 2 * quant.QKK
		const rows = 70
		var data []byte
		for range rows {
			row, _ := kerneltest.RandRow(r, typ, cols)
			data = append(data, row...)
		}
		m := Matrix{Type: typ, Data: data, Rows: rows, Cols: cols}
		for _, k := range sets {
			withImpl(k, func() {
				pm := m
				pm.Tiles = PackTiles(m, 4)
				if pm.Tiles == nil {
					if k.q.tileSize(cols, slot(typ)) > 0 {
						t.Fatalf("%s: %v: no tiles packed", k.name, typ)
					}
					return
				}
				if PackTiles(m, 0.5) != nil {
					t.Errorf("%s: %v: tiles packed beyond the growth limit", k.name, typ)
				}
				for _, batch := range []int{2, 5, 17} {
					x := make([]float32, batch*cols)
					for i := range x {
						x[i] = float32(r.NormFloat64())
					}
					for _, p := range []*Pool{nil, pool} {
						want := make([]float32, batch*rows)
						got := make([]float32, batch*rows)
						MatMul(p, want, m, x, batch)
						MatMul(p, got, pm, x, batch)
						for i := range want {
							if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
								t.Fatalf("%s: %v batch %d: out[%d] = %v with packed tiles, %v without", k.name, typ, batch, i, got[i], want[i])
							}
						}
					}
				}
			})
		}
	}
}
