package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// wsMsg is the union of the messages the server sends on a socket.
type wsMsg struct {
	Type          string          `json:"type"`
	ID            string          `json:"id"`
	Seq           uint64          `json:"seq"`
	Index         int             `json:"index"`
	Text          string          `json:"text"`
	Stream        string          `json:"stream"`
	Model         string          `json:"model"`
	Logprobs      json.RawMessage `json:"logprobs"`
	FinishReason  string          `json:"finish_reason"`
	FinishReasons []string        `json:"finish_reasons"`
	Usage         *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	} `json:"usage"`
	Status int `json:"status"`
	Error  *struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

func (m wsMsg) code() string {
	if m.Error == nil || m.Error.Code == nil {
		return ""
	}
	return *m.Error.Code
}

// wsURL is the fixture's WebSocket endpoint.
func (fx *fixture) wsURL() string { return "ws" + strings.TrimPrefix(fx.url, "http") + "/v1/ws" }

// dial opens a socket to the fixture.
func dial(t testing.TB, fx *fixture, opts *websocket.DialOptions) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, fx.wsURL(), opts)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dialing %s: %v (status %d)", fx.wsURL(), err, status)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

func wsSend(t testing.TB, c *websocket.Conn, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		t.Fatalf("sending %s: %v", msg, err)
	}
}

func wsRecv(t testing.TB, c *websocket.Conn) wsMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	typ, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("reading: %v", err)
	}
	if typ != websocket.MessageText {
		t.Fatalf("a %v message", typ)
	}
	var m wsMsg
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("message %s: %v", b, err)
	}
	return m
}

// wsGen is what a socket delivered of one generation.
type wsGen struct {
	start  wsMsg
	texts  map[int]string
	deltas int
	end    wsMsg // the done or error message
	seq    uint64
}

// wsCollect reads messages until every id in ids has ended with done or
// error, checking that each generation's messages come in order: start
// (unless it was read before), deltas with growing seqs, one end. each, if
// not nil, sees every message.
func wsCollect(t testing.TB, c *websocket.Conn, each func(wsMsg), ids ...string) map[string]*wsGen {
	t.Helper()
	gens := map[string]*wsGen{}
	for _, id := range ids {
		gens[id] = &wsGen{texts: map[int]string{}}
	}
	for left := len(ids); left > 0; {
		m := wsRecv(t, c)
		if each != nil {
			each(m)
		}
		g := gens[m.ID]
		if g == nil {
			t.Fatalf("a message for an unknown id: %+v", m)
		}
		if g.end.Type != "" {
			t.Fatalf("generation %s: %+v after its end %+v", m.ID, m, g.end)
		}
		switch m.Type {
		case "start":
			if g.start.Type != "" || g.seq > 0 || !strings.HasPrefix(m.Stream, "c") {
				t.Fatalf("generation %s: start %+v (first: %+v)", m.ID, m, g.start)
			}
			g.start = m
			continue
		case "delta", "done", "error":
			if m.Seq <= g.seq && m.Seq > 0 {
				t.Fatalf("generation %s: seq %d after %d", m.ID, m.Seq, g.seq)
			}
			g.seq = max(g.seq, m.Seq)
		default:
			t.Fatalf("unexpected message %+v", m)
		}
		if m.Type == "delta" {
			g.texts[m.Index] += m.Text
			g.deltas++
			continue
		}
		g.end = m
		left--
	}
	return gens
}

// TestWSGenerations runs several generations at once on one socket, chat
// and completions, one with two choices and one with logprobs: each gets
// the same text, finish reasons and usage as the same request over SSE.
func TestWSGenerations(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 4})
	reg := fx.srv.cfg.Registry
	ttft := metricValue(t, reg, "spigot_server_time_to_first_token_seconds")
	reqs := map[string]struct{ typ, path, body string }{
		"a": {"chat", "/v1/chat/completions", `{"messages":[{"role":"user","content":"Once upon a time"}],"temperature":0,"max_tokens":40,"stream_options":{"include_usage":true}}`},
		"b": {"completion", "/v1/completions", `{"prompt":"Lily and Tom","temperature":0,"max_tokens":30,"logprobs":2,"stream_options":{"include_usage":true}}`},
		"c": {"chat", "/v1/chat/completions", `{"messages":[{"role":"user","content":"Hello"}],"temperature":0,"max_tokens":20,"n":2,"stop":["zzz"],"stream_options":{"include_usage":true}}`},
	}
	c := dial(t, fx, nil)
	wsSend(t, c, `{"type":"ping"}`)
	if m := wsRecv(t, c); m.Type != "pong" {
		t.Fatalf("ping: %+v", m)
	}
	for id, r := range reqs {
		wsSend(t, c, fmt.Sprintf(`{"type":%q,"id":%q,"request":%s}`, r.typ, id, r.body))
	}
	gens := wsCollect(t, c, nil, "a", "b", "c")
	streams := map[string]bool{}
	for id, r := range reqs {
		g := gens[id]
		resp := fx.open(t, http.MethodPost, r.path, strings.Replace(r.body, "{", `{"stream":true,`, 1))
		want := collect(t, resp.Body)
		resp.Body.Close()
		if g.end.Type != "done" || g.end.Usage == nil || want.usage == nil {
			t.Fatalf("generation %s ended with %+v", id, g.end)
		}
		for i, text := range want.texts {
			if g.texts[i] != text {
				t.Errorf("generation %s choice %d: %q, want %q (SSE)", id, i, g.texts[i], text)
			}
			if len(g.end.FinishReasons) <= i || g.end.FinishReasons[i] != want.finishes[i][0] {
				t.Errorf("generation %s: finish_reasons %v, want %v for choice %d", id, g.end.FinishReasons, want.finishes[i], i)
			}
		}
		if g.end.FinishReason != want.finishes[0][0] || *g.end.Usage != *want.usage.Usage {
			t.Errorf("generation %s: done %+v usage %+v; want %s, %+v", id, g.end, g.end.Usage, want.finishes[0][0], want.usage.Usage)
		}
		if g.start.Type != "start" || streams[g.start.Stream] || g.start.Model != "stories260K" {
			t.Errorf("generation %s: start %+v", id, g.start)
		}
		streams[g.start.Stream] = true
	}
	if d := metricValue(t, reg, "spigot_server_time_to_first_token_seconds") - ttft; d < 6 {
		t.Errorf("TTFT observed %v times for 3 generations over WebSocket and 3 over SSE", d)
	}
	c.Close(websocket.StatusNormalClosure, "")
	waitFor(t, "the socket to be counted", func() bool {
		return metricValue(t, reg, "spigot_http_requests_total", "route", "/v1/ws", "code", "101") == 1
	})
}

// TestWSCancel cancels one of two generations on a socket mid-stream: it
// ends with an error message (code canceled) and stops in the engine at
// once; the other goes on to its end.
func TestWSCancel(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 4, delay: 5 * time.Millisecond})
	c := dial(t, fx, nil)
	long := `{"messages":[{"role":"user","content":"Once"}],"max_tokens":60,"ignore_eos":true}`
	wsSend(t, c, `{"type":"chat","id":"keep","request":`+long+`}`)
	wsSend(t, c, `{"type":"chat","id":"stop","request":`+long+`}`)
	var canceledAt, endAt time.Time
	deltas := 0
	gens := wsCollect(t, c, func(m wsMsg) {
		switch {
		case m.ID == "stop" && m.Type == "delta":
			if deltas++; deltas == 3 {
				wsSend(t, c, `{"type":"cancel","id":"stop"}`)
				canceledAt = time.Now()
			}
		case m.ID == "stop" && m.Type == "error":
			endAt = time.Now()
		}
	}, "keep", "stop")
	if e := gens["stop"].end; e.Type != "error" || e.code() != "canceled" || e.Seq == 0 {
		t.Errorf("canceled generation ended with %+v; want an error with code canceled", e)
	}
	if e := gens["keep"].end; e.Type != "done" || e.FinishReason != "length" || e.Usage.CompletionTokens != 60 {
		t.Errorf("the other generation ended with %+v; want done, length, 60 tokens", e)
	}
	// The engine counts a sequence as running until the end of the step in
	// which its last event was sent.
	waitFor(t, "the engine to finish its step", func() bool { return fx.eng.Stats().Running == 0 })
	s := fx.eng.Stats()
	if s.FinishedCanceled != 1 || s.FinishedLength != 1 || s.Running != 0 || fx.eng.Cache().BlocksInUse() != 0 {
		t.Errorf("engine after: %+v, %d blocks in use; want one canceled, one length, none running", s, fx.eng.Cache().BlocksInUse())
	}
	if n := gens["stop"].deltas; n > 3+3 { // a step or two in flight when the cancel came
		t.Errorf("%d deltas of the canceled generation; want it to stop right after the third", n)
	}
	t.Logf("cancel: the canceled generation had %d deltas; its end came %v after the cancel was sent", gens["stop"].deltas, endAt.Sub(canceledAt))
	// A cancel for an id that has ended is an error; the socket works on.
	wsSend(t, c, `{"type":"cancel","id":"stop"}`)
	if m := wsRecv(t, c); m.Type != "error" || m.ID != "stop" || m.code() != "generation_not_found" || m.Status != 404 {
		t.Errorf("cancel of an ended generation: %+v", m)
	}
}

// TestWSBadMessages sends malformed and refused messages: each gets a clear
// error message and the socket stays usable.
func TestWSBadMessages(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 2, delay: 5 * time.Millisecond})
	c := dial(t, fx, nil)
	wsSend(t, c, `{"type":"chat","id":"busy","request":{"messages":[{"role":"user","content":"hi"}],"max_tokens":50,"ignore_eos":true}}`)
	if m := wsRecv(t, c); m.Type != "start" {
		t.Fatalf("start: %+v", m)
	}
	cases := []struct {
		msg, id string
		status  int
		param   string
		text    string
	}{
		{`not json`, "", 400, "", "not a JSON object"},
		{`{"type":"chat","id":7}`, "", 400, "", "not a JSON object"},
		{`{"type":"explode","id":"x"}`, "x", 400, "type", "explode"},
		{`{"type":"chat","request":{}}`, "", 400, "id", "needs an id"},
		{`{"type":"chat","id":"` + strings.Repeat("x", 300) + `","request":{}}`, "", 400, "id", "needs an id"},
		{`{"type":"chat","id":"e","request":{"messages":"hi"}}`, "e", 400, "messages", "must be an array"},
		{`{"type":"completion","id":"t","request":{"prompt":"x","temperature":9}}`, "t", 400, "temperature", "between 0 and 2"},
		{`{"type":"completion","id":"m","request":{"prompt":"x","model":"gpt-9"}}`, "m", 404, "model", "gpt-9"},
		{`{"type":"chat","id":"busy","request":{"messages":[{"role":"user","content":"hi"}]}}`, "busy", 400, "id", "already running"},
		{`{"type":"cancel","id":"nobody"}`, "nobody", 404, "", "no generation"},
		{`{"type":"resume","id":"r","stream":"chatcmpl-0123456789abcdef01234567","after":3}`, "r", 404, "", "no stream"},
	}
	for _, tc := range cases {
		wsSend(t, c, tc.msg)
		m := wsRecv(t, c)
		for m.ID == "busy" && m.Type == "delta" {
			m = wsRecv(t, c)
		}
		param := ""
		if m.Error != nil && m.Error.Param != nil {
			param = *m.Error.Param
		}
		if m.Type != "error" || m.ID != tc.id || m.Status != tc.status || param != tc.param || m.Seq != 0 ||
			m.Error == nil || !strings.Contains(m.Error.Message, tc.text) {
			t.Errorf("%.60s: got %+v (error %+v); want an error for id %q, status %d, param %q, saying %q", tc.msg, m, m.Error, tc.id, tc.status, tc.param, tc.text)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageBinary, []byte{1, 2}); err != nil {
		t.Fatal(err)
	}
	m := wsRecv(t, c)
	for m.ID == "busy" {
		m = wsRecv(t, c)
	}
	if m.Type != "error" || !strings.Contains(m.Error.Message, "binary") {
		t.Errorf("binary message: %+v", m)
	}
	// The socket still works: the busy generation ends, and a new one runs.
	wsSend(t, c, `{"type":"completion","id":"ok","request":{"prompt":"Once","max_tokens":5,"ignore_eos":true}}`)
	gens := wsCollect(t, c, nil, "busy", "ok")
	if gens["ok"].end.Type != "done" || gens["busy"].end.Type != "done" {
		t.Errorf("after the errors: %+v, %+v; want both done", gens["ok"].end, gens["busy"].end)
	}
}

// TestWSClose checks what a closed socket does to its generations: a close
// frame cancels them at once; a socket that drops without one leaves them
// running for the resume window, then they are canceled. Either way no
// sequence, cache block or goroutine is left.
func TestWSClose(t *testing.T) {
	// 8 ms steps: the generations outlast the 400 ms window by far.
	fx := newFixture(t, fixtureOptions{parallel: 4, delay: 8 * time.Millisecond, resumeWindow: 400 * time.Millisecond})
	// Warm up: the first request starts the model's and the server's
	// long-lived goroutines.
	fx.post(t, "/v1/completions", `{"prompt":"x","max_tokens":2}`)
	fx.ts.Client().CloseIdleConnections()
	baseline := runtime.NumGoroutine()
	long := `{"messages":[{"role":"user","content":"Once"}],"max_tokens":100,"ignore_eos":true}`
	idle := func() bool {
		s := fx.eng.Stats()
		return s.Running == 0 && s.Queued == 0 && fx.eng.Cache().BlocksInUse() == 0
	}
	for _, tc := range []struct {
		name  string
		close func(c *websocket.Conn)
		// want the generations to run on past the close
		lingers bool
	}{
		{"close frame", func(c *websocket.Conn) { c.Close(websocket.StatusNormalClosure, "bye") }, false},
		{"dropped", func(c *websocket.Conn) { c.CloseNow() }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := fx.eng.Stats().FinishedCanceled
			c := dial(t, fx, nil)
			for i := range 3 {
				wsSend(t, c, fmt.Sprintf(`{"type":"chat","id":"g%d","request":%s}`, i, long))
			}
			for seen := map[string]bool{}; len(seen) < 3; {
				if m := wsRecv(t, c); m.Type == "delta" {
					seen[m.ID] = true
				}
			}
			closed := time.Now()
			tc.close(c)
			if tc.lingers {
				time.Sleep(200 * time.Millisecond)
				if s := fx.eng.Stats(); s.Running != 3 {
					t.Errorf("200ms after the socket dropped: %+v; want its 3 generations still running, to be resumed", s)
				}
			}
			waitFor(t, "the generations to be canceled", func() bool { return fx.eng.Stats().FinishedCanceled == before+3 && idle() })
			t.Logf("%s: canceled and freed %v after the close", tc.name, time.Since(closed).Round(time.Millisecond))
			if d := time.Since(closed); tc.lingers && d < 350*time.Millisecond {
				t.Errorf("dropped socket: canceled after %v, before the 400ms window", d)
			}
			waitFor(t, "the registry to empty", func() bool { return fx.srv.streams.len() == 0 || !tc.lingers })
		})
	}
	waitFor(t, fmt.Sprintf("goroutines to return to %d", baseline), func() bool { return runtime.NumGoroutine() <= baseline })
}

// TestWSResume drops a socket mid-generation and resumes the stream on a
// new one from the last seq received: the text put together is the whole
// generation's, nothing repeated. A stream started on a socket can also be
// resumed over SSE.
func TestWSResume(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 2, delay: 3 * time.Millisecond})
	body := `{"prompt":"Once upon a time","temperature":0,"max_tokens":60,"ignore_eos":true,"stream":true}`
	resp := fx.open(t, http.MethodPost, "/v1/completions", body)
	want := collect(t, resp.Body)
	resp.Body.Close()

	c := dial(t, fx, nil)
	wsSend(t, c, `{"type":"completion","id":"a","request":`+body+`}`)
	start := wsRecv(t, c)
	text, seq := "", uint64(0)
	for range 10 {
		m := wsRecv(t, c)
		if m.Type != "delta" {
			t.Fatalf("before the drop: %+v", m)
		}
		text, seq = text+m.Text, m.Seq
	}
	c.CloseNow()

	c2 := dial(t, fx, nil)
	wsSend(t, c2, fmt.Sprintf(`{"type":"resume","id":"b","stream":%q,"after":%d}`, start.Stream, seq))
	g := wsCollect(t, c2, nil, "b")["b"]
	if g.start.Stream != start.Stream || g.end.Type != "done" || text+g.texts[0] != want.texts[0] {
		t.Errorf("resumed: start %+v, end %+v, text %q + %q; want %q", g.start, g.end, text, g.texts[0], want.texts[0])
	}
	// Resuming after its end is an error, not a wait for nothing.
	wsSend(t, c2, fmt.Sprintf(`{"type":"resume","id":"late","stream":%q,"after":%d}`, start.Stream, g.end.Seq))
	if m := wsRecv(t, c2); m.Type != "error" || m.ID != "late" || m.code() != "stream_ended" || m.Status != http.StatusGone {
		t.Errorf("resume after done: %+v", m)
	}
	// The same stream over SSE, from the start.
	resp = fx.open(t, http.MethodGet, "/v1/streams/"+start.Stream, "")
	sse := collect(t, resp.Body)
	resp.Body.Close()
	if sse.texts[0] != want.texts[0] || !sse.done {
		t.Errorf("the socket's stream over SSE: %q, want %q", sse.texts[0], want.texts[0])
	}
}

// TestWSAuth checks the API key on the socket: refused without it, taken
// from the Authorization header or, as browsers must send it, from a
// subprotocol.
func TestWSAuth(t *testing.T) {
	fx := newFixture(t, fixtureOptions{apiKey: "sk-ws"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for name, opts := range map[string]*websocket.DialOptions{
		"no key":    nil,
		"wrong key": {Subprotocols: []string{"spigot.v1", "spigot-key.nope"}},
	} {
		_, resp, err := websocket.Dial(ctx, fx.wsURL(), opts)
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: %v, %v; want 401", name, err, resp)
		}
	}
	for name, opts := range map[string]*websocket.DialOptions{
		"header":      {HTTPHeader: http.Header{"Authorization": {"Bearer sk-ws"}}},
		"subprotocol": {Subprotocols: []string{"spigot.v1", "spigot-key.sk-ws"}},
	} {
		c := dial(t, fx, opts)
		wsSend(t, c, `{"type":"completion","id":"x","request":{"prompt":"Once","max_tokens":3}}`)
		if g := wsCollect(t, c, nil, "x")["x"]; g.end.Type != "done" {
			t.Errorf("%s: %+v", name, g.end)
		}
		if name == "subprotocol" && c.Subprotocol() != "spigot.v1" {
			t.Errorf("subprotocol %q, want spigot.v1 (never the key)", c.Subprotocol())
		}
		c.Close(websocket.StatusNormalClosure, "")
	}
	// Plain GET: a clear error, not a protocol violation in plain text.
	resp, b := fx.do(t, http.MethodGet, "/v1/ws", "", "Authorization", "Bearer sk-ws")
	checkError(t, "GET without upgrade", resp, b, http.StatusUpgradeRequired, "websocket_required", "WebSocket")
}

// TestWSShutdown checks that shutting down ends a socket's generations
// with an error message, then closes the socket (going away), and that
// Shutdown waits for that.
func TestWSShutdown(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 2, delay: 10 * time.Millisecond})
	c := dial(t, fx, nil)
	wsSend(t, c, `{"type":"completion","id":"a","request":{"prompt":"Once","max_tokens":100,"ignore_eos":true}}`)
	for m := wsRecv(t, c); m.Type != "delta"; m = wsRecv(t, c) {
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	shut := make(chan time.Duration, 1)
	go func() {
		fx.srv.Shutdown(ctx)
		shut <- time.Since(start)
	}()
	var end wsMsg
	for end = wsRecv(t, c); end.Type == "delta"; end = wsRecv(t, c) {
	}
	if end.Type != "error" || end.code() != "shutting_down" {
		t.Errorf("the generation ended with %+v; want an error with code shutting_down", end)
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer rcancel()
	if _, _, err := c.Read(rctx); websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("after shutdown the socket reads %v; want a going-away close", err)
	}
	if d := <-shut; d > 2*time.Second {
		t.Errorf("Shutdown took %v", d)
	}
}
