package kernels

import (
	"fmt"
	"math"
)

// None of the functions in this file allocates.

func checkLen(name string, a, b int) {
	if a != b {
		panic(fmt.Sprintf("kernels: %s: lengths %d and %d differ", name, a, b))
	}
}

// Dot returns the dot product of a and b, summed in float32 with several
// accumulators (the order is unspecified):
//
//	for i := range a { sum += a[i] * b[i] }
//
// It panics if the lengths differ.
func Dot(a, b []float32) float32 {
	checkLen("Dot", len(a), len(b))
	return active.dot(a, b)
}

// Axpy adds alpha*x to y:
//
//	for i, v := range x { y[i] += alpha * v }
//
// It panics if the lengths differ. (A fused multiply-add may be used.)
func Axpy(alpha float32, x, y []float32) {
	checkLen("Axpy", len(x), len(y))
	active.axpy(alpha, x, y)
}

// Add adds src to dst:
//
//	for i, v := range src { dst[i] += v }
//
// It panics if the lengths differ.
func Add(dst, src []float32) {
	checkLen("Add", len(dst), len(src))
	src = src[:len(dst)]
	for len(dst) >= 4 {
		d := (*[4]float32)(dst)
		s := (*[4]float32)(src)
		d[0] += s[0]
		d[1] += s[1]
		d[2] += s[2]
		d[3] += s[3]
		dst, src = dst[4:], src[4:]
	}
	for i, v := range src {
		dst[i] += v
	}
}

// Mul multiplies dst by src element-wise:
//
//	for i, v := range src { dst[i] *= v }
//
// It panics if the lengths differ.
func Mul(dst, src []float32) {
	checkLen("Mul", len(dst), len(src))
	src = src[:len(dst)]
	for i, v := range src {
		dst[i] *= v
	}
}

// Scale multiplies x by s in place:
//
//	for i := range x { x[i] *= s }
func Scale(x []float32, s float32) {
	if active.scale != nil {
		n := len(x) &^ 7
		active.scale(x[:n], s)
		x = x[n:]
	}
	for len(x) >= 4 {
		v := (*[4]float32)(x)
		v[0] *= s
		v[1] *= s
		v[2] *= s
		v[3] *= s
		x = x[4:]
	}
	for i := range x {
		x[i] *= s
	}
}

// RMSNorm normalizes x by its root mean square and multiplies by the weights,
// as ggml's rms_norm followed by mul does:
//
//	sum := float64(0); for _, v := range x { sum += float64(v * v) }
//	scale := 1 / sqrt(float32(sum/len(x)) + eps)
//	for i := range x { dst[i] = (x[i] * scale) * w[i] }
//
// The sum of squares is taken in float64, like ggml. dst may be x itself;
// otherwise it must not overlap x. It panics if the lengths differ.
func RMSNorm(dst, x, w []float32, eps float32) {
	checkLen("RMSNorm", len(dst), len(x))
	checkLen("RMSNorm", len(w), len(x))
	if len(x) == 0 {
		return
	}
	var s0, s1, s2, s3 float64
	v := x
	for len(v) >= 4 {
		a := (*[4]float32)(v)
		s0 += float64(a[0] * a[0])
		s1 += float64(a[1] * a[1])
		s2 += float64(a[2] * a[2])
		s3 += float64(a[3] * a[3])
		v = v[4:]
	}
	for _, e := range v {
		s0 += float64(e * e)
	}
	mean := float32(((s0 + s1) + (s2 + s3)) / float64(len(x)))
	scale := 1 / float32(math.Sqrt(float64(mean+eps)))
	dst = dst[:len(x)]
	w = w[:len(x)]
	for i, e := range x {
		dst[i] = float32(e*scale) * w[i]
	}
}

// Softmax replaces x with its softmax, subtracting the maximum first so no
// exponential overflows, and summing in float64 as ggml does:
//
//	m := max(x...); for i := range x { x[i] = exp(x[i] - m) }
//	sum := Σ float64(x[i]); for i := range x { x[i] *= float32(1/sum) }
//
// -Inf entries (masked positions) get 0. If every entry is -Inf the result
// is uniform. exp is computed in float32 to within 2 ulp (see expf; the
// assembly sets compute it 8 lanes at a time, rounding differently).
func Softmax(x []float32) {
	if len(x) == 0 {
		return
	}
	m := float32(math.Inf(-1))
	n := 0
	if active.max != nil {
		n = len(x) &^ 7
		m = active.max(x[:n])
	}
	for _, v := range x[n:] {
		if v > m {
			m = v
		}
	}
	if math.IsInf(float64(m), -1) {
		u := 1 / float32(len(x))
		for i := range x {
			x[i] = u
		}
		return
	}
	var sum float64
	n = 0
	if active.expSub != nil {
		n = len(x) &^ 7
		sum = active.expSub(x[:n], m)
	}
	for i := n; i < len(x); i++ {
		e := expf(x[i] - m)
		x[i] = e
		sum += float64(e)
	}
	Scale(x, float32(1/sum))
}

// SiLUMul applies SiLU to gate and multiplies by up, the SwiGLU feed-forward
// activation:
//
//	for i, g := range gate { gate[i] = g / (1 + exp(-g)) * up[i] }
//
// (ggml_vec_swiglu_f32). It panics if the lengths differ.
func SiLUMul(gate, up []float32) {
	checkLen("SiLUMul", len(gate), len(up))
	up = up[:len(gate)]
	n := 0
	if active.siluMul != nil {
		n = len(gate) &^ 7
		active.siluMul(gate[:n], up[:n])
	}
	for i := n; i < len(gate); i++ {
		g := gate[i]
		gate[i] = g / (1 + expf(-g)) * up[i]
	}
}

// RoPE applies rotary position embeddings in place to nHeads heads of x, each
// headDim long, with the cos/sin tables the caller computed for position pos
// (pos is not used otherwise). With n = len(cos) rotation pairs (normally
// headDim/2; fewer rotates only the first 2n dimensions, ggml's n_dims):
//
//	for h := range nHeads {
//		v := x[h*headDim : (h+1)*headDim]
//		for i := range n {
//			a, b := i, i+n     // neox (GGML_ROPE_TYPE_NEOX, Qwen2)
//			a, b := 2*i, 2*i+1 // !neox (GGML_ROPE_TYPE_NORM, Llama)
//			v[a], v[b] = v[a]*cos[i]-v[b]*sin[i], v[a]*sin[i]+v[b]*cos[i]
//		}
//	}
//
// It panics if len(x) != nHeads*headDim, len(sin) != len(cos), 2*len(cos) >
// headDim, or pos < 0.
func RoPE(x []float32, nHeads, headDim, pos int, cos, sin []float32, neox bool) {
	n := len(cos)
	if len(sin) != n || 2*n > headDim || nHeads < 0 || len(x) != nHeads*headDim || pos < 0 {
		panic(fmt.Sprintf("kernels: RoPE: %d heads of %d with %d cos, %d sin, pos %d on %d elements",
			nHeads, headDim, len(cos), len(sin), pos, len(x)))
	}
	sin = sin[:n]
	for h := range nHeads {
		v := x[h*headDim : (h+1)*headDim]
		if neox {
			lo, hi := v[:n], v[n:2*n]
			for i, c := range cos {
				a, b := lo[i], hi[i]
				s := sin[i]
				lo[i] = a*c - b*s
				hi[i] = a*s + b*c
			}
			continue
		}
		v = v[:2*n]
		for i, c := range cos {
			p := (*[2]float32)(v[2*i:])
			a, b := p[0], p[1]
			s := sin[i]
			p[0] = a*c - b*s
			p[1] = a*s + b*c
		}
	}
}

// ArgMax returns the index of the largest element of x, the first if there
// are ties, ignoring NaNs; -1 if x is empty or all NaN. Greedy sampling is
// ArgMax of the logits.
func ArgMax(x []float32) int {
	best := -1
	var m float32
	for i, v := range x {
		if v > m || best < 0 && v == v {
			best, m = i, v
		}
	}
	return best
}

// Attention computes one head's attention output for one query over n
// positions whose keys and values lie at a fixed stride (a contiguous KV
// cache: position i's key is k[i*stride:][:len(q)], its value
// v[i*stride:][:len(out)]):
//
//	for i := range n { scores[i] = scale * Dot(q, key(i)) }
//	Softmax(scores[:n])
//	out = 0; for i := range n { Axpy(scores[i], value(i), out) }
//
// scores is caller-provided scratch of at least n elements; on return its
// first n hold the attention weights. It panics if a slice is too short.
func Attention(out, q, k, v []float32, n, stride int, scale float32, scores []float32) {
	if n <= 0 {
		clear(out)
		return
	}
	last := (n - 1) * stride
	if len(scores) < n || len(k) < last+len(q) || len(v) < last+len(out) || stride < 0 {
		panic(fmt.Sprintf("kernels: Attention over %d positions at stride %d: k has %d, v %d, scores %d",
			n, stride, len(k), len(v), len(scores)))
	}
	scores = scores[:n]
	dot := active.dot
	for i := range scores {
		scores[i] = scale * dot(q, k[i*stride:i*stride+len(q)])
	}
	Softmax(scores)
	clear(out)
	axpy := active.axpy
	for i, s := range scores {
		axpy(s, v[i*stride:i*stride+len(out)], out)
	}
}

// expf returns e**x in float32 to within 2 ulp (measured in the tests), with
// the Cephes expf method: x = n·ln2 + r with |r| ≤ ln2/2 by a two-constant
// Cody–Waite reduction, a degree-7 polynomial for e**r, and 2**n applied
// through the exponent bits (in two steps near the ends of the range, so
// subnormal results and e**88.7 are right). Like ggml's vectorized expf,
// it is accurate enough that the softmax it feeds is limited by the float32
// rounding of its inputs.
func expf(x float32) float32 {
	const (
		maxArg = 88.72283905206835 // ln(MaxFloat32)
		minArg = -103.97207708     // ln(smallest subnormal / 2)
		log2e  = 1.44269504088896341
		c1     = 0.693359375 // ln2 in two parts: c1 has few bits, so n*c1 is exact
		c2     = -2.12194440e-4
	)
	switch {
	case x > maxArg:
		return float32(math.Inf(1))
	case x < minArg:
		return 0
	case x != x:
		return x
	}
	// n = floor(x·log2e + 1/2), by truncating a value made positive (x·log2e
	// ≥ -150 here); rounding in the addition can only move n by one where
	// r is at the edge of its range, which the polynomial still covers.
	n := int32(x*log2e+256.5) - 256
	fn := float32(n)
	r := x - fn*c1
	r -= fn * c2
	y := float32(1.9875691500e-4)
	y = y*r + 1.3981999507e-3
	y = y*r + 8.3334519073e-3
	y = y*r + 4.1665795894e-2
	y = y*r + 1.6666665459e-1
	y = y*r + 5.0000001201e-1
	y = y*r*r + r + 1
	if n < -126 {
		y *= 0x1p-64
		n += 64
	} else if n > 127 {
		y *= 2
		n--
	}
	return y * math.Float32frombits(uint32(n+127)<<23)
}
