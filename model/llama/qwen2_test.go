package llama

import (
	"encoding/binary"
	"math"
	"strings"
	"testing"

	"github.com/spigot-llm/spigot/gguf"
	"github.com/spigot-llm/spigot/internal/synth"
	"github.com/spigot-llm/spigot/kernels"
	"github.com/spigot-llm/spigot/model"
	"github.com/spigot-llm/spigot/quant"
)

var tiny = synth.Shape{Dim: 64, Layers: 2, Heads: 4, KVHeads: 2, FFN: 96, Context: 64}

func tinyLlama(t *testing.T) *gguf.File {
	t.Helper()
	return synthFile(t, tiny, quant.F32)
}

// toQwen2 rewrites a llama file as qwen2: metadata keys renamed, the rows of
// each head of Q and K reordered from pairs (2j, 2j+1) to (j, j+half), and
// biases added. With NeoX rotation the reordered heads rotate exactly as the
// originals did under normal rotation, and q·k is unchanged by reordering
// both, so with zero biases the two models compute the same function.
func toQwen2(t *testing.T, f *gguf.File, bias func(name string, i int) float32) *gguf.File {
	t.Helper()
	var kvs []gguf.KV
	for _, kv := range f.KVs {
		switch {
		case kv.Key == "general.architecture":
			kv.Value = gguf.Val("qwen2")
		case strings.HasPrefix(kv.Key, "llama."):
			kv.Key = "qwen2." + strings.TrimPrefix(kv.Key, "llama.")
		}
		kvs = append(kvs, kv)
	}
	hd := tiny.Dim / tiny.Heads
	var ts []*gguf.Tensor
	for _, x := range f.Tensors {
		y := &gguf.Tensor{Name: x.Name, Type: x.Type, Dims: x.Dims, Data: x.Data}
		if strings.HasSuffix(x.Name, "attn_q.weight") || strings.HasSuffix(x.Name, "attn_k.weight") {
			row := int(x.Dims[0]) * 4
			y.Data = make([]byte, len(x.Data))
			for r := range int(x.Dims[1]) {
				h, c := r/hd, r%hd
				var src int
				if c < hd/2 {
					src = h*hd + 2*c
				} else {
					src = h*hd + 2*(c-hd/2) + 1
				}
				copy(y.Data[r*row:(r+1)*row], x.Data[src*row:(src+1)*row])
			}
		}
		ts = append(ts, y)
		for _, p := range []string{"attn_q", "attn_k", "attn_v"} {
			if strings.HasSuffix(x.Name, p+".weight") {
				name := strings.TrimSuffix(x.Name, "weight") + "bias"
				n := int(x.Dims[1])
				data := make([]byte, 4*n)
				for i := range n {
					binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(bias(name, i)))
				}
				ts = append(ts, &gguf.Tensor{Name: name, Type: quant.F32, Dims: []uint64{uint64(n)}, Data: data})
			}
		}
	}
	q, err := gguf.New(kvs, ts, nil)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func lastLogits(t *testing.T, f *gguf.File, prompt []int32) []float32 {
	t.Helper()
	pool := kernels.NewPool(2)
	defer pool.Close()
	m, err := model.Load(f, model.Options{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	cache, err := m.NewCache(8, 16)
	if err != nil {
		t.Fatal(err)
	}
	seq := cache.NewSeq()
	var b model.Batch
	for i, id := range prompt {
		b.Add(id, i, seq, i == len(prompt)-1)
	}
	logits := make([]float32, m.Config().Vocab)
	if err := m.Forward(&b, logits); err != nil {
		t.Fatal(err)
	}
	return logits
}

func maxDiff(a, b []float32) float64 {
	d := 0.0
	for i := range a {
		d = max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

func TestQwen2MatchesPermutedLlama(t *testing.T) {
	f := tinyLlama(t)
	prompt := []int32{1, 450, 4996, 17354, 1701, 432, 17204, 975, 278, 17366, 11203}
	want := lastLogits(t, f, prompt)
	zero := func(string, int) float32 { return 0 }
	got := lastLogits(t, toQwen2(t, f, zero), prompt)
	// Only the summation order inside q·k differs; the logits are O(1).
	if d := maxDiff(got, want); d > 1e-4 {
		t.Errorf("qwen2 with zero biases differs from llama by %g", d)
	}
	// A bias on V shifts every value vector, so it must change the output.
	vBias := func(name string, i int) float32 {
		if strings.Contains(name, "attn_v") {
			return 0.5
		}
		return 0
	}
	if d := maxDiff(lastLogits(t, toQwen2(t, f, vBias), prompt), want); d < 1e-3 {
		t.Errorf("a V bias changed the logits by only %g", d)
	}
}
