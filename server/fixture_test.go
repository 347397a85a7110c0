package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spigot-llm/spigot/chat"
	"github.com/spigot-llm/spigot/engine"
	"github.com/spigot-llm/spigot/gguf"
	"github.com/spigot-llm/spigot/kernels"
	"github.com/spigot-llm/spigot/metrics"
	"github.com/spigot-llm/spigot/model"
	_ "github.com/spigot-llm/spigot/model/llama"
	"github.com/spigot-llm/spigot/tokenizer"
)

var sharedDir = filepath.Join("..", "..", "shared")

// modelPath is the test model: a real 260K-parameter Llama (context 128,
// 512-token vocabulary) whose greedy output llama.cpp recorded.
var modelPath = filepath.Join(sharedDir, "models", "stories260K.gguf")

// testModel wraps a model so tests can slow its steps down or hold them.
type testModel struct {
	model.Model
	delay time.Duration // added to every Forward

	mu   sync.Mutex
	gate chan struct{} // when not nil, Forward waits until it is closed
}

func (m *testModel) Forward(b *model.Batch, logits []float32) error {
	m.mu.Lock()
	g := m.gate
	m.mu.Unlock()
	if g != nil {
		<-g
	}
	if m.delay > 0 {
		time.Sleep(m.delay)
	}
	return m.Model.Forward(b, logits)
}

// hold makes the next Forward calls wait until release.
func (m *testModel) hold() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.gate == nil {
		m.gate = make(chan struct{})
	}
}

func (m *testModel) release() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.gate != nil {
		close(m.gate)
		m.gate = nil
	}
}

type fixtureOptions struct {
	parallel, maxQueue int
	apiKey             string
	chatTemplate       string
	delay              time.Duration
	resumeWindow       time.Duration // Config.ResumeWindow (0: the default)
	keepAlive          time.Duration // Config.KeepAlive (0: the default)
	resumeMemory       int64         // Config.ResumeMemory (0: the default)
}

// fixture is a server on 127.0.0.1 serving the test model.
type fixture struct {
	srv   *Server
	eng   *engine.Engine
	model *testModel
	tok   *tokenizer.Tokenizer
	ts    *httptest.Server
	url   string

	closers []func() // run in reverse order by close
}

// close stops everything the fixture started: held steps are released, the
// engine stops (ending any stream), then the HTTP server and the model's
// threads and file. It is idempotent; tests that check for leaks call it
// themselves, the others leave it to Cleanup.
func (fx *fixture) close() {
	for i := len(fx.closers) - 1; i >= 0; i-- {
		fx.closers[i]()
	}
	fx.closers = nil
}

func newFixture(t testing.TB, o fixtureOptions) *fixture {
	t.Helper()
	fx := &fixture{}
	t.Cleanup(fx.close)
	f, err := gguf.Open(modelPath)
	if err != nil {
		t.Fatal(err)
	}
	fx.closers = append(fx.closers, func() { f.Close() })
	pool := kernels.NewPool(1)
	fx.closers = append(fx.closers, pool.Close)
	m, err := model.Load(f, model.Options{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := chat.FromGGUF(f, o.chatTemplate)
	if err != nil {
		t.Fatal(err)
	}
	tm := &testModel{Model: m, delay: o.delay}
	eng, err := engine.New(engine.Config{Model: tm, Tokenizer: tok, Parallel: o.parallel, MaxQueue: o.maxQueue})
	if err != nil {
		t.Fatal(err)
	}
	srv := New(Config{APIKey: o.apiKey, Registry: metrics.NewRegistry(), ResumeWindow: o.resumeWindow, KeepAlive: o.keepAlive, ResumeMemory: o.resumeMemory})
	srv.SetModel(&Model{Engine: eng, Tokenizer: tok, Template: tmpl, ID: "stories260K", Aliases: []string{"stories"}})
	ts := httptest.NewServer(srv)
	fx.closers = append(fx.closers, ts.Close, eng.Close, tm.release)
	fx.srv, fx.eng, fx.model, fx.tok, fx.ts, fx.url = srv, eng, tm, tok, ts, ts.URL
	return fx
}

// post sends a JSON body and returns the response, body read.
func (fx *fixture) post(t testing.TB, path, body string, header ...string) (*http.Response, []byte) {
	t.Helper()
	return fx.do(t, http.MethodPost, path, body, header...)
}

func (fx *fixture) do(t testing.TB, method, path, body string, header ...string) (*http.Response, []byte) {
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
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// stream starts a streaming request and returns the response with its
// body unread.
func (fx *fixture) stream(ctx context.Context, t testing.TB, path, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, fx.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := fx.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// waitFor polls cond for up to 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// sseReader reads server-sent events strictly, as the server writes them:
// every event is an "id: STREAM:SEQ" line, one "data: …" line and a blank
// line, with sequence numbers that only grow; keepalives are ": keepalive"
// comment lines, each followed by a blank line.
type sseReader struct {
	t          testing.TB
	br         *bufio.Reader
	lastID     string // the id of the last event read
	lastSeq    uint64
	keepalives int  // keepalive comments read
	noIDs      bool // events carry no id line (TGI's stream)
}

func newSSEReader(t testing.TB, r io.Reader) *sseReader {
	return &sseReader{t: t, br: bufio.NewReader(r)}
}

// newTGIReader reads TGI's stream, whose events have no ids.
func newTGIReader(t testing.TB, r io.Reader) *sseReader {
	return &sseReader{t: t, br: bufio.NewReader(r), noIDs: true}
}

var eventIDPattern = regexp.MustCompile(`^(chatcmpl|cmpl)-[0-9a-f]{24}:([0-9]+)$`)

// line reads one line; io.EOF only at a clean end between events.
func (r *sseReader) line() (string, error) {
	line, err := r.br.ReadString('\n')
	if err != nil {
		if err == io.EOF && line == "" {
			return "", io.EOF
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return "", err
	}
	return strings.TrimSuffix(line, "\n"), nil
}

// blank reads the blank line that ends an event.
func (r *sseReader) blank(after string) error {
	b, err := r.line()
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return err
	}
	if b != "" {
		r.t.Fatalf("SSE %q not followed by a blank line (%q)", after, b)
	}
	return nil
}

// event returns the next event's id and data, or io.EOF at the end of the
// body. A body cut inside an event gives io.ErrUnexpectedEOF (or the read
// error): that event is incomplete.
func (r *sseReader) event() (id, data string, err error) {
	for {
		line, err := r.line()
		if err != nil {
			return "", "", err
		}
		if line == ": keepalive" {
			if err := r.blank(line); err != nil {
				return "", "", err
			}
			r.keepalives++
			continue
		}
		if r.noIDs {
			data, ok := strings.CutPrefix(line, "data: ")
			if !ok {
				r.t.Fatalf("SSE line %q does not start with \"data: \"", line)
			}
			if err := r.blank(line); err != nil {
				return "", "", err
			}
			return "", data, nil
		}
		id, ok := strings.CutPrefix(line, "id: ")
		if !ok {
			r.t.Fatalf("SSE line %q: want an id line or a keepalive", line)
		}
		m := eventIDPattern.FindStringSubmatch(id)
		if m == nil {
			r.t.Fatalf("SSE event id %q is not STREAM:SEQ", id)
		}
		seq, _ := strconv.ParseUint(m[2], 10, 64)
		line, err = r.line()
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return "", "", err
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			r.t.Fatalf("SSE line %q after an id does not start with \"data: \"", line)
		}
		if err := r.blank(line); err != nil {
			return "", "", err
		}
		if seq <= r.lastSeq {
			r.t.Fatalf("SSE event id %q after %q: sequence numbers must grow", id, r.lastID)
		}
		r.lastID, r.lastSeq = id, seq
		return id, data, nil
	}
}

// next returns the next event's data, or io.EOF at the end of the body.
func (r *sseReader) next() (string, error) {
	_, data, err := r.event()
	return data, err
}

// all returns every event's data until the end of the body.
func (r *sseReader) all() []string {
	var evs []string
	for {
		ev, err := r.next()
		if err == io.EOF {
			return evs
		}
		if err != nil {
			r.t.Fatal(err)
		}
		evs = append(evs, ev)
	}
}

// chunk is the union of the chunk fields the tests look at.
type chunk struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Choices []struct {
		Index int    `json:"index"`
		Text  string `json:"text"`
		Delta *struct {
			Role    *string `json:"role"`
			Content *string `json:"content"`
		} `json:"delta"`
		Logprobs     json.RawMessage `json:"logprobs"`
		FinishReason *string         `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	} `json:"usage"`
	Error *struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

func parseChunk(t testing.TB, data string) chunk {
	t.Helper()
	var c chunk
	dec := json.NewDecoder(strings.NewReader(data))
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("chunk %s: %v", data, err)
	}
	return c
}

// streamResult is what a client saw of one streamed request.
type streamResult struct {
	texts    map[int]string
	finishes map[int][]string // finish reasons by choice (exactly one each, normally)
	errors   []chunk
	usage    *chunk
	done     bool // data: [DONE] came, last
	events   []string
}

// collect reads a whole stream and checks the rules every stream obeys:
// [DONE] last and only once, nothing after a choice's finish, error events
// only at the end.
func collect(t testing.TB, body io.Reader) streamResult {
	t.Helper()
	res := streamResult{texts: map[int]string{}, finishes: map[int][]string{}}
	res.events = newSSEReader(t, body).all()
	for i, ev := range res.events {
		if res.done {
			t.Fatalf("event %q after [DONE]", ev)
		}
		if ev == "[DONE]" {
			res.done = true
			continue
		}
		c := parseChunk(t, ev)
		if c.Error != nil {
			if i != len(res.events)-2 {
				t.Errorf("error event %d of %d is not the last before [DONE]", i, len(res.events))
			}
			res.errors = append(res.errors, c)
			continue
		}
		if c.Usage != nil && len(c.Choices) == 0 {
			res.usage = &c
			continue
		}
		for _, ch := range c.Choices {
			if len(res.finishes[ch.Index]) > 0 {
				t.Errorf("choice %d: chunk after its finish: %s", ch.Index, ev)
			}
			res.texts[ch.Index] += ch.Text
			if ch.Delta != nil && ch.Delta.Content != nil {
				res.texts[ch.Index] += *ch.Delta.Content
			}
			if ch.FinishReason != nil {
				res.finishes[ch.Index] = append(res.finishes[ch.Index], *ch.FinishReason)
			}
		}
	}
	return res
}

// reference is one line of llama.cpp's greedy outputs for the test model.
type reference struct {
	Prompt     string  `json:"prompt"`
	PromptIDs  []int32 `json:"prompt_ids"`
	OutputIDs  []int32 `json:"output_ids"`
	OutputText string  `json:"output_text"`
}

func references(t testing.TB) []reference {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(sharedDir, "reference", "greedy-stories260K.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var refs []reference
	for line := range bytes.Lines(data) {
		var r reference
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatal(err)
		}
		refs = append(refs, r)
	}
	if len(refs) == 0 {
		t.Fatal("no references")
	}
	return refs
}

// jsonString quotes s for a JSON body.
func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

var (
	idPattern      = regexp.MustCompile(`"id":"(chatcmpl|cmpl)-[0-9a-f]+"`)
	eventIDPrefix  = regexp.MustCompile(`(?m)^id: (chatcmpl|cmpl)-[0-9a-f]+:`)
	createdPattern = regexp.MustCompile(`"created":[0-9]+`)
)

// normalize replaces the parts of a response that change from run to run.
func normalize(b []byte) []byte {
	b = idPattern.ReplaceAll(b, []byte(`"id":"${1}-ID"`))
	b = eventIDPrefix.ReplaceAll(b, []byte(`id: ${1}-ID:`))
	return createdPattern.ReplaceAll(b, []byte(`"created":0`))
}
