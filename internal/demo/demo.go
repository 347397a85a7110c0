// Package demo builds the small model `spigot serve` runs when it is given no
// model file: a Llama network with deterministic random weights
// (package synth) over a 259-token SentencePiece vocabulary made in-process —
// <unk>, <s>, </s> and the 256 byte tokens <0x00>…<0xFF> — so that any text
// tokenizes, by byte fallback. It generates random bytes: it exists so the
// server, its API and its clients can be tried without downloading anything,
// not to produce text worth reading.
package demo

import (
	"bytes"
	"fmt"

	"github.com/spigot-llm/spigot/gguf"
	"github.com/spigot-llm/spigot/internal/synth"
	"github.com/spigot-llm/spigot/quant"
)

// ID is the model id the demo model is served under.
const ID = "spigot-demo-random"

// Description says what the demo model is and how to load a real one; the
// server logs it and shows it in /v1/models.
const Description = "built-in demo model with random weights: it produces random text. " +
	"Load a real model with `spigot serve -m FILE.gguf` or `spigot serve -m hf:OWNER/REPO/FILE.gguf`."

// Shape is the demo network's size: small enough to build in milliseconds
// and to run fast on any CPU.
var Shape = synth.Shape{Dim: 64, Layers: 2, Heads: 4, KVHeads: 4, FFN: 128, Context: 2048, Tied: true}

// Vocab returns a GGUF file holding only a SentencePiece vocabulary:
// <unk> (type unknown), <s> and </s> (control), one byte token per byte
// value (type byte), and "▁", SentencePiece's space, as a normal token:
// without it a space would fall back to the three bytes of "▁" and decode
// as that character rather than as a space. BOS is <s>, EOS is </s>.
func Vocab() (*gguf.File, error) {
	tokens := make([]string, 0, 260)
	types := make([]int32, 0, 260)
	tokens = append(tokens, "<unk>", "<s>", "</s>")
	types = append(types, 2, 3, 3) // unknown, control, control
	for b := range 256 {
		tokens = append(tokens, fmt.Sprintf("<0x%02X>", b))
		types = append(types, 6) // byte
	}
	tokens = append(tokens, "\u2581")
	types = append(types, 1) // normal
	scores := make([]float32, len(tokens))
	kvs := []gguf.KV{
		{Key: "tokenizer.ggml.model", Value: gguf.Val("llama")},
		{Key: "tokenizer.ggml.tokens", Value: gguf.Val(tokens)},
		{Key: "tokenizer.ggml.scores", Value: gguf.Val(scores)},
		{Key: "tokenizer.ggml.token_type", Value: gguf.Val(types)},
		{Key: "tokenizer.ggml.unknown_token_id", Value: gguf.Val(uint32(0))},
		{Key: "tokenizer.ggml.bos_token_id", Value: gguf.Val(uint32(1))},
		{Key: "tokenizer.ggml.eos_token_id", Value: gguf.Val(uint32(2))},
	}
	return gguf.New(kvs, nil, nil)
}

// File returns the demo model as a parsed GGUF file held in memory (about
// 0.4 MB). The same call always gives the same weights.
func File() (*gguf.File, error) {
	vocab, err := Vocab()
	if err != nil {
		return nil, fmt.Errorf("demo: building the vocabulary: %w", err)
	}
	var buf bytes.Buffer
	if err := synth.Write(&buf, "demo", Shape, quant.F32, vocab); err != nil {
		return nil, fmt.Errorf("demo: writing the model: %w", err)
	}
	f, err := gguf.Parse(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("demo: parsing the model: %w", err)
	}
	return f, nil
}
