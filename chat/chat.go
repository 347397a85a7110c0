// Package chat renders chat prompts with the model's own chat template: the
// Jinja2 program stored in a GGUF file's tokenizer.chat_template, the same
// one Hugging Face transformers runs in apply_chat_template.
//
// Templates run the way transformers runs them: trim_blocks and
// lstrip_blocks on, messages as dicts with "role" and "content" (and "name"
// when set), bos_token, eos_token and add_generation_prompt defined, and the
// helpers transformers adds: raise_exception(msg), strftime_now(fmt), a
// tojson filter that writes JSON like Python's json.dumps(ensure_ascii=False),
// {% break %} and {% continue %}, and {% generation %} blocks.
//
// # Library
//
// The standard library first: text/template is not Jinja, and chat templates
// are Jinja2 programs with Python semantics (namespaces, loop.*, filters,
// str methods). Writing a Jinja interpreter by hand is thousands of lines,
// so rendering uses github.com/nikolalohinski/gonja/v2: a pure-Go Jinja2
// implementation that aims at the Python engine's behaviour, is actively
// released (v2.9.1, 2026), and has extension points for filters, tests,
// methods, globals and control structures. The alternatives were worse
// fits: noirbizarre/gonja is the unmaintained v1 it was forked from,
// flosch/pongo2 is Django syntax, hnakamur/mjingo is in early development,
// kluctl/go-jinja2 embeds CPython.
//
// Where gonja differs from Python in ways real templates hit, this package
// fixes it through gonja's extension points: str.strip, lstrip, rstrip,
// split, rsplit and replace (Python's optional arguments); dict.keys,
// values and items, the items and dictsort filters and dict() (gonja gives
// random or no order, or nothing for dict literals); the tojson filter
// (Python's separators, no HTML escaping); the true and false tests (bools
// only); range (a list, capped); and raise_exception and strftime_now,
// which Jinja2 itself does not define.
// Every template in testdata renders exactly as Python Jinja2 renders it.
// Two parser gaps are worked around by rewriting the source before gonja
// parses it (preprocess.go): a conditional expression inside brackets,
// ('a' if x else 'b') + 'c', which gonja cannot parse, and lstrip_blocks,
// which gonja also applies to spaces between two tags on one line.
//
// # Limits
//
// A template is a program, and a bad one must not take the server down.
// Parse refuses templates over [MaxSourceSize] bytes or with brackets or
// unary operators nested over 100 deep (the parser is recursive), and
// disables everything that reads other templates (include, import, from,
// extends, block). Render recovers panics from the engine and stops a
// template that
//   - runs over 2 seconds,
//   - makes more than 1<<20 loop iterations and macro calls in all,
//   - nests macro calls more than 64 deep,
//   - asks range() for more than 100,000 numbers (Jinja's own sandbox cap),
//   - or writes more than 1 MiB plus four times the size of the messages.
//
// Time and steps are checked at every loop iteration, macro call and write;
// one expression is not interrupted. Nothing caps memory inside a single
// expression: 'x' * 10**9, a padding width of 10**9, or a string doubled
// in a short loop allocates before any check sees it. Templates come from
// the model file or the operator's --chat-template, not from clients
// (message text is data, never template code), so these limits guard
// against runaway templates, not hostile ones.
//
// # Not supported
//
// Recursive for loops ({% for ... recursive %}) are refused, and so is
// tuple assignment ({% set a, b = ... %}). gonja cannot tell an undefined
// value from none, so none prints as an empty string (Python prints None),
// none|default(x) gives x, and an undefined value "is none". The format
// filter takes Go verbs, not Python's. Tuples print as lists and 2 ** 3
// gives 8.0. Mappings without an order of their own (namespaces, dict()'s
// keyword arguments) go in sorted key order, and so does a message in a
// "for key in message" loop, where Python keeps insertion order.
package chat

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nikolalohinski/gonja/v2/config"
	"github.com/nikolalohinski/gonja/v2/exec"
	"github.com/nikolalohinski/gonja/v2/tokens"
)

// Message is one turn of a conversation.
type Message struct {
	Role    string // "system", "user", "assistant", "tool"...
	Content string
	Name    string // optional; templates see message.name only when set
}

// MaxSourceSize is the largest template Parse accepts. The largest real chat
// templates are a few tens of kilobytes.
const MaxSourceSize = 256 << 10

// ErrLimit is wrapped by Render's error when a template exceeds a rendering
// limit (time, steps, macro depth, range size or output size).
var ErrLimit = errors.New("template exceeded a rendering limit")

// RaiseError is the message a template gave raise_exception, for example
// "Conversation roles must alternate user/assistant/user/assistant/...".
// It means the conversation does not fit the model's template: a caller
// error, not a server error. Render wraps it; find it with [errors.As].
type RaiseError struct {
	Message string
}

// Error returns the template's message as it gave it.
func (e *RaiseError) Error() string { return e.Message }

// Template is a compiled chat template. It is safe for concurrent use.
type Template struct {
	src      string
	bos, eos string
	tpl      *exec.Template
	lim      limits
	// now is the clock strftime_now reads; tests replace it.
	now func() time.Time
}

// Parse compiles a Jinja chat template. bos and eos are the model's BOS/EOS
// token texts, exposed to the template as bos_token and eos_token.
func Parse(src, bos, eos string) (t *Template, err error) {
	defer func() {
		if r := recover(); r != nil {
			t, err = nil, fmt.Errorf("chat: parsing template: internal error: %v", r)
		}
	}()
	if len(src) > MaxSourceSize {
		return nil, fmt.Errorf("chat: parsing template: %d bytes is over the %d-byte limit", len(src), MaxSourceSize)
	}
	cfg := newConfig()
	if err := checkNesting(src, cfg); err != nil {
		return nil, fmt.Errorf("chat: parsing template: %w", err)
	}
	tpl, err := exec.NewTemplate(templateName, cfg, sourceLoader(preprocess(src, cfg)), environment)
	if err != nil {
		// gonja quotes the whole source in front of the parser's message.
		if inner := errors.Unwrap(err); inner != nil {
			err = inner
		}
		return nil, fmt.Errorf("chat: parsing template: %v", err)
	}
	return &Template{src: src, bos: bos, eos: eos, tpl: tpl, lim: defaultLimits, now: time.Now}, nil
}

// Source returns the template text Parse was given.
func (t *Template) Source() string { return t.src }

// Render renders the conversation. With addGenerationPrompt the prompt ends
// with the opening of an assistant turn, ready for generation.
//
// A template that calls raise_exception gives an error wrapping
// [*RaiseError]; one that exceeds a limit gives an error wrapping
// [ErrLimit]. Errors start with "chat: rendering template: ".
func (t *Template) Render(msgs []Message, addGenerationPrompt bool) (out string, err error) {
	input := 0
	list := make([]any, len(msgs))
	for i, m := range msgs {
		// Fresh maps every call: a template may assign into them.
		d := chatMessage{"role": m.Role, "content": m.Content}
		if m.Name != "" {
			d["name"] = m.Name
		}
		list[i] = d
		input += len(m.Role) + len(m.Content) + len(m.Name)
	}
	st := newRenderState(t.lim, input, t.now())
	defer func() {
		if r := recover(); r != nil {
			out, err = "", fmt.Errorf("chat: rendering template: internal error: %v", r)
		}
	}()
	ctx := exec.NewContext(map[string]any{
		"messages":              list,
		"bos_token":             t.bos,
		"eos_token":             t.eos,
		"add_generation_prompt": addGenerationPrompt,
		"raise_exception":       st.raiseException,
		"strftime_now":          st.strftimeNow,
		"range":                 st.rangeFunc,
		stateKey:                st,
	})
	var b strings.Builder
	execErr := t.tpl.Execute(&limitWriter{st: st, w: &b}, ctx)
	// The state's error wins: the engine may have swallowed or rewrapped it.
	if st.err != nil {
		return "", fmt.Errorf("chat: rendering template: %w", st.err)
	}
	if execErr != nil {
		msg := strings.TrimPrefix(execErr.Error(), "unable to execute template: ")
		return "", fmt.Errorf("chat: rendering template: %s", msg)
	}
	return b.String(), nil
}

// chatMessage is a message as templates see it. Its own type lets tojson
// keep Python's key order (role, content, name) instead of sorting.
type chatMessage map[string]any

// templateName is the one name the loader knows.
const templateName = "chat_template"

func newConfig() *config.Config {
	cfg := config.New()
	// As transformers sets up its ImmutableSandboxedEnvironment; vLLM
	// (through transformers) and llama.cpp render the same way.
	cfg.TrimBlocks = true
	cfg.LeftStripBlocks = true
	return cfg
}

// maxNesting bounds bracket depth and runs of unary operators. gonja's
// parser and evaluator recurse on both, and Go cannot recover from a stack
// overflow, so a template like ((((... is refused before parsing.
const maxNesting = 100

func checkNesting(src string, cfg *config.Config) error {
	depth, unary := 0, 0
	for s := tokens.LexAll(src, cfg); !s.End(); s.Next() {
		tok := s.Current()
		switch tok.Type {
		case tokens.LeftParenthesis, tokens.LeftBracket, tokens.LeftBrace:
			depth++
			if depth > maxNesting {
				return fmt.Errorf("line %d: brackets nest more than %d deep", tok.Line, maxNesting)
			}
		case tokens.RightParenthesis, tokens.RightBracket, tokens.RightBrace:
			depth--
		}
		switch {
		case tok.Type == tokens.Addition || tok.Type == tokens.Subtraction || tok.Type == tokens.Not ||
			tok.Type == tokens.Name && tok.Val == "not":
			unary++
			if unary > maxNesting {
				return fmt.Errorf("line %d: more than %d operators in a row", tok.Line, maxNesting)
			}
		default:
			unary = 0
		}
	}
	return nil
}
