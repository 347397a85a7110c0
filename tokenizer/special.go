package tokenizer

import (
	"sort"
	"strings"
)

// trie is a byte trie over the special tokens' texts. Node 0 is the root.
type trie struct {
	root  [256]int32 // child of the root per byte; 0 means none
	nodes []trieNode
	edges []trieEdge
}

type trieNode struct {
	first, n int32 // edges[first:first+n], sorted by byte
	value    int32 // index into Tokenizer.specials, -1 if no text ends here
}

type trieEdge struct {
	b     byte
	child int32
}

func buildTrie(keys []string) trie {
	// Build with maps, then flatten.
	type bnode struct {
		next  map[byte]int
		value int32
	}
	b := []bnode{{value: -1}}
	for k, s := range keys {
		cur := 0
		for i := 0; i < len(s); i++ {
			if b[cur].next == nil {
				b[cur].next = map[byte]int{}
			}
			nx, ok := b[cur].next[s[i]]
			if !ok {
				nx = len(b)
				b = append(b, bnode{value: -1})
				b[cur].next[s[i]] = nx
			}
			cur = nx
		}
		if b[cur].value < 0 {
			b[cur].value = int32(k)
		}
	}
	var t trie
	t.nodes = make([]trieNode, len(b))
	for i, n := range b {
		t.nodes[i] = trieNode{first: int32(len(t.edges)), n: int32(len(n.next)), value: n.value}
		bs := make([]int, 0, len(n.next))
		for c := range n.next {
			bs = append(bs, int(c))
		}
		sort.Ints(bs)
		for _, c := range bs {
			t.edges = append(t.edges, trieEdge{b: byte(c), child: int32(n.next[byte(c)])})
			if i == 0 {
				t.root[c] = int32(n.next[byte(c)])
			}
		}
	}
	return t
}

func (t *trie) child(node int32, c byte) int32 {
	if node == 0 {
		return t.root[c]
	}
	n := t.nodes[node]
	for _, e := range t.edges[n.first : n.first+n.n] {
		if e.b == c {
			return e.child
		}
		if e.b > c {
			break
		}
	}
	return 0
}

// buildSpecials collects the tokens llama.cpp's tokenizer_st_partition looks
// for: control, user-defined and unknown ones, longest text first.
func (t *Tokenizer) buildSpecials() {
	for id, a := range t.attrs {
		if a&(attrControl|attrUserDefined|attrUnknown) != 0 {
			t.specials = append(t.specials, int32(id))
		}
	}
	sort.SliceStable(t.specials, func(i, j int) bool {
		return len(t.texts[t.specials[i]]) > len(t.texts[t.specials[j]])
	})
	keys := make([]string, len(t.specials))
	for i, id := range t.specials {
		keys[i] = t.texts[id]
	}
	t.trie = buildTrie(keys)
}

// frag is a piece of the input: a special token (tok >= 0) or the text
// s[lo:hi] still to tokenize.
type frag struct {
	tok    int32
	lo, hi int
}

// partition splits text around the special tokens in it, as llama.cpp's
// tokenizer_st_partition: the longest special token is split out everywhere
// first, then the next longest in what is left, and so on. Control and
// unknown tokens count only when parseSpecial is set; user-defined tokens
// always do.
func (t *Tokenizer) partition(sc *scratch, text string, parseSpecial bool) []frag {
	frags := append(sc.frags[:0], frag{tok: -1, lo: 0, hi: len(text)})
	if text == "" {
		return frags[:0]
	}
	// Which special tokens occur at all, as indexes into t.specials.
	if len(sc.seen) < len(t.specials) {
		sc.seen = make([]bool, len(t.specials))
	}
	found := sc.found[:0]
	for i := 0; i < len(text); i++ {
		node := int32(0)
		for j := i; j < len(text); j++ {
			node = t.trie.child(node, text[j])
			if node == 0 {
				break
			}
			if k := t.trie.nodes[node].value; k >= 0 && !sc.seen[k] {
				if parseSpecial || t.attrs[t.specials[k]]&(attrControl|attrUnknown) == 0 {
					sc.seen[k] = true
					found = append(found, k)
				}
			}
		}
	}
	for _, k := range found {
		sc.seen[k] = false
	}
	sc.found = found
	if len(found) == 0 {
		sc.frags = frags
		return frags
	}
	sort.Slice(found, func(i, j int) bool { return found[i] < found[j] })
	next := sc.frags2[:0]
	for _, k := range found {
		id := t.specials[k]
		tok := t.texts[id]
		attr := t.attrs[id]
		next = next[:0]
		for _, f := range frags {
			if f.tok >= 0 {
				next = append(next, f)
				continue
			}
			lo := f.lo
			for {
				m := strings.Index(text[lo:f.hi], tok)
				if m < 0 {
					next = append(next, frag{tok: -1, lo: lo, hi: f.hi})
					break
				}
				m += lo
				left := m
				if attr&attrLStrip != 0 {
					for left > lo && isCSpace(text[left-1]) {
						left--
					}
				}
				if left > lo {
					next = append(next, frag{tok: -1, lo: lo, hi: left})
				}
				next = append(next, frag{tok: id, lo: m, hi: m + len(tok)})
				lo = m + len(tok)
				if attr&attrRStrip != 0 {
					for lo < f.hi && isCSpace(text[lo]) {
						lo++
					}
				}
				if lo >= f.hi {
					break
				}
			}
		}
		frags, next = next, frags
	}
	sc.frags, sc.frags2 = frags, next
	return frags
}

// isCSpace is C's isspace in the "C" locale.
func isCSpace(c byte) bool {
	return c == ' ' || (c >= '\t' && c <= '\r')
}
