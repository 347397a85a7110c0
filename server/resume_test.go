package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"
)

// open sends a request and returns the response with its body unread.
func (fx *fixture) open(t testing.TB, method, path, body string, header ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, fx.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := fx.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// resumer is a client that reads one stream over as many connections as
// it takes: each connection's last complete event is where the next one
// resumes.
type resumer struct {
	t        testing.TB
	res      streamResult // what all the connections delivered, together
	lastID   string       // the last complete event's id
	lastSeq  uint64
	streamID string
	conns    int
}

func newResumer(t testing.TB) *resumer {
	return &resumer{t: t, res: streamResult{texts: map[int]string{}, finishes: map[int][]string{}}}
}

// read takes events from one connection's body until it ends or is cut
// (an event cut in the middle is not taken), and reports whether [DONE]
// came.
func (c *resumer) read(body io.Reader) bool {
	c.conns++
	r := newSSEReader(c.t, body)
	r.lastSeq = c.lastSeq // sequence numbers grow across connections too: nothing repeats
	for {
		id, data, err := r.event()
		if err != nil {
			return c.res.done
		}
		c.lastID, c.lastSeq = id, r.lastSeq
		c.streamID = id[:strings.LastIndexByte(id, ':')]
		if c.res.done {
			c.t.Fatalf("event %q after [DONE]", data)
		}
		c.res.events = append(c.res.events, data)
		if data == "[DONE]" {
			c.res.done = true
			continue
		}
		ch := parseChunk(c.t, data)
		switch {
		case ch.Error != nil:
			c.res.errors = append(c.res.errors, ch)
		case ch.Usage != nil && len(ch.Choices) == 0:
			c.res.usage = &ch
		}
		for _, choice := range ch.Choices {
			if len(c.res.finishes[choice.Index]) > 0 {
				c.t.Errorf("choice %d: chunk after its finish: %s", choice.Index, data)
			}
			c.res.texts[choice.Index] += choice.Text
			if choice.Delta != nil && choice.Delta.Content != nil {
				c.res.texts[choice.Index] += *choice.Delta.Content
			}
			if choice.FinishReason != nil {
				c.res.finishes[choice.Index] = append(c.res.finishes[choice.Index], *choice.FinishReason)
			}
		}
	}
}

// cutReader hands out at most n bytes, then reports the connection gone:
// the test closes the body, which closes the TCP connection, mid-event
// wherever n falls.
type cutReader struct {
	r io.Reader
	n int
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.n <= 0 {
		return 0, io.ErrUnexpectedEOF
	}
	if len(p) > c.n {
		p = p[:c.n]
	}
	n, err := c.r.Read(p)
	c.n -= n
	return n, err
}

// TestResumeRandomCuts cuts the connections of greedy streams at random
// bytes, many times, and resumes each time from the last complete event,
// alternately with GET /v1/streams/{id} and by re-sending the request with
// Last-Event-ID. The events put together must be exactly an uncut run's
// text, finish reasons and usage, with no event twice.
func TestResumeRandomCuts(t *testing.T) {
	// Slow steps, so that cuts land while the stream is generating as
	// well as after it has finished.
	fx := newFixture(t, fixtureOptions{parallel: 4, delay: time.Millisecond})
	prompt := jsonString(references(t)[1].Prompt)
	cases := []struct {
		name string
		runs int // cut runs, each with its own random cuts
		path string
		body string
	}{
		{"chat", 4, "/v1/chat/completions",
			`{"messages":[{"role":"user","content":"Once upon a time"}],"temperature":0,"max_tokens":100,"ignore_eos":true,"stream":true,"stream_options":{"include_usage":true}}`},
		{"completion n=2 logprobs", 4, "/v1/completions",
			`{"prompt":` + prompt + `,"temperature":0,"max_tokens":60,"n":2,"logprobs":2,"stream":true,"stream_options":{"include_usage":true}}`},
		{"chat paced and coalesced", 2, "/v1/chat/completions",
			`{"messages":[{"role":"user","content":"Once upon a time"}],"temperature":0,"max_tokens":100,"ignore_eos":true,"logprobs":true,"stream":true,` +
				`"stream_options":{"pace_tokens_per_second":1000,"min_interval_ms":15}}`},
		{"completion echo stop", 4, "/v1/completions",
			`{"prompt":"Once upon a time","echo":true,"temperature":0,"max_tokens":80,"stop":["zzz","ot beo"],"stream":true}`},
	}
	for ci, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := fx.open(t, http.MethodPost, tc.path, tc.body)
			want := collect(t, resp.Body)
			resp.Body.Close()
			if !want.done || len(want.errors) > 0 {
				t.Fatalf("uncut run: %v", want.events)
			}
			for run := range tc.runs {
				seed := uint64(ci*100 + run)
				rng := rand.New(rand.NewPCG(seed, 1))
				c := newResumer(t)
				resp := fx.open(t, http.MethodPost, tc.path, tc.body)
				for {
					if resp.StatusCode != http.StatusOK {
						b, _ := io.ReadAll(resp.Body)
						t.Fatalf("seed %d, connection %d: status %d: %s", seed, c.conns+1, resp.StatusCode, b)
					}
					n := 1 + rng.IntN(700)
					if c.streamID == "" {
						n += 400 // the first connection must see an event: it names the stream
					}
					done := c.read(&cutReader{r: resp.Body, n: n})
					resp.Body.Close() // closes the TCP connection mid-stream
					if done {
						break
					}
					if c.conns > 1000 {
						t.Fatalf("seed %d: no [DONE] after %d connections", seed, c.conns)
					}
					if c.conns%2 == 0 {
						resp = fx.open(t, http.MethodGet, "/v1/streams/"+c.streamID, "", "Last-Event-ID", c.lastID)
					} else {
						resp = fx.open(t, http.MethodPost, tc.path, tc.body, "Last-Event-ID", c.lastID)
					}
				}
				got := c.res
				for i, text := range want.texts {
					if got.texts[i] != text {
						t.Errorf("seed %d, %d connections: choice %d text\n%q\nwant\n%q", seed, c.conns, i, got.texts[i], text)
					}
					if fmt.Sprint(got.finishes[i]) != fmt.Sprint(want.finishes[i]) {
						t.Errorf("seed %d: choice %d finishes %v, want %v", seed, i, got.finishes[i], want.finishes[i])
					}
				}
				if len(got.errors) > 0 || (want.usage == nil) != (got.usage == nil) ||
					want.usage != nil && *want.usage.Usage != *got.usage.Usage {
					t.Errorf("seed %d: errors %v, usage %+v; want none, %+v", seed, got.errors, got.usage, want.usage)
				}
				t.Logf("seed %d: %d events over %d connections", seed, len(got.events), c.conns)
			}
		})
	}
	waitFor(t, "the engine to be idle", func() bool {
		s := fx.eng.Stats()
		return s.Running == 0 && s.Queued == 0 && fx.eng.Cache().BlocksInUse() == 0
	})
	if s := fx.eng.Stats(); s.FinishedCanceled != 0 || s.FinishedError != 0 {
		t.Errorf("engine stats %+v: a cut connection canceled or failed a generation", s)
	}
}

// checkError checks an OpenAI error response.
func checkError(t *testing.T, what string, resp *http.Response, body []byte, status int, code, msg string) {
	t.Helper()
	var e apiError
	if err := json.Unmarshal(body, &e); err != nil || e.Error == nil {
		t.Errorf("%s: status %d, body %s: not an OpenAI error object", what, resp.StatusCode, body)
		return
	}
	gotCode := ""
	if e.Error.Code != nil {
		gotCode = *e.Error.Code
	}
	if resp.StatusCode != status || gotCode != code || !strings.Contains(e.Error.Message, msg) {
		t.Errorf("%s: status %d, code %q, message %q; want %d, %q, containing %q", what, resp.StatusCode, gotCode, e.Error.Message, status, code, msg)
	}
}

// TestResumeErrors checks what resuming answers when it cannot: unknown
// streams, bad ids, the wrong endpoint, and a stream whose window passed,
// which is canceled and then gone.
func TestResumeErrors(t *testing.T) {
	// 10 ms steps: a 100-token generation lasts over a second, well past
	// the 300 ms window.
	fx := newFixture(t, fixtureOptions{parallel: 2, delay: 10 * time.Millisecond, resumeWindow: 300 * time.Millisecond, apiKey: "k"})
	auth := []string{"Authorization", "Bearer k"}
	unknown := "chatcmpl-0123456789abcdef01234567"
	for _, tc := range []struct {
		name, method, path string
		header             []string
		status             int
		code, msg          string
	}{
		{"unknown stream", "GET", "/v1/streams/" + unknown, nil, 404, "stream_not_found", "no stream"},
		{"unknown stream by POST", "POST", "/v1/chat/completions", []string{"Last-Event-ID", unknown + ":3"}, 404, "stream_not_found", unknown},
		{"malformed Last-Event-ID", "POST", "/v1/completions", []string{"Last-Event-ID", "17"}, 400, "", "not an event id"},
		{"cancel unknown", "POST", "/v1/streams/" + unknown + "/cancel", nil, 404, "stream_not_found", "no stream"},
		{"no key", "GET", "/v1/streams/" + unknown, []string{"Authorization", ""}, 401, "invalid_api_key", "no API key"},
		{"wrong method", "PUT", "/v1/streams/" + unknown, nil, 405, "method_not_allowed", "use GET"},
	} {
		resp, body := fx.do(t, tc.method, tc.path, `{}`, append(auth, tc.header...)...)
		checkError(t, tc.name, resp, body, tc.status, tc.code, tc.msg)
	}

	// A live stream: wrong ids for it, then its end, then its window.
	body := `{"messages":[{"role":"user","content":"Once"}],"max_tokens":20,"ignore_eos":true,"stream":true}`
	resp := fx.open(t, "POST", "/v1/chat/completions", body, auth...)
	r := newSSEReader(t, resp.Body)
	for range 3 {
		if _, err := r.next(); err != nil {
			t.Fatal(err)
		}
	}
	resp.Body.Close() // the client goes away
	id := r.lastID[:strings.LastIndexByte(r.lastID, ':')]
	for _, tc := range []struct {
		name, method, path string
		header             []string
		status             int
		code, msg          string
	}{
		{"another stream's id", "GET", "/v1/streams/" + id, []string{"Last-Event-ID", unknown + ":1"}, 400, "", "another stream"},
		{"an event not sent yet", "GET", "/v1/streams/" + id, []string{"Last-Event-ID", id + ":100000"}, 400, "", "not one of them"},
		{"bad after", "GET", "/v1/streams/" + id + "?after=x", nil, 400, "", "after"},
		{"wrong endpoint", "POST", "/v1/completions", []string{"Last-Event-ID", r.lastID}, 400, "", "/v1/chat/completions"},
	} {
		resp, b := fx.do(t, tc.method, tc.path, `{}`, append(auth, tc.header...)...)
		checkError(t, tc.name, resp, b, tc.status, tc.code, tc.msg)
	}
	// Resumed within the window, from the start (after=0), it ends well;
	// resuming after its last event then is 204: nothing more will come.
	resp = fx.open(t, "GET", "/v1/streams/"+id+"?after=0", "", auth...)
	whole := collect(t, resp.Body)
	resp.Body.Close()
	if !whole.done || len(whole.finishes[0]) != 1 || whole.finishes[0][0] != "length" || len(whole.errors) > 0 {
		t.Fatalf("resumed from the start: %d events, done %v, finishes %v", len(whole.events), whole.done, whole.finishes)
	}
	resp = fx.open(t, "GET", "/v1/streams/"+id, "", auth...)
	rr := newSSEReader(t, resp.Body)
	rr.all()
	resp.Body.Close()
	last := rr.lastID
	if resp, b := fx.do(t, "GET", "/v1/streams/"+id, "", append(auth, "Last-Event-ID", last)...); resp.StatusCode != http.StatusNoContent || len(b) != 0 {
		t.Errorf("resuming after the last event: %d %q, want 204 and no body", resp.StatusCode, b)
	}

	// A stream left alone for its window is canceled, frees its blocks,
	// and is gone.
	canceled := fx.eng.Stats().FinishedCanceled
	resp = fx.open(t, "POST", "/v1/completions", `{"prompt":"Once","max_tokens":100,"ignore_eos":true,"stream":true}`, auth...)
	r = newSSEReader(t, resp.Body)
	if _, err := r.next(); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	left := time.Now()
	waitFor(t, "the abandoned stream to be canceled", func() bool {
		s := fx.eng.Stats()
		return s.FinishedCanceled == canceled+1 && s.Running == 0 && fx.eng.Cache().BlocksInUse() == 0
	})
	if d := time.Since(left); d < 250*time.Millisecond {
		t.Errorf("canceled %v after the client left; the window is 300ms", d)
	}
	waitFor(t, "the registry to empty", func() bool { return fx.srv.streams.len() == 0 })
	id = r.lastID[:strings.LastIndexByte(r.lastID, ':')]
	resp2, b := fx.do(t, "GET", "/v1/streams/"+id, "", append(auth, "Last-Event-ID", r.lastID)...)
	checkError(t, "expired stream", resp2, b, 404, "stream_not_found", "300ms")
}

// TestCancelStream checks POST /v1/streams/{id}/cancel: the generation
// stops at once, and the client still reading gets the error event and
// [DONE]; cancelling again says it was over.
func TestCancelStream(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 2, delay: 2 * time.Millisecond})
	canceled := fx.eng.Stats().FinishedCanceled
	resp := fx.open(t, "POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":100,"ignore_eos":true,"stream":true}`)
	defer resp.Body.Close()
	r := newSSEReader(t, resp.Body)
	for range 3 {
		if _, err := r.next(); err != nil {
			t.Fatal(err)
		}
	}
	id := r.lastID[:strings.LastIndexByte(r.lastID, ':')]
	cresp, b := fx.post(t, "/v1/streams/"+id+"/cancel", "")
	if cresp.StatusCode != 200 || !strings.Contains(string(b), `"canceled":true`) {
		t.Errorf("cancel: %d %s", cresp.StatusCode, b)
	}
	res := collect(t, resp.Body)
	if !res.done || len(res.errors) != 1 || res.errors[0].Error.Code == nil || *res.errors[0].Error.Code != "canceled" {
		t.Errorf("after cancel the stream ends with %v; want an error event with code canceled, then [DONE]", res.events[max(0, len(res.events)-3):])
	}
	waitFor(t, "the engine to count the cancel", func() bool {
		s := fx.eng.Stats()
		return s.FinishedCanceled == canceled+1 && s.Running == 0 && fx.eng.Cache().BlocksInUse() == 0
	})
	if cresp, b := fx.post(t, "/v1/streams/"+id+"/cancel", ""); cresp.StatusCode != 200 || !strings.Contains(string(b), `"canceled":false`) {
		t.Errorf("cancel again: %d %s", cresp.StatusCode, b)
	}
}

// TestCancelOnDisconnect checks the opt-outs of resuming: with
// stream_options.cancel_on_disconnect, or a server whose window is off, a
// client that goes away cancels its stream at once, and the stream cannot
// be resumed.
func TestCancelOnDisconnect(t *testing.T) {
	for _, tc := range []struct {
		name   string
		window time.Duration
		opts   string
	}{
		{"cancel_on_disconnect", 0, `,"stream_options":{"cancel_on_disconnect":true}`},
		{"window off", -1, ``},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fx := newFixture(t, fixtureOptions{parallel: 2, delay: 5 * time.Millisecond, resumeWindow: tc.window})
			ctx, cancel := context.WithCancel(context.Background())
			resp := fx.stream(ctx, t, "/v1/completions", `{"prompt":"Once","max_tokens":100,"ignore_eos":true,"stream":true`+tc.opts+`}`)
			r := newSSEReader(t, resp.Body)
			if _, err := r.next(); err != nil {
				t.Fatal(err)
			}
			cancel()
			resp.Body.Close()
			waitFor(t, "the stream to be canceled", func() bool {
				s := fx.eng.Stats()
				return s.FinishedCanceled == 1 && s.Running == 0 && fx.eng.Cache().BlocksInUse() == 0
			})
			if n := fx.srv.streams.len(); n != 0 {
				t.Errorf("%d streams registered", n)
			}
			resp2, b := fx.do(t, "GET", "/v1/streams/"+r.lastID[:strings.LastIndexByte(r.lastID, ':')], "", "Last-Event-ID", r.lastID)
			checkError(t, "resuming", resp2, b, 404, "stream_not_found", "no stream")
		})
	}
}

// TestResumeMemory checks the budget of finished streams kept for their
// window: beyond it the oldest are dropped (and cannot be resumed), while
// running ones stay.
func TestResumeMemory(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 2, resumeMemory: 20 << 10})
	ids := make([]string, 4)
	for i := range ids {
		resp := fx.open(t, "POST", "/v1/completions", `{"prompt":"Once","max_tokens":60,"ignore_eos":true,"logprobs":5,"stream":true}`)
		r := newSSEReader(t, resp.Body)
		r.all()
		resp.Body.Close()
		ids[i] = r.lastID[:strings.LastIndexByte(r.lastID, ':')]
	}
	// Each log holds 60 tokens with 5 alternatives: over 10 KiB, so the
	// 20 KiB budget keeps one (the newest), maybe two.
	waitFor(t, "the last stream to be accounted", func() bool {
		fx.srv.streams.mu.Lock()
		defer fx.srv.streams.mu.Unlock()
		return fx.srv.streams.finished.Len() > 0 && len(fx.srv.streams.byID) <= 2
	})
	if resp, b := fx.do(t, "GET", "/v1/streams/"+ids[0], ""); resp.StatusCode != 404 {
		t.Errorf("the oldest finished stream, beyond the budget: %d %.100s; want 404", resp.StatusCode, b)
	}
	resp := fx.open(t, "GET", "/v1/streams/"+ids[3], "")
	res := collect(t, resp.Body)
	resp.Body.Close()
	if !res.done || len(res.finishes[0]) != 1 {
		t.Errorf("the newest finished stream: %v", res.events)
	}
	fx.srv.streams.mu.Lock()
	b := fx.srv.streams.finishedBytes
	fx.srv.streams.mu.Unlock()
	if b > 20<<10 {
		t.Errorf("finished streams hold %d bytes, over the 20 KiB budget", b)
	}
}
