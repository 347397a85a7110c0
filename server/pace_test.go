package server

import (
	"encoding/json"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// arrival is one chunk as the client got it: when, and what it carried.
type arrival struct {
	at     time.Duration // since the request was sent
	text   string
	tokens int // tokens it carries (from its logprobs), when logprobs were asked for
}

// arrivals sends a streamed request and records when each chunk carrying
// text or tokens arrives, and the stream's result.
func arrivals(t *testing.T, fx *fixture, path, body string, each func(i int)) ([]arrival, streamResult) {
	t.Helper()
	start := time.Now()
	resp := fx.open(t, http.MethodPost, path, body)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	r := newSSEReader(t, resp.Body)
	res := streamResult{texts: map[int]string{}, finishes: map[int][]string{}}
	var out []arrival
	for {
		data, err := r.next()
		if err != nil {
			break
		}
		now := time.Since(start)
		res.events = append(res.events, data)
		if data == "[DONE]" {
			res.done = true
			continue
		}
		var c struct {
			Choices []struct {
				Text  string `json:"text"`
				Delta *struct {
					Content string `json:"content"`
				} `json:"delta"`
				Logprobs *struct {
					Content []json.RawMessage `json:"content"`
				} `json:"logprobs"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Usage *struct {
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatalf("chunk %s: %v", data, err)
		}
		for _, ch := range c.Choices {
			text := ch.Text
			if ch.Delta != nil {
				text += ch.Delta.Content
			}
			res.texts[0] += text
			if ch.FinishReason != nil {
				res.finishes[0] = append(res.finishes[0], *ch.FinishReason)
			}
			a := arrival{at: now, text: text}
			if ch.Logprobs != nil {
				a.tokens = len(ch.Logprobs.Content)
			}
			if text == "" && a.tokens == 0 {
				continue
			}
			out = append(out, a)
			if each != nil {
				each(len(out))
			}
		}
	}
	return out, res
}

// gaps returns the times between consecutive arrivals, in milliseconds.
func gaps(as []arrival) []float64 {
	var g []float64
	for i := 1; i < len(as); i++ {
		g = append(g, float64(as[i].at-as[i-1].at)/float64(time.Millisecond))
	}
	return g
}

func meanStd(xs []float64) (mean, std float64) {
	for _, x := range xs {
		mean += x
	}
	mean /= float64(len(xs))
	for _, x := range xs {
		std += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(std / float64(len(xs)))
}

// TestPacing checks stream_options.pace_tokens_per_second: at 50 tokens/s
// the chunks arrive 20 ms apart on average with little jitter, while the
// engine has generated them all long before; the text is the unpaced one.
// (Real time, on a machine that may be busy: the margins allow for
// scheduling noise and are far from an unpaced stream's sub-millisecond
// gaps.)
func TestPacing(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 2})
	body := `{"prompt":"Once upon a time","temperature":0,"max_tokens":40,"ignore_eos":true,"stream":true%s}`
	plain, want := arrivals(t, fx, "/v1/completions", strings.Replace(body, "%s", "", 1), nil)
	var doneAt int // the chunk being read when the engine had finished generating
	paced, got := arrivals(t, fx, "/v1/completions", strings.Replace(body, "%s", `,"stream_options":{"pace_tokens_per_second":50}`, 1), func(i int) {
		if doneAt == 0 && fx.eng.Stats().FinishedLength == 2 {
			doneAt = i
		}
	})
	if got.texts[0] != want.texts[0] || !got.done || !slices.Equal(got.finishes[0], want.finishes[0]) {
		t.Fatalf("paced text %q (done %v, finishes %v), want %q", got.texts[0], got.done, got.finishes[0], want.texts[0])
	}
	if len(paced) < 30 {
		t.Fatalf("%d chunks with text; want one per token (about 40)", len(paced))
	}
	g := gaps(paced)
	mean, std := meanStd(g)
	pmean, _ := meanStd(gaps(plain))
	even := 0 // gaps within 5 ms of 20
	for _, d := range g {
		if math.Abs(d-20) <= 5 {
			even++
		}
	}
	t.Logf("paced at 50/s: %d chunks, gaps mean %.2f ms, std %.2f ms, %d of %d within 20±5 ms; unpaced mean %.3f ms; generation done by chunk %d",
		len(paced), mean, std, even, len(g), pmean, doneAt)
	if mean < 18 || mean > 24 {
		t.Errorf("mean gap %.2f ms, want about 20 (50 tokens/s)", mean)
	}
	// Jitter: a busy machine may delay a write now and then (one long gap,
	// then a short one, as the schedule is kept), but most gaps are even.
	if even < len(g)*2/3 {
		t.Errorf("only %d of %d gaps within 20±5 ms (std %.2f ms); want even spacing", even, len(g), std)
	}
	if doneAt == 0 || doneAt > len(paced)/2 {
		t.Errorf("the engine finished when chunk %d of %d was read; want generation to run ahead at full speed", doneAt, len(paced))
	}
}

// TestCoalescing checks stream_options.min_interval_ms: with 100 ms,
// chunks carrying tokens arrive at least about 100 ms apart, each with
// several tokens, the first one without waiting; the text, the token
// count and the finish are those of an uncoalesced stream. (The prompt
// leaves room for about 80 tokens in the model's 128-token context.)
func TestCoalescing(t *testing.T) {
	// 4 ms steps: about 250 tokens/s, so 100 ms gathers about 25.
	fx := newFixture(t, fixtureOptions{parallel: 2, delay: 4 * time.Millisecond})
	body := `{"messages":[{"role":"user","content":"Once upon a time"}],"temperature":0,"max_tokens":100,"ignore_eos":true,` +
		`"logprobs":true,"stream":true,"stream_options":{"include_usage":true%s}}`
	plain, want := arrivals(t, fx, "/v1/chat/completions", strings.Replace(body, "%s", "", 1), nil)
	frames, got := arrivals(t, fx, "/v1/chat/completions", strings.Replace(body, "%s", `,"min_interval_ms":100`, 1), nil)
	if got.texts[0] != want.texts[0] || !got.done || !slices.Equal(got.finishes[0], want.finishes[0]) {
		t.Fatalf("coalesced text %q (finishes %v), want %q (%v)", got.texts[0], got.finishes[0], want.texts[0], want.finishes[0])
	}
	tokens, wantTokens := 0, 0
	for _, f := range plain {
		wantTokens += f.tokens
	}
	for i, f := range frames {
		tokens += f.tokens
		if i > 0 && i < len(frames)-1 && f.tokens < 5 {
			t.Errorf("frame %d carries %d tokens; want several", i, f.tokens)
		}
	}
	if tokens != wantTokens || len(plain) != wantTokens {
		t.Errorf("the frames carry %d tokens' logprobs, want %d, one per uncoalesced chunk (%d)", tokens, wantTokens, len(plain))
	}
	g := gaps(frames)
	t.Logf("%d frames (uncoalesced: %d chunks), first at %v, gaps %.1f ms", len(frames), len(plain), frames[0].at, g)
	for i, d := range g {
		if d < 80 {
			t.Errorf("frames %d and %d arrived %.1f ms apart; want at least about 100", i, i+1, d)
		}
	}
	if len(frames) < 3 || len(frames) > 12 { // more on a busy machine, where steps take longer
		t.Errorf("%d frames for about 350 ms of generation; want about 4", len(frames))
	}
	if frames[0].tokens != 1 || frames[0].at > 80*time.Millisecond {
		t.Errorf("the first frame came at %v with %d tokens; want the first token alone, at once", frames[0].at, frames[0].tokens)
	}
}
