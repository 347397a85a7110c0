//go:build !noasm

package kernels

// toF16AVX2 (f16_amd64.s) is impl.toF16 for n a multiple of 8.
//
//go:noescape
func toF16AVX2(dst *uint16, src *float32, n int)

func toF16Asm(dst []uint16, src []float32) {
	n := len(src) &^ 7
	if n > 0 {
		toF16AVX2(&dst[0], &src[0], n)
	}
	toF16Generic(dst[n:], src[n:])
}
