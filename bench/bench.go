// Package bench is a load generator for OpenAI-compatible streaming
// servers: Spigot, llama.cpp's llama-server, vLLM and others that speak
// POST /v1/completions or /v1/chat/completions with "stream": true.
//
// [Run] sends a fixed number of streaming requests, a fixed number at a
// time, reads each server-sent event stream with its own parser
// ([SSEReader]) and records when every chunk with content arrives.
// [Result] holds the figures; [Result.WriteText] prints them as a table.
//
// # Measurements
//
// Every request asks for usage (stream_options include_usage) and, with
// [Config.IgnoreEOS], for "ignore_eos" so that each stream generates
// max_tokens tokens. Latencies come from completed requests only (those
// that ended with "data: [DONE]"):
//
//   - TTFT: from sending the request to the first chunk with content
//     (a chat stream's first chunk, which only names the role, does not
//     count).
//   - Chunk gap: the time between successive content chunks of a stream.
//   - Inter-token latency (ITL): a chunk gap divided by the number of
//     tokens in the later chunk, counted once per token, so that a chunk
//     of three tokens 30 ms after the previous one counts as three
//     10 ms samples. A chunk can carry several tokens when a server
//     coalesces them or releases held-back text. Tokens per chunk are
//     exact when the server puts cumulative usage on every chunk (vLLM's
//     continuous_usage_stats); with usage only at the end of the stream,
//     the stream's completion_tokens are spread evenly over its chunks;
//     without usage, each chunk counts as one token (and
//     [Result.UsageMissing] says how many streams that was).
//   - End-to-end latency: from sending the request to [DONE].
//   - Stream tokens/s: a stream's tokens after its first chunk divided by
//     the time from its first content chunk to its last.
//   - Output tokens/s: all completed streams' completion tokens divided
//     by the run's wall time, from the first request sent to the last
//     finished; requests/s likewise.
//
// Percentiles interpolate linearly between the nearest ranks (see
// [Dist]). Failed requests are counted by kind (KindRateLimited for
// HTTP 429 separately from the others) with the first few messages.
//
// # Prompts
//
// A prompt of N tokens is generated deterministically: sentences of 6 to
// 15 words drawn with a fixed seed from a list of common English words
// that are one token each, with their leading space, in the Llama,
// Mistral, Qwen and GPT vocabularies; a word or a period is estimated as
// one token. If the server has POST /tokenize (Spigot and llama.cpp's
// server take {"content": …}, vLLM {"prompt": …}; both are sent), the
// number of words is found by bisection so that the prompt is exactly N
// tokens when the tokenizer allows it, counted without BOS or chat
// template. Unless [Config.SamePrompt], each prompt begins with its
// request's number, "[000042] ", so that no request shares a prefix
// that a server could cache from another; the number is fixed-width, so
// every prompt has the same length, and N includes it.
package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// APIs a run can use.
const (
	APIChat        = "chat"        // POST /v1/chat/completions, the prompt as one user message
	APICompletions = "completions" // POST /v1/completions
)

// Defaults for zero Config fields.
const (
	DefaultTimeout      = 5 * time.Minute
	DefaultPromptTokens = 128
	DefaultMaxTokens    = 128
)

// maxErrorSamples is how many error messages a Result keeps.
const maxErrorSamples = 5

// Error kinds, the keys of Result.ErrorKinds.
const (
	KindRateLimited = "http_429"    // the server answered 429 Too Many Requests
	KindHTTP        = "http_"       // prefix: the server answered another status, e.g. "http_500"
	KindConnect     = "connect"     // no connection to the server
	KindTransport   = "transport"   // the connection failed during the request
	KindTimeout     = "timeout"     // the request took longer than Config.Timeout
	KindMalformed   = "malformed"   // an event whose data is not a JSON chunk, or an oversized line
	KindNoDone      = "no_done"     // the stream ended without "data: [DONE]"
	KindErrorEvent  = "error_event" // the server sent an error in the stream
	kindCancelled   = "cancelled"   // the run was stopped; not an error
)

// Config describes a run. URL, Concurrency and Requests are required;
// other zero fields take the defaults their comments give.
type Config struct {
	// URL is the server's base URL, such as "http://127.0.0.1:8080"; a
	// trailing "/v1" is accepted.
	URL string
	// API is APIChat (default) or APICompletions.
	API string
	// Model is sent as "model". If empty, the first model that
	// GET /v1/models lists is used, or none is sent if that fails.
	Model string
	// APIKey, if set, is sent as "Authorization: Bearer APIKey".
	APIKey string
	// Concurrency is the number of requests in flight at a time.
	Concurrency int
	// Requests is the number of requests to send.
	Requests int
	// Prompt, if set, is the prompt text. Otherwise a prompt of
	// PromptTokens tokens (default DefaultPromptTokens) is generated, as
	// the package documentation describes.
	Prompt       string
	PromptTokens int
	// SamePrompt sends the identical prompt in every request, rather
	// than putting the request's number first.
	SamePrompt bool
	// MaxTokens is sent as "max_tokens" (default DefaultMaxTokens).
	MaxTokens int
	// Temperature is sent as "temperature".
	Temperature float64
	// IgnoreEOS sends "ignore_eos": true (llama.cpp, vLLM and Spigot
	// accept it) so that each stream generates MaxTokens tokens.
	IgnoreEOS bool
	// Timeout bounds each request (default DefaultTimeout).
	Timeout time.Duration
	// Duration, if positive, bounds the whole run: requests in flight
	// when it ends are cancelled and the result is partial.
	Duration time.Duration
	// HTTPClient sends the requests. If nil, a client is made whose
	// transport keeps Concurrency connections open and does not ask
	// for compression.
	HTTPClient *http.Client
	// Progress, if not nil, receives a line redrawn with \r once a
	// second: requests done and failed.
	Progress io.Writer
}

// Result is a run's figures, as the package documentation defines them.
// Latencies are in milliseconds and come from completed requests only.
type Result struct {
	URL         string `json:"url"`
	API         string `json:"api"`
	Model       string `json:"model,omitempty"`
	Concurrency int    `json:"concurrency"`
	Requests    int    `json:"requests"` // requests asked for
	MaxTokens   int    `json:"max_tokens"`

	// PromptTokens is each prompt's length in tokens: measured with
	// /tokenize if PromptCalibrated, else estimated (0 if unknown).
	// ServerPromptTokens, from the servers' usage, includes BOS and any
	// chat template.
	PromptTokens       int     `json:"prompt_tokens"`
	PromptCalibrated   bool    `json:"prompt_calibrated"`
	PromptNote         string  `json:"prompt_note,omitempty"`
	ServerPromptTokens float64 `json:"server_prompt_tokens_mean"`

	Sent        int            `json:"sent"`         // requests sent
	Completed   int            `json:"completed"`    // streams that ended with [DONE]
	Errors      int            `json:"errors"`       // failures other than 429
	RateLimited int            `json:"rate_limited"` // 429 answers
	Cancelled   int            `json:"cancelled"`    // in flight when the run stopped
	ErrorKinds  map[string]int `json:"error_kinds,omitempty"`
	// ErrorSamples holds the first few error messages, by request number.
	ErrorSamples []string `json:"error_samples,omitempty"`
	// Stopped says why the run ended early, if it did.
	Stopped string `json:"stopped,omitempty"`

	WallSeconds float64 `json:"wall_s"` // from the first request sent to the last finished

	TTFT     Dist `json:"ttft_ms"`
	ITL      Dist `json:"itl_ms"`       // per token
	ChunkGap Dist `json:"chunk_gap_ms"` // per content chunk
	E2E      Dist `json:"e2e_ms"`
	// StreamTokensPerSecond is each stream's generation rate after its
	// first chunk.
	StreamTokensPerSecond Dist `json:"stream_tokens_per_s"`
	// OutputTokensPerSecond is the completed streams' completion tokens
	// divided by the wall time.
	OutputTokensPerSecond float64 `json:"output_tokens_per_s"`
	RequestsPerSecond     float64 `json:"requests_per_s"` // completed requests / wall time

	CompletionTokens int     `json:"completion_tokens"` // total, completed streams
	TokensPerChunk   float64 `json:"tokens_per_chunk"`  // mean
	// UsageMissing counts completed streams that reported no usage:
	// each of their content chunks was counted as one token.
	UsageMissing int `json:"usage_missing"`
}

// errDuration ends a run that reached Config.Duration.
var errDuration = errors.New("duration limit reached")

// Run sends cfg.Requests streaming requests, cfg.Concurrency at a time,
// and returns their figures. If ctx is cancelled, or cfg.Duration
// passes, requests in flight are cancelled and Run returns the partial
// figures, with Result.Stopped saying why. Run returns an error only for
// a bad Config; failed requests are counted in the Result.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	hc := cfg.HTTPClient
	if hc == nil {
		tr := &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost: cfg.Concurrency,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true, // a compressing proxy would hold chunks back
			ForceAttemptHTTP2:   true,
		}
		defer tr.CloseIdleConnections()
		hc = &http.Client{Transport: tr}
	}
	base := strings.TrimSuffix(strings.TrimRight(cfg.URL, "/"), "/v1")
	b := &runner{cfg: cfg, hc: hc, base: base}

	if b.cfg.Model == "" {
		b.cfg.Model = firstModel(ctx, hc, base, cfg.APIKey)
	}
	prompt := b.prompt(ctx)
	res := &Result{
		URL: cfg.URL, API: cfg.API, Model: b.cfg.Model, Concurrency: cfg.Concurrency, Requests: cfg.Requests,
		MaxTokens: cfg.MaxTokens, PromptTokens: prompt.Tokens, PromptCalibrated: prompt.Calibrated, PromptNote: prompt.Note,
	}
	b.prompt1 = prompt.Text

	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if cfg.Duration > 0 {
		t := time.AfterFunc(cfg.Duration, func() { cancel(errDuration) })
		defer t.Stop()
	}
	records := make([]record, cfg.Requests)
	jobs := make(chan int)
	go func() {
		defer close(jobs)
		for i := range cfg.Requests {
			select {
			case jobs <- i:
			case <-runCtx.Done():
				return
			}
		}
	}()
	start := time.Now()
	stopProgress := b.progress(start)
	var wg sync.WaitGroup
	for range min(cfg.Concurrency, cfg.Requests) {
		wg.Go(func() {
			for i := range jobs {
				if runCtx.Err() == nil { // the feeder may hand out one more job as the run stops
					b.do(runCtx, i, &records[i])
				}
			}
		})
	}
	wg.Wait()
	wall := time.Since(start)
	stopProgress()
	if runCtx.Err() != nil {
		res.Stopped = context.Cause(runCtx).Error()
	}
	res.add(records, wall)
	return res, nil
}

// fill checks c and sets defaults.
func (c *Config) fill() error {
	switch {
	case c.URL == "":
		return errors.New("bench: no URL")
	case c.Concurrency < 1:
		return fmt.Errorf("bench: concurrency %d: want at least 1", c.Concurrency)
	case c.Requests < 1:
		return fmt.Errorf("bench: requests %d: want at least 1", c.Requests)
	case c.PromptTokens < 0 || c.MaxTokens < 0:
		return errors.New("bench: negative token count")
	}
	if !strings.HasPrefix(c.URL, "http://") && !strings.HasPrefix(c.URL, "https://") {
		return fmt.Errorf("bench: URL %q: want http:// or https://", c.URL)
	}
	switch c.API {
	case "":
		c.API = APIChat
	case APIChat, APICompletions:
	default:
		return fmt.Errorf("bench: API %q: want %q or %q", c.API, APIChat, APICompletions)
	}
	if c.PromptTokens == 0 {
		c.PromptTokens = DefaultPromptTokens
	}
	if c.MaxTokens == 0 {
		c.MaxTokens = DefaultMaxTokens
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	return nil
}

// runner sends a run's requests.
type runner struct {
	cfg     Config
	hc      *http.Client
	base    string
	prompt1 string // the prompt after the unique prefix
	done    atomic.Int64
	failed  atomic.Int64
}

// prompt returns the run's prompt text, measured or calibrated with the
// server's tokenizer if it has one.
func (b *runner) prompt(ctx context.Context) promptSpec {
	prefix := ""
	if !b.cfg.SamePrompt {
		prefix = uniquePrefix(0, b.cfg.Requests)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tok := serverTokenizer(b.hc, b.base, b.cfg.Model, b.cfg.APIKey)
	if b.cfg.Prompt == "" {
		return makePrompt(ctx, b.cfg.PromptTokens, prefix, tok)
	}
	p := promptSpec{Text: b.cfg.Prompt}
	if n, err := tok(ctx, prefix+b.cfg.Prompt); err == nil {
		p.Tokens, p.Calibrated = n, true
	} else {
		p.Tokens, p.Note = estimateTokens(prefix+b.cfg.Prompt), fmt.Sprintf("estimated: %v", err)
	}
	return p
}

// body returns request i's JSON body.
func (b *runner) body(i int) []byte {
	prompt := b.prompt1
	if !b.cfg.SamePrompt {
		prompt = uniquePrefix(i, b.cfg.Requests) + prompt
	}
	req := map[string]any{
		"stream":         true,
		"stream_options": map[string]any{"include_usage": true},
		"max_tokens":     b.cfg.MaxTokens,
		"temperature":    b.cfg.Temperature,
	}
	if b.cfg.Model != "" {
		req["model"] = b.cfg.Model
	}
	if b.cfg.IgnoreEOS {
		req["ignore_eos"] = true
	}
	if b.cfg.API == APIChat {
		req["messages"] = []map[string]string{{"role": "user", "content": prompt}}
	} else {
		req["prompt"] = prompt
	}
	body, _ := json.Marshal(req)
	return body
}

func (b *runner) endpoint() string {
	if b.cfg.API == APIChat {
		return b.base + "/v1/chat/completions"
	}
	return b.base + "/v1/completions"
}

// chunk is the part of a streamed chunk the bench reads, for both APIs,
// and of the error objects servers send in a stream.
type chunk struct {
	Choices []struct {
		Text  string `json:"text"`
		Delta struct {
			Content          string `json:"content"`
			ReasoningContent string `json:"reasoning_content"` // llama.cpp, vLLM reasoning models
			Reasoning        string `json:"reasoning"`
		} `json:"delta"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
	Error   json.RawMessage `json:"error"`
	Object  string          `json:"object"` // "error" in vLLM's older error chunks
	Message string          `json:"message"`
}

func (c *chunk) hasContent() bool {
	for _, ch := range c.Choices {
		if ch.Text != "" || ch.Delta.Content != "" || ch.Delta.ReasoningContent != "" || ch.Delta.Reasoning != "" {
			return true
		}
	}
	return false
}

// do sends request i and records what it saw in r.
func (b *runner) do(ctx context.Context, i int, r *record) {
	defer func() {
		b.done.Add(1)
		if r.kind != "" && r.kind != kindCancelled {
			b.failed.Add(1)
		}
	}()
	fail := func(kind, format string, args ...any) {
		r.end = time.Since(r.start)
		r.kind = kind
		r.err = fmt.Sprintf("request %d: ", i) + fmt.Sprintf(format, args...)
		if ctx.Err() != nil && kind != KindRateLimited && !strings.HasPrefix(kind, KindHTTP) {
			r.kind = kindCancelled
		}
	}
	body := b.body(i)
	reqCtx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(reqCtx, http.MethodPost, b.endpoint(), bytes.NewReader(body))
	if err != nil {
		r.kind, r.err = KindTransport, err.Error()
		return
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	// Servers close idle keep-alive connections on their own schedule
	// (llama-server after 5 s), and a POST sent on one that is closing fails
	// with EOF before the server saw it. A nil Idempotency-Key entry (not
	// sent on the wire) lets net/http retry such a request on a fresh
	// connection, which is safe: the server never received it.
	req.Header["Idempotency-Key"] = nil
	if b.cfg.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+b.cfg.APIKey)
	}
	r.sent = true
	r.start = time.Now()
	resp, err := b.hc.Do(req)
	if err != nil {
		fail(transportKind(reqCtx, err), "%v", err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		kind := fmt.Sprintf("%s%d", KindHTTP, resp.StatusCode)
		fail(kind, "HTTP %s%s", resp.Status, errorDetail(resp.Body))
		return
	}
	perChunk := true
	lastCompletion := 0
	sse := NewSSEReader(resp.Body)
	for {
		ev, err := sse.Next()
		now := time.Since(r.start)
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			what := "the stream ended without [DONE]"
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
				what += fmt.Sprintf(" (Content-Type %q: the server did not stream?)", ct)
			}
			fail(KindNoDone, "%s", what)
			return
		case errors.Is(err, ErrSSETooLong):
			fail(KindMalformed, "%v", err)
			return
		case err != nil:
			fail(transportKind(reqCtx, err), "reading the stream: %v", err)
			return
		}
		if ev.Type == "error" {
			fail(KindErrorEvent, "error event: %s", truncate(ev.Data))
			return
		}
		if ev.Data == "[DONE]" {
			r.end = now
			if !perChunk || len(r.chunkTokens) != len(r.chunks) {
				r.chunkTokens = nil
			}
			return
		}
		var c chunk
		if err := json.Unmarshal([]byte(ev.Data), &c); err != nil {
			fail(KindMalformed, "bad chunk %s: %v", truncate(ev.Data), err)
			return
		}
		if (len(c.Error) > 0 && string(c.Error) != "null") || c.Object == "error" {
			fail(KindErrorEvent, "error in stream: %s", truncate(ev.Data))
			return
		}
		content := c.hasContent()
		if content {
			r.chunks = append(r.chunks, now)
		}
		if c.Usage != nil {
			r.usage = true
			r.promptTokens = c.Usage.PromptTokens
			if content && perChunk {
				r.chunkTokens = append(r.chunkTokens, c.Usage.CompletionTokens-lastCompletion)
			}
			lastCompletion = c.Usage.CompletionTokens
			r.completionTokens = c.Usage.CompletionTokens
		} else if content {
			perChunk = false
		}
	}
}

// transportKind classifies a failed request or read.
func transportKind(reqCtx context.Context, err error) string {
	if errors.Is(reqCtx.Err(), context.DeadlineExceeded) {
		return KindTimeout
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return KindConnect
	}
	return KindTransport
}

// errorDetail reads an error response's message: OpenAI's
// {"error":{"message":…}}, or the start of the body.
func errorDetail(body io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(body, 4096))
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
		Message string `json:"message"`
	}
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &e) == nil {
		if e.Error.Message != "" {
			msg = e.Error.Message
		} else if e.Message != "" {
			msg = e.Message
		}
	}
	if msg == "" {
		return ""
	}
	return ": " + truncate(msg)
}

// truncate shortens s for an error message.
func truncate(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// firstModel returns the first model GET /v1/models lists, or "".
func firstModel(ctx context.Context, hc *http.Client, base, apiKey string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/models", nil)
	if err != nil {
		return ""
	}
	if apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+apiKey)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var list struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&list) != nil || len(list.Data) == 0 {
		return ""
	}
	return list.Data[0].ID
}

// progress writes "done/total" to cfg.Progress once a second until the
// returned function is called.
func (b *runner) progress(start time.Time) (stop func()) {
	w := b.cfg.Progress
	if w == nil {
		return func() {}
	}
	quit := make(chan struct{})
	var wg sync.WaitGroup
	line := func() {
		fmt.Fprintf(w, "\r%d/%d requests done, %d failed, %.0fs", b.done.Load(), b.cfg.Requests, b.failed.Load(), time.Since(start).Seconds())
	}
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				line()
			case <-quit:
				line()
				fmt.Fprintln(w)
				return
			}
		}
	})
	return func() { close(quit); wg.Wait() }
}

// add computes the figures from the records of a run that took wall.
func (res *Result) add(records []record, wall time.Duration) {
	var l latencies
	for i := range records {
		r := &records[i]
		if !r.sent {
			continue
		}
		res.Sent++
		switch {
		case r.kind == "":
			res.Completed++
			l.add(r)
			continue
		case r.kind == kindCancelled:
			res.Cancelled++
			continue
		case r.kind == KindRateLimited:
			res.RateLimited++
		default:
			res.Errors++
		}
		if res.ErrorKinds == nil {
			res.ErrorKinds = map[string]int{}
		}
		res.ErrorKinds[r.kind]++
		if len(res.ErrorSamples) < maxErrorSamples {
			res.ErrorSamples = append(res.ErrorSamples, r.err)
		}
	}
	res.WallSeconds = wall.Seconds()
	res.TTFT = summarize(l.ttft)
	res.ITL = summarize(l.itl)
	res.ChunkGap = summarize(l.gaps)
	res.E2E = summarize(l.e2e)
	res.StreamTokensPerSecond = summarize(l.streamRates)
	res.CompletionTokens = l.completionTokens
	res.UsageMissing = l.usageMissing
	if res.Completed > 0 {
		res.ServerPromptTokens = float64(l.promptTokens) / float64(res.Completed)
	}
	if l.chunks > 0 {
		res.TokensPerChunk = float64(l.completionTokens) / float64(l.chunks)
	}
	if s := wall.Seconds(); s > 0 {
		res.OutputTokensPerSecond = float64(l.completionTokens) / s
		res.RequestsPerSecond = float64(res.Completed) / s
	}
}
