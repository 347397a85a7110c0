package server

import (
	"errors"
	"testing"

	"github.com/spigot-llm/spigot/api/ollama"
	"github.com/spigot-llm/spigot/api/tgi"
)

// FuzzTGIRequest feeds arbitrary bodies to the TGI request parser and
// validator: nothing may panic, and the result is a request the engine
// accepts or a 4xx TGI error.
func FuzzTGIRequest(f *testing.F) {
	for _, s := range []string{
		`{"inputs":"Once upon a time"}`,
		`{"inputs":"x","parameters":{"do_sample":true,"temperature":0.7,"top_k":10,"top_p":0.9,"repetition_penalty":1.1,"frequency_penalty":0.5,"seed":7,"stop":["a"],"max_new_tokens":5,"details":true,"return_full_text":true,"top_n_tokens":3,"truncate":4,"best_of":1,"typical_p":1}}`,
		`{"inputs":"x","parameters":{"temperature":0}}`, `{"inputs":"x","parameters":{"grammar":{"type":"json","value":{}}}}`,
		`{"inputs":"x","parameters":{"seed":-1}}`, `{"inputs":"x","parameters":{"truncate":0,"top_p":1e-300}}`, `[]`, `{"inputs":7}`,
	} {
		f.Add([]byte(s))
	}
	fx := newFixture(f, fixtureOptions{})
	f.Fuzz(func(t *testing.T, body []byte) {
		tj, err := prepareTGI(fx.srv.model.Load(), body)
		if err != nil {
			var e *tgi.Error
			if !errors.As(err, &e) || e.Status < 400 || e.Status > 499 || e.Message == "" || e.Type == "" {
				t.Fatalf("error %#v is not a 4xx TGI error", err)
			}
			return
		}
		checkPrepared(t, fx, &tj.job, nil)
	})
}

// FuzzOllamaRequest does the same for /api/generate and /api/chat bodies.
func FuzzOllamaRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"stories260K","prompt":"Once"}`,
		`{"model":"stories260K","prompt":"x","raw":true,"stream":false,"options":{"num_predict":-2,"num_ctx":64,"temperature":0.5,"top_k":0,"top_p":0,"min_p":0.1,"repeat_penalty":1.2,"repeat_last_n":0,"presence_penalty":1,"frequency_penalty":-1,"seed":3,"stop":["a","b"],"num_gpu":1}}`,
		`{"model":"stories260K:latest","system":"s","prompt":"p","context":[1,2,3]}`,
		`{"model":"stories","messages":[{"role":"system","content":"s"},{"role":"user","content":"u"},{"role":"assistant","content":"a"}],"options":{"seed":-1}}`,
		`{"model":"stories260K","messages":[]}`, `{"model":"x"}`, `{"model":"stories260K","prompt":"x","options":{"num_ctx":1e300}}`,
	} {
		f.Add([]byte(s))
	}
	fx := newFixture(f, fixtureOptions{})
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, isChat := range []bool{false, true} {
			oj, err := prepareOllama(fx.srv.model.Load(), body, isChat)
			if err != nil {
				var e *ollama.Error
				if !errors.As(err, &e) || e.Status < 400 || e.Status > 499 || e.Message == "" {
					t.Fatalf("error %#v is not a 4xx Ollama error", err)
				}
				continue
			}
			if oj.load {
				continue
			}
			checkPrepared(t, fx, &oj.job, nil)
		}
	})
}
