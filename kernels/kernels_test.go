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
		Types:    slices.Concat(kerneltest.DefaultTypes, kTypes, []quant.Type{quant.Q5_0}),
		IntTypes: slices.Concat([]quant.Type{quant.Q8_0, quant.Q4_0}, kTypes),
	}
}

// kTypes are the K-quant types with dedicated kernels.
var kTypes = []quant.Type{quant.Q4_K, quant.Q5_K, quant.Q6_K}

// withImpl runs f with the kernel set k swapped in for active.
func withImpl(k impl, f func()) {
	saved := active
	active = k
	defer func() { active = saved }()
	f()
}

// TestKernels runs the conformance suite on every kernel set this machine
// can run: the portable Go one and each assembly one.
func TestKernels(t *testing.T) {
	for _, k := range sets {
		t.Run(k.name, func(t *testing.T) {
			withImpl(k, func() { kerneltest.Test(t, exported(t)) })
		})
	}
}

// TestMatMulNilPool checks that the single-threaded path (a nil Pool) gives
// the pool's results bit for bit, on each path: batch 1 and batched, float
// and integer, dedicated kernel or not.
func TestMatMulNilPool(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	p := NewPool(2)
	defer p.Close()
	for _, typ := range []quant.Type{quant.F32, quant.Q8_0, quant.Q4_0, quant.Q4_K, quant.Q5_K, quant.Q6_K, quant.Q5_0} {
		const rows, cols = 70, 512
		var data []byte
		for range rows {
			row, _ := kerneltest.RandRow(r, typ, cols)
			data = append(data, row...)
		}
		m := Matrix{Type: typ, Data: data, Rows: rows, Cols: cols}
		for _, batch := range []int{1, 7} {
			x := make([]float32, batch*cols)
			for i := range x {
				x[i] = float32(r.NormFloat64())
			}
			want := make([]float32, batch*rows)
			MatMul(p, want, m, x, batch)
			out := make([]float32, batch*rows)
			MatMul(nil, out, m, x, batch)
			for i := range out {
				if math.Float32bits(out[i]) != math.Float32bits(want[i]) {
					t.Fatalf("MatMul(nil, %v, batch %d)[%d] = %v, want the pool's %v", typ, batch, i, out[i], want[i])
				}
			}
		}
	}
}

func abs32(v float32) float32 { return float32(math.Abs(float64(v))) }

// TestMatMulBatchIndependence checks the documented property that a batched
// entry's result depends only on its own x: the same x gives bit-identical
// outputs at any position in batches of different sizes (on the integer
// path, batch 1 included).
func TestMatMulBatchIndependence(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 6))
	p := NewPool(2)
	defer p.Close()
	for _, k := range sets {
		for _, typ := range []quant.Type{quant.F32, quant.F16, quant.Q8_0, quant.Q4_0, quant.Q4_K, quant.Q5_K, quant.Q6_K} {
			colsList := []int{96, 800}
			if typ.BlockSize() == quant.QKK {
				colsList = []int{256, 1280}
			}
			for _, cols := range colsList {
				const rows = 37
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
				withImpl(k, func() {
					ref := make([]float32, 9*rows)
					MatMul(p, ref, m, x, 9)
					for _, batch := range []int{1, 2, 3, 5} {
						if batch == 1 && !intPath(typ) {
							continue
						}
						for off := 0; off+batch <= 9; off += 2 {
							out := make([]float32, batch*rows)
							MatMul(p, out, m, x[off*cols:(off+batch)*cols], batch)
							for i, v := range out {
								if w := ref[off*rows+i]; math.Float32bits(v) != math.Float32bits(w) {
									t.Fatalf("%s: %v, %d cols, batch %d at offset %d: out[%d] = %v, but %v in a batch of 9", k.name, typ, cols, batch, off, i, v, w)
								}
							}
						}
					}
				})
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
		{"K-quant partial super-block", func() {
			MatMul(nil, make([]float32, 2), Matrix{Type: quant.Q4_K, Data: make([]byte, 2*144), Rows: 2, Cols: 288}, make([]float32, 288), 1)
		}},
		{"K-quant short data", func() {
			MatMul(nil, make([]float32, 3), Matrix{Type: quant.Q6_K, Data: make([]byte, 2*210), Rows: 3, Cols: 256}, make([]float32, 256), 1)
		}},
		{"DotRow Q5_K short row", func() { DotRow(quant.Q5_K, make([]byte, 175), make([]float32, 256)) }},
		{"DequantizeRow Q6_K partial", func() { DequantizeRow(quant.Q6_K, make([]float32, 128), make([]byte, 105)) }},
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
	var fdata []byte
	for range rows {
		row, _ := kerneltest.RandRow(r, quant.F16, cols+4)
		fdata = append(fdata, row...)
	}
	mf := Matrix{Type: quant.F16, Data: fdata, Rows: rows, Cols: cols + 4}
	// Odd shapes take the paths for partial groups and tiles.
	var odata, fodata []byte
	for range 70 {
		row, _ := kerneltest.RandRow(r, quant.Q4_0, 288)
		odata = append(odata, row...)
		row, _ = kerneltest.RandRow(r, quant.F32, 288)
		fodata = append(fodata, row...)
	}
	mo := Matrix{Type: quant.Q4_0, Data: odata, Rows: 70, Cols: 288}
	mfo := Matrix{Type: quant.F32, Data: fodata, Rows: 70, Cols: 288}
	var mk []Matrix
	for _, typ := range kTypes {
		var d []byte
		for range 70 {
			row, _ := kerneltest.RandRow(r, typ, 768)
			d = append(d, row...)
		}
		mk = append(mk, Matrix{Type: typ, Data: d, Rows: 70, Cols: 768})
	}
	x := make([]float32, 64*(cols+4))
	out := make([]float32, 64*rows)
	fn := func(lo, hi int) {}
	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"For", func() { p.For(100, fn) }},
		{"MatMul", func() { MatMul(p, out, m, x[:cols], 1) }},
		{"MatMul batch", func() { MatMul(p, out, m, x, 4) }},
		{"MatMul batch 64", func() { MatMul(p, out, m, x, 64) }},
		{"MatMul F16 batch", func() { MatMul(p, out, mf, x, 64) }},
		{"MatMul odd", func() { MatMul(p, out, mo, x, 1) }},
		{"MatMul odd batch", func() { MatMul(p, out, mo, x, 5) }},
		{"MatMul odd F32 batch", func() { MatMul(p, out, mfo, x, 5) }},
		{"MatMul Q4_K", func() { MatMul(p, out, mk[0], x, 1) }},
		{"MatMul Q4_K batch 40", func() { MatMul(p, out, mk[0], x, 40) }},
		{"MatMul Q5_K", func() { MatMul(p, out, mk[1], x, 1) }},
		{"MatMul Q5_K batch", func() { MatMul(p, out, mk[1], x, 5) }},
		{"MatMul Q6_K", func() { MatMul(p, out, mk[2], x, 1) }},
		{"MatMul Q6_K batch 40", func() { MatMul(p, out, mk[2], x, 40) }},
		{"DotRow Q4_K", func() { DotRow(quant.Q4_K, mk[0].Row(3), x[:768]) }},
		{"DequantizeRow Q6_K", func() { DequantizeRow(quant.Q6_K, x[:768], mk[2].Row(3)) }},
		{"Softmax", func() { Softmax(x[:1000]) }},
		{"SiLUMul", func() { SiLUMul(x[:1000], x[1000:2000]) }},
		{"DotRow", func() { DotRow(quant.Q8_0, m.Row(3), x[:cols]) }},
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
	for _, typ := range slices.Concat(kerneltest.DefaultTypes, kTypes) {
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

// TestIntPathSetsAgree checks that every kernel set computes the integer
// path's canonical sums (matmul_int.go): the assembly sets agree bit for bit, and
// the portable one, which rounds a separate multiply and add in float64
// instead of a fused multiply-add, nearly always bit for bit too (it can
// differ by an ulp in a lane, where the float64 sum rounds to a float32
// tie): within 2^-22 of the sum of the lanes' magnitudes, and in at most a
// few outputs.
func TestIntPathSetsAgree(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	p := NewPool(2)
	defer p.Close()
	for _, typ := range slices.Concat([]quant.Type{quant.Q8_0, quant.Q4_0}, kTypes) {
		colsList := []int{32, 288, 768, 2080}
		if typ.BlockSize() == quant.QKK {
			colsList = []int{256, 768, 2304}
		}
		for _, cols := range colsList {
			const rows, batch = 45, 7
			var data []byte
			for range rows {
				row, _ := kerneltest.RandRow(r, typ, cols)
				data = append(data, row...)
			}
			m := Matrix{Type: typ, Data: data, Rows: rows, Cols: cols}
			x := make([]float32, batch*cols)
			for i := range x {
				x[i] = float32(r.NormFloat64())
			}
			// The sums' magnitude bound: Σ|w||x| over the row.
			mag := make([]float64, batch*rows)
			w := make([]float32, cols)
			for rr := range rows {
				DequantizeRow(typ, w, m.Row(rr))
				for b := range batch {
					for i, v := range w {
						mag[b*rows+rr] += math.Abs(float64(v) * float64(x[b*cols+i]))
					}
				}
			}
			var ref []float32
			var refSet string
			for _, k := range sets {
				out := make([]float32, batch*rows)
				withImpl(k, func() { MatMul(p, out, m, x, batch) })
				if ref == nil {
					ref, refSet = out, k.name
					continue
				}
				differ := 0
				for i := range out {
					if math.Float32bits(out[i]) == math.Float32bits(ref[i]) {
						continue
					}
					differ++
					d := math.Abs(float64(out[i]) - float64(ref[i]))
					if refSet != generic.name || d > 0x1p-22*mag[i] || differ > 3 {
						t.Errorf("%v %d cols: %s gives out[%d] = %v, %s %v", typ, cols, k.name, i, out[i], refSet, ref[i])
					}
				}
				if refSet == generic.name {
					ref, refSet = out, k.name
				}
			}
		}
	}
}
