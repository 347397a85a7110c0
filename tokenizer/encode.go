package tokenizer

import (
	"fmt"
	"strings"
	"sync"
)

// scratch holds the buffers one Encode call works in; it is pooled so that
// steady-state encoding allocates little besides its result.
type scratch struct {
	frags, frags2 []frag
	found         []int32
	seen          []bool
	buf           []byte
	text          cpText
	ends, ends2   []int
	wordEnds      []int
	syms          []symbol
	heap          bigramHeap
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// Encode tokenizes text as llama.cpp's llama_tokenize does. With addSpecial,
// BOS and EOS are added as the vocabulary asks (see AddBOS, AddEOS). With
// parseSpecial, the text of control tokens ("<s>", "<|im_start|>") becomes
// their ids; without it only user-defined tokens are matched as such and
// control-token text is tokenized like any other. Text need not be valid
// UTF-8: SentencePiece vocabularies fall back to byte tokens, and BPE ones
// read each invalid byte as U+FFFD, as llama.cpp does.
func (t *Tokenizer) Encode(text string, addSpecial, parseSpecial bool) []int32 {
	sc := scratchPool.Get().(*scratch)
	defer scratchPool.Put(sc)
	out := make([]int32, 0, len(text)/4+4)
	if addSpecial && t.addBOS {
		out = append(out, t.bos)
	}
	prevSpecial := true
	for _, f := range t.partition(sc, text, parseSpecial) {
		if f.tok >= 0 {
			out = append(out, f.tok)
			prevSpecial = true
			continue
		}
		if t.spm {
			out = t.encodeSPM(sc, text[f.lo:f.hi], t.addSpacePrefix && prevSpecial, out)
		} else {
			out = t.encodeBPE(sc, text[f.lo:f.hi], out)
		}
		prevSpecial = false
	}
	if addSpecial && t.addEOS {
		out = append(out, t.eos)
	}
	return out
}

// symbol is a stretch of the text being merged, linked to its neighbours.
type symbol struct {
	start, n   int32
	prev, next int32
}

// bigram is a candidate merge of symbols left and right, size bytes long.
// Higher prio merges first; ties go to the leftmost.
type bigram struct {
	prio              float64
	left, right, size int32
}

type bigramHeap []bigram

func (h bigramHeap) before(i, j int) bool {
	return h[i].prio > h[j].prio || (h[i].prio == h[j].prio && h[i].left < h[j].left)
}

func (h *bigramHeap) push(b bigram) {
	*h = append(*h, b)
	s := *h
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if !s.before(i, p) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
}

func (h *bigramHeap) pop() bigram {
	s := *h
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	s = s[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(s) && s.before(l, m) {
			m = l
		}
		if r < len(s) && s.before(r, m) {
			m = r
		}
		if m == i {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return top
}

// splitSymbols cuts b into one symbol per UTF-8 sequence, as llama.cpp does
// (a lead byte announces the length; stray bytes stand alone).
func splitSymbols(syms []symbol, n int, lead func(i int) byte) []symbol {
	syms = syms[:0]
	for off := 0; off < n; {
		l := utf8Len(lead(off))
		if l > n-off {
			l = n - off
		}
		syms = append(syms, symbol{start: int32(off), n: int32(l), prev: int32(len(syms) - 1), next: int32(len(syms) + 1)})
		off += l
	}
	if len(syms) > 0 {
		syms[len(syms)-1].next = -1
	}
	return syms
}

// merge runs the merge loop: rank returns a candidate's priority, or false
// when the two symbols do not merge.
func merge(sc *scratch, syms []symbol, rank func(l, r *symbol) (float64, bool)) {
	h := sc.heap[:0]
	add := func(l, r int32) {
		if l < 0 || r < 0 {
			return
		}
		if p, ok := rank(&syms[l], &syms[r]); ok {
			h.push(bigram{prio: p, left: l, right: r, size: syms[l].n + syms[r].n})
		}
	}
	for i := 1; i < len(syms); i++ {
		add(int32(i-1), int32(i))
	}
	for len(h) > 0 {
		b := h.pop()
		l, r := &syms[b.left], &syms[b.right]
		if l.n == 0 || r.n == 0 || l.n+r.n != b.size {
			continue // stale
		}
		l.n += r.n
		r.n = 0
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = b.left
		}
		add(l.prev, b.left)
		add(b.left, l.next)
	}
	sc.heap = h
}

// encodeSPM is llama.cpp's llm_tokenizer_spm_session::tokenize on s with
// spaces escaped as ▁ (and one ▁ in front when prefix is set).
func (t *Tokenizer) encodeSPM(sc *scratch, s string, prefix bool, out []int32) []int32 {
	b := sc.buf[:0]
	if prefix {
		b = append(b, "▁"...)
	}
	for i := 0; i < len(s); i++ {
		if s[i] == ' ' {
			b = append(b, "▁"...)
		} else {
			b = append(b, s[i])
		}
	}
	sc.buf = b
	syms := splitSymbols(sc.syms, len(b), func(i int) byte { return b[i] })
	sc.syms = syms
	merge(sc, syms, func(l, r *symbol) (float64, bool) {
		id, ok := t.lookup(b[l.start : l.start+l.n+r.n])
		if !ok {
			return 0, false
		}
		if t.scores == nil {
			return 0, true
		}
		return float64(t.scores[id]), true
	})
	for i := int32(0); i >= 0 && len(syms) > 0; i = syms[i].next {
		piece := b[syms[i].start : syms[i].start+syms[i].n]
		if id, ok := t.lookup(piece); ok {
			out = append(out, id)
			continue
		}
		for _, c := range piece {
			out = t.appendByte(out, c)
		}
	}
	return out
}

// appendByte appends the byte-fallback token of c, or UNK when the
// vocabulary has none (llama.cpp aborts there).
func (t *Tokenizer) appendByte(out []int32, c byte) []int32 {
	if id := t.byteTokens[c]; id >= 0 {
		return append(out, id)
	}
	if t.unk >= 0 {
		return append(out, t.unk)
	}
	return out
}

func (t *Tokenizer) lookup(b []byte) (int32, bool) {
	id, ok := t.ids[string(b)]
	return id, ok
}

func (t *Tokenizer) findByteToken(c byte) int32 {
	if id, ok := t.ids[fmt.Sprintf("<0x%02X>", c)]; ok {
		return id
	}
	if t.spm {
		if id, ok := t.ids[string([]byte{c})]; ok {
			return id
		}
	}
	return -1
}

// encodeBPE is llama.cpp's llm_tokenizer_bpe_session::tokenize: split with
// the pre-tokenizer, map each chunk's bytes to their byte-level code points,
// merge by rank.
func (t *Tokenizer) encodeBPE(sc *scratch, s string, out []int32) []int32 {
	p := t.pre
	if p.rawBytes {
		s = strings.ReplaceAll(s, " ", "▁")
	}
	cps, fl := sc.text.cps[:0], sc.text.fl[:0]
	for i := 0; i < len(s); {
		r, n, ok := decodeCP(s[i:])
		if !ok {
			r = 0xFFFD
		}
		cps = append(cps, r)
		fl = append(fl, cpFlags(r))
		i += n
	}
	sc.text.cps, sc.text.fl = cps, fl
	if len(cps) == 0 {
		return out
	}

	ends, spare := append(sc.ends[:0], len(cps)), sc.ends2[:0]
	for _, split := range p.splits {
		spare = spare[:0]
		lo := 0
		for _, e := range ends {
			spare = split(&sc.text, lo, e, spare)
			lo = e
		}
		ends, spare = spare, ends
	}
	sc.ends, sc.ends2 = ends, spare

	b, wordEnds := sc.buf[:0], sc.wordEnds[:0]
	var u [4]byte
	lo := 0
	for _, e := range ends {
		for _, r := range cps[lo:e] {
			enc := appendCP(u[:0], r)
			if p.rawBytes {
				b = append(b, enc...)
				continue
			}
			for _, c := range enc {
				b = append(b, byteToEnc[c]...)
			}
		}
		wordEnds = append(wordEnds, len(b))
		lo = e
	}
	sc.buf, sc.wordEnds = b, wordEnds
	all := string(b)

	start := 0
	for _, end := range wordEnds {
		word := all[start:end]
		start = end
		if word == "" {
			continue
		}
		if p.ignoreMerges || (p.gemma4 && strings.Trim(word, "\n") == "") {
			if id, ok := t.ids[word]; ok {
				out = append(out, id)
				continue
			}
		}
		syms := splitSymbols(sc.syms, len(word), func(i int) byte { return word[i] })
		sc.syms = syms
		merge(sc, syms, func(l, r *symbol) (float64, bool) {
			rank, ok := t.ranks[[2]string{word[l.start : l.start+l.n], word[r.start : r.start+r.n]}]
			return -float64(rank), ok
		})
		for i := int32(0); i >= 0; i = syms[i].next {
			piece := word[syms[i].start : syms[i].start+syms[i].n]
			if id, ok := t.ids[piece]; ok {
				out = append(out, id)
				continue
			}
			for j := 0; j < len(piece); j++ {
				if p.rawBytes {
					if id := t.byteTokens[piece[j]]; id >= 0 {
						out = append(out, id)
					}
				} else if id, ok := t.ids[piece[j:j+1]]; ok {
					out = append(out, id)
				}
			}
		}
	}
	return out
}
