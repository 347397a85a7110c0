package sample

import "math"

// TokenLogprob is a token id and its log probability.
type TokenLogprob struct {
	ID      int32
	Logprob float32
}

// Logprob returns the natural log probability of token id under the last
// Sample's logits, for reporting (OpenAI logprobs). Call it before the logits
// passed to Sample are changed. It returns NaN if Sample has not run since
// New or Reset, or if id is out of range.
//
// The distribution is the softmax, over the whole vocabulary, of the logits
// after penalties and logit bias, at temperature 1, before top-k, top-p and
// min-p. Without penalties or bias that is the model's raw distribution,
// which is what vLLM reports by default. It does not depend on temperature or
// truncation, so the same text gets the same logprobs under any sampling
// settings; it is not the distribution the token was drawn from unless
// Temperature is 1 and nothing is truncated. A token banned by the bias has
// logprob -Inf.
//
// The first Logprob or TopLogprobs after a Sample costs one pass over the
// vocabulary with an exp per token (free when Temperature is 1 without
// top-k, as Sample already summed the same terms); later ones are cheap.
func (s *Sampler) Logprob(id int32) float32 {
	if s.last == nil || id < 0 || int(id) >= len(s.last) {
		return float32(math.NaN())
	}
	l := s.last[id]
	if !(l > float32(math.Inf(-1))) {
		return float32(math.Inf(-1)) // -Inf or NaN logit
	}
	return float32(float64(l) - s.logSumExp())
}

// TopLogprobs appends to dst the n most likely tokens of the last Sample's
// distribution, most likely first, ties to the lower id, and returns the
// extended slice. It appends fewer than n when fewer tokens have a finite
// logprob, and nothing if Sample has not run since New or Reset. It does not
// allocate if dst has room for n more entries.
//
// The distribution is the one [Sampler.Logprob] uses: after penalties and
// bias, temperature 1, before truncation.
func (s *Sampler) TopLogprobs(dst []TokenLogprob, n int) []TokenLogprob {
	if s.last == nil || n <= 0 {
		return dst
	}
	// Select the ids in s.idx (free between Samples), then sort them.
	h := selectTopK(s.idx[:0], s.last, n)
	heapSortBestFirst(h, s.last)
	lse := s.logSumExp()
	for _, id := range h {
		dst = append(dst, TokenLogprob{ID: id, Logprob: float32(float64(s.last[id]) - lse)})
	}
	return dst
}

// logSumExp returns log(sum(exp(l))) over the finite logits of the last
// Sample, computing it once per Sample.
func (s *Sampler) logSumExp() float64 {
	if s.lseOK {
		return s.lse
	}
	negInf := float32(math.Inf(-1))
	m := negInf
	for _, l := range s.last {
		if l > m {
			m = l
		}
	}
	var z float64
	mf := float64(m)
	for _, l := range s.last {
		if l > negInf {
			if float64(l) == mf {
				z++
			} else {
				z += fastExp(float64(l) - mf)
			}
		}
	}
	s.lse, s.lseOK = mf+math.Log(z), true
	return s.lse
}
