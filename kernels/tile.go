package kernels

import (
	"fmt"
	"unsafe"
)

// DotTile computes a tile of dot products between rows of w and rows of x,
// each over n elements:
//
//	for k := range nc {
//		for r := range nr {
//			out[k*os+r] = Dot(w[r*ws:r*ws+n], x[k*xs:k*xs+n])
//		}
//	}
//
// except that when n is a multiple of 8 each product is summed as MatMul's
// batched float path sums (8 lanes of fused multiply-adds, added pairwise;
// see matmul_float.go), so a result depends only on its own two rows, not
// on nr, nc or the tile it was computed in. Attention computes its scores
// with it: w holds keys in place in the cache, x the queries.
//
// The rows of w are read four at a time: when nr is not a multiple of 4, w
// should hold the rows up to the next multiple of 4 (any finite values;
// their results are dropped), or the last rows are copied first. It panics
// if a slice is too short, and does not allocate when n ≤ 512.
func DotTile(out []float32, os int, w []float32, ws, nr int, x []float32, xs, nc, n int) {
	if nr <= 0 || nc <= 0 {
		return
	}
	if n <= 0 {
		for k := range nc {
			clear(out[k*os : k*os+nr])
		}
		return
	}
	if len(w) < (nr-1)*ws+n || len(x) < (nc-1)*xs+n || len(out) < (nc-1)*os+nr {
		panic(fmt.Sprintf("kernels: DotTile of %d×%d over %d: w has %d, x %d, out %d elements", nr, nc, n, len(w), len(x), len(out)))
	}
	if n%8 != 0 {
		for k := range nc {
			for r := range nr {
				out[k*os+r] = active.dot(w[r*ws:r*ws+n], x[k*xs:k*xs+n])
			}
		}
		return
	}
	f := &active.f
	full := inPlaceRows(len(w), ws, nr, n)
	steps := n / 8
	wb := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(w))), 4*len(w))
	for k := 0; k < nc; k += f.maxCols {
		c := min(f.maxCols, nc-k)
		if full > 0 {
			f.tile(wb, 4*ws, full, x[k*xs:], xs, c, steps, out[k*os:], os)
		}
	}
	if full == nr {
		return
	}
	// (The buffer is declared here, on the rare path: it escapes.)
	var buf [4 * 512]float32
	tw := padTail(w, ws, full, nr, n, buf[:])
	rem := nr - full
	twb := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(tw))), 4*len(tw))
	for k := 0; k < nc; k += f.maxCols {
		c := min(f.maxCols, nc-k)
		f.tile(twb, 4*n, rem, x[k*xs:], xs, c, steps, out[k*os+full:], os)
	}
}

// AxpyTile adds weighted rows of v to rows of out, each n elements long:
//
//	for k := range nc {
//		for r := range nr {
//			Axpy(p[k*ps+r], v[r*vs:r*vs+n], out[k*os:k*os+n])
//		}
//	}
//
// with exactly Axpy's roundings in that order, so a result does not depend
// on nc or the tile. Attention sums its values with it: p holds the
// softmax weights of nc queries, v the values in place in the cache. It
// panics if a slice is too short and does not allocate.
func AxpyTile(out []float32, os int, p []float32, ps, nc int, v []float32, vs, nr, n int) {
	if nr <= 0 || nc <= 0 || n <= 0 {
		return
	}
	if len(v) < (nr-1)*vs+n || len(p) < (nc-1)*ps+nr || len(out) < (nc-1)*os+n {
		panic(fmt.Sprintf("kernels: AxpyTile of %d×%d over %d: p has %d, v %d, out %d elements", nr, nc, n, len(p), len(v), len(out)))
	}
	if active.axpyTile != nil {
		active.axpyTile(out, os, p, ps, nc, v, vs, nr, n)
		return
	}
	axpyTileLoop(out, os, p, ps, nc, v, vs, nr, n)
}

func axpyTileLoop(out []float32, os int, p []float32, ps, nc int, v []float32, vs, nr, n int) {
	for k := range nc {
		o := out[k*os : k*os+n]
		pk := p[k*ps : k*ps+nr]
		for r, a := range pk {
			active.axpy(a, v[r*vs:r*vs+n], o)
		}
	}
}

// DotTileF16 is [DotTile] with the rows of w in half precision (IEEE
// binary16 bits, as the KV cache stores keys): each element is widened
// exactly to float32 and the products are summed as DotTile sums them. It
// does not allocate when n ≤ 512.
func DotTileF16(out []float32, os int, w []uint16, ws, nr int, x []float32, xs, nc, n int) {
	if nr <= 0 || nc <= 0 {
		return
	}
	if n <= 0 {
		for k := range nc {
			clear(out[k*os : k*os+nr])
		}
		return
	}
	if len(w) < (nr-1)*ws+n || len(x) < (nc-1)*xs+n || len(out) < (nc-1)*os+nr {
		panic(fmt.Sprintf("kernels: DotTileF16 of %d×%d over %d: w has %d, x %d, out %d elements", nr, nc, n, len(w), len(x), len(out)))
	}
	if active.dotTileF16 == nil || n%8 != 0 {
		dotTileF16Generic(out, os, w, ws, nr, x, xs, nc, n)
		return
	}
	full := inPlaceRows(len(w), ws, nr, n)
	if full > 0 {
		active.dotTileF16(out, os, w, ws, full, x, xs, nc, n)
	}
	if full == nr {
		return
	}
	var buf [4 * 512]uint16
	tw := padTail(w, ws, full, nr, n, buf[:])
	active.dotTileF16(out[full:], os, tw, n, nr-full, x, xs, nc, n)
}

// dotTileF16Generic is DotTileF16 in portable Go: with n a multiple of 8,
// the canonical 8-lane sums with separate roundings (as fTileGeneric);
// otherwise each row widened and dotted with the set's dot product.
func dotTileF16Generic(out []float32, os int, w []uint16, ws, nr int, x []float32, xs, nc, n int) {
	tab := f16ToF32Table()
	if n%8 != 0 {
		var buf [512]float32
		row := buf[:]
		if n > len(buf) {
			row = make([]float32, n)
		}
		row = row[:n]
		for r := range nr {
			for i, h := range w[r*ws : r*ws+n] {
				row[i] = tab[h]
			}
			for k := range nc {
				out[k*os+r] = active.dot(row, x[k*xs:k*xs+n])
			}
		}
		return
	}
	for r := range nr {
		wr := w[r*ws : r*ws+n]
		for k := range nc {
			xr := x[k*xs : k*xs+n]
			var l [8]float32
			for s := 0; s < n; s += 8 {
				a := (*[8]uint16)(wr[s:])
				b := (*[8]float32)(xr[s:])
				for i := range 8 {
					l[i] += tab[a[i]] * b[i]
				}
			}
			out[k*os+r] = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
		}
	}
}

// AxpyTileF16 is [AxpyTile] with the rows of v in half precision (as the
// KV cache stores values), each element widened exactly to float32. It
// panics if a slice is too short and does not allocate when n ≤ 512.
func AxpyTileF16(out []float32, os int, p []float32, ps, nc int, v []uint16, vs, nr, n int) {
	if nr <= 0 || nc <= 0 || n <= 0 {
		return
	}
	if len(v) < (nr-1)*vs+n || len(p) < (nc-1)*ps+nr || len(out) < (nc-1)*os+n {
		panic(fmt.Sprintf("kernels: AxpyTileF16 of %d×%d over %d: p has %d, v %d, out %d elements", nr, nc, n, len(p), len(v), len(out)))
	}
	if active.axpyTileF16 != nil && n%8 == 0 {
		active.axpyTileF16(out, os, p, ps, nc, v, vs, nr, n)
		return
	}
	// Portable: widen a row at a time and add it with the set's Axpy.
	tab := f16ToF32Table()
	var buf [512]float32
	row := buf[:]
	if n > len(buf) {
		row = make([]float32, n)
	}
	row = row[:n]
	for r := range nr {
		for i, h := range v[r*vs : r*vs+n] {
			row[i] = tab[h]
		}
		for k := range nc {
			active.axpy(p[k*ps+r], row, out[k*os:k*os+n])
		}
	}
}

// DotHeadsF16 sets out[h*os+r] to the dot product of w[r*ws+h*n:][:n]
// and x[h*n:][:n], for rows r < nr and heads h < heads: the scores of one
// query per head against a block of cache rows that hold all heads side by
// side. For each head it computes what DotTileF16(out[h*os:], os,
// w[h*n:], ws, nr, x[h*n:], n, 1, n) would, bit for bit, but reads the
// rows front to back, 4 at a time, which keeps a decoding step's walk
// over a long cache at memory speed. It panics if a slice is too short.
func DotHeadsF16(out []float32, os int, w []uint16, ws, nr int, x []float32, heads, n int) {
	if nr <= 0 || heads <= 0 || n <= 0 {
		return
	}
	if len(w) < (nr-1)*ws+heads*n || len(x) < heads*n || len(out) < (heads-1)*os+nr {
		panic(fmt.Sprintf("kernels: DotHeadsF16 of %d rows × %d heads of %d: w has %d, x %d, out %d elements", nr, heads, n, len(w), len(x), len(out)))
	}
	full := 0
	if active.dotHeadsF16 != nil && n%8 == 0 {
		full = nr &^ 3
		for r := 0; r < full; r += 4 {
			active.dotHeadsF16(&w[r*ws], 2*ws, &x[0], n/8, heads, &out[r], os)
		}
	}
	if full < nr {
		for h := range heads {
			DotTileF16(out[h*os+full:], os, w[full*ws+h*n:], ws, nr-full, x[h*n:], n, 1, n)
		}
	}
}

// AxpyHeadsF16 adds p[h*ps+r]·v[r*vs+h*n:][:n] to out[h*n:][:n] for rows
// r < nr in order and heads h < heads: the values of a block of cache
// rows, all heads side by side, weighted by one query per head. For each
// head it computes what AxpyTileF16(out[h*n:], n, p[h*ps:], ps, 1,
// v[h*n:], vs, nr, n) would, bit for bit, reading the rows as
// DotHeadsF16 does. It panics if a slice is too short.
func AxpyHeadsF16(out []float32, p []float32, ps int, v []uint16, vs, nr, heads, n int) {
	if nr <= 0 || heads <= 0 || n <= 0 {
		return
	}
	if len(v) < (nr-1)*vs+heads*n || len(p) < (heads-1)*ps+nr || len(out) < heads*n {
		panic(fmt.Sprintf("kernels: AxpyHeadsF16 of %d rows × %d heads of %d: p has %d, v %d, out %d elements", nr, heads, n, len(p), len(v), len(out)))
	}
	full := 0
	if active.axpyHeadsF16 != nil && n%8 == 0 {
		full = nr &^ 3
		for r := 0; r < full; r += 4 {
			active.axpyHeadsF16(&out[0], &p[r], ps, &v[r*vs], vs, n/8, heads)
		}
	}
	if full < nr {
		for h := range heads {
			AxpyTileF16(out[h*n:], n, p[h*ps+full:], ps, 1, v[full*vs+h*n:], vs, nr-full, n)
		}
	}
}

// inPlaceRows is how many of nr rows (ws apart, n elements used, in a
// slice of lenW) a kernel reading rows four at a time may read in place:
// all of them when the slice reaches the next multiple of 4, else the
// multiples of 4.
func inPlaceRows(lenW, ws, nr, n int) int {
	if padded := (nr+3)&^3 - 1; lenW >= padded*ws+n {
		return nr
	}
	return nr &^ 3
}

// padTail copies rows [full, nr) of w into a zero-padded tile of 4 rows of
// n, in buf when it is large enough.
func padTail[T float32 | uint16](w []T, ws, full, nr, n int, buf []T) []T {
	tail := buf
	if 4*n > len(buf) {
		tail = make([]T, 4*n)
	}
	tail = tail[:4*n]
	rem := nr - full
	for r := range rem {
		copy(tail[r*n:(r+1)*n], w[(full+r)*ws:(full+r)*ws+n])
	}
	clear(tail[rem*n:])
	return tail
}
