package kernels

import "unsafe"

// MatMul's batched float path (matMulF, runF) multiplies tiles of 4 weight
// rows × up to fImpl.maxCols activation rows. The canonical computation of
// one output, over the columns zero-padded to steps of 8:
//
//	var lane [8]float32
//	for s := range steps {
//		for l := range 8 { lane[l] = fma(w[8s+l], x[8s+l], lane[l]) }
//	}
//	out = ((lane[0]+lane[1])+(lane[2]+lane[3])) + ((lane[4]+lane[5])+(lane[6]+lane[7]))
//
// The assembly computes exactly that; the portable set rounds the product
// and the sum separately. Either way an output does not depend on the tile
// it was computed in.

// fImpl is a kernel set's batched float path.
type fImpl struct {
	// tile sets out[k*os+r] for r < nr, k < nc ≤ maxCols, to the product
	// of weight row r of w (float32s, rows ws bytes apart, and zero rows
	// up to a multiple of 4) and activation row k of x (rows xs floats
	// apart), over steps×8 elements.
	tile    func(w []byte, ws, nr int, x []float32, xs, nc, steps int, out []float32, os int)
	maxCols int
	// inPlace reports whether tile may read F32 weights in place from a
	// matrix (whose rows need not be 4-byte aligned).
	inPlace bool
}

var genericF = fImpl{tile: fTileGeneric, maxCols: 4}

// fTileGeneric is the canonical computation with separate roundings. w is
// a float32 buffer's bytes (aligned).
func fTileGeneric(w []byte, ws, nr int, x []float32, xs, nc, steps int, out []float32, os int) {
	n := steps * 8
	if nr == 0 || nc == 0 {
		return
	}
	_ = w[(nr-1)*ws+4*n-1] // the rows below are made unchecked
	for r := range nr {
		wr := unsafe.Slice((*float32)(unsafe.Pointer(&w[r*ws])), n)
		for k := range nc {
			xr := x[k*xs : k*xs+n]
			var l [8]float32
			for s := 0; s < n; s += 8 {
				a := (*[8]float32)(wr[s:])
				b := (*[8]float32)(xr[s:])
				l[0] += a[0] * b[0]
				l[1] += a[1] * b[1]
				l[2] += a[2] * b[2]
				l[3] += a[3] * b[3]
				l[4] += a[4] * b[4]
				l[5] += a[5] * b[5]
				l[6] += a[6] * b[6]
				l[7] += a[7] * b[7]
			}
			out[k*os+r] = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
		}
	}
}
