package llama

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/spigot-llm/spigot/gguf"
	"github.com/spigot-llm/spigot/gguf/llama2c"
	"github.com/spigot-llm/spigot/internal/synth"
	"github.com/spigot-llm/spigot/kernels"
	"github.com/spigot-llm/spigot/kvcache"
	"github.com/spigot-llm/spigot/model"
	"github.com/spigot-llm/spigot/quant"
)

var sharedDir = filepath.Join("..", "..", "..", "shared")

// synthFile is a model of the given shape and weight type with random
// weights and the shared Llama vocabulary, as spigot synth writes it,
// parsed from memory.
func synthFile(tb testing.TB, shape synth.Shape, typ quant.Type) *gguf.File {
	tb.Helper()
	vocab, err := gguf.Open(filepath.Join(sharedDir, "vocab", "ggml-vocab-llama-spm.gguf"))
	if err != nil {
		tb.Fatal(err)
	}
	defer vocab.Close()
	var buf bytes.Buffer
	if err := synth.Write(&buf, "synth", shape, typ, vocab); err != nil {
		tb.Fatal(err)
	}
	f, err := gguf.Parse(buf.Bytes())
	if err != nil {
		tb.Fatal(err)
	}
	return f
}

// reference is one line of ../shared/reference/greedy-stories260K.jsonl:
// llama.cpp's greedy continuation of a prompt.
type reference struct {
	Prompt     string  `json:"prompt"`
	PromptIDs  []int32 `json:"prompt_ids"`
	OutputIDs  []int32 `json:"output_ids"`
	OutputText string  `json:"output_text"`
}

func readReferences(t testing.TB) []reference {
	t.Helper()
	fd, err := os.Open(filepath.Join(sharedDir, "reference", "greedy-stories260K.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	var refs []reference
	sc := bufio.NewScanner(fd)
	for sc.Scan() {
		var r reference
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		refs = append(refs, r)
	}
	if len(refs) == 0 {
		t.Fatal("no reference cases")
	}
	return refs
}

func loadShared(t testing.TB, pool *kernels.Pool) model.Model {
	t.Helper()
	f, err := gguf.Open(filepath.Join(sharedDir, "models", "stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	m, err := model.Load(f, model.Options{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func argmax(x []float32) int32 {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return int32(best)
}

// greedy prefills the prompt in one batch and decodes n tokens greedily.
func greedy(t testing.TB, m model.Model, cache *kvcache.Cache, prompt []int32, n int) []int32 {
	t.Helper()
	seq := cache.NewSeq()
	defer seq.Release()
	vocab := m.Config().Vocab
	logits := make([]float32, vocab)
	var b model.Batch
	for i, id := range prompt {
		b.Add(id, i, seq, i == len(prompt)-1)
	}
	var out []int32
	for len(out) < n {
		if err := m.Forward(&b, logits); err != nil {
			t.Fatal(err)
		}
		id := argmax(logits)
		out = append(out, id)
		b.Reset()
		b.Add(id, seq.Len(), seq, true)
	}
	return out
}

// TestGreedyMatchesLlamaCpp decodes every reference prompt greedily and
// compares the ids with llama.cpp's.
func TestGreedyMatchesLlamaCpp(t *testing.T) {
	for _, threads := range []int{1, 2} {
		pool := kernels.NewPool(threads)
		defer pool.Close()
		m := loadShared(t, pool)
		cache, err := m.NewCache(64, 16)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range readReferences(t) {
			got := greedy(t, m, cache, r.PromptIDs, len(r.OutputIDs))
			for i := range got {
				if got[i] != r.OutputIDs[i] {
					t.Errorf("threads=%d, %q: token %d = %d, llama.cpp has %d\n got %v\nwant %v", threads, r.Prompt, i, got[i], r.OutputIDs[i], got, r.OutputIDs)
					break
				}
			}
		}
		if n := cache.BlocksInUse(); n != 0 {
			t.Errorf("%d blocks in use after all sequences were released", n)
		}
	}
}

// TestBatchedEqualsSeparate runs several sequences in one batch (mixing a
// prompt prefill with single-token decodes) and checks that each gets the
// logits it gets alone.
func TestBatchedEqualsSeparate(t *testing.T) {
	pool := kernels.NewPool(2)
	defer pool.Close()
	m := loadShared(t, pool)
	vocab := m.Config().Vocab
	cache, err := m.NewCache(64, 16)
	if err != nil {
		t.Fatal(err)
	}
	refs := readReferences(t)[:3]
	// Alone: each prompt, then one more token.
	alone := make([][]float32, len(refs))
	for i, r := range refs {
		seq := cache.NewSeq()
		var b model.Batch
		for j, id := range r.PromptIDs {
			b.Add(id, j, seq, false)
		}
		if err := m.Forward(&b, nil); err != nil {
			t.Fatal(err)
		}
		b.Reset()
		b.Add(r.OutputIDs[0], seq.Len(), seq, true)
		alone[i] = make([]float32, vocab)
		if err := m.Forward(&b, alone[i]); err != nil {
			t.Fatal(err)
		}
		seq.Release()
	}
	// Together: sequence 0 is prefilled first; then one batch holds its next
	// token together with the whole prompts (and first outputs) of 1 and 2.
	seqs := []*kvcache.Seq{cache.NewSeq(), cache.NewSeq(), cache.NewSeq()}
	var b model.Batch
	for j, id := range refs[0].PromptIDs {
		b.Add(id, j, seqs[0], false)
	}
	if err := m.Forward(&b, nil); err != nil {
		t.Fatal(err)
	}
	b.Reset()
	b.Add(refs[0].OutputIDs[0], seqs[0].Len(), seqs[0], true)
	for i := 1; i < 3; i++ {
		ids := append(append([]int32(nil), refs[i].PromptIDs...), refs[i].OutputIDs[0])
		for j, id := range ids {
			b.Add(id, j, seqs[i], j == len(ids)-1)
		}
	}
	together := make([]float32, 3*vocab)
	if err := m.Forward(&b, together); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		got := together[i*vocab : (i+1)*vocab]
		for j := range got {
			if d := math.Abs(float64(got[j] - alone[i][j])); d > 1e-4*(1+math.Abs(float64(alone[i][j]))) {
				t.Fatalf("sequence %d logit %d: batched %v, alone %v", i, j, got[j], alone[i][j])
			}
		}
		if seqs[i].Len() != len(refs[i].PromptIDs)+1 {
			t.Errorf("sequence %d length %d, want %d", i, seqs[i].Len(), len(refs[i].PromptIDs)+1)
		}
	}
}

func TestForwardRejectsBadBatches(t *testing.T) {
	pool := kernels.NewPool(1)
	defer pool.Close()
	m := loadShared(t, pool)
	cache, _ := m.NewCache(2, 16)
	seq := cache.NewSeq()
	logits := make([]float32, m.Config().Vocab)
	cases := []struct {
		name string
		b    model.Batch
	}{
		{"empty", model.Batch{}},
		{"token out of range", model.Batch{Tokens: []int32{9999}, Pos: []int32{0}, Seqs: []*kvcache.Seq{seq}, Logits: []bool{true}}},
		{"negative token", model.Batch{Tokens: []int32{-1}, Pos: []int32{0}, Seqs: []*kvcache.Seq{seq}, Logits: []bool{true}}},
		{"gap in positions", model.Batch{Tokens: []int32{1}, Pos: []int32{3}, Seqs: []*kvcache.Seq{seq}, Logits: []bool{true}}},
		{"length mismatch", model.Batch{Tokens: []int32{1, 2}, Pos: []int32{0}, Seqs: []*kvcache.Seq{seq}, Logits: []bool{true}}},
	}
	for _, tc := range cases {
		if err := m.Forward(&tc.b, logits); err == nil {
			t.Errorf("%s: Forward succeeded", tc.name)
		}
	}
	var b model.Batch
	for i := range 40 { // 3 blocks of 16; the cache has 2
		b.Add(1, i, seq, false)
	}
	if err := m.Forward(&b, logits); !errors.Is(err, kvcache.ErrFull) {
		t.Errorf("Forward past the cache = %v, want ErrFull", err)
	}
}

func TestLlama2cCheckpointMatchesGGUF(t *testing.T) {
	pool := kernels.NewPool(2)
	defer pool.Close()
	f, err := llama2c.Open(filepath.Join(sharedDir, "models", "stories260K.bin"), filepath.Join(sharedDir, "models", "tok512.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := model.Load(f, model.Options{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	cache, _ := m.NewCache(64, 16)
	r := readReferences(t)[0]
	got := greedy(t, m, cache, r.PromptIDs, len(r.OutputIDs))
	for i := range got {
		if got[i] != r.OutputIDs[i] {
			t.Fatalf("llama2.c checkpoint: token %d = %d, want %d", i, got[i], r.OutputIDs[i])
		}
	}
}

func TestUnsupportedArchitecture(t *testing.T) {
	f, err := gguf.New([]gguf.KV{{Key: "general.architecture", Value: gguf.Val("mamba")}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	pool := kernels.NewPool(1)
	defer pool.Close()
	if _, err := model.Load(f, model.Options{Pool: pool}); !errors.Is(err, model.ErrUnsupported) {
		t.Errorf("Load(mamba) = %v, want ErrUnsupported", err)
	}
}
