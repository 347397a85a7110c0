package kernels

import (
	"fmt"
	"sync"

	"github.com/spigot-llm/spigot/quant"
)

// Matrix is a row-major weight matrix stored in its file's element type:
// Rows rows of Cols elements, each row quant.Type.RowSize(Cols) bytes, back
// to back in Data (which may be longer). It is a view; copying it is cheap.
type Matrix struct {
	Type       quant.Type
	Data       []byte
	Rows, Cols int
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
// F32, F16, BF16, Q8_0 and Q4_0. [DotRow], [DequantizeRow] and [MatMul] also
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
// splitting the rows across p's threads (a nil p runs on the calling
// goroutine). len(x) must be at least batch*m.Cols and len(out) at least
// batch*m.Rows; only those prefixes are used. It panics on bad shapes or an
// unsupported type.
//
// Each weight row is read from memory once per call, whatever batch is. With
// batch 1 each row is dotted straight from its stored form. With batch > 1,
// rows are taken four at a time: the four are dequantized into a per-thread
// buffer that stays in L1, and each batch entry's x is dotted with all four
// at once, so x is streamed once per four rows. The two paths round
// differently (per-block scaling versus dequantized weights, and different
// summation orders), so batch-1 results may differ from batched ones in the
// last bits; but a batched entry's result depends only on its own x, not on
// the batch size or its position in the batch, and no result depends on the
// thread count.
//
// MatMul does not allocate once p's per-thread buffers have grown to
// 4*(m.Cols+batch) floats (with a nil p, buffers come from a sync.Pool).
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
	j := mmJob{
		out: out[:batch*m.Rows], data: m.Data[:m.Rows*rs], x: x[:batch*m.Cols],
		t: m.Type, rows: m.Rows, cols: m.Cols, rs: rs, batch: batch,
	}
	// Work units: rows for the direct path, groups of four rows otherwise.
	units := m.Rows
	if !j.direct() {
		units = (m.Rows + 3) / 4
	}
	if p == nil {
		if !j.direct() {
			buf := getBuf(j.scratchLen())
			j.buf = *buf
			j.run(0, 0, units)
			putBuf(buf)
			return
		}
		j.run(0, 0, units)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	j.p = p
	if p.threads == 1 || p.closed.Load() || units < 2 || m.Rows*m.Cols*batch < parallelMin {
		j.run(0, 0, units)
		return
	}
	p.mm = j
	p.wfn = p.mmRun
	p.run(units)
	p.wfn = nil
	p.mm = mmJob{} // drop references to the caller's slices
}

// mmJob is one MatMul call's arguments, kept in the Pool so that starting a
// parallel MatMul allocates no closure.
type mmJob struct {
	p                     *Pool     // for per-thread scratch; nil with buf set
	buf                   []float32 // scratch when p is nil
	out, x                []float32
	data                  []byte
	t                     quant.Type
	rows, cols, rs, batch int
}

// direct reports whether rows are dotted straight from their stored form
// (batch 1 with a dedicated kernel), one row per work unit; otherwise a work
// unit is a group of four rows, dequantized first.
func (j *mmJob) direct() bool { return j.batch == 1 && slot(j.t) >= 0 }

// scratchLen is the per-thread buffer the grouped path needs: four
// dequantized rows, a sum per batch entry and row of the group, and four
// partial sums.
func (j *mmJob) scratchLen() int { return 4*j.cols + 4*j.batch + 4 }

// colTile is how many columns of a four-row group are dotted with every batch
// entry before moving on: four rows of it take 16 KiB, so they stay in a
// 32 KiB L1 cache together with the streaming activations. (Whole rows of a
// 2048-column matrix would fill L1 alone.)
const colTile = 1024

// run computes work units [lo, hi) on participant w.
func (j *mmJob) run(w, lo, hi int) {
	if j.direct() {
		dot := active.rowDot[slot(j.t)]
		x := j.x[:j.cols]
		out := j.out[lo:hi]
		for i := range out {
			r := lo + i
			out[i] = dot(j.data[r*j.rs:(r+1)*j.rs], x)
		}
		return
	}
	buf := j.buf
	if j.p != nil {
		buf = j.p.scratchFor(w, j.scratchLen())
	}
	cols := j.cols
	rowsBuf := buf[:4*cols]
	// Sums per (batch entry, row of the group), and one tile's partial
	// sums. They live in the scratch: a local array would escape (dot4 is
	// a func value) and allocate.
	acc := buf[4*cols : 4*cols+4*j.batch]
	part := (*[4]float32)(buf[4*cols+4*j.batch:])
	dot, dot4 := active.dot, active.dot4
	for g := lo; g < hi; g++ {
		r0 := 4 * g
		n := min(4, j.rows-r0)
		for k := range n {
			r := r0 + k
			dequantizeRow(j.t, rowsBuf[k*cols:(k+1)*cols], j.data[r*j.rs:(r+1)*j.rs])
		}
		if n == 4 {
			for t0 := 0; t0 == 0 || t0 < cols; t0 += colTile {
				t1 := min(t0+colTile, cols)
				for b := range j.batch {
					res := (*[4]float32)(acc[4*b : 4*b+4])
					if t0 == 0 {
						dot4(j.x[b*cols+t0:b*cols+t1], rowsBuf[t0:], cols, res)
						continue
					}
					dot4(j.x[b*cols+t0:b*cols+t1], rowsBuf[t0:], cols, part)
					for k := range res {
						res[k] += part[k]
					}
				}
			}
			for b := range j.batch {
				copy(j.out[b*j.rows+r0:b*j.rows+r0+4], acc[4*b:4*b+4])
			}
			continue
		}
		// The last, partial group.
		for k := range n {
			row := rowsBuf[k*cols : (k+1)*cols]
			for b := range j.batch {
				j.out[b*j.rows+r0+k] = dot(row, j.x[b*cols:(b+1)*cols])
			}
		}
	}
}
