package kernels

import (
	"unsafe"

	"github.com/spigot-llm/spigot/quant"
)

// MatMul's integer path, for Q8_0 and Q4_0 weights (as llama.cpp's CPU
// backend does it; the K-quant types take it too, with the variations
// matmul_kquant.go describes): the activation rows are quantized once per call with
// quant.QuantizeActivations (blocks of 32 int8 with a float32 scale), and
// each weight block meets each activation block in an integer dot product,
// scaled by the product of the two scales. For one output, with nb blocks
// per row, the canonical computation is
//
//	var lane [8]float32
//	for b := range nb {
//		idot := Σ_j wq[b][j]·xq[b][j]            // exact, in int32
//		s := dw[b] * dx[b]                       // float32
//		lane[b%8] = fma(float32(idot), s, lane[b%8])
//	}
//	out = ((lane[0]+lane[1])+(lane[2]+lane[3])) + ((lane[4]+lane[5])+(lane[6]+lane[7]))
//
// Every kernel set computes exactly this (the portable one with a separate
// multiply and add in float64 instead of the fused multiply-add, which can
// differ in the last bit in rare cases), so an output depends only on its
// own weight row and activation row: not on the batch size, the tile shape
// or the threads.
//
// The work is done in tiles of 4 weight rows × up to qImpl.maxCols
// activation rows, accumulated in registers; the weight rows are split into
// panels of up to qPanelRows, one work unit each (times batch chunks when
// there are few panels; see mmJob.split). A unit packs its panel's rows
// into the layout its kernel wants, then runs over its activation rows a
// tile at a time, so each weight byte is read from memory once per call.
// With batch 1 (decoding), where packing would cost as much as the
// products, the assembly sets use direct kernels instead, which read the
// rows in place and sum each block's products across the vector lanes
// (exactly, in integers) to get the same per-block dot products.
//
// The assembly sets (matmul_amd64.go) lay out activations and packed weights
// by groups of 8 blocks, transposed so that dword lane j of a 32-byte
// vector belongs to block j of the group: then one vector instruction
// (VPDPBUSD, or VPMADDUBSW and VPMADDWD) adds 4 products of each of 8
// blocks into that block's own lane, and a group's 8 integer dot products
// come out in one vector, to be scaled by a vector of 8 scales.
//
//	activation row, per group (qActGroup bytes):
//	  [0, 256)    8 vectors; vector k, lane j: bytes 4k..4k+3 of block j (int8)
//	  [256, 288)  8 float32 scales d
//	  [288, 320)  8 int32 corrections: k·Σ_j xq[j], the kernel's k
//	packed tile of 4 weight rows, per group (qTileGroup bytes):
//	  [0, 1024)   for each vector k, for each row r: 32 bytes as above
//	  [1024, 1152) for each row r: 8 float32 scales
//
// A row's last group is padded with zero blocks (scale 0). For the direct
// kernels the activation quants are stored in their natural order instead
// (block j at bytes 32j..32j+31 of its group). The weight bytes
// are stored as the kernel multiplies them: VPDPBUSD multiplies unsigned by
// signed bytes, so Q8_0 weights are stored plus 128 (xor 0x80) and Q4_0
// ones as their nibbles 0-15, and the corrections (-128 and -8 times the
// activation block's sum) take the offsets back out.

// Layout sizes, as documented above and in internal/asmgen.
const (
	qGroupBlocks = 8
	qActGroup    = 320
	actScaleOff  = 256 // of the scales in an activation group
	actInitOff   = 288 // of the corrections
	qTileGroup   = 1152
	tileScaleOff = 1024 // of the weight scales in a packed tile's group
	qTileRows    = 4
	// qPanelRows is the rows of a work unit: 8 tiles, which packed take at
	// most 9 KiB per 1024 columns, so a panel stays in L2 while the
	// activations stream past it.
	qPanelRows = 32
)

// qImpl is a kernel set's integer path.
type qImpl struct {
	// actSize is the bytes one quantized activation row of cols elements
	// takes for weights of slot s; rows are that far apart. It is a
	// multiple of 4.
	actSize func(cols, s int) int
	// quantize quantizes one activation row for weights of slot s, in the
	// layout direct reads if natural, else the one tile reads.
	quantize func(dst []byte, x []float32, s int, natural bool)
	// direct, if not nil, sets out[r] for r < nr to the product of weight
	// rows r of w (in place, rs bytes apart) with the one activation row
	// a (natural layout): what tile computes, for batch 1 without packing.
	direct func(w []byte, rs, nr int, a []byte, cols, s int, out []float32)
	// tileSize is the bytes of one packed tile of cols columns of slot s;
	// 0 means tile reads weight rows in place and pack is not called.
	tileSize func(cols, s int) int
	// pack packs nr ≤ 4 weight rows of rs bytes (in rows) into a tile.
	pack func(dst []byte, rows []byte, rs, nr, cols, s int)
	// tile sets out[k*os+r] for r < nr, k < nc (nc ≤ maxCols) to weight
	// row r of w (ceil(nr/4) packed tiles, or rows in place rs bytes
	// apart) · activation row k of a (rows as bytes apart).
	tile    func(w []byte, rs, nr int, a []byte, as, nc, cols, s int, out []float32, os int)
	maxCols int
}

// qGroups is the number of 8-block groups in a row of cols elements.
func qGroups(cols int) int { return (cols/quant.ActBlock + qGroupBlocks - 1) / qGroupBlocks }

// intPath reports whether MatMul takes the integer path for type t.
func intPath(t quant.Type) bool {
	switch t {
	case quant.Q8_0, quant.Q4_0, quant.Q4_K, quant.Q5_K, quant.Q6_K:
		return !disableIntPath
	}
	return false
}

// disableIntPath routes the integer path's types through the float path,
// for benchmarks that compare the two. Only tests set it.
var disableIntPath bool

// alignBytes returns n bytes of *buf starting at a 64-byte boundary,
// growing *buf if needed.
func alignBytes(buf *[]byte, n int) []byte {
	if cap(*buf) < n+63 {
		*buf = make([]byte, n+63)
	}
	b := (*buf)[:cap(*buf)]
	off := int(-uintptr(unsafe.Pointer(unsafe.SliceData(b)))) & 63
	return b[off : off+n : off+n]
}

// quantizeRows quantizes activation rows [lo, hi) into j.act.
func (j *mmJob) quantizeRows(lo, hi int) {
	q := &active.q
	s := slot(j.t)
	for b := lo; b < hi; b++ {
		q.quantize(j.act[b*j.as:(b+1)*j.as], j.x[b*j.cols:(b+1)*j.cols], s, j.mode == mmDirectQ)
	}
}

// runQ computes integer-path work units [lo, hi) on participant w: unit u
// is panel u%j.panels of rows, times activation rows
// [c*j.chunk, (c+1)*j.chunk) with c = u/j.panels.
func (j *mmJob) runQ(w, lo, hi int) {
	q := &active.q
	s := slot(j.t)
	if j.mode == mmDirectQ {
		for u := lo; u < hi; u++ {
			r0 := u * j.panelRows
			r1 := min(r0+j.panelRows, j.rows)
			q.direct(j.data[r0*j.rs:r1*j.rs], j.rs, r1-r0, j.act, j.cols, s, j.out[r0:r1])
		}
		return
	}
	ts := q.tileSize(j.cols, s)
	var pk []byte
	if ts > 0 && j.tiles == nil {
		n := qPanelRows / qTileRows * ts
		if j.p != nil {
			pk = j.p.byteScratchFor(w, n)
		} else {
			pk = alignBytes(&j.bbuf, n)
		}
	}
	for u := lo; u < hi; u++ {
		r0 := u % j.panels * j.panelRows
		r1 := min(r0+j.panelRows, j.rows)
		c0 := u / j.panels * j.chunk
		c1 := min(c0+j.chunk, j.batch)
		if j.tiles != nil {
			// Packed once, at load (panels start at multiples of 4 rows).
			w := j.tiles[r0/qTileRows*ts : (r1+qTileRows-1)/qTileRows*ts]
			for c := c0; c < c1; c += q.maxCols {
				q.tile(w, j.rs, r1-r0, j.act[c*j.as:], j.as, min(q.maxCols, c1-c), j.cols, s, j.out[c*j.rows+r0:], j.rows)
			}
			continue
		}
		if ts > 0 {
			for t := r0; t < r1; t += qTileRows {
				nr := min(qTileRows, r1-t)
				q.pack(pk[(t-r0)/qTileRows*ts:], j.data[t*j.rs:(t+nr)*j.rs], j.rs, nr, j.cols, s)
			}
		}
		w := j.data[r0*j.rs : r1*j.rs]
		if ts > 0 {
			w = pk
		}
		for c := c0; c < c1; c += q.maxCols {
			q.tile(w, j.rs, r1-r0, j.act[c*j.as:], j.as, min(q.maxCols, c1-c), j.cols, s, j.out[c*j.rows+r0:], j.rows)
		}
	}
}

// The portable integer path: activation rows are laid out as len(x) int8
// quants followed by len(x)/32 float32 scales (and for the K-quants more,
// see quantActGenericK), and the tile reads the weight rows in place.
var genericQ = qImpl{
	actSize: func(cols, s int) int {
		if isK(s) {
			return cols + cols/quant.ActBlock*16
		}
		return cols + cols/quant.ActBlock*4
	},
	quantize: quantActGeneric,
	tileSize: func(int, int) int { return 0 },
	tile:     qTileGeneric,
	maxCols:  4,
}

func quantActGeneric(dst []byte, x []float32, s int, _ bool) {
	if isK(s) {
		quantActGenericK(dst, x)
		return
	}
	n := len(x)
	if n == 0 {
		return
	}
	nb := n / quant.ActBlock
	dst = dst[:n+4*nb]
	q := unsafe.Slice((*int8)(unsafe.Pointer(&dst[0])), n)
	d := unsafe.Slice((*float32)(unsafe.Pointer(&dst[n])), nb)
	quant.QuantizeActivations(q, d, x)
}

// qTileGeneric is the canonical computation above, with weight rows read in
// place.
func qTileGeneric(w []byte, rs, nr int, a []byte, as, nc, cols, s int, out []float32, os int) {
	if isK(s) {
		qTileGenericK(w, rs, nr, a, as, nc, cols, s, out, os)
		return
	}
	nb := cols / quant.ActBlock
	if nb == 0 {
		for k := range nc {
			clear(out[k*os : k*os+nr])
		}
		return
	}
	for k := range nc {
		ak := a[k*as : k*as+cols+4*nb]
		xq := ak[:cols]
		dx := unsafe.Slice((*float32)(unsafe.Pointer(&ak[cols])), nb)
		for r := range nr {
			row := w[r*rs : (r+1)*rs]
			var lane [8]float64
			for b := range nb {
				y := (*[32]byte)(xq[32*b:])
				var idot int32
				var dw float32
				if s == slotQ8_0 {
					blk := (*[34]byte)(row[34*b:])
					dw = quant.F16ToF32(uint16(blk[0]) | uint16(blk[1])<<8)
					idot = dotQ8Block((*[32]byte)(blk[2:]), y)
				} else {
					blk := (*[18]byte)(row[18*b:])
					dw = quant.F16ToF32(uint16(blk[0]) | uint16(blk[1])<<8)
					idot = dotQ4Block((*[16]byte)(blk[2:]), y)
				}
				sc := dw * dx[b]
				// The product is exact in float64 (|idot| < 2^20, sc has
				// 24 bits), so this rounds as a float32 fused multiply-add
				// would, except where the float64 rounding of the sum
				// lands on a float32 tie.
				lane[b%8] = float64(float32(lane[b%8] + float64(idot)*float64(sc)))
			}
			l := [8]float32{
				float32(lane[0]), float32(lane[1]), float32(lane[2]), float32(lane[3]),
				float32(lane[4]), float32(lane[5]), float32(lane[6]), float32(lane[7]),
			}
			out[k*os+r] = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
		}
	}
}

// dotQ8Block is Σ int8(w[j])·int8(y[j]).
func dotQ8Block(w, y *[32]byte) int32 {
	var s0, s1, s2, s3 int32
	for j := 0; j < 32; j += 4 {
		s0 += int32(int8(w[j])) * int32(int8(y[j]))
		s1 += int32(int8(w[j+1])) * int32(int8(y[j+1]))
		s2 += int32(int8(w[j+2])) * int32(int8(y[j+2]))
		s3 += int32(int8(w[j+3])) * int32(int8(y[j+3]))
	}
	return (s0 + s1) + (s2 + s3)
}

// dotQ4Block is Σ (w[j]&15 - 8)·int8(y[j]) + (w[j]>>4 - 8)·int8(y[j+16]).
func dotQ4Block(w *[16]byte, y *[32]byte) int32 {
	var s0, s1 int32
	for j := 0; j < 16; j += 2 {
		s0 += (int32(w[j]&15)-8)*int32(int8(y[j])) + (int32(w[j]>>4)-8)*int32(int8(y[j+16]))
		s1 += (int32(w[j+1]&15)-8)*int32(int8(y[j+1])) + (int32(w[j+1]>>4)-8)*int32(int8(y[j+17]))
	}
	return s0 + s1
}

// Tiles are a matrix's rows packed once into the integer path's tile
// layout, by the kernel set that reads them.
type Tiles struct {
	set  string
	data []byte
}

// PackTiles packs m's rows as the active kernel set's integer tiles want
// them, so that products with many activation rows (prefill, batched
// decoding) read them as they are instead of packing each panel at every
// call, which costs a batched decoding step about a tenth of its time. It
// returns nil where there is nothing to gain: types off the integer path,
// kernel sets that read rows in place, or layouts more than maxGrowth
// times the size of the stored rows (Q4_0's nibbles, for one, are packed
// into whole bytes). Batch-1 products still read m.Data.
func PackTiles(m Matrix, maxGrowth float64) *Tiles {
	if !intPath(m.Type) || m.Rows == 0 || m.Cols == 0 {
		return nil
	}
	q := &active.q
	s := slot(m.Type)
	ts := q.tileSize(m.Cols, s)
	if ts == 0 || q.pack == nil {
		return nil
	}
	n := (m.Rows + qTileRows - 1) / qTileRows * ts
	rs := m.RowBytes()
	if float64(n) > maxGrowth*float64(m.Rows*rs) {
		return nil
	}
	data := make([]byte, n)
	for t := 0; t < m.Rows; t += qTileRows {
		nr := min(qTileRows, m.Rows-t)
		q.pack(data[t/qTileRows*ts:], m.Data[t*rs:(t+nr)*rs], rs, nr, m.Cols, s)
	}
	return &Tiles{set: active.name, data: data}
}
