package tgi

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/spigot-llm/spigot/engine"
)

func TestOptions(t *testing.T) {
	cases := []struct {
		body     string
		check    func(o Options) bool
		errorHas string
	}{
		{body: `{"inputs":"x"}`, check: func(o Options) bool {
			s := o.Request.Sample
			return !o.Sampling && s.Temperature == 0 && o.Request.MaxTokens == DefaultMaxNewTokens && o.Request.Logprobs && !o.Details
		}},
		{body: `{"inputs":"x","parameters":{"temperature":0.5}}`, check: func(o Options) bool {
			return o.Sampling && o.Request.Sample.Temperature == 0.5
		}},
		{body: `{"inputs":"x","parameters":{"temperature":1.0}}`, check: func(o Options) bool { return !o.Sampling }},
		{body: `{"inputs":"x","parameters":{"do_sample":true,"seed":9,"top_k":5,"top_p":0.5}}`, check: func(o Options) bool {
			s := o.Request.Sample
			return o.Sampling && s.Temperature == 1 && s.TopK == 5 && s.TopP == 0.5 && s.Seed == 9 && o.Seed == 9
		}},
		{body: `{"inputs":"x","parameters":{"repetition_penalty":1.2,"frequency_penalty":0.5,"stop":["a"],"max_new_tokens":3,"top_n_tokens":2,"details":true,"return_full_text":true,"truncate":5}}`,
			check: func(o Options) bool {
				r := o.Request
				return !o.Sampling && r.Sample.RepeatPenalty == 1.2 && r.Sample.FrequencyPenalty == 0.5 && len(r.Stop) == 1 &&
					r.MaxTokens == 3 && r.TopLogprobs == 2 && o.Details && o.ReturnFullText && o.Truncate == 5
			}},
		{body: `{"inputs":"x","parameters":{"temperature":0}}`, errorHas: "`temperature` must be strictly positive"},
		{body: `{"inputs":"x","parameters":{"top_p":1.01}}`, errorHas: "`top_p`"},
		{body: `{"inputs":"x","parameters":{"watermark":true}}`, errorHas: "`watermark`"},
		{body: `{"inputs":"x","parameters":{"grammar":{"type":"regex","value":"a"}}}`, errorHas: "`grammar`"},
		{body: `{"inputs":"x","parameters":{"decoder_input_details":true}}`, errorHas: "`decoder_input_details`"},
		{body: `{"inputs":"x","parameters":{"adapter_id":"lora"}}`, errorHas: "`adapter_id`"},
		{body: `{"inputs":"x","parameters":{"frequency_penalty":3}}`, errorHas: "`frequency_penalty`"},
		{body: `{"inputs":"x","parameters":{"top_n_tokens":21}}`, errorHas: "`top_n_tokens`"},
	}
	for _, tc := range cases {
		r, err := Decode([]byte(tc.body))
		if err != nil {
			t.Fatalf("Decode(%s): %v", tc.body, err)
		}
		o, err := r.Options()
		switch {
		case tc.errorHas != "":
			e, ok := err.(*Error)
			if !ok || e.Status != 422 || e.Type != "validation" || !strings.Contains(e.Message, tc.errorHas) {
				t.Errorf("Options(%s) = %v, want a 422 naming %s", tc.body, err, tc.errorHas)
			}
		case err != nil:
			t.Errorf("Options(%s): %v", tc.body, err)
		case !tc.check(o):
			t.Errorf("Options(%s) = %+v", tc.body, o)
		}
	}
}

func TestFinishReason(t *testing.T) {
	for _, tc := range []struct {
		reason      string
		tokens, got int
		want        string
	}{
		{engine.FinishStop, 5, 4, FinishEOSToken},
		{engine.FinishStop, 5, 5, FinishStopSequence},
		{engine.FinishLength, 5, 5, FinishLength},
	} {
		if got := FinishReason(tc.reason, tc.tokens, tc.got); got != tc.want {
			t.Errorf("FinishReason(%q, %d, %d) = %q, want %q", tc.reason, tc.tokens, tc.got, got, tc.want)
		}
	}
}

// TestAppend checks that the appenders write valid JSON with the fields
// TGI's schemas require, logprobs null where none was computed.
func TestAppend(t *testing.T) {
	seed := uint64(3)
	ev := AppendEvent(nil, 2, Token{ID: 7, Text: "a\"\n", Logprob: -0.5}, []Token{}, &End{GeneratedText: "x", Details: true, FinishReason: FinishLength, GeneratedTokens: 2, InputLength: 4, Seed: &seed})
	data, ok := strings.CutPrefix(string(ev), "data: ")
	if !ok || !strings.HasSuffix(data, "\n\n") {
		t.Fatalf("event %q", ev)
	}
	var v struct {
		Index int
		Token struct {
			ID      int32
			Text    string
			Logprob *float64
			Special bool
		}
		TopTokens     []Token `json:"top_tokens"`
		GeneratedText string  `json:"generated_text"`
		Details       struct {
			Seed        uint64
			InputLength int `json:"input_length"`
		}
	}
	if err := json.Unmarshal([]byte(data), &v); err != nil {
		t.Fatal(err)
	}
	if v.Index != 2 || v.Token.Text != "a\"\n" || *v.Token.Logprob != -0.5 || v.TopTokens == nil || v.Details.Seed != 3 || v.Details.InputLength != 4 {
		t.Errorf("decoded %+v from %s", v, data)
	}
	b := AppendResponse(nil, &Response{GeneratedText: "x", Details: true, FinishReason: FinishEOSToken, Tokens: []Token{{ID: 2, NoLogprob: true, Special: true}}})
	if !json.Valid(b) || !strings.Contains(string(b), `"logprob":null,"special":true`) || !strings.Contains(string(b), `"seed":null,"prefill":[]`) {
		t.Errorf("response %s", b)
	}
}
