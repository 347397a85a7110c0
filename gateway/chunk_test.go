package gateway

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"

	"github.com/spigot-llm/spigot/api/openai"
)

// refChunk is a chunk as encoding/json reads it: what parseChunk must
// agree with.
type refChunk struct {
	ID      json.RawMessage `json:"id"`
	Choices []struct {
		Index int `json:"index"`
		Delta *struct {
			Role    string  `json:"role"`
			Content *string `json:"content"`
		} `json:"delta"`
		Text           *string         `json:"text"`
		FinishReason   *string         `json:"finish_reason"`
		TokenIDs       *[]int64        `json:"token_ids"`
		PromptTokenIDs []int64         `json:"prompt_token_ids"`
		Logprobs       json.RawMessage `json:"logprobs"`
	} `json:"choices"`
	Usage *openai.Usage `json:"usage"`
	Error *struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Code    any    `json:"code"`
	} `json:"error"`
}

// fromRef puts a refChunk in parseChunk's terms.
func fromRef(r *refChunk) chunk {
	c := chunk{ID: r.ID, Usage: r.Usage}
	for _, rc := range r.Choices {
		ch := choice{Index: rc.Index, PromptTokenIDs: rc.PromptTokenIDs, Logprobs: rc.Logprobs}
		if rc.Delta != nil {
			ch.Delta, ch.Role = true, rc.Delta.Role
			if rc.Delta.Content != nil {
				ch.Content, ch.HasContent = *rc.Delta.Content, true
			}
		}
		if rc.Text != nil {
			ch.Text, ch.HasText = *rc.Text, true
		}
		if rc.FinishReason != nil {
			ch.FinishReason, ch.HasFinish = *rc.FinishReason, true
		}
		if rc.TokenIDs != nil {
			ch.TokenIDs, ch.HasTokenIDs = *rc.TokenIDs, true
		}
		c.Choices = append(c.Choices, ch)
	}
	if r.Error != nil {
		c.Error = &chunkError{Message: r.Error.Message, Type: r.Error.Type}
		c.Error.Code, _ = r.Error.Code.(string)
	}
	return c
}

// normal makes equal chunks compare equal: no token-id slice when there
// are none, nil for empty slices and raw values.
func normal(c chunk) chunk {
	if len(c.Choices) == 0 {
		c.Choices = nil
	}
	if len(c.ID) == 0 {
		c.ID = nil
	}
	for i := range c.Choices {
		ch := &c.Choices[i]
		if len(ch.TokenIDs) == 0 {
			ch.TokenIDs = nil
		}
		if len(ch.Logprobs) == 0 {
			ch.Logprobs = nil
		}
		if !ch.Delta {
			ch.Role, ch.Content, ch.HasContent = "", "", false
		}
	}
	return c
}

var chunkSeeds = []string{
	`{"id":"cmpl-1","object":"text_completion","created":5,"model":"m","choices":[{"index":0,"text":"a","logprobs":null,"finish_reason":null,"token_ids":[12]}],"usage":null}`,
	`{"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null,"prompt_token_ids":[1,2,3]}]}`,
	`{"id":"chatcmpl-1","choices":[{"index":1,"delta":{"content":"h\u00e9\"llo\ud83d\ude00"},"logprobs":{"content":[{"token":"h","logprob":-0.5,"bytes":[104],"top_logprobs":[]}]},"finish_reason":"stop"}]}`,
	`{"id":"x","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}`,
	`{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":"x"}}`,
	`{"error":{"message":"boom","type":"server_error","code":500}}`,
	`{"ID":"a","Choices":[{"Index":2,"TEXT":"b","finish_reason":null},null]}`,
	`{"choices":[{"text":"a","text":null,"delta":{"content":"b"},"delta":null}]}`,
	`{"choices":[{"index":0,"token_ids":[],"prompt_token_ids":[]}]}`,
	`{"choices":"no"}`,
	`[1,2]`,
	`{"choices":[{"text":"\xff\xfe ok"}]}`,
	`{"choices":[{"text":"\ud800"}]}`,
}

// TestParseChunk checks parseChunk against encoding/json on the seeds.
func TestParseChunk(t *testing.T) {
	for _, s := range chunkSeeds {
		checkChunk(t, []byte(s))
	}
	// Reuse: a chunk read after one with more choices and ids keeps none
	// of them.
	var c chunk
	parseChunk([]byte(chunkSeeds[0]), &c)
	parseChunk([]byte(`{"choices":[{"index":0,"text":"b"}]}`), &c)
	if len(c.Choices) != 1 || c.Choices[0].HasTokenIDs || len(c.Choices[0].TokenIDs) != 0 || c.Choices[0].Text != "b" {
		t.Errorf("after reuse: %+v", c)
	}
}

// checkChunk fails when encoding/json reads data as a chunk and
// parseChunk does not, or reads something else.
func checkChunk(t *testing.T, data []byte) {
	t.Helper()
	var r refChunk
	if json.Unmarshal(data, &r) != nil {
		return // parseChunk may be more lenient (a number for an int)
	}
	var got chunk
	got.Choices = make([]choice, 3, 4) // reused slices must not leak into the result
	got.Choices[0].TokenIDs = []int64{9, 9, 9}
	got.Choices = got.Choices[:0]
	if !parseChunk(data, &got) {
		t.Fatalf("%q: parseChunk refused what encoding/json reads", data)
	}
	want := fromRef(&r)
	if g, w := normal(got), normal(want); !reflect.DeepEqual(g, w) {
		t.Fatalf("%q:\nparseChunk %s\njson       %s", data, dump(g), dump(w))
	}
}

func dump(c chunk) string {
	s := fmt.Sprintf("id=%s usage=%+v error=%+v", c.ID, c.Usage, c.Error)
	for _, ch := range c.Choices {
		s += fmt.Sprintf("\n  %+v logprobs=%s", ch, ch.Logprobs)
	}
	return s
}

// FuzzParseChunk: whatever encoding/json reads as a chunk, parseChunk
// reads the same.
func FuzzParseChunk(f *testing.F) {
	for _, s := range chunkSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkChunk(t, data)
	})
}

func BenchmarkParseChunk(b *testing.B) {
	data := []byte(`{"id":"chatcmpl-5f3c2a","object":"chat.completion.chunk","created":1733548800,"model":"stories260K","system_fingerprint":"b1","choices":[{"index":0,"delta":{"content":" upon"},"logprobs":null,"finish_reason":null}],"usage":null}`)
	b.Run("parseChunk", func(b *testing.B) {
		var c chunk
		for b.Loop() {
			parseChunk(data, &c)
		}
	})
	b.Run("json", func(b *testing.B) {
		for b.Loop() {
			var r refChunk
			json.Unmarshal(data, &r)
		}
	})
}
