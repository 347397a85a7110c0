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

// The heads kernels (tilegen's dotHeads and axpyHeads), in the VEX
// encoding both amd64 sets run.

//go:noescape
func dotHeadsF16AVX2(w *uint16, ws int, x *float32, steps, heads int, out *float32, os int)

//go:noescape
func axpyHeadsF16AVX2(out *float32, p *float32, ps int, v *uint16, vs int, steps, heads int)

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

//go:noescape
func axpyTileF16AVX2_1x32(out *float32, os int, p *float32, ps int, v *uint16, vs int, nr int)

//go:noescape
func axpyTileF16AVX2_2x32(out *float32, os int, p *float32, ps int, v *uint16, vs int, nr int)

//go:noescape
func axpyTileF16AVX2_1x8(out *float32, os int, p *float32, ps int, v *uint16, vs int, nr int)

//go:noescape
func axpyTileF16AVX2_2x8(out *float32, os int, p *float32, ps int, v *uint16, vs int, nr int)

//go:noescape
func axpyTileF16AVX512_1x64(out *float32, os int, p *float32, ps int, v *uint16, vs int, nr int)

//go:noescape
func axpyTileF16AVX512_2x64(out *float32, os int, p *float32, ps int, v *uint16, vs int, nr int)

//go:noescape
func axpyTileF16AVX512_3x64(out *float32, os int, p *float32, ps int, v *uint16, vs int, nr int)

//go:noescape
func axpyTileF16AVX512_4x64(out *float32, os int, p *float32, ps int, v *uint16, vs int, nr int)

//go:noescape
func axpyTileF16AVX512_1x16(out *float32, os int, p *float32, ps int, v *uint16, vs int, nr int)

//go:noescape
func axpyTileF16AVX512_2x16(out *float32, os int, p *float32, ps int, v *uint16, vs int, nr int)

//go:noescape
func axpyTileF16AVX512_3x16(out *float32, os int, p *float32, ps int, v *uint16, vs int, nr int)

//go:noescape
func axpyTileF16AVX512_4x16(out *float32, os int, p *float32, ps int, v *uint16, vs int, nr int)

//go:noescape
func dotTileF16AVX2_4x1(w *uint16, ws int, x *float32, xs, steps int, out *float32, os, groups int)

//go:noescape
func dotTileF16AVX2_4x2(w *uint16, ws int, x *float32, xs, steps int, out *float32, os, groups int)

//go:noescape
func dotTileF16AVX2_4x3(w *uint16, ws int, x *float32, xs, steps int, out *float32, os, groups int)

//go:noescape
func dotTileF16AVX512_4x1(w *uint16, ws int, x *float32, xs, steps int, out *float32, os int)

//go:noescape
func dotTileF16AVX512_4x2(w *uint16, ws int, x *float32, xs, steps int, out *float32, os int)

//go:noescape
func dotTileF16AVX512_4x3(w *uint16, ws int, x *float32, xs, steps int, out *float32, os int)

//go:noescape
func dotTileF16AVX512_4x4(w *uint16, ws int, x *float32, xs, steps int, out *float32, os int)

//go:noescape
func dotTileF16AVX512_4x5(w *uint16, ws int, x *float32, xs, steps int, out *float32, os int)

//go:noescape
func dotTileF16AVX512_4x6(w *uint16, ws int, x *float32, xs, steps int, out *float32, os int)

func axpyTileF16Kernel(wide bool, nq, w int, out *float32, os int, p *float32, ps int, v *uint16, vs int, nr int) {
	if wide {
		switch {
		case w == 64 && nq == 1:
			axpyTileF16AVX512_1x64(out, os, p, ps, v, vs, nr)
		case w == 64 && nq == 2:
			axpyTileF16AVX512_2x64(out, os, p, ps, v, vs, nr)
		case w == 64 && nq == 3:
			axpyTileF16AVX512_3x64(out, os, p, ps, v, vs, nr)
		case w == 64 && nq == 4:
			axpyTileF16AVX512_4x64(out, os, p, ps, v, vs, nr)
		case w == 16 && nq == 1:
			axpyTileF16AVX512_1x16(out, os, p, ps, v, vs, nr)
		case w == 16 && nq == 2:
			axpyTileF16AVX512_2x16(out, os, p, ps, v, vs, nr)
		case w == 16 && nq == 3:
			axpyTileF16AVX512_3x16(out, os, p, ps, v, vs, nr)
		case w == 16 && nq == 4:
			axpyTileF16AVX512_4x16(out, os, p, ps, v, vs, nr)
		default:
			panic("kernels: no axpy tile kernel")
		}
		return
	}
	switch {
	case w == 32 && nq == 1:
		axpyTileF16AVX2_1x32(out, os, p, ps, v, vs, nr)
	case w == 32 && nq == 2:
		axpyTileF16AVX2_2x32(out, os, p, ps, v, vs, nr)
	case w == 8 && nq == 1:
		axpyTileF16AVX2_1x8(out, os, p, ps, v, vs, nr)
	case w == 8 && nq == 2:
		axpyTileF16AVX2_2x8(out, os, p, ps, v, vs, nr)
	default:
		panic("kernels: no axpy tile kernel")
	}
}

// axpyTileF16Asm is AxpyTileF16 for n a multiple of 8: columns in blocks
// of 4 and then 1 vector registers, then (AVX-512) a last 8 with the AVX2
// kernel, nq ≤ 2 (AVX2) or 4 (AVX-512) output rows at a time. Every
// element gets the same fused multiply-adds in the same order whichever
// kernel reaches it.
func axpyTileF16Asm(wide bool, out []float32, os int, p []float32, ps, nc int, v []uint16, vs, nr, n int) {
	lanes, maxQ := 8, 2
	if wide {
		lanes, maxQ = 16, 4
	}
	c := 0
	for _, w := range [2]int{4 * lanes, lanes} {
		for ; c+w <= n; c += w {
			for k := 0; k < nc; k += maxQ {
				axpyTileF16Kernel(wide, min(maxQ, nc-k), w, &out[k*os+c], os, &p[k*ps], ps, &v[c], vs, nr)
			}
		}
	}
	for ; c < n; c += 8 {
		for k := 0; k < nc; k += 2 {
			axpyTileF16Kernel(false, min(2, nc-k), 8, &out[k*os+c], os, &p[k*ps], ps, &v[c], vs, nr)
		}
	}
}

// dotTileF16Kernel computes groups tiles of 4 rows × c float rows, the
// float rows (and outputs) of each tile after the last's; AVX-512 takes
// one group.
func dotTileF16Kernel(wide bool, c int, w *uint16, ws int, x *float32, xs, steps int, out *float32, os, groups int) {
	if wide {
		switch c {
		case 1:
			dotTileF16AVX512_4x1(w, ws, x, xs, steps, out, os)
		case 2:
			dotTileF16AVX512_4x2(w, ws, x, xs, steps, out, os)
		case 3:
			dotTileF16AVX512_4x3(w, ws, x, xs, steps, out, os)
		case 4:
			dotTileF16AVX512_4x4(w, ws, x, xs, steps, out, os)
		case 5:
			dotTileF16AVX512_4x5(w, ws, x, xs, steps, out, os)
		case 6:
			dotTileF16AVX512_4x6(w, ws, x, xs, steps, out, os)
		default:
			panic("kernels: no dot tile kernel")
		}
		return
	}
	switch c {
	case 1:
		dotTileF16AVX2_4x1(w, ws, x, xs, steps, out, os, groups)
	case 2:
		dotTileF16AVX2_4x2(w, ws, x, xs, steps, out, os, groups)
	case 3:
		dotTileF16AVX2_4x3(w, ws, x, xs, steps, out, os, groups)
	default:
		panic("kernels: no dot tile kernel")
	}
}

// dotTileF16Asm is DotTileF16 with n a multiple of 8 and w readable up to
// the next multiple of 4 rows: 4 rows × up to 3 (AVX2) or 6 (AVX-512)
// float rows per kernel call; a last partial tile's sums go through a
// buffer so that out is written only for rows below nr.
func dotTileF16Asm(wide bool, out []float32, os int, w []uint16, ws, nr int, x []float32, xs, nc, n int) {
	maxC := 3
	if wide {
		maxC = 6
	}
	steps := n / 8
	_ = w[((nr+3)&^3-1)*ws+n-1]
	for r := 0; r < nr; r += 4 {
		k := 0
		if !wide && r+4 <= nr && nc >= maxC {
			// All full tiles of this block of rows in one call.
			groups := nc / maxC
			dotTileF16Kernel(false, maxC, &w[r*ws], 2*ws, &x[0], 4*xs, steps, &out[r], os, groups)
			k = groups * maxC
		}
		for ; k < nc; k += maxC {
			c := min(maxC, nc-k)
			if r+4 <= nr {
				dotTileF16Kernel(wide, c, &w[r*ws], 2*ws, &x[k*xs], 4*xs, steps, &out[k*os+r], os, 1)
				continue
			}
			var tmp [4 * 6]float32
			dotTileF16Kernel(wide, c, &w[r*ws], 2*ws, &x[k*xs], 4*xs, steps, &tmp[0], 4, 1)
			for j := range c {
				copy(out[(k+j)*os+r:(k+j)*os+nr], tmp[4*j:4*j+nr-r])
			}
		}
	}
}
