package web

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

type sseEvent struct {
	Type string `json:"type"`
	Data string `json:"data"`
	ID   string `json:"id"`
}

// TestStreamParser runs static/stream.js in the browser on event streams cut
// into pieces the way networks cut them.
func TestStreamParser(t *testing.T) {
	b := newBrowser(t)
	srv := httptest.NewServer(newFakeAPI(t).handler())
	defer srv.Close()
	b.do(t, chromedp.Navigate(srv.URL+"/"))

	msg := func(data string) sseEvent { return sseEvent{Type: "message", Data: data} }
	tests := []struct {
		name   string
		chunks []string
		want   []sseEvent
	}{
		{name: "one event", chunks: []string{"data: hi\n\n"}, want: []sseEvent{msg("hi")}},
		{name: "data lines join with LF", chunks: []string{"data: a\ndata: b\n\n"}, want: []sseEvent{msg("a\nb")}},
		{name: "CRLF", chunks: []string{"data: a\r\n\r\ndata: b\r\n\r\n"}, want: []sseEvent{msg("a"), msg("b")}},
		{name: "CR", chunks: []string{"data: a\r\rdata: b\r\r"}, want: []sseEvent{msg("a"), msg("b")}},
		{name: "CRLF split between pieces", chunks: []string{"data: a\r", "\ndata: b\r", "\n\r", "\n"}, want: []sseEvent{msg("a\nb")}},
		{name: "line split between pieces", chunks: []string{"da", "ta: {\"x\":", "1}\n", "\n"}, want: []sseEvent{msg(`{"x":1}`)}},
		{name: "comments", chunks: []string{": keepalive\n\n:\ndata:x\n\n"}, want: []sseEvent{msg("x")}},
		{name: "only one space dropped", chunks: []string{"data:  two\n\n"}, want: []sseEvent{msg(" two")}},
		{name: "colon in value", chunks: []string{"data: {\"a\":\"b: c\"}\n\n"}, want: []sseEvent{msg(`{"a":"b: c"}`)}},
		{name: "event and id", chunks: []string{"event: ping\nid: 7\ndata: d\n\n"}, want: []sseEvent{{Type: "ping", Data: "d", ID: "7"}}},
		{name: "no data, no event", chunks: []string{"event: ping\n\nretry: 10\n\n"}, want: nil},
		{name: "bare data field", chunks: []string{"data\n\n"}, want: []sseEvent{msg("")}},
		{name: "unknown fields ignored", chunks: []string{"foo: bar\ndata: x\n\n"}, want: []sseEvent{msg("x")}},
		{name: "last event without blank line", chunks: []string{"data: a\n\ndata: tail"}, want: []sseEvent{msg("a"), msg("tail")}},
		{name: "empty pieces", chunks: []string{"", "data: a", "", "\n", "", "\n"}, want: []sseEvent{msg("a")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := eval[[]sseEvent](t, b, `import('./static/stream.js').then(({ SSEParser }) => {
				const out = [];
				const p = new SSEParser((ev) => out.push(ev));
				for (const c of `+js(tc.chunks)+`) p.push(c);
				p.end();
				return out;
			})`)
			if len(got) == 0 && len(tc.want) == 0 {
				return
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("SSEParser on %q = %+v, want %+v", tc.chunks, got, tc.want)
			}
		})
	}

	// Any cut of a stream into pieces gives the events of the whole: every
	// cut into two pieces, and one piece per character.
	t.Run("every split", func(t *testing.T) {
		stream := ": hi\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\nevent: x\rdata: é\r\rdata: [DONE]\n\n"
		bad := eval[[]string](t, b, `import('./static/stream.js').then(({ SSEParser }) => {
			const run = (pieces) => {
				const out = [];
				const p = new SSEParser((ev) => out.push(ev));
				for (const c of pieces) p.push(c);
				p.end();
				return JSON.stringify(out);
			};
			const s = `+js(stream)+`;
			const whole = run([s]);
			const bad = [];
			for (let i = 0; i <= s.length; i++) {
				if (run([s.slice(0, i), s.slice(i)]) !== whole) bad.push('cut at ' + i);
			}
			if (run([...s]) !== whole) bad.push('one piece per character');
			if (JSON.parse(whole).length !== 3) bad.push('whole stream: ' + whole);
			return bad;
		})`)
		if len(bad) > 0 {
			t.Errorf("pieces disagree with the whole stream: %v", bad)
		}
	})

	t.Run("interpret", func(t *testing.T) {
		cases := []struct {
			data string
			want string
		}{
			{data: "[DONE]", want: "done"},
			{data: " [DONE] ", want: "done"},
			{data: `{"error":{"message":"boom","type":"server_error"}}`, want: "error: boom"},
			{data: `{"error":"bare"}`, want: "error: bare"},
			{data: `{"error":{"code":5}}`, want: `error: {"code":5}`},
			{data: `{"choices":[{"delta":{"content":"x"}}]}`, want: "chunk"},
			{data: `not json`, want: "invalid"},
			{data: `null`, want: "invalid"},
			{data: `"text"`, want: "invalid"},
		}
		var datas []string
		for _, c := range cases {
			datas = append(datas, c.data)
		}
		got := eval[[]string](t, b, `import('./static/stream.js').then(({ interpret }) =>
			`+js(datas)+`.map((d) => {
				const r = interpret(d);
				if (r.done) return 'done';
				if (r.error !== undefined) return 'error: ' + r.error;
				if (r.chunk) return 'chunk';
				return 'invalid';
			}))`)
		for i, c := range cases {
			if i >= len(got) || got[i] != c.want {
				t.Errorf("interpret(%q) = %q, want %q", c.data, got, c.want)
			}
		}
	})
}

// fakeAPI stands in for the server's API with scripted answers, picked by a
// word in the last user message.
type fakeAPI struct {
	t *testing.T

	mu  sync.Mutex
	key string // the API key it requires; none if empty

	requests chan chatRequest // each chat request, as received
	gone     chan string      // a stream whose client went away, by script
	canceled chan string      // streams canceled with POST /v1/streams/{id}/cancel
	resumed  chan string      // the Last-Event-ID of each GET /v1/streams/{id}
}

type chatRequest struct {
	auth string
	body map[string]any
}

const demoModels = `{"object":"list","data":[{"id":"demo-model","object":"model","owned_by":"spigot","description":"demo model with random weights: it produces random text."}]}`

func newFakeAPI(t *testing.T) *fakeAPI {
	return &fakeAPI{t: t, requests: make(chan chatRequest, 16), gone: make(chan string, 16),
		canceled: make(chan string, 16), resumed: make(chan string, 16)}
}

func (f *fakeAPI) authorized(w http.ResponseWriter, r *http.Request) bool {
	f.mu.Lock()
	key := f.key
	f.mu.Unlock()
	if key == "" || r.Header.Get("Authorization") == "Bearer "+key {
		return true
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusUnauthorized)
	fmt.Fprint(w, `{"error":{"message":"invalid API key","type":"invalid_request_error","code":"invalid_api_key"}}`)
	return false
}

func (f *fakeAPI) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", Handler())
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) {
		if f.authorized(w, r) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, demoModels)
		}
	})
	mux.HandleFunc("POST /v1/chat/completions", f.chat)
	mux.HandleFunc("POST /v1/streams/{id}/cancel", func(w http.ResponseWriter, r *http.Request) {
		if f.authorized(w, r) {
			f.canceled <- r.PathValue("id")
			fmt.Fprintf(w, `{"id":%q,"object":"stream.cancel","canceled":true}`, r.PathValue("id"))
		}
	})
	// The rest of the "cut" script's stream, after the events it got.
	mux.HandleFunc("GET /v1/streams/{id}", func(w http.ResponseWriter, r *http.Request) {
		if !f.authorized(w, r) {
			return
		}
		f.resumed <- r.Header.Get("Last-Event-ID")
		if r.PathValue("id") != "chatcmpl-cut" || r.Header.Get("Last-Event-ID") != "chatcmpl-cut:2" {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error":{"message":"no such stream","type":"invalid_request_error","code":"stream_not_found"}}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "id: chatcmpl-cut:3\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" and the rest\"},\"finish_reason\":\"stop\"}]}\n\n"+
			"id: chatcmpl-cut:4\ndata: [DONE]\n\n")
	})
	return mux
}

func (f *fakeAPI) chat(w http.ResponseWriter, r *http.Request) {
	if !f.authorized(w, r) {
		return
	}
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.requests <- chatRequest{auth: r.Header.Get("Authorization"), body: body}
	msgs, _ := body["messages"].([]any)
	last := ""
	if len(msgs) > 0 {
		last, _ = msgs[len(msgs)-1].(map[string]any)["content"].(string)
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	rc := http.NewResponseController(w)
	// send writes one piece and flushes it, then pauses, so that the
	// browser reads it as a separate network chunk.
	send := func(piece string) bool {
		if _, err := w.Write([]byte(piece)); err != nil {
			return false
		}
		if err := rc.Flush(); err != nil {
			return false
		}
		select {
		case <-r.Context().Done():
			return false
		case <-time.After(25 * time.Millisecond):
			return true
		}
	}
	waitGone := func(script string) {
		select {
		case <-r.Context().Done():
			f.gone <- script
		case <-time.After(10 * time.Second):
		}
	}
	switch {
	case strings.Contains(last, "split"):
		e := "é" // two bytes in UTF-8, sent in two pieces
		for _, piece := range []string{
			": keepalive\n\n",
			"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\r\n\r\n",
			"data: {\"choices\":[{\"index\":0,\"delta\":{\"cont",
			"ent\":\"<b>bold</b> & \"}}]}\r",
			"\n\r",
			"\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"caf" + e[:1],
			e[1:] + "\\n  indented\\t\"}}]}\n\n",
			"data: {\"choices\":[{\"index\":0,\"delta\":\ndata: {\"content\":\" <script>alert(1)</script>\"}}]}\n\n",
			"event: message\nid: 7\ndata: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n",
			"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":4,\"total_tokens\":9}}\n\n",
			"data: [DONE]\n\n",
		} {
			if !send(piece) {
				return
			}
		}
	case strings.Contains(last, "fail"):
		// Part of an answer, then an error event; then the stream stays
		// open: the page must close it.
		send("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"partial answer\"}}]}\n\n")
		send("data: {\"error\":{\"message\":\"engine exploded\",\"type\":\"server_error\"}}\n\n")
		waitGone("fail")
	case strings.Contains(last, "slow"):
		// Pieces until the client goes away.
		for i := 0; i < 500; i++ {
			if !send(fmt.Sprintf("id: chatcmpl-slow:%d\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tick%d \"}}]}\n\n", i+1, i)) {
				break
			}
		}
		waitGone("slow")
	case strings.Contains(last, "cut"):
		// Two events, then the connection breaks: the page resumes with
		// GET /v1/streams/chatcmpl-cut after the second.
		send("id: chatcmpl-cut:1\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"the start\"}}]}\n\n")
		send("id: chatcmpl-cut:2\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\", the middle\"}}]}\n\n")
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close() // mid-response, no end chunk: a network failure for the page
		}
	default:
		send("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"},\"finish_reason\":\"stop\"}]}\n\n")
		send("data: [DONE]\n\n")
	}
}

func (f *fakeAPI) request(t *testing.T) chatRequest {
	t.Helper()
	select {
	case r := <-f.requests:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no chat request reached the server")
		return chatRequest{}
	}
}

func (f *fakeAPI) waitGone(t *testing.T, script string) {
	t.Helper()
	select {
	case s := <-f.gone:
		if s != script {
			t.Fatalf("the %q stream lost its client; want the %q stream", s, script)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("the %q stream's client never went away", script)
	}
}

// TestPageScripted drives the page against fakeAPI: the request it sends,
// rendering of pieces that arrive cut anywhere (mid-line, mid-CRLF,
// mid-UTF-8 character), HTML in the output shown as text, error events,
// 401 and the API key, and Stop.
func TestPageScripted(t *testing.T) {
	b := newBrowser(t)
	f := newFakeAPI(t)
	srv := httptest.NewServer(f.handler())
	// Cleanups run last-in first-out: the browser closes first, so no
	// request is left open when the server closes.
	t.Cleanup(srv.Close)

	b.do(t, chromedp.Navigate(srv.URL+"/"))
	p := b.waitPage(t, 5*time.Second, "the demo-model notice", func(p page) bool { return p.Notice != "" })
	if !strings.Contains(p.Notice, "random weights") || !strings.Contains(p.Notice, "demo-model") {
		t.Errorf("model notice = %q, want it to say demo-model has random weights", p.Notice)
	}
	if p.State != "idle" || p.SendDisabled || !p.StopDisabled {
		t.Errorf("page at rest: %+v; want idle, Send enabled, Stop disabled", p)
	}

	// Settings, then a two-line prompt typed with Shift+Enter and sent with
	// Enter.
	b.do(t,
		chromedp.SetValue(chromedp.ID("system"), "Be brief."),
		chromedp.SetValue(chromedp.ID("temperature"), "0.5"),
		chromedp.SetValue(chromedp.ID("max-tokens"), "7"),
		chromedp.SendKeys(chromedp.ID("prompt"), "line one"),
		pressEnter(chromedp.ModifierShift),
		chromedp.SendKeys(chromedp.ID("prompt"), "split"),
		pressEnter(chromedp.ModifierNone),
	)
	req := f.request(t)
	wantBody := map[string]any{
		"model": "demo-model",
		"messages": []any{
			map[string]any{"role": "system", "content": "Be brief."},
			map[string]any{"role": "user", "content": "line one\nsplit"},
		},
		"stream":         true,
		"stream_options": map[string]any{"include_usage": true},
		"temperature":    0.5,
		"top_p":          0.95,
		"max_tokens":     7.0,
		// No seed: the field is empty, so the server picks one.
	}
	if !reflect.DeepEqual(req.body, wantBody) {
		t.Errorf("request body = %v\nwant %v", req.body, wantBody)
	}
	if req.auth != "" {
		t.Errorf("Authorization = %q with no API key set", req.auth)
	}
	p = b.waitPage(t, 5*time.Second, "the split stream to end", func(p page) bool { return p.State == "idle" })
	if want := "<b>bold</b> & café\n  indented\t <script>alert(1)</script>"; p.Text != want {
		t.Errorf("answer = %q, want %q", p.Text, want)
	}
	if p.Elements != 0 {
		t.Errorf("model output made %d elements; it must be text only", p.Elements)
	}
	if p.Status != "Done" || p.Finish != "length" || !strings.HasPrefix(p.Tokens, "4 ") || p.TTFT == "–" {
		t.Errorf("after the answer: status %q, finish %q, tokens %q, ttft %q; want Done, length, 4 (+5 prompt), a time",
			p.Status, p.Finish, p.Tokens, p.TTFT)
	}
	if p.Prompt != "" {
		t.Errorf("prompt box holds %q after sending; want it empty", p.Prompt)
	}

	// An error event mid-answer: the part so far stays, the error shows,
	// and the page closes the stream.
	b.do(t,
		chromedp.SendKeys(chromedp.ID("prompt"), "please fail"),
		chromedp.Click(chromedp.ID("send")),
	)
	req = f.request(t)
	msgs, _ := req.body["messages"].([]any)
	if len(msgs) != 4 {
		t.Errorf("second request has %d messages, want 4 (system, user, assistant, user): %v", len(msgs), msgs)
	} else if a := msgs[2].(map[string]any); a["role"] != "assistant" || !strings.HasPrefix(a["content"].(string), "<b>bold</b>") {
		t.Errorf("second request's third message = %v, want the first answer", a)
	}
	p = b.waitPage(t, 5*time.Second, "the error", func(p page) bool { return p.State == "idle" })
	if p.Status != "Error" || len(p.Errors) != 1 || !strings.Contains(p.Errors[0], "engine exploded") || p.Text != "partial answer" {
		t.Errorf("after an error event: %+v; want status Error, the message, and the partial answer", p)
	}
	f.waitGone(t, "fail")

	// A key is now required: the 401 says so and gives the prompt back;
	// with the key set, the same prompt goes through with the header.
	f.mu.Lock()
	f.key = "sekret"
	f.mu.Unlock()
	b.do(t,
		chromedp.SendKeys(chromedp.ID("prompt"), "hello"),
		chromedp.Click(chromedp.ID("send")),
	)
	p = b.waitPage(t, 5*time.Second, "the 401", func(p page) bool { return len(p.Errors) == 2 })
	if e := p.Errors[1]; !strings.Contains(e, "401") || !strings.Contains(e, "API key") {
		t.Errorf("401 message = %q, want it to name 401 and the API key", e)
	}
	if p.Prompt != "hello" || p.State != "idle" {
		t.Errorf("after a 401: prompt %q, state %q; want the prompt back and idle", p.Prompt, p.State)
	}
	b.do(t,
		chromedp.SendKeys(chromedp.ID("api-key"), "sekret"),
		chromedp.Blur(chromedp.ID("api-key")), // "change" stores the key
		chromedp.Click(chromedp.ID("send")),
	)
	if req = f.request(t); req.auth != "Bearer sekret" {
		t.Errorf("Authorization = %q, want %q", req.auth, "Bearer sekret")
	}
	p = b.waitPage(t, 5*time.Second, "the answer", func(p page) bool { return p.State == "idle" })
	if p.Text != "ok" || p.Status != "Done" {
		t.Errorf("with the key: %+v; want the answer ok", p)
	}
	if key := eval[string](t, b, `localStorage.getItem('spigot.apiKey')`); key != "sekret" {
		t.Errorf("localStorage spigot.apiKey = %q, want sekret", key)
	}

	// A connection that breaks mid-answer: the page resumes the stream
	// after the last event it got, and the answer is whole.
	b.do(t,
		chromedp.SendKeys(chromedp.ID("prompt"), "cut me off"),
		chromedp.Click(chromedp.ID("send")),
	)
	f.request(t)
	p = b.waitPage(t, 5*time.Second, "the resumed answer", func(p page) bool { return p.State == "idle" })
	select {
	case id := <-f.resumed:
		if id != "chatcmpl-cut:2" {
			t.Errorf("resumed with Last-Event-ID %q, want chatcmpl-cut:2", id)
		}
	default:
		t.Error("the page did not resume the broken stream")
	}
	if p.Text != "the start, the middle and the rest" || p.Status != "Done" || p.Finish != "stop" || len(p.Errors) != 2 {
		t.Errorf("after a broken connection: %+v; want the whole answer, Done, stop, no new error", p)
	}

	// Stop: the server is asked to cancel the stream, the fetch is
	// aborted, the server sees the client go away, and the text stops
	// growing.
	b.do(t,
		chromedp.SendKeys(chromedp.ID("prompt"), "go slow"),
		chromedp.Click(chromedp.ID("send")),
	)
	f.request(t)
	b.waitPage(t, 5*time.Second, "text to stream", func(p page) bool {
		return p.State == "generating" && strings.Count(p.Text, "tick") >= 3 && !p.StopDisabled
	})
	b.do(t, chromedp.Click(chromedp.ID("stop")))
	p = b.waitPage(t, 2*time.Second, "the page to stop", func(p page) bool { return p.State == "idle" })
	f.waitGone(t, "slow")
	select {
	case id := <-f.canceled:
		if id != "chatcmpl-slow" {
			t.Errorf("Stop canceled stream %q, want chatcmpl-slow", id)
		}
	case <-time.After(5 * time.Second):
		t.Error("Stop did not cancel the stream on the server (POST /v1/streams/{id}/cancel)")
	}
	time.Sleep(200 * time.Millisecond)
	if q := b.page(t); q.Text != p.Text {
		t.Errorf("text grew after Stop: %q, then %q", p.Text, q.Text)
	}
	if p.Status != "Stopped" || p.Finish != "stopped" || !strings.Contains(p.Meta, "stopped") || p.SendDisabled || !p.StopDisabled {
		t.Errorf("after Stop: %+v; want status Stopped, finish stopped, Send enabled, Stop disabled", p)
	}
}
