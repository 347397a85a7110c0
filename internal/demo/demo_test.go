package demo

import (
	"strings"
	"testing"

	"github.com/spigot-llm/spigot/kernels"
	"github.com/spigot-llm/spigot/model"
	_ "github.com/spigot-llm/spigot/model/llama"
	"github.com/spigot-llm/spigot/tokenizer"
)

func TestDemoLoadsAndTokenizesAnything(t *testing.T) {
	f, err := File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	if tok.NVocab() != 260 || tok.BOS() != 1 || tok.EOS() != 2 {
		t.Errorf("vocab %d, BOS %d, EOS %d; want 260, 1, 2", tok.NVocab(), tok.BOS(), tok.EOS())
	}
	for _, text := range []string{"hello", "héllo wörld ✓ 🙂", "<|im_start|>user\nhi"} {
		ids := tok.Encode(text, true, true)
		if ids[0] != 1 {
			t.Errorf("Encode(%q) = %v, want BOS first", text, ids)
		}
		if got := tok.Decode(ids); strings.TrimPrefix(got, " ") != text {
			t.Errorf("Decode(Encode(%q)) = %q", text, got)
		}
	}
	pool := kernels.NewPool(1)
	defer pool.Close()
	m, err := model.Load(f, model.Options{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	if c := m.Config(); c.Vocab != 260 || c.Context != Shape.Context {
		t.Errorf("config %+v", c)
	}
}
