package chat

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/spigot-llm/spigot/gguf"
)

// Built-in templates, for models without one and for --chat-template NAME.
// Each is written from the model family's published prompt format and
// renders a conversation the family's own template accepts exactly as that
// template does (chat_test.go checks this against the real templates in
// testdata). Where the real template refuses a system message (Mistral,
// Gemma), the built-in folds it into the first user turn instead, as
// mistral-common and Gemma 3's template do.
var namedTemplates = map[string]string{
	// ChatML, as OpenHermes, Qwen and many others use it.
	"chatml": `{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}` +
		`{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}`,

	// Llama 3 / 3.1 instruct: header-wrapped roles, trimmed content, <|eot_id|>.
	"llama3": `{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}` +
		`{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}`,

	// Llama 2 chat: [INST] turns, the system prompt in <<SYS>> inside the first.
	"llama2": `{% if messages and messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}{% set loop_messages = messages[1:] %}` +
		`{% else %}{% set system = '' %}{% set loop_messages = messages %}{% endif %}` +
		`{% for message in loop_messages %}{% if message['role'] == 'user' %}` +
		`{% if loop.first and system %}{% set content = '<<SYS>>\n' + system + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}` +
		`{{ bos_token + '[INST] ' + content | trim + ' [/INST]' }}` +
		`{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] | trim + ' ' + eos_token }}{% endif %}{% endfor %}`,

	// Mistral instruct (v1 tokenizer: Mistral 7B v0.1/v0.2, Mixtral 8x7B).
	"mistral": `{% if messages and messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}{% set loop_messages = messages[1:] %}` +
		`{% else %}{% set system = '' %}{% set loop_messages = messages %}{% endif %}{{ bos_token }}` +
		`{% for message in loop_messages %}{% if message['role'] == 'user' %}` +
		`{% if loop.first and system %}{{ '[INST] ' + system + '\n\n' + message['content'] + ' [/INST]' }}{% else %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% endif %}` +
		`{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}`,

	// Phi-3 / Phi-3.5: <|role|> turns closed by <|end|>.
	"phi3": `{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}{% endfor %}` +
		`{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}`,

	// Gemma / Gemma 2: user and model turns; no system role.
	"gemma": `{{ bos_token }}{% if messages and messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] | trim + '\n\n' %}{% set loop_messages = messages[1:] %}` +
		`{% else %}{% set system = '' %}{% set loop_messages = messages %}{% endif %}` +
		`{% for message in loop_messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}` +
		`{% if loop.first and system %}{% set content = system + message['content'] | trim %}{% else %}{% set content = message['content'] | trim %}{% endif %}` +
		`{{ '<start_of_turn>' + role + '\n' + content + '<end_of_turn>\n' }}{% endfor %}` +
		`{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}`,

	// Zephyr (and TinyLlama chat): <|role|> turns closed by EOS.
	"zephyr": `{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}{% endfor %}` +
		`{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}`,
}

// Builtins lists the names FromGGUF accepts in place of a template.
func Builtins() []string {
	names := make([]string, 0, len(namedTemplates))
	for name := range namedTemplates {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

var chatML = sync.OnceValue(func() *Template {
	t, err := Parse(namedTemplates["chatml"], "", "")
	if err != nil {
		panic(err) // a constant template
	}
	return t
})

// ChatML is the default used when a model has no template (llama.cpp does
// the same): <|im_start|>role\ncontent<|im_end|>\n for each message and
// "<|im_start|>assistant\n" when addGenerationPrompt. It uses no BOS or EOS
// text.
func ChatML() *Template { return chatML() }

// looksLikeName matches an override that is meant as a name, not a template.
var looksLikeName = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// FromGGUF picks a model's chat template, in order: override (a template
// given with --chat-template, or one of the names [Builtins] lists), else
// the file's tokenizer.chat_template, else [ChatML]. The template's
// bos_token and eos_token are the file's tokenizer.ggml.tokens at
// tokenizer.ggml.bos_token_id and eos_token_id (empty if absent). f may be
// nil when there is no file.
func FromGGUF(f *gguf.File, override string) (*Template, error) {
	bos, eos := specialToken(f, "tokenizer.ggml.bos_token_id"), specialToken(f, "tokenizer.ggml.eos_token_id")
	if override != "" {
		if src, ok := namedTemplates[strings.ToLower(override)]; ok {
			return Parse(src, bos, eos)
		}
		if looksLikeName.MatchString(override) {
			return nil, fmt.Errorf("chat: unknown chat template name %q (known: %s)", override, strings.Join(Builtins(), ", "))
		}
		return Parse(override, bos, eos)
	}
	if f != nil {
		if src, ok := f.String("tokenizer.chat_template"); ok && strings.TrimSpace(src) != "" {
			return Parse(src, bos, eos)
		}
	}
	if bos == "" && eos == "" {
		return ChatML(), nil
	}
	return Parse(namedTemplates["chatml"], bos, eos)
}

// specialToken is the text of the token whose id the file stores at key.
func specialToken(f *gguf.File, key string) string {
	if f == nil {
		return ""
	}
	id, ok := f.Uint(key)
	if !ok {
		return ""
	}
	toks, ok := f.Strings("tokenizer.ggml.tokens")
	if !ok || id >= uint64(len(toks)) {
		return ""
	}
	return toks[id]
}
