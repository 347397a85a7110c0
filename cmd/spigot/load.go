package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spigot-llm/spigot/gguf"
	"github.com/spigot-llm/spigot/gguf/llama2c"
	"github.com/spigot-llm/spigot/hub"
	"github.com/spigot-llm/spigot/kernels"
	"github.com/spigot-llm/spigot/model"
	_ "github.com/spigot-llm/spigot/model/llama" // registers llama, qwen2
	"github.com/spigot-llm/spigot/tokenizer"
)

// openFile opens a GGUF file, or a llama2.c checkpoint (.bin) with its
// tokenizer: tokPath, or else tokenizer.bin or the only tok*.bin beside it.
func openFile(path, tokPath string) (*gguf.File, error) {
	if path == "" {
		return nil, fmt.Errorf("no model given: use -m FILE.gguf")
	}
	if hub.IsRef(path) { // hf:OWNER/REPO/FILE.gguf: downloaded once into the cache
		local, err := hub.NewClient().Resolve(context.Background(), path)
		if err != nil {
			return nil, err
		}
		path = local
	}
	if !strings.HasSuffix(path, ".bin") {
		return gguf.Open(path)
	}
	if tokPath == "" {
		dir := filepath.Dir(path)
		if _, err := os.Stat(filepath.Join(dir, "tokenizer.bin")); err == nil {
			tokPath = filepath.Join(dir, "tokenizer.bin")
		} else if m, _ := filepath.Glob(filepath.Join(dir, "tok*.bin")); len(m) == 1 {
			tokPath = m[0]
		} else {
			return nil, fmt.Errorf("%s is a llama2.c checkpoint: name its tokenizer with --tokenizer", path)
		}
	}
	return llama2c.Open(path, tokPath)
}

// loaded is a model ready to generate.
type loaded struct {
	file  *gguf.File
	model model.Model
	tok   *tokenizer.Tokenizer
	pool  *kernels.Pool
}

func load(path, tokPath string, threads int) (*loaded, error) {
	f, err := openFile(path, tokPath)
	if err != nil {
		return nil, err
	}
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	pool := kernels.NewPool(threads)
	m, err := model.Load(f, model.Options{Pool: pool})
	if err != nil {
		pool.Close()
		f.Close()
		return nil, err
	}
	return &loaded{file: f, model: m, tok: tok, pool: pool}, nil
}

func (l *loaded) Close() {
	l.pool.Close()
	l.file.Close()
}
