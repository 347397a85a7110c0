//go:build !noasm

package kernels

//go:generate go run ./internal/tilegen -o tile_amd64.s

//go:noescape
func axpyTileAVX2_1x32(out *float32, os int, p *float32, ps int, v *float32, vs int, nr int)

//go:noescape
func axpyTileAVX2_2x32(out *float32, os int, p *float32, ps int, v *float32, vs int, nr int)

//go:noescape
func axpyTileAVX2_3x32(out *float32, os int, p *float32, ps int, v *float32, vs int, nr int)

//go:noescape
func axpyTileAVX2_1x8(out *float32, os int, p *float32, ps int, v *float32, vs int, nr int)

//go:noescape
func axpyTileAVX2_2x8(out *float32, os int, p *float32, ps int, v *float32, vs int, nr int)

//go:noescape
func axpyTileAVX2_3x8(out *float32, os int, p *float32, ps int, v *float32, vs int, nr int)

//go:noescape
func axpyTileAVX512_1x64(out *float32, os int, p *float32, ps int, v *float32, vs int, nr int)

//go:noescape
func axpyTileAVX512_2x64(out *float32, os int, p *float32, ps int, v *float32, vs int, nr int)

//go:noescape
func axpyTileAVX512_3x64(out *float32, os int, p *float32, ps int, v *float32, vs int, nr int)

//go:noescape
func axpyTileAVX512_4x64(out *float32, os int, p *float32, ps int, v *float32, vs int, nr int)

//go:noescape
func axpyTileAVX512_1x16(out *float32, os int, p *float32, ps int, v *float32, vs int, nr int)

//go:noescape
func axpyTileAVX512_2x16(out *float32, os int, p *float32, ps int, v *float32, vs int, nr int)

//go:noescape
func axpyTileAVX512_3x16(out *float32, os int, p *float32, ps int, v *float32, vs int, nr int)

//go:noescape
func axpyTileAVX512_4x16(out *float32, os int, p *float32, ps int, v *float32, vs int, nr int)

// axpyTileKernel calls the kernel for nq rows of w columns.
func axpyTileKernel(wide bool, nq, w int, out *float32, os int, p *float32, ps int, v *float32, vs int, nr int) {
	if wide {
		switch {
		case w == 64 && nq == 1:
			axpyTileAVX512_1x64(out, os, p, ps, v, vs, nr)
		case w == 64 && nq == 2:
			axpyTileAVX512_2x64(out, os, p, ps, v, vs, nr)
		case w == 64 && nq == 3:
			axpyTileAVX512_3x64(out, os, p, ps, v, vs, nr)
		case w == 64 && nq == 4:
			axpyTileAVX512_4x64(out, os, p, ps, v, vs, nr)
		case w == 16 && nq == 1:
			axpyTileAVX512_1x16(out, os, p, ps, v, vs, nr)
		case w == 16 && nq == 2:
			axpyTileAVX512_2x16(out, os, p, ps, v, vs, nr)
		case w == 16 && nq == 3:
			axpyTileAVX512_3x16(out, os, p, ps, v, vs, nr)
		case w == 16 && nq == 4:
			axpyTileAVX512_4x16(out, os, p, ps, v, vs, nr)
		default:
			panic("kernels: no axpy tile kernel")
		}
		return
	}
	switch {
	case w == 32 && nq == 1:
		axpyTileAVX2_1x32(out, os, p, ps, v, vs, nr)
	case w == 32 && nq == 2:
		axpyTileAVX2_2x32(out, os, p, ps, v, vs, nr)
	case w == 32 && nq == 3:
		axpyTileAVX2_3x32(out, os, p, ps, v, vs, nr)
	case w == 8 && nq == 1:
		axpyTileAVX2_1x8(out, os, p, ps, v, vs, nr)
	case w == 8 && nq == 2:
		axpyTileAVX2_2x8(out, os, p, ps, v, vs, nr)
	case w == 8 && nq == 3:
		axpyTileAVX2_3x8(out, os, p, ps, v, vs, nr)
	default:
		panic("kernels: no axpy tile kernel")
	}
}

// axpyTileAsm is AxpyTile over columns in blocks of 4 and then 1 vector
// registers, nq ≤ 3 (AVX2) or 4 (AVX-512) output rows at a time; the
// columns left over go through Axpy. Each element sees the same fused
// multiply-adds in the same order whichever way it is reached. The sizes
// have been checked.
func axpyTileAsm(wide bool, out []float32, os int, p []float32, ps, nc int, v []float32, vs, nr, n int) {
	lanes, maxQ := 8, 3
	if wide {
		lanes, maxQ = 16, 4
	}
	c := 0
	for _, w := range [2]int{4 * lanes, lanes} {
		for ; c+w <= n; c += w {
			for k := 0; k < nc; k += maxQ {
				axpyTileKernel(wide, min(maxQ, nc-k), w, &out[k*os+c], os, &p[k*ps], ps, &v[c], vs, nr)
			}
		}
	}
	if c < n {
		for k := range nc {
			o := out[k*os+c : k*os+n]
			for r, a := range p[k*ps : k*ps+nr] {
				active.axpy(a, v[r*vs+c:r*vs+n], o)
			}
		}
	}
}
