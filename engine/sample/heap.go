package sample

import "math"

// Binary heaps of token ids ordered by key[id], with ties broken towards the
// lower id: a is better than b if key[a] > key[b], or they are equal and
// a < b. They are written out for the two directions instead of taking a
// comparison func so that nothing escapes and the compares inline.

func better(key []float32, a, b int32) bool {
	ka, kb := key[a], key[b]
	return ka > kb || (ka == kb && a < b)
}

// selectTopK appends to h[:0] the k best ids of logits that are not -Inf or
// NaN, using h as a heap with the worst at the root, and returns it. The
// result is in heap order only if it holds k ids.
func selectTopK(h []int32, logits []float32, k int) []int32 {
	negInf := float32(math.Inf(-1))
	h = h[:0]
	i := 0
	for ; i < len(logits) && len(h) < k; i++ {
		if logits[i] > negInf {
			h = append(h, int32(i))
		}
	}
	if len(h) < k {
		return h
	}
	heapifyWorst(h, logits)
	root := logits[h[0]]
	for ; i < len(logits); i++ {
		// Ids arrive in increasing order, so an equal logit is worse than
		// the root: only a strictly larger one gets in.
		if logits[i] > root {
			h[0] = int32(i)
			siftDownWorst(h, logits, 0)
			root = logits[h[0]]
		}
	}
	return h
}

func heapifyWorst(h []int32, key []float32) {
	for i := len(h)/2 - 1; i >= 0; i-- {
		siftDownWorst(h, key, i)
	}
}

// siftDownWorst restores the worst-at-root heap property below i.
func siftDownWorst(h []int32, key []float32, i int) {
	n := len(h)
	for {
		c := 2*i + 1
		if c >= n {
			return
		}
		if c+1 < n && better(key, h[c], h[c+1]) {
			c++ // the worse child
		}
		if !better(key, h[i], h[c]) {
			return
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
}

// heapSortBestFirst sorts h best first.
func heapSortBestFirst(h []int32, key []float32) {
	heapifyWorst(h, key)
	for n := len(h) - 1; n > 0; n-- {
		h[0], h[n] = h[n], h[0]
		siftDownWorst(h[:n], key, 0)
	}
}

// siftDownBest restores the best-at-root heap property below i.
func siftDownBest(h []int32, key []float32, i int) {
	n := len(h)
	for {
		c := 2*i + 1
		if c >= n {
			return
		}
		if c+1 < n && better(key, h[c+1], h[c]) {
			c++ // the better child
		}
		if !better(key, h[c], h[i]) {
			return
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
}

// popTopP takes ids from h best first until their weights w[id] sum to at
// least target, and returns them (a suffix of h, best last). It sorts only as
// far as it pops: O(len(h) + m log len(h)) for m ids returned.
func popTopP(h []int32, key, w []float32, target float64) []int32 {
	for i := len(h)/2 - 1; i >= 0; i-- {
		siftDownBest(h, key, i)
	}
	var cum float64
	for n := len(h) - 1; n >= 0; n-- {
		cum += float64(w[h[0]])
		h[0], h[n] = h[n], h[0]
		if cum >= target {
			return h[n:]
		}
		siftDownBest(h[:n], key, 0)
	}
	return h
}
