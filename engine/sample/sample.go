// Package sample picks the next token from a model's logits: repetition,
// presence and frequency penalties, logit bias, then either greedy decoding
// or temperature, top-k, top-p and min-p followed by a seeded random draw.
//
// A [Sampler] belongs to one sequence and is used from one goroutine. It
// allocates all of its scratch space in [New], sized to the vocabulary, so
// [Sampler.Sample] does not allocate.
//
// # The chain
//
// Sample applies, in this order:
//
//  1. penalties over the last [Params.RepeatLastN] accepted tokens: the
//     repetition penalty (llama.cpp: l > 0 ? l/p : l*p), then
//     l -= frequency*count + presence*(count > 0) (OpenAI);
//  2. logit bias (added; -Inf bans a token);
//  3. if Temperature is 0, greedy: the largest logit, ties to the lowest id;
//  4. otherwise temperature (logits are divided by it), top-k, top-p, min-p,
//     and a draw from the renormalized remaining distribution.
//
// Temperature comes first, as in vLLM and Hugging Face transformers, so top-p
// and min-p act on the distribution the token is drawn from. llama.cpp's
// default chain runs top-k, top-p and min-p before temperature; top-k gives
// the same set either way, top-p and min-p do not. The penalties come before
// the bias, so a bias is never scaled by the repetition penalty; llama.cpp
// applies the bias first, which differs only in that respect.
//
// [Sampler.Logprob] and [Sampler.TopLogprobs] report log probabilities for
// the API's logprobs fields from the logits after penalties and bias, at
// temperature 1 and before truncation.
//
// Ties between equal logits are broken towards the lower token id everywhere
// (greedy, top-k, top-p, top logprobs), so results never depend on the order
// of internal data structures.
package sample

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// seed2 is the second half of the 128-bit PCG seed; any constant works (this
// one is the 64-bit golden ratio). Changing it changes every seeded sequence.
const seed2 = 0x9e3779b97f4a7c15

// Sampler samples the tokens of one sequence. It is not safe for concurrent
// use. Create it with [New].
type Sampler struct {
	p       Params
	nVocab  int
	topK    int     // 0: off
	topP    float64 // 0: off
	minP    float32 // 0: off
	lnMinP  float64 // ln(MinP); -Inf when off
	invT    float64 // 1/Temperature
	penalty bool    // any penalty on
	bias    []tokenBias

	src rand.PCG

	// Penalty history. counts[id] is the number of times id occurs in the
	// window. With a finite window, ring holds its tokens (len <= window,
	// head is the oldest once full); with window -1, seen lists each
	// distinct token once, in first-seen order.
	window int
	counts []int32
	ring   []int32
	head   int
	seen   []int32

	// Scratch, nVocab long: candidate ids and their weights indexed by id;
	// the mass of each top-p bucket (see truncate.go).
	idx  []int32
	w    []float32
	mass [nBuckets]float64

	// The last Sample's processed logits, for Logprob and TopLogprobs.
	last  []float32
	lse   float64 // log-sum-exp of last, valid if lseOK
	lseOK bool
}

type tokenBias struct {
	id   int32
	bias float32
}

// New returns a Sampler for a vocabulary of nVocab tokens. It panics if
// p.Validate(nVocab) fails: validate request parameters first.
//
// It allocates 8 bytes per vocabulary entry of scratch, plus 4 more when a
// penalty is on; nothing else is allocated while sampling.
func New(p Params, nVocab int) *Sampler {
	if err := p.Validate(nVocab); err != nil {
		panic(err)
	}
	s := &Sampler{
		p:      p,
		nVocab: nVocab,
		idx:    make([]int32, nVocab),
		w:      make([]float32, nVocab),
	}
	s.p.LogitBias = nil // copied into s.bias below
	if p.TopK > 0 && p.TopK < nVocab {
		s.topK = p.TopK
	}
	if p.TopP > 0 && p.TopP < 1 {
		s.topP = float64(p.TopP)
	}
	s.minP = p.MinP
	s.lnMinP = math.Inf(-1)
	if p.MinP > 0 {
		s.lnMinP = math.Log(float64(p.MinP))
	}
	if p.Temperature > 0 {
		s.invT = 1 / float64(p.Temperature)
	}
	if len(p.LogitBias) > 0 {
		s.bias = make([]tokenBias, 0, len(p.LogitBias))
		for id, b := range p.LogitBias {
			s.bias = append(s.bias, tokenBias{id, b})
		}
		slices.SortFunc(s.bias, func(a, b tokenBias) int { return int(a.id) - int(b.id) })
	}
	s.penalty = (p.RepeatPenalty != 0 && p.RepeatPenalty != 1) ||
		p.PresencePenalty != 0 || p.FrequencyPenalty != 0
	if s.penalty {
		s.window = p.RepeatLastN
		if s.window == 0 {
			s.window = DefaultRepeatLastN
		}
		s.counts = make([]int32, nVocab)
		if s.window > 0 {
			// The ring grows by append up to the window, so a huge
			// RepeatLastN costs only as much memory as tokens accepted.
			s.ring = make([]int32, 0, min(s.window, 4096))
		}
	}
	s.Reset()
	return s
}

// Reset forgets the history and the last logits and reseeds the PRNG, so the
// Sampler behaves exactly as when New returned it.
func (s *Sampler) Reset() {
	s.src.Seed(s.p.Seed, seed2)
	for _, id := range s.ring {
		s.counts[id] = 0
	}
	for _, id := range s.seen {
		s.counts[id] = 0
	}
	s.ring = s.ring[:0]
	s.seen = s.seen[:0]
	s.head = 0
	s.last = nil
	s.lseOK = false
}

// Accept records token id in the penalty history. Sample does not record the
// token it returns: the caller accepts each token that joins the sequence,
// sampled or not. To penalize repetitions of the prompt, as llama.cpp does,
// accept the prompt tokens too; to penalize only generated text, as OpenAI's
// presence and frequency penalties are usually described, accept only
// those. Ids outside [0, nVocab) are ignored. When no penalty is on, Accept
// does nothing.
//
// Accept allocates only to grow the history, amortized: up to RepeatLastN
// tokens when that is above 4096, or up to nVocab distinct tokens when it is
// -1.
func (s *Sampler) Accept(id int32) {
	if !s.penalty || id < 0 || int(id) >= s.nVocab {
		return
	}
	if s.window < 0 {
		if s.counts[id] == 0 {
			s.seen = append(s.seen, id)
		}
		s.counts[id]++
		return
	}
	if len(s.ring) < s.window {
		s.ring = append(s.ring, id)
	} else {
		s.counts[s.ring[s.head]]--
		s.ring[s.head] = id
		s.head++
		if s.head == len(s.ring) {
			s.head = 0
		}
	}
	s.counts[id]++
}

// Sample returns the next token for the given logits, which must be nVocab
// long (it panics otherwise). It applies the chain described in the package
// documentation.
//
// Sample modifies logits in place: on return they hold the penalized and
// biased logits (before temperature), which [Sampler.Logprob] and
// [Sampler.TopLogprobs] read until the next Sample or Reset, so the caller
// must not change them in between. Without penalties or bias, logits are left
// unchanged.
//
// NaN logits are treated as -Inf. If every logit is -Inf (for example when
// the bias bans every token), Sample returns token 0.
//
// A greedy Sample draws nothing from the PRNG; any other Sample draws exactly
// one value, whatever the truncation leaves.
func (s *Sampler) Sample(logits []float32) int32 {
	if len(logits) != s.nVocab {
		panic(fmt.Sprintf("sample: got %d logits, want %d", len(logits), s.nVocab))
	}
	if s.penalty {
		s.applyPenalties(logits)
	}
	for _, b := range s.bias {
		logits[b.id] += b.bias
	}
	s.last = logits
	s.lseOK = false
	if s.p.Temperature == 0 {
		return argmax(logits)
	}
	return s.sampleTemp(logits)
}

// applyPenalties applies the repetition, frequency and presence penalties
// for every distinct token in the window, once per token.
func (s *Sampler) applyPenalties(logits []float32) {
	rp := s.p.RepeatPenalty
	if rp == 0 {
		rp = 1
	}
	freq, pres := s.p.FrequencyPenalty, s.p.PresencePenalty
	apply := func(id int32, c int32) {
		l := logits[id]
		if l > 0 {
			l /= rp
		} else {
			l *= rp
		}
		logits[id] = l - float32(c)*freq - pres
	}
	if s.window < 0 {
		for _, id := range s.seen {
			apply(id, s.counts[id])
		}
		return
	}
	// A token may occur several times in the ring: negate its count once
	// applied to mark it done, then restore the counts.
	for _, id := range s.ring {
		if c := s.counts[id]; c > 0 {
			apply(id, c)
			s.counts[id] = -c
		}
	}
	for _, id := range s.ring {
		if c := s.counts[id]; c < 0 {
			s.counts[id] = -c
		}
	}
}

// argmax returns the index of the largest value, the lowest index among
// equal ones, ignoring NaN; 0 if there is none.
func argmax(x []float32) int32 {
	m, ok := maxValue(x)
	if !ok {
		return 0
	}
	for i, v := range x {
		if v == m {
			return int32(i)
		}
	}
	return 0
}

// maxValue returns the largest value of x, ignoring NaN and -Inf, and
// whether there is one.
func maxValue(x []float32) (float32, bool) {
	// Four independent maxima hide the compare latency.
	negInf := float32(math.Inf(-1))
	m0, m1, m2, m3 := negInf, negInf, negInf, negInf
	i := 0
	for ; i+4 <= len(x); i += 4 {
		v := x[i : i+4 : i+4]
		if v[0] > m0 {
			m0 = v[0]
		}
		if v[1] > m1 {
			m1 = v[1]
		}
		if v[2] > m2 {
			m2 = v[2]
		}
		if v[3] > m3 {
			m3 = v[3]
		}
	}
	for ; i < len(x); i++ {
		if x[i] > m0 {
			m0 = x[i]
		}
	}
	m := max(m0, m1, m2, m3) // none is NaN
	return m, m > negInf
}

// sampleTemp is the temperature path: truncation, then a draw in proportion
// to the kept weights.
func (s *Sampler) sampleTemp(logits []float32) int32 {
	u := s.uniform()
	kept, sum := s.truncate(logits)
	if len(kept) == 0 {
		return 0
	}
	w := s.w
	r := u * sum
	var acc float64
	for _, id := range kept {
		acc += float64(w[id])
		if r < acc {
			return id
		}
	}
	// Rounding: r can reach acc only when the tail weights are tiny.
	for i := len(kept) - 1; i > 0; i-- {
		if w[kept[i]] > 0 {
			return kept[i]
		}
	}
	return kept[0]
}

// uniform returns a float64 in [0, 1) from the PRNG, as rand.Float64 does.
func (s *Sampler) uniform() float64 {
	return float64(s.src.Uint64()<<11>>11) / (1 << 53)
}
