package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// This file compares Spigot's answers in other servers' wire formats with
// examples of what those servers send (testdata/wire, README there):
// the same fields, with the same JSON types, nested objects included.

// opaque lists fields whose contents depend on the model and are compared
// only as "an object".
var opaque = map[string]bool{"model_info": true}

// jsonType names the JSON type of a decoded value.
func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case json.Number, float64:
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	}
	return "object"
}

// shapeDiff returns how got's structure differs from want's: missing or
// extra fields, and values of another type. Arrays compare their first
// elements when both have one.
func shapeDiff(path string, want, got any) []string {
	wt, gt := jsonType(want), jsonType(got)
	if wt != gt {
		return []string{fmt.Sprintf("%s: %s, want %s", path, gt, wt)}
	}
	var diffs []string
	switch w := want.(type) {
	case map[string]any:
		g := got.(map[string]any)
		keys := make([]string, 0, len(w)+len(g))
		for k := range w {
			keys = append(keys, k)
		}
		for k := range g {
			if _, ok := w[k]; !ok {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			wv, inW := w[k]
			gv, inG := g[k]
			switch {
			case !inG:
				diffs = append(diffs, fmt.Sprintf("%s.%s: missing", path, k))
			case !inW:
				diffs = append(diffs, fmt.Sprintf("%s.%s: not in the recorded example", path, k))
			case opaque[k]:
				if jsonType(wv) != jsonType(gv) {
					diffs = append(diffs, fmt.Sprintf("%s.%s: %s, want %s", path, k, jsonType(gv), jsonType(wv)))
				}
			default:
				diffs = append(diffs, shapeDiff(path+"."+k, wv, gv)...)
			}
		}
	case []any:
		g := got.([]any)
		if len(w) > 0 && len(g) > 0 {
			diffs = append(diffs, shapeDiff(path+"[0]", w[0], g[0])...)
		}
	}
	return diffs
}

func decodeJSON(t testing.TB, what string, b []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("%s: %v: %s", what, err, b)
	}
	return v
}

// wireExample reads a recorded example: its JSON objects, one per line
// (NDJSON), per "data:" line (SSE), or one (JSON).
func wireExample(t testing.TB, name string) []any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "wire", name))
	if err != nil {
		t.Fatal(err)
	}
	return splitObjects(t, name, b)
}

// splitObjects splits a body into its JSON objects: SSE data lines,
// NDJSON lines, or one JSON object.
func splitObjects(t testing.TB, what string, b []byte) []any {
	t.Helper()
	var objs []any
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if data, ok := strings.CutPrefix(line, "data:"); ok {
			line = strings.TrimSpace(data)
		}
		objs = append(objs, decodeJSON(t, what, []byte(line)))
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return objs
}

// checkShape fails the test if got's structure differs from want's.
func checkShape(t testing.TB, what string, want, got any) {
	t.Helper()
	for _, d := range shapeDiff("", want, got) {
		t.Errorf("%s: %s", what, d)
	}
}

// TestShapeDiff checks the comparison itself: it must notice missing and
// extra fields and changed types, nested too.
func TestShapeDiff(t *testing.T) {
	want := decodeJSON(t, "want", []byte(`{"a":1,"b":{"c":"x","d":[{"e":true}]},"f":null}`))
	for _, tc := range []struct {
		got  string
		diff int
	}{
		{`{"a":2,"b":{"c":"y","d":[{"e":false}]},"f":null}`, 0},
		{`{"a":2,"b":{"c":"y","d":[]},"f":null}`, 0},
		{`{"a":"2","b":{"c":"y","d":[{"e":false}]},"f":null}`, 1},
		{`{"a":2,"b":{"d":[{"e":false}]},"f":null}`, 1},
		{`{"a":2,"b":{"c":"y","d":[{"e":1}]},"f":null,"g":1}`, 2},
		{`{"a":2,"b":{"c":"y","d":[{"e":true}]},"f":"x"}`, 1},
	} {
		if got := shapeDiff("", want, decodeJSON(t, "got", []byte(tc.got))); len(got) != tc.diff {
			t.Errorf("shapeDiff(%s) = %q, want %d differences", tc.got, got, tc.diff)
		}
	}
}
