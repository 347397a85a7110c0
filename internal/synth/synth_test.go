package synth

import (
	"bytes"
	"crypto/sha256"
	"path/filepath"
	"testing"

	"github.com/spigot-llm/spigot/gguf"
	"github.com/spigot-llm/spigot/quant"
)

func vocab(t *testing.T) *gguf.File {
	f, err := gguf.Open(filepath.Join("..", "..", "..", "shared", "vocab", "ggml-vocab-llama-spm.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestWriteIsDeterministicAndWellFormed(t *testing.T) {
	v := vocab(t)
	small := Shape{Dim: 64, Layers: 2, Heads: 4, KVHeads: 2, FFN: 96, Context: 128}
	for _, typ := range Types {
		var a, b bytes.Buffer
		if err := Write(&a, "test", small, typ, v); err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		if err := Write(&b, "test", small, typ, v); err != nil {
			t.Fatal(err)
		}
		if sha256.Sum256(a.Bytes()) != sha256.Sum256(b.Bytes()) {
			t.Errorf("%s: two writes differ", typ)
		}
		f, err := gguf.Parse(a.Bytes())
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		q, ok := f.Tensor("blk.1.attn_k.weight")
		if !ok || q.Type != typ || q.Dims[0] != 64 || q.Dims[1] != 32 {
			t.Errorf("%s: attn_k = %+v", typ, q)
		}
		if n, _ := f.Strings("tokenizer.ggml.tokens"); len(n) != 32000 {
			t.Errorf("%s: vocabulary of %d tokens", typ, len(n))
		}
		if _, ok := f.Tensor("output.weight"); !ok {
			t.Errorf("untied shape has no output.weight")
		}
		// The weights look like N(0, 0.02²).
		row := make([]float32, 64*96)
		emb, _ := f.Tensor("blk.0.ffn_gate.weight")
		if err := quant.Dequantize(typ, row, emb.Data); err != nil {
			t.Fatal(err)
		}
		var sum2 float64
		for _, x := range row {
			sum2 += float64(x) * float64(x)
		}
		if std := sum2 / float64(len(row)); std < 0.015*0.015 || std > 0.025*0.025 {
			t.Errorf("%s: weight variance %g, want about 0.02²", typ, std)
		}
	}
}

func TestWriteRejects(t *testing.T) {
	v := vocab(t)
	var buf bytes.Buffer
	if err := Write(&buf, "x", Shapes["s15M"], quant.Q4_K, v); err == nil {
		t.Error("Q4_K accepted")
	}
	if err := Write(&buf, "x", Shape{Dim: 64, Layers: 1, Heads: 5, KVHeads: 5, FFN: 64}, quant.F32, v); err == nil {
		t.Error("dim not divisible by heads accepted")
	}
	if err := Write(&buf, "x", Shape{Dim: 48, Layers: 1, Heads: 4, KVHeads: 4, FFN: 64}, quant.Q8_0, v); err == nil {
		t.Error("Q8_0 with a 48-wide row accepted")
	}
}
