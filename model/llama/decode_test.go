package llama

import (
	"fmt"
	"math"
	"testing"

	"github.com/spigot-llm/spigot/internal/synth"
	"github.com/spigot-llm/spigot/kernels"
	"github.com/spigot-llm/spigot/kvcache"
	"github.com/spigot-llm/spigot/model"
	"github.com/spigot-llm/spigot/quant"
)

// TestDecodeEqualsPrefill checks that a token decoded after its prompt gets
// bit for bit the logits it gets as the last token of a prefill, for
// models with one query head per KV head (whose decode steps take the
// kernels' heads path) and with grouped heads, alone and in a batch of
// decodes (which splits the heads over tasks differently), and with the
// weights' tiles packed at load (Options.PackTiles). The weights are
// of integer-path types, whose products do not depend on the batch; float
// weights' batch-1 products round differently from their tiles.
func TestDecodeEqualsPrefill(t *testing.T) {
	pool := kernels.NewPool(2)
	defer pool.Close()
	for _, kv := range []int{4, 2} {
		for _, typ := range []quant.Type{quant.Q8_0, quant.Q4_0, quant.Q8_0 | packed} {
			pack := typ&packed != 0
			typ &^= packed
			name := fmt.Sprintf("kvheads=%d/%s", kv, typ)
			if pack {
				name += "/packed"
			}
			t.Run(name, func(t *testing.T) {
				shape := synth.Shape{Dim: 256, Layers: 2, Heads: 4, KVHeads: kv, FFN: 512, Context: 256, Tied: true}
				m, err := model.Load(synthFile(t, shape, typ), model.Options{Pool: pool, PackTiles: pack})
				if err != nil {
					t.Fatal(err)
				}
				vocab := m.Config().Vocab
				cache, err := m.NewCache(64, 16)
				if err != nil {
					t.Fatal(err)
				}
				// Prompts of 7..55 tokens: partial and full blocks.
				const seqs = 5
				prompt := func(s, i int) int32 { return int32(3 + (s*37+i*11)%900) }
				length := func(s int) int { return 7 + 12*s }
				want := make([][]float32, seqs)
				for s := range seqs {
					seq := cache.NewSeq()
					var b model.Batch
					for i := range length(s) {
						b.Add(prompt(s, i), i, seq, i == length(s)-1)
					}
					want[s] = make([]float32, vocab)
					if err := m.Forward(&b, want[s]); err != nil {
						t.Fatal(err)
					}
					seq.Release()
				}
				check := func(name string, together []int) {
					all := make([]*kvcache.Seq, len(together))
					var b model.Batch
					for j, s := range together {
						all[j] = cache.NewSeq()
						b.Reset()
						for i := range length(s) - 1 {
							b.Add(prompt(s, i), i, all[j], false)
						}
						if err := m.Forward(&b, nil); err != nil {
							t.Fatal(err)
						}
					}
					b.Reset()
					for j, s := range together {
						b.Add(prompt(s, length(s)-1), length(s)-1, all[j], true)
					}
					got := make([]float32, len(together)*vocab)
					if err := m.Forward(&b, got); err != nil {
						t.Fatal(err)
					}
					for j, s := range together {
						for i, w := range want[s] {
							if g := got[j*vocab+i]; math.Float32bits(g) != math.Float32bits(w) {
								t.Fatalf("%s: sequence %d logit %d: decoded %v, prefilled %v", name, s, i, g, w)
							}
						}
						all[j].Release()
					}
				}
				for s := range seqs {
					check("alone", []int{s})
				}
				check("together", []int{0, 1, 2, 3, 4})
			})
		}
	}
}

// packed marks a weight type in TestDecodeEqualsPrefill's list as loaded
// with Options.PackTiles.
const packed quant.Type = 1 << 30
