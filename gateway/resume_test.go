package gateway

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spigot-llm/spigot/bench"
	"github.com/spigot-llm/spigot/metrics"
)

// newPeers starts n gateway instances with the same configuration (cfg,
// YAML without a streams section) and the same streams secret, each
// advertising its own loopback URL: a stream started on one can be
// resumed or canceled on any.
func newPeers(t testing.TB, n int, cfg string) []*gw {
	t.Helper()
	peers := make([]*gw, n)
	for i := range peers {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c, err := ParseConfig([]byte(cfg + fmt.Sprintf("streams: {advertise: %q, secret: 0123456789abcdef-shared}\n", "http://"+ln.Addr().String())))
		if err != nil {
			t.Fatal(err)
		}
		reg := metrics.NewRegistry()
		g := New(c, Options{Registry: reg})
		ts := httptest.NewUnstartedServer(g)
		ts.Listener.Close()
		ts.Listener = ln
		ts.Start()
		t.Cleanup(func() { ts.Close(); g.Close() })
		peers[i] = &gw{g: g, reg: reg, ts: ts}
	}
	return peers
}

// replicaConfig is the YAML of a gateway over replicas (stories260K).
func replicaConfig(rs ...*replica) string {
	var b strings.Builder
	b.WriteString("upstreams:\n")
	for i, r := range rs {
		fmt.Fprintf(&b, "- {name: r%d, kind: spigot, url: %q, models: [stories260K]}\n", i, r.url)
	}
	b.WriteString("health: {interval: 50ms, timeout: 1s, cooldown: 300ms}\n")
	return b.String()
}

// sseResumer reads one stream over as many connections as it takes,
// each resuming after the last complete event of the one before.
type sseResumer struct {
	t        testing.TB
	text     strings.Builder
	finishes []string
	usage    []map[string]int
	errors   []string
	dones    int
	events   int
	lastID   string // the last complete event's id
	lastSeq  uint64
	streamID string
	conns    int
}

// read takes the complete events of one connection's body and reports
// whether [DONE] came. Event ids must name one stream, with sequence
// numbers that grow across connections: nothing is delivered twice.
func (c *sseResumer) read(body io.Reader) bool {
	c.conns++
	sr := bench.NewSSEReader(body)
	for {
		ev, err := sr.Next()
		if err != nil {
			return c.dones > 0
		}
		id, seq, err := parseEventID(ev.ID)
		if err != nil || (c.streamID != "" && id != c.streamID) || seq <= c.lastSeq {
			c.t.Fatalf("event id %q after %q (%v)", ev.ID, c.lastID, err)
		}
		c.streamID, c.lastID, c.lastSeq = id, ev.ID, seq
		c.events++
		if c.dones > 0 {
			c.t.Fatalf("event %q after [DONE]", ev.Data)
		}
		if ev.Data == "[DONE]" {
			c.dones++
			continue
		}
		var ch struct {
			Choices []struct {
				Text  *string `json:"text"`
				Delta *struct {
					Content *string `json:"content"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Usage map[string]int `json:"usage"`
			Error *struct {
				Message string `json:"message"`
				Code    string `json:"code"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(ev.Data), &ch); err != nil {
			c.t.Fatalf("event %q: %v", ev.Data, err)
		}
		if ch.Error != nil {
			c.errors = append(c.errors, ch.Error.Code+": "+ch.Error.Message)
		}
		if ch.Usage != nil {
			c.usage = append(c.usage, ch.Usage)
		}
		for _, choice := range ch.Choices {
			if choice.Text != nil {
				c.text.WriteString(*choice.Text)
			}
			if choice.Delta != nil && choice.Delta.Content != nil {
				c.text.WriteString(*choice.Delta.Content)
			}
			if choice.FinishReason != nil {
				c.finishes = append(c.finishes, *choice.FinishReason)
			}
		}
	}
}

// cutReader hands out at most n bytes, then reports the connection gone;
// the test then closes the body, which closes the TCP connection wherever
// n fell, in the middle of an event too.
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

// open sends a request with headers (name, value, ...) and returns the
// response, its body unread.
func open(t testing.TB, method, url, body string, header ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestResumeRandomCuts runs greedy streams through one of two gateway
// instances, cuts their connections at random bytes many times, and
// resumes each time from the last complete event on either instance,
// alternately with GET /v1/streams/{id} and by re-sending the request
// with Last-Event-ID. The events put together must be exactly an uncut
// run's: text, finish reason, usage, one [DONE], no event twice. A cut
// never cancels a generation on the replicas.
func TestResumeRandomCuts(t *testing.T) {
	rs := []*replica{newReplica(t, 4), newReplica(t, 4)}
	for _, r := range rs {
		r.model.delay.Store(int64(time.Millisecond))
	}
	peers := newPeers(t, 2, replicaConfig(rs...))
	cases := []struct{ name, path, body string }{
		{"chat", "/v1/chat/completions",
			`{"model":"stories260K","messages":[{"role":"user","content":"Once upon a time"}],"temperature":0,"max_tokens":80,"ignore_eos":true,"stream":true,"stream_options":{"include_usage":true}}`},
		{"completion", "/v1/completions",
			`{"model":"stories260K","prompt":"Once upon a time","temperature":0,"max_tokens":90,"ignore_eos":true,"stream":true}`},
	}
	forwarded := 0
	for ci, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := &sseResumer{t: t}
			resp := open(t, http.MethodPost, peers[0].ts.URL+tc.path, tc.body)
			want.read(resp.Body)
			resp.Body.Close()
			if want.dones != 1 || len(want.errors) > 0 || len(want.finishes) != 1 || want.text.Len() == 0 {
				t.Fatalf("uncut run: %d [DONE], errors %q, finishes %q, text %q", want.dones, want.errors, want.finishes, want.text.String())
			}
			for run := range 4 {
				seed := uint64(ci*100 + run)
				rng := rand.New(rand.NewPCG(seed, 2))
				owner := rng.IntN(len(peers))
				c := &sseResumer{t: t}
				resp := open(t, http.MethodPost, peers[owner].ts.URL+tc.path, tc.body)
				for {
					if resp.StatusCode != http.StatusOK {
						b, _ := io.ReadAll(resp.Body)
						t.Fatalf("seed %d, connection %d: status %d: %s", seed, c.conns+1, resp.StatusCode, b)
					}
					n := 1 + rng.IntN(600)
					if c.streamID == "" {
						n += 500 // the first connection must see an event: it names the stream
					}
					done := c.read(&cutReader{r: resp.Body, n: n})
					resp.Body.Close() // closes the TCP connection mid-stream
					if done {
						break
					}
					if c.conns > 1000 {
						t.Fatalf("seed %d: no [DONE] after %d connections", seed, c.conns)
					}
					p := rng.IntN(len(peers))
					if p != owner {
						forwarded++
					}
					if c.conns%2 == 0 {
						resp = open(t, http.MethodGet, peers[p].ts.URL+"/v1/streams/"+c.streamID, "", "Last-Event-ID", c.lastID)
					} else {
						resp = open(t, http.MethodPost, peers[p].ts.URL+tc.path, tc.body, "Last-Event-ID", c.lastID)
					}
				}
				if c.text.String() != want.text.String() || fmt.Sprint(c.finishes) != fmt.Sprint(want.finishes) ||
					fmt.Sprint(c.usage) != fmt.Sprint(want.usage) || c.dones != 1 || len(c.errors) > 0 {
					t.Errorf("seed %d, %d connections: text %q, finishes %q, usage %v, %d [DONE], errors %q\nwant text %q, finishes %q, usage %v",
						seed, c.conns, c.text.String(), c.finishes, c.usage, c.dones, c.errors, want.text.String(), want.finishes, want.usage)
				}
				t.Logf("seed %d: %d events over %d connections", seed, c.events, c.conns)
			}
		})
	}
	if forwarded == 0 {
		t.Error("no resume went to the instance that does not own the stream")
	}
	for i, r := range rs {
		waitFor(t, "the replicas to be idle", 10*time.Second, func() bool {
			s := r.eng.Stats()
			return s.Running == 0 && s.Queued == 0 && r.eng.Cache().BlocksInUse() == 0
		})
		if s := r.eng.Stats(); s.FinishedCanceled != 0 || s.FinishedError != 0 {
			t.Errorf("replica %d: %+v: a cut connection canceled or failed a generation", i, s)
		}
	}
}

// TestResumeRefused checks the answers to resumes that cannot be served:
// each a clear error in the API's format, from either instance.
func TestResumeRefused(t *testing.T) {
	a := newFake(t, okStream)
	cfg := "upstreams:\n- {name: r0, kind: spigot, url: " + strconv.Quote(a.ts.URL) + ", models: [m]}\n"
	peers := newPeers(t, 2, cfg)
	single := newGW(t, fakeConfig(t, KindSpigot, "", nil, a))

	body := `{"model":"m","prompt":"x","stream":true}`
	c := &sseResumer{t: t}
	resp := open(t, http.MethodPost, peers[0].ts.URL+"/v1/completions", body)
	c.read(resp.Body)
	resp.Body.Close()
	if c.dones != 1 || c.text.String() != "ab" {
		t.Fatalf("the stream: text %q, %d [DONE]", c.text.String(), c.dones)
	}
	id := c.streamID
	// The same id naming the other instance, with the first one's MAC.
	rest, mac, _ := cutLast(id, '.')
	random, _, _ := cutLast(rest, '.')
	forged := random + "." + base64.RawURLEncoding.EncodeToString([]byte(peers[1].ts.URL)) + "." + mac

	for _, tc := range []struct {
		name   string
		gw     *gw
		method string
		path   string
		header []string
		status int
		code   string
	}{
		{"unknown stream", peers[1], http.MethodGet, "/v1/streams/gs-0000", nil, http.StatusNotFound, "stream_not_found"},
		{"unknown stream, single instance", single, http.MethodGet, "/v1/streams/" + id, nil, http.StatusNotFound, "stream_not_found"},
		{"forged owner", peers[0], http.MethodGet, "/v1/streams/" + forged, nil, http.StatusNotFound, "stream_not_found"},
		{"bad Last-Event-ID", peers[0], http.MethodPost, "/v1/completions", []string{"Last-Event-ID", "nonsense"}, http.StatusBadRequest, ""},
		{"Last-Event-ID of another stream", peers[0], http.MethodGet, "/v1/streams/" + id, []string{"Last-Event-ID", "gs-1:1"}, http.StatusBadRequest, ""},
		{"bad after", peers[1], http.MethodGet, "/v1/streams/" + id + "?after=x", nil, http.StatusBadRequest, ""},
		{"after not sent yet", peers[1], http.MethodGet, "/v1/streams/" + id + "?after=99", nil, http.StatusRequestedRangeNotSatisfiable, "out_of_range"},
		{"wrong endpoint", peers[0], http.MethodPost, "/v1/chat/completions", []string{"Last-Event-ID", id + ":1"}, http.StatusBadRequest, ""},
		{"cancel unknown", peers[1], http.MethodPost, "/v1/streams/gs-0000/cancel", nil, http.StatusNotFound, "stream_not_found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := open(t, tc.method, tc.gw.ts.URL+tc.path, `{"model":"m","messages":[]}`, tc.header...)
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			e, ok := decodeError(b)
			if resp.StatusCode != tc.status || !ok || e.Message == "" || (tc.code != "" && e.Code != tc.code) {
				t.Errorf("status %d %s; want %d with an error object (code %q)", resp.StatusCode, b, tc.status, tc.code)
			}
		})
	}
	// Everything sent: 204 on either instance, which stops an EventSource.
	for i, p := range peers {
		resp := open(t, http.MethodGet, p.ts.URL+"/v1/streams/"+id, "", "Last-Event-ID", c.lastID)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Errorf("instance %d: resume after the last event: status %d, want 204", i, resp.StatusCode)
		}
	}
	// From the start, on the other instance: the whole stream again.
	again := &sseResumer{t: t}
	resp = open(t, http.MethodGet, peers[1].ts.URL+"/v1/streams/"+id, "")
	again.read(resp.Body)
	resp.Body.Close()
	if again.text.String() != "ab" || again.dones != 1 || again.lastID != c.lastID {
		t.Errorf("replayed from the start: text %q, %d [DONE], last id %q; want %q, 1, %q", again.text.String(), again.dones, again.lastID, "ab", c.lastID)
	}
}

// TestResumeKeys: a stream is resumed and canceled only with the key
// that started it; another key is told it does not exist.
func TestResumeKeys(t *testing.T) {
	a := newFake(t, okStream)
	gwy := newGW(t, fakeConfig(t, KindSpigot, fmt.Sprintf("auth: {keys: [{name: alice, sha256: %s}, {name: bob, sha256: %s}]}\n",
		keyHash("sk-alice"), keyHash("sk-bob")), nil, a))
	resp := open(t, http.MethodPost, gwy.ts.URL+"/v1/completions", `{"model":"m","prompt":"x","stream":true}`, "Authorization", "Bearer sk-alice")
	c := &sseResumer{t: t}
	c.read(resp.Body)
	resp.Body.Close()
	if c.dones != 1 {
		t.Fatalf("the stream did not end")
	}
	for _, tc := range []struct {
		key    string
		status int
	}{{"", http.StatusUnauthorized}, {"sk-bob", http.StatusNotFound}, {"sk-alice", http.StatusOK}} {
		h := []string{}
		if tc.key != "" {
			h = []string{"Authorization", "Bearer " + tc.key}
		}
		resp := open(t, http.MethodGet, gwy.ts.URL+"/v1/streams/"+c.streamID, "", h...)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("resume with key %q: status %d, want %d", tc.key, resp.StatusCode, tc.status)
		}
		resp = open(t, http.MethodPost, gwy.ts.URL+"/v1/streams/"+c.streamID+"/cancel", "", h...)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("cancel with key %q: status %d, want %d", tc.key, resp.StatusCode, tc.status)
		}
	}
}

// TestStreamCancel: POST /v1/streams/{id}/cancel on the instance that
// does not own the stream stops it: the reader gets an error event (code
// canceled) and [DONE], and the upstream request ends.
func TestStreamCancel(t *testing.T) {
	gone := make(chan struct{}, 1)
	a := newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		sseChunks(w, false, "cmpl-x", []string{"a"}, "", 0)
		<-r.Context().Done()
		gone <- struct{}{}
	})
	cfg := "upstreams:\n- {name: r0, kind: spigot, url: " + strconv.Quote(a.ts.URL) + ", models: [m]}\n"
	peers := newPeers(t, 2, cfg)
	resp := open(t, http.MethodPost, peers[0].ts.URL+"/v1/completions", `{"model":"m","prompt":"x","stream":true}`)
	defer resp.Body.Close()
	sr := bench.NewSSEReader(resp.Body)
	ev, err := sr.Next()
	if err != nil {
		t.Fatal(err)
	}
	id, _, _ := parseEventID(ev.ID)
	cresp := open(t, http.MethodPost, peers[1].ts.URL+"/v1/streams/"+id+"/cancel", "")
	b, _ := io.ReadAll(cresp.Body)
	cresp.Body.Close()
	if cresp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"canceled":true`) {
		t.Fatalf("cancel: status %d %s", cresp.StatusCode, b)
	}
	var rest []string
	for {
		ev, err := sr.Next()
		if err != nil {
			break
		}
		rest = append(rest, ev.Data)
	}
	if len(rest) != 2 || !strings.Contains(rest[0], `"code":"canceled"`) || rest[1] != "[DONE]" {
		t.Errorf("after the cancel the reader got %q, want an error event (code canceled) and [DONE]", rest)
	}
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream request was not canceled")
	}
}

// TestAbandonedStream: a stream whose client went away and did not come
// back within the resume window is canceled upstream; a resume after
// that is refused.
func TestAbandonedStream(t *testing.T) {
	gone := make(chan struct{}, 1)
	a := newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		sseChunks(w, false, "cmpl-x", []string{"a"}, "", 0)
		<-r.Context().Done()
		gone <- struct{}{}
	})
	gwy := newGW(t, fakeConfig(t, KindSpigot, "streams: {resume_window: 300ms}\n", nil, a))
	ctx, cancel := context.WithCancel(context.Background())
	res := stream(ctx, http.DefaultClient, gwy.ts.URL, "/v1/completions", `{"model":"m","prompt":"x","stream":true}`, cancel)
	if res.chunks != 1 {
		t.Fatalf("%d chunks, want 1 (%v)", res.chunks, res.err)
	}
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Fatal("the abandoned stream's upstream request was not canceled")
	}
	waitFor(t, "the stream to be forgotten", 5*time.Second, func() bool { return gwy.g.streams.Len() == 0 })
}

// TestResumeMemory: finished streams beyond streams.max_memory are
// forgotten, oldest first, before their window ends.
func TestResumeMemory(t *testing.T) {
	a := newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		sseChunks(w, false, "cmpl-x", []string{strings.Repeat("x", 300), strings.Repeat("y", 300)}, "stop", 1)
	})
	run := func(gwy *gw) string {
		c := &sseResumer{t: t}
		resp := open(t, http.MethodPost, gwy.ts.URL+"/v1/completions", `{"model":"m","prompt":"x","stream":true}`)
		c.read(resp.Body)
		resp.Body.Close()
		return c.streamID
	}
	// One stream's size, then a budget of one and a half.
	probe := newGW(t, fakeConfig(t, KindSpigot, "", nil, a))
	run(probe)
	probe.g.streams.mu.Lock()
	one := probe.g.streams.finishedBytes
	probe.g.streams.mu.Unlock()
	gwy := newGW(t, fakeConfig(t, KindSpigot, fmt.Sprintf("streams: {max_memory: %d}\n", one*3/2), nil, a))
	var ids []string
	for range 4 {
		ids = append(ids, run(gwy))
	}
	for i, id := range ids {
		resp := open(t, http.MethodGet, gwy.ts.URL+"/v1/streams/"+id, "")
		resp.Body.Close()
		want := http.StatusNotFound
		if i == len(ids)-1 {
			want = http.StatusOK
		}
		if resp.StatusCode != want {
			t.Errorf("stream %d of %d (each %d bytes, budget %d): status %d, want %d", i+1, len(ids), one, one*3/2, resp.StatusCode, want)
		}
	}
}
