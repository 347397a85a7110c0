package sample

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

var negInf = float32(math.Inf(-1))

// ln returns float32 natural logs, so that softmax(ln(p)) = p/sum(p).
func ln(p ...float64) []float32 {
	out := make([]float32, len(p))
	for i, v := range p {
		out[i] = float32(math.Log(v))
	}
	return out
}

func TestGreedy(t *testing.T) {
	nan := float32(math.NaN())
	tests := []struct {
		name   string
		logits []float32
		bias   map[int32]float32
		want   int32
	}{
		{name: "max", logits: []float32{0.1, 3, -2, 2.9}, want: 1},
		{name: "tie goes to lowest id", logits: []float32{1, 5, 2, 5, 5}, want: 1},
		{name: "max at the end", logits: []float32{1, 2, 3, 4, 5, 6, 7}, want: 6},
		{name: "all negative", logits: []float32{-3, -1, -2}, want: 1},
		{name: "NaN ignored", logits: []float32{nan, 1, nan, 2, nan}, want: 3},
		{name: "all -Inf", logits: []float32{negInf, negInf}, want: 0},
		{name: "bias -Inf bans the max", logits: []float32{1, 5, 2}, bias: map[int32]float32{1: negInf}, want: 2},
		{name: "bias promotes", logits: []float32{1, 5, 2}, bias: map[int32]float32{0: 4.5}, want: 0},
		{name: "bias makes a tie", logits: []float32{1, 5, 2}, bias: map[int32]float32{2: 3}, want: 1},
		{name: "everything banned", logits: []float32{1, 5}, bias: map[int32]float32{0: negInf, 1: negInf}, want: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := New(Params{LogitBias: tc.bias}, len(tc.logits))
			if got := s.Sample(slices.Clone(tc.logits)); got != tc.want {
				t.Errorf("Sample(%v) = %d, want %d", tc.logits, got, tc.want)
			}
		})
	}
}

// truncated runs the temperature path's truncation and returns the kept ids,
// sorted by id.
func truncated(t *testing.T, p Params, logits []float32) []int32 {
	t.Helper()
	if p.Temperature == 0 {
		p.Temperature = 1
	}
	s := New(p, len(logits))
	kept, _ := s.truncate(slices.Clone(logits))
	kept = slices.Clone(kept)
	slices.Sort(kept)
	return kept
}

func TestTruncate(t *testing.T) {
	tests := []struct {
		name   string
		p      Params
		logits []float32
		want   []int32
	}{
		{name: "nothing", logits: ln(.4, .3, .2, .1), want: []int32{0, 1, 2, 3}},
		{name: "skips -Inf and NaN", logits: []float32{1, negInf, float32(math.NaN()), 0}, want: []int32{0, 3}},

		{name: "top-k 2", p: Params{TopK: 2}, logits: []float32{1, 3, 2, 3}, want: []int32{1, 3}},
		{name: "top-k 3", p: Params{TopK: 3}, logits: []float32{1, 3, 2, 3}, want: []int32{1, 2, 3}},
		{name: "top-k tie at boundary keeps lowest ids", p: Params{TopK: 2}, logits: []float32{5, 1, 1, 1}, want: []int32{0, 1}},
		{name: "top-k tie, best later", p: Params{TopK: 2}, logits: []float32{1, 1, 1, 5}, want: []int32{0, 3}},
		{name: "top-k >= vocab is off", p: Params{TopK: 9}, logits: []float32{1, 2, 3}, want: []int32{0, 1, 2}},
		{name: "top-k larger than finite set", p: Params{TopK: 3}, logits: []float32{negInf, 2, negInf, 1}, want: []int32{1, 3}},

		// Probabilities .4 .3 .2 .1: cumulative .4 .7 .9 1.
		{name: "top-p .3", p: Params{TopP: .3}, logits: ln(.4, .3, .2, .1), want: []int32{0}},
		{name: "top-p .5", p: Params{TopP: .5}, logits: ln(.4, .3, .2, .1), want: []int32{0, 1}},
		{name: "top-p .8", p: Params{TopP: .8}, logits: ln(.4, .3, .2, .1), want: []int32{0, 1, 2}},
		{name: "top-p .95", p: Params{TopP: .95}, logits: ln(.4, .3, .2, .1), want: []int32{0, 1, 2, 3}},
		{name: "top-p unsorted input", p: Params{TopP: .8}, logits: ln(.1, .3, .2, .4), want: []int32{1, 2, 3}},
		{name: "top-p 1 is off", p: Params{TopP: 1}, logits: ln(.97, .01, .01, .01), want: []int32{0, 1, 2, 3}},
		// Temperature 2 flattens .4 .3 .2 .1 to weights ∝ sqrt: .632 .548
		// .447 .316 of total 1.943, cumulative .325 .607 .837 1.
		{name: "top-p after temperature", p: Params{Temperature: 2, TopP: .65}, logits: ln(.4, .3, .2, .1), want: []int32{0, 1, 2}},
		// Top-k 2 leaves .4 .3, renormalized .571 .429: top-p .5 needs
		// only token 0, where without top-k it needs two.
		{name: "top-p renormalizes after top-k", p: Params{TopK: 2, TopP: .5}, logits: ln(.4, .3, .2, .1), want: []int32{0}},

		// Weights relative to the max: 1 .75 .5 .25.
		{name: "min-p .6", p: Params{MinP: .6}, logits: ln(.4, .3, .2, .1), want: []int32{0, 1}},
		{name: "min-p .4", p: Params{MinP: .4}, logits: ln(.4, .3, .2, .1), want: []int32{0, 1, 2}},
		{name: "min-p .1", p: Params{MinP: .1}, logits: ln(.4, .3, .2, .1), want: []int32{0, 1, 2, 3}},
		{name: "min-p 1 keeps the max and its ties", p: Params{MinP: 1}, logits: []float32{2, 3, 3, 1}, want: []int32{1, 2}},
		// exp(-1/T): .368 at T=1, .607 at T=2.
		{name: "min-p T=1", p: Params{MinP: .5}, logits: []float32{0, -1}, want: []int32{0}},
		{name: "min-p after temperature", p: Params{Temperature: 2, MinP: .5}, logits: []float32{0, -1}, want: []int32{0, 1}},
		{name: "min-p with top-k", p: Params{TopK: 3, MinP: .6}, logits: ln(.4, .3, .2, .1), want: []int32{0, 1}},

		// top-p .8 keeps {0,1,2}; min-p .6 keeps {0,1}: the smaller wins.
		{name: "top-p then min-p", p: Params{TopP: .8, MinP: .6}, logits: ln(.4, .3, .2, .1), want: []int32{0, 1}},
		// top-p .5 keeps {0,1}; min-p .4 keeps {0,1,2}. The top-p mass is
		// that of all tokens, not of the min-p survivors (.4/.9 < .5).
		{name: "min-p does not renormalize top-p", p: Params{TopP: .5, MinP: .4}, logits: ln(.4, .3, .2, .1), want: []int32{0, 1}},
		{name: "top-k, top-p, min-p", p: Params{TopK: 3, TopP: .8, MinP: .7}, logits: ln(.4, .3, .2, .1), want: []int32{0, 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := truncated(t, tc.p, tc.logits); !slices.Equal(got, tc.want) {
				t.Errorf("truncate(%+v, %v) = %v, want %v", tc.p, tc.logits, got, tc.want)
			}
		})
	}
}

// The sorted (top-k) and heap (top-p without top-k) paths must keep the same
// set. TopK = n-1 with one -Inf logit truncates nothing, but takes the
// sorted path.
func TestTruncatePathsAgree(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 1000 {
		var logits []float32
		if trial%2 == 0 {
			logits = make([]float32, 2+rng.IntN(60))
			for i := range logits {
				logits[i] = float32(rng.IntN(8)) / 2 // many ties
			}
		} else {
			// Spread over many top-p buckets, the last one included.
			logits = make([]float32, 2+rng.IntN(5000))
			sigma := []float64{0.1, 1, 5, 20}[rng.IntN(4)]
			for i := range logits {
				logits[i] = float32(sigma * rng.NormFloat64())
			}
		}
		n := len(logits)
		logits[rng.IntN(n)] = negInf
		p := Params{
			Temperature: []float32{0.1, 0.5, 1, 1.7, 10}[rng.IntN(5)],
			TopP:        []float32{0, .3, .6, .9, .99, .999999}[rng.IntN(6)],
			MinP:        []float32{0, 1e-6, .05, .2, .5}[rng.IntN(5)],
		}
		heap := truncated(t, p, logits)
		p.TopK = n - 1
		sorted := truncated(t, p, logits)
		if !slices.Equal(heap, sorted) {
			t.Fatalf("trial %d: %+v on %v: heap path kept %v, sorted path %v", trial, p, logits, heap, sorted)
		}
	}
}

func TestFastExp(t *testing.T) {
	var worst float64
	for x := -708.0; x <= 0; x += 0.0137 {
		want := math.Exp(x)
		if e := math.Abs(fastExp(x)-want) / want; e > worst {
			worst = e
		}
	}
	if worst > 2e-9 {
		t.Errorf("fastExp relative error up to %g, want <= 2e-9", worst)
	}
	for _, x := range []float64{0, -1e-300, -math.Ln2 / 2, -math.Ln2} {
		if got, want := fastExp(x), math.Exp(x); math.Abs(got-want) > 2e-9*want {
			t.Errorf("fastExp(%v) = %v, want %v", x, got, want)
		}
	}
	for _, x := range []float64{-709, -1e6, math.Inf(-1), math.NaN()} {
		if got := fastExp(x); got != 0 {
			t.Errorf("fastExp(%v) = %v, want 0", x, got)
		}
	}
}

func TestTopK1IsGreedy(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for trial := range 200 {
		logits := make([]float32, 1+rng.IntN(100))
		for i := range logits {
			logits[i] = float32(rng.IntN(10)) // ties
		}
		greedy := New(Params{}, len(logits)).Sample(slices.Clone(logits))
		s := New(Params{Temperature: 1.5, TopK: 1, Seed: uint64(trial)}, len(logits))
		for range 5 {
			if got := s.Sample(slices.Clone(logits)); got != greedy {
				t.Fatalf("trial %d: top-k 1 Sample(%v) = %d, greedy %d", trial, logits, got, greedy)
			}
		}
	}
}

func TestPenalties(t *testing.T) {
	logits := []float32{2, -2, 1, 0.5, 0}
	tests := []struct {
		name   string
		p      Params
		accept []int32
		want   []float32
	}{
		{
			name: "off", p: Params{RepeatPenalty: 1},
			accept: []int32{0, 1}, want: []float32{2, -2, 1, 0.5, 0},
		},
		{
			// l > 0: l/p; l <= 0: l*p; once per token, not per occurrence.
			name: "repeat", p: Params{RepeatPenalty: 2},
			accept: []int32{0, 1, 1, 4}, want: []float32{1, -4, 1, 0.5, 0},
		},
		{
			name: "presence", p: Params{PresencePenalty: 0.25},
			accept: []int32{0, 1, 1}, want: []float32{1.75, -2.25, 1, 0.5, 0},
		},
		{
			name: "frequency", p: Params{FrequencyPenalty: 0.5},
			accept: []int32{0, 1, 1, 1}, want: []float32{1.5, -3.5, 1, 0.5, 0},
		},
		{
			name: "negative presence rewards", p: Params{PresencePenalty: -1},
			accept: []int32{2}, want: []float32{2, -2, 2, 0.5, 0},
		},
		{
			// token 0: 2/2 - 1*0.5 - 0.25 = 0.25
			// token 1: -2*2 - 2*0.5 - 0.25 = -5.25
			name: "all three", p: Params{RepeatPenalty: 2, FrequencyPenalty: 0.5, PresencePenalty: 0.25},
			accept: []int32{0, 1, 1}, want: []float32{0.25, -5.25, 1, 0.5, 0},
		},
		{
			name: "window 2", p: Params{RepeatPenalty: 2, RepeatLastN: 2},
			accept: []int32{0, 1, 3}, want: []float32{2, -4, 1, 0.25, 0},
		},
		{
			name: "window -1 is everything", p: Params{FrequencyPenalty: 1, RepeatLastN: -1},
			accept: slices.Repeat([]int32{3}, 1000), want: []float32{2, -2, 1, -999.5, 0},
		},
		{
			name: "default window 64", p: Params{FrequencyPenalty: 1},
			accept: append([]int32{2}, slices.Repeat([]int32{3}, 100)...), want: []float32{2, -2, 1, -63.5, 0},
		},
		{
			name: "out-of-range ids ignored", p: Params{PresencePenalty: 1},
			accept: []int32{-1, 5, 99}, want: []float32{2, -2, 1, 0.5, 0},
		},
		{
			// Bias after penalties: 2/2 + 1 = 2, not (2+1)/2.
			name: "bias after repeat", p: Params{RepeatPenalty: 2, LogitBias: map[int32]float32{0: 1, 4: negInf}},
			accept: []int32{0, 4}, want: []float32{2, -2, 1, 0.5, negInf},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := New(tc.p, len(logits))
			for _, id := range tc.accept {
				s.Accept(id)
			}
			got := slices.Clone(logits)
			s.Sample(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("penalized logits = %v, want %v", got, tc.want)
			}
			// The counts must survive a Sample unchanged.
			again := slices.Clone(logits)
			s.Sample(again)
			if !slices.Equal(again, tc.want) {
				t.Errorf("second Sample: penalized logits = %v, want %v", again, tc.want)
			}
		})
	}
}

// TestPenaltyWindow checks the ring buffer against counting the last N
// accepted tokens directly.
func TestPenaltyWindow(t *testing.T) {
	const nVocab = 12
	rng := rand.New(rand.NewPCG(5, 6))
	for _, window := range []int{-1, 1, 2, 3, 7, 64} {
		s := New(Params{FrequencyPenalty: 1, RepeatLastN: window}, nVocab)
		var hist []int32
		for step := range 300 {
			id := int32(rng.IntN(nVocab))
			s.Accept(id)
			hist = append(hist, id)
			logits := make([]float32, nVocab)
			s.Sample(logits)
			recent := hist
			if window > 0 && len(recent) > window {
				recent = recent[len(recent)-window:]
			}
			want := make([]float32, nVocab)
			for _, id := range recent {
				want[id]--
			}
			if !slices.Equal(logits, want) {
				t.Fatalf("window %d, step %d: penalized logits = %v, want %v", window, step, logits, want)
			}
		}
		s.Reset()
		logits := make([]float32, nVocab)
		s.Sample(logits)
		if !slices.Equal(logits, make([]float32, nVocab)) {
			t.Errorf("window %d: after Reset, penalized logits = %v, want zeros", window, logits)
		}
	}
}

func TestBiasBansUnderSampling(t *testing.T) {
	logits := []float32{5, 0, 0, 0}
	s := New(Params{Temperature: 1, LogitBias: map[int32]float32{0: negInf, 2: negInf}}, 4)
	for range 1000 {
		if got := s.Sample(slices.Clone(logits)); got != 1 && got != 3 {
			t.Fatalf("Sample = %d, a banned token", got)
		}
	}
}

// TestDistribution draws 10000 tokens from softmax(ln 1, ln 2, ln 3, ln 4) =
// (.1, .2, .3, .4). Each frequency is a binomial proportion with standard
// deviation sqrt(p(1-p)/10000) <= 0.005, so a tolerance of 0.02 is 4 sigma:
// a correct sampler fails it with probability about 6e-5 per token for a
// random seed (the seed is fixed, so the test is deterministic), while any
// off-by-one in the weights or the draw moves a frequency by far more.
// A chi-square statistic (3 degrees of freedom) backs it up.
func TestDistribution(t *testing.T) {
	const draws = 10000
	want := []float64{.1, .2, .3, .4}
	logits := ln(1, 2, 3, 4)
	for _, p := range []Params{
		{Temperature: 1},
		{Temperature: 1, TopK: 3, MinP: 0.01}, // drops token 0, renormalizes
		{Temperature: 1, TopP: 0.99},
	} {
		p.Seed = 42
		wantP := want
		if p.TopK == 3 {
			wantP = []float64{0, .2 / .9, .3 / .9, .4 / .9}
		}
		s := New(p, len(logits))
		var counts [4]int
		for range draws {
			counts[s.Sample(slices.Clone(logits))]++
		}
		var chi2 float64
		for i, c := range counts {
			f := float64(c) / draws
			if math.Abs(f-wantP[i]) > 0.02 {
				t.Errorf("%+v: token %d frequency %.4f, want %.4f ± 0.02", p, i, f, wantP[i])
			}
			if wantP[i] > 0 {
				e := wantP[i] * draws
				chi2 += (float64(c) - e) * (float64(c) - e) / e
			}
		}
		// 16.27 is the 0.999 quantile of chi-square with 3 degrees of
		// freedom (2 with TopK 3, whose 0.999 quantile is lower, 13.8).
		if chi2 > 16.27 {
			t.Errorf("%+v: chi-square %.2f over %v, want <= 16.27", p, chi2, counts)
		}
	}
}

func TestTemperatureSharpens(t *testing.T) {
	// At T = 0.25 the weights of ln(1..4) are p^4: 1 16 81 256 of 354, so
	// token 3 should get about 72%.
	logits := ln(1, 2, 3, 4)
	s := New(Params{Temperature: 0.25, Seed: 9}, 4)
	n := 0
	for range 10000 {
		if s.Sample(slices.Clone(logits)) == 3 {
			n++
		}
	}
	if f := float64(n) / 10000; math.Abs(f-256.0/354) > 0.02 {
		t.Errorf("T=0.25: token 3 frequency %.4f, want %.4f ± 0.02", f, 256.0/354)
	}
}

func sequence(p Params, logits []float32, n int) []int32 {
	s := New(p, len(logits))
	out := make([]int32, n)
	for i := range out {
		out[i] = s.Sample(slices.Clone(logits))
		s.Accept(out[i])
	}
	return out
}

func TestDeterminism(t *testing.T) {
	logits := make([]float32, 1000)
	rng := rand.New(rand.NewPCG(7, 8))
	for i := range logits {
		logits[i] = float32(rng.NormFloat64())
	}
	p := Params{Temperature: 1.2, TopK: 50, TopP: 0.9, RepeatPenalty: 1.1, Seed: 1}
	a := sequence(p, logits, 200)
	b := sequence(p, logits, 200)
	if !slices.Equal(a, b) {
		t.Errorf("same seed, different sequences:\n%v\n%v", a, b)
	}
	p.Seed = 2
	if c := sequence(p, logits, 200); slices.Equal(a, c) {
		t.Errorf("seeds 1 and 2 gave the same sequence %v", a)
	}

	// Reset restarts the same sequence.
	p.Seed = 1
	s := New(p, len(logits))
	for range 37 {
		s.Accept(s.Sample(slices.Clone(logits)))
	}
	s.Reset()
	for i, want := range a {
		got := s.Sample(slices.Clone(logits))
		s.Accept(got)
		if got != want {
			t.Fatalf("after Reset, token %d = %d, want %d", i, got, want)
		}
	}
}

func TestLogprobs(t *testing.T) {
	logits := ln(1, 2, 3, 4) // probabilities .1 .2 .3 .4
	for _, p := range []Params{
		{},
		{Temperature: 1},
		{Temperature: 0.3, TopK: 2},
		{Temperature: 1, TopP: 0.5},
		{Temperature: 2, MinP: 0.9},
	} {
		s := New(p, 4)
		if got := s.Logprob(0); !math.IsNaN(float64(got)) {
			t.Errorf("%+v: Logprob before Sample = %v, want NaN", p, got)
		}
		if got := s.TopLogprobs(nil, 2); len(got) != 0 {
			t.Errorf("%+v: TopLogprobs before Sample = %v, want none", p, got)
		}
		s.Sample(slices.Clone(logits))
		for id, want := range []float64{.1, .2, .3, .4} {
			if got := s.Logprob(int32(id)); math.Abs(float64(got)-math.Log(want)) > 1e-6 {
				t.Errorf("%+v: Logprob(%d) = %v, want %v", p, id, got, math.Log(want))
			}
		}
		got := s.TopLogprobs(make([]TokenLogprob, 0, 3), 3)
		want := []TokenLogprob{{3, float32(math.Log(.4))}, {2, float32(math.Log(.3))}, {1, float32(math.Log(.2))}}
		if !slices.EqualFunc(got, want, func(a, b TokenLogprob) bool {
			return a.ID == b.ID && math.Abs(float64(a.Logprob-b.Logprob)) < 1e-6
		}) {
			t.Errorf("%+v: TopLogprobs(3) = %v, want %v", p, got, want)
		}
		if got := s.Logprob(4); !math.IsNaN(float64(got)) {
			t.Errorf("%+v: Logprob(4) = %v, want NaN", p, got)
		}
	}

	// Bias and penalties shape the reported distribution; banned tokens
	// are left out of the top list.
	s := New(Params{LogitBias: map[int32]float32{3: negInf}, PresencePenalty: float32(math.Log(2))}, 4)
	s.Accept(1) // token 1: ln 2 - ln 2 = ln 1
	s.Sample(ln(1, 2, 3, 4))
	if got := s.Logprob(3); !math.IsInf(float64(got), -1) {
		t.Errorf("Logprob(banned) = %v, want -Inf", got)
	}
	if got, want := s.Logprob(2), math.Log(3.0/5); math.Abs(float64(got)-want) > 1e-6 {
		t.Errorf("Logprob(2) = %v, want %v", got, want)
	}
	top := s.TopLogprobs(nil, 10)
	if ids := []int32{top[0].ID, top[1].ID, top[2].ID}; len(top) != 3 || !slices.Equal(ids, []int32{2, 0, 1}) {
		t.Errorf("TopLogprobs(10) = %v, want ids 2, 0, 1 (ties to lower id, banned left out)", top)
	}
	s.Reset()
	if got := s.Logprob(2); !math.IsNaN(float64(got)) {
		t.Errorf("Logprob after Reset = %v, want NaN", got)
	}
}

func TestValidate(t *testing.T) {
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	tests := []struct {
		name   string
		p      Params
		nVocab int
		field  string // "" = valid
		msg    string // substring of the message
	}{
		{name: "zero value", p: Params{}, nVocab: 10},
		{name: "everything on", p: Params{Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05, RepeatPenalty: 1.1, RepeatLastN: -1,
			PresencePenalty: -2, FrequencyPenalty: 2, LogitBias: map[int32]float32{0: negInf, 9: 100}}, nVocab: 10},
		{name: "top-k above vocab", p: Params{TopK: 1000}, nVocab: 10},
		{name: "top-p 1", p: Params{TopP: 1}, nVocab: 10},
		{name: "min-p 1", p: Params{MinP: 1}, nVocab: 10},
		{name: "no vocab", p: Params{}, nVocab: 0, field: "n_vocab", msg: "got 0"},
		{name: "negative temperature", p: Params{Temperature: -0.5}, nVocab: 10, field: "temperature", msg: "got -0.5"},
		{name: "NaN temperature", p: Params{Temperature: nan}, nVocab: 10, field: "temperature", msg: "NaN"},
		{name: "Inf temperature", p: Params{Temperature: inf}, nVocab: 10, field: "temperature", msg: "+Inf"},
		{name: "negative top-k", p: Params{TopK: -1}, nVocab: 10, field: "top_k", msg: "got -1"},
		{name: "top-p above 1", p: Params{TopP: 1.5}, nVocab: 10, field: "top_p", msg: "(0, 1]"},
		{name: "negative top-p", p: Params{TopP: -0.1}, nVocab: 10, field: "top_p", msg: "got -0.1"},
		{name: "NaN top-p", p: Params{TopP: nan}, nVocab: 10, field: "top_p", msg: "NaN"},
		{name: "min-p above 1", p: Params{MinP: 2}, nVocab: 10, field: "min_p", msg: "got 2"},
		{name: "negative repeat penalty", p: Params{RepeatPenalty: -1}, nVocab: 10, field: "repeat_penalty", msg: "got -1"},
		{name: "window below -1", p: Params{RepeatLastN: -2}, nVocab: 10, field: "repeat_last_n", msg: "got -2"},
		{name: "Inf presence", p: Params{PresencePenalty: inf}, nVocab: 10, field: "presence_penalty", msg: "finite"},
		{name: "NaN frequency", p: Params{FrequencyPenalty: nan}, nVocab: 10, field: "frequency_penalty", msg: "finite"},
		{name: "bias id too big", p: Params{LogitBias: map[int32]float32{10: 1}}, nVocab: 10, field: "logit_bias", msg: "token id 10 out of range [0, 10)"},
		{name: "bias id negative", p: Params{LogitBias: map[int32]float32{-3: 1}}, nVocab: 10, field: "logit_bias", msg: "token id -3"},
		{name: "bias NaN", p: Params{LogitBias: map[int32]float32{4: nan}}, nVocab: 10, field: "logit_bias", msg: "token 4: bias must be finite or -Inf, got NaN"},
		{name: "bias +Inf", p: Params{LogitBias: map[int32]float32{4: inf}}, nVocab: 10, field: "logit_bias", msg: "+Inf"},
		{name: "lowest bad bias id named", p: Params{LogitBias: map[int32]float32{50: 1, 20: 1, 30: nan, 1: 0, 40: 1}}, nVocab: 10, field: "logit_bias", msg: "token id 20 "},
		{name: "first field named", p: Params{Temperature: -1, TopP: 3}, nVocab: 10, field: "temperature"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.Validate(tc.nVocab)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Validate(%d) = %v, want nil", tc.nVocab, err)
				}
				return
			}
			var pe *ParamError
			if !errors.As(err, &pe) || !errors.Is(err, ErrInvalidParams) {
				t.Fatalf("Validate(%d) = %v, want a *ParamError wrapping ErrInvalidParams", tc.nVocab, err)
			}
			if pe.Field != tc.field || !strings.Contains(err.Error(), tc.msg) || !strings.HasPrefix(err.Error(), "sample: invalid "+tc.field+": ") {
				t.Errorf("Validate(%d) = %q (field %q), want field %q and a message containing %q", tc.nVocab, err, pe.Field, tc.field, tc.msg)
			}
		})
	}
}

func TestNewPanicsOnInvalidParams(t *testing.T) {
	defer func() {
		if r := recover(); r == nil {
			t.Error("New(Params{TopK: -1}, 10) did not panic")
		}
	}()
	New(Params{TopK: -1}, 10)
}

func TestSamplePanicsOnWrongLength(t *testing.T) {
	defer func() {
		if r := recover(); r == nil {
			t.Error("Sample with 3 logits for a vocab of 4 did not panic")
		}
	}()
	New(Params{}, 4).Sample(make([]float32, 3))
}

func TestNewCopiesBias(t *testing.T) {
	bias := map[int32]float32{0: negInf}
	s := New(Params{LogitBias: bias}, 2)
	bias[0] = 0
	bias[1] = negInf
	if got := s.Sample([]float32{1, 0}); got != 1 {
		t.Errorf("Sample = %d after changing the caller's map, want 1", got)
	}
}

// benchLogits returns n logits shaped like a model's: a standard normal
// spread of 3, fixed by seed.
func benchLogits(n int) []float32 {
	rng := rand.New(rand.NewPCG(11, 12))
	l := make([]float32, n)
	for i := range l {
		l[i] = float32(3 * rng.NormFloat64())
	}
	return l
}

var benchParams = []struct {
	name string
	p    Params
}{
	{"greedy", Params{}},
	{"temp", Params{Temperature: 0.8}},
	{"temp+topk40+topp0.95", Params{Temperature: 0.8, TopK: 40, TopP: 0.95}},
	{"temp+topp0.95", Params{Temperature: 0.8, TopP: 0.95}},
	{"temp+minp0.05", Params{Temperature: 0.8, MinP: 0.05}},
	{"temp+topk40+topp0.95+minp0.05+penalties", Params{Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05,
		RepeatPenalty: 1.1, PresencePenalty: 0.5, FrequencyPenalty: 0.5}},
}

func TestSampleAllocs(t *testing.T) {
	const nVocab = 32000
	logits := benchLogits(nVocab)
	for _, bp := range benchParams {
		s := New(bp.p, nVocab)
		for i := range 100 { // fill the penalty window
			s.Accept(int32(i))
		}
		dst := make([]TokenLogprob, 0, 20)
		allocs := testing.AllocsPerRun(50, func() {
			id := s.Sample(logits)
			s.Accept(id)
			_ = s.Logprob(id)
			dst = s.TopLogprobs(dst[:0], 20)
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocs per Sample+Accept+Logprob+TopLogprobs, want 0", bp.name, allocs)
		}
	}
}

// BenchmarkSample measures one Sample over a 32000-token vocabulary. The
// penalty case applies its penalties to the same logits each time (Sample
// works in place), which changes them but not the work done.
func BenchmarkSample(b *testing.B) {
	const nVocab = 32000
	for _, bp := range benchParams {
		b.Run(bp.name, func(b *testing.B) {
			logits := benchLogits(nVocab)
			s := New(bp.p, nVocab)
			for i := range 64 {
				s.Accept(int32(i * 7))
			}
			b.ReportAllocs()
			for b.Loop() {
				s.Accept(s.Sample(logits))
			}
		})
	}
}

// BenchmarkTopLogprobs measures Logprob plus TopLogprobs(20) after a greedy
// Sample, the extra cost of a request with top_logprobs 20.
func BenchmarkTopLogprobs(b *testing.B) {
	const nVocab = 32000
	logits := benchLogits(nVocab)
	s := New(Params{}, nVocab)
	dst := make([]TokenLogprob, 0, 20)
	b.ReportAllocs()
	for b.Loop() {
		id := s.Sample(logits)
		_ = s.Logprob(id)
		dst = s.TopLogprobs(dst[:0], 20)
	}
}
