package server

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// apiError is OpenAI's error object as a client decodes it.
type apiError struct {
	Error *struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

// TestErrors checks every error the API answers before streaming: status,
// and the error object's type, param, code and message.
func TestErrors(t *testing.T) {
	fx := newFixture(t, fixtureOptions{apiKey: "sk-test"})
	long := jsonString(strings.Repeat("Once upon a time, ", 40))
	auth := []string{"Authorization", "Bearer sk-test"}
	cases := []struct {
		name         string
		method, path string
		body         string
		header       []string // nil: the right API key
		status       int
		typ          string
		param, code  string // "" when null
		msg          string // a substring of the message
	}{
		{name: "malformed JSON", path: "/v1/completions", body: "{\"prompt\": \"x\",\n}",
			status: 400, typ: "invalid_request_error", msg: "malformed JSON at line 2, column 1"},
		{name: "truncated JSON", path: "/v1/chat/completions", body: `{"messages": [`,
			status: 400, typ: "invalid_request_error", msg: "malformed JSON"},
		{name: "empty body", path: "/v1/completions", body: "",
			status: 400, typ: "invalid_request_error", msg: "empty"},
		{name: "not an object", path: "/v1/completions", body: `[1, 2]`,
			status: 400, typ: "invalid_request_error", msg: "must be a JSON object"},
		{name: "temperature type", path: "/v1/completions", body: `{"prompt":"x","temperature":"hot"}`,
			status: 400, typ: "invalid_request_error", param: "temperature", msg: `"temperature" must be a number, not string`},
		{name: "max_tokens type", path: "/v1/completions", body: `{"prompt":"x","max_tokens":1.5}`,
			status: 400, typ: "invalid_request_error", param: "max_tokens", msg: `"max_tokens" must be an integer`},
		{name: "stream type", path: "/v1/chat/completions", body: `{"messages":[],"stream":"yes"}`,
			status: 400, typ: "invalid_request_error", param: "stream", msg: `"stream" must be a boolean`},
		{name: "messages type", path: "/v1/chat/completions", body: `{"messages":"hi"}`,
			status: 400, typ: "invalid_request_error", param: "messages", msg: `"messages" must be an array`},
		{name: "role type", path: "/v1/chat/completions", body: `{"messages":[{"role":1,"content":"hi"}]}`,
			status: 400, typ: "invalid_request_error", param: "messages.role", msg: "must be a string"},
		{name: "stop type", path: "/v1/completions", body: `{"prompt":"x","stop":5}`,
			status: 400, typ: "invalid_request_error", param: "stop", msg: `"stop" must be a string or an array of strings`},
		{name: "prompt type", path: "/v1/completions", body: `{"prompt":{"text":"x"}}`,
			status: 400, typ: "invalid_request_error", param: "prompt", msg: `"prompt" must be a string`},
		{name: "prompt missing", path: "/v1/completions", body: `{"model":"stories260K"}`,
			status: 400, typ: "invalid_request_error", param: "prompt", msg: "required"},
		{name: "prompt too long", path: "/v1/completions", body: `{"prompt":` + long + `}`,
			status: 400, typ: "invalid_request_error", param: "prompt", msg: "tokens, but the model's context is 128 tokens"},
		{name: "chat too long", path: "/v1/chat/completions", body: `{"messages":[{"role":"user","content":` + long + `}]}`,
			status: 400, typ: "invalid_request_error", param: "messages", msg: "context is 128 tokens"},
		{name: "token out of vocabulary", path: "/v1/completions", body: `{"prompt":[1, 99999]}`,
			status: 400, typ: "invalid_request_error", param: "prompt", msg: "99999"},
		{name: "unknown model", path: "/v1/chat/completions", body: `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`,
			status: 404, typ: "invalid_request_error", param: "model", code: "model_not_found", msg: `"gpt-4o" does not exist`},
		{name: "unknown model, tokenize", path: "/tokenize", body: `{"model":"gpt-4o","content":"hi"}`,
			status: 404, typ: "invalid_request_error", param: "model", code: "model_not_found"},
		{name: "no API key", path: "/v1/completions", body: `{"prompt":"x"}`, header: []string{},
			status: 401, typ: "invalid_request_error", code: "invalid_api_key", msg: "Authorization: Bearer"},
		{name: "wrong API key", path: "/v1/completions", body: `{"prompt":"x"}`, header: []string{"Authorization", "Bearer sk-nope"},
			status: 401, typ: "invalid_request_error", code: "invalid_api_key", msg: "incorrect API key"},
		{name: "metrics need the key", method: "GET", path: "/metrics", header: []string{},
			status: 401, typ: "invalid_request_error", code: "invalid_api_key"},
		{name: "GET completions", method: "GET", path: "/v1/completions",
			status: 405, typ: "invalid_request_error", code: "method_not_allowed", msg: "use POST"},
		{name: "DELETE models", method: "DELETE", path: "/v1/models",
			status: 405, typ: "invalid_request_error", code: "method_not_allowed", msg: "use GET"},
		{name: "body too large", path: "/v1/completions", body: `{"prompt":"` + strings.Repeat("x", 9<<20) + `"}`,
			status: 413, typ: "invalid_request_error", code: "request_too_large", msg: "8388608 bytes"},
		{name: "temperature range", path: "/v1/completions", body: `{"prompt":"x","temperature":3}`,
			status: 400, typ: "invalid_request_error", param: "temperature", msg: "between 0 and 2"},
		{name: "top_p range", path: "/v1/completions", body: `{"prompt":"x","top_p":1.5}`,
			status: 400, typ: "invalid_request_error", param: "top_p"},
		{name: "presence_penalty range", path: "/v1/chat/completions", body: `{"messages":[{"role":"user","content":"hi"}],"presence_penalty":-3}`,
			status: 400, typ: "invalid_request_error", param: "presence_penalty"},
		{name: "repeat_penalty range", path: "/v1/completions", body: `{"prompt":"x","repeat_penalty":0}`,
			status: 400, typ: "invalid_request_error", param: "repeat_penalty"},
		{name: "logit_bias key", path: "/v1/completions", body: `{"prompt":"x","logit_bias":{"abc":1}}`,
			status: 400, typ: "invalid_request_error", param: "logit_bias", msg: `"abc" is not a token id`},
		{name: "logit_bias value", path: "/v1/completions", body: `{"prompt":"x","logit_bias":{"5":200}}`,
			status: 400, typ: "invalid_request_error", param: "logit_bias", msg: "between -100 and 100"},
		{name: "logit_bias id", path: "/v1/completions", body: `{"prompt":"x","logit_bias":{"99999":1}}`,
			status: 400, typ: "invalid_request_error", param: "logit_bias", msg: "99999"},
		{name: "n range", path: "/v1/completions", body: `{"prompt":"x","n":0}`,
			status: 400, typ: "invalid_request_error", param: "n"},
		{name: "choices over the cap", path: "/v1/completions", body: `{"prompt":["a","b"],"n":100}`,
			status: 400, typ: "invalid_request_error", param: "n", msg: "200 choices"},
		{name: "max_tokens zero", path: "/v1/completions", body: `{"prompt":"x","max_tokens":0}`,
			status: 400, typ: "invalid_request_error", param: "max_tokens"},
		{name: "max_completion_tokens", path: "/v1/chat/completions", body: `{"messages":[{"role":"user","content":"hi"}],"max_completion_tokens":-1}`,
			status: 400, typ: "invalid_request_error", param: "max_completion_tokens"},
		{name: "image part", path: "/v1/chat/completions",
			body:   `{"messages":[{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"x"}}]}]}`,
			status: 400, typ: "invalid_request_error", param: "messages[0].content[1].type", msg: `"image_url" is not supported`},
		{name: "content type", path: "/v1/chat/completions", body: `{"messages":[{"role":"user","content":5}]}`,
			status: 400, typ: "invalid_request_error", param: "messages[0].content"},
		{name: "unknown role", path: "/v1/chat/completions", body: `{"messages":[{"role":"wizard","content":"hi"}]}`,
			status: 400, typ: "invalid_request_error", param: "messages[0].role", msg: `"wizard"`},
		{name: "no messages", path: "/v1/chat/completions", body: `{"messages":[]}`,
			status: 400, typ: "invalid_request_error", param: "messages"},
		{name: "top_logprobs without logprobs", path: "/v1/chat/completions", body: `{"messages":[{"role":"user","content":"hi"}],"top_logprobs":2}`,
			status: 400, typ: "invalid_request_error", param: "top_logprobs", msg: "logprobs set to true"},
		{name: "top_logprobs range", path: "/v1/chat/completions", body: `{"messages":[{"role":"user","content":"hi"}],"logprobs":true,"top_logprobs":21}`,
			status: 400, typ: "invalid_request_error", param: "top_logprobs"},
		{name: "logprobs range", path: "/v1/completions", body: `{"prompt":"x","logprobs":30}`,
			status: 400, typ: "invalid_request_error", param: "logprobs"},
		{name: "tools", path: "/v1/chat/completions", body: `{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function"}]}`,
			status: 400, typ: "invalid_request_error", param: "tools", msg: "not supported"},
		{name: "json mode", path: "/v1/chat/completions", body: `{"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_object"}}`,
			status: 400, typ: "invalid_request_error", param: "response_format"},
		{name: "suffix", path: "/v1/completions", body: `{"prompt":"x","suffix":"y"}`,
			status: 400, typ: "invalid_request_error", param: "suffix"},
		{name: "echo with logprobs", path: "/v1/completions", body: `{"prompt":"x","echo":true,"logprobs":1}`,
			status: 400, typ: "invalid_request_error", param: "logprobs"},
		{name: "detokenize range", path: "/detokenize", body: `{"tokens":[1,-3]}`,
			status: 400, typ: "invalid_request_error", param: "tokens", msg: "-3"},
		{name: "tokenize without text", path: "/tokenize", body: `{}`,
			status: 400, typ: "invalid_request_error", param: "content"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			header := tc.header
			if header == nil {
				header = auth
			}
			resp, b := fx.do(t, method, tc.path, tc.body, header...)
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d (%s)", resp.StatusCode, tc.status, b)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			var e apiError
			if err := json.Unmarshal(b, &e); err != nil || e.Error == nil {
				t.Fatalf("body %s is not an error object (%v)", b, err)
			}
			str := func(p *string) string {
				if p == nil {
					return ""
				}
				return *p
			}
			if e.Error.Type != tc.typ || str(e.Error.Param) != tc.param || str(e.Error.Code) != tc.code {
				t.Errorf("type %q param %q code %q, want %q %q %q", e.Error.Type, str(e.Error.Param), str(e.Error.Code), tc.typ, tc.param, tc.code)
			}
			if !strings.Contains(e.Error.Message, tc.msg) {
				t.Errorf("message %q lacks %q", e.Error.Message, tc.msg)
			}
			if tc.status == 405 && resp.Header.Get("Allow") == "" {
				t.Error("405 without Allow")
			}
		})
	}

	// /health and /ready need no key.
	for _, path := range []string{"/health", "/ready"} {
		if resp, b := fx.do(t, http.MethodGet, path, ""); resp.StatusCode != 200 {
			t.Errorf("GET %s without a key: %d %s", path, resp.StatusCode, b)
		}
	}
}

// TestTemplateErrors checks that a template that refuses a conversation
// (raise_exception) is a 400 that says why.
func TestTemplateErrors(t *testing.T) {
	tmpl := `{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversations must start with a user message') }}{% endif %}` +
		`{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}`
	fx := newFixture(t, fixtureOptions{chatTemplate: tmpl})
	resp, b := fx.post(t, "/v1/chat/completions", `{"messages":[{"role":"assistant","content":"hi"}]}`)
	var e apiError
	json.Unmarshal(b, &e)
	if resp.StatusCode != 400 || e.Error == nil || !strings.Contains(e.Error.Message, "Conversations must start with a user message") ||
		e.Error.Param == nil || *e.Error.Param != "messages" {
		t.Errorf("status %d: %s", resp.StatusCode, b)
	}
	resp, b = fx.post(t, "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}`)
	if resp.StatusCode != 200 {
		t.Errorf("a conversation the template accepts: %d %s", resp.StatusCode, b)
	}
}
