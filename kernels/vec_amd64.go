//go:build !noasm

package kernels

// expSubAVX2 and siluMulAVX2 (vec_amd64.s) are impl.expSub and
// impl.siluMul: expf on 8 lanes.

//go:noescape
func expSubAVX2(x []float32, m float32) float64

//go:noescape
func siluMulAVX2(gate, up []float32)

// maxAVX2 and scaleAVX2 are impl.max and impl.scale.

//go:noescape
func maxAVX2(x []float32) float32

//go:noescape
func scaleAVX2(x []float32, s float32)
