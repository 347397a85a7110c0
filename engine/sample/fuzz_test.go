package sample

import (
	"math"
	"slices"
	"testing"
)

// referenceTruncate is the truncation written the slow, obvious way: sort
// every finite logit, cut to top-k, compute probabilities with math.Exp, cut
// to top-p, cut to min-p. edge reports that the top-p cut lies within a
// relative 1e-6 of target, where summing in another order or a less exact
// exp may legitimately move it by one token.
func referenceTruncate(p Params, logits []float32) (kept []int32, edge bool) {
	var ids []int32
	for i, l := range logits {
		if l > negInf {
			ids = append(ids, int32(i))
		}
	}
	if len(ids) == 0 {
		return nil, false
	}
	slices.SortFunc(ids, func(a, b int32) int {
		switch la, lb := logits[a], logits[b]; {
		case la > lb:
			return -1
		case la < lb:
			return 1
		}
		return int(a - b)
	})
	if p.TopK > 0 && p.TopK < len(ids) {
		ids = ids[:p.TopK]
	}
	m := float64(logits[ids[0]])
	d := func(id int32) float64 {
		if float64(logits[id]) == m {
			return 0
		}
		return (float64(logits[id]) - m) / float64(p.Temperature)
	}
	if p.TopP > 0 && p.TopP < 1 {
		var z float64
		for _, id := range ids {
			z += math.Exp(d(id))
		}
		target, cum := float64(p.TopP)*z, 0.0
		for i, id := range ids {
			cum += math.Exp(d(id))
			if math.Abs(cum-target) <= 1e-6*target {
				edge = true
			}
			if cum >= target {
				ids = ids[:i+1]
				break
			}
		}
	}
	if p.MinP > 0 {
		for i, id := range ids {
			if d(id) < math.Log(float64(p.MinP)) {
				ids = ids[:i]
				break
			}
		}
	}
	slices.Sort(ids)
	return ids, edge
}

// FuzzTruncate compares truncate with referenceTruncate, and checks that
// Sample returns a kept token (or 0 when nothing is finite) and that greedy
// is the argmax. Logits are bytes/8 - 16 (many ties); bytes 0 and 1 are -Inf
// and NaN.
func FuzzTruncate(f *testing.F) {
	f.Add([]byte{10, 200, 30, 200, 0, 1, 90}, byte(8), byte(0), byte(200), byte(0))
	f.Add([]byte("the quick brown fox jumps over the lazy dog"), byte(3), byte(5), byte(250), byte(10))
	f.Add([]byte{0, 0, 1}, byte(1), byte(1), byte(0), byte(255))
	f.Fuzz(func(t *testing.T, data []byte, temp, topK, topP, minP byte) {
		if len(data) == 0 || len(data) > 512 {
			return
		}
		logits := make([]float32, len(data))
		for i, b := range data {
			switch b {
			case 0:
				logits[i] = negInf
			case 1:
				logits[i] = float32(math.NaN())
			default:
				logits[i] = float32(b)/8 - 16
			}
		}
		p := Params{
			Temperature: float32(temp) / 16, // 0 (greedy) to ~16
			TopK:        int(topK) % (len(data) + 2),
			TopP:        float32(topP) / 255,
			MinP:        float32(minP) / 255,
			Seed:        uint64(temp) ^ uint64(len(data)),
		}
		if p.Temperature == 0 {
			want := int32(0)
			for i, l := range logits {
				if l > logits[want] || logits[want] != logits[want] {
					want = int32(i)
				}
			}
			if !(logits[want] > negInf) {
				want = 0
			}
			if got := New(p, len(logits)).Sample(slices.Clone(logits)); got != want {
				t.Fatalf("greedy Sample(%v) = %d, want %d", logits, got, want)
			}
			return
		}
		s := New(p, len(logits))
		got, _ := s.truncate(slices.Clone(logits))
		got = slices.Clone(got)
		slices.Sort(got)
		want, edge := referenceTruncate(p, logits)
		if !edge && !slices.Equal(got, want) {
			t.Fatalf("%+v: truncate(%v) = %v, reference %v", p, logits, got, want)
		}
		id := s.Sample(slices.Clone(logits))
		if len(got) == 0 {
			if id != 0 {
				t.Fatalf("%+v: Sample(%v) = %d with nothing finite, want 0", p, logits, id)
			}
		} else if _, ok := slices.BinarySearch(got, id); !ok {
			t.Fatalf("%+v: Sample(%v) = %d, not among kept %v", p, logits, id, got)
		}
	})
}
