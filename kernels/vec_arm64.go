//go:build !noasm

package kernels

// expSubNEON and siluMulNEON (neon_arm64.s) are impl.expSub and
// impl.siluMul: expf on 4 lanes, two vectors at a time.

//go:noescape
func expSubNEON(x []float32, m float32) float64

//go:noescape
func siluMulNEON(gate, up []float32)

// maxNEON and scaleNEON are impl.max and impl.scale.

//go:noescape
func maxNEON(x []float32) float32

//go:noescape
func scaleNEON(x []float32, s float32)
