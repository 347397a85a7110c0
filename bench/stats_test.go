package bench

import (
	"math"
	"slices"
	"testing"
	"time"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9*max(1, math.Abs(b)) }

func TestSummarize(t *testing.T) {
	d := summarize([]float64{4, 1, 3, 2})
	// ranks 0..3: p50 at 1.5 → 2.5, p90 at 2.7 → 3.7, p99 at 2.97 → 3.97
	want := Dist{N: 4, Mean: 2.5, Min: 1, P50: 2.5, P90: 3.7, P99: 3.97, Max: 4}
	if !near(d.P90, want.P90) || !near(d.P99, want.P99) || d.N != want.N || d.Mean != want.Mean || d.P50 != want.P50 || d.Min != want.Min || d.Max != want.Max {
		t.Errorf("summarize = %+v, want %+v", d, want)
	}
	if d := summarize(nil); d != (Dist{}) {
		t.Errorf("summarize(nil) = %+v", d)
	}
	if d := summarize([]float64{7}); d.P50 != 7 || d.P99 != 7 {
		t.Errorf("summarize([7]) = %+v", d)
	}
	xs := make([]float64, 101)
	for i := range xs {
		xs[i] = float64(100 - i)
	}
	if d := summarize(xs); d.P50 != 50 || d.P90 != 90 || d.P99 != 99 {
		t.Errorf("summarize(0..100) = %+v", d)
	}
}

func msd(xs ...float64) []time.Duration {
	out := make([]time.Duration, len(xs))
	for i, x := range xs {
		out[i] = time.Duration(x * float64(time.Millisecond))
	}
	return out
}

func TestLatencies(t *testing.T) {
	cases := []struct {
		name    string
		r       record
		itl     []float64
		gaps    []float64
		tokens  int
		rate    float64 // stream tokens/s, 0 if none
		noUsage bool
	}{
		{
			name:   "a token per chunk",
			r:      record{chunks: msd(100, 110, 120, 130), usage: true, completionTokens: 4, end: msd(135)[0]},
			itl:    []float64{10, 10, 10},
			gaps:   []float64{10, 10, 10},
			tokens: 4,
			rate:   3 / 0.030,
		},
		{
			name:   "two tokens per chunk, from the final usage",
			r:      record{chunks: msd(100, 130, 160), usage: true, completionTokens: 6, end: msd(170)[0]},
			itl:    []float64{15, 15},
			gaps:   []float64{30, 30},
			tokens: 6,
			rate:   4 / 0.060,
		},
		{
			name: "exact per-chunk counts; an empty chunk's gap goes to the next",
			r: record{chunks: msd(100, 130, 140, 160), chunkTokens: []int{1, 3, 0, 2},
				usage: true, completionTokens: 6, end: msd(170)[0]},
			itl:    []float64{10, 10, 10, 15, 15},
			gaps:   []float64{30, 10, 20},
			tokens: 6,
			rate:   5 / 0.060,
		},
		{
			name:    "no usage: a chunk is a token",
			r:       record{chunks: msd(50, 70, 90), end: msd(95)[0]},
			itl:     []float64{20, 20},
			gaps:    []float64{20, 20},
			tokens:  3,
			rate:    2 / 0.040,
			noUsage: true,
		},
		{
			name:   "one chunk: no rate",
			r:      record{chunks: msd(50), usage: true, completionTokens: 1, end: msd(55)[0]},
			tokens: 1,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var l latencies
			l.add(&tc.r)
			slices.Sort(l.itl)
			if !slices.EqualFunc(l.itl, tc.itl, near) {
				t.Errorf("ITL %v, want %v", l.itl, tc.itl)
			}
			if !slices.EqualFunc(l.gaps, tc.gaps, near) {
				t.Errorf("gaps %v, want %v", l.gaps, tc.gaps)
			}
			if l.completionTokens != tc.tokens {
				t.Errorf("tokens %d, want %d", l.completionTokens, tc.tokens)
			}
			if tc.rate == 0 && len(l.streamRates) != 0 || tc.rate != 0 && (len(l.streamRates) != 1 || !near(l.streamRates[0], tc.rate)) {
				t.Errorf("stream rate %v, want %v", l.streamRates, tc.rate)
			}
			if l.ttft[0] != ms(tc.r.chunks[0]) || l.e2e[0] != ms(tc.r.end) {
				t.Errorf("TTFT %v E2E %v", l.ttft, l.e2e)
			}
			if (l.usageMissing == 1) != tc.noUsage {
				t.Errorf("usageMissing %d", l.usageMissing)
			}
		})
	}
}

func TestResultAdd(t *testing.T) {
	records := []record{
		{sent: true, chunks: msd(100, 110), usage: true, completionTokens: 2, promptTokens: 10, end: msd(120)[0]},
		{sent: true, chunks: msd(200, 220), usage: true, completionTokens: 2, promptTokens: 12, end: msd(230)[0]},
		{sent: true, kind: KindRateLimited, err: "request 2: HTTP 429"},
		{sent: true, kind: "http_500", err: "request 3: HTTP 500"},
		{sent: true, kind: kindCancelled, err: "request 4: canceled"},
		{},
	}
	var res Result
	res.add(records, 2*time.Second)
	if res.Sent != 5 || res.Completed != 2 || res.Errors != 1 || res.RateLimited != 1 || res.Cancelled != 1 {
		t.Errorf("counts: %+v", res)
	}
	if res.CompletionTokens != 4 || res.OutputTokensPerSecond != 2 || res.RequestsPerSecond != 1 || res.ServerPromptTokens != 11 || res.TokensPerChunk != 1 {
		t.Errorf("throughput: %+v", res)
	}
	if res.TTFT.P50 != 150 || res.E2E.Max != 230 {
		t.Errorf("TTFT %+v E2E %+v", res.TTFT, res.E2E)
	}
	if len(res.ErrorSamples) != 2 || res.ErrorKinds["http_500"] != 1 || res.ErrorKinds[KindRateLimited] != 1 {
		t.Errorf("errors: %v %v", res.ErrorKinds, res.ErrorSamples)
	}
}
