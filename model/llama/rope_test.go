package llama

import (
	"encoding/binary"
	"math"
	"strings"
	"testing"

	"github.com/spigot-llm/spigot/gguf"
	"github.com/spigot-llm/spigot/quant"
)

func TestRoPEFrequencies(t *testing.T) {
	const dim = 8
	factors := []float32{1, 2, 4, 8}
	data := make([]byte, 16)
	for i, f := range factors {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(f))
	}
	cases := []struct {
		name    string
		kvs     []gguf.KV
		tensors []*gguf.Tensor
		want    func(i int) float64
		err     string
	}{
		{name: "default base", want: func(i int) float64 { return math.Pow(10000, -2*float64(i)/dim) }},
		{name: "llama3 factors and base", kvs: []gguf.KV{{Key: "llama.rope.freq_base", Value: gguf.Val(float32(500000))}},
			tensors: []*gguf.Tensor{{Name: "rope_freqs.weight", Type: quant.F32, Dims: []uint64{4}, Data: data}},
			want:    func(i int) float64 { return math.Pow(500000, -2*float64(i)/dim) / float64(factors[i]) }},
		{name: "linear scaling", kvs: []gguf.KV{{Key: "llama.rope.scaling.type", Value: gguf.Val("linear")}, {Key: "llama.rope.scaling.factor", Value: gguf.Val(float32(4))}},
			want: func(i int) float64 { return math.Pow(10000, -2*float64(i)/dim) / 4 }},
		{name: "yarn", kvs: []gguf.KV{{Key: "llama.rope.scaling.type", Value: gguf.Val("yarn")}}, err: "yarn"},
		{name: "bad base", kvs: []gguf.KV{{Key: "llama.rope.freq_base", Value: gguf.Val(float32(-1))}}, err: "freq_base"},
	}
	for _, tc := range cases {
		f, err := gguf.New(tc.kvs, tc.tensors, nil)
		if err != nil {
			t.Fatal(err)
		}
		m := &Model{ropeDim: dim}
		err = m.loadRoPE(f, func(k string) string { return "llama." + k })
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err = %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		for i, got := range m.invFreq {
			if want := tc.want(i); math.Abs(float64(got)-want) > 1e-6*want {
				t.Errorf("%s: frequency %d = %v, want %v", tc.name, i, got, want)
			}
		}
	}
}
