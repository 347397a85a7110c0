package deploy

import (
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// flagKind is how a flag's value is parsed.
type flagKind int

const (
	flagString flagKind = iota // also Var, TextVar, Func: any text
	flagInt
	flagUint
	flagFloat
	flagBool
	flagDuration
)

// flagMethods are the flag.FlagSet methods that define a flag: the index
// of the name argument and the kind of value.
var flagMethods = map[string]struct {
	nameArg int
	kind    flagKind
}{
	"String": {0, flagString}, "StringVar": {1, flagString},
	"Int": {0, flagInt}, "IntVar": {1, flagInt}, "Int64": {0, flagInt}, "Int64Var": {1, flagInt},
	"Uint": {0, flagUint}, "UintVar": {1, flagUint}, "Uint64": {0, flagUint}, "Uint64Var": {1, flagUint},
	"Float64": {0, flagFloat}, "Float64Var": {1, flagFloat},
	"Bool": {0, flagBool}, "BoolVar": {1, flagBool}, "BoolFunc": {0, flagBool},
	"Duration": {0, flagDuration}, "DurationVar": {1, flagDuration},
	"Func": {0, flagString}, "Var": {1, flagString}, "TextVar": {1, flagString},
}

// commandFlags reads the flags of each spigot subcommand from the source
// of cmd/spigot: in every function, a variable assigned
// flag.NewFlagSet("NAME", ...) and the flags defined on it. Reading the
// source rather than keeping a list here means the manifests are checked
// against the flags the binary really has.
func commandFlags(dir string) (map[string]map[string]flagKind, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	fset := token.NewFileSet()
	sets := map[string]map[string]flagKind{}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			vars := map[string]string{} // variable → command
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				if err != nil {
					return false
				}
				switch n := n.(type) {
				case *ast.AssignStmt:
					if len(n.Lhs) != 1 || len(n.Rhs) != 1 {
						return true
					}
					call, ok := n.Rhs[0].(*ast.CallExpr)
					id, ok2 := n.Lhs[0].(*ast.Ident)
					if !ok || !ok2 || !isSelector(call.Fun, "flag", "NewFlagSet") || len(call.Args) == 0 {
						return true
					}
					cmd, ok := stringLit(call.Args[0])
					if !ok {
						err = fmt.Errorf("%s: flag.NewFlagSet with a name that is not a literal", fset.Position(n.Pos()))
						return false
					}
					vars[id.Name] = cmd
					if sets[cmd] == nil {
						sets[cmd] = map[string]flagKind{}
					}
				case *ast.CallExpr:
					sel, ok := n.Fun.(*ast.SelectorExpr)
					if !ok {
						return true
					}
					recv, ok := sel.X.(*ast.Ident)
					if !ok {
						return true
					}
					cmd, ok := vars[recv.Name]
					m, ok2 := flagMethods[sel.Sel.Name]
					if !ok || !ok2 {
						return true
					}
					if len(n.Args) <= m.nameArg {
						err = fmt.Errorf("%s: %s.%s with too few arguments", fset.Position(n.Pos()), recv.Name, sel.Sel.Name)
						return false
					}
					flagName, ok := stringLit(n.Args[m.nameArg])
					if !ok {
						err = fmt.Errorf("%s: a %s flag whose name is not a literal", fset.Position(n.Pos()), cmd)
						return false
					}
					sets[cmd][flagName] = m.kind
				}
				return true
			})
			if err != nil {
				return nil, err
			}
		}
	}
	return sets, nil
}

func isSelector(e ast.Expr, pkg, name string) bool {
	sel, ok := e.(*ast.SelectorExpr)
	if !ok || sel.Sel.Name != name {
		return false
	}
	id, ok := sel.X.(*ast.Ident)
	return ok && id.Name == pkg
}

func stringLit(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

// parseArgs parses args as the flag package does for a command with these
// flags, and returns the values of the flags given (as text; durations
// normalized) and the arguments left after the flags.
func parseArgs(cmd string, flags map[string]flagKind, args []string) (map[string]string, []string, error) {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	for name, kind := range flags {
		switch kind {
		case flagString:
			fs.String(name, "", "")
		case flagInt:
			fs.Int64(name, 0, "")
		case flagUint:
			fs.Uint64(name, 0, "")
		case flagFloat:
			fs.Float64(name, 0, "")
		case flagBool:
			fs.Bool(name, false, "")
		case flagDuration:
			fs.Duration(name, 0, "")
		}
	}
	if err := fs.Parse(args); err != nil {
		return nil, nil, fmt.Errorf("spigot %s %s: %w", cmd, strings.Join(args, " "), err)
	}
	set := map[string]string{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = f.Value.String() })
	return set, fs.Args(), nil
}

func TestCommandFlagsFromSource(t *testing.T) {
	sets, err := commandFlags("../cmd/spigot")
	if err != nil {
		t.Fatal(err)
	}
	// Flags of serve, tokenize and gateway that the manifests use, with their
	// kinds: if reading the source went wrong, these are missing.
	want := map[string]map[string]flagKind{
		"serve": {"m": flagString, "addr": flagString, "grpc-addr": flagString, "parallel": flagInt,
			"ctx": flagInt, "threads": flagInt, "max-queue": flagInt, "shutdown-timeout": flagDuration},
		"tokenize": {"m": flagString, "ids": flagBool},
		"gateway":  {"config": flagString, "addr": flagString, "shutdown-timeout": flagDuration, "drain-delay": flagDuration},
	}
	for cmd, flags := range want {
		for name, kind := range flags {
			if got, ok := sets[cmd][name]; !ok || got != kind {
				t.Errorf("commandFlags: %s --%s = kind %d (found %v), want kind %d", cmd, name, got, ok, kind)
			}
		}
	}
	for _, tc := range []struct {
		name string
		args []string
		ok   bool
	}{
		{"known flags", []string{"--addr", "0.0.0.0:8080", "--parallel", "4", "--shutdown-timeout", "60s"}, true},
		{"single dash and =", []string{"-m", "x.gguf", "-ctx=4096"}, true},
		{"misspelt flag", []string{"--max-queues", "4"}, false},
		{"int flag with text", []string{"--parallel", "four"}, false},
		{"duration without unit", []string{"--shutdown-timeout", "60"}, false},
	} {
		_, _, err := parseArgs("serve", sets["serve"], tc.args)
		if (err == nil) != tc.ok {
			t.Errorf("%s: parseArgs(serve, %q) error = %v, want ok %v", tc.name, tc.args, err, tc.ok)
		}
	}
}
