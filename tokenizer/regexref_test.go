package tokenizer

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// This file checks the hand-written pre-tokenizer splitters against
// llama.cpp's own regular expressions, run by a small backtracking matcher
// with std::regex's ECMAScript semantics over the text as llama.cpp
// presents it to std::regex (unicode_regex_split): a regex that uses \p{…}
// sees the "collapsed" text, one byte per code point standing for its
// category; any other sees code points with non-ASCII white space as '\v'.

// llamaRegexes are the regex lists of llm_tokenizer_bpe, copied verbatim.
var llamaRegexes = map[string][]string{
	"llama3":                  {"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
	"deepseek-llm":            {"[\r\n]", "\\s?[A-Za-z\u00B5\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u01BA\u01BC-\u01BF\u01C4-\u0293\u0295-\u02AF\u0370-\u0373\u0376\u0377\u037B-\u037D\u037F\u0386\u0388-\u038A\u038C\u038E-\u03A1\u03A3-\u03F5\u03F7-\u0481\u048A-\u052F\u0531-\u0556\u10A0-\u10C5\u13A0-\u13F5\u13F8-\u13FD\u1C90-\u1CBA\u1CBD-\u1CBF\u1D00-\u1D2B\u1D6B-\u1D77\u1D79-\u1D9A\u1E00-\u1F15\u1F18-\u1F1D\u1F20-\u1F45\u1F48-\u1F4D\u1F50-\u1F57\u1F59\u1F5B\u1F5D\u1F5F-\u1F7D\u1F80-\u1FB4\u1FB6-\u1FBC\u1FBE\u1FC2-\u1FC4\u1FC6-\u1FCC\u1FD0-\u1FD3\u1FD6-\u1FDB\u1FE0-\u1FEC\u1FF2-\u1FF4\u1FF6-\u1FFC\u2102\u2107\u210A-\u2113\u2115\u2119-\u211D\u2124\u2126\u2128\u212A-\u212D\u212F-\u2134\u2139\u213C-\u213F\u2145-\u2149\u214E\u2183\u2184\u2C00-\u2C7B\u2C7E-\u2CE4\u2CEB-\u2CEE\u2CF2\u2CF3\uA640-\uA66D\uA680-\uA69B\uA722-\uA76F\uA771-\uA787\uA78B-\uA78E\uAB70-\uABBF\uFB00-\uFB06\uFB13-\uFB17\uFF21-\uFF3A\uFF41-\uFF5A\U00010400-\U0001044F\U000104B0-\U000104D3\U000104D8-\U000104FB\U00010C80-\U00010CB2\U00010CC0-\U00010CF2\U000118A0-\U000118DF\U0001E900-\U0001E943]+", "\\s?[!-/:-~\uFF01-\uFF0F\uFF1A-\uFF5E\u2018-\u201F\u3000-\u3002]+", "\\s+$", "[\u4E00-\u9FA5\u0800-\u4E00\uAC00-\uD7FF]+", "\\p{N}+"},
	"deepseek-v3":             {"\\p{N}{1,3}", "[\u4E00-\u9FA5\u3040-\u309F\u30A0-\u30FF]+", "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"},
	"spark2_5":                {"\\p{N}{1,3}", "[\u4E00-\u9FA5\u3040-\u309F\u30A0-\u30FF]+", "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+|[\r\n]|\\s+(?!\\S)|\\s+", "\\p{N}"},
	"deepseek-coder":          {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[\u4E00-\u9FA5\u0800-\u4E00\uAC00-\uD7FF]+", "\\p{N}"},
	"falcon":                  {"[\\p{P}\\$\\+<=>\\^~\\|`]+", "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)", "[0-9][0-9][0-9]"},
	"starcoder":               {"\\p{N}", "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"},
	"gpt-2":                   {"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"},
	"qwen2":                   {"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
	"qwen35":                  {"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
	"bloom":                   {" ?[^(\\s|.,!?\u2026\u3002\uFF0C\u3001\u0964\u06D4\u060C)]+"},
	"viking":                  {" ?[^(\\s|.,!?\u2026\u3002\uFF0C\u3001\u0964\u06D4\u060C)]+", "\\p{N}"},
	"tekken":                  {"[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
	"gpt-4o":                  {"[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
	"granite-embed-multi-97m": {"[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}\\p{M}])([^a-z]))*((?=[\\p{L}\\p{M}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}\\p{M}])([^a-z]))+((?=[\\p{L}\\p{M}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
	"chameleon":               {"<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", "([\\t\\n]|    |  )", "\\p{N}", "[\\p{P}!-/:-@\\[-`{-~]", "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"},
	"default":                 {"[\\p{P}\\$\\+<=>\\^~\\|]+", "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)", "\\p{N}+", "[0-9][0-9][0-9]"},
	"jais-2":                  {"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s{512}(?!\\S)|\\s{256}(?!\\S)|\\s{128}(?!\\S)|\\s{64}(?!\\S)|\\s{32}(?!\\S)|\\s{16}(?!\\S)|\\s{8}(?!\\S)|\\s{4}(?!\\S)|\\s{1,2}(?!\\S)|\\s{1}"},
	"seed-coder":              {"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
	"ufakzeka":                {"[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
	"bailingmoe":              {"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"},
	"minicpm5":                {"\\p{N}{1,3}", "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}+| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
	"laguna":                  {"[^\\n]+|[\\n]+", "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
	"exaone-moe":              {"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?(?:\\p{L}\\p{M}*(?: \\p{L}\\p{M}*)*)+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]?|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"},
	"gemma4":                  {"[^\\n]+|[\\n]+"},
}

// Every registered pre-tokenizer must have its regexes above, through the
// name of a pre-tokenizer that uses the same ones.
var sameRegexes = map[string]string{
	"": "default", "llama-v3": "llama3", "llama-bpe": "llama3", "falcon3": "llama3", "falcon-h1": "llama3",
	"pixtral": "llama3", "midm-2.0": "llama3", "lfm2": "llama3", "jina-v5-nano": "llama3", "dbrx": "llama3",
	"smaug-bpe": "llama3", "chatglm-bpe": "llama3", "glm4": "llama3",
	"phi-2": "gpt-2", "jina-es": "gpt-2", "jina-de": "gpt-2", "gigachat": "gpt-2", "jina-v1-en": "gpt-2",
	"jina-v2-es": "gpt-2", "jina-v2-de": "gpt-2", "jina-v2-code": "gpt-2", "roberta-bpe": "gpt-2",
	"a.x-4.0": "gpt-2", "mellum": "gpt-2", "modern-bert": "gpt-2", "exaone4": "gpt-2", "mpt": "gpt-2",
	"olmo": "gpt-2", "jais": "gpt-2", "trillion": "gpt-2", "granite-docling": "gpt-2",
	"refact": "starcoder", "codeshell": "starcoder", "exaone": "starcoder", "minerva-7b": "starcoder",
	"mellum2": "starcoder", "command-r": "starcoder", "smollm": "starcoder",
	"deepseek-r1-qwen": "qwen2", "kormo": "qwen2", "f2llmv2": "qwen2", "hunyuan": "qwen2", "solar-open": "qwen2",
	"grok-2": "qwen2", "megrez": "qwen2", "stablelm2": "qwen2", "bailingmoe2": "bailingmoe", "llada-moe": "bailingmoe",
	"deepseek3-llm": "deepseek-v3", "hunyuan-dense": "deepseek-v3", "joyai-llm": "deepseek-v3", "hy_v4": "deepseek-v3",
	"poro-chat": "bloom", "gpt3-finnish": "bloom",
	"llama4": "gpt-4o", "kanana2": "gpt-4o", "talkie": "gpt-4o", "minimax-m2": "gpt-4o",
	"granite-embed-multi-311m": "gemma4", "sarvam-moe": "gemma4",
}

// rx is a compiled regex node. match calls k with each end position the
// node can match to from i, in ECMAScript's preference order, and stops at
// the first k that returns true.
type rx interface {
	match(in *rxInput, i int, k func(int) bool) bool
}

type rxInput struct {
	v      []rune // the text as the regex sees it
	lo, hi int
}

type (
	rxAlt []rx
	rxSeq []rx
	rxRep struct {
		n        rx
		min, max int // max < 0: unbounded
	}
	rxChar func(v rune) bool
	rxLook struct {
		n   rx
		neg bool
	}
	rxEnd struct{}
)

func (a rxAlt) match(in *rxInput, i int, k func(int) bool) bool {
	for _, n := range a {
		if n.match(in, i, k) {
			return true
		}
	}
	return false
}

func (s rxSeq) match(in *rxInput, i int, k func(int) bool) bool {
	if len(s) == 0 {
		return k(i)
	}
	return s[0].match(in, i, func(j int) bool { return s[1:].match(in, j, k) })
}

func (r rxRep) match(in *rxInput, i int, k func(int) bool) bool {
	var try func(count, i int) bool
	try = func(count, i int) bool {
		if r.max < 0 || count < r.max {
			if r.n.match(in, i, func(j int) bool {
				if j == i {
					return false // an empty iteration ends the loop
				}
				return try(count+1, j)
			}) {
				return true
			}
		}
		return count >= r.min && k(i)
	}
	return try(0, i)
}

func (c rxChar) match(in *rxInput, i int, k func(int) bool) bool {
	return i < in.hi && c(in.v[i]) && k(i+1)
}

func (l rxLook) match(in *rxInput, i int, k func(int) bool) bool {
	if l.n.match(in, i, func(int) bool { return true }) == l.neg {
		return false
	}
	return k(i)
}

func (rxEnd) match(in *rxInput, i int, k func(int) bool) bool { return i == in.hi && k(i) }

// Collapsed category bytes (unicode_regex_split's k_ucat_cpt).
const (
	colOther  = 0xD0
	colNumber = 0xD1
	colLetter = 0xD2
	colPunct  = 0xD3
	colMark   = 0xD4
	colSymbol = 0xD5
)

func rxSpace(v rune) bool { return v == ' ' || (v >= '\t' && v <= '\r') }

// rxClass is \p{X} on the collapsed text, with the ASCII members
// unicode_regex_split's k_ucat_map gives it.
func rxClass(name string) rxChar {
	switch name {
	case "N":
		return func(v rune) bool { return v == colNumber || (v >= '0' && v <= '9') }
	case "L":
		return func(v rune) bool { return v == colLetter || (v|0x20 >= 'a' && v|0x20 <= 'z') }
	case "P":
		return func(v rune) bool { return v == colPunct || (v < 0x80 && asciiPunct(v)) }
	case "M":
		return func(v rune) bool { return v == colMark }
	case "S":
		return func(v rune) bool { return v == colSymbol || (v < 0x80 && strings.ContainsRune("$+<=>^`|", v)) }
	}
	panic("unknown class " + name)
}

type rxParser struct {
	s []rune
	i int
}

func compileRx(expr string) rx {
	p := &rxParser{s: []rune(expr)}
	n := p.alt()
	if p.i != len(p.s) {
		panic(fmt.Sprintf("regex %q: trailing input at %d", expr, p.i))
	}
	return n
}

func (p *rxParser) peek() rune {
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return -1
}

func (p *rxParser) alt() rx {
	alts := rxAlt{p.seq()}
	for p.peek() == '|' {
		p.i++
		alts = append(alts, p.seq())
	}
	if len(alts) == 1 {
		return alts[0]
	}
	return alts
}

func (p *rxParser) seq() rx {
	var s rxSeq
	for c := p.peek(); c >= 0 && c != '|' && c != ')'; c = p.peek() {
		s = append(s, p.quant(p.atom()))
	}
	return s
}

func (p *rxParser) quant(n rx) rx {
	switch p.peek() {
	case '?':
		p.i++
		return rxRep{n, 0, 1}
	case '*':
		p.i++
		return rxRep{n, 0, -1}
	case '+':
		p.i++
		return rxRep{n, 1, -1}
	case '{':
		end := p.i
		for p.s[end] != '}' {
			end++
		}
		body := string(p.s[p.i+1 : end])
		p.i = end + 1
		lo, hi, comma := strings.Cut(body, ",")
		mn, _ := strconv.Atoi(lo)
		mx := mn
		if comma {
			mx = -1
			if hi != "" {
				mx, _ = strconv.Atoi(hi)
			}
		}
		return rxRep{n, mn, mx}
	}
	return n
}

func (p *rxParser) atom() rx {
	c := p.s[p.i]
	p.i++
	switch c {
	case '(':
		var look *rxLook
		if p.peek() == '?' {
			switch p.s[p.i+1] {
			case ':':
			case '=':
				look = &rxLook{}
			case '!':
				look = &rxLook{neg: true}
			}
			p.i += 2
		}
		n := p.alt()
		p.i++ // ')'
		if look != nil {
			look.n = n
			return *look
		}
		return n
	case '[':
		return p.class()
	case '$':
		return rxEnd{}
	case '\\':
		return p.escape()
	}
	return rxChar(func(v rune) bool { return v == c })
}

// escape parses what follows a backslash, outside or inside a class.
func (p *rxParser) escape() rxChar {
	c := p.s[p.i]
	p.i++
	switch c {
	case 's':
		return rxSpace
	case 'S':
		return func(v rune) bool { return !rxSpace(v) }
	case 'r':
		c = '\r'
	case 'n':
		c = '\n'
	case 't':
		c = '\t'
	case 'p':
		end := p.i
		for p.s[end] != '}' {
			end++
		}
		name := string(p.s[p.i+1 : end])
		p.i = end + 1
		return rxClass(name)
	}
	return func(v rune) bool { return v == c }
}

func (p *rxParser) class() rx {
	neg := p.peek() == '^'
	if neg {
		p.i++
	}
	var items []rxChar
	for p.peek() != ']' {
		var lo rune
		if p.peek() == '\\' {
			switch p.s[p.i+1] {
			case 's', 'S', 'p':
				p.i++
				items = append(items, p.escape())
				continue
			case 'r':
				lo = '\r'
			case 'n':
				lo = '\n'
			case 't':
				lo = '\t'
			default:
				lo = p.s[p.i+1]
			}
			p.i += 2
		} else {
			lo = p.s[p.i]
			p.i++
		}
		hi := lo
		if p.peek() == '-' && p.s[p.i+1] != ']' {
			p.i++
			hi = p.s[p.i]
			p.i++
			if hi == '\\' {
				hi = p.s[p.i]
				p.i++
			}
		}
		items = append(items, func(v rune) bool { return v >= lo && v <= hi })
	}
	p.i++
	return rxChar(func(v rune) bool {
		for _, it := range items {
			if it(v) {
				return !neg
			}
		}
		return neg
	})
}

// view is the text as a regex sees it in unicode_regex_split.
func view(t *cpText, expr string) []rune {
	collapsed := false
	for _, c := range []string{"\\p{N}", "\\p{L}", "\\p{P}", "\\p{M}", "\\p{S}"} {
		collapsed = collapsed || strings.Contains(expr, c)
	}
	v := make([]rune, len(t.cps))
	for i, c := range t.cps {
		f := t.fl[i]
		switch {
		case c < 0x80:
			v[i] = c
		case f&fSpace != 0:
			v[i] = '\v'
		case !collapsed:
			v[i] = c
		case f&fNumber != 0:
			v[i] = colNumber
		case f&fLetter != 0:
			v[i] = colLetter
		case f&fPunct != 0:
			v[i] = colPunct
		case f&fMark != 0:
			v[i] = colMark
		case f&fSymbol != 0:
			v[i] = colSymbol
		default:
			v[i] = colOther
		}
	}
	return v
}

// refSplit splits t with llama.cpp's regexes as std::regex_iterator does.
func refSplit(t *cpText, exprs []string) []int {
	ends := []int{len(t.cps)}
	for _, e := range exprs {
		re := compileRx(e)
		in := &rxInput{v: view(t, e)}
		var next []int
		lo := 0
		for _, hi := range ends {
			in.lo, in.hi = lo, hi
			gap := lo
			for i := lo; i < hi; {
				end := -1
				re.match(in, i, func(j int) bool { end = j; return true })
				if end <= i {
					i++
					continue
				}
				if i > gap {
					next = append(next, i)
				}
				next = append(next, end)
				i, gap = end, end
			}
			if gap < hi {
				next = append(next, hi)
			}
			lo = hi
		}
		ends = next
	}
	return ends
}

// rxAlphabet mixes the code points the regexes treat differently.
var rxAlphabet = []string{
	"a", "z", "A", "Z", "s", "t", "S", "T", "r", "e", "R", "E", "v", "l", "L", "m", "d", "D", "I", "M", "G",
	"0", "1", "9", "'", "'s", "'RE", "'ll", " ", " ", "  ", "    ", "\t", "\n", "\r", "\r\n", "\v", "\f", "\x1c",
	"!", ".", ",", "?", "$", "+", "<", "=", ">", "^", "`", "|", "~", "/", "-", "_", "(", ")", "[", "]", "\\", "\"", "@", "#", "{", "}",
	"é", "É", "ǅ", "ʰ", "µ", "ß", "ſ", "我", "龥", "ア", "ぁ", "가", "ก", "\u0301", "\u094d", "\u0903", "٣", "½", "Ⅻ",
	"！", "～", "‘", "…", "。", "，", "、", "।", "۔", "،", "\u3000", "\u00a0", "\u2028", "\u0085", "\u200b",
	"🦙", "\ue000", "\u0378", "\ufffd", "\u212A", "\u2126", "\u1FBE", "\u1F7D", "\u0390", "ｚ", "𐐀", "<sentinel:", "12>", "IMGIMG", "AB", "Z",
	"\x80", "\xff", "\xe2\x82", "\xed\xa0\x80",
}

func TestSplittersMatchLlamaRegexes(t *testing.T) {
	for name := range preTokenizers {
		if _, ok := llamaRegexes[name]; !ok && sameRegexes[name] == "" {
			t.Errorf("pre-tokenizer %q has no reference regexes", name)
		}
	}
	rng := rand.New(rand.NewPCG(7, 8))
	var inputs []string
	for n := range 1500 {
		var b strings.Builder
		for range rng.IntN(4 + n%24) {
			b.WriteString(rxAlphabet[rng.IntN(len(rxAlphabet))])
		}
		inputs = append(inputs, b.String())
	}
	inputs = append(inputs, strings.Repeat(" ", 600)+"x", strings.Repeat(" ", 40), "a"+strings.Repeat(" ", 17)+"b")
	for name, exprs := range llamaRegexes {
		t.Run(name, func(t *testing.T) {
			p := preTokenizers[name]
			fails := 0
			for _, s := range inputs {
				if p.rawBytes {
					s = strings.ReplaceAll(s, " ", "▁")
				}
				text := decodeText(s)
				want := refSplit(text, exprs)
				got := splitAll(text, p.splits)
				if !slices.Equal(got, want) {
					t.Errorf("%q splits as %q, want %q", s, chunks(text, got), chunks(text, want))
					if fails++; fails > 5 {
						return
					}
				}
			}
		})
	}
}

func decodeText(s string) *cpText {
	t := &cpText{}
	for i := 0; i < len(s); {
		r, n, ok := decodeCP(s[i:])
		if !ok {
			r = 0xFFFD
		}
		t.cps = append(t.cps, r)
		t.fl = append(t.fl, cpFlags(r))
		i += n
	}
	return t
}

func splitAll(t *cpText, splits []splitFunc) []int {
	ends := []int{len(t.cps)}
	for _, sp := range splits {
		var next []int
		lo := 0
		for _, e := range ends {
			next = sp(t, lo, e, next)
			lo = e
		}
		ends = next
	}
	return ends
}

func chunks(t *cpText, ends []int) []string {
	var out []string
	lo := 0
	for _, e := range ends {
		out = append(out, string(t.cps[lo:e]))
		lo = e
	}
	return out
}

// FuzzSplitters compares every pre-tokenizer's splitters with llama.cpp's
// regexes on arbitrary text.
func FuzzSplitters(f *testing.F) {
	for _, s := range rxAlphabet {
		f.Add(s + " " + s + s)
	}
	f.Add("Hello, y'all! How are you 😁 ?我想在apple工作1314151天～ ------======= нещо\n\n \t")
	names := make([]string, 0, len(llamaRegexes))
	for name := range llamaRegexes {
		names = append(names, name)
	}
	slices.Sort(names)
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 256 {
			return // the reference matcher backtracks exponentially in places
		}
		for _, name := range names {
			p := preTokenizers[name]
			in := s
			if p.rawBytes {
				in = strings.ReplaceAll(in, " ", "▁")
			}
			text := decodeText(in)
			want := refSplit(text, llamaRegexes[name])
			if got := splitAll(text, p.splits); !slices.Equal(got, want) {
				t.Fatalf("%s: %q splits as %q, want %q", name, in, chunks(text, got), chunks(text, want))
			}
		}
	})
}
