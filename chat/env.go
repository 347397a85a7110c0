package chat

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/nikolalohinski/gonja/v2/builtins"
	controlStructures "github.com/nikolalohinski/gonja/v2/builtins/control_structures"
	"github.com/nikolalohinski/gonja/v2/exec"
	"github.com/nikolalohinski/gonja/v2/loaders"
	"github.com/nikolalohinski/gonja/v2/nodes"
	"github.com/nikolalohinski/gonja/v2/parser"
	"github.com/nikolalohinski/gonja/v2/tokens"
)

// environment is shared by every template. gonja's own defaults are global
// and mutable, so this is a separate copy holding only what chat templates
// may use. Rendering only reads it.
var environment = newEnvironment()

func newEnvironment() *exec.Environment {
	filters := exec.NewFilterSet(map[string]exec.FilterFunction{}).Update(builtins.Filters)
	for name, f := range map[string]exec.FilterFunction{"tojson": filterToJSON, "items": filterItems, "dictsort": filterDictSort} {
		if err := filters.Replace(name, f); err != nil {
			panic(err)
		}
	}

	// range is per render (see Render); not lipsum (unbounded output) or
	// the gettext family.
	globals := map[string]any{"dict": dictFunc}
	for _, name := range []string{"cycler", "joiner", "namespace"} {
		fn, ok := builtins.GlobalFunctions.Get(name)
		if !ok {
			panic("chat: gonja has no global " + name)
		}
		globals[name] = fn
	}

	tests := exec.NewTestSet(map[string]exec.TestFunction{}).Update(builtins.Tests)
	// Python's "x is true" means x is the bool True; gonja's takes any
	// truthy value.
	for name, want := range map[string]bool{"true": true, "false": false} {
		if err := tests.Replace(name, func(_ *exec.Context, in *exec.Value, _ *exec.VarArgs) (bool, error) {
			return in.IsBool() && in.Bool() == want, nil
		}); err != nil {
			panic(err)
		}
	}

	return &exec.Environment{
		Context:           exec.NewContext(globals),
		Filters:           filters,
		Tests:             tests,
		ControlStructures: controlStructureSet(),
		Methods:           methodSet(),
	}
}

// controlStructureSet keeps the tags that work on one template and guards
// the two that repeat: for and macro get a step (and depth) check.
// include, import, from and extends would read other templates, and block
// makes recursion through self possible; none appear in chat templates.
func controlStructureSet() *exec.ControlStructureSet {
	set := map[string]parser.ControlStructureParser{}
	for _, name := range []string{"autoescape", "break", "call", "continue", "do", "filter", "if", "raw", "set", "with"} {
		p, ok := builtins.ControlStructures.Get(name)
		if !ok {
			panic("chat: gonja has no control structure " + name)
		}
		set[name] = p
	}
	forParser, _ := builtins.ControlStructures.Get("for")
	macroParser, _ := builtins.ControlStructures.Get("macro")
	set["for"] = guardFor(forParser)
	set["macro"] = guardMacro(macroParser)
	set["generation"] = generationParser
	return exec.NewControlStructureSet(set)
}

// generationParser parses {% generation %}...{% endgeneration %}, the tag
// transformers adds (its AssistantTracker extension) to mark assistant
// text for training masks. For rendering it is its body.
func generationParser(p, args *parser.Parser) (nodes.ControlStructure, error) {
	loc := p.Current()
	if !args.End() {
		return nil, args.Error("generation takes no arguments", nil)
	}
	body, endargs, err := p.WrapUntil("endgeneration")
	if err != nil {
		return nil, err
	}
	if !endargs.End() {
		return nil, endargs.Error("endgeneration takes no arguments", nil)
	}
	return generation{loc: loc, body: body}, nil
}

type generation struct {
	loc  *tokens.Token
	body *nodes.Wrapper
}

func (g generation) Position() *tokens.Token { return g.loc }
func (g generation) String() string          { return "generation" }

func (g generation) Execute(r *exec.Renderer, _ *nodes.ControlStructureBlock) error {
	return r.ExecuteWrapper(g.body)
}

// guardFor makes every iteration of a for loop count one step: it puts a
// step node first in the loop body.
func guardFor(parse parser.ControlStructureParser) parser.ControlStructureParser {
	return func(p, args *parser.Parser) (nodes.ControlStructure, error) {
		loc := p.Current()
		cs, err := parse(p, args)
		if err != nil {
			return nil, err
		}
		f, ok := cs.(*controlStructures.ForControlStructure)
		if !ok || f.BodyWrapper == nil {
			return nil, fmt.Errorf("unexpected for loop node %T", cs)
		}
		if f.Recursive {
			return nil, p.Error("recursive for loops are not supported", loc)
		}
		step := &nodes.ControlStructureBlock{Location: loc, Name: "step", ControlStructure: stepNode{loc}}
		f.BodyWrapper.Nodes = append([]nodes.Node{step}, f.BodyWrapper.Nodes...)
		return f, nil
	}
}

// guardMacro makes every call of a macro count one step and one level of
// depth.
func guardMacro(parse parser.ControlStructureParser) parser.ControlStructureParser {
	return func(p, args *parser.Parser) (nodes.ControlStructure, error) {
		cs, err := parse(p, args)
		if err != nil {
			return nil, err
		}
		m, ok := cs.(*controlStructures.MacroControlStructure)
		if !ok || m.Macro == nil {
			return nil, fmt.Errorf("unexpected macro node %T", cs)
		}
		return guardedMacro{m}, nil
	}
}

type guardedMacro struct {
	*controlStructures.MacroControlStructure
}

// Execute defines the macro, as gonja's own Execute does, but wraps the
// function it binds.
func (m guardedMacro) Execute(r *exec.Renderer, _ *nodes.ControlStructureBlock) error {
	fn, err := exec.MacroNodeToFunc(m.Macro, r)
	if err != nil {
		return fmt.Errorf("defining macro %q: %w", m.Name, err)
	}
	st := stateOf(r.Environment.Context)
	r.Environment.Context.Set(m.Name, exec.Macro(func(args *exec.VarArgs) *exec.Value {
		if st == nil {
			return fn(args)
		}
		if err := st.enter(); err != nil {
			return exec.AsValue(err)
		}
		defer st.leave()
		return fn(args)
	}))
	return nil
}

// Interface guards.
var (
	_ exec.ControlStructure = guardedMacro{}
	_ exec.ControlStructure = stepNode{}
	_ exec.ControlStructure = generation{}
	_ loaders.Loader        = sourceLoader("")
)

// sourceLoader serves the template's own source and refuses every other
// name, so nothing in a template can read files.
type sourceLoader string

func (l sourceLoader) Read(name string) (io.Reader, error) {
	if name != templateName {
		return nil, errNoLoading
	}
	return strings.NewReader(string(l)), nil
}

func (l sourceLoader) Resolve(name string) (string, error) {
	if name != templateName {
		return "", errNoLoading
	}
	return name, nil
}

func (l sourceLoader) Inherit(string) (loaders.Loader, error) { return l, nil }

var errNoLoading = errors.New("chat templates cannot load other templates")
