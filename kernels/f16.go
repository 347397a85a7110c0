package kernels

import (
	"fmt"

	"github.com/spigot-llm/spigot/quant"
)

// ToF16 converts src to IEEE binary16 bits in dst, as quant.F32ToF16 does
// element by element (round to nearest even; overflow to infinity; NaNs
// stay NaNs, their payloads possibly differing). The KV cache stores keys
// and values with it. It panics if dst is shorter than src.
func ToF16(dst []uint16, src []float32) {
	if len(dst) < len(src) {
		panic(fmt.Sprintf("kernels: ToF16 of %d values into %d", len(src), len(dst)))
	}
	if active.toF16 != nil {
		active.toF16(dst[:len(src)], src)
		return
	}
	toF16Generic(dst, src)
}

func toF16Generic(dst []uint16, src []float32) {
	for i, x := range src {
		dst[i] = quant.F32ToF16(x)
	}
}
