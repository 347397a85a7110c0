package tokenizer

// This file holds hand-written equivalents of the regular expressions that
// llama.cpp's pre-tokenizers split text with (llm_tokenizer_bpe in
// llama-vocab.cpp). llama.cpp runs most of them with std::regex (ECMAScript:
// leftmost match, first alternative that succeeds, greedy quantifiers with
// backtracking) on a "collapsed" text in which every non-ASCII code point is
// replaced by one byte standing for its category; gpt2's and llama3's have
// hand-written splitters there too. Each matcher below returns what that
// regex matches at a position, and splitByMatch emulates std::regex_iterator:
// matches and the unmatched stretches between them each become a chunk.
//
// Category semantics follow the collapsed text, not Unicode: in ASCII,
// \p{P} is !"#%&'()*,-./:;?@[\]_{} and \p{S} is $+<=>^`| ('~' is in
// neither); \s is White_Space; classes written with literal code points
// (deepseek's ranges, bloom's exclusions) never match non-ASCII white space,
// which llama.cpp replaces by '\v' before matching.

// cpText is one text fragment decoded to code points, with their flags.
type cpText struct {
	cps []rune
	fl  []uint16
}

// matchFunc returns the length of the match starting at i, with the chunk
// ending at hi, or 0 when there is none.
type matchFunc func(t *cpText, i, hi int) int

// splitFunc appends the ends of the chunks that [lo, hi) splits into.
type splitFunc func(t *cpText, lo, hi int, out []int) []int

func splitByMatch(m matchFunc) splitFunc {
	return func(t *cpText, lo, hi int, out []int) []int {
		gap := lo
		for i := lo; i < hi; {
			n := m(t, i, hi)
			if n == 0 {
				i++
				continue
			}
			if i > gap {
				out = append(out, i)
			}
			i += n
			out = append(out, i)
			gap = i
		}
		if gap < hi {
			out = append(out, hi)
		}
		return out
	}
}

func (t *cpText) has(i int, f uint16) bool { return t.fl[i]&f != 0 }

// run returns the end of the run of code points from i that have a flag in f.
func (t *cpText) run(i, hi int, f uint16) int {
	for i < hi && t.fl[i]&f != 0 {
		i++
	}
	return i
}

// runFunc returns the end of the run of code points from i that satisfy ok.
func (t *cpText) runFunc(i, hi int, ok func(t *cpText, i int) bool) int {
	for i < hi && ok(t, i) {
		i++
	}
	return i
}

// wval is the code point as std::wregex sees it: non-ASCII white space
// becomes '\v'.
func (t *cpText) wval(i int) rune {
	if c := t.cps[i]; c < 0x80 || t.fl[i]&fSpace == 0 {
		return c
	}
	return '\v'
}

// rxPunct is \p{P} on the collapsed text.
func (t *cpText) rxPunct(i int) bool {
	if c := t.cps[i]; c < 0x80 {
		return asciiPunct(c)
	}
	return t.fl[i]&fPunct != 0
}

// rxSymbol is \p{S} on the collapsed text.
func (t *cpText) rxSymbol(i int) bool {
	if c := t.cps[i]; c < 0x80 {
		switch c {
		case '$', '+', '<', '=', '>', '^', '`', '|':
			return true
		}
		return false
	}
	return t.fl[i]&fSymbol != 0
}

func asciiPunct(c rune) bool {
	switch c {
	case '!', '"', '#', '%', '&', '\'', '(', ')', '*', ',', '-', '.', '/', ':', ';', '?', '@', '[', '\\', ']', '_', '{', '}':
		return true
	}
	return false
}

func isASCIILetter(c rune) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }

func isDigit(c rune) bool { return c >= '0' && c <= '9' }

func isCRLF(c rune) bool { return c == '\r' || c == '\n' }

// contraction matches 's 't 're 've 'm 'll 'd at i, in any letter case when
// fold is set.
func (t *cpText) contraction(i, hi int, fold bool) int {
	if t.cps[i] != '\'' || i+1 >= hi {
		return 0
	}
	low := func(c rune) rune {
		if fold && c >= 'A' && c <= 'Z' {
			return c + 'a' - 'A'
		}
		return c
	}
	switch low(t.cps[i+1]) {
	case 's', 't', 'm', 'd':
		return 2
	}
	if i+2 < hi {
		a, b := low(t.cps[i+1]), low(t.cps[i+2])
		if (a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l') {
			return 3
		}
	}
	return 0
}

// wsTail matches the whitespace alternatives that end the gpt2-like regexes
// at i: \s*[\r\n]+ (when crlf), then \s+(?!\S), then \s+ (when plain).
func (t *cpText) wsTail(i, hi int, crlf, plain bool) int {
	if !t.has(i, fSpace) {
		return 0
	}
	e, last := i, -1
	for e < hi && t.has(e, fSpace) {
		if isCRLF(t.cps[e]) {
			last = e
		}
		e++
	}
	if crlf && last >= 0 {
		return last + 1 - i
	}
	if e == hi {
		return e - i
	}
	if e-i > 1 {
		return e - i - 1
	}
	if plain {
		return 1
	}
	return 0
}

// matchGPT2 is 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)
func matchGPT2(t *cpText, i, hi int) int {
	if n := t.contraction(i, hi, false); n > 0 {
		return n
	}
	k := i
	if t.cps[i] == ' ' {
		k++
	}
	if k < hi {
		switch f := t.fl[k]; {
		case f&fLetter != 0:
			return t.run(k, hi, fLetter) - i
		case f&fNumber != 0:
			return t.run(k, hi, fNumber) - i
		case f&(fSpace|fLetter|fNumber) == 0:
			e := k
			for e < hi && t.fl[e]&(fSpace|fLetter|fNumber) == 0 {
				e++
			}
			return e - i
		}
	}
	return t.wsTail(i, hi, false, false)
}

// llama3Opts parameterises the family of regexes built like Llama 3's:
//
//	(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
type llama3Opts struct {
	noContractions bool
	marks          bool   // letters are [\p{L}\p{M}] and punctuation excludes \p{M} (qwen35)
	digits         int    // \p{N}{1,digits}; 0 means \p{N}+
	trail          string // what [...]* may follow the punctuation run
	jais2          bool   // \s{512}(?!\S)|…|\s{4}(?!\S)|\s{1,2}(?!\S)|\s{1} instead of \s+(?!\S)|\s+
}

func (o llama3Opts) match(t *cpText, i, hi int) int {
	c := t.cps[i]
	if !o.noContractions {
		if n := t.contraction(i, hi, true); n > 0 {
			return n
		}
	}
	letters := fLetter
	if o.marks {
		letters |= fMark
	}
	// [^\r\n\p{L}\p{N}]?\p{L}+
	if !isCRLF(c) && !t.has(i, fLetter|fNumber) && i+1 < hi && t.has(i+1, letters) {
		return t.run(i+1, hi, letters) - i
	}
	if t.has(i, letters) {
		return t.run(i, hi, letters) - i
	}
	// \p{N}{1,3}
	if t.has(i, fNumber) {
		e := i + 1
		for e < hi && (o.digits == 0 || e-i < o.digits) && t.has(e, fNumber) {
			e++
		}
		return e - i
	}
	//  ?[^\s\p{L}\p{N}]+[\r\n]*
	notPunct := fSpace | letters | fNumber
	k := i
	if c == ' ' {
		k++
	}
	if k < hi && !t.has(k, notPunct) {
		e := k
		for e < hi && !t.has(e, notPunct) {
			e++
		}
		for e < hi && o.trail != "" && containsRune(o.trail, t.cps[e]) {
			e++
		}
		return e - i
	}
	if !o.jais2 {
		return t.wsTail(i, hi, true, true)
	}
	if !t.has(i, fSpace) {
		return 0
	}
	e, last := i, -1
	for e < hi && t.has(e, fSpace) {
		if isCRLF(t.cps[e]) {
			last = e
		}
		e++
	}
	if last >= 0 {
		return last + 1 - i
	}
	// \s{n}(?!\S): n white space followed by white space or the end.
	k = e - i
	for n := 512; n >= 4; n /= 2 {
		if k > n || (k == n && e == hi) {
			return n
		}
	}
	if k > 2 || (k == 2 && e == hi) {
		return 2
	}
	return 1
}

func containsRune(s string, r rune) bool {
	for _, c := range s {
		if c == r {
			return true
		}
	}
	return false
}

// casedOpts parameterises the regexes of gpt-4o and tekken, whose words are
// an upper-case run then a lower-case run:
//
//	[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'s|…)?|
//	[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'s|…)?|
//	\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+
//
// On the collapsed text "upper" is any letter but a-z and "lower" any letter
// but A-Z, so non-ASCII letters are both.
type casedOpts struct {
	contractions bool // the optional (?:'[sS]|…) after each word (gpt-4o)
	marks        bool // the lookaheads are [\p{L}\p{M}] (granite-embed-multi)
	digits       int
}

func (o casedOpts) match(t *cpText, i, hi int) int {
	c := t.cps[i]
	letters := fLetter
	if o.marks {
		letters |= fMark
	}
	upper := func(k int) bool { return t.has(k, letters) && !(t.cps[k] >= 'a' && t.cps[k] <= 'z') }
	lower := func(k int) bool { return t.has(k, letters) && !(t.cps[k] >= 'A' && t.cps[k] <= 'Z') }
	word := func(e int) int {
		if o.contractions && e < hi {
			e += t.contraction(e, hi, true)
		}
		return e - i
	}
	// The optional prefix is tried first, then its absence.
	starts := [2]int{i + 1, i}
	first := 0
	if isCRLF(c) || t.has(i, fLetter|fNumber) {
		first = 1
	}
	// upper* lower+
	for _, s := range starts[first:] {
		u := s
		for u < hi && upper(u) {
			u++
		}
		for j := u; j >= s; j-- {
			if j < hi && lower(j) {
				return word(t.runFunc(j+1, hi, func(_ *cpText, k int) bool { return lower(k) }))
			}
		}
	}
	// upper+ lower*
	for _, s := range starts[first:] {
		if s < hi && upper(s) {
			u := s + 1
			for u < hi && upper(u) {
				u++
			}
			for u < hi && lower(u) {
				u++
			}
			return word(u)
		}
	}
	if t.has(i, fNumber) {
		e := i + 1
		for e < hi && e-i < o.digits && t.has(e, fNumber) {
			e++
		}
		return e - i
	}
	k := i
	if c == ' ' {
		k++
	}
	if k < hi && !t.has(k, fSpace|fLetter|fNumber) {
		e := k
		for e < hi && !t.has(e, fSpace|fLetter|fNumber) {
			e++
		}
		for e < hi && (isCRLF(t.cps[e]) || t.cps[e] == '/') {
			e++
		}
		return e - i
	}
	return t.wsTail(i, hi, true, true)
}

// matchExaoneMoE is
//
//	(?:'[sS]|…)|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+
func matchExaoneMoE(t *cpText, i, hi int) int {
	if n := t.contraction(i, hi, true); n > 0 {
		return n
	}
	c := t.cps[i]
	words := func(k int) int {
		for k < hi {
			switch {
			case t.has(k, fLetter):
				k = t.run(k+1, hi, fMark)
			case t.cps[k] == ' ' && k+1 < hi && t.has(k+1, fLetter):
				k = t.run(k+2, hi, fMark)
			default:
				return k
			}
		}
		return k
	}
	if !isCRLF(c) && !t.has(i, fLetter|fNumber) && i+1 < hi && t.has(i+1, fLetter) {
		return words(i+1) - i
	}
	if t.has(i, fLetter) {
		return words(i) - i
	}
	if t.has(i, fNumber) {
		return 1
	}
	k := i
	if c == ' ' {
		k++
	}
	if k < hi && !t.has(k, fSpace|fLetter|fNumber) {
		e := k
		for e < hi && !t.has(e, fSpace|fLetter|fNumber) {
			e++
		}
		if e < hi && (isCRLF(t.cps[e]) || t.cps[e] == '/') {
			e++
		}
		return e - i
	}
	return t.wsTail(i, hi, true, true)
}

// deepseek3Opts parameterises deepseek-v3's third regex:
//
//	[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//
// and spark2_5's, which has no [\r\n]* and [\r\n] in place of \s*[\r\n]+.
type deepseek3Opts struct{ spark bool }

func (o deepseek3Opts) match(t *cpText, i, hi int) int {
	c := t.cps[i]
	if c < 0x80 && (asciiPunct(c) || t.rxSymbol(i) || c == '~') && i+1 < hi && isASCIILetter(t.cps[i+1]) {
		e := i + 2
		for e < hi && isASCIILetter(t.cps[e]) {
			e++
		}
		return e - i
	}
	if !isCRLF(c) && !t.has(i, fLetter) && !t.rxPunct(i) && !t.rxSymbol(i) && i+1 < hi && t.has(i+1, fLetter|fMark) {
		return t.run(i+1, hi, fLetter|fMark) - i
	}
	if t.has(i, fLetter|fMark) {
		return t.run(i, hi, fLetter|fMark) - i
	}
	k := i
	if c == ' ' {
		k++
	}
	ps := func(t *cpText, k int) bool { return t.rxPunct(k) || t.rxSymbol(k) }
	if k < hi && ps(t, k) {
		e := t.runFunc(k, hi, ps)
		for !o.spark && e < hi && isCRLF(t.cps[e]) {
			e++
		}
		return e - i
	}
	if o.spark {
		if isCRLF(c) {
			return 1
		}
		return t.wsTail(i, hi, false, true)
	}
	return t.wsTail(i, hi, true, true)
}

// classRun matches [class]+, or [class] alone when one is set, with an
// optional leading white space (\s?) or space ( ?) when prefix says so.
type classRun struct {
	in     func(t *cpText, i int) bool
	prefix byte // 0, 's' for \s?, ' ' for " ?"
	max    int  // at most this many (0: no limit)
}

func (o classRun) match(t *cpText, i, hi int) int {
	k := i
	switch {
	case o.prefix == 's' && t.has(i, fSpace), o.prefix == ' ' && t.cps[i] == ' ':
		if i+1 < hi && o.in(t, i+1) {
			k = i + 1
		}
	}
	if !o.in(t, k) {
		return 0
	}
	e := k + 1
	for e < hi && (o.max == 0 || e-k < o.max) && o.in(t, e) {
		e++
	}
	return e - i
}

func flagClass(f uint16) func(t *cpText, i int) bool {
	return func(t *cpText, i int) bool { return t.fl[i]&f != 0 }
}

// rangeClass matches code points (as std::wregex sees them) in sorted or
// unsorted inclusive ranges.
func rangeClass(r [][2]rune) func(t *cpText, i int) bool {
	return func(t *cpText, i int) bool {
		c := t.wval(i)
		for _, x := range r {
			if c >= x[0] && c <= x[1] {
				return true
			}
		}
		return false
	}
}

// splitTrailingSpace is \s+$: the white space that ends the chunk.
func splitTrailingSpace(t *cpText, lo, hi int, out []int) []int {
	s := hi
	for s > lo && t.has(s-1, fSpace) {
		s--
	}
	if s > lo && s < hi {
		out = append(out, s)
	}
	return append(out, hi)
}

// Classes written with literal code points.
var (
	// deepseek-llm's letters.
	deepseekLetters = [][2]rune{{0x41, 0x5A}, {0x61, 0x7A}, {0xB5, 0xB5}, {0xC0, 0xD6}, {0xD8, 0xF6}, {0xF8, 0x1BA}, {0x1BC, 0x1BF}, {0x1C4, 0x293}, {0x295, 0x2AF}, {0x370, 0x373}, {0x376, 0x377}, {0x37B, 0x37D}, {0x37F, 0x37F}, {0x386, 0x386}, {0x388, 0x38A}, {0x38C, 0x38C}, {0x38E, 0x3A1}, {0x3A3, 0x3F5}, {0x3F7, 0x481}, {0x48A, 0x52F}, {0x531, 0x556}, {0x10A0, 0x10C5}, {0x13A0, 0x13F5}, {0x13F8, 0x13FD}, {0x1C90, 0x1CBA}, {0x1CBD, 0x1CBF}, {0x1D00, 0x1D2B}, {0x1D6B, 0x1D77}, {0x1D79, 0x1D9A}, {0x1E00, 0x1F15}, {0x1F18, 0x1F1D}, {0x1F20, 0x1F45}, {0x1F48, 0x1F4D}, {0x1F50, 0x1F57}, {0x1F59, 0x1F59}, {0x1F5B, 0x1F5B}, {0x1F5D, 0x1F5D}, {0x1F5F, 0x1F7D}, {0x1F80, 0x1FB4}, {0x1FB6, 0x1FBC}, {0x1FBE, 0x1FBE}, {0x1FC2, 0x1FC4}, {0x1FC6, 0x1FCC}, {0x1FD0, 0x1FD3}, {0x1FD6, 0x1FDB}, {0x1FE0, 0x1FEC}, {0x1FF2, 0x1FF4}, {0x1FF6, 0x1FFC}, {0x2102, 0x2102}, {0x2107, 0x2107}, {0x210A, 0x2113}, {0x2115, 0x2115}, {0x2119, 0x211D}, {0x2124, 0x2124}, {0x2126, 0x2126}, {0x2128, 0x2128}, {0x212A, 0x212D}, {0x212F, 0x2134}, {0x2139, 0x2139}, {0x213C, 0x213F}, {0x2145, 0x2149}, {0x214E, 0x214E}, {0x2183, 0x2184}, {0x2C00, 0x2C7B}, {0x2C7E, 0x2CE4}, {0x2CEB, 0x2CEE}, {0x2CF2, 0x2CF3}, {0xA640, 0xA66D}, {0xA680, 0xA69B}, {0xA722, 0xA76F}, {0xA771, 0xA787}, {0xA78B, 0xA78E}, {0xAB70, 0xABBF}, {0xFB00, 0xFB06}, {0xFB13, 0xFB17}, {0xFF21, 0xFF3A}, {0xFF41, 0xFF5A}, {0x10400, 0x1044F}, {0x104B0, 0x104D3}, {0x104D8, 0x104FB}, {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2}, {0x118A0, 0x118DF}, {0x1E900, 0x1E943}}
	// deepseek-llm's punctuation: !-/ :-~ ！-／ ：-～ ‘-‟ \u3000-。
	deepseekPunct = [][2]rune{{0x21, 0x2F}, {0x3A, 0x7E}, {0xFF01, 0xFF0F}, {0xFF1A, 0xFF5E}, {0x2018, 0x201F}, {0x3000, 0x3002}}
	// [一-龥ࠀ-一가-퟿] of deepseek-llm and deepseek-coder.
	deepseekCJK = [][2]rune{{0x4E00, 0x9FA5}, {0x800, 0x4E00}, {0xAC00, 0xD7FF}}
	// [一-龥぀-ゟ゠-ヿ] of deepseek-v3.
	deepseek3CJK = [][2]rune{{0x4E00, 0x9FA5}, {0x3040, 0x309F}, {0x30A0, 0x30FF}}
)

// bloomWord is [^(\s|.,!?…。，、।۔،)].
func bloomWord(t *cpText, i int) bool {
	switch c := t.wval(i); c {
	case '(', ')', '|', '.', ',', '!', '?', ' ', '\t', '\n', '\v', '\f', '\r',
		0x2026, 0x3002, 0xFF0C, 0x3001, 0x0964, 0x06D4, 0x060C:
		return false
	}
	return true
}

// punctRun is [\p{P}<extra>]+ as default's and falcon's first regexes use.
func punctRun(extra string) matchFunc {
	in := func(t *cpText, i int) bool { return t.rxPunct(i) || containsRune(extra, t.cps[i]) }
	return classRun{in: in}.match
}

// matchThreeDigits is [0-9][0-9][0-9].
func matchThreeDigits(t *cpText, i, hi int) int {
	if i+3 <= hi && isDigit(t.cps[i]) && isDigit(t.cps[i+1]) && isDigit(t.cps[i+2]) {
		return 3
	}
	return 0
}

func matchCRLF(t *cpText, i, hi int) int {
	if isCRLF(t.cps[i]) {
		return 1
	}
	return 0
}

// matchLines is [^\n]+|[\n]+.
func matchLines(t *cpText, i, hi int) int {
	nl := t.cps[i] == '\n'
	e := i + 1
	for e < hi && (t.cps[e] == '\n') == nl {
		e++
	}
	return e - i
}

// Chameleon's first five regexes.

// matchSentinel is <sentinel:[0-9]+>.
func matchSentinel(t *cpText, i, hi int) int {
	const p = "<sentinel:"
	k := i
	for _, c := range p {
		if k >= hi || t.cps[k] != c {
			return 0
		}
		k++
	}
	e := k
	for e < hi && isDigit(t.cps[e]) {
		e++
	}
	if e == k || e >= hi || t.cps[e] != '>' {
		return 0
	}
	return e + 1 - i
}

// matchImage is (IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z.
func matchImage(t *cpText, i, hi int) int {
	const p = "IMGIMG"
	k := i
	for _, c := range p {
		if k >= hi || t.cps[k] != c {
			return 0
		}
		k++
	}
	e := k
	for e < hi && e-k < 4 && t.cps[e] >= 'A' && t.cps[e] <= 'I' {
		e++
	}
	if e == k || e >= hi || t.cps[e] != 'Z' {
		return 0
	}
	return e + 1 - i
}

// matchChameleonSpace is ([\t\n]|    |  ).
func matchChameleonSpace(t *cpText, i, hi int) int {
	switch c := t.cps[i]; {
	case c == '\t' || c == '\n':
		return 1
	case c != ' ':
		return 0
	}
	n := 0
	for i+n < hi && n < 4 && t.cps[i+n] == ' ' {
		n++
	}
	switch {
	case n == 4:
		return 4
	case n >= 2:
		return 2
	}
	return 0
}

// matchChameleonPunct is [\p{P}!-/:-@\[-`{-~].
func matchChameleonPunct(t *cpText, i, hi int) int {
	c := t.cps[i]
	if t.rxPunct(i) || (c >= '!' && c <= '/') || (c >= ':' && c <= '@') || (c >= '[' && c <= '`') || (c >= '{' && c <= '~') {
		return 1
	}
	return 0
}
