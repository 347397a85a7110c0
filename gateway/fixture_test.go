package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spigot-llm/spigot/bench"
	"github.com/spigot-llm/spigot/chat"
	"github.com/spigot-llm/spigot/engine"
	"github.com/spigot-llm/spigot/gguf"
	"github.com/spigot-llm/spigot/kernels"
	"github.com/spigot-llm/spigot/metrics"
	"github.com/spigot-llm/spigot/model"
	_ "github.com/spigot-llm/spigot/model/llama"
	"github.com/spigot-llm/spigot/server"
	"github.com/spigot-llm/spigot/tokenizer"
)

// modelPath is the test model: a real 260K-parameter Llama (context 128,
// 512-token vocabulary).
var modelPath = filepath.Join("..", "..", "shared", "models", "stories260K.gguf")

// slowModel adds a delay to every step, so that streams last long enough
// to be cut in the middle.
type slowModel struct {
	model.Model
	delay atomic.Int64 // nanoseconds
}

func (m *slowModel) Forward(b *model.Batch, logits []float32) error {
	if d := m.delay.Load(); d > 0 {
		time.Sleep(time.Duration(d))
	}
	return m.Model.Forward(b, logits)
}

// connListener remembers its connections, so that kill can cut them.
type connListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *connListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

// replica is a Spigot server on loopback serving stories260K.
type replica struct {
	srv    *server.Server
	eng    *engine.Engine
	model  *slowModel
	ln     *connListener
	url    string
	served chan error
	once   sync.Once
	free   func()
}

func newReplica(t testing.TB, parallel int) *replica {
	t.Helper()
	f, err := gguf.Open(modelPath)
	if err != nil {
		t.Fatal(err)
	}
	pool := kernels.NewPool(1)
	m, err := model.Load(f, model.Options{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := chat.FromGGUF(f, "")
	if err != nil {
		t.Fatal(err)
	}
	sm := &slowModel{Model: m}
	eng, err := engine.New(engine.Config{Model: sm, Tokenizer: tok, Parallel: parallel, MaxQueue: 256})
	if err != nil {
		t.Fatal(err)
	}
	srv := server.New(server.Config{Registry: metrics.NewRegistry()})
	srv.SetModel(&server.Model{Engine: eng, Tokenizer: tok, Template: tmpl, ID: "stories260K"})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{srv: srv, eng: eng, model: sm, ln: &connListener{Listener: ln}, url: "http://" + ln.Addr().String(),
		served: make(chan error, 1)}
	r.free = func() { eng.Close(); pool.Close(); f.Close() }
	go func() { r.served <- srv.Serve(r.ln) }()
	t.Cleanup(r.close)
	return r
}

// kill cuts the replica off at once: its listener and every connection
// close, as when the process dies.
func (r *replica) kill() {
	r.ln.Close()
	r.ln.mu.Lock()
	for _, c := range r.ln.conns {
		c.Close()
	}
	r.ln.mu.Unlock()
}

// drain shuts the replica down gracefully: /ready turns 503, running
// streams may go on for grace, then are ended.
func (r *replica) drain(grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	r.srv.Shutdown(ctx)
}

// close stops everything the replica started; idempotent.
func (r *replica) close() {
	r.once.Do(func() {
		r.kill()
		r.drain(time.Millisecond)
		<-r.served
		r.free()
	})
}

// testConfig is a gateway configuration over the given upstream URLs, all
// spigot upstreams serving stories260K, with fast health checks.
func testConfig(t testing.TB, urls ...string) *Config {
	t.Helper()
	var b strings.Builder
	b.WriteString("upstreams:\n")
	for i, u := range urls {
		fmt.Fprintf(&b, "- {name: r%d, kind: spigot, url: %q, models: [stories260K]}\n", i, u)
	}
	b.WriteString("health: {interval: 50ms, timeout: 1s, cooldown: 300ms}\n")
	c, err := ParseConfig([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// gw is a gateway under test, served on loopback.
type gw struct {
	g   *Gateway
	reg *prometheus.Registry
	ts  *httptest.Server
}

func newGW(t testing.TB, cfg *Config) *gw {
	t.Helper()
	reg := metrics.NewRegistry()
	g := New(cfg, Options{Registry: reg})
	ts := httptest.NewServer(g)
	t.Cleanup(func() { ts.Close(); g.Close() })
	return &gw{g: g, reg: reg, ts: ts}
}

// counter returns a counter's or gauge's value, or a histogram's sample
// count, from the gateway's registry, summed over the series that have
// the given label pairs.
func (w *gw) counter(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := w.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metric
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}

// streamResult is what a client saw of one stream.
type streamResult struct {
	status   int
	upstream string
	text     string
	chunks   int // chunks with text
	finishes []string
	dones    int
	errors   []string
	ids      map[string]bool
	models   map[string]bool
	created  map[int64]bool
	objects  map[string]bool
	extIDs   int // events with token_ids or prompt_token_ids, which no test's client asks for
	roles    int
	usage    []map[string]int
	after    int // events after [DONE]
	err      error
}

// stream posts body to path and reads the whole SSE answer. onChunk, if
// not nil, is called after each chunk with text.
func stream(ctx context.Context, client *http.Client, url, path, body string, onChunk func()) *streamResult {
	res := &streamResult{ids: map[string]bool{}, models: map[string]bool{}, created: map[int64]bool{}, objects: map[string]bool{}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+path, strings.NewReader(body))
	if err != nil {
		res.err = err
		return res
	}
	resp, err := client.Do(req)
	if err != nil {
		res.err = err
		return res
	}
	defer resp.Body.Close()
	res.status, res.upstream = resp.StatusCode, resp.Header.Get("X-Spigot-Upstream")
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		res.err = fmt.Errorf("status %d: %s", resp.StatusCode, b)
		return res
	}
	var text strings.Builder
	sr := bench.NewSSEReader(resp.Body)
	for {
		ev, err := sr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			res.err = err
			break
		}
		if res.dones > 0 {
			res.after++
		}
		if ev.Data == "[DONE]" {
			res.dones++
			continue
		}
		var c struct {
			ID      string `json:"id"`
			Object  string `json:"object"`
			Created int64  `json:"created"`
			Model   string `json:"model"`
			Choices []struct {
				Delta *struct {
					Role    string  `json:"role"`
					Content *string `json:"content"`
				} `json:"delta"`
				Text         *string `json:"text"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Usage map[string]int `json:"usage"`
			Error *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(ev.Data), &c); err != nil {
			res.err = fmt.Errorf("event %q: %v", ev.Data, err)
			break
		}
		if c.Error != nil {
			res.errors = append(res.errors, c.Error.Message)
			continue
		}
		res.ids[c.ID], res.models[c.Model], res.created[c.Created], res.objects[c.Object] = true, true, true, true
		if strings.Contains(ev.Data, `token_ids"`) {
			res.extIDs++
		}
		if c.Usage != nil {
			res.usage = append(res.usage, c.Usage)
		}
		for _, ch := range c.Choices {
			s := ""
			if ch.Delta != nil {
				if ch.Delta.Role != "" {
					res.roles++
				}
				if ch.Delta.Content != nil {
					s = *ch.Delta.Content
				}
			} else if ch.Text != nil {
				s = *ch.Text
			}
			if s != "" {
				text.WriteString(s)
				res.chunks++
				if onChunk != nil {
					onChunk()
				}
			}
			if ch.FinishReason != nil {
				res.finishes = append(res.finishes, *ch.FinishReason)
			}
		}
	}
	res.text = text.String()
	return res
}

// check reports what is wrong with a stream that should have ended
// normally with want as its text.
func (res *streamResult) check(want string) error {
	var errs []error
	if res.err != nil {
		errs = append(errs, res.err)
	}
	if res.text != want {
		errs = append(errs, fmt.Errorf("text %q, want %q", res.text, want))
	}
	if len(res.finishes) != 1 {
		errs = append(errs, fmt.Errorf("finish reasons %q, want one", res.finishes))
	}
	if res.dones != 1 || res.after != 0 {
		errs = append(errs, fmt.Errorf("%d [DONE] with %d events after, want one, last", res.dones, res.after))
	}
	if len(res.errors) > 0 {
		errs = append(errs, fmt.Errorf("error events %q", res.errors))
	}
	if len(res.ids) != 1 || len(res.models) != 1 || len(res.created) != 1 || len(res.objects) != 1 {
		errs = append(errs, fmt.Errorf("ids %v models %v created %v objects %v, want one of each", res.ids, res.models, res.created, res.objects))
	}
	if res.extIDs > 0 {
		errs = append(errs, fmt.Errorf("%d events carry token ids the client did not ask for", res.extIDs))
	}
	return errors.Join(errs...)
}

// post sends a JSON body and returns the status, the body and the headers.
func post(t testing.TB, url, path, body string) (int, []byte, http.Header) {
	t.Helper()
	resp, err := http.Post(url+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b, resp.Header
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkGoroutines fails if more goroutines run than at baseline once
// everything had time to end.
func checkGoroutines(t *testing.T, baseline int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("%d goroutines, %d at the start:\n%s", runtime.NumGoroutine(), baseline, buf[:n])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
