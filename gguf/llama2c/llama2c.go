// Package llama2c loads checkpoints in the legacy format of Karpathy's
// llama2.c (a 7-integer header followed by float32 weights) together with its
// tokenizer.bin, and presents them as a [gguf.File] with the tensor names and
// metadata that llama.cpp's converter would write, so the rest of Spigot
// loads them like any GGUF model.
package llama2c

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"regexp"
	"strings"
	"syscall"

	"github.com/spigot-llm/spigot/gguf"
	"github.com/spigot-llm/spigot/quant"
)

// ErrFormat is wrapped by every error about a malformed checkpoint or
// tokenizer file.
var ErrFormat = errors.New("malformed llama2.c file")

// Header is the checkpoint's hyperparameters as stored.
type Header struct {
	Dim, Hidden, Layers, Heads, KVHeads, Vocab, SeqLen int32
}

const headerSize = 7 * 4

// Open maps the checkpoint at modelPath and reads the tokenizer at
// tokenizerPath, returning them as one GGUF-shaped file. Close the file to
// unmap the checkpoint.
func Open(modelPath, tokenizerPath string) (*gguf.File, error) {
	tok, err := os.ReadFile(tokenizerPath)
	if err != nil {
		return nil, fmt.Errorf("llama2c: %w", err)
	}
	fd, err := os.Open(modelPath)
	if err != nil {
		return nil, fmt.Errorf("llama2c: %w", err)
	}
	defer fd.Close()
	st, err := fd.Stat()
	if err != nil {
		return nil, fmt.Errorf("llama2c: %w", err)
	}
	if st.Size() < headerSize || st.Size() > math.MaxInt {
		return nil, fmt.Errorf("llama2c: %s: %d bytes is not a checkpoint: %w", modelPath, st.Size(), ErrFormat)
	}
	data, err := syscall.Mmap(int(fd.Fd()), 0, int(st.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("llama2c: mapping %s: %w", modelPath, err)
	}
	f, err := Parse(data, tok, func() error { return syscall.Munmap(data) })
	if err != nil {
		syscall.Munmap(data)
		return nil, err
	}
	return f, nil
}

// Parse builds the file from a checkpoint and a tokenizer held in memory.
func Parse(model, tokenizer []byte, close func() error) (*gguf.File, error) {
	if len(model) >= 4 && binary.LittleEndian.Uint32(model) == 0x616b3432 {
		return nil, fmt.Errorf("llama2c: versioned (\"ak42\") exports are not supported, only the legacy format: %w", ErrFormat)
	}
	if len(model) < headerSize {
		return nil, fmt.Errorf("llama2c: checkpoint of %d bytes has no header: %w", len(model), ErrFormat)
	}
	var h Header
	binary.Read(bytes.NewReader(model[:headerSize]), binary.LittleEndian, &h)
	shared := h.Vocab > 0
	vocab := int(h.Vocab)
	if vocab < 0 {
		vocab = -vocab
	}
	for _, v := range []int32{h.Dim, h.Hidden, h.Layers, h.Heads, h.KVHeads, h.SeqLen} {
		if v <= 0 || v > 1<<20 {
			return nil, fmt.Errorf("llama2c: header %+v has an impossible value: %w", h, ErrFormat)
		}
	}
	if vocab == 0 || vocab > 1<<22 || h.Dim%h.Heads != 0 || h.Heads%h.KVHeads != 0 || (h.Dim/h.Heads)%2 != 0 {
		return nil, fmt.Errorf("llama2c: header %+v is inconsistent: %w", h, ErrFormat)
	}
	dim, hidden, layers := uint64(h.Dim), uint64(h.Hidden), uint64(h.Layers)
	headSize := dim / uint64(h.Heads)
	kvDim := headSize * uint64(h.KVHeads)

	var tensors []*gguf.Tensor
	off := uint64(headerSize)
	var err error
	take := func(name string, dims ...uint64) {
		n := uint64(4)
		for _, d := range dims {
			n *= d
		}
		if err == nil && (n > uint64(len(model)) || off > uint64(len(model))-n) {
			err = fmt.Errorf("llama2c: checkpoint ends before %s (%d bytes, need %d more at %d): %w", name, len(model), n, off, ErrFormat)
		}
		if err != nil {
			return
		}
		if name != "" {
			tensors = append(tensors, &gguf.Tensor{Name: name, Type: quant.F32, Dims: dims, Data: model[off : off+n : off+n]})
		}
		off += n
	}
	// Each kind of weight is stored for all layers in turn.
	perLayer := func(suffix string, dims ...uint64) {
		for l := range layers {
			take(fmt.Sprintf("blk.%d.%s", l, suffix), dims...)
		}
	}
	take("token_embd.weight", dim, uint64(vocab))
	perLayer("attn_norm.weight", dim)
	perLayer("attn_q.weight", dim, dim)
	perLayer("attn_k.weight", dim, kvDim)
	perLayer("attn_v.weight", dim, kvDim)
	perLayer("attn_output.weight", dim, dim)
	perLayer("ffn_norm.weight", dim)
	perLayer("ffn_gate.weight", dim, hidden)
	perLayer("ffn_down.weight", hidden, dim)
	perLayer("ffn_up.weight", dim, hidden)
	take("output_norm.weight", dim)
	take("", uint64(h.SeqLen), headSize/2) // freq_cis_real, unused: RoPE is computed
	take("", uint64(h.SeqLen), headSize/2) // freq_cis_imag
	if err != nil {
		return nil, err
	}
	if shared {
		// Like llama.cpp's converter, name the shared classifier explicitly.
		tensors = append(tensors, &gguf.Tensor{Name: "output.weight", Type: quant.F32, Dims: tensors[0].Dims, Data: tensors[0].Data})
	} else {
		take("output.weight", dim, uint64(vocab))
	}
	if err != nil {
		return nil, err
	}
	tokens, scores, types, err := parseTokenizer(tokenizer, vocab)
	if err != nil {
		return nil, err
	}
	u32 := func(v int32) gguf.Value { return gguf.Val(uint32(v)) }
	kvs := []gguf.KV{
		{Key: "general.architecture", Value: gguf.Val("llama")},
		{Key: "general.name", Value: gguf.Val("llama2.c")},
		{Key: "llama.context_length", Value: u32(h.SeqLen)},
		{Key: "llama.embedding_length", Value: u32(h.Dim)},
		{Key: "llama.feed_forward_length", Value: u32(h.Hidden)},
		{Key: "llama.attention.head_count", Value: u32(h.Heads)},
		{Key: "llama.attention.head_count_kv", Value: u32(h.KVHeads)},
		{Key: "llama.block_count", Value: u32(h.Layers)},
		{Key: "llama.rope.dimension_count", Value: gguf.Val(uint32(headSize))},
		{Key: "llama.attention.layer_norm_rms_epsilon", Value: gguf.Val(float32(1e-5))},
		{Key: "tokenizer.ggml.model", Value: gguf.Val("llama")},
		{Key: "tokenizer.ggml.tokens", Value: gguf.Val(tokens)},
		{Key: "tokenizer.ggml.scores", Value: gguf.Val(scores)},
		{Key: "tokenizer.ggml.token_type", Value: gguf.Val(types)},
		{Key: "tokenizer.ggml.unknown_token_id", Value: gguf.Val(uint32(0))},
		{Key: "tokenizer.ggml.bos_token_id", Value: gguf.Val(uint32(1))},
		{Key: "tokenizer.ggml.eos_token_id", Value: gguf.Val(uint32(2))},
	}
	return gguf.New(kvs, tensors, close)
}

var byteToken = regexp.MustCompile(`^<0x[0-9A-F]{2}>$`)

// parseTokenizer reads tokenizer.bin: the longest token's length, then per
// token a float32 score, an int32 length and the bytes. Ids 0, 1 and 2 are
// unknown, BOS and EOS (llama2.c stores them as "<unk>", "\n<s>\n",
// "\n</s>\n"; they get their usual names), "<0xXX>" pieces are byte tokens, and spaces in other pieces become "▁" as in GGUF
// SentencePiece vocabularies.
func parseTokenizer(b []byte, vocab int) (tokens []string, scores []float32, types []int32, err error) {
	if len(b) < 4 {
		return nil, nil, nil, fmt.Errorf("llama2c: tokenizer of %d bytes: %w", len(b), ErrFormat)
	}
	maxLen := int32(binary.LittleEndian.Uint32(b))
	if maxLen <= 0 || maxLen > 1<<16 {
		return nil, nil, nil, fmt.Errorf("llama2c: tokenizer max token length %d: %w", maxLen, ErrFormat)
	}
	b = b[4:]
	if vocab > len(b)/8 {
		return nil, nil, nil, fmt.Errorf("llama2c: tokenizer too short for %d tokens: %w", vocab, ErrFormat)
	}
	tokens, scores, types = make([]string, vocab), make([]float32, vocab), make([]int32, vocab)
	for i := range vocab {
		if len(b) < 8 {
			return nil, nil, nil, fmt.Errorf("llama2c: tokenizer ends at token %d of %d: %w", i, vocab, ErrFormat)
		}
		scores[i] = math.Float32frombits(binary.LittleEndian.Uint32(b))
		n := int32(binary.LittleEndian.Uint32(b[4:]))
		b = b[8:]
		if n < 0 || n > maxLen || int(n) > len(b) {
			return nil, nil, nil, fmt.Errorf("llama2c: tokenizer token %d has length %d: %w", i, n, ErrFormat)
		}
		tokens[i], b = string(b[:n]), b[n:]
		types[i] = 1 // normal
		switch {
		case i == 0:
			tokens[i], types[i] = "<unk>", 2
		case i == 1:
			tokens[i], types[i] = "<s>", 3
		case i == 2:
			tokens[i], types[i] = "</s>", 3
		case byteToken.MatchString(tokens[i]):
			types[i] = 6
		default:
			// llama2.c keeps spaces; SentencePiece vocabularies mark them "▁".
			tokens[i] = strings.ReplaceAll(tokens[i], " ", "▁")
		}
	}
	return tokens, scores, types, nil
}
