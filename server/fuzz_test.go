package server

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/spigot-llm/spigot/api/openai"
)

// fuzzSeeds adds the request bodies in testdata/requests and a few inline
// ones.
func fuzzSeeds(f *testing.F, inline ...string) {
	files, _ := filepath.Glob(filepath.Join("testdata", "requests", "*.json"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range inline {
		f.Add([]byte(s))
	}
}

// checkPrepared asserts the contract of request parsing: either a job whose
// every engine request the engine accepts, or an *openai.Error with a 4xx
// status and a message.
func checkPrepared(t *testing.T, fx *fixture, j *job, err error) {
	if err != nil {
		var e *openai.Error
		if !errors.As(err, &e) || e.Status < 400 || e.Status > 499 || e.Message == "" || e.Type == "" {
			t.Fatalf("error %#v is not a 4xx API error", err)
		}
		return
	}
	if len(j.reqs) == 0 || len(j.reqs)%j.opts.N != 0 || len(j.reqs) > openai.MaxChoices {
		t.Fatalf("%d engine requests for n = %d", len(j.reqs), j.opts.N)
	}
	for i := range j.reqs {
		if err := fx.eng.Validate(&j.reqs[i]); err != nil {
			t.Fatalf("choice %d: the engine refuses a prepared request: %v", i, err)
		}
	}
}

// FuzzChatRequest feeds arbitrary bodies to the chat request parser,
// validator and template renderer: nothing may panic, and the result is
// always a valid engine request or an OpenAI error.
func FuzzChatRequest(f *testing.F) {
	fuzzSeeds(f,
		`{"messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"stories260K","messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],"n":2,"logprobs":true,"top_logprobs":3,"stop":["x","y"],"seed":-1,"logit_bias":{"5":-100},"temperature":0.5,"top_p":0,"top_k":-1,"min_p":0.1,"repetition_penalty":1.1,"max_completion_tokens":5,"stream":true,"stream_options":{"include_usage":true}}`,
		`{"messages":[{"role":"user","content":null}],"max_tokens":null,"stop":null}`,
		`{"messages":[{"role":"tool","content":"x","name":"f"}],"tools":[],"response_format":{"type":"text"}}`,
		`{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}`,
		`{"messages":[{"role":"developer","content":"\u0000<|im_start|>"}],"priority":-3}`,
		`[]`, `{"messages":1e400}`, `{"messages":[{"role":"user","content":"x"}],"logit_bias":{"-1":1}}`,
	)
	fx := newFixture(f, fixtureOptions{})
	f.Fuzz(func(t *testing.T, body []byte) {
		j, err := prepareChat(fx.srv.model.Load(), body)
		checkPrepared(t, fx, j, err)
	})
}

// FuzzCompletionRequest does the same for completions requests.
func FuzzCompletionRequest(f *testing.F) {
	fuzzSeeds(f,
		`{"prompt":"Once upon a time"}`,
		`{"prompt":["a","b"],"n":3,"echo":true,"logprobs":null,"best_of":3}`,
		`{"prompt":[1,2,3],"logprobs":5,"max_tokens":100}`,
		`{"prompt":[[1,2],[3]],"stop":"x","ignore_eos":true}`,
		`{"prompt":[[]]}`, `{"prompt":[]}`, `{"prompt":[1,"a"]}`, `{"prompt":[-1]}`, `{"prompt":"x","suffix":""}`,
	)
	fx := newFixture(f, fixtureOptions{})
	f.Fuzz(func(t *testing.T, body []byte) {
		j, err := prepareCompletion(fx.srv.model.Load(), body)
		checkPrepared(t, fx, j, err)
	})
}

// FuzzEventID feeds arbitrary Last-Event-ID values to the parser: nothing
// may panic; an accepted id is STREAM:SEQ and prints back as itself (up to
// the sequence number's spelling); a refused one is a 400 about the header.
func FuzzEventID(f *testing.F) {
	for _, s := range []string{"chatcmpl-0123456789abcdef01234567:17", "cmpl-x:0", ":5", "a:", "a:b:3", "a:-1", "a:18446744073709551616", "", "\x00:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		id, seq, err := parseEventID(v)
		if err != nil {
			var e *openai.Error
			if !errors.As(err, &e) || e.Status != 400 || e.Param != "Last-Event-ID" {
				t.Fatalf("parseEventID(%q) error %#v, want a 400 about Last-Event-ID", v, err)
			}
			return
		}
		if id == "" || !strings.HasPrefix(v, id+":") {
			t.Fatalf("parseEventID(%q) = %q, %d", v, id, seq)
		}
		if id2, seq2, err := parseEventID(id + ":" + strconv.FormatUint(seq, 10)); err != nil || id2 != id || seq2 != seq {
			t.Fatalf("parseEventID(%q) = %q, %d, which prints as an id that parses to %q, %d, %v", v, id, seq, id2, seq2, err)
		}
	})
}
