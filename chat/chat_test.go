package chat

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spigot-llm/spigot/gguf"
)

var sharedDir = filepath.Join("..", "..", "shared")

// conversation is the one llama.cpp's tests/test-chat-template.cpp renders,
// so that its expected strings can be used as they are.
var conversation = []Message{
	{Role: "system", Content: "You are a helpful assistant"},
	{Role: "user", Content: "Hello"},
	{Role: "assistant", Content: "Hi there"},
	{Role: "user", Content: "Who are you"},
	{Role: "assistant", Content: "   I am an assistant   "},
	{Role: "user", Content: "Another question"},
}

// noSystem is conversation without its system message, for templates that
// refuse one.
var noSystem = conversation[1:]

// goldenCases are real chat templates in testdata/NAME.jinja, each with
// the prompt it must render for its conversation (with
// add_generation_prompt) in testdata/NAME.golden. testdata/README.md says
// where each template comes from. Every golden file is Python Jinja2
// 3.1.6's output with transformers' settings (ImmutableSandboxedEnvironment,
// trim_blocks, lstrip_blocks, its raise_exception and tojson); where
// llama.cpp's test-chat-template.cpp has the same template, its expected
// string is identical (noted per case).
var goldenCases = []struct {
	name     string
	bos, eos string
	msgs     []Message
}{
	{"chatml", "", "", conversation},                                        // = llama.cpp "teknium/OpenHermes-2.5-Mistral-7B"
	{"qwen2-7b-instruct", "", "<|im_end|>", conversation},                   // = llama.cpp OpenHermes (the system prompt is given)
	{"llama3-8b-instruct", "<|begin_of_text|>", "<|eot_id|>", conversation}, // = llama.cpp "Llama-3", BOS prefixed
	{"llama3.1-8b-instruct", "<|begin_of_text|>", "<|eot_id|>", conversation},
	{"llama2-7b-chat", "<s>", "</s>", conversation},
	{"mistral-7b-instruct-v0.1", "<s>", "</s>", noSystem},
	{"mistral-7b-instruct-v0.3", "", "</s>", conversation}, // = llama.cpp "mistralai 'v3' template", jinja output
	{"gemma-2-2b-it", "<bos>", "<eos>", noSystem},
	{"phi-3-mini-4k-instruct", "<s>", "<|endoftext|>", conversation}, // drops the system message, as the real template does
	{"phi-3.5-mini-instruct", "<s>", "<|endoftext|>", conversation},
	{"zephyr-7b-beta", "<s>", "</s>", conversation},
	{"tinyllama-1.1b-chat-v1.0", "<s>", "</s>", conversation},
	{"deepseek-coder-33b-instruct", "", "", conversation}, // = llama.cpp "deepseek-ai/deepseek-coder-33b-instruct"
	{"deepseek-r1-distill-qwen-32b", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", conversation},
}

func readTestdata(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func mustParse(t testing.TB, src, bos, eos string) *Template {
	t.Helper()
	tpl, err := Parse(src, bos, eos)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return tpl
}

func TestGolden(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			src := readTestdata(t, tc.name+".jinja")
			want := readTestdata(t, tc.name+".golden")
			tpl := mustParse(t, src, tc.bos, tc.eos)
			if tpl.Source() != src {
				t.Errorf("Source() is not the text Parse was given")
			}
			got, err := tpl.Render(tc.msgs, true)
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			if got != want {
				t.Errorf("Render =\n%q\nwant\n%q", got, want)
			}
		})
	}
}

// TestPhi3GGUF reads the template from a real GGUF file's metadata.
func TestPhi3GGUF(t *testing.T) {
	f, err := gguf.Open(filepath.Join(sharedDir, "vocab", "ggml-vocab-phi-3.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tpl, err := FromGGUF(f, "")
	if err != nil {
		t.Fatalf("FromGGUF: %v", err)
	}
	if want := readTestdata(t, "phi-3-mini-4k-instruct.jinja"); tpl.Source() != want {
		t.Fatalf("template from the file = %q, want testdata's copy %q", tpl.Source(), want)
	}
	if tpl.bos != "<s>" || tpl.eos != "<|endoftext|>" {
		t.Errorf("bos, eos = %q, %q; want <s>, <|endoftext|>", tpl.bos, tpl.eos)
	}
	got, err := tpl.Render(conversation, true)
	if err != nil {
		t.Fatal(err)
	}
	if want := readTestdata(t, "phi-3-mini-4k-instruct.golden"); got != want {
		t.Errorf("Render = %q, want %q", got, want)
	}
}

func TestAddGenerationPromptFalse(t *testing.T) {
	got, err := ChatML().Render(conversation[:2], false)
	if err != nil {
		t.Fatal(err)
	}
	want := "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
	if got != want {
		t.Errorf("Render(false) = %q, want %q", got, want)
	}
	got, err = ChatML().Render(conversation[:2], true)
	if err != nil {
		t.Fatal(err)
	}
	if want += "<|im_start|>assistant\n"; got != want {
		t.Errorf("Render(true) = %q, want %q", got, want)
	}
}

// TestBuiltins checks each built-in against the real template of its
// family, on a conversation the real template accepts.
func TestBuiltins(t *testing.T) {
	cases := []struct {
		builtin, real string
		bos, eos      string
		msgs          []Message
	}{
		{"chatml", "chatml", "", "", conversation},
		{"llama3", "llama3-8b-instruct", "<|begin_of_text|>", "<|eot_id|>", conversation},
		{"llama2", "llama2-7b-chat", "<s>", "</s>", conversation},
		{"mistral", "mistral-7b-instruct-v0.1", "<s>", "</s>", noSystem},
		{"phi3", "phi-3.5-mini-instruct", "<s>", "<|endoftext|>", conversation},
		{"gemma", "gemma-2-2b-it", "<bos>", "<eos>", noSystem},
		{"zephyr", "zephyr-7b-beta", "<s>", "</s>", conversation},
	}
	if len(cases) != len(Builtins()) {
		t.Errorf("testing %d built-ins, Builtins() has %d", len(cases), len(Builtins()))
	}
	for _, tc := range cases {
		t.Run(tc.builtin, func(t *testing.T) {
			want, err := mustParse(t, readTestdata(t, tc.real+".jinja"), tc.bos, tc.eos).Render(tc.msgs, true)
			if err != nil {
				t.Fatal(err)
			}
			got, err := mustParse(t, namedTemplates[tc.builtin], tc.bos, tc.eos).Render(tc.msgs, true)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("built-in %s =\n%q\n%s =\n%q", tc.builtin, got, tc.real, want)
			}
		})
	}
}

// The built-ins for families without a system role fold it into the first
// user turn rather than failing.
func TestBuiltinsFoldSystem(t *testing.T) {
	msgs := conversation[:4]
	for _, tc := range []struct{ name, want string }{
		{"mistral", "<s>[INST] You are a helpful assistant\n\nHello [/INST]Hi there</s>[INST] Who are you [/INST]"},
		{"gemma", "<s><start_of_turn>user\nYou are a helpful assistant\n\nHello<end_of_turn>\n<start_of_turn>model\nHi there<end_of_turn>\n" +
			"<start_of_turn>user\nWho are you<end_of_turn>\n<start_of_turn>model\n"},
	} {
		got, err := mustParse(t, namedTemplates[tc.name], "<s>", "</s>").Render(msgs, true)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got != tc.want {
			t.Errorf("%s: Render = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestRenderRaise(t *testing.T) {
	cases := []struct {
		name string
		tpl  string
		msgs []Message
		want string
	}{
		{"mistral rejects system", "mistral-7b-instruct-v0.1", conversation,
			"Conversation roles must alternate user/assistant/user/assistant/..."},
		{"gemma rejects system", "gemma-2-2b-it", conversation, "System role not supported"},
		{"gemma rejects two user turns", "gemma-2-2b-it", []Message{{Role: "user", Content: "a"}, {Role: "user", Content: "b"}},
			"Conversation roles must alternate user/assistant/user/assistant/..."},
		{"mistral v0.3 rejects two user turns", "mistral-7b-instruct-v0.3", []Message{{Role: "user", Content: "a"}, {Role: "user", Content: "b"}},
			"After the optional system message, conversation roles must alternate user/assistant/user/assistant/..."},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := mustParse(t, readTestdata(t, tc.tpl+".jinja"), "<s>", "</s>").Render(tc.msgs, true)
			if err == nil {
				t.Fatalf("Render = %q, want an error", out)
			}
			if want := "chat: rendering template: " + tc.want; err.Error() != want {
				t.Errorf("error = %q, want %q", err, want)
			}
			var raised *RaiseError
			if !errors.As(err, &raised) || raised.Message != tc.want {
				t.Errorf("errors.As(%v, *RaiseError) = %v, %+v", err, raised != nil, raised)
			}
		})
	}
}

func TestRenderErrors(t *testing.T) {
	for _, src := range []string{
		"{{ undefined_function() }}",
		"{{ messages[0].content.no_such_method() }}",
		"{{ 1 % 0 }}", // a runtime panic in the engine, recovered
		"{{ messages | tojson(indent=[]) }}",
		"{{ ''.split('') }}",
		"{% set ns = namespace() %}{% set ns.x = ns %}{{ ns | tojson }}",
	} {
		t.Run(src, func(t *testing.T) {
			out, err := mustParse(t, src, "", "").Render(conversation, true)
			if err == nil {
				t.Fatalf("Render = %q, want an error", out)
			}
			if !strings.HasPrefix(err.Error(), "chat: rendering template: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ name, src, want string }{
		{"unclosed if", "{% if true %}x", "endif"},
		{"unclosed for", "{% for m in messages %}{{ m }}", "endfor"},
		{"stray end", "{% endfor %}", "endfor"},
		{"bad expression", "{{ 1 + }}", ""},
		{"unterminated string", "{{ 'abc }}", ""},
		{"unknown tag", "{% frobnicate %}", "frobnicate"},
		{"include", "{% include 'other.jinja' %}", "include"},
		{"extends", "{% extends 'base' %}", "extends"},
		{"recursive loop", "{% for m in messages recursive %}{{ loop(m) }}{% endfor %}", "recursive"},
		{"deep brackets", "{{ " + strings.Repeat("(", 150) + "1" + strings.Repeat(")", 150) + " }}", "nest"},
		{"long operator run", "{{ " + strings.Repeat("- ", 150) + "1 }}", "operators"},
		{"too big", strings.Repeat("x", MaxSourceSize+1), "limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tpl, err := Parse(tc.src, "", "")
			if err == nil {
				t.Fatalf("Parse(%q) succeeded, want an error", tc.src)
			}
			if tpl != nil {
				t.Errorf("Parse returned a template with its error")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "chat: parsing template: ") || !strings.Contains(msg, tc.want) {
				t.Errorf("error = %q, want the prefix and %q", msg, tc.want)
			}
			if len(msg) > 500 {
				t.Errorf("error is %d bytes; it should not quote the template", len(msg))
			}
		})
	}
}

func TestLimits(t *testing.T) {
	cases := []struct{ name, src, want string }{
		{"output", "{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}", "output over"},
		{"output via macro", "{% macro m() %}{{ 'y' * 1000 }}{% endmacro %}{% for i in range(10000) %}{{ m() }}{% endfor %}", "output over"},
		{"steps", "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", ""},
		{"recursion", "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "nested more than 64"},
		{"swallowed recursion", "{% macro f() %}{% if f() %}{% endif %}{% endmacro %}{{ f() }}", "nested more than 64"},
		{"range", "{{ range(1000000) | length }}", "range() of more than"},
		{"range overflow", "{{ range(-9223372036854775807, 9223372036854775807) | length }}", "range() of more than"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			out, err := mustParse(t, tc.src, "", "").Render(conversation, true)
			if err == nil {
				t.Fatalf("Render = %d bytes, want an error", len(out))
			}
			if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want ErrLimit and %q", err, tc.want)
			}
			// 2s is the render timeout; allow a slow, loaded machine.
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}

func TestTimeout(t *testing.T) {
	tpl := mustParse(t, "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}", "", "")
	tpl.lim.timeout = 50 * time.Millisecond
	start := time.Now()
	_, err := tpl.Render(nil, true)
	if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "ran over 50ms") {
		t.Errorf("error = %v, want a timeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v with a 50ms timeout", d)
	}
}

// The output cap grows with the input: a long document still renders.
func TestLargeInput(t *testing.T) {
	doc := strings.Repeat("word ", 1<<20) // 5 MiB, over the base cap
	out, err := ChatML().Render([]Message{{Role: "user", Content: doc}}, true)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, doc) {
		t.Errorf("output lost the document")
	}
}

// TestPython checks behaviour that gonja gets wrong by itself and this
// package fixes. Each want is what Python Jinja2 with transformers' setup
// renders for conversation.
func TestPython(t *testing.T) {
	cases := []struct{ src, want string }{
		{"{{ '  x  '.strip() }}|{{ '  x  '.lstrip() }}|{{ '  x  '.rstrip() }}|{{ 'xxaxx'.strip('x') }}", "x|x  |  x|a"},
		{"{{ ' a b  c '.split() }} {{ 'a,b,,c'.split(',') }} {{ 'a b c'.split(None, 1) }} {{ 'a,b,c'.split(',', maxsplit=1) }}",
			"['a', 'b', 'c'] ['a', 'b', '', 'c'] ['a', 'b c'] ['a', 'b,c']"},
		{"{{ 'a b c'.rsplit(None, 1) }} {{ 'a,b,c'.rsplit(',', 1) }} {{ 'x</think>y</think>z'.split('</think>')[-1] }}",
			"['a b', 'c'] ['a,b', 'c'] z"},
		{"{{ 'abcb'.replace('b', 'X') }} {{ 'abcb'.replace('b', 'X', 1) }}", "aXcX aXcb"},
		{"{{ messages[1] | tojson }}", `{"role": "user", "content": "Hello"}`},
		{"{{ {'b': 1, 'a': [1, 2.5, 'x', none, true]} | tojson }}", `{"b": 1, "a": [1, 2.5, "x", null, true]}`},
		{"{{ {'a': {'b': []}} | tojson(indent=2) }}", "{\n  \"a\": {\n    \"b\": []\n  }\n}"},
		{"{{ 'héllo \"q\" <tag>\\n' | tojson }} {{ 'é' | tojson(ensure_ascii=true) }}", `"héllo \"q\" <tag>\n" "\u00e9"`},
		{"{{ dict(messages[1], x={'q': 1}) | tojson }} {{ dict({'b': 1, 'a': 2}) | tojson(sort_keys=true) }}", `{"role": "user", "content": "Hello", "x": {"q": 1}} {"a": 2, "b": 1}`},
		{"{{ [1, 2] | tojson(separators=(',', ':')) }} {{ 1.0 | tojson }} {{ 1e20 | tojson }}", "[1,2] 1.0 1e+20"},
		{"{% for k, v in messages[1].items() %}{{ k }}={{ v }};{% endfor %}{{ messages[1].keys() | list }}", "role=user;content=Hello;['role', 'content']"},
		{"{% for k, v in {'b': 1, 'a': 2}.items() %}{{ k }}={{ v }};{% endfor %}{{ {'b': 1, 'a': 2}.values() | list }}", "b=1;a=2;[1, 2]"},
		{"{% for k, v in {'b': 1, 'a': 2} | items %}{{ k }}={{ v }};{% endfor %}{% for k, v in messages[1] | items %}{{ k }}={{ v }};{% endfor %}" +
			"{% for k, v in {'b': 1, 'a': 2} | dictsort %}{{ k }};{% endfor %}",
			"b=1;a=2;role=user;content=Hello;a;b;"},
		{"{{ strftime_now('%d %b %Y') }} {{ strftime_now('%Y-%m-%d %H:%M') }}", "26 Jul 2024 2024-07-26 12:00"},
		{"{{ range(3) | list }} {{ range(1, 7, 2) | list }} {{ range(3, 0, -1) | list }} {{ range(0) | list }}", "[0, 1, 2] [1, 3, 5] [3, 2, 1] []"},
		{"{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}", "6"},
		{"{% for m in messages %}{% if loop.first %}F{% endif %}{{ loop.index0 }}{% if loop.last %}L{% endif %}{% endfor %}", "F012345L"},
		{"{{ messages[0].name is defined }} {{ messages[0]['role'] }} {{ messages[0].role }} {{ tools is defined }}", "False system system False"},
		{"{{ messages | selectattr('role', 'equalto', 'user') | list | length }} {{ messages[-1].content }}", "3 Another question"},
		{"{{ 'x' if messages else 'y' }} {% set v = 'a' if false else 'b' %}{{ v }}", "x b"},
		{"{{ 0 is false }} {{ false is false }} {{ 1 is true }} {{ true is true }} {{ none is none }}", "False True False True True"},
		// transformers' extensions: {% generation %} and loop controls.
		{"{% for m in messages %}{% if loop.index0 == 3 %}{% break %}{% endif %}{% if m.role == 'user' %}{% continue %}{% endif %}{% generation %}{{ m.role[0] }}{% endgeneration %}{% endfor %}", "sa"},
		// Conditional expressions inside brackets (rewriteConditionals).
		{"{{ ('a' if messages else 'b') + 'c' }} {{ 'x' + ('a' if not messages else 'b') }} {{ [1 if false else 2, 3 if true] }}", "ac xb [2, 3]"},
		{"{{ {'k': 'v' if messages else 'w'}['k'] }} {{ 'a,b'.split(',' if true else ';') }} {{ 'aba'.replace('a', 'z', 1 if true else 0) }}", "v ['a', 'b'] zba"},
		{"{{ (1 if false else 2 if false else 3) }} {{ ('y' if false) }}|{{ (raise_exception('never') if false else 'ok') }}", "3 |ok"},
		{"{% for m in messages if m.role == 'user' %}{{ m.content[0] }}{% endfor %}{{ messages|map(attribute='role' if true else 'x')|first }}", "HWAsystem"},
		// lstrip_blocks strips only at the start of a line.
		{"{{ 1 }} {% if true %}y{% endif %}|{# c #}  {% if true %}x{% endif %}|a  {% if true %}z{% endif %}\n  {% if true %}w{% endif %}", "1 y|  x|a  zw"},
		{"{{ 1 -}}  {% if true %}x{% endif %} {%- if true %}y{% endif %}\r\n  {%+ if true %}z{% endif %}\n", "1xy  z"},
		{"{{ 1 }}\n  {% if true %}w{% endif %}\n\n", "1\nw"},
	}
	for _, tc := range cases {
		t.Run(tc.src, func(t *testing.T) {
			tpl := mustParse(t, tc.src, "<s>", "</s>")
			tpl.now = func() time.Time { return time.Date(2024, 7, 26, 12, 0, 0, 0, time.UTC) }
			got, err := tpl.Render(conversation, true)
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			if got != tc.want {
				t.Errorf("Render = %q, want %q", got, tc.want)
			}
		})
	}
}

// Maps built by dict() or namespace() have no insertion order in Go; they
// iterate sorted (Python would keep insertion order), never at random.
func TestMapOrder(t *testing.T) {
	tpl := mustParse(t, "{% for k, v in dict(z=1, y=2, x=3) | items %}{{ k }}{% endfor %} {{ dict(z=1, y=2, x=3) | tojson }}", "", "")
	for range 20 {
		got, err := tpl.Render(nil, false)
		if err != nil {
			t.Fatal(err)
		}
		if want := `xyz {"x": 3, "y": 2, "z": 1}`; got != want {
			t.Fatalf("Render = %q, want %q", got, want)
		}
	}
}

func TestMessageName(t *testing.T) {
	tpl := mustParse(t, "{% for m in messages %}{% if m.name is defined %}{{ m.name }}:{% endif %}{{ m.content }};{% endfor %}", "", "")
	got, err := tpl.Render([]Message{{Role: "user", Content: "hi", Name: "bob"}, {Role: "user", Content: "yo"}}, false)
	if err != nil {
		t.Fatal(err)
	}
	if want := "bob:hi;yo;"; got != want {
		t.Errorf("Render = %q, want %q", got, want)
	}
}

// A template may assign into the messages it is given; that must not leak
// into the caller's slice or the next render.
func TestRenderIsolation(t *testing.T) {
	tpl := mustParse(t, "{% set messages[0]['role'] = 'changed' %}{{ messages[0]['role'] }}", "", "")
	msgs := []Message{{Role: "user", Content: "x"}}
	for range 2 {
		got, err := tpl.Render(msgs, false)
		if err != nil {
			t.Skipf("gonja refuses item assignment: %v", err)
		}
		if got != "changed" {
			t.Fatalf("Render = %q", got)
		}
	}
	if msgs[0].Role != "user" {
		t.Errorf("caller's message changed: %+v", msgs[0])
	}
}

func TestConcurrentRender(t *testing.T) {
	type job struct {
		tpl  *Template
		msgs []Message
		want string
	}
	var jobs []job
	for _, tc := range goldenCases {
		tpl := mustParse(t, readTestdata(t, tc.name+".jinja"), tc.bos, tc.eos)
		for i := range 3 {
			msgs := append([]Message(nil), tc.msgs...)
			msgs[len(msgs)-1].Content = fmt.Sprintf("question %d", i)
			want, err := tpl.Render(msgs, true)
			if err != nil {
				t.Fatal(err)
			}
			jobs = append(jobs, job{tpl, msgs, want})
		}
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 4 * len(jobs) {
				j := jobs[(i+g)%len(jobs)]
				got, err := j.tpl.Render(j.msgs, true)
				if err != nil || got != j.want {
					t.Errorf("concurrent Render = %q, %v; want %q", got, err, j.want)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestFromGGUF(t *testing.T) {
	tokens := []string{"<unk>", "<s>", "</s>", "hi"}
	file := func(extra ...gguf.KV) *gguf.File {
		kvs := append([]gguf.KV{
			{Key: "tokenizer.ggml.tokens", Value: gguf.Val(tokens)},
			{Key: "tokenizer.ggml.bos_token_id", Value: gguf.Val(uint32(1))},
			{Key: "tokenizer.ggml.eos_token_id", Value: gguf.Val(uint32(2))},
		}, extra...)
		f, err := gguf.New(kvs, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	msgs := []Message{{Role: "user", Content: "Hello"}}
	cases := []struct {
		name     string
		f        *gguf.File
		override string
		want     string
	}{
		{"file template", file(gguf.KV{Key: "tokenizer.chat_template", Value: gguf.Val("{{ bos_token }}{{ messages[0].content }}{{ eos_token }}")}), "",
			"<s>Hello</s>"},
		{"override source wins", file(gguf.KV{Key: "tokenizer.chat_template", Value: gguf.Val("file")}), "[{{ messages[0].content }}]",
			"[Hello]"},
		{"override name", file(gguf.KV{Key: "tokenizer.chat_template", Value: gguf.Val("file")}), "zephyr",
			"<|user|>\nHello</s>\n<|assistant|>\n"},
		{"override name any case", file(), "Llama3",
			"<s><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
		{"no template", file(), "", "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"},
		{"empty template", file(gguf.KV{Key: "tokenizer.chat_template", Value: gguf.Val("")}), "",
			"<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"},
		{"no file", nil, "gemma", "<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n"},
		{"no file, no override", nil, "", "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tpl, err := FromGGUF(tc.f, tc.override)
			if err != nil {
				t.Fatalf("FromGGUF: %v", err)
			}
			got, err := tpl.Render(msgs, true)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("Render = %q, want %q", got, tc.want)
			}
		})
	}

	if _, err := FromGGUF(file(), "chatml3"); err == nil || !strings.Contains(err.Error(), `unknown chat template name "chatml3"`) {
		t.Errorf("unknown name: error = %v", err)
	}
	if _, err := FromGGUF(file(gguf.KV{Key: "tokenizer.chat_template", Value: gguf.Val("{% if %}")}), ""); err == nil {
		t.Errorf("a broken template in the file: no error")
	}
	// A bos id past the vocabulary is no BOS text.
	f := file()
	f2, err := gguf.New(append(f.KVs[:1:1], gguf.KV{Key: "tokenizer.ggml.bos_token_id", Value: gguf.Val(uint32(99))}), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tpl, err := FromGGUF(f2, "llama3"); err != nil || tpl.bos != "" {
		t.Errorf("out-of-range bos id: bos = %q, err = %v", tpl.bos, err)
	}
}

func BenchmarkRender(b *testing.B) {
	for _, name := range []string{"chatml", "llama3.1-8b-instruct", "mistral-7b-instruct-v0.3"} {
		b.Run(name, func(b *testing.B) {
			tpl := mustParse(b, readTestdata(b, name+".jinja"), "<s>", "</s>")
			for b.Loop() {
				if _, err := tpl.Render(conversation, true); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
