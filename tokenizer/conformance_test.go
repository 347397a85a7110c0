package tokenizer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/spigot-llm/spigot/gguf"
)

// sharedDir is the project's shared/ directory, beside the repository root.
const sharedDir = "../../shared"

var vocabDir = filepath.Join(sharedDir, "vocab")

// The vocabularies with llama.cpp test vectors (bert-bge is WordPiece, which
// this package does not implement).
var conformanceVocabs = []string{
	"llama-spm", "phi-3", "gpt-2", "falcon", "mpt", "refact", "starcoder",
	"deepseek-coder", "deepseek-llm",
}

var (
	loadMu sync.Mutex
	loaded = map[string]*Tokenizer{}
)

// loadGGUF returns the Tokenizer of a GGUF file, loading each file once.
func loadGGUF(t testing.TB, path string) *Tokenizer {
	t.Helper()
	loadMu.Lock()
	defer loadMu.Unlock()
	if tok, ok := loaded[path]; ok {
		return tok
	}
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatalf("opening vocabulary: %v", err)
	}
	defer f.Close()
	tok, err := FromGGUF(f)
	if err != nil {
		t.Fatalf("FromGGUF(%s): %v", path, err)
	}
	loaded[path] = tok
	return tok
}

func loadVocab(t testing.TB, name string) *Tokenizer {
	t.Helper()
	return loadGGUF(t, filepath.Join(vocabDir, "ggml-vocab-"+name+".gguf"))
}

// readVectors parses a .inp/.out pair as shared/vocab/README.md describes.
func readVectors(t testing.TB, name string) (inputs []string, want [][]int32) {
	t.Helper()
	base := filepath.Join(vocabDir, "ggml-vocab-"+name+".gguf")
	inp, err := os.ReadFile(base + ".inp")
	if err != nil {
		t.Fatalf("reading test inputs: %v", err)
	}
	out, err := os.ReadFile(base + ".out")
	if err != nil {
		t.Fatalf("reading expected ids: %v", err)
	}
	inputs = strings.Split(string(inp), "\n__ggml_vocab_test__\n")
	if inputs[len(inputs)-1] == "" {
		inputs = inputs[:len(inputs)-1]
	}
	lines := strings.Split(string(out), "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	if len(lines) != len(inputs) {
		t.Fatalf("%s: %d inputs but %d expected lines", name, len(inputs), len(lines))
	}
	for i, l := range lines {
		ids := []int32{}
		for _, f := range strings.Fields(l) {
			x, err := strconv.ParseInt(f, 10, 32)
			if err != nil {
				t.Fatalf("%s.out line %d: %v", name, i+1, err)
			}
			ids = append(ids, int32(x))
		}
		want = append(want, ids)
	}
	if len(inputs) == 0 {
		t.Fatalf("%s: no test vectors", name)
	}
	return inputs, want
}

// TestConformance tokenizes llama.cpp's test inputs for each vocabulary and
// compares with llama.cpp's ids, as its tests/test-tokenizer-0.cpp does: no
// BOS/EOS, special-token text is plain text. Cases run in parallel, to catch
// data races under -race.
func TestConformance(t *testing.T) {
	if _, err := os.Stat(vocabDir); err != nil {
		t.Fatalf("test vectors missing: %v", err)
	}
	for _, name := range conformanceVocabs {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			tok := loadVocab(t, name)
			inputs, want := readVectors(t, name)
			var mu sync.Mutex
			passed := 0
			t.Cleanup(func() { t.Logf("%s: %d/%d cases pass", name, passed, len(inputs)) })
			for i, in := range inputs {
				t.Run(strconv.Itoa(i), func(t *testing.T) {
					t.Parallel()
					got := tok.Encode(in, false, false)
					if !slices.Equal(got, want[i]) {
						t.Errorf("Encode(%q) =\n%v, want\n%v", in, got, want[i])
						return
					}
					mu.Lock()
					passed++
					mu.Unlock()
				})
			}
		})
	}
}

// TestRoundTripNoVectors loads the vocabularies llama.cpp has no vectors
// for and checks that decoding undoes encoding.
func TestRoundTripNoVectors(t *testing.T) {
	inputs := []string{
		"Hello world",
		"Hello, world! How are you?",
		"  leading spaces and trailing  ",
		"line one\nline two\n\n\ttabbed",
		"numbers 1234567 and 3.14",
		"unicode: нещо на Български, 我想在apple工作, 🦙",
	}
	for _, name := range []string{"baichuan", "gpt-neox"} {
		t.Run(name, func(t *testing.T) {
			tok := loadVocab(t, name)
			for _, s := range inputs {
				ids := tok.Encode(s, false, false)
				got := tok.Decode(ids)
				want := s
				if name == "gpt-neox" {
					// gpt-neox's default pre-tokenizer keeps clean_spaces on.
					want = cleanSpacesRef(s)
				}
				if got != want {
					t.Errorf("Decode(Encode(%q)) = %q, want %q (ids %v)", s, got, want, ids)
				}
			}
		})
	}
}

func TestStories260K(t *testing.T) {
	tok := loadGGUF(t, filepath.Join(sharedDir, "models", "stories260K.gguf"))
	got := tok.Encode("Once upon a time, there was a little", true, false)
	want := []int32{1, 403, 407, 261, 378, 432, 383, 286, 261, 376}
	if !slices.Equal(got, want) {
		t.Errorf("Encode = %v, want %v", got, want)
	}
	data, err := os.ReadFile(filepath.Join(sharedDir, "reference", "greedy-stories260K.jsonl"))
	if err != nil {
		t.Fatalf("reading reference: %v", err)
	}
	lines := bytes.Split(bytes.TrimSpace(data), []byte("\n"))
	if len(lines) != 8 {
		t.Fatalf("reference has %d lines, want 8", len(lines))
	}
	for i, l := range lines {
		var ref struct {
			Prompt     string  `json:"prompt"`
			PromptIDs  []int32 `json:"prompt_ids"`
			OutputIDs  []int32 `json:"output_ids"`
			OutputText string  `json:"output_text"`
		}
		if err := json.Unmarshal(l, &ref); err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		if got := tok.Encode(ref.Prompt, true, false); !slices.Equal(got, ref.PromptIDs) {
			t.Errorf("Encode(%q) = %v, want %v", ref.Prompt, got, ref.PromptIDs)
		}
		if got := tok.Decode(ref.OutputIDs); got != ref.OutputText {
			t.Errorf("Decode(%v) = %q, want %q", ref.OutputIDs, got, ref.OutputText)
		}
		d := tok.NewDecoder()
		var b []byte
		for _, id := range ref.OutputIDs {
			b = d.Append(b, id)
		}
		if b = d.Flush(b); string(b) != ref.OutputText {
			t.Errorf("Decoder on %v = %q, want %q", ref.OutputIDs, b, ref.OutputText)
		}
	}
}

// cleanSpacesRef is llama.cpp's clean_up_tokenization_spaces, three passes
// over the whole text, ported literally as the reference for the streaming
// cleaner.
func cleanSpacesRef(s string) string {
	text := []byte(s)
	pass := func(f func(text []byte, total, i int) (int, int)) {
		n := len(text)
		total := 0
		if n > 0 {
			total = 1
		}
		for i := 1; i < n; i++ {
			total, i = f(text, total, i)
		}
		text = text[:total]
	}
	pass(func(text []byte, total, i int) (int, int) {
		x := text[i]
		if text[i-1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',') {
			total--
		}
		text[total] = x
		return total + 1, i
	})
	pass(func(text []byte, total, i int) (int, int) {
		x := text[i]
		if x == '\'' && i+1 < len(text) && text[i-1] == ' ' && text[i+1] == ' ' {
			total--
			i++
			text[i] = 0
		}
		text[total] = x
		return total + 1, i
	})
	pass(func(text []byte, total, i int) (int, int) {
		x := text[i]
		if text[i-1] == ' ' && x == '\'' && i+1 < len(text) {
			x1 := text[i+1]
			if x1 == 's' || x1 == 'm' {
				total--
			} else if i+2 < len(text) {
				x2 := text[i+2]
				if (x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e') {
					total--
				}
			}
		}
		text[total] = x
		return total + 1, i
	})
	return string(text)
}

func ExampleTokenizer_Encode() {
	f, err := gguf.Open(filepath.Join(sharedDir, "models", "stories260K.gguf"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer f.Close()
	tok, err := FromGGUF(f)
	if err != nil {
		fmt.Println(err)
		return
	}
	ids := tok.Encode("Once upon a time", true, false)
	fmt.Printf("%v %q\n", ids, tok.Decode(ids[1:]))
	// Output: [1 403 407 261 378] "Once upon a time"
}
