package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/spigot-llm/spigot/api/wsapi"
)

// wsMsg is the union of the messages the gateway sends on a socket.
type wsMsg struct {
	Type          string   `json:"type"`
	ID            string   `json:"id"`
	Seq           uint64   `json:"seq"`
	Index         int      `json:"index"`
	Text          string   `json:"text"`
	Stream        string   `json:"stream"`
	Model         string   `json:"model"`
	FinishReason  string   `json:"finish_reason"`
	FinishReasons []string `json:"finish_reasons"`
	Usage         *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	} `json:"usage"`
	Status int `json:"status"`
	Error  *struct {
		Message string `json:"message"`
		Code    string `json:"code"`
	} `json:"error"`
}

func (m wsMsg) code() string {
	if m.Error == nil {
		return ""
	}
	return m.Error.Code
}

func wsDial(t testing.TB, url string, opts *websocket.DialOptions) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u := "ws" + strings.TrimPrefix(url, "http") + "/v1/ws"
	c, resp, err := websocket.Dial(ctx, u, opts)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dialing %s: %v (status %d)", u, err, status)
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
	_, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("reading: %v", err)
	}
	var m wsMsg
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("message %s: %v", b, err)
	}
	return m
}

// wsRun is what a socket delivered of one generation.
type wsRun struct {
	start wsMsg
	text  string
	end   wsMsg // done or error
	seq   uint64
}

// wsCollect reads messages until every id has ended, checking each
// generation's order: start (unless read before), deltas with growing
// seqs, one end.
func wsCollect(t testing.TB, c *websocket.Conn, ids ...string) map[string]*wsRun {
	t.Helper()
	runs := map[string]*wsRun{}
	for _, id := range ids {
		runs[id] = &wsRun{}
	}
	for left := len(ids); left > 0; {
		m := wsRecv(t, c)
		r := runs[m.ID]
		if r == nil || r.end.Type != "" {
			t.Fatalf("unexpected message %+v", m)
		}
		switch m.Type {
		case "start":
			if r.start.Type != "" || r.seq > 0 {
				t.Fatalf("generation %s: a second start %+v", m.ID, m)
			}
			r.start = m
			continue
		case "delta", "done", "error":
			if m.Seq > 0 && m.Seq <= r.seq {
				t.Fatalf("generation %s: seq %d after %d", m.ID, m.Seq, r.seq)
			}
			r.seq = max(r.seq, m.Seq)
		default:
			t.Fatalf("unexpected message %+v", m)
		}
		if m.Type == "delta" {
			r.text += m.Text
			continue
		}
		r.end = m
		left--
	}
	return runs
}

// TestWSThroughGateway: the gateway's WebSocket front runs several
// generations on one socket with the same text and usage as SSE; a
// stream started on a socket of one instance that drops is resumed on a
// socket of the other, and then over SSE; cancel ends a generation with
// an error (code canceled).
func TestWSThroughGateway(t *testing.T) {
	rs := []*replica{newReplica(t, 4), newReplica(t, 4)}
	for _, r := range rs {
		r.model.delay.Store(int64(2 * time.Millisecond))
	}
	peers := newPeers(t, 2, replicaConfig(rs...))
	chat := `{"model":"stories260K","messages":[{"role":"user","content":"Once upon a time"}],"temperature":0,"max_tokens":60,"ignore_eos":true}`
	completion := `{"model":"stories260K","prompt":"Once upon a time","temperature":0,"max_tokens":70,"ignore_eos":true}`
	sse := func(path, body string) *sseResumer {
		c := &sseResumer{t: t}
		b := strings.TrimSuffix(body, "}") + `,"stream":true,"stream_options":{"include_usage":true}}`
		resp := open(t, http.MethodPost, peers[1].ts.URL+path, b)
		c.read(resp.Body)
		resp.Body.Close()
		return c
	}
	wantChat, wantCompletion := sse("/v1/chat/completions", chat), sse("/v1/completions", completion)

	c := wsDial(t, peers[0].ts.URL, nil)
	wsSend(t, c, `{"type":"ping"}`)
	if m := wsRecv(t, c); m.Type != "pong" {
		t.Fatalf("ping: %+v", m)
	}
	wsSend(t, c, `{"type":"chat","id":"a","request":`+chat+`}`)
	wsSend(t, c, `{"type":"completion","id":"b","request":`+completion+`}`)
	runs := wsCollect(t, c, "a", "b")
	for id, want := range map[string]*sseResumer{"a": wantChat, "b": wantCompletion} {
		r := runs[id]
		if r.text != want.text.String() || r.end.Type != "done" || r.end.FinishReason != want.finishes[0] ||
			r.end.Usage == nil || fmt.Sprint(map[string]int{"prompt_tokens": r.end.Usage.PromptTokens,
			"completion_tokens": r.end.Usage.CompletionTokens, "total_tokens": r.end.Usage.TotalTokens}) != fmt.Sprint(want.usage[0]) ||
			r.start.Model != "stories260K" || !strings.HasPrefix(r.start.Stream, "gs-") {
			t.Errorf("generation %s: start %+v, text %q, end %+v; want text %q, finish %q, usage %v", id, r.start, r.text, r.end,
				want.text.String(), want.finishes, want.usage)
		}
	}

	// Drop a socket mid-stream; resume on the other instance's socket.
	wsSend(t, c, `{"type":"completion","id":"c","request":`+completion+`}`)
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
	c2 := wsDial(t, peers[1].ts.URL, nil)
	wsSend(t, c2, fmt.Sprintf(`{"type":"resume","id":"d","stream":%q,"after":%d}`, start.Stream, seq))
	r := wsCollect(t, c2, "d")["d"]
	if r.start.Stream != start.Stream || r.end.Type != "done" || text+r.text != wantCompletion.text.String() || r.end.Usage == nil {
		t.Errorf("resumed on the other instance: start %+v, end %+v, text %q + %q; want %q", r.start, r.end, text, r.text, wantCompletion.text.String())
	}
	// The socket's stream over SSE from the start, on the owner.
	again := &sseResumer{t: t}
	resp := open(t, http.MethodGet, peers[0].ts.URL+"/v1/streams/"+start.Stream, "")
	again.read(resp.Body)
	resp.Body.Close()
	if again.text.String() != wantCompletion.text.String() || again.dones != 1 {
		t.Errorf("the socket's stream over SSE: %q, want %q", again.text.String(), wantCompletion.text.String())
	}

	// Cancel: of a generation started on the socket, and of one resumed
	// from the other instance (the cancel goes to the owner).
	for _, r := range rs {
		r.model.delay.Store(int64(20 * time.Millisecond))
	}
	long := `{"type":"completion","id":"%s","request":` + strings.Replace(completion, `"max_tokens":70`, `"max_tokens":2000`, 1) + `}`
	wsSend(t, c2, fmt.Sprintf(long, "e"))
	if m := wsRecv(t, c2); m.Type != "start" {
		t.Fatalf("e: %+v", m)
	}
	wsSend(t, c2, `{"type":"cancel","id":"e"}`)
	if e := wsCollect(t, c2, "e")["e"]; e.end.Type != "error" || e.end.code() != "canceled" {
		t.Errorf("canceled generation ended with %+v", e.end)
	}
	c3 := wsDial(t, peers[0].ts.URL, nil)
	wsSend(t, c3, fmt.Sprintf(long, "f"))
	f := wsRecv(t, c3)
	if m := wsRecv(t, c3); f.Type != "start" || m.Type != "delta" {
		t.Fatalf("f: %+v, %+v", f, m)
	}
	c3.CloseNow()
	wsSend(t, c2, fmt.Sprintf(`{"type":"resume","id":"g","stream":%q,"after":0}`, f.Stream))
	if m := wsRecv(t, c2); m.Type != "start" || m.Stream != f.Stream {
		t.Fatalf("g: %+v", m)
	}
	wsSend(t, c2, `{"type":"cancel","id":"g"}`)
	if g := wsCollect(t, c2, "g")["g"]; g.end.Type != "error" || g.end.code() != "canceled" {
		t.Errorf("canceled resumed generation ended with %+v", g.end)
	}
	waitFor(t, "the replicas to count 2 canceled generations", 5*time.Second, func() bool {
		n := uint64(0)
		for _, r := range rs {
			n += r.eng.Stats().FinishedCanceled
		}
		return n == 2
	})
	for _, tc := range []struct{ msg, id, code string }{
		{`{"type":"dance","id":"x"}`, "x", ""},
		{`{"type":"chat","request":{}}`, "", ""},
		{`{"type":"chat","id":"y","request":{"model":"nope","messages":[{"role":"user","content":"hi"}]}}`, "y", "model_not_found"},
		{`{"type":"completion","id":"z","request":"not an object"}`, "z", ""},
		{`{"type":"cancel","id":"nothing"}`, "nothing", "generation_not_found"},
		{`{"type":"resume","id":"r","stream":"gs-0000","after":1}`, "r", "stream_not_found"},
		{fmt.Sprintf(`{"type":"resume","id":"late","stream":%q,"after":%d}`, start.Stream, r.end.Seq), "late", "stream_ended"},
		{`not json`, "", ""},
	} {
		wsSend(t, c2, tc.msg)
		m := wsRecv(t, c2)
		if m.Type != "error" || m.ID != tc.id || m.Status < 400 || m.Error == nil || m.Error.Message == "" || (tc.code != "" && m.code() != tc.code) {
			t.Errorf("%s: got %+v, want an error for id %q (code %q)", tc.msg, m, tc.id, tc.code)
		}
	}
	c2.Close(websocket.StatusNormalClosure, "")
	for i, r := range rs {
		waitFor(t, "the replicas to be idle", 10*time.Second, func() bool {
			s := r.eng.Stats()
			return s.Running == 0 && s.Queued == 0 && r.eng.Cache().BlocksInUse() == 0
		})
		_ = i
	}
}

// TestWSGatewayAuth: with keys configured, a socket needs one, from the
// Authorization header or (as a browser must send it) a subprotocol.
func TestWSGatewayAuth(t *testing.T) {
	a := newFake(t, okStream)
	gwy := newGW(t, fakeConfig(t, KindSpigot, fmt.Sprintf("auth: {keys: [{name: alice, sha256: %s}]}\n", keyHash("sk-alice")), nil, a))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(gwy.ts.URL, "http")+"/v1/ws", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no key: err %v, response %v; want 401", err, resp)
	}
	for _, opts := range []*websocket.DialOptions{
		{HTTPHeader: http.Header{"Authorization": {"Bearer sk-alice"}}},
		{Subprotocols: []string{wsapi.Protocol, wsapi.KeyPrefix + "sk-alice"}},
	} {
		c := wsDial(t, gwy.ts.URL, opts)
		wsSend(t, c, `{"type":"completion","id":"a","request":{"model":"m","prompt":"x"}}`)
		if r := wsCollect(t, c, "a")["a"]; r.text != "ab" || r.end.Type != "done" {
			t.Errorf("with %+v: text %q, end %+v", opts, r.text, r.end)
		}
		c.Close(websocket.StatusNormalClosure, "")
	}
}
