package stop

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// reference is the specification: the text cut at the earliest occurrence
// of any non-empty stop string.
func reference(text string, stops []string) (string, bool) {
	cut := -1
	for _, s := range stops {
		if s == "" {
			continue
		}
		if i := strings.Index(text, s); i >= 0 && (cut < 0 || i < cut) {
			cut = i
		}
	}
	if cut < 0 {
		return text, false
	}
	return text[:cut], true
}

func TestPush(t *testing.T) {
	tests := []struct {
		name    string
		stops   []string
		pieces  []string
		emits   []string // one per piece pushed; pushing stops after a stop
		flush   string
		matched int // index of the stop found, -1 for none
	}{
		{
			name: "no stops passes through", stops: nil,
			pieces: []string{"a<", "/s>"}, emits: []string{"a<", "/s>"}, matched: -1,
		},
		{
			name: "only empty stops", stops: []string{"", ""},
			pieces: []string{"ab"}, emits: []string{"ab"}, matched: -1,
		},
		{
			name: "plain text", stops: []string{"STOP"},
			pieces: []string{"hello", " world"}, emits: []string{"hello", " world"}, matched: -1,
		},
		{
			name: "stop inside one piece", stops: []string{"STOP"},
			pieces: []string{"foo STOP bar"}, emits: []string{"foo "}, matched: 0,
		},
		{
			name: "stop at the very start", stops: []string{"STOP"},
			pieces: []string{"STOP"}, emits: []string{""}, matched: 0,
		},
		{
			name: "stop spanning three pieces", stops: []string{"</s>"},
			pieces: []string{"Hello <", "/s", "> world"}, emits: []string{"Hello ", "", ""}, matched: 0,
		},
		{
			name: "held text released when it turns out not to be a stop", stops: []string{"</s>"},
			pieces: []string{"Hello <", "b>"}, emits: []string{"Hello ", "<b>"}, matched: -1,
		},
		{
			name: "held text released by flush", stops: []string{"</s>"},
			pieces: []string{"abc </"}, emits: []string{"abc "}, flush: "</", matched: -1,
		},
		{
			name: "only a possible start is held", stops: []string{"abc"},
			pieces: []string{"xaab"}, emits: []string{"xa"}, flush: "ab", matched: -1,
		},
		{
			name: "self-overlapping stop", stops: []string{"aab"},
			pieces: []string{"aaa", "ab"}, emits: []string{"a", "a"}, matched: 0,
		},
		{
			name: "overlapping stops, earliest wins", stops: []string{"bc", "ab"},
			pieces: []string{"xabc"}, emits: []string{"x"}, matched: 1,
		},
		{
			// "bc" ends first, but "abcd" starts first and completes.
			name: "earliest start beats earliest end", stops: []string{"abcd", "bc"},
			pieces: []string{"abc", "d"}, emits: []string{"", ""}, matched: 0,
		},
		{
			name: "earlier candidate fails, later stop wins", stops: []string{"abcd", "bc"},
			pieces: []string{"abc", "x"}, emits: []string{"", "a"}, matched: 1,
		},
		{
			name: "pending stop decided by flush", stops: []string{"abcd", "bc"},
			pieces: []string{"zabc"}, emits: []string{"z"}, flush: "a", matched: 1,
		},
		{
			name: "stop string that is a prefix of another", stops: []string{"abc", "ab"},
			pieces: []string{"xa", "b", "c"}, emits: []string{"x", ""}, matched: 1,
		},
		{
			name: "multibyte stop", stops: []string{"。"},
			pieces: []string{"你好", "。", "再见"}, emits: []string{"你好", ""}, matched: 0,
		},
		{
			name: "multibyte partial held", stops: []string{"再见!"},
			pieces: []string{"你好再", "见", "吗"}, emits: []string{"你好", "", "再见吗"}, matched: -1,
		},
		{
			// The stop starts with the continuation byte of "é", so the
			// possible start falls inside the rune: hold the whole rune.
			name: "partial match inside a rune holds the rune", stops: []string{"\xa9z"},
			pieces: []string{"café", "!"}, emits: []string{"caf", "é!"}, matched: -1,
		},
		{
			name: "stop inside a rune cuts there", stops: []string{"\xa9z"},
			pieces: []string{"café", "z"}, emits: []string{"caf", "\xc3"}, matched: 0,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := New(tc.stops)
			var all strings.Builder
			stopped := false
			for i, p := range tc.pieces {
				if stopped {
					if e, s := m.Push([]byte(p)); e != nil || !s {
						t.Errorf("Push(%q) after stop = %q, %v, want nil, true", p, e, s)
					}
					continue
				}
				e, s := m.Push([]byte(p))
				if i >= len(tc.emits) {
					t.Fatalf("Push(%q) = %q, %v: more pushes than emits in the test", p, e, s)
				}
				if string(e) != tc.emits[i] {
					t.Errorf("Push(%q) = %q, want %q", p, e, tc.emits[i])
				}
				all.Write(e)
				stopped = s
			}
			if f := m.Flush(); string(f) != tc.flush {
				t.Errorf("Flush() = %q, want %q", f, tc.flush)
			} else {
				all.WriteString(string(f))
			}
			idx, ok := m.Matched()
			if ok != (tc.matched >= 0) || (ok && idx != tc.matched) {
				t.Errorf("Matched() = %d, %v, want %d", idx, ok, tc.matched)
			}
			want, _ := reference(strings.Join(tc.pieces, ""), tc.stops)
			if all.String() != want {
				t.Errorf("all emitted = %q, reference %q", all.String(), want)
			}
		})
	}
}

func TestReset(t *testing.T) {
	m := New([]string{"END"})
	m.Push([]byte("a END b"))
	m.Reset()
	if _, ok := m.Matched(); ok {
		t.Error("Matched() after Reset = true")
	}
	if e, s := m.Push([]byte("xyz EN")); string(e) != "xyz " || s {
		t.Errorf("Push after Reset = %q, %v, want %q, false", e, s, "xyz ")
	}
	if e, s := m.Push([]byte("D")); string(e) != "" || !s {
		t.Errorf("Push = %q, %v, want empty, true", e, s)
	}
}

func TestPushAfterFlush(t *testing.T) {
	m := New([]string{"END"})
	m.Push([]byte("a E"))
	if f := m.Flush(); string(f) != "E" {
		t.Fatalf("Flush() = %q, want %q", f, "E")
	}
	// The flushed "E" is gone: "ND" does not complete a stop.
	if e, s := m.Push([]byte("ND")); string(e) != "ND" || s {
		t.Errorf("Push(ND) after Flush = %q, %v, want %q, false", e, s, "ND")
	}
}

// run pushes the pieces and returns everything emitted, whether a stop was
// found and the Matched index. It checks the invariants that hold after
// every Push.
func run(t *testing.T, stops []string, pieces []string, checkUTF8 bool) (string, bool, int) {
	t.Helper()
	m := New(stops)
	maxLen := 0
	for _, s := range stops {
		maxLen = max(maxLen, len(s))
	}
	var emitted, seen strings.Builder
	stopped := false
	for _, p := range pieces {
		e, s := m.Push([]byte(p))
		if stopped {
			if e != nil || !s {
				t.Fatalf("Push(%q) after stop = %q, %v, want nil, true", p, e, s)
			}
			continue
		}
		seen.WriteString(p)
		emitted.Write(e)
		if checkUTF8 && !utf8.Valid(e) {
			t.Fatalf("stops %q, pieces %q: Push(%q) emitted %q, not valid UTF-8", stops, pieces, p, e)
		}
		stopped = s
		if stopped {
			continue
		}
		// Holding back: what is held is a possible start of a stop
		// string, moved back at most 3 bytes to a rune start.
		so, em := seen.String(), emitted.String()
		if !strings.HasPrefix(so, em) {
			t.Fatalf("stops %q, pieces %q: emitted %q is not a prefix of the text %q", stops, pieces, em, so)
		}
		if held := so[len(em):]; held != "" && !heldForReason(so, len(em), stops) {
			t.Fatalf("stops %q, pieces %q: after %q, %q held back for no reason", stops, pieces, so, held)
		}
	}
	f := m.Flush()
	if checkUTF8 && !utf8.Valid(f) {
		t.Fatalf("stops %q, pieces %q: Flush emitted %q, not valid UTF-8", stops, pieces, f)
	}
	emitted.Write(f)
	idx, ok := m.Matched()
	return emitted.String(), ok, idx
}

// heldForReason reports whether text[from:] may be held back: some suffix of
// text starting within 3 bytes of from is a proper prefix of a stop string.
func heldForReason(text string, from int, stops []string) bool {
	for q := from; q < len(text) && q <= from+3; q++ {
		for _, s := range stops {
			if s == "" {
				continue
			}
			tail := text[q:]
			if len(tail) < len(s) && strings.HasPrefix(s, tail) {
				return true
			}
		}
	}
	return false
}

// check runs one splitting and compares it with the reference.
func check(t *testing.T, text string, stops, pieces []string, checkUTF8 bool) {
	t.Helper()
	got, ok, idx := run(t, stops, pieces, checkUTF8)
	want, wantOK := reference(text, stops)
	if got != want || ok != wantOK {
		t.Fatalf("stops %q, pieces %q: emitted %q (stopped %v), want %q (stopped %v)", stops, pieces, got, ok, want, wantOK)
	}
	if ok && !strings.HasPrefix(text[len(want):], stops[idx]) {
		t.Fatalf("stops %q, pieces %q: Matched() = %d (%q), which does not occur at %d", stops, pieces, idx, stops[idx], len(want))
	}
}

// splits calls fn with every way of cutting text into non-empty pieces
// (2^(len-1) of them), plus one with an empty piece in between.
func splits(text string, fn func(pieces []string)) {
	n := len(text)
	if n == 0 {
		fn([]string{""})
		fn(nil)
		return
	}
	for mask := 0; mask < 1<<(n-1); mask++ {
		var pieces []string
		last := 0
		for i := 1; i < n; i++ {
			if mask&(1<<(i-1)) != 0 {
				pieces = append(pieces, text[last:i])
				last = i
			}
		}
		pieces = append(pieces, text[last:])
		fn(pieces)
	}
	fn([]string{text[:n/2], "", text[n/2:]})
}

func TestAllSplits(t *testing.T) {
	tests := []struct {
		text  string
		stops []string
	}{
		{"hello world", []string{"wor"}},
		{"aaaaab", []string{"aab"}},
		{"abcabcd", []string{"abcd", "bc"}},
		{"abcabx", []string{"abcd", "bcx", "cab"}},
		{"xyxyxyz", []string{"xyz", "yxyz", "yy"}},
		{"no stop here", []string{"zz", "q"}},
		{"<|im_end|>", []string{"<|im_end|>", "<|endoftext|>"}},
		{"ab<|im_", []string{"<|im_end|>"}},
		{"mississippi", []string{"issip", "ssi", "pp"}},
		{"", []string{"a"}},
		{"aaaa", []string{"a", "aa", ""}},
		{"caf\xc3\xa9z", []string{"\xa9z"}},
	}
	for _, tc := range tests {
		splits(tc.text, func(pieces []string) {
			check(t, tc.text, tc.stops, pieces, false)
		})
	}
}

func TestAllSplitsUTF8(t *testing.T) {
	tests := []struct {
		text  string
		stops []string
	}{
		{"你好。再见", []string{"。"}},
		{"你好再见吗", []string{"再见!", "见吗"}},
		{"ñañañb", []string{"ñab", "añb"}},
		{"é😀é😀x", []string{"😀x", "é😀é😀é"}},
	}
	for _, tc := range tests {
		runes := []rune(tc.text)
		// Split between runes only: the input pieces are whole UTF-8.
		for mask := 0; mask < 1<<(len(runes)-1); mask++ {
			var pieces []string
			last := 0
			for i := 1; i < len(runes); i++ {
				if mask&(1<<(i-1)) != 0 {
					pieces = append(pieces, string(runes[last:i]))
					last = i
				}
			}
			pieces = append(pieces, string(runes[last:]))
			check(t, tc.text, tc.stops, pieces, true)
		}
	}
}

// FuzzMatcher checks the Matcher against the reference for arbitrary text
// and up to three stop strings: every splitting when the text is at most 10
// bytes, otherwise the splitting cuts describes. When the text and stops are
// valid UTF-8 it also splits between runes only and checks that every
// emitted piece is valid UTF-8.
func FuzzMatcher(f *testing.F) {
	f.Add("Hello </s> world", "</s>", "", "", []byte{3, 1, 4, 1, 5})
	f.Add("abcabcd", "abcd", "bc", "", []byte{2, 2})
	f.Add("mississippi", "issip", "ssi", "pp", []byte{1})
	f.Add("你好。再见", "。", "再见!", "", []byte{3, 3, 3})
	f.Add("caf\xc3\xa9z", "\xa9z", "", "", []byte{4})
	f.Add("aaaaaaaaaab", "aab", "aaab", "b", []byte{0, 1, 0, 2})
	f.Fuzz(func(t *testing.T, text, s1, s2, s3 string, cuts []byte) {
		if len(text) > 1000 || len(s1)+len(s2)+len(s3) > 100 {
			return
		}
		stops := []string{s1, s2, s3}
		if len(text) <= 10 {
			splits(text, func(pieces []string) { check(t, text, stops, pieces, false) })
		} else {
			check(t, text, stops, cut(text, cuts, false), false)
		}
		if utf8.ValidString(text) && utf8.ValidString(s1) && utf8.ValidString(s2) && utf8.ValidString(s3) {
			check(t, text, stops, cut(text, cuts, true), true)
		}
	})
}

// cut splits text into pieces whose lengths come from cuts (cycled; 0 gives
// an empty piece), moving each cut forward to a rune start if runes is set.
func cut(text string, cuts []byte, runes bool) []string {
	if len(cuts) == 0 {
		cuts = []byte{1}
	}
	var pieces []string
	for i := 0; len(text) > 0; i++ {
		n := min(int(cuts[i%len(cuts)]%16), len(text))
		if i > 4*len(text)+len(cuts) { // only zeros: stop emitting empties
			n = len(text)
		}
		for runes && n < len(text) && !utf8.RuneStart(text[n]) {
			n++
		}
		pieces = append(pieces, text[:n])
		text = text[n:]
	}
	return pieces
}

func TestPushAllocs(t *testing.T) {
	m := New([]string{"<|im_end|>", "\n\nUser:", "###"})
	pieces := [][]byte{[]byte("Hello"), []byte(" <|"), []byte("im"), []byte(" not"), []byte(" really ##"), []byte("# ok")}
	for _, p := range pieces { // grow the buffer
		m.Push(p)
	}
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		if _, stopped := m.Push(pieces[i%len(pieces)]); stopped {
			m.Reset()
		}
		i++
	})
	if allocs != 0 {
		t.Errorf("Push: %v allocs per call, want 0", allocs)
	}
}

func BenchmarkPush(b *testing.B) {
	m := New([]string{"<|im_end|>", "\n\nUser:", "###", "</s>"})
	pieces := [][]byte{[]byte("The"), []byte(" quick"), []byte(" brown"), []byte(" <"), []byte("fox"),
		[]byte(" jumps"), []byte(" #"), []byte(" over"), []byte("\n"), []byte("\n"), []byte("the"), []byte(" dog")}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		m.Push(pieces[i%len(pieces)])
		i++
	}
}
