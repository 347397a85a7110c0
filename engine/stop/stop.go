// Package stop finds stop strings (OpenAI's stop parameter) in text that is
// decoded and streamed piece by piece, and holds back text that might be the
// start of one until it knows.
//
// A [Matcher] guarantees that the concatenation of everything it emits (from
// [Matcher.Push] and [Matcher.Flush]) equals the whole text cut at the first
// occurrence of any stop string, the occurrence that starts earliest, however
// the text was split into pieces. The stop string itself and everything after
// it are never emitted.
//
// Matching is on bytes: exact and case-sensitive. Stop strings may overlap
// each other and themselves. Empty stop strings are ignored.
package stop

import (
	"bytes"
	"unicode/utf8"
)

// Matcher finds stop strings in one streamed text. It is not safe for
// concurrent use. Create it with [New].
//
// Text that could be the beginning of a stop string is held back until the
// following text shows whether it is one, so at most the longest stop string
// less one byte (plus up to 3 bytes to reach the start of a UTF-8 sequence)
// is held back at any time. One case holds back more: a stop string found
// while an earlier, longer one may still be completing, as with stops "abcd"
// and "bc" after the text "abc"; the earlier one wins if it completes.
//
// Emitted text never ends inside a UTF-8 sequence unless the input did: when
// the held-back text would start inside one (possible only with stop strings
// that are not valid UTF-8), the whole sequence is held back.
//
// Push and Flush reuse one buffer, so they do not allocate once it has grown
// to the longest stop string plus the longest piece. The slices they return
// are valid only until the next call on the Matcher and must not be modified.
type Matcher struct {
	stops [][]byte
	index []int // index[i] is stops[i]'s index in the slice given to New
	first [256]bool
	buf   []byte // buf[start:] is held back
	start int
	match int // index into stops of the stop found, or -1
}

// New returns a Matcher for the given stop strings. Empty strings are ignored;
// with none left, Push passes text straight through. New copies the strings.
func New(stops []string) *Matcher {
	m := &Matcher{match: -1}
	for i, s := range stops {
		if s == "" {
			continue
		}
		m.stops = append(m.stops, []byte(s))
		m.index = append(m.index, i)
		m.first[s[0]] = true
	}
	return m
}

// Push appends newly decoded text and returns the text that is now safe to
// emit: it cannot be part of any stop string. When a stop string is found,
// stopped is true and emit is the text before it; the stop string and
// anything after it are discarded, and from then on Push returns (nil, true)
// and Flush returns nil until Reset.
//
// emit may be text itself when there are no stop strings, or part of the
// Matcher's buffer otherwise; it is valid until the next call on m.
func (m *Matcher) Push(text []byte) (emit []byte, stopped bool) {
	if m.match >= 0 {
		return nil, true
	}
	if len(m.stops) == 0 {
		return text, false
	}
	if m.start > 0 {
		m.buf = m.buf[:copy(m.buf, m.buf[m.start:])]
		m.start = 0
	}
	m.buf = append(m.buf, text...)

	pos, which := m.firstMatch()
	limit := len(m.buf)
	if which >= 0 {
		limit = pos
	}
	hold := m.partial(limit)
	if hold == limit && which >= 0 {
		// No stop string starting earlier can still complete.
		m.match = which
		m.start = len(m.buf)
		return m.buf[:pos], true
	}
	hold = runeStart(m.buf, hold)
	m.start = hold
	return m.buf[:hold], false
}

// Flush ends the text and returns what was held back, cut at a stop string
// if the held-back text contains one (it then counts as found, see
// [Matcher.Matched]). It returns nil once a stop string was found. The result
// is valid until the next call on m. Push after Flush goes on matching as if
// the flushed text had never been seen; use Reset to start a new text.
func (m *Matcher) Flush() []byte {
	if m.match >= 0 {
		return nil
	}
	held := m.buf[m.start:]
	m.start = len(m.buf)
	if pos, which := firstMatch(m.stops, held); which >= 0 {
		m.match = which
		return held[:pos]
	}
	return held
}

// Matched reports whether a stop string was found and, if so, its index in
// the slice given to New. When several stop strings start at the position
// found, it is the lowest-indexed of those complete when the match was
// decided, which can depend on how the text was split.
func (m *Matcher) Matched() (index int, ok bool) {
	if m.match < 0 {
		return -1, false
	}
	return m.index[m.match], true
}

// Reset forgets all text and any stop found, keeping the stop strings and
// the buffer, so m can match a new text.
func (m *Matcher) Reset() {
	m.buf = m.buf[:0]
	m.start = 0
	m.match = -1
}

// firstMatch returns the position of the earliest complete stop string in
// m.buf and its index in m.stops, or (-1, -1).
func (m *Matcher) firstMatch() (pos, which int) {
	return firstMatch(m.stops, m.buf)
}

func firstMatch(stops [][]byte, text []byte) (pos, which int) {
	pos, which = -1, -1
	for i, s := range stops {
		t := text
		if which >= 0 {
			// Only an occurrence starting before pos can matter.
			t = t[:min(len(t), pos+len(s)-1)]
		}
		if j := bytes.Index(t, s); j >= 0 && (which < 0 || j < pos) {
			pos, which = j, i
		}
	}
	return pos, which
}

// partial returns the smallest i < limit such that m.buf[i:] is a proper
// prefix of some stop string, or limit if there is none: the first position
// where a stop string may be starting that the text so far cannot confirm.
func (m *Matcher) partial(limit int) int {
	buf := m.buf
	// A proper prefix is shorter than the longest stop string.
	from := len(buf)
	for _, s := range m.stops {
		from = min(from, len(buf)-len(s)+1)
	}
	for i := max(from, 0); i < limit; i++ {
		if !m.first[buf[i]] {
			continue
		}
		tail := buf[i:]
		for _, s := range m.stops {
			if len(tail) < len(s) && bytes.HasPrefix(s, tail) {
				return i
			}
		}
	}
	return limit
}

// runeStart moves i back to the start of the UTF-8 sequence containing b[i],
// if b[i] is a continuation byte of a well-formed sequence start.
func runeStart(b []byte, i int) int {
	if i >= len(b) || utf8.RuneStart(b[i]) {
		return i
	}
	for j := i - 1; j >= 0 && j >= i-3; j-- {
		c := b[j]
		if utf8.RuneStart(c) {
			if c >= 0xC0 && seqLen(c) > i-j {
				return j
			}
			return i
		}
	}
	return i
}

// seqLen returns the length of the UTF-8 sequence that lead byte c starts.
func seqLen(c byte) int {
	switch {
	case c >= 0xF0:
		return 4
	case c >= 0xE0:
		return 3
	default:
		return 2
	}
}
