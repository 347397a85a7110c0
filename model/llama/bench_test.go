package llama

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/spigot-llm/spigot/gguf"
	"github.com/spigot-llm/spigot/internal/synth"
	"github.com/spigot-llm/spigot/kernels"
	"github.com/spigot-llm/spigot/kvcache"
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

// BenchmarkModel measures prompt processing (one 512-token batch) and
// generation (128 tokens one at a time), as llama-bench's pp512 and tg128
// do, on synth models; with SPIGOT_BENCH_MODELS set to a comma-separated
// list of GGUF files, on those files instead (to compare with llama-bench
// on the very same files).
func BenchmarkModel(b *testing.B) {
	if list := os.Getenv("SPIGOT_BENCH_MODELS"); list != "" {
		for _, path := range strings.Split(list, ",") {
			b.Run(strings.TrimSuffix(filepath.Base(path), ".gguf"), func(b *testing.B) { benchFile(b, path) })
		}
		return
	}
	for _, shape := range []string{"s15M", "s110M"} {
		for _, typ := range []quant.Type{quant.F32, quant.Q8_0} {
			b.Run(fmt.Sprintf("%s/%s", shape, typ), func(b *testing.B) { benchFile(b, synthModel(b, shape, typ)) })
		}
	}
}

func benchFile(b *testing.B, path string) {
	f, err := gguf.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	pool := kernels.NewPool(0) // all cores
	defer pool.Close()
	m, err := model.Load(f, model.Options{Pool: pool})
	if err != nil {
		b.Fatal(err)
	}
	cfg := m.Config()
	cache, err := m.NewCache((1024+16*320)/16, 16)
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
		tps := 128 * float64(b.N) / b.Elapsed().Seconds()
		b.ReportMetric(tps, "tok/s")
		b.ReportMetric(float64(weightBytes(f))*tps/1e9, "weight-GB/s")
	})
	// 16 sequences decoding together, each with 256 positions of context:
	// a server's steady state (tok/s counts all 16 streams).
	b.Run("tg16x64", func(b *testing.B) {
		const seqs, ctx = 16, 256
		var batch model.Batch
		all := make([]*kvcache.Seq, seqs)
		out := make([]float32, seqs*cfg.Vocab)
		for i := range all {
			all[i] = cache.NewSeq()
			batch.Reset()
			for p := range ctx {
				batch.Add(int32(100+(i*31+p)%1000), p, all[i], p == ctx-1)
			}
			if err := m.Forward(&batch, logits); err != nil {
				b.Fatal(err)
			}
		}
		for b.Loop() {
			for p := ctx; p < ctx+64; p++ {
				batch.Reset()
				for i, s := range all {
					s.SetLen(p)
					batch.Add(int32(7+i), p, s, true)
				}
				if err := m.Forward(&batch, out); err != nil {
					b.Fatal(err)
				}
			}
		}
		for _, s := range all {
			s.Release()
		}
		b.ReportMetric(seqs*64*float64(b.N)/b.Elapsed().Seconds(), "tok/s")
	})
	// A serving step under long prompts, as spigot serve runs 16 streams
	// of 512-token prompts (weights' tiles packed, 85 ms steps): 5
	// sequences decoding at 512 positions of context and a 46-token chunk
	// of another's prompt.
	b.Run("serve16", func(b *testing.B) {
		const seqs, ctx, decodes, chunk, at = 16, 512, 5, 46, 256
		m, err := model.Load(f, model.Options{Pool: pool, PackTiles: true}) // as spigot serve does
		if err != nil {
			b.Fatal(err)
		}
		cache, err := m.NewCache(seqs*(ctx+16)/16+8, 16)
		if err != nil {
			b.Fatal(err)
		}
		var batch model.Batch
		all := make([]*kvcache.Seq, seqs)
		out := make([]float32, (decodes+1)*cfg.Vocab)
		for i := range all {
			all[i] = cache.NewSeq()
			n := ctx
			if i == seqs-1 {
				n = at
			}
			for p0 := 0; p0 < n; p0 += 256 {
				batch.Reset()
				for p := p0; p < min(p0+256, n); p++ {
					batch.Add(int32(100+(i*31+p)%1000), p, all[i], p == n-1)
				}
				if err := m.Forward(&batch, logits); err != nil {
					b.Fatal(err)
				}
			}
		}
		step := 0
		for b.Loop() {
			batch.Reset()
			for j := range decodes {
				s := all[(step*decodes+j)%(seqs-1)]
				s.SetLen(ctx)
				batch.Add(int32(7+j), ctx, s, true)
			}
			all[seqs-1].SetLen(at)
			for p := at; p < at+chunk; p++ {
				batch.Add(int32(100+p%1000), p, all[seqs-1], p == at+chunk-1)
			}
			if err := m.Forward(&batch, out); err != nil {
				b.Fatal(err)
			}
			step++
		}
		b.ReportMetric((decodes+chunk)*float64(b.N)/b.Elapsed().Seconds(), "tok/s")
	})
}

// weightBytes is what a decode step reads of the weights: every tensor but
// the token embeddings, of which it reads one row (unless they double as
// the output matrix).
func weightBytes(f *gguf.File) uint64 {
	var n uint64
	tied := true
	for _, t := range f.Tensors {
		if t.Name == "output.weight" {
			tied = false
		}
	}
	for _, t := range f.Tensors {
		if t.Name != "token_embd.weight" || tied {
			n += t.Size
		}
	}
	return n
}

// BenchmarkDecodeStep measures one decode step of 16 sequences (one token
// each, 100 positions of context) on stories260K: the engine's steady
// state. allocs/op must stay 0: a step reuses the model's buffers.
func BenchmarkDecodeStep(b *testing.B) {
	pool := kernels.NewPool(0)
	defer pool.Close()
	m := loadShared(b, pool)
	cache, err := m.NewCache(16*8, 16)
	if err != nil {
		b.Fatal(err)
	}
	const seqs, ctx = 16, 100
	var batch model.Batch
	var all []*kvcache.Seq
	logits := make([]float32, seqs*m.Config().Vocab)
	for range seqs {
		s := cache.NewSeq()
		all = append(all, s)
		batch.Reset()
		for i := range ctx {
			batch.Add(int32(1+i%200), i, s, false)
		}
		if err := m.Forward(&batch, logits); err != nil {
			b.Fatal(err)
		}
	}
	step := func() {
		batch.Reset()
		for i, s := range all {
			s.SetLen(ctx)
			batch.Add(int32(7+i), ctx, s, true)
		}
		if err := m.Forward(&batch, logits); err != nil {
			b.Fatal(err)
		}
	}
	step() // grow the step's buffers
	b.ReportAllocs()
	for b.Loop() {
		step()
	}
	if a := testing.AllocsPerRun(10, step); a != 0 {
		b.Errorf("a decode step allocates %v times", a)
	}
}

// BenchmarkPrefillAttention measures the attention of one layer of a
// 512-token prompt alone, at s110M's shape (12 heads of 64): the part of
// prefill that grows with the square of the prompt.
func BenchmarkPrefillAttention(b *testing.B) {
	pool := kernels.NewPool(0)
	defer pool.Close()
	shape := synth.Shapes["s110M"]
	shape.Layers = 1
	mm, err := model.Load(synthFile(b, shape, quant.Q8_0), model.Options{Pool: pool})
	if err != nil {
		b.Fatal(err)
	}
	m := mm.(*Model)
	const n = 512
	cache, err := m.NewCache(n/16+1, 16)
	if err != nil {
		b.Fatal(err)
	}
	seq := cache.NewSeq()
	var batch model.Batch
	for i := range n {
		batch.Add(int32(3+i%900), i, seq, i == n-1)
	}
	if err := m.Forward(&batch, make([]float32, m.cfg.Vocab)); err != nil {
		b.Fatal(err)
	}
	s := &m.scratch
	q, att := s.q[:n*m.cfg.Heads*m.cfg.HeadDim], s.att[:n*m.cfg.Heads*m.cfg.HeadDim]
	b.ResetTimer()
	for b.Loop() {
		m.planAttention(&batch)
		s.growScores(pool.Threads(), m.taskLen)
		m.attn = attnArgs{b: &batch, layer: 0, q: q, out: att, scores: s.scores}
		pool.For(len(s.scores), m.attnFunc)
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "tok/s")
}
