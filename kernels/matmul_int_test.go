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
