package chat

import (
	"strings"

	"github.com/nikolalohinski/gonja/v2/config"
	"github.com/nikolalohinski/gonja/v2/tokens"
)

// preprocess rewrites a template's source so that gonja renders it the way
// Jinja does, working around two gonja gaps (fixLeftStrip and
// rewriteConditionals). Both keep line numbers. The result is gonja's own
// normalized input (newlines as \n) plus the trailing newline gonja's
// normalization will take off again.
func preprocess(src string, cfg *config.Config) string {
	in := strings.ReplaceAll(src, "\r\n", "\n")
	in = strings.ReplaceAll(in, "\r", "\n")
	if !cfg.KeepTrailingNewline {
		in = strings.TrimSuffix(in, "\n")
	}
	in = fixLeftStrip(in, cfg)
	in = rewriteConditionals(in, cfg)
	if !cfg.KeepTrailingNewline {
		in += "\n"
	}
	return in
}

func lex(in string, cfg *config.Config) []*tokens.Token {
	plain := *cfg
	plain.LeftStripBlocks = false // keep Data tokens as written
	var toks []*tokens.Token
	for s := tokens.LexAll(in, &plain); !s.End(); s.Next() {
		toks = append(toks, s.Current())
	}
	return toks
}

// fixLeftStrip works around a gonja bug. With lstrip_blocks, Jinja strips
// the spaces and tabs before a block or comment tag only when they start a
// line; gonja also strips them when they follow another tag on the same
// line, so "{{ a }} {% if b %}" loses its space. fixLeftStrip marks those
// tags with '+' ("{%+ if b %}"), which turns lstrip off for that tag in
// both engines, and so makes gonja render what Jinja renders.
func fixLeftStrip(in string, cfg *config.Config) string {
	var marks []int
	toks := lex(in, cfg)
	for i := 1; i < len(toks); i++ {
		prev, tok := toks[i-1], toks[i]
		if prev.Type != tokens.Data || tok.Type != tokens.BlockBegin && tok.Type != tokens.CommentBegin {
			continue
		}
		open := tok.Pos + len(cfg.BlockStartString)
		if tok.Type == tokens.CommentBegin {
			open = tok.Pos + len(cfg.CommentStartString)
		}
		midLine := prev.Pos > 0 && in[prev.Pos-1] != '\n'
		blank := prev.Val != "" && strings.Trim(prev.Val, " \t") == ""
		if midLine && blank && open < len(in) && in[open] != '-' && in[open] != '+' {
			marks = append(marks, open)
		}
	}
	if len(marks) == 0 {
		return in
	}
	var b strings.Builder
	last := 0
	for _, m := range marks {
		b.WriteString(in[last:m])
		b.WriteByte('+')
		last = m
	}
	b.WriteString(in[last:])
	return b.String()
}

// rewriteConditionals works around a gonja parser gap: a conditional
// expression is accepted only as a whole {{ }} or {% set %} expression,
// not inside brackets, so ('a' if x else 'b') + 'c', f(a if x else b) and
// [a if x else b] fail to parse. Each such "A if C else B" becomes
// ((C) and [A] or [B])[0], which gonja parses and which, because and/or
// return an operand and evaluate lazily, evaluates exactly one of A and B,
// as Jinja does. "A if C" without else gets none for B (Jinja gives an
// undefined, which also prints as nothing).
func rewriteConditionals(in string, cfg *config.Config) string {
	toks := lex(in, cfg)
	var b strings.Builder
	last := 0
	for i := 0; i < len(toks); i++ {
		if toks[i].Type != tokens.VariableBegin && toks[i].Type != tokens.BlockBegin {
			continue
		}
		j := i + 1
		for j < len(toks) && toks[j].Type != tokens.VariableEnd && toks[j].Type != tokens.BlockEnd {
			j++
		}
		if j == len(toks) {
			break // unterminated: gonja reports it
		}
		tag := toks[i+1 : j]
		i = j
		if len(tag) == 0 {
			continue
		}
		lo, hi := tag[0].Pos, toks[j].Pos
		r := condRewriter{in: in, toks: tag}
		if !r.needed() || !r.match() {
			continue
		}
		b.WriteString(in[last:lo])
		b.WriteString(r.text(0, len(tag), lo, hi))
		last = hi
	}
	if last == 0 {
		return in
	}
	b.WriteString(in[last:])
	return b.String()
}

// condRewriter rewrites the conditionals inside brackets in one tag.
type condRewriter struct {
	in    string
	toks  []*tokens.Token
	close []int // index of the bracket matching each opening bracket
}

func isName(t *tokens.Token, name string) bool { return t.Type == tokens.Name && t.Val == name }

func opening(t tokens.Type) tokens.Type {
	switch t {
	case tokens.RightParenthesis:
		return tokens.LeftParenthesis
	case tokens.RightBracket:
		return tokens.LeftBracket
	case tokens.RightBrace:
		return tokens.LeftBrace
	}
	return -1
}

// needed reports whether an "if" appears inside brackets.
func (r *condRewriter) needed() bool {
	depth := 0
	for _, t := range r.toks {
		switch t.Type {
		case tokens.LeftParenthesis, tokens.LeftBracket, tokens.LeftBrace:
			depth++
		case tokens.RightParenthesis, tokens.RightBracket, tokens.RightBrace:
			depth--
		}
		if depth > 0 && isName(t, "if") {
			return true
		}
	}
	return false
}

// match pairs the brackets; unbalanced ones are left for gonja to report.
func (r *condRewriter) match() bool {
	r.close = make([]int, len(r.toks))
	var stack []int
	for i, t := range r.toks {
		r.close[i] = -1
		switch t.Type {
		case tokens.LeftParenthesis, tokens.LeftBracket, tokens.LeftBrace:
			stack = append(stack, i)
		case tokens.RightParenthesis, tokens.RightBracket, tokens.RightBrace:
			if len(stack) == 0 || r.toks[stack[len(stack)-1]].Type != opening(t.Type) {
				return false
			}
			r.close[stack[len(stack)-1]] = i
			stack = stack[:len(stack)-1]
		}
	}
	return len(stack) == 0
}

// text is in[lo:hi], the source of tokens [i, j), with every bracketed
// group in it rewritten.
func (r *condRewriter) text(i, j, lo, hi int) string {
	var b strings.Builder
	cursor := lo
	for k := i; k < j; k++ {
		if c := r.close[k]; c >= 0 {
			b.WriteString(r.in[cursor:r.toks[k].Pos])
			b.WriteString(r.group(k, c))
			cursor = r.toks[c].Pos + 1
			k = c
		}
	}
	b.WriteString(r.in[cursor:hi])
	return b.String()
}

// group rewrites the bracketed group from token open to token end: each of
// its comma-separated elements, or for dicts and keyword arguments each
// value.
func (r *condRewriter) group(open, end int) string {
	kind := r.toks[open].Type
	var b strings.Builder
	b.WriteString(r.in[r.toks[open].Pos : r.toks[open].Pos+1])
	start, lo := open+1, r.toks[open].Pos+1
	for k := open + 1; k <= end; k++ {
		if c := r.close[k]; c >= 0 {
			k = c
			continue
		}
		if k < end && r.toks[k].Type != tokens.Comma {
			continue
		}
		hi := r.toks[k].Pos
		b.WriteString(r.element(kind, start, k, lo, hi))
		b.WriteString(r.in[hi : hi+1]) // the comma or the closing bracket
		start, lo = k+1, hi+1
	}
	return b.String()
}

func (r *condRewriter) element(kind tokens.Type, i, j, lo, hi int) string {
	for k := i; k < j; k++ {
		if c := r.close[k]; c >= 0 {
			k = c
			continue
		}
		t := r.toks[k].Type
		switch {
		case kind == tokens.LeftBracket && t == tokens.Colon:
			return r.text(i, j, lo, hi) // a slice
		case kind == tokens.LeftBrace && t == tokens.Colon, kind == tokens.LeftParenthesis && t == tokens.Assign:
			split := r.toks[k].Pos + 1
			return r.text(i, k+1, lo, split) + r.cond(k+1, j, split, hi)
		}
	}
	return r.cond(i, j, lo, hi)
}

// cond rewrites "A if C else B" at the top level of tokens [i, j).
func (r *condRewriter) cond(i, j, lo, hi int) string {
	ifAt, elseAt := -1, -1
	for k := i; k < j; k++ {
		if c := r.close[k]; c >= 0 {
			k = c
			continue
		}
		if ifAt < 0 && isName(r.toks[k], "if") {
			ifAt = k
		} else if ifAt >= 0 && isName(r.toks[k], "else") {
			elseAt = k
			break
		}
	}
	if ifAt <= i { // no conditional, or nothing before its "if"
		return r.text(i, j, lo, hi)
	}
	ifPos := r.toks[ifAt].Pos
	a := r.text(i, ifAt, lo, ifPos)
	var c, b string
	if elseAt < 0 {
		c, b = r.text(ifAt+1, j, ifPos+2, hi), "none"
	} else {
		elsePos := r.toks[elseAt].Pos
		c, b = r.text(ifAt+1, elseAt, ifPos+2, elsePos), r.cond(elseAt+1, j, elsePos+4, hi)
	}
	return "((" + c + ") and [" + a + "] or [" + b + "])[0]"
}
