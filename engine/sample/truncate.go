package sample

import "math"

// Truncation: temperature, top-k, top-p, min-p.
//
// Every kept token gets a weight w = exp(d), d = (l - m)/T, where l is its
// logit and m the largest logit, so the best token has d = 0 and weight 1.
// Weights are stored as float32 in s.w, indexed by token id, and summed in
// float64. The draw only needs weights proportional to the probabilities.
//
// Without top-k there is no small candidate set, so top-p must not sort the
// vocabulary. It buckets tokens by d (bucketsPerNat buckets per unit of d,
// down to -nBuckets/bucketsPerNat), finds the bucket where the mass,
// taken from the best bucket down, reaches TopP, keeps every bucket above
// it, and sorts only that one bucket, and that only as far as needed. Buckets
// are monotone in the logit, so the result is the same set a full sort would
// give (up to the order in which the float64 mass is summed).
//
// Sample does not allocate: every slice used here is the Sampler's.

const (
	bucketsPerNat = 8
	nBuckets      = 256 // d down to -32; the last bucket holds all below
)

// bucket returns d's bucket: 0 for d in (-1/8, 0], then one per 1/8.
func bucket(d float64) int {
	x := -d * bucketsPerNat
	if x >= nBuckets-1 { // also +Inf
		return nBuckets - 1
	}
	return int(x)
}

// logWeight returns d = (l - m)/T for a logit l <= m.
func (s *Sampler) logWeight(l, m float32) float64 {
	if l == m {
		return 0 // also when m is +Inf
	}
	return (float64(l) - float64(m)) * s.invT
}

// truncate applies temperature, top-k, top-p and min-p. It returns the ids
// that may be drawn, in no particular order, and the sum of their weights,
// and leaves their weights in s.w[id]. Both live in the Sampler's scratch.
func (s *Sampler) truncate(logits []float32) (kept []int32, sum float64) {
	if s.topK > 0 {
		kept = s.truncateTopK(logits)
	} else {
		m, ok := maxValue(logits)
		if !ok {
			return nil, 0
		}
		if s.topP == 0 {
			return s.truncateAll(logits, m)
		}
		kept = s.truncateTopP(logits, m)
	}
	for _, id := range kept {
		sum += float64(s.w[id])
	}
	return kept, sum
}

// truncateAll handles temperature and min-p alone, in a single pass: min-p is
// decided on d, before computing any weight. It returns the kept ids and the
// sum of their weights.
func (s *Sampler) truncateAll(logits []float32, m float32) ([]int32, float64) {
	negInf := float32(math.Inf(-1))
	kept := s.idx[:0]
	var z float64
	for i, l := range logits {
		if !(l > negInf) { // -Inf or NaN
			continue
		}
		d := s.logWeight(l, m)
		if d < s.lnMinP {
			continue
		}
		w := float32(fastExp(d))
		s.w[i] = w
		z += float64(w)
		kept = append(kept, int32(i))
	}
	if s.p.Temperature == 1 && s.minP == 0 {
		// z sums exp(l - m) over every finite logit: Logprob needs it.
		s.lse, s.lseOK = float64(m)+math.Log(z), true
	}
	return kept, z
}

// truncateTopK handles top-k, then top-p and min-p on the sorted top k.
func (s *Sampler) truncateTopK(logits []float32) []int32 {
	cand := selectTopK(s.idx[:0], logits, s.topK)
	if len(cand) == 0 {
		return nil
	}
	heapSortBestFirst(cand, logits)
	m := logits[cand[0]]
	var z float64
	for _, id := range cand {
		w := float32(fastExp(s.logWeight(logits[id], m)))
		s.w[id] = w
		z += float64(w)
	}
	// top-p and min-p each keep a prefix of the sorted candidates.
	n := len(cand)
	if s.topP > 0 {
		target, cum := s.topP*z, 0.0
		for i, id := range cand {
			cum += float64(s.w[id])
			if cum >= target {
				n = i + 1
				break
			}
		}
	}
	for i := 1; i < n; i++ {
		if s.logWeight(logits[cand[i]], m) < s.lnMinP {
			n = i
			break
		}
	}
	return cand[:n]
}

// truncateTopP handles top-p without top-k, then min-p. m is the largest
// logit.
func (s *Sampler) truncateTopP(logits []float32, m float32) []int32 {
	negInf := float32(math.Inf(-1))
	clear(s.mass[:])
	var z float64
	for i, l := range logits {
		if !(l > negInf) {
			continue
		}
		d := s.logWeight(l, m)
		w := float32(fastExp(d))
		s.w[i] = w
		z += float64(w)
		s.mass[bucket(d)] += float64(w)
	}
	if s.p.Temperature == 1 {
		s.lse, s.lseOK = float64(m)+math.Log(z), true
	}

	// The cut falls in bucket cut: the buckets before it hold less than
	// target. If rounding leaves the total short of target, keep all.
	target := s.topP * z
	cut, before := nBuckets, 0.0
	for b, mass := range s.mass {
		if before+mass >= target {
			cut = b
			break
		}
		before += mass
	}

	// Ids in buckets before cut go to the front of idx, those in cut to
	// the back; there is room, as each id goes to at most one of them.
	front, back := 0, len(s.idx)
	for i, l := range logits {
		if !(l > negInf) {
			continue
		}
		switch b := bucket(s.logWeight(l, m)); {
		case b < cut:
			s.idx[front] = int32(i)
			front++
		case b == cut:
			back--
			s.idx[back] = int32(i)
		}
	}
	n := front
	if cut < nBuckets {
		n += copy(s.idx[front:], popTopP(s.idx[back:], logits, s.w, target-before))
	}
	kept := s.idx[:n]

	if s.minP > 0 {
		k := 0
		for _, id := range kept {
			if s.logWeight(logits[id], m) >= s.lnMinP {
				kept[k] = id
				k++
			}
		}
		kept = kept[:k]
	}
	return kept
}

// fastExp returns e^x for x <= 0 with a relative error below 2e-9, in about
// half the time of math.Exp: Cody-Waite reduction x = n ln2 + r,
// |r| <= ln2/2, and Cephes' expf polynomial for e^r evaluated in float64.
// It returns 0 below -708, where 2^n would leave the normal range.
func fastExp(x float64) float64 {
	if !(x >= -708) {
		return 0
	}
	n := int(x*math.Log2E - 0.5) // round half away from zero, x <= 0
	r := x - float64(n)*math.Ln2
	p := (((((1.9875691500e-4*r+1.3981999507e-3)*r+8.3334519073e-3)*r+
		4.1665795894e-2)*r+1.6666665459e-1)*r+5.0000001201e-1)*(r*r) + r + 1
	return p * math.Float64frombits(uint64(n+1023)<<52)
}
