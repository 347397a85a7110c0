//go:build !noasm

package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestExpNEON measures expSubNEON (with m = 0) against math.Exp as
// TestExpf does expf, with the special values, and checks siluMulNEON
// against the scalar formula and maxNEON's handling of NaNs.
func TestExpNEON(t *testing.T) {
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
	sum := expSubNEON(got, 0)
	var worst, want64 float64
	var at float32
	for i, x := range xs {
		want64 += float64(got[i])
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
		t.Errorf("expSubNEON error %.2f ulp at %v, want ≤ 2", worst, at)
	}
	t.Logf("expSubNEON worst error %.2f ulp at %v", worst, at)
	// The returned sum is of the stored values, in float64 (in another
	// order than want64's: the terms are up to 3e38 and the sum ~1e41, so
	// the orders differ by far less than a part in 1e12).
	if math.Abs(sum-want64) > 1e-12*want64 {
		t.Errorf("expSubNEON returned %v, the values sum to %v", sum, want64)
	}
	nan := float32(math.NaN())
	special := []float32{0, float32(math.Inf(-1)), -200, 89, float32(math.Inf(1)), -100, nan, -104.5}
	s := append([]float32(nil), special...)
	expSubNEON(s, 0)
	for i, x := range special {
		want := expf(x)
		if math.Float32bits(s[i]) != math.Float32bits(want) && !(want != want && s[i] != s[i]) &&
			math.Abs(float64(s[i])-float64(want)) > 0x1p-149 {
			t.Errorf("expSubNEON(%v) = %v, want %v", x, s[i], want)
		}
	}
	g := make([]float32, 1024)
	up := make([]float32, 1024)
	for i := range g {
		g[i] = float32(r.NormFloat64() * 8)
		up[i] = float32(r.NormFloat64())
	}
	g0 := append([]float32(nil), g...)
	siluMulNEON(g, up)
	for i, v := range g0 {
		want := float64(v) / (1 + math.Exp(-float64(v))) * float64(up[i])
		if d := math.Abs(float64(g[i]) - want); d > 8*0x1p-24*math.Abs(want) {
			t.Fatalf("siluMulNEON(%v, %v) = %v, want %v", v, up[i], g[i], want)
		}
	}
	// Out of exp's range: -g above 88.7 gives exp = +Inf and a (signed)
	// zero, as the scalar loop gives.
	sg := []float32{-100, -89, 100, 89, 0, -20, 20, nan}
	sup := []float32{1, 1, 1, 1, 1, -2, 0.5, 1}
	gs := append([]float32(nil), sg...)
	siluMulNEON(gs, sup)
	for i, v := range sg {
		want := v / (1 + expf(-v)) * sup[i]
		if d := math.Abs(float64(gs[i]) - float64(want)); !(d <= 8*0x1p-24*math.Abs(float64(want))+0x1p-149) && !(want != want && gs[i] != gs[i]) {
			t.Errorf("siluMulNEON(%v, %v) = %v, want %v", v, sup[i], gs[i], want)
		}
	}
	m := []float32{nan, -3, nan, -7, nan, nan, nan, nan, -5, nan, -1.5, nan, nan, nan, -9, nan}
	if got := maxNEON(m); got != -1.5 {
		t.Errorf("maxNEON(%v) = %v, want -1.5", m, got)
	}
	if got := maxNEON(m[4:8]); !math.IsInf(float64(got), -1) {
		t.Errorf("maxNEON of no whole 8 = %v, want -Inf", got)
	}
	if got := maxNEON([]float32{nan, nan, nan, nan, nan, nan, nan, nan}); !math.IsInf(float64(got), -1) {
		t.Errorf("maxNEON(all NaN) = %v, want -Inf", got)
	}
}
