package ollama

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestParseOptions(t *testing.T) {
	parse := func(s string) (Options, error) {
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatal(err)
		}
		return ParseOptions(m)
	}
	o, err := parse(`{}`)
	s := o.Request.Sample
	if err != nil || s.Temperature != 0.8 || s.TopK != 40 || s.TopP != 0.9 || s.RepeatPenalty != 1.1 || s.RepeatLastN != 64 || o.Request.MaxTokens != 0 {
		t.Errorf("defaults: %+v, %v; want Ollama's", o, err)
	}
	o, err = parse(`{"num_predict":10,"temperature":0,"top_k":0,"top_p":1,"min_p":0.05,"repeat_penalty":1,"repeat_last_n":-1,"presence_penalty":0.5,"frequency_penalty":-0.5,"seed":42,"stop":"\n","num_ctx":64,"num_gpu":99,"unknown":{"x":1}}`)
	s = o.Request.Sample
	if err != nil || o.Request.MaxTokens != 10 || s.Temperature != 0 || s.TopK != 0 || s.MinP != 0.05 || s.RepeatLastN != -1 ||
		s.PresencePenalty != 0.5 || s.FrequencyPenalty != -0.5 || s.Seed != 42 || len(o.Request.Stop) != 1 || o.NumCtx != 64 {
		t.Errorf("options: %+v, %v", o, err)
	}
	o, _ = parse(`{"repeat_last_n":0,"presence_penalty":1,"top_p":0,"num_predict":-2,"seed":3.0}`)
	if s := o.Request.Sample; s.RepeatPenalty != 1 || s.PresencePenalty != 0 || s.TopK != 1 || o.Request.MaxTokens != 0 || s.Seed != 3 {
		t.Errorf("repeat_last_n 0, top_p 0: %+v", s)
	}
	for body, want := range map[string]string{
		`{"num_predict":0}`:         `"num_predict"`,
		`{"num_predict":"5"}`:       `"num_predict" must be an integer`,
		`{"top_k":-1}`:              `"top_k"`,
		`{"top_p":2}`:               `"top_p" is 2; it must be between 0 and 1`,
		`{"temperature":true}`:      `"temperature" must be a number`,
		`{"num_ctx":-5}`:            `"num_ctx"`,
		`{"stop":[1]}`:              `"stop"`,
		`{"repeat_last_n":-2}`:      `"repeat_last_n"`,
		`{"presence_penalty":1e39}`: `"presence_penalty"`,
	} {
		if _, err := parse(body); err == nil || !strings.Contains(err.Error(), want) || err.(*Error).Status != 400 {
			t.Errorf("ParseOptions(%s) = %v, want a 400 with %s", body, err, want)
		}
	}
}

func TestFit(t *testing.T) {
	o := Options{NumCtx: 10}
	if err := o.Fit(4, 128); err != nil || o.Request.MaxTokens != 6 {
		t.Errorf("Fit(4, 128) with num_ctx 10: %v, max %d; want 6", err, o.Request.MaxTokens)
	}
	if err := o.Fit(10, 128); err == nil {
		t.Error("a prompt of num_ctx tokens fits")
	}
	o = Options{NumCtx: 4096}
	if err := o.Fit(100, 128); err != nil || o.Request.MaxTokens != 0 {
		t.Errorf("num_ctx above the engine's: %v, %d", err, o.Request.MaxTokens)
	}
}

func TestChunks(t *testing.T) {
	at := time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC)
	for _, b := range [][]byte{AppendGenerateChunk(nil, "m", at, "a\"b"), AppendChatChunk(nil, "m", at, "\u2028")} {
		var v struct {
			Model     string
			CreatedAt time.Time `json:"created_at"`
			Done      bool
		}
		if !strings.HasSuffix(string(b), "}\n") || json.Unmarshal(b, &v) != nil || v.Model != "m" || !v.CreatedAt.Equal(at) || v.Done {
			t.Errorf("chunk %s", b)
		}
	}
	if got := string(AppendErrorLine(nil, BadRequest("bad %q", "x"))); got != `{"error":"bad \"x\""}`+"\n" {
		t.Errorf("error line %q", got)
	}
}

func TestNames(t *testing.T) {
	for in, want := range map[string]string{"llama3": "llama3:latest", "llama3:8b": "llama3:8b", "hf.co/a/b": "hf.co/a/b:latest"} {
		if got := Name(in); got != want {
			t.Errorf("Name(%q) = %q, want %q", in, got, want)
		}
	}
	for n, want := range map[int64]string{260_000: "260K", 8_030_261_248: "8.0B", 1_500_000: "1.5M", 12: "12"} {
		if got := ParameterSize(n); got != want {
			t.Errorf("ParameterSize(%d) = %q, want %q", n, got, want)
		}
	}
}
