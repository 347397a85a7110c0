package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spigot-llm/spigot/gguf"
	"github.com/spigot-llm/spigot/internal/synth"
	"github.com/spigot-llm/spigot/quant"
)

func synthCmd(args []string, std stdio) error {
	fs := flag.NewFlagSet("synth", flag.ContinueOnError)
	fs.SetOutput(std.err)
	shape := fs.String("shape", "s15M", "model shape: "+strings.Join(synth.ShapeNames(), ", "))
	typ := fs.String("type", "F32", "weight type: F32, F16, BF16, Q8_0, Q4_0")
	out := fs.String("o", "", "output file")
	vocabPath := fs.String("vocab", filepath.Join("..", "shared", "vocab", "ggml-vocab-llama-spm.gguf"), "GGUF file whose tokenizer.* metadata to copy")
	if err := fs.Parse(args); err != nil {
		return err
	}
	s, ok := synth.Shapes[*shape]
	if !ok {
		return fmt.Errorf("unknown shape %q (have %s)", *shape, strings.Join(synth.ShapeNames(), ", "))
	}
	t, err := quant.ParseType(*typ)
	if err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("no output file: use -o FILE")
	}
	vocab, err := gguf.Open(*vocabPath)
	if err != nil {
		return fmt.Errorf("reading the vocabulary: %w", err)
	}
	defer vocab.Close()
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 4<<20)
	if err := synth.Write(w, *shape, s, t, vocab); err != nil {
		f.Close()
		os.Remove(*out)
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
