package engine

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spigot-llm/spigot/engine/sample"
	"github.com/spigot-llm/spigot/gguf"
	"github.com/spigot-llm/spigot/kernels"
	"github.com/spigot-llm/spigot/model"
	_ "github.com/spigot-llm/spigot/model/llama"
	"github.com/spigot-llm/spigot/tokenizer"
)

var sharedDir = filepath.Join("..", "..", "shared")

type reference struct {
	Prompt     string  `json:"prompt"`
	PromptIDs  []int32 `json:"prompt_ids"`
	OutputIDs  []int32 `json:"output_ids"`
	OutputText string  `json:"output_text"`
}

func setup(t *testing.T) (*Engine, []reference) {
	t.Helper()
	f, err := gguf.Open(filepath.Join(sharedDir, "models", "stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	pool := kernels.NewPool(2)
	t.Cleanup(pool.Close)
	m, err := model.Load(f, model.Options{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(Config{Model: m, Tokenizer: tok, Parallel: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
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
		t.Fatal("no references")
	}
	return e, refs
}

type collected struct {
	ids  []int32
	text strings.Builder
}

func (c *collected) emit(ev Event) error {
	if ev.Token >= 0 {
		c.ids = append(c.ids, ev.Token)
	}
	c.text.WriteString(ev.Text)
	return nil
}

// TestGreedyReference runs every reference prompt through tokenizer and
// engine and compares ids and text with llama.cpp's.
func TestGreedyReference(t *testing.T) {
	g, refs := setup(t)
	for _, r := range refs {
		prompt := g.cfg.Tokenizer.Encode(r.Prompt, true, false)
		if !equal(prompt, r.PromptIDs) {
			t.Errorf("%q tokenizes to %v, llama.cpp: %v", r.Prompt, prompt, r.PromptIDs)
			continue
		}
		var c collected
		res, err := g.Generate(context.Background(), Request{Prompt: prompt, MaxTokens: len(r.OutputIDs)}, c.emit)
		if err != nil {
			t.Fatal(err)
		}
		if !equal(c.ids, r.OutputIDs) || c.text.String() != r.OutputText {
			t.Errorf("%q:\n got %v %q\nwant %v %q", r.Prompt, c.ids, c.text.String(), r.OutputIDs, r.OutputText)
		}
		if res.FinishReason != FinishLength || res.Tokens != len(r.OutputIDs) || res.PromptTokens != len(prompt) {
			t.Errorf("result %+v", res)
		}
	}
	if n := g.Cache().BlocksInUse(); n != 0 {
		t.Errorf("%d KV blocks still in use", n)
	}
}

func equal(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestStopString stops at a stop string taken from the middle of a known
// greedy continuation: the text before it is emitted, it and what follows
// are not.
func TestStopString(t *testing.T) {
	g, refs := setup(t)
	r := refs[1]
	want := r.OutputText
	runes := []rune(want)
	stopStr := string(runes[len(runes)/2 : len(runes)/2+3])
	// The text must end right before the first occurrence.
	first := strings.Index(want, stopStr)
	var c collected
	res, err := g.Generate(context.Background(), Request{Prompt: r.PromptIDs, MaxTokens: 48, Stop: []string{stopStr}}, c.emit)
	if err != nil {
		t.Fatal(err)
	}
	if c.text.String() != want[:first] || res.FinishReason != FinishStop {
		t.Errorf("stop %q: got %q (%s), want %q", stopStr, c.text.String(), res.FinishReason, want[:first])
	}
}

func TestSeededSamplingIsReproducible(t *testing.T) {
	g, refs := setup(t)
	run := func(seed uint64) string {
		var c collected
		p := sample.Params{Temperature: 1, TopK: 40, TopP: 0.95, Seed: seed}
		if _, err := g.Generate(context.Background(), Request{Prompt: refs[0].PromptIDs, MaxTokens: 32, Sample: p}, c.emit); err != nil {
			t.Fatal(err)
		}
		return c.text.String()
	}
	a, b, other := run(7), run(7), run(8)
	if a != b {
		t.Errorf("same seed gave %q and %q", a, b)
	}
	if a == other {
		t.Errorf("seeds 7 and 8 gave the same text %q", a)
	}
}

func TestErrors(t *testing.T) {
	g, refs := setup(t)
	noop := func(Event) error { return nil }
	if _, err := g.Generate(context.Background(), Request{}, noop); err == nil {
		t.Error("empty prompt accepted")
	}
	long := make([]int32, 200)
	if _, err := g.Generate(context.Background(), Request{Prompt: long}, noop); err == nil || !strings.Contains(err.Error(), "context") {
		t.Errorf("prompt longer than the context: %v", err)
	}
	if _, err := g.Generate(context.Background(), Request{Prompt: refs[0].PromptIDs, Sample: sample.Params{Temperature: -1}}, noop); !errors.Is(err, sample.ErrInvalidParams) {
		t.Errorf("negative temperature: %v", err)
	}
	// Cancelling after the first event ends the stream with ErrCanceled at
	// the next step, before the 118 tokens the context leaves. On a loaded
	// machine the engine can run far ahead of this reader, even to the
	// end: then try again.
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithCancel(context.Background())
		res, err := g.Generate(ctx, Request{Prompt: refs[0].PromptIDs, IgnoreEOS: true}, func(Event) error {
			cancel()
			return nil
		})
		if err == nil && attempt < 10 {
			continue
		}
		if !errors.Is(err, ErrCanceled) || res.Tokens >= 118 {
			t.Errorf("cancelled after the first event: err %v after %d tokens", err, res.Tokens)
		}
		break
	}
	if got := g.Cache().BlocksInUse(); got != 0 {
		t.Errorf("%d blocks in use after cancellation", got)
	}
	// Generation to the end of the context finishes with "length".
	res, err := g.Generate(context.Background(), Request{Prompt: refs[0].PromptIDs, IgnoreEOS: true}, noop)
	if err != nil || res.FinishReason != FinishLength || res.PromptTokens+res.Tokens != g.cfg.Context {
		t.Errorf("run to the context end: %+v %v", res, err)
	}
}

// TestLeadingSpaceKept forces a first token that starts with SentencePiece's
// space marker: the space continues the prompt and must be streamed.
func TestLeadingSpaceKept(t *testing.T) {
	g, refs := setup(t)
	const spaceA = 261 // "▁a"
	var c collected
	p := sample.Params{LogitBias: map[int32]float32{spaceA: 1000}}
	if _, err := g.Generate(context.Background(), Request{Prompt: refs[0].PromptIDs, MaxTokens: 1, Sample: p}, c.emit); err != nil {
		t.Fatal(err)
	}
	if c.text.String() != " a" {
		t.Errorf("first piece %q, want \" a\"", c.text.String())
	}
}
