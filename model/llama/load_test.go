package llama

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spigot-llm/spigot/gguf"
	"github.com/spigot-llm/spigot/internal/synth"
	"github.com/spigot-llm/spigot/kernels"
	"github.com/spigot-llm/spigot/model"
	"github.com/spigot-llm/spigot/quant"
)

// smallModel is a 2-layer Q8_0 model with stories260K's 512-token
// vocabulary: about 100 KB, small enough to fuzz.
func smallModel(tb testing.TB) []byte {
	tb.Helper()
	vocab, err := gguf.Open(filepath.Join(sharedDir, "models", "stories260K.gguf"))
	if err != nil {
		tb.Fatal(err)
	}
	defer vocab.Close()
	var buf bytes.Buffer
	s := synth.Shape{Dim: 64, Layers: 2, Heads: 4, KVHeads: 2, FFN: 96, Context: 32}
	if err := synth.Write(&buf, "small", s, quant.Q8_0, vocab); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// edit rewrites one metadata value or drops one tensor of a file.
func edit(t *testing.T, data []byte, key string, v *gguf.Value, dropTensor string) *gguf.File {
	t.Helper()
	f, err := gguf.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	var kvs []gguf.KV
	for _, kv := range f.KVs {
		if kv.Key == key {
			if v == nil {
				continue
			}
			kv.Value = *v
		}
		kvs = append(kvs, kv)
	}
	var ts []*gguf.Tensor
	for _, x := range f.Tensors {
		if x.Name != dropTensor {
			ts = append(ts, &gguf.Tensor{Name: x.Name, Type: x.Type, Dims: x.Dims, Data: x.Data})
		}
	}
	out, err := gguf.New(kvs, ts, nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestLoadErrors(t *testing.T) {
	data := smallModel(t)
	val := func(x any) *gguf.Value { v := gguf.Val(x); return &v }
	cases := []struct {
		name, key string
		value     *gguf.Value
		drop      string
		want      string
	}{
		{name: "no block count", key: "llama.block_count", want: "llama.block_count"},
		{name: "zero heads", key: "llama.attention.head_count", value: val(uint32(0)), want: "head_count"},
		{name: "kv heads do not divide", key: "llama.attention.head_count_kv", value: val(uint32(3)), want: "KV heads"},
		{name: "huge dim", key: "llama.embedding_length", value: val(uint32(1 << 30)), want: "embedding_length"},
		{name: "wrong dim", key: "llama.embedding_length", value: val(uint32(128)), want: "shape"},
		{name: "rope dim too big", key: "llama.rope.dimension_count", value: val(uint32(1000)), want: "rope dimension"},
		{name: "missing tensor", drop: "blk.1.ffn_up.weight", want: "blk.1.ffn_up.weight is missing"},
		{name: "missing norm", drop: "output_norm.weight", want: "output_norm.weight"},
	}
	pool := kernels.NewPool(1)
	defer pool.Close()
	for _, tc := range cases {
		f := edit(t, data, tc.key, tc.value, tc.drop)
		_, err := model.Load(f, model.Options{Pool: pool})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Load = %v, want an error mentioning %q", tc.name, err, tc.want)
		}
	}
	// A tensor type with no kernel is ErrUnsupported.
	f, _ := gguf.Parse(data)
	var ts []*gguf.Tensor
	for _, x := range f.Tensors {
		y := &gguf.Tensor{Name: x.Name, Type: x.Type, Dims: x.Dims, Data: x.Data}
		if x.Name == "blk.0.attn_q.weight" {
			y.Type = quant.IQ4_NL // 18 bytes per 32, so give it fresh data
			y.Data = make([]byte, 64*64/32*18)
		}
		ts = append(ts, y)
	}
	g, err := gguf.New(f.KVs, ts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := model.Load(g, model.Options{Pool: pool}); !errors.Is(err, model.ErrUnsupported) || !strings.Contains(err.Error(), "IQ4_NL") {
		t.Errorf("IQ4_NL weights: %v, want ErrUnsupported naming IQ4_NL", err)
	}
}

// FuzzLoad feeds mutated model files through parse, load and one forward
// step: any of them may fail, none may panic.
func FuzzLoad(f *testing.F) {
	f.Add(smallModel(f))
	pool := kernels.NewPool(1)
	defer pool.Close()
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := gguf.Parse(data)
		if err != nil {
			return
		}
		m, err := model.Load(file, model.Options{Pool: pool})
		if err != nil {
			return
		}
		cfg := m.Config()
		if cfg.Dim*cfg.Vocab > 1<<24 || cfg.Layers*cfg.KVDim() > 1<<20 {
			return // a valid but large model: not what this target is for
		}
		cache, err := m.NewCache(2, 16)
		if err != nil {
			return
		}
		seq := cache.NewSeq()
		var b model.Batch
		b.Add(1, 0, seq, false)
		b.Add(int32(cfg.Vocab-1), 1, seq, true)
		m.Forward(&b, make([]float32, cfg.Vocab))
	})
}
