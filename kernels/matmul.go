package kernels

import (
	"fmt"
	"sync"
	"unsafe"

	"github.com/spigot-llm/spigot/quant"
)

// Matrix is a row-major weight matrix stored in its file's element type:
// Rows rows of Cols elements, each row quant.Type.RowSize(Cols) bytes, back
// to back in Data (which may be longer). It is a view; copying it is cheap.
type Matrix struct {
	Type       quant.Type
	Data       []byte
	Rows, Cols int
	// Tiles, if not nil, holds the rows packed as the integer path's
	// tiles want them (see PackTiles), for products of more than one
	// activation row, which then skip packing.
	Tiles *Tiles
}

// RowBytes is the size of one row in bytes. It panics if Cols is not a whole
// number of Type's blocks.
func (m Matrix) RowBytes() int {
	rs, err := m.Type.RowSize(m.Cols)
	if err != nil {
		panic("kernels: " + err.Error())
	}
	return rs
}

// Row returns the bytes of row r.
func (m Matrix) Row(r int) []byte {
	if r < 0 || r >= m.Rows {
		panic(fmt.Sprintf("kernels: row %d out of range [0, %d)", r, m.Rows))
	}
	rs := m.RowBytes()
	return m.Data[r*rs : (r+1)*rs : (r+1)*rs]
}

// Supported reports whether t has a dedicated (fast) dot-product kernel:
// F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K and Q6_K. [DotRow], [DequantizeRow] and [MatMul] also
// accept every other type quant.Dequantize supports, through a slower path
// that dequantizes first.
func Supported(t quant.Type) bool { return slot(t) >= 0 }

// CanCompute reports whether [DotRow], [DequantizeRow] and [MatMul] accept
// weights of type t at all.
func CanCompute(t quant.Type) bool { return Supported(t) || quant.CanDequantize(t) }

// DotRow returns the dot product of one row of type t with x:
//
//	w := make([]float32, len(x)); quant.Dequantize(t, w, row)
//	for k := range x { sum += w[k] * x[k] }
//
// len(row) must be t.RowSize(len(x)). For the block types the sum is taken
// per block and scaled by the block's scale, as ggml does. It panics on a
// size mismatch or an unsupported type. It does not allocate for the types
// [Supported] reports; others use a pooled buffer.
func DotRow(t quant.Type, row []byte, x []float32) float32 {
	checkRow(t, len(row), len(x))
	if s := slot(t); s >= 0 {
		return active.rowDot[s](row, x)
	}
	buf := getBuf(len(x))
	dequantizeRow(t, *buf, row)
	r := active.dot(*buf, x)
	putBuf(buf)
	return r
}

// DequantizeRow decodes one row of type t into dst (an embedding lookup, or
// a weight row for the batched path): dst gets exactly the values
// quant.Dequantize gives. len(row) must be t.RowSize(len(dst)). It panics on
// a size mismatch or an unsupported type, and does not allocate.
func DequantizeRow(t quant.Type, dst []float32, row []byte) {
	checkRow(t, len(row), len(dst))
	dequantizeRow(t, dst, row)
}

func dequantizeRow(t quant.Type, dst []float32, row []byte) {
	if s := slot(t); s >= 0 {
		active.dequant[s](dst, row)
		return
	}
	if err := quant.Dequantize(t, dst, row); err != nil {
		panic("kernels: " + err.Error())
	}
}

func checkRow(t quant.Type, nbytes, n int) {
	if s := slot(t); s >= 0 {
		// The common case, without quant's map lookups.
		l := fastLayouts[s]
		if n%l.blockSize == 0 && n/l.blockSize*l.typeSize == nbytes {
			return
		}
	}
	rs, err := t.RowSize(n)
	if err != nil {
		panic("kernels: " + err.Error())
	}
	if !CanCompute(t) {
		panic(fmt.Sprintf("kernels: no kernel for %v", t))
	}
	if nbytes != rs {
		panic(fmt.Sprintf("kernels: %d elements of %v take %d bytes, row has %d", n, t, rs, nbytes))
	}
}

// fastLayouts are the block layouts of the dedicated types, by slot.
var fastLayouts = [numFastTypes]struct{ blockSize, typeSize int }{
	slotF32:  {1, 4},
	slotF16:  {1, 2},
	slotBF16: {1, 2},
	slotQ8_0: {quant.QK8_0, 34},
	slotQ4_0: {quant.QK4_0, 18},
	slotQ4_K: {quant.QKK, 144},
	slotQ5_K: {quant.QKK, 176},
	slotQ6_K: {quant.QKK, 210},
}

var bufPool sync.Pool // of *[]float32

func getBuf(n int) *[]float32 {
	if b, ok := bufPool.Get().(*[]float32); ok && cap(*b) >= n {
		*b = (*b)[:n]
		return b
	}
	b := make([]float32, n)
	return &b
}

func putBuf(b *[]float32) { bufPool.Put(b) }

// parallelMin is the smallest matmul, in multiply-adds, worth splitting
// across threads: below it the hand-off (a few microseconds when workers are
// parked) costs more than the work.
const parallelMin = 1 << 15

// MatMul computes
//
//	for b := range batch {
//		for r := range m.Rows {
//			out[b*m.Rows+r] = DotRow(m.Type, m.Row(r), x[b*m.Cols:(b+1)*m.Cols])
//		}
//	}
//
// splitting the work across p's threads (a nil p runs on the calling
// goroutine), except that for Q8_0, Q4_0, Q4_K, Q5_K and Q6_K weights x
// is first quantized (see below). len(x) must be at least batch*m.Cols and len(out) at least
// batch*m.Rows; only those prefixes are used. It panics on bad shapes or an
// unsupported type.
//
// Each weight row is read from memory once per call (a few times for long
// batches of float weights, see matMulF), whatever batch is.
//
// Q8_0, Q4_0 and the K-quants Q4_K, Q5_K and Q6_K take the integer path,
// as llama.cpp does: each activation row is quantized once per call with
// quant.QuantizeActivations (blocks of 32 int8 and a float32 scale), and
// the products are integer dot products per block (per half block for
// Q6_K), scaled by the two blocks' scales (and for Q4_K and Q5_K less the
// weight sub-block's min times the activation block's sum). Quantizing the activations adds an error of at most
// about Σ_blocks (max|x_block|/254)·Σ|w_block| (see
// quant.QuantizeActivations) to each result, besides float rounding; the
// canonical order of the float sums is in matmul_int.go and
// matmul_kquant.go. Every result
// depends only on its own weight row and x row, bit for bit: not on batch,
// the row's position in the batch, or the thread count.
//
// Other types use float32 activations. With batch 1 each row is dotted
// straight from its stored form ([DotRow]). With batch > 1, the product is
// tiled: 4 weight rows (dequantized first unless F32) × 3 to 6 batch
// entries (by kernel set) at a time, each product summed in 8 lanes over
// the columns (zero-padded to a multiple of 8) with fused multiply-adds,
// and the lanes added pairwise (matmul_float.go). The two paths round
// differently, so batch-1 results may differ from batched ones in the last
// bits; but a batched entry's result depends only on its own x, not on the
// batch size or its position in the batch, and no result depends on the
// thread count.
//
// MatMul does not allocate once p's buffers have grown to fit the call
// (with a nil p, buffers come from sync.Pools).
func MatMul(p *Pool, out []float32, m Matrix, x []float32, batch int) {
	if batch <= 0 || m.Rows <= 0 {
		return
	}
	if !CanCompute(m.Type) {
		panic(fmt.Sprintf("kernels: no kernel for %v", m.Type))
	}
	rs := m.RowBytes()
	if rs > 0 && m.Rows > len(m.Data)/rs {
		panic(fmt.Sprintf("kernels: %d rows of %d bytes need %d bytes, matrix has %d", m.Rows, rs, m.Rows*rs, len(m.Data)))
	}
	if len(x) < batch*m.Cols || len(out) < batch*m.Rows {
		panic(fmt.Sprintf("kernels: MatMul of %dx%d by batch %d: x has %d elements (want %d), out %d (want %d)",
			m.Rows, m.Cols, batch, len(x), batch*m.Cols, len(out), batch*m.Rows))
	}
	if m.Cols == 0 {
		clear(out[:batch*m.Rows])
		return
	}
	j := mmJob{
		out: out[:batch*m.Rows], data: m.Data[:m.Rows*rs], x: x[:batch*m.Cols],
		t: m.Type, rows: m.Rows, cols: m.Cols, rs: rs, batch: batch,
	}
	if t := m.Tiles; t != nil && t.set == active.name && batch > 1 {
		j.tiles = t.data
	}
	switch {
	case intPath(m.Type):
		matMulQ(p, j)
	case batch == 1 && Supported(m.Type):
		matMulDirect(p, j)
	default:
		matMulF(p, j)
	}
}

// matMulDirect is MatMul with batch 1 and a dedicated row kernel: one work
// unit per row.
func matMulDirect(p *Pool, j mmJob) {
	j.mode = mmDirect
	if p == nil {
		j.run(0, 0, j.rows)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	j.p = p
	if p.threads == 1 || p.closed.Load() || j.rows < 2 || j.rows*j.cols < parallelMin {
		j.run(0, 0, j.rows)
		return
	}
	p.runJob(&j, j.rows)
}

// quantParallelMin is the fewest activations worth quantizing in parallel.
const quantParallelMin = 1 << 14

// split sets j.panelRows, j.panels and j.chunk (see mmJob) for panels of at
// most maxPanel rows and tiles of maxCols batch entries, chunks of at most
// maxChunk entries, and returns the number of work units. With several
// threads, panels shrink (to 4 rows) and the batch is split so that there
// are about 8 units per thread, to balance the load.
func (j *mmJob) split(threads, maxPanel, maxCols, maxChunk int) int {
	j.panelRows = maxPanel
	if threads > 1 {
		j.panelRows = min(maxPanel, max(4, j.rows/(8*threads)&^3))
	}
	j.panels = (j.rows + j.panelRows - 1) / j.panelRows
	chunks := (j.batch + maxChunk - 1) / maxChunk
	if threads > 1 && j.panels*chunks < 8*threads {
		// Few panels: split the batch too, into two tiles' worth at least.
		chunks = max(chunks, min((8*threads+j.panels-1)/j.panels, (j.batch+2*maxCols-1)/(2*maxCols)))
	}
	j.chunk = (j.batch + chunks - 1) / chunks
	j.chunk = (j.chunk + maxCols - 1) / maxCols * maxCols
	return j.panels * ((j.batch + j.chunk - 1) / j.chunk)
}

// matMulQ is MatMul's integer path.
func matMulQ(p *Pool, j mmJob) {
	q := &active.q
	j.as = q.actSize(j.cols, slot(j.t))
	units := j.split(p.Threads(), qPanelRows, q.maxCols, j.batch)
	j.mode = mmInt
	if j.batch == 1 && q.direct != nil {
		j.mode = mmDirectQ
	}
	if p == nil {
		buf := getBytes()
		j.act = alignBytes(buf, j.batch*j.as)
		j.quantizeRows(0, j.batch)
		pk := getBytes()
		j.bbuf = *pk
		j.runQ(0, 0, units)
		*pk = j.bbuf
		putBytes(pk)
		putBytes(buf)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	j.p = p
	j.act = alignBytes(&p.act, j.batch*j.as)
	parallel := p.threads > 1 && !p.closed.Load() && j.rows*j.cols*j.batch >= parallelMin
	if parallel && j.batch > 1 && j.batch*j.cols >= quantParallelMin {
		mode := j.mode
		j.mode = mmQuantize
		p.runJob(&j, j.batch)
		j.mode = mode
	} else {
		j.quantizeRows(0, j.batch)
	}
	if parallel && units > 1 {
		p.runJob(&j, units)
	} else {
		j.run(0, 0, units)
	}
}

// fPanelRows is the rows of a float-path work unit, and fChunkBytes the
// most activation bytes a unit covers: with 2048 columns, a dequantized
// panel is 128 KiB and a chunk 256 KiB, so both stay in L2 while the unit
// runs, and the threads work through the same chunk at about the same time.
const (
	fPanelRows  = 16
	fChunkBytes = 256 << 10
)

// matMulF is MatMul's batched float path.
func matMulF(p *Pool, j mmJob) {
	f := &active.f
	j.steps = (j.cols + 7) / 8
	j.xs = j.steps * 8
	j.inPlace = f.inPlace && j.t == quant.F32 && j.cols%8 == 0
	units := j.split(p.Threads(), fPanelRows, f.maxCols, max(f.maxCols, fChunkBytes/(4*j.xs)))
	if p != nil {
		p.mu.Lock()
		defer p.mu.Unlock()
		j.p = p
	}
	// x, zero-padded to whole steps when it is not already.
	j.xp = j.x
	var xbuf *[]float32
	if j.xs != j.cols {
		n := j.batch * j.xs
		if p != nil {
			if cap(p.xpad) < n {
				p.xpad = make([]float32, n)
			}
			j.xp = p.xpad[:n]
		} else {
			xbuf = getBuf(n)
			j.xp = *xbuf
		}
		for b := range j.batch {
			copy(j.xp[b*j.xs:], j.x[b*j.cols:(b+1)*j.cols])
			clear(j.xp[b*j.xs+j.cols : (b+1)*j.xs])
		}
	}
	j.mode = mmFloat
	switch {
	case p == nil:
		buf := getBuf(fPanelRows * j.xs)
		j.buf = *buf
		j.run(0, 0, units)
		putBuf(buf)
	case p.threads == 1 || p.closed.Load() || units < 2 || j.rows*j.cols*j.batch < parallelMin:
		j.run(0, 0, units)
	default:
		p.runJob(&j, units)
	}
	if xbuf != nil {
		putBuf(xbuf)
	}
}

// runJob runs j over units [0, n) on p's threads, in guided chunks (see
// Pool.run). p.mu is held.
func (p *Pool) runJob(j *mmJob, n int) {
	p.mm = *j
	p.wfn = p.mmRun
	p.run(n, true)
	p.wfn = nil
	p.mm = mmJob{} // drop references to the caller's slices
}

var bytesPool sync.Pool // of *[]byte

func getBytes() *[]byte {
	if b, ok := bytesPool.Get().(*[]byte); ok {
		return b
	}
	return new([]byte)
}

func putBytes(b *[]byte) { bytesPool.Put(b) }

// mmJob is one MatMul call's arguments, kept in the Pool so that starting a
// parallel MatMul allocates no closure.
type mmJob struct {
	p                     *Pool     // for per-thread scratch; nil with buf set
	buf                   []float32 // scratch when p is nil
	bbuf                  []byte    // packing scratch when p is nil
	out, x                []float32
	data                  []byte
	t                     quant.Type
	rows, cols, rs, batch int
	mode                  int

	// Tiled paths: work unit u is panel u%panels of rows (panelRows each),
	// times batch entries [c*chunk, (c+1)*chunk) with c = u/panels.
	panelRows, panels, chunk int

	// The integer path: quantized activation rows, as bytes apart, and
	// the weights' packed tiles if they are kept.
	act   []byte
	as    int
	tiles []byte

	// The float path: x padded to steps of 8 (rows xs apart), and whether
	// the weight rows are read in place.
	xp        []float32
	xs, steps int
	inPlace   bool
}

// Work modes of an mmJob.
const (
	mmDirect   = iota // batch 1, one row per unit, dotted from its stored form
	mmFloat           // float tiles
	mmQuantize        // quantize activation rows, one per unit, for mmInt
	mmInt             // the integer path's tiles
	mmDirectQ         // the integer path's batch 1 without packing, a panel per unit
)

// run computes work units [lo, hi) on participant w.
func (j *mmJob) run(w, lo, hi int) {
	switch j.mode {
	case mmDirect:
		dot := active.rowDot[slot(j.t)]
		x := j.x[:j.cols]
		out := j.out[lo:hi]
		for i := range out {
			r := lo + i
			out[i] = dot(j.data[r*j.rs:(r+1)*j.rs], x)
		}
	case mmFloat:
		j.runF(w, lo, hi)
	case mmQuantize:
		j.quantizeRows(lo, hi)
	case mmInt, mmDirectQ:
		j.runQ(w, lo, hi)
	}
}

// runF computes float-path units [lo, hi) on participant w: the panel's
// rows are dequantized (unless read in place) into rows of j.xs floats,
// zero-padded, then multiplied a tile at a time.
func (j *mmJob) runF(w, lo, hi int) {
	f := &active.f
	buf := j.buf
	if j.p != nil {
		buf = j.p.scratchFor(w, fPanelRows*j.xs)
	}
	bbuf := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(buf))), 4*len(buf))
	ws := 4 * j.xs
	for u := lo; u < hi; u++ {
		r0 := u % j.panels * j.panelRows
		r1 := min(r0+j.panelRows, j.rows)
		c0 := u / j.panels * j.chunk
		c1 := min(c0+j.chunk, j.batch)
		// Rows to dequantize: all of them, or in place only a last,
		// partial tile (whose missing rows must read as zeros).
		d0 := r0
		if j.inPlace {
			d0 = r1 - (r1-r0)%4
		}
		for r := d0; r < (r1+3)/4*4; r++ {
			row := buf[(r-r0)*j.xs : (r-r0+1)*j.xs]
			if r >= r1 {
				clear(row)
				continue
			}
			dequantizeRow(j.t, row[:j.cols], j.data[r*j.rs:(r+1)*j.rs])
			clear(row[j.cols:])
		}
		for c := c0; c < c1; c += f.maxCols {
			nc := min(f.maxCols, c1-c)
			x := j.xp[c*j.xs:]
			out := j.out[c*j.rows:]
			if d0 > r0 {
				f.tile(j.data[r0*j.rs:d0*j.rs], ws, d0-r0, x, j.xs, nc, j.steps, out[r0:], j.rows)
			}
			if d0 < r1 {
				f.tile(bbuf[(d0-r0)*ws:], ws, r1-d0, x, j.xs, nc, j.steps, out[d0:], j.rows)
			}
		}
	}
}
