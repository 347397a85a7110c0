package bench

import (
	"math"
	"slices"
	"time"
)

// A Dist summarizes a sample: count, mean, extremes and percentiles.
// Percentiles interpolate linearly between the two nearest ranks (numpy's
// default, as vLLM's benchmark reports them). A Dist of no values is all
// zeros.
type Dist struct {
	N    int     `json:"n"`
	Mean float64 `json:"mean"`
	Min  float64 `json:"min"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
}

// summarize sorts xs in place and summarizes them.
func summarize(xs []float64) Dist {
	if len(xs) == 0 {
		return Dist{}
	}
	slices.Sort(xs)
	sum := 0.0
	for _, x := range xs {
		sum += x
	}
	return Dist{
		N:    len(xs),
		Mean: sum / float64(len(xs)),
		Min:  xs[0],
		P50:  percentile(xs, 50),
		P90:  percentile(xs, 90),
		P99:  percentile(xs, 99),
		Max:  xs[len(xs)-1],
	}
}

// percentile returns the p-th percentile of sorted xs, interpolating
// between the closest ranks: rank p/100·(n−1), counting from 0.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	r := p / 100 * float64(len(sorted)-1)
	i := int(math.Floor(r))
	if i >= len(sorted)-1 {
		return sorted[len(sorted)-1]
	}
	f := r - float64(i)
	return sorted[i] + f*(sorted[i+1]-sorted[i])
}

// A record is what one request saw: when each content chunk arrived and
// the token counts the server reported.
type record struct {
	sent   bool
	start  time.Time
	chunks []time.Duration // arrival of each chunk with content, since start
	// chunkTokens[i] is chunk i's token count, from the cumulative
	// usage the server put on every content chunk (vLLM's
	// continuous_usage_stats); nil if some content chunk had none.
	chunkTokens      []int
	usage            bool // the stream reported usage
	promptTokens     int
	completionTokens int
	end              time.Duration // when the stream (or the failure) ended, since start
	kind             string        // "" if it succeeded, else an error kind (see Result.ErrorKinds) or kindCancelled
	err              string        // the failure, for Result.ErrorSamples
}

// tokens returns the number of tokens in each content chunk and their
// total, and whether the counts came from the server.
//
// A chunk may carry several tokens (a server may coalesce, or send held
// back text late). With usage on every chunk the counts are exact. With
// usage only at the end (the usual include_usage), the stream's
// completion_tokens is spread evenly over its chunks. Without usage,
// every chunk counts as one token.
func (r *record) tokens() (per []float64, total float64, fromServer bool) {
	per = make([]float64, len(r.chunks))
	switch {
	case r.chunkTokens != nil:
		for i, k := range r.chunkTokens {
			per[i] = float64(k)
			total += float64(k)
		}
		if r.usage {
			total = float64(r.completionTokens)
		}
		return per, total, true
	case r.usage && len(r.chunks) > 0:
		k := float64(r.completionTokens) / float64(len(r.chunks))
		for i := range per {
			per[i] = k
		}
		return per, float64(r.completionTokens), true
	case r.usage:
		return per, float64(r.completionTokens), true
	default:
		for i := range per {
			per[i] = 1
		}
		return per, float64(len(r.chunks)), false
	}
}

// latencies holds the samples the figures are computed from, in
// milliseconds (tokens per second for streamRates).
type latencies struct {
	ttft, itl, gaps, e2e, streamRates []float64
	completionTokens, promptTokens    int
	chunks                            int
	usageMissing                      int
}

// add adds a successful stream's samples.
//
//   - TTFT: from sending the request to the first chunk with content.
//   - Chunk gap: between successive content chunks of the stream.
//   - ITL (inter-token latency): a chunk gap divided by the tokens of
//     the later chunk (see record.tokens), counted once per token, so
//     that a chunk of three tokens after 30 ms is three 10 ms samples.
//     A chunk of zero tokens adds its gap to the next chunk's.
//   - E2E: from sending the request to the end of the stream.
//   - Stream tokens/s: the tokens after the first chunk divided by the
//     time from the first content chunk to the last.
func (l *latencies) add(r *record) {
	per, total, fromServer := r.tokens()
	if !fromServer {
		l.usageMissing++
	}
	l.completionTokens += int(math.Round(total))
	l.promptTokens += r.promptTokens
	l.chunks += len(r.chunks)
	l.e2e = append(l.e2e, ms(r.end))
	if len(r.chunks) == 0 {
		return
	}
	l.ttft = append(l.ttft, ms(r.chunks[0]))
	var pending time.Duration
	for i := 1; i < len(r.chunks); i++ {
		gap := r.chunks[i] - r.chunks[i-1]
		l.gaps = append(l.gaps, ms(gap))
		k := per[i]
		if k <= 0 {
			pending += gap
			continue
		}
		gap += pending
		pending = 0
		if r.chunkTokens == nil {
			l.itl = append(l.itl, ms(gap)/k) // even spread: every chunk weighs the same
			continue
		}
		for range int(k) {
			l.itl = append(l.itl, ms(gap)/k)
		}
	}
	decode := r.chunks[len(r.chunks)-1] - r.chunks[0]
	if after := total - per[0]; len(r.chunks) > 1 && decode > 0 && after > 0 {
		l.streamRates = append(l.streamRates, after/decode.Seconds())
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
