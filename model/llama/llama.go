// Package llama implements the Llama family of decoder-only transformers as
// GGUF describes them: RMSNorm, rotary position embeddings (normal or NeoX
// pair ordering, base frequency, linear and llama3-style scaling),
// grouped-query attention and a SwiGLU feed-forward block, with tied or
// separate output weights. Qwen2 is the same network with biases on the query,
// key and value projections and NeoX rotation.
//
// Weights stay in the file's element type (any type package kernels can
// compute: F32, F16, BF16, Q8_0, Q4_0 and the K-quants with dedicated
// kernels) and are read straight from the file mapping. Attention reads the
// half-precision KV cache in tiles (see attend).
package llama

import (
	"fmt"
	"math"

	"github.com/spigot-llm/spigot/gguf"
	"github.com/spigot-llm/spigot/kernels"
	"github.com/spigot-llm/spigot/kvcache"
	"github.com/spigot-llm/spigot/model"
	"github.com/spigot-llm/spigot/quant"
)

func init() {
	model.Register(Load, "llama", "qwen2")
}

type layer struct {
	attnNorm, ffnNorm []float32
	wq, wk, wv, wo    kernels.Matrix
	bq, bk, bv        []float32 // Qwen2 only
	gate, up, down    kernels.Matrix
}

// Model is a loaded Llama-family model.
type Model struct {
	cfg       model.Config
	pool      *kernels.Pool
	attnScale float32
	eps       float32
	neox      bool
	ropeDim   int
	invFreq   []float32 // ropeDim/2 angular frequencies, scaling applied
	embd      kernels.Matrix
	outNorm   []float32
	output    kernels.Matrix
	layers    []layer
	scratch   scratch
	seqNext   map[*kvcache.Seq]int
	attnFunc  func(lo, hi int)
	attn      attnArgs
	rowsFunc  func(lo, hi int)
	rows      rowArgs
	tasks     []attnTask // this step's attention work
	taskLen   int        // the most scores a task needs
}

// scratch holds the activations of one step, grown to the largest batch.
type scratch struct {
	n          int
	x, xb, xb2 []float32 // n × dim
	q, att     []float32 // n × heads × headDim
	k, v       []float32 // n × kvDim
	hb, hb2    []float32 // n × ffn
	cos, sin   []float32 // n × ropeDim/2
	xs         []float32 // rows that want logits, n × dim
	scores     [][]float32
}

// growScores makes one attention score buffer per pool slot of at least n
// floats: 64 Ki at first, then doubling, so that growing contexts rarely
// reallocate.
func (s *scratch) growScores(slots, n int) {
	if len(s.scores) != slots {
		s.scores = make([][]float32, slots)
	}
	for w := range s.scores {
		if cap(s.scores[w]) < n {
			s.scores[w] = make([]float32, max(n, 2*cap(s.scores[w]), 64<<10))
		}
		s.scores[w] = s.scores[w][:cap(s.scores[w])]
	}
}

// Load builds a Llama or Qwen2 model from f.
func Load(f *gguf.File, opts model.Options) (model.Model, error) {
	arch, _ := f.String("general.architecture")
	m := &Model{pool: opts.Pool, neox: arch == "qwen2", seqNext: map[*kvcache.Seq]int{}}
	c := &m.cfg
	c.Arch = arch
	c.Name, _ = f.String("general.name")
	key := func(k string) string { return arch + "." + k }
	var err error
	need := func(k string) int {
		v, ok := f.Uint(key(k))
		if !ok || v == 0 || v > 1<<24 {
			if err == nil {
				err = fmt.Errorf("llama: metadata %s is missing or invalid", key(k))
			}
			return 1
		}
		return int(v)
	}
	c.Dim = need("embedding_length")
	c.Layers = need("block_count")
	c.Heads = need("attention.head_count")
	c.FFN = need("feed_forward_length")
	c.Context = need("context_length")
	if err != nil {
		return nil, err
	}
	c.KVHeads = c.Heads
	if v, ok := f.Uint(key("attention.head_count_kv")); ok {
		c.KVHeads = int(v)
	}
	if c.KVHeads <= 0 || c.Heads%c.KVHeads != 0 {
		return nil, fmt.Errorf("llama: %d attention heads cannot share %d KV heads", c.Heads, c.KVHeads)
	}
	c.HeadDim = c.Dim / c.Heads
	if v, ok := f.Uint(key("attention.key_length")); ok {
		c.HeadDim = int(v)
	}
	if v, ok := f.Uint(key("attention.value_length")); ok && int(v) != c.HeadDim {
		return nil, fmt.Errorf("llama: value length %d differs from key length %d: %w", v, c.HeadDim, model.ErrUnsupported)
	}
	if c.HeadDim <= 0 || c.HeadDim%2 != 0 || c.HeadDim > 1024 {
		return nil, fmt.Errorf("llama: head size %d is invalid", c.HeadDim)
	}
	m.eps = 1e-5
	if v, ok := f.Float(key("attention.layer_norm_rms_epsilon")); ok {
		m.eps = float32(v)
	}
	m.ropeDim = c.HeadDim
	if v, ok := f.Uint(key("rope.dimension_count")); ok {
		m.ropeDim = int(v)
	}
	if m.ropeDim <= 0 || m.ropeDim > c.HeadDim || m.ropeDim%2 != 0 {
		return nil, fmt.Errorf("llama: rope dimension %d does not fit head size %d", m.ropeDim, c.HeadDim)
	}
	if err := m.loadRoPE(f, key); err != nil {
		return nil, err
	}

	t := tensors{f: f}
	embd := t.matrix("token_embd.weight", c.Dim, -1)
	if t.err != nil {
		return nil, t.err
	}
	m.embd = embd
	c.Vocab = embd.Rows
	m.outNorm = t.vector("output_norm.weight", c.Dim)
	if _, ok := f.Tensor("output.weight"); ok {
		m.output = t.matrix("output.weight", c.Dim, c.Vocab)
	} else {
		m.output = embd // tied embeddings
	}
	qDim, kvDim := c.Heads*c.HeadDim, c.KVDim()
	m.layers = make([]layer, c.Layers)
	for i := range m.layers {
		l := &m.layers[i]
		p := fmt.Sprintf("blk.%d.", i)
		l.attnNorm = t.vector(p+"attn_norm.weight", c.Dim)
		l.wq = t.matrix(p+"attn_q.weight", c.Dim, qDim)
		l.wk = t.matrix(p+"attn_k.weight", c.Dim, kvDim)
		l.wv = t.matrix(p+"attn_v.weight", c.Dim, kvDim)
		l.wo = t.matrix(p+"attn_output.weight", qDim, c.Dim)
		l.ffnNorm = t.vector(p+"ffn_norm.weight", c.Dim)
		l.gate = t.matrix(p+"ffn_gate.weight", c.Dim, c.FFN)
		l.up = t.matrix(p+"ffn_up.weight", c.Dim, c.FFN)
		l.down = t.matrix(p+"ffn_down.weight", c.FFN, c.Dim)
		if _, ok := f.Tensor(p + "attn_q.bias"); ok || arch == "qwen2" {
			l.bq = t.vector(p+"attn_q.bias", qDim)
			l.bk = t.vector(p+"attn_k.bias", kvDim)
			l.bv = t.vector(p+"attn_v.bias", kvDim)
		}
		if t.err != nil {
			return nil, t.err
		}
	}
	if opts.PackTiles {
		pack := func(w *kernels.Matrix) { w.Tiles = kernels.PackTiles(*w, packGrowth) }
		for i := range m.layers {
			l := &m.layers[i]
			for _, w := range []*kernels.Matrix{&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down} {
				pack(w)
			}
		}
		pack(&m.output)
	}
	m.attnFunc = m.attendRange
	m.rowsFunc = m.rowsRange
	m.attnScale = float32(1 / math.Sqrt(float64(c.HeadDim)))
	return m, nil
}

// packGrowth is how much larger than the stored weights their packed tiles
// may be for Options.PackTiles to keep them.
const packGrowth = 1.25

// loadRoPE computes the rotation frequencies: base^(-2i/ropeDim), divided by
// the llama3 per-dimension factors in rope_freqs.weight when present, and
// scaled by 1/factor for linear scaling.
func (m *Model) loadRoPE(f *gguf.File, key func(string) string) error {
	base := 10000.0
	if v, ok := f.Float(key("rope.freq_base")); ok {
		base = v
	}
	if !(base > 0) {
		return fmt.Errorf("llama: rope.freq_base %v is not positive", base)
	}
	scale := float32(1)
	if typ, ok := f.String(key("rope.scaling.type")); ok && typ != "none" {
		factor, _ := f.Float(key("rope.scaling.factor"))
		switch {
		case typ == "linear" && factor > 0:
			scale = float32(1 / factor)
		case typ == "linear":
			return fmt.Errorf("llama: linear rope scaling needs a positive rope.scaling.factor, got %v", factor)
		default:
			return fmt.Errorf("llama: rope scaling %q: %w", typ, model.ErrUnsupported)
		}
	}
	if v, ok := f.Float(key("rope.freq_scale")); ok && v > 0 {
		scale *= float32(v)
	}
	half := m.ropeDim / 2
	m.invFreq = make([]float32, half)
	// Like ggml: theta_i = p * scale * base^(-2i/n) computed in float32 by
	// repeated multiplication.
	step := float32(math.Pow(base, -2/float64(m.ropeDim)))
	theta := float32(1)
	for i := range m.invFreq {
		m.invFreq[i] = theta * scale
		theta *= step
	}
	if ff, ok := f.Tensor("rope_freqs.weight"); ok {
		if ff.Type != quant.F32 || ff.Elements() != uint64(half) {
			return fmt.Errorf("llama: rope_freqs.weight is %s %v, want F32 [%d]", ff.Type, ff.Dims, half)
		}
		factors := make([]float32, half)
		quant.Dequantize(quant.F32, factors, ff.Data)
		for i := range m.invFreq {
			if !(factors[i] > 0) {
				return fmt.Errorf("llama: rope_freqs.weight[%d] = %v", i, factors[i])
			}
			m.invFreq[i] /= factors[i]
		}
	}
	return nil
}

// tensors looks tensors up and checks their shapes, keeping the first error.
type tensors struct {
	f   *gguf.File
	err error
}

func (t *tensors) get(name string) *gguf.Tensor {
	if t.err != nil {
		return nil
	}
	x, ok := t.f.Tensor(name)
	if !ok {
		t.err = fmt.Errorf("llama: tensor %s is missing", name)
		return nil
	}
	return x
}

// matrix returns a weight of rows × cols (GGML dims [cols, rows]); rows < 0
// accepts any row count.
func (t *tensors) matrix(name string, cols, rows int) kernels.Matrix {
	x := t.get(name)
	if x == nil {
		return kernels.Matrix{}
	}
	if len(x.Dims) != 2 || x.Dims[0] != uint64(cols) || (rows >= 0 && x.Dims[1] != uint64(rows)) || x.Dims[1] == 0 || x.Dims[1] > 1<<24 {
		t.err = fmt.Errorf("llama: tensor %s has shape %v, want [%d %d]", name, x.Dims, cols, rows)
		return kernels.Matrix{}
	}
	// Types without a dedicated kernel (K-quants, Q5_0, ...) run through
	// the kernels' slower dequantizing path.
	if !kernels.CanCompute(x.Type) {
		t.err = fmt.Errorf("llama: tensor %s has type %s: %w", name, x.Type, model.ErrUnsupported)
		return kernels.Matrix{}
	}
	return kernels.Matrix{Type: x.Type, Data: x.Data, Rows: int(x.Dims[1]), Cols: cols}
}

// vector returns a 1-D weight (norms, biases) converted to float32.
func (t *tensors) vector(name string, n int) []float32 {
	x := t.get(name)
	if x == nil {
		return nil
	}
	if len(x.Dims) != 1 || x.Dims[0] != uint64(n) {
		t.err = fmt.Errorf("llama: tensor %s has shape %v, want [%d]", name, x.Dims, n)
		return nil
	}
	v := make([]float32, n)
	if err := quant.Dequantize(x.Type, v, x.Data); err != nil {
		t.err = fmt.Errorf("llama: tensor %s: %w", name, err)
		return nil
	}
	return v
}

// Config returns the model's hyperparameters.
func (m *Model) Config() model.Config { return m.cfg }

// NewCache allocates a KV cache pool shaped for this model.
func (m *Model) NewCache(blocks, blockSize int) (*kvcache.Cache, error) {
	return kvcache.New(kvcache.Config{Layers: m.cfg.Layers, KVDim: m.cfg.KVDim(), BlockSize: blockSize, Blocks: blocks})
}

func grow(s []float32, n int) []float32 {
	if cap(s) < n {
		return make([]float32, n)
	}
	return s[:n]
}

func (m *Model) ensure(n int) *scratch {
	s := &m.scratch
	if s.n >= n {
		return s
	}
	c := &m.cfg
	s.n = n
	s.x = grow(s.x, n*c.Dim)
	s.xb = grow(s.xb, n*c.Dim)
	s.xb2 = grow(s.xb2, n*c.Dim)
	s.xs = grow(s.xs, n*c.Dim)
	s.q = grow(s.q, n*c.Heads*c.HeadDim)
	s.att = grow(s.att, n*c.Heads*c.HeadDim)
	s.k = grow(s.k, n*c.KVDim())
	s.v = grow(s.v, n*c.KVDim())
	s.hb = grow(s.hb, n*c.FFN)
	s.hb2 = grow(s.hb2, n*c.FFN)
	s.cos = grow(s.cos, n*m.ropeDim/2)
	s.sin = grow(s.sin, n*m.ropeDim/2)
	return s
}

// check validates a batch and reserves cache room for it.
func (m *Model) check(b *model.Batch, logits []float32) error {
	n := len(b.Tokens)
	if n == 0 {
		return fmt.Errorf("llama: empty batch")
	}
	if len(b.Pos) != n || len(b.Seqs) != n || len(b.Logits) != n {
		return fmt.Errorf("llama: batch has %d tokens but %d positions, %d sequences, %d logit flags", n, len(b.Pos), len(b.Seqs), len(b.Logits))
	}
	if need := b.NumLogits() * m.cfg.Vocab; len(logits) < need {
		return fmt.Errorf("llama: logits buffer holds %d floats, batch needs %d", len(logits), need)
	}
	clear(m.seqNext)
	for i, tok := range b.Tokens {
		if tok < 0 || int(tok) >= m.cfg.Vocab {
			return fmt.Errorf("llama: token id %d out of range [0, %d)", tok, m.cfg.Vocab)
		}
		s := b.Seqs[i]
		next, seen := m.seqNext[s]
		if !seen {
			next = s.Len()
		}
		if int(b.Pos[i]) != next {
			return fmt.Errorf("llama: token %d has position %d, want %d", i, b.Pos[i], next)
		}
		m.seqNext[s] = next + 1
	}
	for s, end := range m.seqNext {
		if err := s.Reserve(end); err != nil {
			return err
		}
	}
	return nil
}

// Forward runs one step; see [model.Model].
func (m *Model) Forward(b *model.Batch, logits []float32) error {
	if err := m.check(b, logits); err != nil {
		return err
	}
	c := &m.cfg
	n := len(b.Tokens)
	s := m.ensure(n)
	dim, qDim, kvDim := c.Dim, c.Heads*c.HeadDim, c.KVDim()
	m.planAttention(b)
	s.growScores(m.pool.Threads(), m.taskLen)
	x := s.x[:n*dim]
	for i, tok := range b.Tokens {
		kernels.DequantizeRow(m.embd.Type, x[i*dim:(i+1)*dim], m.embd.Row(int(tok)))
	}
	half := m.ropeDim / 2
	for i, p := range b.Pos {
		cs, sn := s.cos[i*half:(i+1)*half], s.sin[i*half:(i+1)*half]
		for j, f := range m.invFreq {
			theta := float64(float32(p) * f)
			cs[j], sn[j] = float32(math.Cos(theta)), float32(math.Sin(theta))
		}
	}
	xb, q, k, v, att := s.xb[:n*dim], s.q[:n*qDim], s.k[:n*kvDim], s.v[:n*kvDim], s.att[:n*qDim]
	hb, hb2 := s.hb[:n*c.FFN], s.hb2[:n*c.FFN]
	m.rows = rowArgs{b: b}
	m.runRows(rowNorm, 0, m.layers[0].attnNorm, n)
	for li := range m.layers {
		l := &m.layers[li]
		kernels.MatMul(m.pool, q, l.wq, xb, n)
		kernels.MatMul(m.pool, k, l.wk, xb, n)
		kernels.MatMul(m.pool, v, l.wv, xb, n)
		m.runRows(rowRoPE, li, nil, n)
		m.attn = attnArgs{b: b, layer: li, q: q, out: att, scores: s.scores}
		m.pool.For(len(s.scores), m.attnFunc)
		kernels.MatMul(m.pool, xb, l.wo, att, n)
		m.runRows(rowAddNorm, li, l.ffnNorm, n)
		kernels.MatMul(m.pool, hb, l.gate, xb, n)
		kernels.MatMul(m.pool, hb2, l.up, xb, n)
		m.runRows(rowSiLU, li, nil, n)
		kernels.MatMul(m.pool, xb, l.down, hb, n)
		var next []float32 // the next layer's input norm, which this pass applies
		if li+1 < len(m.layers) {
			next = m.layers[li+1].attnNorm
		}
		m.runRows(rowAddNorm, li, next, n)
	}
	m.attn = attnArgs{}
	m.rows = rowArgs{}
	for seq, end := range m.seqNext {
		seq.SetLen(end)
	}
	rows := 0
	for i, want := range b.Logits {
		if want {
			kernels.RMSNorm(s.xs[rows*dim:(rows+1)*dim], x[i*dim:(i+1)*dim], m.outNorm, m.eps)
			rows++
		}
	}
	if rows > 0 {
		kernels.MatMul(m.pool, logits[:rows*c.Vocab], m.output, s.xs[:rows*dim], rows)
	}
	return nil
}

// The per-token work between a layer's matrix products, done by
// rowsRange a token at a time (rowArgs.stage).
const (
	rowNorm    = iota // xb = RMSNorm(x)·norm
	rowRoPE           // q, k, v get their biases, q and k their rotations; k and v go to the cache
	rowAddNorm        // x += xb, then xb = RMSNorm(x)·norm if norm is not nil
	rowSiLU           // hb = SiLU(hb)·hb2
)

// rowArgs is the input of the per-token work, kept in the model so the
// parallel loop body is a method value made once at load.
type rowArgs struct {
	b     *model.Batch
	stage int
	layer int
	norm  []float32
}

// rowParallelMin is the fewest activations (tokens × model width) whose
// per-token work is spread over the pool: below it, waking the workers
// costs more than the work.
const rowParallelMin = 8 << 10

// runRows does stage's per-token work for the n tokens of the step, split
// over the pool when there is enough of it. Each token's results do not
// depend on the split.
func (m *Model) runRows(stage, layer int, norm []float32, n int) {
	m.rows.stage, m.rows.layer, m.rows.norm = stage, layer, norm
	if n*m.cfg.Dim < rowParallelMin {
		m.rowsRange(0, n)
		return
	}
	m.pool.For(n, m.rowsFunc)
}

// rowsRange does the per-token work of tokens [lo, hi).
func (m *Model) rowsRange(lo, hi int) {
	c := &m.cfg
	s := &m.scratch
	r := &m.rows
	dim, ffn := c.Dim, c.FFN
	for i := lo; i < hi; i++ {
		x, xb := s.x[i*dim:(i+1)*dim], s.xb[i*dim:(i+1)*dim]
		switch r.stage {
		case rowNorm:
			kernels.RMSNorm(xb, x, r.norm, m.eps)
		case rowRoPE:
			qDim, kvDim, half := c.Heads*c.HeadDim, c.KVDim(), m.ropeDim/2
			q, k, v := s.q[i*qDim:(i+1)*qDim], s.k[i*kvDim:(i+1)*kvDim], s.v[i*kvDim:(i+1)*kvDim]
			if l := &m.layers[r.layer]; l.bq != nil {
				kernels.Add(q, l.bq)
				kernels.Add(k, l.bk)
				kernels.Add(v, l.bv)
			}
			cs, sn := s.cos[i*half:(i+1)*half], s.sin[i*half:(i+1)*half]
			m.rope(q, c.Heads, cs, sn)
			m.rope(k, c.KVHeads, cs, sn)
			r.b.Seqs[i].Store(r.layer, int(r.b.Pos[i]), k, v)
		case rowAddNorm:
			kernels.Add(x, xb)
			if r.norm != nil {
				kernels.RMSNorm(xb, x, r.norm, m.eps)
			}
		case rowSiLU:
			kernels.SiLUMul(s.hb[i*ffn:(i+1)*ffn], s.hb2[i*ffn:(i+1)*ffn])
		}
	}
}

// rope rotates each of heads vectors in x by the angles whose cosines and
// sines are cs and sn, pairing (2j, 2j+1) or, for NeoX, (j, j+ropeDim/2).
func (m *Model) rope(x []float32, heads int, cs, sn []float32) {
	hd := m.cfg.HeadDim
	half := m.ropeDim / 2
	for h := range heads {
		v := x[h*hd : h*hd+m.ropeDim]
		if m.neox {
			for j := range half {
				a, b := v[j], v[j+half]
				v[j] = a*cs[j] - b*sn[j]
				v[j+half] = a*sn[j] + b*cs[j]
			}
			continue
		}
		for j := range half {
			a, b := v[2*j], v[2*j+1]
			v[2*j] = a*cs[j] - b*sn[j]
			v[2*j+1] = a*sn[j] + b*cs[j]
		}
	}
}

// attnArgs is the input of one layer's attention, kept in the model so the
// parallel loop body is a method value made once at load.
type attnArgs struct {
	b      *model.Batch
	layer  int
	q, out []float32
	scores [][]float32 // one buffer per pool slot
}

// An attnTask is nq queries that attend to the same sequence's cache
// through one KV head: a run of consecutive tokens of a sequence for one
// query head (prefill), or the query heads that share a KV head for one
// token (decode). Query j is at q[off+j*stride] (head-size floats; its
// output at the same place in out) and sees positions [0, limit+j*step).
type attnTask struct {
	tok, off, stride int
	nq, limit, step  int
	kvOff            int
	// heads is the KV heads a decode task covers (0 for a prefill task):
	// KV head kvOff/hd and the next ones, each with its nq query heads
	// after the previous head's in q. A decode task walks its sequence's
	// cache a block at a time for all of them, so it reads each cache row
	// whole instead of once per head.
	heads int
}

// attnTile is the most queries of one head a prefill task takes: enough to
// reuse each key and value row from registers and L1 many times, few
// enough that a task's scores (attnTile × sequence length) stay in L2.
const attnTile = 16

// planAttention splits the batch's attention into tasks. Tokens of a
// sequence at consecutive positions, next to each other in the batch, form
// a run; a run of one token is a decode step.
func (m *Model) planAttention(b *model.Batch) {
	c := &m.cfg
	hd, group := c.HeadDim, c.Heads/c.KVHeads
	m.tasks = m.tasks[:0]
	m.taskLen = 0
	// A decode token's KV heads go to tasks of chunk heads: all of them
	// in one task when there are enough decode tokens to keep every
	// thread busy (4 tasks each), fewer when there are not.
	decodes := 0
	for i := range b.Tokens {
		if (i == 0 || b.Seqs[i-1] != b.Seqs[i] || b.Pos[i] != b.Pos[i-1]+1) &&
			(i+1 == len(b.Tokens) || b.Seqs[i+1] != b.Seqs[i] || b.Pos[i+1] != b.Pos[i]+1) {
			decodes++
		}
	}
	chunk := c.KVHeads
	if want := 4 * m.pool.Threads(); decodes > 0 && decodes < want {
		parts := min(c.KVHeads, (want+decodes-1)/decodes)
		chunk = (c.KVHeads + parts - 1) / parts
	}
	for i := 0; i < len(b.Tokens); {
		j := i + 1
		for j < len(b.Tokens) && b.Seqs[j] == b.Seqs[i] && b.Pos[j] == b.Pos[j-1]+1 {
			j++
		}
		limit := int(b.Pos[i]) + 1
		if j-i == 1 {
			for g := 0; g < c.KVHeads; g += chunk {
				nh := min(chunk, c.KVHeads-g)
				m.tasks = append(m.tasks, attnTask{tok: i, off: (i*c.Heads + g*group) * hd, stride: hd,
					nq: group, limit: limit, kvOff: g * hd, heads: nh})
				m.taskLen = max(m.taskLen, nh*group*limit)
			}
		} else {
			for t := i; t < j; t += attnTile {
				nq := min(attnTile, j-t)
				for h := range c.Heads {
					m.tasks = append(m.tasks, attnTask{tok: t, off: (t*c.Heads + h) * hd, stride: c.Heads * hd,
						nq: nq, limit: limit + t - i, step: 1, kvOff: h / group * hd})
				}
				m.taskLen = max(m.taskLen, nq*(limit+j-1-i))
			}
		}
		i = j
	}
}

// attendRange runs the attention of pool slots [lo, hi). Slot w owns
// scores[w] and takes every Threads()-th task starting at w, which spreads
// the long rows at the end of a prompt over all slots.
func (m *Model) attendRange(lo, hi int) {
	step := len(m.attn.scores)
	for w := lo; w < hi; w++ {
		for t := w; t < len(m.tasks); t += step {
			m.attend(&m.tasks[t], m.attn.scores[w])
		}
	}
}

// attend computes one task's outputs: each query's scores against its
// sequence's keys up to its own position (in tiles, a cache block of keys
// × the task's queries at a time), scaled, then softmax, then the weighted
// sum of values, as llama.cpp does without flash attention. Every query
// gets the same result whatever task it is in: kernels.DotTileF16 and
// AxpyTileF16 round the same in any tile, and each query sums exactly its own
// positions in order.
func (m *Model) attend(t *attnTask, buf []float32) {
	if t.heads > 0 {
		m.attendHeads(t, buf)
		return
	}
	c := &m.cfg
	a := &m.attn
	hd, kvDim := c.HeadDim, c.KVDim()
	seq := a.b.Seqs[t.tok]
	bs := seq.BlockSize()
	last := t.limit + (t.nq-1)*t.step // the longest query's positions
	scores := buf[:t.nq*last]
	q, out := a.q[t.off:], a.out[t.off:]
	for pos := 0; pos < last; pos += bs {
		ks, _ := seq.Block(a.layer, pos/bs)
		kernels.DotTileF16(scores[pos:], last, ks[t.kvOff:], kvDim, min(bs, last-pos), q, t.stride, t.nq, hd)
	}
	for j := range t.nq {
		row := scores[j*last : j*last+t.limit+j*t.step]
		kernels.Scale(row, m.attnScale)
		kernels.Softmax(row)
		clear(out[j*t.stride : j*t.stride+hd])
	}
	for pos := 0; pos < last; pos += bs {
		_, vs := seq.Block(a.layer, pos/bs)
		end := min(pos+bs, last)
		if end <= t.limit {
			// Every query sees the whole block.
			kernels.AxpyTileF16(out, t.stride, scores[pos:], last, t.nq, vs[t.kvOff:], kvDim, end-pos, hd)
			continue
		}
		for j := range t.nq {
			if n := min(end, t.limit+j*t.step) - pos; n > 0 {
				kernels.AxpyTileF16(out[j*t.stride:], t.stride, scores[j*last+pos:], last, 1, vs[t.kvOff:], kvDim, n, hd)
			}
		}
	}
}

// attendHeads is attend for a decode task: for each of its KV heads, the
// nq queries of one token, which see positions [0, limit). It computes
// what attend would for each head alone, kernel call for kernel call, but
// takes the heads inside the walk over cache blocks.
func (m *Model) attendHeads(t *attnTask, buf []float32) {
	c := &m.cfg
	a := &m.attn
	hd, kvDim := c.HeadDim, c.KVDim()
	seq := a.b.Seqs[t.tok]
	bs := seq.BlockSize()
	n := t.limit
	hq := t.nq * hd // q floats per KV head
	scores := buf[:t.heads*t.nq*n]
	q, out := a.q[t.off:], a.out[t.off:]
	for pos := 0; pos < n; pos += bs {
		ks, _ := seq.Block(a.layer, pos/bs)
		nr := min(bs, n-pos)
		if t.nq == 1 {
			kernels.DotHeadsF16(scores[pos:], n, ks[t.kvOff:], kvDim, nr, q, t.heads, hd)
			continue
		}
		for h := range t.heads {
			kernels.DotTileF16(scores[h*t.nq*n+pos:], n, ks[t.kvOff+h*hd:], kvDim, nr, q[h*hq:], hd, t.nq, hd)
		}
	}
	for j := range t.heads * t.nq {
		row := scores[j*n : (j+1)*n]
		kernels.Scale(row, m.attnScale)
		kernels.Softmax(row)
		clear(out[j*hd : (j+1)*hd])
	}
	for pos := 0; pos < n; pos += bs {
		_, vs := seq.Block(a.layer, pos/bs)
		nr := min(bs, n-pos)
		if t.nq == 1 {
			kernels.AxpyHeadsF16(out, scores[pos:], n, vs[t.kvOff:], kvDim, nr, t.heads, hd)
			continue
		}
		for h := range t.heads {
			kernels.AxpyTileF16(out[h*hq:], hd, scores[h*t.nq*n+pos:], n, t.nq, vs[t.kvOff+h*hd:], kvDim, nr, hd)
		}
	}
}
