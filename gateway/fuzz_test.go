package gateway

import (
	"bytes"
	"encoding/json"
	"io"
	"testing"

	"github.com/spigot-llm/spigot/api/openai"
)

// FuzzSSESource: any input splits into events that end in a blank line,
// hold only input bytes, and end in io.EOF or an error; never a panic or a
// hang.
func FuzzSSESource(f *testing.F) {
	f.Add([]byte("data: {\"a\":1}\n\ndata: [DONE]\n\n"))
	f.Add([]byte("data:x\r\n\r\n: comment\nid: 3\nevent: e\ndata: y\ndata: z\n\n\n\ndata: cut"))
	f.Add(readWire(f, "tgi_stream.sse"))
	f.Fuzz(func(t *testing.T, in []byte) {
		s := newSSESource(bytes.NewReader(in))
		total := 0
		for range len(in) + 1 {
			raw, data, err := s.next()
			if err != nil {
				if err == io.EOF && total > len(in) {
					t.Fatalf("events hold %d bytes of %d", total, len(in))
				}
				return
			}
			total += len(raw)
			// The event ends with a line holding nothing but line-end
			// bytes ("\n", "\r\n", or carriage returns, each an empty
			// line to an SSE client), after a line of its own.
			body := bytes.TrimSuffix(raw, []byte("\n"))
			last := body[bytes.LastIndexByte(body, '\n')+1:]
			if len(body) == len(raw) || len(bytes.Trim(last, "\r")) != 0 || len(last) == len(body) {
				t.Fatalf("event %q does not end in a blank line", raw)
			}
			if len(data) > len(raw) {
				t.Fatalf("data %q longer than its event %q", data, raw)
			}
		}
		t.Fatal("more events than input bytes")
	})
}

// FuzzParseRequest: a request the gateway accepts yields its own body
// for a first attempt and a JSON object for a continuation.
func FuzzParseRequest(f *testing.F) {
	f.Add([]byte(`{"model":"m","prompt":"hi","max_tokens":5,"stream":true}`), false)
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":3}`), true)
	f.Add([]byte(`{"prompt":[1,2,3],"n":2,"stream_options":{"include_usage":true}}`), false)
	f.Fuzz(func(t *testing.T, body []byte, chat bool) {
		kind := openai.Completion
		if chat {
			kind = openai.Chat
		}
		r, err := parseRequest(body, kind, 16)
		if err != nil {
			return
		}
		if b, _ := r.body("", 0); !bytes.Equal(b, body) {
			t.Fatal("a first attempt does not send the client's body")
		}
		b, left := r.body("so far", 2)
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("continuation body %q: %v", b, err)
		}
		if left < -1 {
			t.Fatalf("left %d", left)
		}
	})
}

// FuzzTranslate: whatever a TGI or Ollama upstream sends, the translated
// events are OpenAI chunks (JSON) or [DONE], [DONE] last.
func FuzzTranslate(f *testing.F) {
	f.Add(readWire(f, "tgi_stream.sse"), true)
	f.Add(readWire(f, "ollama_chat_stream.ndjson"), false)
	f.Add(readWire(f, "ollama_generate_stream.ndjson"), false)
	f.Fuzz(func(t *testing.T, in []byte, tgi bool) {
		r := &request{kind: openai.Chat, includeUsage: true}
		var tr translator = &ollamaTranslator{}
		if tgi {
			r.kind = openai.Completion
			tr = &tgiTranslator{}
		}
		tr.init(openai.NewEncoder(openai.EncoderConfig{Kind: r.kind, ID: "x", Model: "m", Choices: 1, IncludeUsage: true}), r)
		s := newTranslatedSource(bytes.NewReader(in), tr, tgi)
		done := false
		for range 4*len(in) + 8 {
			_, data, err := s.next()
			if err != nil {
				return
			}
			if done {
				t.Fatalf("event %q after [DONE]", data)
			}
			if string(data) == "[DONE]" {
				done = true
				continue
			}
			if !json.Valid(data) {
				t.Fatalf("translated event %q is not JSON", data)
			}
		}
		t.Fatal("too many events")
	})
}
