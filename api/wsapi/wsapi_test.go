package wsapi

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/spigot-llm/spigot/api/openai"
)

// FuzzParseMessage feeds arbitrary WebSocket messages to their parser:
// nothing may panic; a message is accepted with a known type and (but for
// ping) an id of 1 to 256 bytes, or refused with a 400 whose id, if any,
// is a usable one.
func FuzzParseMessage(f *testing.F) {
	for _, s := range []string{
		`{"type":"chat","id":"a","request":{"messages":[{"role":"user","content":"hi"}]}}`,
		`{"type":"completion","id":"b","request":{"prompt":"x"}}`,
		`{"type":"cancel","id":"a"}`, `{"type":"resume","id":"c","stream":"chatcmpl-1","after":3}`,
		`{"type":"ping"}`, `{"type":"nope","id":"x"}`, `{"type":"chat"}`, `{"id":7}`, `not json`, `[]`, `{"after":-1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		msg, err := ParseMessage(data)
		if len(msg.ID) > MaxClientID {
			t.Fatalf("ParseMessage(%q) returned an id of %d bytes", data, len(msg.ID))
		}
		if err != nil {
			var e *openai.Error
			if !errors.As(err, &e) || e.Status != 400 || e.Message == "" {
				t.Fatalf("ParseMessage(%q) error %#v, want a 400", data, err)
			}
			return
		}
		switch msg.Type {
		case "ping":
		case "chat", "completion", "cancel", "resume":
			if msg.ID == "" {
				t.Fatalf("ParseMessage(%q) accepted a %s without an id", data, msg.Type)
			}
		default:
			t.Fatalf("ParseMessage(%q) accepted type %q", data, msg.Type)
		}
	})
}

// TestMessages checks each server message against the protocol's
// examples, as JSON.
func TestMessages(t *testing.T) {
	u := openai.Usage{PromptTokens: 3, CompletionTokens: 2, TotalTokens: 5}
	for _, tc := range []struct{ got, want string }{
		{string(AppendStart(nil, "a", "chatcmpl-1", "m", 1700000000)), `{"type":"start","id":"a","stream":"chatcmpl-1","model":"m","created":1700000000}`},
		{string(append(AppendDelta(nil, "a", 5, 1, "Once \"upon\""), '}')), `{"type":"delta","id":"a","seq":5,"index":1,"text":"Once \"upon\""}`},
		{string(AppendDone(nil, "a", 90, []string{"length", "stop"}, &u)),
			`{"type":"done","id":"a","seq":90,"finish_reason":"length","finish_reasons":["length","stop"],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}`},
		{string(AppendDone(nil, "a", 90, []string{"stop"}, nil)), `{"type":"done","id":"a","seq":90,"finish_reason":"stop","finish_reasons":["stop"]}`},
		{string(AppendError(nil, "", 0, openai.BadRequest("id", "no id"))),
			`{"type":"error","status":400,"error":{"message":"no id","type":"invalid_request_error","param":"id","code":null}}`},
		{string(Pong), `{"type":"pong"}`},
	} {
		var g, w any
		if err := json.Unmarshal([]byte(tc.got), &g); err != nil {
			t.Errorf("%s: %v", tc.got, err)
			continue
		}
		json.Unmarshal([]byte(tc.want), &w)
		if !reflect.DeepEqual(g, w) {
			t.Errorf("got  %s\nwant %s", tc.got, tc.want)
		}
	}
}
