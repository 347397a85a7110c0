package gateway

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/spigot-llm/spigot/api/openai"
)

func TestStripIDs(t *testing.T) {
	for _, c := range []struct {
		in, tokens, prompt string // prompt: with only prompt_token_ids stripped
	}{
		{`data: {"choices":[{"index":0,"text":"a","token_ids":[1,2],"logprobs":null}]}`,
			`data: {"choices":[{"index":0,"text":"a","logprobs":null}]}`,
			`data: {"choices":[{"index":0,"text":"a","token_ids":[1,2],"logprobs":null}]}`},
		{`{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"prompt_token_ids":[1,15043],"token_ids":[],"logprobs":null}]}`,
			`{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null}]}`,
			`{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"token_ids":[],"logprobs":null}]}`},
		// Text that looks like the fields is escaped, so it stays.
		{`{"choices":[{"text":"x,\"token_ids\":[1]","token_ids":[7]}]}`,
			`{"choices":[{"text":"x,\"token_ids\":[1]"}]}`,
			`{"choices":[{"text":"x,\"token_ids\":[1]","token_ids":[7]}]}`},
		{`{"choices":[],"usage":{"prompt_tokens":3}}`, `{"choices":[],"usage":{"prompt_tokens":3}}`, `{"choices":[],"usage":{"prompt_tokens":3}}`},
	} {
		in := []byte(c.in)
		if got := stripIDs(in, true); string(got) != c.tokens {
			t.Errorf("stripIDs(%s, true) = %s, want %s", c.in, got, c.tokens)
		}
		if got := stripIDs(in, false); string(got) != c.prompt {
			t.Errorf("stripIDs(%s, false) = %s, want %s", c.in, got, c.prompt)
		}
		if string(in) != c.in {
			t.Errorf("stripIDs changed its input to %s", in)
		}
	}
}

func FuzzStripIDs(f *testing.F) {
	f.Add([]byte(`{"choices":[{"text":"a","prompt_token_ids":[1,2],"token_ids":[3]}]}`), true)
	f.Add([]byte(`,"token_ids":[`), false)
	f.Fuzz(func(t *testing.T, b []byte, tokens bool) {
		in := bytes.Clone(b)
		out := stripIDs(b, tokens)
		if !bytes.Equal(b, in) {
			t.Fatal("input changed")
		}
		if len(out) > len(b) {
			t.Fatalf("output %q longer than input %q", out, b)
		}
		if json.Valid(b) && !json.Valid(out) {
			t.Fatalf("valid %s became invalid %s", b, out)
		}
	})
}

// TestIDsBody: a chat continued from ids becomes a completions request
// with the ids as prompt, its settings kept and chat-only fields dropped.
func TestIDsBody(t *testing.T) {
	r, err := parseRequest([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":9,"temperature":0,"stop":["x"],"stream":true,"logprobs":false}`), openai.Chat, 0)
	if err != nil {
		t.Fatal(err)
	}
	var f map[string]json.RawMessage
	if err := json.Unmarshal(r.idsBody([]int64{1, 2, 3}, 5), &f); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"prompt": "[1,2,3]", "max_tokens": "5", "temperature": "0", "stop": `["x"]`, "stream": "true", "return_token_ids": "true", "model": `"m"`} {
		if string(f[k]) != want {
			t.Errorf("%s = %s, want %s", k, f[k], want)
		}
	}
	for _, k := range []string{"messages", "max_completion_tokens", "logprobs"} {
		if _, ok := f[k]; ok {
			t.Errorf("%s kept", k)
		}
	}
}

// TestTokenIDsThrough: a client that asks for return_token_ids gets them
// from a spigot upstream, and one that does not never sees them.
func TestTokenIDsThrough(t *testing.T) {
	rep := newReplica(t, 2)
	gwy := newGW(t, testConfig(t, rep.url))
	body := `{"model":"stories260K","prompt":"Once upon a time","max_tokens":8,"temperature":0,"stream":true%s}`
	_, with, _ := post(t, gwy.ts.URL, "/v1/completions", strings.Replace(body, "%s", `,"return_token_ids":true`, 1))
	if !bytes.Contains(with, []byte(`"prompt_token_ids":[`)) || bytes.Count(with, []byte(`"token_ids":[`)) < 8 {
		t.Errorf("asked for ids, got:\n%s", with)
	}
	_, without, _ := post(t, gwy.ts.URL, "/v1/completions", strings.Replace(body, "%s", "", 1))
	if bytes.Contains(without, []byte("token_ids")) {
		t.Errorf("did not ask for ids, got:\n%s", without)
	}
}
