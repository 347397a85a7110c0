// Package synth writes Llama GGUF files with deterministic random weights in
// fixed shapes, the way vLLM's dummy weights let one measure speed without
// downloading a model. The vocabulary is copied from a real GGUF file, so
// tokenization and llama.cpp's loader behave as with a real model.
package synth

import (
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"sort"
	"strings"

	"github.com/spigot-llm/spigot/gguf"
	"github.com/spigot-llm/spigot/quant"
)

// Shape is a model's size.
type Shape struct {
	Dim, Layers, Heads, KVHeads, FFN, Context int
	// Tied shares the token embedding with the output layer, as the llama2.c
	// TinyStories models do; TinyLlama has a separate output matrix.
	Tied bool
}

// Shapes are the named shapes: the llama2.c TinyStories 15M and 110M models
// and TinyLlama 1.1B.
var Shapes = map[string]Shape{
	"s15M":  {Dim: 288, Layers: 6, Heads: 6, KVHeads: 6, FFN: 768, Context: 2048, Tied: true},
	"s110M": {Dim: 768, Layers: 12, Heads: 12, KVHeads: 12, FFN: 2048, Context: 2048, Tied: true},
	"tl1B":  {Dim: 2048, Layers: 22, Heads: 32, KVHeads: 4, FFN: 5632, Context: 2048},
}

// ShapeNames lists the names in Shapes, sorted.
func ShapeNames() []string {
	var names []string
	for n := range Shapes {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Types are the weight types Write can produce.
var Types = []quant.Type{quant.F32, quant.F16, quant.BF16, quant.Q8_0, quant.Q4_0}

// fileType is general.file_type (llama_ftype) for each weight type.
var fileType = map[quant.Type]uint32{quant.F32: 0, quant.F16: 1, quant.Q4_0: 2, quant.Q8_0: 7, quant.BF16: 32}

// Write writes a model of shape s with matrices of type typ, taking every
// tokenizer.* entry from vocab. Weights are drawn from N(0, 0.02²) (the
// usual initialisation scale) with a generator seeded by each tensor's name,
// so the same arguments always give the same bytes; norm weights are 1.
func Write(w io.Writer, name string, s Shape, typ quant.Type, vocab *gguf.File) error {
	if fileType[typ] == 0 && typ != quant.F32 {
		return fmt.Errorf("synth: weight type %s is not one of F32, F16, BF16, Q8_0, Q4_0", typ)
	}
	if s.Dim%s.Heads != 0 || s.Heads%s.KVHeads != 0 {
		return fmt.Errorf("synth: shape %+v is inconsistent", s)
	}
	tokens, ok := vocab.Strings("tokenizer.ggml.tokens")
	if !ok || len(tokens) == 0 {
		return fmt.Errorf("synth: vocabulary file has no tokenizer.ggml.tokens")
	}
	nVocab := uint64(len(tokens))
	for _, d := range []int{s.Dim, s.FFN} {
		if d%typ.BlockSize() != 0 {
			return fmt.Errorf("synth: width %d is not a multiple of %s's block size", d, typ)
		}
	}
	headDim := s.Dim / s.Heads
	kvs := []gguf.KV{
		{Key: "general.architecture", Value: gguf.Val("llama")},
		{Key: "general.name", Value: gguf.Val("spigot-synth-" + name)},
		{Key: "general.file_type", Value: gguf.Val(fileType[typ])},
		{Key: "llama.context_length", Value: gguf.Val(uint32(s.Context))},
		{Key: "llama.embedding_length", Value: gguf.Val(uint32(s.Dim))},
		{Key: "llama.block_count", Value: gguf.Val(uint32(s.Layers))},
		{Key: "llama.feed_forward_length", Value: gguf.Val(uint32(s.FFN))},
		{Key: "llama.attention.head_count", Value: gguf.Val(uint32(s.Heads))},
		{Key: "llama.attention.head_count_kv", Value: gguf.Val(uint32(s.KVHeads))},
		{Key: "llama.rope.dimension_count", Value: gguf.Val(uint32(headDim))},
		{Key: "llama.rope.freq_base", Value: gguf.Val(float32(10000))},
		{Key: "llama.attention.layer_norm_rms_epsilon", Value: gguf.Val(float32(1e-5))},
		{Key: "llama.vocab_size", Value: gguf.Val(uint32(nVocab))},
	}
	for _, kv := range vocab.KVs {
		if strings.HasPrefix(kv.Key, "tokenizer.") {
			kvs = append(kvs, kv)
		}
	}
	dim, ffn, kvDim := uint64(s.Dim), uint64(s.FFN), uint64(s.KVHeads*headDim)
	var ts []gguf.WriteTensor
	mat := func(name string, cols, rows uint64) {
		ts = append(ts, gguf.WriteTensor{Name: name, Type: typ, Dims: []uint64{cols, rows}, WriteData: randomRows(name, typ, int(cols), int(rows))})
	}
	norm := func(name string) {
		ones := make([]byte, 4*dim)
		for i := range dim {
			ones[4*i+2], ones[4*i+3] = 0x80, 0x3f // 1.0f
		}
		ts = append(ts, gguf.WriteTensor{Name: name, Type: quant.F32, Dims: []uint64{dim}, Data: ones})
	}
	mat("token_embd.weight", dim, nVocab)
	norm("output_norm.weight")
	if !s.Tied {
		mat("output.weight", dim, nVocab)
	}
	for l := range s.Layers {
		p := fmt.Sprintf("blk.%d.", l)
		norm(p + "attn_norm.weight")
		mat(p+"attn_q.weight", dim, dim)
		mat(p+"attn_k.weight", dim, kvDim)
		mat(p+"attn_v.weight", dim, kvDim)
		mat(p+"attn_output.weight", dim, dim)
		norm(p + "ffn_norm.weight")
		mat(p+"ffn_gate.weight", dim, ffn)
		mat(p+"ffn_down.weight", ffn, dim)
		mat(p+"ffn_up.weight", dim, ffn)
	}
	return gguf.Write(w, kvs, ts)
}

// randomRows generates a rows × cols matrix row by row, quantizing each row
// as it goes, so that even a 1B model never sits in memory as float32.
func randomRows(name string, typ quant.Type, cols, rows int) func(io.Writer) error {
	return func(w io.Writer) error {
		h := fnv.New64a()
		io.WriteString(h, name)
		rng := rand.New(rand.NewPCG(h.Sum64(), 0x5eed))
		row := make([]float32, cols)
		rowBytes, err := typ.RowSize(cols)
		if err != nil {
			return err
		}
		buf := make([]byte, rowBytes)
		for range rows {
			for i := range row {
				row[i] = float32(rng.NormFloat64() * 0.02)
			}
			if err := quant.Quantize(typ, buf, row); err != nil {
				return err
			}
			if _, err := w.Write(buf); err != nil {
				return err
			}
		}
		return nil
	}
}
