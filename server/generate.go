package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/spigot-llm/spigot/api/openai"
	"github.com/spigot-llm/spigot/chat"
	"github.com/spigot-llm/spigot/engine"
	"github.com/spigot-llm/spigot/tokenizer"
)

// job is a validated generation request: one engine request per choice.
type job struct {
	kind openai.Kind
	opts openai.Options
	// reqs holds the choices, prompt by prompt: choice p*n+j is choice j
	// of prompt p (OpenAI's order for batched prompts).
	reqs         []engine.Request
	echo         []string // per choice, text to send before the output (completions' echo)
	promptTokens int      // the prompts' tokens, each prompt counted once
}

// promptIDs returns each choice's prompt ids, for return_token_ids.
func (j *job) promptIDs() [][]int32 {
	ids := make([][]int32, len(j.reqs))
	for i := range j.reqs {
		ids[i] = j.reqs[i].Prompt
	}
	return ids
}

func (s *Server) handleCompletions(w http.ResponseWriter, r *http.Request, m *Model) {
	start := time.Now()
	if s.resumeHeader(w, r, openai.Completion) {
		return
	}
	body, err := s.readBody(w, r)
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	j, err := prepareCompletion(m, body)
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	s.generate(w, r, m, j, start)
}

func (s *Server) handleChat(w http.ResponseWriter, r *http.Request, m *Model) {
	start := time.Now()
	if s.resumeHeader(w, r, openai.Chat) {
		return
	}
	body, err := s.readBody(w, r)
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	j, err := prepareChat(m, body)
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	s.generate(w, r, m, j, start)
}

// prepareCompletion parses and validates a completions body. Every engine
// request it returns passes the engine's Validate; every error is an
// *openai.Error.
func prepareCompletion(m *Model, body []byte) (*job, error) {
	var req openai.CompletionRequest
	if err := openai.Decode(body, &req); err != nil {
		return nil, err
	}
	return prepareCompletionRequest(m, &req)
}

// prepareCompletionRequest validates a parsed completions request (the
// body of /v1/completions, or a gRPC request put in its terms).
func prepareCompletionRequest(m *Model, req *openai.CompletionRequest) (*job, error) {
	opts, err := req.Options()
	if err != nil {
		return nil, err
	}
	if err := checkModel(m, opts.Model); err != nil {
		return nil, err
	}
	prompts, err := req.Prompts()
	if err != nil {
		return nil, err
	}
	if len(prompts)*opts.N > openai.MaxChoices {
		return nil, openai.BadRequest("n", "%d prompts times n = %d asks for %d choices; at most %d are allowed",
			len(prompts), opts.N, len(prompts)*opts.N, openai.MaxChoices)
	}
	j := &job{kind: openai.Completion, opts: opts}
	for p, pr := range prompts {
		ids := pr.Tokens
		if ids == nil {
			ids = m.Tokenizer.Encode(pr.Text, true, true)
		}
		param := "prompt"
		if len(prompts) > 1 {
			param = fmt.Sprintf("prompt[%d]", p)
		}
		if err := validate(m, opts, ids, param); err != nil {
			return nil, err
		}
		echo := ""
		if req.Echo {
			echo = pr.Text
			if pr.Tokens != nil {
				echo = m.Tokenizer.Decode(pr.Tokens)
			}
		}
		j.promptTokens += len(ids)
		for i := range opts.N {
			j.reqs = append(j.reqs, opts.Choice(i, ids))
			j.echo = append(j.echo, echo)
		}
	}
	return j, nil
}

// prepareChat parses and validates a chat body and renders its messages
// with the model's template.
func prepareChat(m *Model, body []byte) (*job, error) {
	var req openai.ChatRequest
	if err := openai.Decode(body, &req); err != nil {
		return nil, err
	}
	return prepareChatRequest(m, &req)
}

// prepareChatRequest validates a parsed chat request.
func prepareChatRequest(m *Model, req *openai.ChatRequest) (*job, error) {
	opts, err := req.Options()
	if err != nil {
		return nil, err
	}
	if err := checkModel(m, opts.Model); err != nil {
		return nil, err
	}
	msgs := make([]chat.Message, len(req.Messages))
	for i := range req.Messages {
		role, text, err := req.Messages[i].Text(i)
		if err != nil {
			return nil, err
		}
		msgs[i] = chat.Message{Role: role, Content: text, Name: req.Messages[i].Name}
	}
	prompt, err := m.Template.Render(msgs, true)
	if err != nil {
		return nil, openai.BadRequest("messages", "the model's chat template cannot render these messages: %s",
			strings.TrimPrefix(err.Error(), "chat: rendering template: "))
	}
	ids := encodeChat(m.Tokenizer, prompt)
	if err := validate(m, opts, ids, "messages"); err != nil {
		return nil, err
	}
	j := &job{kind: openai.Chat, opts: opts, promptTokens: len(ids)}
	for i := range opts.N {
		j.reqs = append(j.reqs, opts.Choice(i, ids))
	}
	return j, nil
}

// encodeChat tokenizes a rendered chat prompt, special tokens parsed. BOS is
// added as the vocabulary asks unless the template already wrote it, so the
// prompt never starts with two (llama.cpp does the same).
func encodeChat(tok *tokenizer.Tokenizer, prompt string) []int32 {
	addSpecial := true
	if bos := tok.BOS(); bos >= 0 && tok.AddBOS() {
		if text := tok.PieceSpecial(bos); text != "" && strings.HasPrefix(prompt, text) {
			addSpecial = false
		}
	}
	return tok.Encode(prompt, addSpecial, true)
}

// validate checks a prompt with the request's settings against the engine,
// turning its error into an API error about param.
func validate(m *Model, opts openai.Options, ids []int32, param string) error {
	ctx := m.Engine.Config().Context
	if len(ids) >= ctx {
		return openai.BadRequest(param, "the prompt is %d tokens, but the model's context is %d tokens (prompt and output together); shorten the prompt",
			len(ids), ctx)
	}
	req := opts.Choice(0, ids)
	if err := m.Engine.Validate(&req); err != nil {
		e := openai.ErrorFor(err)
		if e.Param == "" {
			e.Param = param
		}
		return e
	}
	return nil
}

// newID returns a response id such as "chatcmpl-3f2a…".
func newID(kind openai.Kind) string {
	prefix := "cmpl-"
	if kind == openai.Chat {
		prefix = "chatcmpl-"
	}
	return fmt.Sprintf("%s%016x%08x", prefix, rand.Uint64(), rand.Uint32())
}

// generate answers a generation request. A stream becomes a session that
// SSE delivers; a whole response reads the engine streams itself, and a
// client that goes away cancels it.
func (s *Server) generate(w http.ResponseWriter, r *http.Request, m *Model, j *job, start time.Time) {
	if j.opts.Stream {
		ss, err := s.startSession(r.Context(), m, j, start)
		if err != nil {
			openai.WriteError(w, err)
			return
		}
		s.serveSSE(w, r, ss, 0)
		return
	}
	sts := make([]*engine.Stream, 0, len(j.reqs))
	for _, req := range j.reqs {
		st, err := m.Engine.Submit(r.Context(), req)
		if err != nil {
			// The choices already queued are dropped at the engine's next
			// step; nothing waits for them.
			for _, st := range sts {
				st.Cancel()
			}
			openai.WriteError(w, err)
			return
		}
		sts = append(sts, st)
	}
	cfg := openai.EncoderConfig{
		Kind:     j.kind,
		ID:       newID(j.kind),
		Created:  time.Now().Unix(),
		Model:    m.ID,
		Choices:  len(sts),
		Logprobs: j.opts.Request.Logprobs,
		Piece:    m.Tokenizer.Piece,
	}
	if j.opts.TokenIDs {
		cfg.TokenIDs, cfg.PromptIDs = true, j.promptIDs()
	}
	enc := openai.NewEncoder(cfg)
	g := &generation{s: s, j: j, sts: sts, enc: enc, start: start, results: make([]engine.Result, len(sts))}
	g.respond(w)
	if g.failure != nil {
		status := openai.ErrorFor(g.failure).Status
		recordStatus(w, status)
		level := slog.LevelInfo
		switch {
		case status == openai.StatusClientClosed:
			level = slog.LevelDebug // the client went away: routine
		case status >= 500:
			level = slog.LevelWarn
		}
		s.log.Log(r.Context(), level, "request ended early", "path", r.URL.Path, "choices", len(sts), "status", status, "err", g.failure)
		return
	}
	s.metrics.E2E.Observe(time.Since(start).Seconds())
}

// generation is a whole (non-streamed) response in progress.
type generation struct {
	s       *Server
	j       *job
	sts     []*engine.Stream
	enc     *openai.Encoder
	start   time.Time
	results []engine.Result
	// failure is the error that ended the request, if any (the first).
	failure  error
	canceled bool

	// Metrics state: when a token was first read, and each choice's
	// last read of tokens.
	first time.Time
	last  []time.Time
}

// fail records the request's first error and cancels every choice.
func (g *generation) fail(err error) {
	if g.failure == nil {
		g.failure = err
	}
	if !g.canceled {
		g.canceled = true
		for _, st := range g.sts {
			st.Cancel()
		}
	}
}

// observe records the timing metrics of tokens[i] tokens of each choice i
// read at now; see session.delivered, which does the same for streams.
func (g *generation) observe(now time.Time, tokens []int) {
	if g.last == nil {
		g.last = make([]time.Time, len(g.sts))
	}
	for i, k := range tokens {
		if k == 0 {
			continue
		}
		if g.first.IsZero() {
			g.first = now
			g.s.metrics.TTFT.Observe(now.Sub(g.start).Seconds())
		}
		per := 0.0
		if !g.last[i].IsZero() {
			per = now.Sub(g.last[i]).Seconds() / float64(k)
		} else {
			k-- // the choice's first token
		}
		for range k {
			g.s.metrics.InterToken.Observe(per)
		}
		g.last[i] = now
	}
}

// usage sums the request's token counts.
func (g *generation) usage() openai.Usage {
	u := openai.Usage{PromptTokens: g.j.promptTokens}
	for _, r := range g.results {
		u.CompletionTokens += r.Tokens
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	return u
}

// respond collects every choice and answers with one JSON object.
func (g *generation) respond(w http.ResponseWriter) {
	logprobs := g.j.opts.Request.Logprobs
	choices := make([]openai.Choice, len(g.sts))
	texts := make([]strings.Builder, len(g.sts))
	for i := range choices {
		if g.j.echo != nil {
			choices[i].Echo = g.j.echo[i]
			texts[i].WriteString(g.j.echo[i])
		}
	}
	tokens := make([]int, len(g.sts))
	in := newFanIn(g.sts)
	defer in.close()
	for left := len(g.sts); left > 0; {
		clear(tokens)
		in.next(func(i int, evs []engine.Event, end error) {
			for k := range evs {
				texts[i].WriteString(evs[k].Text)
				if evs[k].Token >= 0 {
					tokens[i]++
					if g.j.opts.TokenIDs {
						choices[i].TokenIDs = append(choices[i].TokenIDs, evs[k].Token)
					}
				}
			}
			if logprobs {
				choices[i].Events = append(choices[i].Events, evs...)
			}
			if end == nil {
				return
			}
			left--
			if end != io.EOF {
				g.fail(end)
				return
			}
			g.results[i] = g.sts[i].Result()
			choices[i].Finish = g.results[i].FinishReason
		})
		g.observe(time.Now(), tokens)
	}
	if g.failure != nil {
		openai.WriteError(w, g.failure)
		return
	}
	for i := range choices {
		choices[i].Text = texts[i].String()
	}
	b := g.enc.AppendResponse(make([]byte, 0, 512), choices, g.usage())
	w.Header().Set("Content-Type", "application/json")
	if _, err := w.Write(append(b, '\n')); err != nil {
		g.failure = err
	}
}

// canceledCtx is done from the start: Recv with it takes what is pending
// without blocking.
var canceledCtx = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// fanIn reads a request's streams. With one stream the handler goroutine
// reads it directly; with several, one goroutine per stream moves its
// events into a pending list and wakes the handler.
type fanIn struct {
	sts []*engine.Stream
	evs []engine.Event // one stream: Recv's buffer
	// One stream: when idle is positive, next calls onIdle each time the
	// stream has been silent that long (TGI's keepalives).
	idle   time.Duration
	onIdle func()

	// Several streams.
	notify  chan struct{} // capacity 1: "something is pending"
	mu      sync.Mutex    // guards pending, ends
	pending [][]engine.Event
	ends    []error
	taken   [][]engine.Event // the handler's side of pending, swapped in next
	endsNow []error          // the handler's copy of ends
	told    []bool           // the end was passed on
	wg      sync.WaitGroup
}

func newFanIn(sts []*engine.Stream) *fanIn {
	f := &fanIn{sts: sts}
	if len(sts) == 1 {
		return f
	}
	n := len(sts)
	f.notify = make(chan struct{}, 1)
	f.pending = make([][]engine.Event, n)
	f.ends = make([]error, n)
	f.endsNow = make([]error, n)
	f.taken = make([][]engine.Event, n)
	f.told = make([]bool, n)
	f.wg.Add(n)
	for i, st := range sts {
		go f.forward(i, st)
	}
	return f
}

// forward moves stream i's events to pending until the stream ends.
func (f *fanIn) forward(i int, st *engine.Stream) {
	defer f.wg.Done()
	var evs []engine.Event
	for {
		var err error
		evs, err = st.Recv(context.Background(), evs[:0])
		f.mu.Lock()
		f.pending[i] = append(f.pending[i], evs...)
		if err != nil {
			f.ends[i] = err
		}
		f.mu.Unlock()
		clear(evs) // drop references to texts and top logprobs
		select {
		case f.notify <- struct{}{}:
		default:
		}
		if err != nil {
			return
		}
	}
}

// next blocks until a stream has something new, then calls fn for each
// stream i with news: its events, and end, the error that ended it (io.EOF
// for a normal finish), or nil while it runs. The events are valid until
// the next call. After fn has seen every stream's end, next must not be
// called again.
func (f *fanIn) next(fn func(i int, evs []engine.Event, end error)) {
	if len(f.sts) == 1 {
		evs, err := f.recv()
		if err == nil {
			// Take what else is already there, the end included, without
			// blocking: one write instead of two.
			evs, err = f.sts[0].Recv(canceledCtx, evs)
			if errors.Is(err, context.Canceled) {
				err = nil
			}
		}
		f.evs = evs
		fn(0, evs, err)
		return
	}
	<-f.notify
	f.mu.Lock()
	for i := range f.pending {
		f.pending[i], f.taken[i] = f.taken[i][:0], f.pending[i]
	}
	copy(f.endsNow, f.ends)
	f.mu.Unlock()
	for i, evs := range f.taken {
		var end error
		if f.endsNow[i] != nil && !f.told[i] {
			end = f.endsNow[i]
			f.told[i] = true
		}
		if len(evs) > 0 || end != nil {
			fn(i, evs, end)
		}
	}
}

// recv waits for the one stream's events, calling onIdle whenever it is
// silent for idle.
func (f *fanIn) recv() ([]engine.Event, error) {
	if f.idle <= 0 {
		return f.sts[0].Recv(context.Background(), f.evs[:0])
	}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), f.idle)
		evs, err := f.sts[0].Recv(ctx, f.evs[:0])
		silent := err != nil && err == ctx.Err()
		cancel()
		if !silent {
			return evs, err
		}
		f.onIdle()
	}
}

// close waits for the per-stream goroutines, which have ended once every
// stream has.
func (f *fanIn) close() {
	f.wg.Wait()
	f.evs = nil
}
