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
	full := nr
	if padded := (nr+3)&^3 - 1; len(w) < padded*ws+n {
		full = nr &^ 3
	}
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
	// The last rows, copied into a zero-padded tile of 4.
	var buf [4 * 512]float32
	tw := buf[:]
	if 4*n > len(buf) {
		tw = make([]float32, 4*n)
	}
	rem := nr - full
	for r := range rem {
		copy(tw[r*n:(r+1)*n], w[(full+r)*ws:(full+r)*ws+n])
	}
	clear(tw[rem*n : 4*n])
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
