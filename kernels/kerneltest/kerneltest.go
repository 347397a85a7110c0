// Package kerneltest is a conformance suite for implementations of the
// kernels package's API, in the manner of gonum's testlapack: it does not
// import any implementation; an implementation's test calls [Test] with its
// functions, and the suite checks each against a float64 reference loop (for
// weights, against the quant package's scalar dequantizers) on random
// inputs of many sizes, odd ones included.
//
// Outputs are written into slices padded on both sides with guard values;
// a kernel that writes outside its slice fails. Inputs are checked to be
// left unchanged.
//
// Error bounds are stated where they are used, in units of
// u = 2^-24, the unit roundoff of float32 (half its machine epsilon).
package kerneltest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/spigot-llm/spigot/quant"
)

// Impl is an implementation under test: the kernels package's functions, or
// another set with the same semantics. Nil fields are skipped.
type Impl struct {
	Dot           func(a, b []float32) float32
	Axpy          func(alpha float32, x, y []float32)
	Add           func(dst, src []float32)
	Scale         func(x []float32, s float32)
	RMSNorm       func(dst, x, w []float32, eps float32)
	Softmax       func(x []float32)
	SiLUMul       func(gate, up []float32)
	RoPE          func(x []float32, nHeads, headDim, pos int, cos, sin []float32, neox bool)
	DotRow        func(t quant.Type, row []byte, x []float32) float32
	DequantizeRow func(t quant.Type, dst []float32, row []byte)
	// MatMul is kernels.MatMul on a pool of the given number of threads,
	// with the matrix given by its fields.
	MatMul func(threads int, out []float32, t quant.Type, data []byte, rows, cols int, x []float32, batch int)

	// Types lists the weight types DotRow, DequantizeRow and MatMul are
	// tested with. Nil means F32, F16, BF16, Q8_0 and Q4_0.
	Types []quant.Type
	// IntTypes lists the weight types for which MatMul quantizes its
	// activations with quant.QuantizeActivations and multiplies them with
	// the weights' quants in integer products per block (see
	// [TestMatMul]). Only Q8_0, Q4_0, Q4_K, Q5_K and Q6_K may be listed.
	IntTypes []quant.Type
}

// DefaultTypes are the weight types tested when Impl.Types is nil.
var DefaultTypes = []quant.Type{quant.F32, quant.F16, quant.BF16, quant.Q8_0, quant.Q4_0}

// u is the unit roundoff of float32.
const u = 0x1p-24

// Test runs every check for which impl has a function, each as a subtest.
func Test(t *testing.T, impl Impl) {
	types := impl.Types
	if types == nil {
		types = DefaultTypes
	}
	run := func(name string, ok bool, f func(*testing.T)) {
		if ok {
			t.Run(name, f)
		}
	}
	run("Dot", impl.Dot != nil, func(t *testing.T) { TestDot(t, impl.Dot) })
	run("Axpy", impl.Axpy != nil, func(t *testing.T) { TestAxpy(t, impl.Axpy) })
	run("Add", impl.Add != nil, func(t *testing.T) { TestAdd(t, impl.Add) })
	run("Scale", impl.Scale != nil, func(t *testing.T) { TestScale(t, impl.Scale) })
	run("RMSNorm", impl.RMSNorm != nil, func(t *testing.T) { TestRMSNorm(t, impl.RMSNorm) })
	run("Softmax", impl.Softmax != nil, func(t *testing.T) { TestSoftmax(t, impl.Softmax) })
	run("SiLUMul", impl.SiLUMul != nil, func(t *testing.T) { TestSiLUMul(t, impl.SiLUMul) })
	run("RoPE", impl.RoPE != nil, func(t *testing.T) { TestRoPE(t, impl.RoPE) })
	run("DequantizeRow", impl.DequantizeRow != nil, func(t *testing.T) { TestDequantizeRow(t, impl.DequantizeRow, types) })
	run("DotRow", impl.DotRow != nil, func(t *testing.T) { TestDotRow(t, impl.DotRow, types) })
	run("MatMul", impl.MatMul != nil, func(t *testing.T) { TestMatMul(t, impl.MatMul, types, impl.IntTypes) })
}

// FloatSizes are the vector lengths used for float32 kernels: empty, tiny,
// around every unroll width up to 64, and model-sized with an odd tail.
var FloatSizes = []int{0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 288, 768, 2048 + 5}

// RowSizes returns the row lengths used for weights of type t: FloatSizes
// for the plain types, and 1, 2, 3, 9, 24 and 65 blocks for block types
// (32 to 2080 elements for the 32-element blocks).
func RowSizes(t quant.Type) []int {
	bs := t.BlockSize()
	if bs == 1 {
		return FloatSizes
	}
	var s []int
	for _, nb := range []int{1, 2, 3, 9, 24, 65} {
		if nb*bs <= 4096 || nb <= 3 {
			s = append(s, nb*bs)
		}
	}
	return s
}

func newRand(name string) *rand.Rand {
	var h uint64 = 14695981039346656037
	for i := range len(name) {
		h = (h ^ uint64(name[i])) * 1099511628211
	}
	return rand.New(rand.NewPCG(h, 0x5eed))
}

// randVec returns n values drawn from N(0, scale²).
func randVec(r *rand.Rand, n int, scale float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64() * scale)
	}
	return v
}

// guard is the number of guard elements on each side of an output slice,
// and guardBits the NaN payload they hold, which no kernel computes.
const (
	guard     = 16
	guardBits = 0x7fbadbad
)

// guarded returns a copy of v in the middle of a larger buffer whose other
// elements are guard values; out's capacity ends with v.
func guarded(v []float32) (buf, out []float32) {
	buf = make([]float32, len(v)+2*guard)
	for i := range buf {
		buf[i] = math.Float32frombits(guardBits)
	}
	copy(buf[guard:], v)
	return buf, buf[guard : guard+len(v) : guard+len(v)]
}

// checkGuards fails t if anything outside the middle n elements of buf
// changed.
func checkGuards(t *testing.T, what string, buf []float32, n int) {
	t.Helper()
	for i, v := range buf {
		if (i < guard || i >= guard+n) && math.Float32bits(v) != guardBits {
			t.Fatalf("%s: wrote outside its output: element %d of the guard band is %v", what, i-guard, v)
		}
	}
}

func checkUnchanged(t *testing.T, what string, got, want []float32) {
	t.Helper()
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s: modified its input at %d: %v, was %v", what, i, got[i], want[i])
		}
	}
}

// dotBound is the forward error bound for a float32 dot product of n terms
// whose exact absolute products sum to abs, whatever the order of summation
// and whether or not multiply-adds are fused: γ(n)·abs with
// γ(n) = n·u/(1-n·u) (Higham, Accuracy and Stability of Numerical
// Algorithms, §3.1). extra adds further roundings (such as per-block
// scaling).
func dotBound(n, extra int, abs float64) float64 {
	k := float64(n + extra)
	return k * u / (1 - k*u) * abs
}

// TestDot checks dot against a float64 reference within dotBound, and
// checks it adds every term by dotting with unit vectors, which must give
// the selected element exactly.
func TestDot(t *testing.T, dot func(a, b []float32) float32) {
	r := newRand("Dot")
	for _, n := range FloatSizes {
		a, b := randVec(r, n, 1), randVec(r, n, 1)
		a0, b0 := slices.Clone(a), slices.Clone(b)
		got := dot(a, b)
		var ref, abs float64
		for i := range a {
			p := float64(a[i]) * float64(b[i])
			ref += p
			abs += math.Abs(p)
		}
		if tol := dotBound(n, 0, abs); math.Abs(float64(got)-ref) > tol {
			t.Errorf("Dot(n=%d) = %v, want %v ± %g", n, got, ref, tol)
		}
		checkUnchanged(t, "Dot", a, a0)
		checkUnchanged(t, "Dot", b, b0)
		e := make([]float32, n)
		for k := 0; k < n; k += 1 + n/97 {
			e[k] = 1
			if got := dot(a, e); got != a[k] {
				t.Fatalf("Dot(a, e_%d), n=%d = %v, want a[%d] = %v", k, n, got, k, a[k])
			}
			if got := dot(e, b); got != b[k] {
				t.Fatalf("Dot(e_%d, b), n=%d = %v, want b[%d] = %v", k, n, got, k, b[k])
			}
			e[k] = 0
		}
	}
}

// TestAxpy checks y += alpha*x elementwise. Without fusion the result is
// fl(y + fl(alpha·x)), with it fl(y + alpha·x): either way within
// 2u(|y| + |alpha·x|) of the exact value (two roundings, each at most u
// relative to a quantity bounded by |y| + |alpha·x|, to first order).
func TestAxpy(t *testing.T, axpy func(alpha float32, x, y []float32)) {
	r := newRand("Axpy")
	for _, n := range FloatSizes {
		x, y := randVec(r, n, 1), randVec(r, n, 1)
		alpha := float32(r.NormFloat64())
		x0 := slices.Clone(x)
		buf, out := guarded(y)
		axpy(alpha, x, out)
		checkGuards(t, "Axpy", buf, n)
		checkUnchanged(t, "Axpy", x, x0)
		for i := range y {
			ax := float64(alpha) * float64(x[i])
			ref := float64(y[i]) + ax
			tol := 2 * u * (math.Abs(float64(y[i])) + math.Abs(ax)) * (1 + 4*u)
			if d := math.Abs(float64(out[i]) - ref); d > tol {
				t.Fatalf("Axpy(n=%d)[%d] = %v, want %v ± %g", n, i, out[i], ref, tol)
			}
		}
	}
}

// TestAdd checks dst += src, which IEEE addition makes exact: each element
// must equal the correctly rounded float32 sum.
func TestAdd(t *testing.T, add func(dst, src []float32)) {
	r := newRand("Add")
	for _, n := range FloatSizes {
		d, s := randVec(r, n, 1), randVec(r, n, 1)
		s0 := slices.Clone(s)
		buf, out := guarded(d)
		add(out, s)
		checkGuards(t, "Add", buf, n)
		checkUnchanged(t, "Add", s, s0)
		for i := range d {
			if want := d[i] + s[i]; out[i] != want {
				t.Fatalf("Add(n=%d)[%d] = %v, want %v", n, i, out[i], want)
			}
		}
	}
}

// TestScale checks x *= s, exact as a single IEEE multiplication.
func TestScale(t *testing.T, scale func(x []float32, s float32)) {
	r := newRand("Scale")
	for _, n := range FloatSizes {
		x := randVec(r, n, 1)
		s := float32(r.NormFloat64())
		buf, out := guarded(x)
		scale(out, s)
		checkGuards(t, "Scale", buf, n)
		for i := range x {
			if want := x[i] * s; out[i] != want {
				t.Fatalf("Scale(n=%d)[%d] = %v, want %v", n, i, out[i], want)
			}
		}
	}
}

// TestRMSNorm checks dst = x / sqrt(mean(x²) + eps) * w, both out of place
// and in place (dst = x). The bound, relative to |x·scale·w|, is (8 + n/32)u:
// about 7 roundings after the sum (squares, the mean, +eps, sqrt, the
// reciprocal, two products) plus the error of summing the squares; the
// kernels sum in float64, but the n/32 admits a SIMD implementation that
// sums in float32 with 32 partial sums (relative error ≤ (n/32 + 5)u for a
// sum of positive terms) while still catching any real bug.
func TestRMSNorm(t *testing.T, rmsnorm func(dst, x, w []float32, eps float32)) {
	r := newRand("RMSNorm")
	for _, n := range FloatSizes {
		if n == 0 {
			continue
		}
		for _, inPlace := range []bool{false, true} {
			x, w := randVec(r, n, 2), randVec(r, n, 1)
			const eps = 1e-5
			var ss float64
			for _, v := range x {
				ss += float64(v) * float64(v)
			}
			scale := 1 / math.Sqrt(ss/float64(n)+eps)
			x0, w0 := slices.Clone(x), slices.Clone(w)
			var buf, out []float32
			if inPlace {
				buf, out = guarded(x)
				rmsnorm(out, out, w, eps)
			} else {
				buf, out = guarded(make([]float32, n))
				rmsnorm(out, x, w, eps)
				checkUnchanged(t, "RMSNorm", x, x0)
			}
			checkGuards(t, "RMSNorm", buf, n)
			checkUnchanged(t, "RMSNorm", w, w0)
			for i := range x0 {
				ref := float64(x0[i]) * scale * float64(w[i])
				tol := (8 + float64(n)/32) * u * math.Abs(ref)
				if d := math.Abs(float64(out[i]) - ref); d > tol {
					t.Fatalf("RMSNorm(n=%d, in place %v)[%d] = %v, want %v ± %g", n, inPlace, i, out[i], ref, tol)
				}
			}
		}
	}
}

// TestSoftmax checks softmax on random logits (spread ±10), with masked
// (-Inf) entries, and the all-masked case (uniform). The bound on element i,
// relative, is (|x_i - m| + s + 8 + n/32)u with m the maximum and
// s = max_j |x_j - m|: the float32 subtraction x_i - m is off by up to
// u|x_i - m|, which exp turns into that relative error; every term of the
// sum carries up to (s + 2)u the same way; exp itself is within 2 ulp (4u);
// the reciprocal and the scaling add 2u; n/32 admits float32 summation as
// for RMSNorm.
func TestSoftmax(t *testing.T, softmax func(x []float32)) {
	r := newRand("Softmax")
	for _, n := range FloatSizes {
		if n == 0 {
			continue
		}
		for _, masked := range []bool{false, true} {
			x := randVec(r, n, 4)
			if masked {
				for i := range x {
					if i%3 == 1 {
						x[i] = float32(math.Inf(-1))
					}
				}
			}
			m := math.Inf(-1)
			for _, v := range x {
				m = max(m, float64(v))
			}
			var sum, spread float64
			for _, v := range x {
				sum += math.Exp(float64(v) - m)
				if !math.IsInf(float64(v), -1) {
					spread = max(spread, m-float64(v))
				}
			}
			buf, out := guarded(x)
			softmax(out)
			checkGuards(t, "Softmax", buf, n)
			for i, v := range x {
				ref := math.Exp(float64(v)-m) / sum
				tol := (m - float64(v) + spread + 8 + float64(n)/32) * u * ref
				if math.IsInf(float64(v), -1) {
					tol = 0
				}
				if d := math.Abs(float64(out[i]) - ref); !(d <= tol) {
					t.Fatalf("Softmax(n=%d, masked %v)[%d] of %v = %v, want %v ± %g", n, masked, i, v, out[i], ref, tol)
				}
			}
		}
	}
	x := []float32{float32(math.Inf(-1)), float32(math.Inf(-1)), float32(math.Inf(-1)), float32(math.Inf(-1))}
	softmax(x)
	for i, v := range x {
		if v != 0.25 {
			t.Errorf("Softmax(all -Inf)[%d] = %v, want 0.25", i, v)
		}
	}
	// Large inputs must not overflow.
	x = []float32{1000, 999, -1000}
	softmax(x)
	e := math.Exp(-1)
	if math.Abs(float64(x[0])-1/(1+e)) > 1e-6 || math.Abs(float64(x[1])-e/(1+e)) > 1e-6 || x[2] != 0 {
		t.Errorf("Softmax(1000, 999, -1000) = %v", x)
	}
}

// TestSiLUMul checks gate = gate·sigmoid(gate)·up. The bound, relative, is
// 10u: exp of the exactly negated input within 2 ulp (4u), then 1 + e, the
// division and the product by up, one rounding each (3u), with margin.
// Inputs stay within ±20 so no result is subnormal.
func TestSiLUMul(t *testing.T, siluMul func(gate, up []float32)) {
	r := newRand("SiLUMul")
	for _, n := range FloatSizes {
		g, up := randVec(r, n, 4), randVec(r, n, 1)
		for i := range g {
			g[i] = max(-20, min(20, g[i]))
		}
		up0 := slices.Clone(up)
		buf, out := guarded(g)
		siluMul(out, up)
		checkGuards(t, "SiLUMul", buf, n)
		checkUnchanged(t, "SiLUMul", up, up0)
		for i, v := range g {
			ref := float64(v) / (1 + math.Exp(-float64(v))) * float64(up[i])
			tol := 10 * u * math.Abs(ref)
			if d := math.Abs(float64(out[i]) - ref); d > tol {
				t.Fatalf("SiLUMul(n=%d)[%d] of %v·%v = %v, want %v ± %g", n, i, v, up[i], out[i], ref, tol)
			}
		}
	}
	g, up := []float32{-100, 100, 0}, []float32{1, 1, 1}
	siluMul(g, up)
	if g[0] != 0 && math.Abs(float64(g[0])) > 1e-30 || g[1] != 100 || g[2] != 0 {
		t.Errorf("SiLUMul(-100, 100, 0) = %v, want ≈0, 100, 0", g)
	}
}

// TestRoPE checks both pair orderings, full and partial rotation, several
// heads. Each output is a·c - b·s or a·s + b·c: two products and a sum, so
// within 3u(|a·c| + |b·s|) (to first order; fusion only removes roundings).
// Dimensions past the rotated ones must be untouched.
func TestRoPE(t *testing.T, rope func(x []float32, nHeads, headDim, pos int, cos, sin []float32, neox bool)) {
	r := newRand("RoPE")
	for _, neox := range []bool{false, true} {
		for _, heads := range []int{1, 3, 4} {
			for _, headDim := range []int{2, 8, 64, 128} {
				for _, pairs := range []int{headDim / 2, headDim / 4} {
					if pairs == 0 {
						continue
					}
					pos := r.IntN(4096)
					cos, sin := make([]float32, pairs), make([]float32, pairs)
					for i := range cos {
						theta := float64(pos) * math.Pow(10000, -2*float64(i)/float64(2*pairs))
						cos[i], sin[i] = float32(math.Cos(theta)), float32(math.Sin(theta))
					}
					x := randVec(r, heads*headDim, 1)
					buf, out := guarded(x)
					rope(out, heads, headDim, pos, cos, sin, neox)
					checkGuards(t, "RoPE", buf, len(x))
					what := fmt.Sprintf("RoPE(heads=%d, headDim=%d, pairs=%d, neox=%v)", heads, headDim, pairs, neox)
					want := slices.Clone(x)
					tol := make([]float64, len(x))
					for h := range heads {
						for i := range pairs {
							ia, ib := h*headDim+2*i, h*headDim+2*i+1
							if neox {
								ia, ib = h*headDim+i, h*headDim+i+pairs
							}
							a, b := float64(x[ia]), float64(x[ib])
							c, s := float64(cos[i]), float64(sin[i])
							want[ia], want[ib] = float32(a*c-b*s), float32(a*s+b*c)
							tol[ia] = 3 * u * (math.Abs(a*c) + math.Abs(b*s))
							tol[ib] = 3 * u * (math.Abs(a*s) + math.Abs(b*c))
						}
					}
					for i := range want {
						if d := math.Abs(float64(out[i]) - float64(want[i])); d > tol[i]+u*math.Abs(float64(want[i])) {
							t.Fatalf("%s[%d] = %v, want %v", what, i, out[i], want[i])
						}
					}
				}
			}
		}
	}
}

// scaleOffsets gives, for block types, the byte offsets within a block of
// the half-precision scales, which randRow sets to modest values so random
// blocks decode to finite numbers of a sensible size.
var scaleOffsets = map[quant.Type][]int{
	quant.Q8_0: {0}, quant.Q4_0: {0}, quant.Q4_1: {0, 2}, quant.Q5_0: {0}, quant.Q5_1: {0, 2},
	quant.Q4_K: {0, 2}, quant.Q5_K: {0, 2}, quant.Q6_K: {208},
}

// RandRow returns one row of n elements of type t and its dequantized
// values. Types quant can quantize are quantized from N(0, 1) values;
// other block types get random bytes with modest scales.
func RandRow(r *rand.Rand, t quant.Type, n int) ([]byte, []float32) {
	rs, err := t.RowSize(n)
	if err != nil {
		panic(err)
	}
	row := make([]byte, rs)
	if quant.CanQuantize(t) {
		if err := quant.Quantize(t, row, randVec(r, n, 1)); err != nil {
			panic(err)
		}
	} else {
		for i := range row {
			row[i] = byte(r.Uint32())
		}
		ts := t.TypeSize()
		for b := 0; b < len(row); b += ts {
			for _, off := range scaleOffsets[t] {
				h := quant.F32ToF16(float32(r.NormFloat64() * 0.05))
				row[b+off], row[b+off+1] = byte(h), byte(h>>8)
			}
		}
	}
	w := make([]float32, n)
	if err := quant.Dequantize(t, w, row); err != nil {
		panic(err)
	}
	return row, w
}

// TestDequantizeRow checks that dequantize gives exactly quant.Dequantize's
// values, within its slice.
func TestDequantizeRow(t *testing.T, dequantize func(t quant.Type, dst []float32, row []byte), types []quant.Type) {
	for _, typ := range types {
		r := newRand("DequantizeRow" + typ.String())
		for _, n := range RowSizes(typ) {
			row, want := RandRow(r, typ, n)
			row0 := slices.Clone(row)
			buf, out := guarded(make([]float32, n))
			dequantize(typ, out, row)
			checkGuards(t, "DequantizeRow", buf, n)
			if !slices.Equal(row, row0) {
				t.Fatalf("DequantizeRow(%v, n=%d) modified the row", typ, n)
			}
			for i := range want {
				if math.Float32bits(out[i]) != math.Float32bits(want[i]) {
					t.Fatalf("DequantizeRow(%v, n=%d)[%d] = %v, want %v", typ, n, i, out[i], want[i])
				}
			}
		}
	}
}

// TestDotRow checks one weight row · x against the float64 dot of the
// dequantized row, within dotBound with 3 extra roundings (the block scale
// applied to a partial sum rather than to each weight; the reference
// weights are themselves rounded products). Unit vectors x = e_k must give
// the dequantized weight w_k exactly, which catches any element a kernel
// skips or misplaces.
func TestDotRow(t *testing.T, dotRow func(t quant.Type, row []byte, x []float32) float32, types []quant.Type) {
	for _, typ := range types {
		r := newRand("DotRow" + typ.String())
		for _, n := range RowSizes(typ) {
			row, w := RandRow(r, typ, n)
			x := randVec(r, n, 1)
			row0, x0 := slices.Clone(row), slices.Clone(x)
			got := dotRow(typ, row, x)
			ref, abs := refDot(w, x)
			if tol := dotBound(n, 3, abs); math.Abs(float64(got)-ref) > tol {
				t.Errorf("DotRow(%v, n=%d) = %v, want %v ± %g", typ, n, got, ref, tol)
			}
			if !slices.Equal(row, row0) {
				t.Fatalf("DotRow(%v, n=%d) modified the row", typ, n)
			}
			checkUnchanged(t, "DotRow", x, x0)
			e := make([]float32, n)
			for k := 0; k < n; k += 1 + n/131 {
				e[k] = 1
				if got := dotRow(typ, row, e); got != w[k] {
					t.Fatalf("DotRow(%v, n=%d, e_%d) = %v, want w[%d] = %v", typ, n, k, got, k, w[k])
				}
				e[k] = 0
			}
		}
	}
}

func refDot(w, x []float32) (ref, abs float64) {
	for i := range w {
		p := float64(w[i]) * float64(x[i])
		ref += p
		abs += math.Abs(p)
	}
	return ref, abs
}

// TestMatMul checks batched matrix products for several shapes, batch sizes
// 1, 3, 5 and 8, and 1, 2 and 3 threads: each output within its bound of
// the float64 reference, nothing written outside out, the inputs
// unchanged, and the result bit-for-bit the same whatever the thread count.
//
// For types in intTypes the bound is q + dotBound(cols, 3, abs+q), with q
// = [IntBound] and abs = Σ|w·x|: the quantized x̂ = d·q changes the exact
// product by at most q, and the kernel computes w·x̂ with float32 roundings
// (one in each block's scale product dw·dx, then the sum of the nb
// scaled integer dot products) that dotBound covers, on terms whose
// magnitudes sum to at most abs+q. Each output must also be within
// dotBound(nb, 2) of the same product computed in float64 from the x
// quantized by quant.QuantizeActivations — a bound tight enough to catch a
// misplaced block, which the first is not.
//
// The K-quant types (Q4_K, Q5_K, Q6_K) are multiplied per 32-element
// block in two float terms (Q4_K and Q5_K: the scaled quants and the
// scaled min; Q6_K: the two 16-element halves with their own scales), so
// the tight bound is dotBound(2·nb, 2) of those terms' magnitudes; and
// since the terms can be larger than the products w·x they add up to
// (a·q against the min m), the loose bound is the sum of the tight one,
// q, and the rounding of the dequantized weights, 3u·Σ(|a·q|+|m|)·|x̂|
// (the triangle inequality through the exact product with x̂).
func TestMatMul(t *testing.T, matmul func(threads int, out []float32, t quant.Type, data []byte, rows, cols int, x []float32, batch int), types, intTypes []quant.Type) {
	for _, typ := range types {
		isInt := slices.Contains(intTypes, typ)
		isK := typ == quant.Q4_K || typ == quant.Q5_K || typ == quant.Q6_K
		if isInt && typ != quant.Q8_0 && typ != quant.Q4_0 && !isK {
			t.Fatalf("IntTypes lists %v; only Q8_0, Q4_0, Q4_K, Q5_K and Q6_K are known", typ)
		}
		r := newRand("MatMul" + typ.String())
		sizes := RowSizes(typ)
		colsList := []int{sizes[0], sizes[len(sizes)/2], sizes[len(sizes)-1]}
		for _, cols := range colsList {
			for _, rows := range []int{1, 2, 7, 64} {
				data := make([]byte, 0)
				w := make([]float32, 0, rows*cols)
				for range rows {
					row, wr := RandRow(r, typ, cols)
					data = append(data, row...)
					w = append(w, wr...)
				}
				data0 := slices.Clone(data)
				rs := len(data) / rows
				var irows []intRow
				if isInt {
					for rr := range rows {
						irows = append(irows, decodeIntRow(typ, data[rr*rs:(rr+1)*rs], cols))
					}
				}
				for _, batch := range []int{1, 3, 5, 8} {
					x := randVec(r, batch*cols, 1)
					x0 := slices.Clone(x)
					var first []float32
					for _, threads := range []int{1, 2, 3} {
						what := fmt.Sprintf("MatMul(%v, %dx%d, batch=%d, threads=%d)", typ, rows, cols, batch, threads)
						buf, out := guarded(make([]float32, batch*rows))
						matmul(threads, out, typ, data, rows, cols, x, batch)
						checkGuards(t, what, buf, batch*rows)
						checkUnchanged(t, what, x, x0)
						if !slices.Equal(data, data0) {
							t.Fatalf("%s modified the matrix", what)
						}
						if first == nil {
							// Check against the reference once; other
							// thread counts must match this bit for bit.
							for b := range batch {
								xb := x[b*cols : (b+1)*cols]
								xq := make([]int8, cols)
								dx := make([]float32, cols/quant.ActBlock)
								quant.QuantizeActivations(xq, dx, xb)
								for rr := range rows {
									wr := w[rr*cols : (rr+1)*cols]
									got := out[b*rows+rr]
									ref, abs := refDot(wr, xb)
									var qerr, qtol, eabs float64
									if isInt {
										qerr = IntBound(wr, xb)
										var qref, qabs float64
										qref, qabs, eabs = refIntDot(typ, irows[rr], xq, dx)
										terms := cols / quant.ActBlock
										if isK {
											terms *= 2
										}
										qtol = dotBound(terms, 2, qabs)
										if math.Abs(float64(got)-qref) > qtol {
											t.Fatalf("%s: out[%d*%d+%d] = %v, want %v ± %g (from the quantized x)", what, b, rows, rr, got, qref, qtol)
										}
									}
									tol := qerr + dotBound(cols, 3, abs+qerr)
									if isInt && isK {
										tol = qerr + qtol + 3*u*eabs
									}
									if math.Abs(float64(got)-ref) > tol {
										t.Fatalf("%s: out[%d*%d+%d] = %v, want %v ± %g", what, b, rows, rr, got, ref, tol)
									}
								}
							}
							first = slices.Clone(out)
						} else {
							for i := range first {
								if math.Float32bits(out[i]) != math.Float32bits(first[i]) {
									t.Fatalf("%s: out[%d] = %v, but %v with 1 thread", what, i, out[i], first[i])
								}
							}
						}
					}
				}
			}
		}
	}
}

// IntBound bounds the change in w·x from quantizing x with
// quant.QuantizeActivations: Σ over blocks of the block's largest error,
// amax/127·(1/2 + 382u) (as quant documents), times Σ|w| over the block.
// It is a worst case, reached only if every error has its largest size and
// the sign of its weight; for random data the change is typically
// √(block size·3)≈10 times smaller per block, and the blocks' changes
// partly cancel.
func IntBound(w, x []float32) float64 {
	var bound float64
	for b := 0; b+quant.ActBlock <= len(x); b += quant.ActBlock {
		var amax, wabs float64
		for j := b; j < b+quant.ActBlock; j++ {
			amax = max(amax, math.Abs(float64(x[j])))
			wabs += math.Abs(float64(w[j]))
		}
		bound += amax / 127 * (0.5 + 382*u) * wabs
	}
	return bound
}

// intRow is a weight row of one of the integer path's types, decoded for
// refIntDot: per element its quant q and the float32 scale a and min m of
// its group, such that the dequantized element is float32(a·q) - m (Q8_0,
// Q4_0: signed quants, m = 0; Q4_K, Q5_K: unsigned quants; Q6_K: the
// quants less 32, m = 0).
type intRow struct {
	q    []int64
	a, m []float32
}

// decodeIntRow decodes the n elements of row.
func decodeIntRow(t quant.Type, row []byte, n int) intRow {
	ir := intRow{q: make([]int64, n), a: make([]float32, n), m: make([]float32, n)}
	bs := t.TypeSize()
	for i := range n {
		blk := row[i/t.BlockSize()*bs : (i/t.BlockSize()+1)*bs]
		switch t {
		case quant.Q8_0, quant.Q4_0:
			ir.a[i] = quant.F16ToF32(uint16(blk[0]) | uint16(blk[1])<<8)
			j := i % 32
			switch {
			case t == quant.Q8_0:
				ir.q[i] = int64(int8(blk[2+j]))
			case j < 16:
				ir.q[i] = int64(blk[2+j]&15) - 8
			default:
				ir.q[i] = int64(blk[2+j-16]>>4) - 8
			}
		default:
			ir.q[i], ir.a[i], ir.m[i] = kElem(t, blk, i%quant.QKK)
			if t == quant.Q6_K {
				ir.q[i] -= 32
			}
		}
	}
	return ir
}

// refIntDot is the product of a row with x quantized by
// quant.QuantizeActivations (xq, dx), in float64 from the exact integer
// dot products, and the sum of the terms' magnitudes. For Q8_0 and Q4_0
// it is Σ_b float32(dw_b·dx_b)·idot_b (the float32 product of the scales
// is what an implementation may round once; its summation order is its
// own). For the K-quants, per 32-element block b, with the sub-block's
// scale a and min m (Q4_K, Q5_K) or the two halves' scales a_h (Q6_K), the
// terms are float32(a·dx_b)·Σ q·xq and -m·(dx_b·Σ xq), or
// float32(a_h·dx_b)·Σ_h (q-32)·xq; for them eabs is the sum of
// (|a·q|+|m|)·|dx·xq| over the elements.
func refIntDot(t quant.Type, w intRow, xq []int8, dx []float32) (ref, abs, eabs float64) {
	for b := range dx {
		var idot, sum [2]int64
		for l := range quant.ActBlock {
			i := b*quant.ActBlock + l
			y := int64(xq[i])
			idot[l/16] += w.q[i] * y
			sum[l/16] += y
			eabs += (math.Abs(float64(w.a[i])*float64(w.q[i])) + math.Abs(float64(w.m[i]))) * math.Abs(float64(dx[b])*float64(y))
		}
		a0, a1, m := w.a[b*quant.ActBlock], w.a[b*quant.ActBlock+16], w.m[b*quant.ActBlock]
		if t == quant.Q6_K {
			for h, a := range []float32{a0, a1} {
				term := float64(a*dx[b]) * float64(idot[h])
				ref += term
				abs += math.Abs(term)
			}
			continue
		}
		term := float64(a0*dx[b]) * float64(idot[0]+idot[1])
		mt := float64(m) * float64(dx[b]) * float64(sum[0]+sum[1])
		ref += term - mt
		abs += math.Abs(term) + math.Abs(mt)
	}
	if t == quant.Q8_0 || t == quant.Q4_0 {
		eabs = 0
	}
	return ref, abs, eabs
}

// kElem decodes element e (0-255) of a K-quant super-block as the
// dequantizers read it (element = float32(a·q) - m, or for Q6_K
// a·(q-32)): its unsigned quant q and the float32 scale a and min m of its
// sub-block (m = 0 for Q6_K). It is written from ggml's layouts (see
// quant/block.go), independently of the kernels.
func kElem(t quant.Type, blk []byte, e int) (q int64, a, m float32) {
	f16 := func(off int) float32 { return quant.F16ToF32(uint16(blk[off]) | uint16(blk[off+1])<<8) }
	if t == quant.Q6_K {
		// 128-element halves; in each, 32-element quarters r/32 take the
		// low (quarters 0, 1) or high (2, 3) nibbles of ql bytes l and
		// l+32, and bits 2·quarter of qh byte l.
		half, r := e/128, e%128
		l := r % 32
		lb := blk[64*half+l+32*(r/32%2)]
		if r/64 == 1 {
			lb >>= 4
		}
		hb := blk[128+32*half+l] >> (2 * (r / 32)) & 3
		return int64(lb&15 | hb<<4), f16(208) * float32(int8(blk[192+e/16])), 0
	}
	j, l := e/32, e%32
	sc := blk[4:16]
	var s, mn byte
	if j < 4 {
		s, mn = sc[j]&63, sc[j+4]&63
	} else {
		s = sc[j+4]&15 | sc[j-4]>>6<<4
		mn = sc[j+4]>>4 | sc[j]>>6<<4
	}
	qs := blk[16:]
	if t == quant.Q5_K {
		qs = blk[48:]
	}
	v := qs[32*(j/2)+l] >> (4 * (j % 2)) & 15
	if t == quant.Q5_K {
		v |= (blk[16+l] >> j & 1) << 4
	}
	return int64(v), f16(0) * float32(s), f16(2) * float32(mn)
}
