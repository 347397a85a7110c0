package chat

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzRender feeds random template sources and conversations through Parse
// and Render: neither may panic, hang or exceed the output cap.
func FuzzRender(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.jinja"))
	for _, name := range files {
		src, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(src), "Hello", uint8(3), true)
	}
	for _, src := range namedTemplates {
		f.Add(src, "Hi there", uint8(4), false)
	}
	for _, src := range []string{
		"{{ ('a' if messages else 'b') + 'c' }}{{ f(x if y else z, k=[1 if 2 else 3]) }}",
		"{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}",
		"{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
		"{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
		"{{ messages | tojson(indent=2) }}{{ messages[0].content.split()|join(',') }}",
		"{{ 1 }} {% if true %}{%- raw %}{{ x }}{% endraw %}{% endif %}{# c #} {{ raise_exception('no') }}",
		"{{ messages[0]['content'].strip().startswith('a') }}{{ strftime_now('%d %b %Y') }}",
	} {
		f.Add(src, "x", uint8(2), true)
	}

	f.Fuzz(func(t *testing.T, src, content string, n uint8, addGenerationPrompt bool) {
		// Nothing caps allocation inside one expression (see the package
		// doc): 'x' * 10**10 or a padding width of 10**10 would exhaust
		// memory before any limit sees it. Such templates are outside what
		// Render promises, so they are not generated.
		if strings.ContainsAny(src, "*") || strings.Contains(src, "center") || strings.Contains(src, "just") ||
			strings.Contains(src, "zfill") || strings.Contains(src, "format") || strings.Contains(src, "indent") ||
			strings.Contains(src, "wordwrap") || strings.Contains(src, "expandtabs") || strings.Contains(src, "truncate") {
			return
		}
		tpl, err := Parse(src, "<s>", "</s>")
		if err != nil {
			return
		}
		// Tighter limits than the defaults keep each run short.
		tpl.lim = limits{timeout: 200 * time.Millisecond, steps: 1 << 14, depth: 32, baseOutput: 1 << 16, perInput: 4}
		roles := []string{"system", "user", "assistant", "user", "tool"}
		msgs := make([]Message, int(n)%8)
		for i := range msgs {
			msgs[i] = Message{Role: roles[i%len(roles)], Content: content}
			if i == 2 {
				msgs[i].Name = content
			}
		}
		start := time.Now()
		out, err := tpl.Render(msgs, addGenerationPrompt)
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("Render took %v", d)
		}
		if err != nil {
			if !strings.HasPrefix(err.Error(), "chat: rendering template: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
			return
		}
		input := 0
		for _, m := range msgs {
			input += len(m.Role) + len(m.Content) + len(m.Name)
		}
		if max := tpl.lim.baseOutput + tpl.lim.perInput*input; len(out) > max {
			t.Errorf("output is %d bytes, over the %d-byte cap", len(out), max)
		}
	})
}
