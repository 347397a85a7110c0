package quantize

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/spigot-llm/spigot/gguf"
	"github.com/spigot-llm/spigot/kernels"
	"github.com/spigot-llm/spigot/model"
	_ "github.com/spigot-llm/spigot/model/llama"
	"github.com/spigot-llm/spigot/quant"
)

var shared = filepath.Join("..", "..", "shared")

type reference struct {
	PromptIDs []int32 `json:"prompt_ids"`
	OutputIDs []int32 `json:"output_ids"`
}

func references(t *testing.T) []reference {
	fd, err := os.Open(filepath.Join(shared, "reference", "greedy-stories260K.jsonl"))
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
	return refs
}

// agreement runs every reference through f with teacher forcing (the next
// input is always llama.cpp's token) and counts the steps whose argmax is
// llama.cpp's token on the original file. Free-running agreement says
// little here: this gibberish model has many near-ties, and one flipped
// token sends the rest of a continuation elsewhere.
func agreement(t *testing.T, f *gguf.File) (agree, total int) {
	pool := kernels.NewPool(2)
	defer pool.Close()
	m, err := model.Load(f, model.Options{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	cache, _ := m.NewCache(16, 16)
	logits := make([]float32, m.Config().Vocab)
	for _, r := range references(t) {
		seq := cache.NewSeq()
		var b model.Batch
		for i, id := range r.PromptIDs {
			b.Add(id, i, seq, i == len(r.PromptIDs)-1)
		}
		for _, want := range r.OutputIDs {
			if err := m.Forward(&b, logits); err != nil {
				t.Fatal(err)
			}
			if int32(kernels.ArgMax(logits)) == want {
				agree++
			}
			b.Reset()
			b.Add(want, seq.Len(), seq, true)
		}
		seq.Release()
		total += len(r.OutputIDs)
	}
	return agree, total
}

func TestQuantizeStories(t *testing.T) {
	src, err := gguf.Open(filepath.Join(shared, "models", "stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	for _, tc := range []struct {
		typ quant.Type
		min float64 // share of teacher-forced steps whose argmax must agree
	}{
		{quant.F32, 1}, // a copy
		{quant.F16, 0.95},
		{quant.Q8_0, 0.8}, // measured 320/384: the model has many near-ties
	} {
		var buf bytes.Buffer
		if err := Write(&buf, src, tc.typ); err != nil {
			t.Fatal(err)
		}
		f, err := gguf.Parse(buf.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if q, _ := f.Tensor("blk.0.attn_q.weight"); q.Type != tc.typ {
			t.Errorf("attn_q is %s, want %s", q.Type, tc.typ)
		}
		if n, _ := f.Tensor("blk.0.attn_norm.weight"); n.Type != quant.F32 {
			t.Errorf("a norm became %s", n.Type)
		}
		if d, _ := f.Tensor("blk.0.ffn_down.weight"); tc.typ.BlockSize() > 1 && d.Type != quant.F32 {
			t.Errorf("ffn_down (rows of 172) became %s; 172 is not a whole number of blocks", d.Type)
		}
		agree, total := agreement(t, f)
		t.Logf("%s: %d of %d teacher-forced steps agree with llama.cpp's greedy choice", tc.typ, agree, total)
		if float64(agree) < tc.min*float64(total) {
			t.Errorf("%s: only %d of %d tokens agree", tc.typ, agree, total)
		}
	}
}

func TestQuantizeRejects(t *testing.T) {
	src, err := gguf.Open(filepath.Join(shared, "models", "stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var buf bytes.Buffer
	if err := Write(&buf, src, quant.Q4_K); err == nil {
		t.Error("Q4_K accepted")
	}
}
