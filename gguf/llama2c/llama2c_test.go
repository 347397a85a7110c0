package llama2c

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/spigot-llm/spigot/gguf"
)

var shared = filepath.Join("..", "..", "..", "shared", "models")

// TestMatchesConvertedGGUF checks the loader against the GGUF file that
// llama.cpp's converter made from the same two files: same tensors, same
// bytes, same vocabulary.
func TestMatchesConvertedGGUF(t *testing.T) {
	f, err := Open(filepath.Join(shared, "stories260K.bin"), filepath.Join(shared, "tok512.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ref, err := gguf.Open(filepath.Join(shared, "stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	if len(f.Tensors) != len(ref.Tensors) {
		t.Errorf("%d tensors, converter wrote %d", len(f.Tensors), len(ref.Tensors))
	}
	for _, want := range ref.Tensors {
		got, ok := f.Tensor(want.Name)
		if !ok {
			t.Errorf("tensor %s missing", want.Name)
			continue
		}
		if !reflect.DeepEqual(got.Dims, want.Dims) || got.Type != want.Type || !bytes.Equal(got.Data, want.Data) {
			t.Errorf("tensor %s: %s %v differs from the converter's %s %v", want.Name, got.Type, got.Dims, want.Type, want.Dims)
		}
	}
	for _, key := range []string{"tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type", "tokenizer.ggml.model",
		"llama.embedding_length", "llama.feed_forward_length", "llama.block_count", "llama.attention.head_count",
		"llama.attention.head_count_kv", "llama.rope.dimension_count", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"} {
		a, _ := f.Lookup(key)
		b, _ := ref.Lookup(key)
		if !reflect.DeepEqual(a.Any(), b.Any()) {
			t.Errorf("%s = %v, converter wrote %v", key, a, b)
		}
	}
}

func TestMalformed(t *testing.T) {
	model, err := os.ReadFile(filepath.Join(shared, "stories260K.bin"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := os.ReadFile(filepath.Join(shared, "tok512.bin"))
	if err != nil {
		t.Fatal(err)
	}
	badHeader := append([]byte(nil), model...)
	badHeader[0] = 0xff // dim becomes negative... or huge
	badHeader[3] = 0xff
	cases := []struct {
		name       string
		model, tok []byte
	}{
		{"empty", nil, tok},
		{"truncated weights", model[:len(model)/2], tok},
		{"bad header", badHeader, tok},
		{"versioned", []byte("24ka\x01\x00\x00\x00"), tok},
		{"truncated tokenizer", model, tok[:len(tok)/2]},
		{"empty tokenizer", model, nil},
	}
	for _, tc := range cases {
		if _, err := Parse(tc.model, tc.tok, nil); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: Parse = %v, want ErrFormat", tc.name, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	model, _ := os.ReadFile(filepath.Join(shared, "stories260K.bin"))
	tok, _ := os.ReadFile(filepath.Join(shared, "tok512.bin"))
	if len(model) > 4096 {
		f.Add(model[:4096], tok)
	}
	f.Fuzz(func(t *testing.T, model, tok []byte) {
		if _, err := Parse(model, tok, nil); err != nil && !errors.Is(err, ErrFormat) {
			t.Fatalf("error %v does not wrap ErrFormat", err)
		}
	})
}
