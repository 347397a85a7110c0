package hub

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestParseRef(t *testing.T) {
	cases := []struct {
		in   string
		want Ref
		err  string
	}{
		{in: "hf:TheBloke/Llama-2-7B-GGUF/llama-2-7b.Q4_0.gguf", want: Ref{"TheBloke", "Llama-2-7B-GGUF", "llama-2-7b.Q4_0.gguf", "main"}},
		{in: "hf:o/r/dir/sub/m.gguf@v1.0", want: Ref{"o", "r", "dir/sub/m.gguf", "v1.0"}},
		{in: "hf:o/r/m.gguf@refs/pr/12", want: Ref{"o", "r", "m.gguf", "refs/pr/12"}},
		{in: "hf:o/r/m.gguf@0123abcd", want: Ref{"o", "r", "m.gguf", "0123abcd"}},
		{in: "o/r/m.gguf", err: "does not begin"},
		{in: "hf:o/r", err: "want hf:OWNER/REPO/FILE"},
		{in: "hf:o/r/", err: "file: empty"},
		{in: "hf:/r/m.gguf", err: "owner: empty"},
		{in: "hf:o/.r/m.gguf", err: "begins with '.'"},
		{in: "hf:o/r r/m.gguf", err: "repository: character"},
		{in: "hf:o/r/../m.gguf", err: `path element ".."`},
		{in: "hf:o/r/a//m.gguf", err: `path element ""`},
		{in: "hf:o/r/a\\m.gguf", err: "character"},
		{in: "hf:o/r/C:m.gguf", err: "character"},
		{in: "hf:o/r/m.gguf@", err: "revision: empty"},
		{in: "hf:o/r/m.gguf@a b", err: "revision: character"},
		{in: "hf:o/r/m.gguf@x@y", err: "revision: character"},
		{in: "hf:o/r/m.gguf.part", err: ".part"},
		{in: "hf:o/r/m.gguf\n", err: "character"},
	}
	for _, tc := range cases {
		got, err := ParseRef(tc.in)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParseRef(%q) error %v, want one mentioning %q", tc.in, err, tc.err)
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("ParseRef(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	if !IsRef("hf:x") || IsRef("model.gguf") || IsRef("/hf:x") {
		t.Error("IsRef wrong")
	}
}

// FuzzParseRef checks that a parsed reference prints back to one that
// parses the same, and that its cache path cannot leave the cache.
func FuzzParseRef(f *testing.F) {
	for _, s := range []string{
		"hf:o/r/m.gguf", "hf:o/r/a/b/m.gguf@refs/pr/1", "hf:o/r/m.gguf@main", "hf:o/r/..",
		"hf:o/r/./m", "hf:o/r/m@", "hf:a/b/c@d@e", "hf:o/r/\x00", "hf:..//", "hf:o/r/é.gguf",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRef(s)
		if err != nil {
			return
		}
		r2, err := ParseRef(r.String())
		if err != nil || r2 != r {
			t.Fatalf("ParseRef(%q) = %+v; its String %q parses to %+v, %v", s, r, r.String(), r2, err)
		}
		p := r.cachePath()
		if !filepath.IsLocal(p) {
			t.Fatalf("ParseRef(%q): cache path %q is not local", s, p)
		}
		if got := filepath.ToSlash(p); !strings.HasPrefix(got, r.Owner+"/") || !strings.HasSuffix(got, "/"+r.File) {
			t.Fatalf("ParseRef(%q): cache path %q", s, p)
		}
		if strings.Count(filepath.ToSlash(p), "/") != 2+strings.Count(r.File, "/") {
			t.Fatalf("ParseRef(%q): cache path %q has extra levels", s, p)
		}
	})
}
