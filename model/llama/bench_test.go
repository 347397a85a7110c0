package llama

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/spigot-llm/spigot/gguf"
	"github.com/spigot-llm/spigot/internal/synth"
	"github.com/spigot-llm/spigot/kernels"
	"github.com/spigot-llm/spigot/model"
	"github.com/spigot-llm/spigot/quant"
)

var (
	synthMu    sync.Mutex
	synthFiles = map[string]string{}
	synthDir   string
)

// synthModel writes (once per test binary) a random-weight model of the
// given shape and type, the same file `spigot synth` writes.
func synthModel(b *testing.B, shape string, typ quant.Type) string {
	synthMu.Lock()
	defer synthMu.Unlock()
	key := shape + "-" + typ.String()
	if p, ok := synthFiles[key]; ok {
		return p
	}
	if synthDir == "" {
		d, err := os.MkdirTemp("", "spigot-bench")
		if err != nil {
			b.Fatal(err)
		}
		synthDir = d
	}
	vocab, err := gguf.Open(filepath.Join(sharedDir, "vocab", "ggml-vocab-llama-spm.gguf"))
	if err != nil {
		b.Fatal(err)
	}
	defer vocab.Close()
	path := filepath.Join(synthDir, key+".gguf")
	fd, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(fd)
	if err := synth.Write(w, shape, synth.Shapes[shape], typ, vocab); err != nil {
		b.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	fd.Close()
	synthFiles[key] = path
	return path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if synthDir != "" {
		os.RemoveAll(synthDir)
	}
	os.Exit(code)
}

// BenchmarkModel measures what llama-bench calls pp512 (one 512-token prompt
// in a single batch) and tg128 (128 tokens decoded one at a time from an
// empty context), reporting tokens per second, on synthesized models.
func BenchmarkModel(b *testing.B) {
	for _, shape := range []string{"s15M", "s110M"} {
		for _, typ := range []quant.Type{quant.F32, quant.Q8_0} {
			b.Run(fmt.Sprintf("%s/%s", shape, typ), func(b *testing.B) {
				benchModel(b, synthModel(b, shape, typ))
			})
		}
	}
}

var benchFiles = flag.String("models", "", "comma-separated GGUF files for BenchmarkModelFile")

// BenchmarkModelFile is BenchmarkModel on the model files named by -models
// (such as a Q4_K_M file made with llama-quantize), to compare with
// llama-bench on the same file:
//
//	go test ./model/llama -run '^$' -bench ModelFile -benchtime 3x -args -models /work/models/tl1B-Q4_K_M.gguf
func BenchmarkModelFile(b *testing.B) {
	if *benchFiles == "" {
		return
	}
	for _, path := range strings.Split(*benchFiles, ",") {
		b.Run(strings.TrimSuffix(filepath.Base(path), ".gguf"), func(b *testing.B) {
			benchModel(b, path)
		})
	}
}

// benchModel runs pp512 and tg128 on the model file at path, on all cores.
func benchModel(b *testing.B, path string) {
	f, err := gguf.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	pool := kernels.NewPool(0)
	defer pool.Close()
	m, err := model.Load(f, model.Options{Pool: pool})
	if err != nil {
		b.Fatal(err)
	}
	cfg := m.Config()
	cache, err := m.NewCache(1024/16, 16)
	if err != nil {
		b.Fatal(err)
	}
	logits := make([]float32, cfg.Vocab)
	b.Run("pp512", func(b *testing.B) {
		var batch model.Batch
		for b.Loop() {
			seq := cache.NewSeq()
			batch.Reset()
			for i := range 512 {
				batch.Add(int32(100+i), i, seq, i == 511)
			}
			if err := m.Forward(&batch, logits); err != nil {
				b.Fatal(err)
			}
			seq.Release()
		}
		b.ReportMetric(512*float64(b.N)/b.Elapsed().Seconds(), "tok/s")
	})
	b.Run("tg128", func(b *testing.B) {
		var batch model.Batch
		for b.Loop() {
			seq := cache.NewSeq()
			tok := int32(1)
			for i := range 128 {
				batch.Reset()
				batch.Add(tok, i, seq, true)
				if err := m.Forward(&batch, logits); err != nil {
					b.Fatal(err)
				}
				tok = argmax(logits)
			}
			seq.Release()
		}
		b.ReportMetric(128*float64(b.N)/b.Elapsed().Seconds(), "tok/s")
	})
}
