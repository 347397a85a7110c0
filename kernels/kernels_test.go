package kernels

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/spigot-llm/spigot/kernels/kerneltest"
	"github.com/spigot-llm/spigot/quant"
)

// exported returns the package's API in kerneltest's form. MatMul gets a
// pool per thread count, closed at the end of the test.
func exported(t *testing.T) kerneltest.Impl {
	pools := map[int]*Pool{}
	t.Cleanup(func() {
		for _, p := range pools {
			p.Close()
		}
	})
	return kerneltest.Impl{
		Dot:           Dot,
		Axpy:          Axpy,
		Add:           Add,
		Scale:         Scale,
		RMSNorm:       RMSNorm,
		Softmax:       Softmax,
		SiLUMul:       SiLUMul,
		RoPE:          RoPE,
		DotRow:        DotRow,
		DequantizeRow: DequantizeRow,
		MatMul: func(threads int, out []float32, typ quant.Type, data []byte, rows, cols int, x []float32, batch int) {
			p := pools[threads]
			if p == nil {
				p = NewPool(threads)
				pools[threads] = p
			}
			MatMul(p, out, Matrix{Type: typ, Data: data, Rows: rows, Cols: cols}, x, batch)
		},
		Types: slices.Concat(kerneltest.DefaultTypes, []quant.Type{quant.Q4_K, quant.Q6_K, quant.Q5_0}),
	}
}

// withImpl runs f with the kernel set k swapped in for active.
func withImpl(k impl, f func()) {
	saved := active
	active = k
	defer func() { active = saved }()
	f()
}

// TestKernels runs the conformance suite on every kernel set this machine
// can run: the portable Go one, and the dispatched one if it differs.
func TestKernels(t *testing.T) {
	t.Run(generic.name, func(t *testing.T) {
		withImpl(generic, func() { kerneltest.Test(t, exported(t)) })
	})
	if active.name != generic.name {
		t.Run(active.name, func(t *testing.T) { kerneltest.Test(t, exported(t)) })
	}
}

// TestMatMulNilPool checks the single-threaded path against DotRow.
func TestMatMulNilPool(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	for _, typ := range []quant.Type{quant.F32, quant.Q8_0, quant.Q4_K} {
		const rows, cols = 5, 512
		var data []byte
		for range rows {
			row, _ := kerneltest.RandRow(r, typ, cols)
			data = append(data, row...)
		}
		m := Matrix{Type: typ, Data: data, Rows: rows, Cols: cols}
		x := make([]float32, cols)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		out := make([]float32, rows)
		MatMul(nil, out, m, x, 1)
		for i := range out {
			want := DotRow(typ, m.Row(i), x)
			// Types with a dedicated kernel take the same path as DotRow
			// for batch 1; others dequantize, and sum in another order.
			tol := float32(0)
			if !Supported(typ) {
				tol = 1e-5 * max(1, abs32(want))
			}
			if d := abs32(out[i] - want); d > tol {
				t.Errorf("MatMul(nil, %v)[%d] = %v, want DotRow's %v", typ, i, out[i], want)
			}
		}
	}
}

func abs32(v float32) float32 { return float32(math.Abs(float64(v))) }

// TestMatMulBatchIndependence checks the documented property that a batched
// entry's result depends only on its own x: the same x gives bit-identical
// outputs at any position in batches of different sizes.
func TestMatMulBatchIndependence(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 6))
	p := NewPool(2)
	defer p.Close()
	for _, typ := range []quant.Type{quant.F16, quant.Q8_0, quant.Q4_0} {
		const rows, cols = 37, 96
		var data []byte
		for range rows {
			row, _ := kerneltest.RandRow(r, typ, cols)
			data = append(data, row...)
		}
		m := Matrix{Type: typ, Data: data, Rows: rows, Cols: cols}
		x := make([]float32, 9*cols)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		ref := make([]float32, 9*rows)
		MatMul(p, ref, m, x, 9)
		for _, batch := range []int{2, 3, 5} {
			for off := 0; off+batch <= 9; off += 2 {
				out := make([]float32, batch*rows)
				MatMul(p, out, m, x[off*cols:(off+batch)*cols], batch)
				for i, v := range out {
					if w := ref[off*rows+i]; math.Float32bits(v) != math.Float32bits(w) {
						t.Fatalf("%v batch %d at offset %d: out[%d] = %v, but %v in a batch of 9", typ, batch, off, i, v, w)
					}
				}
			}
		}
	}
}

func TestMatMulPanics(t *testing.T) {
	m := Matrix{Type: quant.Q8_0, Data: make([]byte, 2*34), Rows: 2, Cols: 32}
	tests := []struct {
		name string
		f    func()
	}{
		{"short x", func() { MatMul(nil, make([]float32, 2), m, make([]float32, 31), 1) }},
		{"short out", func() { MatMul(nil, make([]float32, 1), m, make([]float32, 32), 1) }},
		{"short data", func() {
			MatMul(nil, make([]float32, 3), Matrix{Type: quant.Q8_0, Data: m.Data, Rows: 3, Cols: 32}, make([]float32, 32), 1)
		}},
		{"partial block", func() {
			MatMul(nil, make([]float32, 2), Matrix{Type: quant.Q8_0, Data: m.Data, Rows: 2, Cols: 33}, make([]float32, 33), 1)
		}},
		{"unsupported", func() {
			MatMul(nil, make([]float32, 1), Matrix{Type: quant.IQ2_XXS, Data: make([]byte, 66), Rows: 1, Cols: 256}, make([]float32, 256), 1)
		}},
		{"DotRow short row", func() { DotRow(quant.Q8_0, make([]byte, 33), make([]float32, 32)) }},
		{"Dot lengths", func() { Dot(make([]float32, 3), make([]float32, 4)) }},
		{"Row out of range", func() { m.Row(2) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("%s did not panic", tc.name)
				}
			}()
			tc.f()
		})
	}
}

// TestExpf measures expf against math.Exp over the whole float32 range
// where the result is normal: the doc promises 2 ulp.
func TestExpf(t *testing.T) {
	var worst float64
	var at float32
	check := func(x float32) {
		got := float64(expf(x))
		want := math.Exp(float64(x))
		if want < 0x1p-126 || want > math.MaxFloat32 {
			return
		}
		ulp := math.Ldexp(1, math.Ilogb(want)-23)
		if e := math.Abs(got-want) / ulp; e > worst {
			worst, at = e, x
		}
	}
	for x := float32(-87.3); x < 88.7; x += 0.000731 {
		check(x)
	}
	r := rand.New(rand.NewPCG(2, 2))
	for range 200000 {
		check(float32(r.Float64()*176 - 87.3))
	}
	if worst > 2 {
		t.Errorf("expf error %.2f ulp at %v, want ≤ 2", worst, at)
	}
	t.Logf("expf worst error %.2f ulp at %v", worst, at)
	for _, tc := range []struct{ x, want float32 }{
		{0, 1}, {float32(math.Inf(-1)), 0}, {-200, 0}, {89, float32(math.Inf(1))},
	} {
		if got := expf(tc.x); got != tc.want {
			t.Errorf("expf(%v) = %v, want %v", tc.x, got, tc.want)
		}
	}
	if got := expf(-100); got <= 0 || math.Abs(float64(got)-math.Exp(-100)) > 0x1p-149 {
		t.Errorf("expf(-100) = %v, want %v (subnormal)", got, math.Exp(-100))
	}
	if got := expf(float32(math.NaN())); got == got {
		t.Errorf("expf(NaN) = %v", got)
	}
}

func TestArgMax(t *testing.T) {
	nan := float32(math.NaN())
	tests := []struct {
		x    []float32
		want int
	}{
		{nil, -1},
		{[]float32{nan}, -1},
		{[]float32{-3}, 0},
		{[]float32{1, 3, 3, 2}, 1},
		{[]float32{nan, -5, -4}, 2},
		{[]float32{-1, nan, 7}, 2},
		{[]float32{float32(math.Inf(-1)), -1e30}, 1},
	}
	for _, tc := range tests {
		if got := ArgMax(tc.x); got != tc.want {
			t.Errorf("ArgMax(%v) = %d, want %d", tc.x, got, tc.want)
		}
	}
}

func TestAttention(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	const headDim, stride, n = 64, 64 * 4, 37
	q := make([]float32, headDim)
	k := make([]float32, n*stride)
	v := make([]float32, n*stride)
	for _, s := range [][]float32{q, k, v} {
		for i := range s {
			s[i] = float32(r.NormFloat64())
		}
	}
	scale := float32(1 / math.Sqrt(headDim))
	out := make([]float32, headDim)
	scores := make([]float32, n+5)
	Attention(out, q, k, v, n, stride, scale, scores)
	var w [n]float64
	var m float64 = math.Inf(-1)
	for i := range n {
		var s float64
		for j := range headDim {
			s += float64(q[j]) * float64(k[i*stride+j])
		}
		w[i] = s * float64(scale)
		m = max(m, w[i])
	}
	var sum float64
	for i := range w {
		w[i] = math.Exp(w[i] - m)
		sum += w[i]
	}
	for j := range headDim {
		var ref, abs float64
		for i := range n {
			ref += w[i] / sum * float64(v[i*stride+j])
			abs += math.Abs(w[i] / sum * float64(v[i*stride+j]))
		}
		// Softmax weights carry ~1e-6 relative error (the scores are
		// rounded float32 dot products, up to ±10, and exp magnifies
		// their absolute error); the weighted sum adds n roundings.
		if d := math.Abs(float64(out[j]) - ref); d > 1e-5*abs {
			t.Errorf("Attention out[%d] = %v, want %v", j, out[j], ref)
		}
	}
}

// TestAllocs asserts the hot paths do not allocate.
func TestAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts are flaky under -short's reduced runs")
	}
	p := NewPool(2)
	defer p.Close()
	const rows, cols = 256, 512
	r := rand.New(rand.NewPCG(4, 4))
	var data []byte
	for range rows {
		row, _ := kerneltest.RandRow(r, quant.Q8_0, cols)
		data = append(data, row...)
	}
	m := Matrix{Type: quant.Q8_0, Data: data, Rows: rows, Cols: cols}
	x := make([]float32, 4*cols)
	out := make([]float32, 4*rows)
	fn := func(lo, hi int) {}
	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"For", func() { p.For(100, fn) }},
		{"MatMul", func() { MatMul(p, out, m, x[:cols], 1) }},
		{"MatMul batch", func() { MatMul(p, out, m, x, 4) }},
		{"DotRow", func() { DotRow(quant.Q8_0, m.Row(3), x[:cols]) }},
		{"Softmax", func() { Softmax(x) }},
	} {
		tc.f() // grow scratch
		if n := testing.AllocsPerRun(50, tc.f); n != 0 {
			t.Errorf("%s: %v allocations per run, want 0", tc.name, n)
		}
	}
}

// TestFastLayouts keeps the kernels' copy of the block layouts in step with
// quant's.
func TestFastLayouts(t *testing.T) {
	for _, typ := range []quant.Type{quant.F32, quant.F16, quant.BF16, quant.Q8_0, quant.Q4_0} {
		l := fastLayouts[slot(typ)]
		if l.blockSize != typ.BlockSize() || l.typeSize != typ.TypeSize() {
			t.Errorf("fastLayouts[%v] = %+v, quant says %d/%d", typ, l, typ.BlockSize(), typ.TypeSize())
		}
	}
}

func TestMul(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	for _, n := range kerneltest.FloatSizes {
		a, b := make([]float32, n), make([]float32, n)
		for i := range a {
			a[i], b[i] = float32(r.NormFloat64()), float32(r.NormFloat64())
		}
		got := slices.Clone(a)
		Mul(got, b)
		for i := range a {
			if want := a[i] * b[i]; got[i] != want {
				t.Fatalf("Mul(n=%d)[%d] = %v, want %v", n, i, got[i], want)
			}
		}
	}
}
