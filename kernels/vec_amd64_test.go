//go:build !noasm

package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestExpAVX2 measures expSubAVX2 (with m = 0) against math.Exp as TestExpf
// does expf, with the special values, and checks siluMulAVX2 against the
// scalar formula.
func TestExpAVX2(t *testing.T) {
	if active.expSub == nil {
		t.Skip("no AVX2")
	}
	var xs []float32
	for x := float32(-87.3); x < 88.7; x += 0.000731 {
		xs = append(xs, x)
	}
	r := rand.New(rand.NewPCG(2, 2))
	for range 200000 {
		xs = append(xs, float32(r.Float64()*176-87.3))
	}
	xs = xs[:len(xs)&^7]
	got := append([]float32(nil), xs...)
	expSubAVX2(got, 0)
	var worst float64
	var at float32
	for i, x := range xs {
		want := math.Exp(float64(x))
		if want < 0x1p-126 || want > math.MaxFloat32 {
			continue
		}
		ulp := math.Ldexp(1, math.Ilogb(want)-23)
		if e := math.Abs(float64(got[i])-want) / ulp; e > worst {
			worst, at = e, x
		}
	}
	if worst > 2 {
		t.Errorf("expSubAVX2 error %.2f ulp at %v, want ≤ 2", worst, at)
	}
	t.Logf("expSubAVX2 worst error %.2f ulp at %v", worst, at)
	nan := float32(math.NaN())
	special := []float32{0, float32(math.Inf(-1)), -200, 89, float32(math.Inf(1)), -100, nan, -104.5}
	s := append([]float32(nil), special...)
	expSubAVX2(s, 0)
	for i, x := range special {
		want := expf(x)
		if math.Float32bits(s[i]) != math.Float32bits(want) && !(want != want && s[i] != s[i]) &&
			math.Abs(float64(s[i])-float64(want)) > 0x1p-149 {
			t.Errorf("expSubAVX2(%v) = %v, want %v", x, s[i], want)
		}
	}
	g := make([]float32, 1024)
	up := make([]float32, 1024)
	for i := range g {
		g[i] = float32(r.NormFloat64() * 8)
		up[i] = float32(r.NormFloat64())
	}
	g0 := append([]float32(nil), g...)
	siluMulAVX2(g, up)
	for i, v := range g0 {
		want := float64(v) / (1 + math.Exp(-float64(v))) * float64(up[i])
		if d := math.Abs(float64(g[i]) - want); d > 8*0x1p-24*math.Abs(want) {
			t.Fatalf("siluMulAVX2(%v, %v) = %v, want %v", v, up[i], g[i], want)
		}
	}
}
