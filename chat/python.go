package chat

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/nikolalohinski/gonja/v2/builtins"
	"github.com/nikolalohinski/gonja/v2/exec"
)

// This file holds the Python behaviour chat templates rely on that gonja
// lacks or gets wrong: str methods with Python's optional arguments,
// mappings in a stable, Python-like order (dict methods, the items and
// dictsort filters, dict()), json.dumps for tojson, and strftime.

// methodSet is gonja's methods on Python types, with str.strip, lstrip,
// rstrip, split, rsplit and replace replaced (gonja requires arguments
// Python makes optional), and without the methods that mutate lists and
// dicts, which transformers' immutable sandbox refuses too.
func methodSet() exec.Methods {
	str := map[string]exec.Method[string]{
		"strip":   func(s string, _ *exec.Value, a *exec.VarArgs) (any, error) { return pyStrip(s, a, true, true) },
		"lstrip":  func(s string, _ *exec.Value, a *exec.VarArgs) (any, error) { return pyStrip(s, a, true, false) },
		"rstrip":  func(s string, _ *exec.Value, a *exec.VarArgs) (any, error) { return pyStrip(s, a, false, true) },
		"split":   func(s string, _ *exec.Value, a *exec.VarArgs) (any, error) { return pySplit(s, a, false) },
		"rsplit":  func(s string, _ *exec.Value, a *exec.VarArgs) (any, error) { return pySplit(s, a, true) },
		"replace": pyReplace,
	}
	copyMethods(builtins.Methods.Str, str, "capitalize", "capwords", "casefold", "center", "count",
		"encode", "endswith", "expandtabs", "find", "format", "format_map", "isalnum", "isalpha",
		"isascii", "isdecimal", "isdigit", "islower", "isnumeric", "isprintable", "isspace",
		"istitle", "isupper", "join", "ljust", "lower", "partition", "removeprefix",
		"removesuffix", "rfind", "rjust", "rpartition", "splitlines", "startswith", "swapcase",
		"title", "upper", "zfill")

	dict := map[string]exec.Method[map[string]any]{
		"keys":   dictKeys,
		"values": dictValues,
		"items":  dictItems,
	}
	copyMethods(builtins.Methods.Dict, dict, "get", "copy")

	list := map[string]exec.Method[[]any]{}
	copyMethods(builtins.Methods.List, list, "copy")

	boolean := map[string]exec.Method[bool]{}
	copyMethods(builtins.Methods.Bool, boolean, "bit_length", "bit_count", "as_integer_ratio")
	integer := map[string]exec.Method[int]{}
	copyMethods(builtins.Methods.Int, integer, "is_integer", "bit_length", "bit_count", "as_integer_ratio")
	float := map[string]exec.Method[float64]{}
	copyMethods(builtins.Methods.Float, float, "is_integer", "as_integer_ratio", "hex")

	return exec.Methods{
		Bool:  exec.NewMethodSet(boolean),
		Int:   exec.NewMethodSet(integer),
		Float: exec.NewMethodSet(float),
		Str:   exec.NewMethodSet(str),
		Dict:  exec.NewMethodSet(dict),
		List:  exec.NewMethodSet(list),
	}
}

func copyMethods[T any](from *exec.MethodSet[T], to map[string]exec.Method[T], names ...string) {
	for _, name := range names {
		m, ok := from.Get(name)
		if !ok {
			panic("chat: gonja has no method " + name)
		}
		to[name] = m
	}
}

// arg returns argument i, or the keyword argument name, or nil. Python's
// None counts as absent.
func arg(a *exec.VarArgs, i int, name string) *exec.Value {
	var v *exec.Value
	if i < len(a.Args) {
		v = a.Args[i]
	} else if kw, ok := a.KwArgs[name]; ok && name != "" {
		v = kw
	}
	if v == nil || v.IsNil() {
		return nil
	}
	return v
}

func checkArgs(a *exec.VarArgs, method string, maxArgs int, keywords ...string) error {
	if len(a.Args) > maxArgs {
		return fmt.Errorf("str.%s takes at most %d arguments (%d given)", method, maxArgs, len(a.Args))
	}
	for k := range a.KwArgs {
		if !slices.Contains(keywords, k) {
			return fmt.Errorf("str.%s got an unexpected keyword argument %q", method, k)
		}
	}
	return nil
}

// isPySpace is Python's str.isspace for one character.
func isPySpace(r rune) bool {
	return unicode.IsSpace(r) || r >= 0x1c && r <= 0x1f
}

// pyStrip is str.strip, lstrip and rstrip: whitespace by default, else
// any of the given characters.
func pyStrip(s string, a *exec.VarArgs, left, right bool) (any, error) {
	if err := checkArgs(a, "strip", 1); err != nil {
		return nil, err
	}
	trim := isPySpace
	if chars := arg(a, 0, ""); chars != nil {
		if !chars.IsString() {
			return nil, errors.New("strip arg must be None or str")
		}
		set := chars.String()
		trim = func(r rune) bool { return strings.ContainsRune(set, r) }
	}
	if left {
		s = strings.TrimLeftFunc(s, trim)
	}
	if right {
		s = strings.TrimRightFunc(s, trim)
	}
	return s, nil
}

// pySplit is str.split and str.rsplit.
func pySplit(s string, a *exec.VarArgs, fromRight bool) (any, error) {
	if err := checkArgs(a, "split", 2, "sep", "maxsplit"); err != nil {
		return nil, err
	}
	limit := -1
	if v := arg(a, 1, "maxsplit"); v != nil {
		if !v.IsInteger() {
			return nil, errors.New("maxsplit must be an integer")
		}
		limit = v.Integer()
	}
	var parts []string
	if v := arg(a, 0, "sep"); v != nil {
		if !v.IsString() {
			return nil, errors.New("sep must be None or str")
		}
		sep := v.String()
		if sep == "" {
			return nil, errors.New("empty separator")
		}
		parts = splitSep(s, sep, limit, fromRight)
	} else {
		parts = splitSpace(s, limit, fromRight)
	}
	out := make([]any, len(parts))
	for i, p := range parts {
		out[i] = p
	}
	return out, nil
}

func splitSep(s, sep string, limit int, fromRight bool) []string {
	if limit < 0 {
		return strings.Split(s, sep)
	}
	if !fromRight {
		return strings.SplitN(s, sep, limit+1)
	}
	var rev []string
	for len(rev) < limit {
		i := strings.LastIndex(s, sep)
		if i < 0 {
			break
		}
		rev = append(rev, s[i+len(sep):])
		s = s[:i]
	}
	rev = append(rev, s)
	slices.Reverse(rev)
	return rev
}

// splitSpace splits on runs of whitespace and drops empty fields, as
// Python does with no separator; after limit splits the rest is one field.
func splitSpace(s string, limit int, fromRight bool) []string {
	if !fromRight {
		var out []string
		for {
			s = strings.TrimLeftFunc(s, isPySpace)
			if s == "" {
				return out
			}
			if limit >= 0 && len(out) == limit {
				return append(out, s)
			}
			i := strings.IndexFunc(s, isPySpace)
			if i < 0 {
				return append(out, s)
			}
			out = append(out, s[:i])
			s = s[i:]
		}
	}
	var rev []string
	for {
		s = strings.TrimRightFunc(s, isPySpace)
		if s == "" {
			break
		}
		if limit >= 0 && len(rev) == limit {
			rev = append(rev, s)
			break
		}
		i := strings.LastIndexFunc(s, isPySpace)
		if i < 0 {
			rev = append(rev, s)
			break
		}
		_, n := utf8.DecodeRuneInString(s[i:])
		rev = append(rev, s[i+n:])
		s = s[:i]
	}
	slices.Reverse(rev)
	return rev
}

// pyReplace is str.replace(old, new, count=-1).
func pyReplace(s string, _ *exec.Value, a *exec.VarArgs) (any, error) {
	if err := checkArgs(a, "replace", 3, "count"); err != nil {
		return nil, err
	}
	old, repl := arg(a, 0, ""), arg(a, 1, "")
	if old == nil || repl == nil || !old.IsString() || !repl.IsString() {
		return nil, errors.New("replace expects two strings")
	}
	n := -1
	if v := arg(a, 2, "count"); v != nil {
		if !v.IsInteger() {
			return nil, errors.New("replace count must be an integer")
		}
		n = v.Integer()
	}
	return strings.Replace(s, old.String(), repl.String(), n), nil
}

// messageKeys is the order of a message's keys, as built in Render.
var messageKeys = []string{"role", "content", "name"}

// mappingItems returns a mapping's keys and values in the order Python
// would show them: insertion order for messages and dict literals (gonja
// keeps a literal's pairs), sorted for other maps, whose Go order is
// random. ok is false if v is not a mapping.
func mappingItems(v *exec.Value) (keys []string, vals []any, ok bool) {
	for {
		inner, isValue := v.Interface().(*exec.Value)
		if !isValue || inner == nil {
			break
		}
		v = inner
	}
	var pairs []*exec.Pair
	switch d := v.Interface().(type) {
	case exec.Dict:
		pairs = d.Pairs
	case *exec.Dict:
		if d == nil {
			return nil, nil, false
		}
		pairs = d.Pairs
	case chatMessage:
		for _, k := range messageKeys {
			if x, ok := d[k]; ok {
				keys, vals = append(keys, k), append(vals, x)
			}
		}
		var extra []string // assigned by the template
		for k := range d {
			if !slices.Contains(messageKeys, k) {
				extra = append(extra, k)
			}
		}
		sort.Strings(extra)
		for _, k := range extra {
			keys, vals = append(keys, k), append(vals, d[k])
		}
		return keys, vals, true
	}
	if pairs != nil {
		seen := make(map[string]int, len(pairs))
		for _, p := range pairs {
			k := p.Key.String()
			if i, dup := seen[k]; dup {
				vals[i] = p.Value // a repeated key keeps its place, takes the last value
				continue
			}
			seen[k] = len(keys)
			keys, vals = append(keys, k), append(vals, p.Value)
		}
		return keys, vals, true
	}
	rv := reflect.ValueOf(v.Interface())
	if rv.Kind() != reflect.Map {
		return nil, nil, false
	}
	byKey := make(map[string]any, rv.Len())
	for it := rv.MapRange(); it.Next(); {
		k := fmt.Sprint(it.Key().Interface())
		keys = append(keys, k)
		byKey[k] = it.Value().Interface()
	}
	sort.Strings(keys)
	for _, k := range keys {
		vals = append(vals, byKey[k])
	}
	return keys, vals, true
}

func noArgs(a *exec.VarArgs, method string) error {
	if len(a.Args)+len(a.KwArgs) > 0 {
		return fmt.Errorf("%s() takes no arguments", method)
	}
	return nil
}

func dictKeys(_ map[string]any, v *exec.Value, a *exec.VarArgs) (any, error) {
	if err := noArgs(a, "keys"); err != nil {
		return nil, err
	}
	keys, _, _ := mappingItems(v)
	out := make([]any, len(keys))
	for i, k := range keys {
		out[i] = k
	}
	return out, nil
}

func dictValues(_ map[string]any, v *exec.Value, a *exec.VarArgs) (any, error) {
	if err := noArgs(a, "values"); err != nil {
		return nil, err
	}
	_, vals, _ := mappingItems(v)
	return vals, nil
}

func dictItems(_ map[string]any, v *exec.Value, a *exec.VarArgs) (any, error) {
	if err := noArgs(a, "items"); err != nil {
		return nil, err
	}
	return itemPairs(v), nil
}

func itemPairs(v *exec.Value) []any {
	keys, vals, _ := mappingItems(v)
	out := make([]any, len(keys))
	for i := range keys {
		out[i] = []any{keys[i], vals[i]}
	}
	return out
}

// dictFunc is dict(mapping, **kwargs). gonja's orders the keyword
// arguments at random (they reach it in a Go map); here they come sorted,
// after the mapping's own pairs.
func dictFunc(a *exec.VarArgs) *exec.Value {
	d := exec.NewDict()
	if len(a.Args) > 1 {
		return exec.AsValue(errors.New("dict expected at most 1 argument"))
	}
	if len(a.Args) == 1 {
		keys, vals, ok := mappingItems(a.Args[0])
		if !ok {
			return exec.AsValue(errors.New("dict argument must be a mapping"))
		}
		for i, k := range keys {
			v, isValue := vals[i].(*exec.Value)
			if !isValue {
				v = exec.AsValue(vals[i])
			}
			d.Pairs = append(d.Pairs, &exec.Pair{Key: exec.AsValue(k), Value: v})
		}
	}
	names := make([]string, 0, len(a.KwArgs))
	for k := range a.KwArgs {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		d.Pairs = append(d.Pairs, &exec.Pair{Key: exec.AsValue(k), Value: a.KwArgs[k]})
	}
	return exec.AsValue(d)
}

// filterItems is the items filter. gonja's returns a Go map's pairs in
// random order, and none for a dict literal.
func filterItems(_ *exec.Evaluator, in *exec.Value, params *exec.VarArgs) *exec.Value {
	switch {
	case in.IsError():
		return in
	case len(params.Args)+len(params.KwArgs) > 0:
		return exec.AsValue(errors.New("items takes no arguments"))
	case in.IsNil():
		return exec.AsValue([]any{})
	case in.IsList():
		return in
	}
	if _, _, ok := mappingItems(in); !ok {
		return exec.AsValue(errors.New("items requires a mapping"))
	}
	return exec.AsValue(itemPairs(in))
}

// filterDictSort is gonja's dictsort, which sees no pairs in a dict
// literal; literals are handed to it as maps.
func filterDictSort(e *exec.Evaluator, in *exec.Value, params *exec.VarArgs) *exec.Value {
	if keys, vals, ok := mappingItems(in); ok {
		m := make(map[string]any, len(keys))
		for i, k := range keys {
			m[k] = vals[i]
		}
		in = exec.AsValue(m)
	}
	return gonjaDictSort(e, in, params)
}

var gonjaDictSort = func() exec.FilterFunction {
	f, ok := builtins.Filters.Get("dictsort")
	if !ok {
		panic("chat: gonja has no dictsort filter")
	}
	return f
}()

// filterToJSON is tojson as transformers defines it:
// json.dumps(x, ensure_ascii=False, indent=indent, separators=separators,
// sort_keys=sort_keys). Unlike Jinja's own it does not HTML-escape.
func filterToJSON(_ *exec.Evaluator, in *exec.Value, params *exec.VarArgs) *exec.Value {
	if in.IsError() {
		return in
	}
	var (
		enc     = jsonEncoder{itemSep: ", ", keySep: ": "}
		indent  *exec.Value
		sepsArg *exec.Value
	)
	for k, v := range params.KwArgs {
		switch k {
		case "indent":
			indent = v
		case "separators":
			sepsArg = v
		case "sort_keys":
			enc.sortKeys = v.IsTrue()
		case "ensure_ascii":
			enc.ascii = v.IsTrue()
		default:
			return exec.AsValue(fmt.Errorf("tojson: unexpected keyword argument %q", k))
		}
	}
	if len(params.Args) > 1 {
		return exec.AsValue(errors.New("tojson takes at most one positional argument (indent)"))
	}
	if len(params.Args) == 1 {
		indent = params.Args[0]
	}
	if indent != nil && !indent.IsNil() {
		switch {
		case indent.IsInteger():
			enc.indent = strings.Repeat(" ", max(0, min(indent.Integer(), 64)))
		case indent.IsString():
			enc.indent = indent.String()
		default:
			return exec.AsValue(errors.New("tojson: indent must be an integer or a string"))
		}
		enc.pretty = true
		enc.itemSep = ","
	}
	if sepsArg != nil && !sepsArg.IsNil() {
		if !sepsArg.IsList() || sepsArg.Len() != 2 {
			return exec.AsValue(errors.New("tojson: separators must be a pair of strings"))
		}
		enc.itemSep, enc.keySep = sepsArg.Index(0).String(), sepsArg.Index(1).String()
	}
	var b strings.Builder
	if err := enc.encode(&b, in.Interface(), 0); err != nil {
		return exec.AsValue(fmt.Errorf("tojson: %w", err))
	}
	return exec.AsSafeValue(b.String())
}

type jsonEncoder struct {
	indent          string
	pretty          bool
	itemSep, keySep string
	sortKeys, ascii bool
}

// maxJSONDepth stops self-referencing values (a namespace holding itself).
const maxJSONDepth = 100

func (e *jsonEncoder) newline(b *strings.Builder, level int) {
	if e.pretty {
		b.WriteByte('\n')
		for range level {
			b.WriteString(e.indent)
		}
	}
}

func (e *jsonEncoder) encode(b *strings.Builder, x any, level int) error {
	if level > maxJSONDepth {
		return errors.New("value nests too deeply (or contains itself)")
	}
	switch v := x.(type) {
	case nil:
		b.WriteString("null")
		return nil
	case *exec.Value:
		if v == nil {
			b.WriteString("null")
			return nil
		}
		return e.encode(b, v.Interface(), level)
	case string:
		e.str(b, v)
		return nil
	case bool:
		b.WriteString(strconv.FormatBool(v))
		return nil
	case float32:
		b.WriteString(pyFloat(float64(v)))
		return nil
	case float64:
		b.WriteString(pyFloat(v))
		return nil
	}
	if keys, vals, ok := mappingItems(exec.AsValue(x)); ok {
		if e.sortKeys {
			keys, vals = sortedItems(keys, vals)
		}
		return e.object(b, keys, vals, level)
	}
	rv := reflect.ValueOf(x)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		b.WriteString(strconv.FormatInt(rv.Int(), 10))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		b.WriteString(strconv.FormatUint(rv.Uint(), 10))
	case reflect.String:
		e.str(b, rv.String())
	case reflect.Bool:
		b.WriteString(strconv.FormatBool(rv.Bool()))
	case reflect.Float32, reflect.Float64:
		b.WriteString(pyFloat(rv.Float()))
	case reflect.Slice, reflect.Array:
		if rv.Kind() == reflect.Slice && rv.IsNil() {
			b.WriteString("[]")
			return nil
		}
		if rv.Len() == 0 {
			b.WriteString("[]")
			return nil
		}
		b.WriteByte('[')
		for i := range rv.Len() {
			if i > 0 {
				b.WriteString(e.itemSep)
			}
			e.newline(b, level+1)
			if err := e.encode(b, rv.Index(i).Interface(), level+1); err != nil {
				return err
			}
		}
		e.newline(b, level)
		b.WriteByte(']')
	case reflect.Pointer, reflect.Interface:
		if rv.IsNil() {
			b.WriteString("null")
			return nil
		}
		return e.encode(b, rv.Elem().Interface(), level+1)
	default:
		return fmt.Errorf("object of type %T is not JSON serializable", x)
	}
	return nil
}

func sortedItems(keys []string, vals []any) ([]string, []any) {
	idx := make([]int, len(keys))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return keys[idx[a]] < keys[idx[b]] })
	k2, v2 := make([]string, len(keys)), make([]any, len(vals))
	for i, j := range idx {
		k2[i], v2[i] = keys[j], vals[j]
	}
	return k2, v2
}

func (e *jsonEncoder) object(b *strings.Builder, keys []string, vals []any, level int) error {
	if len(keys) == 0 {
		b.WriteString("{}")
		return nil
	}
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteString(e.itemSep)
		}
		e.newline(b, level+1)
		e.str(b, k)
		b.WriteString(e.keySep)
		if err := e.encode(b, vals[i], level+1); err != nil {
			return err
		}
	}
	e.newline(b, level)
	b.WriteByte('}')
	return nil
}

// str writes a JSON string the way Python's json module does: only ", \
// and control characters escaped, and with ensure_ascii every non-ASCII
// character as \uXXXX (surrogate pairs above the BMP).
func (e *jsonEncoder) str(b *strings.Builder, s string) {
	const hex = "0123456789abcdef"
	u4 := func(r rune) {
		b.WriteString(`\u`)
		b.WriteByte(hex[r>>12&0xf])
		b.WriteByte(hex[r>>8&0xf])
		b.WriteByte(hex[r>>4&0xf])
		b.WriteByte(hex[r&0xf])
	}
	b.WriteByte('"')
	for _, r := range s { // invalid UTF-8 reads as U+FFFD
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		default:
			switch {
			case r < 0x20 || e.ascii && r > 0x7e && r <= 0xffff:
				u4(r)
			case e.ascii && r > 0xffff:
				r -= 0x10000
				u4(0xd800 + r>>10)
				u4(0xdc00 + r&0x3ff)
			default:
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
}

// pyFloat formats a float as Python's repr does: the shortest digits that
// round-trip, positional from 1e-4 up to 1e16, always with a '.' or an
// exponent.
func pyFloat(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	s := strconv.FormatFloat(f, 'e', -1, 64) // d.ddde±XX
	mant, expPart, _ := strings.Cut(s, "e")
	exp, _ := strconv.Atoi(expPart)
	if exp < -4 || exp >= 16 {
		sign := "+"
		if exp < 0 {
			sign, exp = "-", -exp
		}
		return fmt.Sprintf("%se%s%02d", mant, sign, exp)
	}
	s = strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.ContainsAny(s, ".") {
		s += ".0"
	}
	return s
}

// strftime formats t like Python's time.strftime for the directives
// templates use; others pass through as written.
func strftime(t time.Time, format string) string {
	var b strings.Builder
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c != '%' || i+1 == len(format) {
			b.WriteByte(c)
			continue
		}
		i++
		switch format[i] {
		case 'a':
			b.WriteString(t.Format("Mon"))
		case 'A':
			b.WriteString(t.Format("Monday"))
		case 'b', 'h':
			b.WriteString(t.Format("Jan"))
		case 'B':
			b.WriteString(t.Format("January"))
		case 'd':
			fmt.Fprintf(&b, "%02d", t.Day())
		case 'e':
			fmt.Fprintf(&b, "%2d", t.Day())
		case 'H':
			fmt.Fprintf(&b, "%02d", t.Hour())
		case 'I':
			fmt.Fprintf(&b, "%02d", (t.Hour()+11)%12+1)
		case 'j':
			fmt.Fprintf(&b, "%03d", t.YearDay())
		case 'm':
			fmt.Fprintf(&b, "%02d", int(t.Month()))
		case 'M':
			fmt.Fprintf(&b, "%02d", t.Minute())
		case 'p':
			b.WriteString(t.Format("PM"))
		case 'S':
			fmt.Fprintf(&b, "%02d", t.Second())
		case 'y':
			fmt.Fprintf(&b, "%02d", t.Year()%100)
		case 'Y':
			fmt.Fprintf(&b, "%d", t.Year())
		case 'z':
			b.WriteString(t.Format("-0700"))
		case 'Z':
			b.WriteString(t.Format("MST"))
		case 'F':
			b.WriteString(t.Format("2006-01-02"))
		case 'T':
			b.WriteString(t.Format("15:04:05"))
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(format[i])
		}
	}
	return b.String()
}
