package engine

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spigot-llm/spigot/engine/sample"
	"github.com/spigot-llm/spigot/engine/stop"
	"github.com/spigot-llm/spigot/kvcache"
	"github.com/spigot-llm/spigot/model"
	"github.com/spigot-llm/spigot/tokenizer"
)

// Config configures an Engine.
type Config struct {
	Model     model.Model
	Tokenizer *tokenizer.Tokenizer
	// Parallel is the most sequences decoded together (default 4).
	Parallel int
	// Context is the most positions one sequence may use, prompt and
	// output together (default and maximum: the model's context).
	Context int
	// BlockSize is the KV cache block size in positions (default 16).
	BlockSize int
	// MaxQueue is the most requests waiting to start; Submit returns
	// ErrQueueFull beyond it (default 64).
	MaxQueue int
	// StepTokens is the most tokens one forward step takes: every running
	// sequence's next token first, then prompt chunks up to the budget, so
	// a long prompt is prefilled over several steps while other streams
	// keep flowing (default 512).
	StepTokens int
	// StepTarget bounds how long a step that prefills may take, and so the
	// inter-token latency of running streams while prompts are read: the
	// engine measures its speed and shrinks prompt chunks to fit (default
	// 85ms; negative turns the adaptation off, leaving StepTokens).
	StepTarget time.Duration
}

// Stats is a snapshot of the engine's state and counters.
type Stats struct {
	Queued, Running     int
	BlocksInUse, Blocks int
	PrefixQueryTokens   uint64 // prompt tokens looked up in the prefix cache
	PrefixHitTokens     uint64 // of which found cached
	PromptTokens        uint64 // prompt tokens computed (cache hits excluded)
	GeneratedTokens     uint64
	Steps               uint64
	FinishedStop        uint64
	FinishedLength      uint64
	FinishedCanceled    uint64
	FinishedError       uint64
}

// Engine runs many requests at once on one model: each step is one batched
// forward pass over every running sequence (continuous batching). One
// goroutine owns the model and the running sequences; Submit and Stream
// methods are safe for concurrent use.
type Engine struct {
	cfg   Config
	cache *kvcache.Cache
	vocab int

	mu       sync.Mutex // guards queue, aside, closing, nextID
	queue    waitQueue
	aside    int // queued requests admit holds outside the heap for a round
	closing  bool
	nextID   uint64
	wake     chan struct{}
	stopOnce sync.Once
	stopLoop chan struct{}
	loopDone chan struct{}

	running int32 // atomic mirror of len(e.seqs) for Stats
	stats   struct {
		prefixQuery, prefixHit, prompt, generated, steps atomic.Uint64
		stop, length, canceled, failed                   atomic.Uint64
	}

	// Owned by the loop goroutine.
	seqs   []*seqState
	batch  model.Batch
	logits []float32
	// perToken is a moving average of step time per batch token, which
	// sizes prompt chunks to StepTarget.
	perToken time.Duration
}

// seqState is one running sequence.
type seqState struct {
	req      Request
	stream   *Stream
	ctx      context.Context
	kv       *kvcache.Seq
	next     int // prompt tokens already in the cache
	sampler  *sample.Sampler
	dec      *tokenizer.Decoder
	stops    *stop.Matcher
	text     []byte
	arena    textArena
	last     int32 // token to feed in the next step
	row      int   // logits row in this step, -1 when none
	res      Result
	start    time.Time
	enqueued time.Time
}

// New starts an engine. Close or Shutdown stops it.
func New(cfg Config) (*Engine, error) {
	e, err := newEngine(cfg)
	if err != nil {
		return nil, err
	}
	go e.loop()
	return e, nil
}

// newEngine is New without starting the loop (tests drive steps directly).
func newEngine(cfg Config) (*Engine, error) {
	if cfg.Model == nil || cfg.Tokenizer == nil {
		return nil, errors.New("engine: Config needs a Model and a Tokenizer")
	}
	mc := cfg.Model.Config()
	if cfg.Parallel <= 0 {
		cfg.Parallel = 4
	}
	if cfg.Context <= 0 || cfg.Context > mc.Context {
		cfg.Context = mc.Context
	}
	if cfg.BlockSize <= 0 {
		cfg.BlockSize = 16
	}
	if cfg.MaxQueue <= 0 {
		cfg.MaxQueue = 64
	}
	if cfg.StepTokens <= 0 {
		cfg.StepTokens = 512
	}
	if cfg.StepTarget == 0 {
		cfg.StepTarget = 85 * time.Millisecond
	}
	cfg.StepTokens = max(cfg.StepTokens, cfg.Parallel)
	// Every running sequence can always grow to the full context, so a
	// step never fails for lack of blocks; blocks freed by finished
	// sequences stay in the prefix cache until they are needed.
	perSeq := (cfg.Context + cfg.BlockSize - 1) / cfg.BlockSize
	cache, err := cfg.Model.NewCache(cfg.Parallel*perSeq, cfg.BlockSize)
	if err != nil {
		return nil, err
	}
	e := &Engine{
		cfg:      cfg,
		cache:    cache,
		vocab:    mc.Vocab,
		wake:     make(chan struct{}, 1),
		stopLoop: make(chan struct{}),
		loopDone: make(chan struct{}),
		logits:   make([]float32, cfg.Parallel*mc.Vocab),
	}
	return e, nil
}

// Config returns the engine's configuration with defaults filled in.
func (e *Engine) Config() Config { return e.cfg }

// Cache returns the KV cache (for inspection in tests and metrics).
func (e *Engine) Cache() *kvcache.Cache { return e.cache }

// Stats returns a snapshot of the engine's state and counters.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	queued := len(e.queue) + e.aside
	e.mu.Unlock()
	return Stats{
		Queued:            queued,
		Running:           int(atomic.LoadInt32(&e.running)),
		BlocksInUse:       e.cache.BlocksInUse(),
		Blocks:            e.cache.Config().Blocks,
		PrefixQueryTokens: e.stats.prefixQuery.Load(),
		PrefixHitTokens:   e.stats.prefixHit.Load(),
		PromptTokens:      e.stats.prompt.Load(),
		GeneratedTokens:   e.stats.generated.Load(),
		Steps:             e.stats.steps.Load(),
		FinishedStop:      e.stats.stop.Load(),
		FinishedLength:    e.stats.length.Load(),
		FinishedCanceled:  e.stats.canceled.Load(),
		FinishedError:     e.stats.failed.Load(),
	}
}

// Validate checks a request against the engine's limits without queueing
// it. The error names the problem; it wraps ErrInvalidRequest or
// sample.ErrInvalidParams.
func (e *Engine) Validate(req *Request) error {
	if len(req.Prompt) == 0 {
		return fmt.Errorf("%w: the prompt is empty", ErrInvalidRequest)
	}
	if len(req.Prompt) >= e.cfg.Context {
		return fmt.Errorf("%w: the prompt has %d tokens, but the context is %d tokens (prompt and output together)", ErrInvalidRequest, len(req.Prompt), e.cfg.Context)
	}
	for _, id := range req.Prompt {
		if id < 0 || int(id) >= e.vocab {
			return fmt.Errorf("%w: token id %d is outside the vocabulary [0, %d)", ErrInvalidRequest, id, e.vocab)
		}
	}
	if req.MaxTokens < 0 {
		return fmt.Errorf("%w: max_tokens %d is negative", ErrInvalidRequest, req.MaxTokens)
	}
	if req.TopLogprobs < 0 || req.TopLogprobs > 20 {
		return fmt.Errorf("%w: top_logprobs %d is outside [0, 20]", ErrInvalidRequest, req.TopLogprobs)
	}
	return req.Sample.Validate(e.vocab)
}

// ErrInvalidRequest is wrapped by Validate's errors about the request.
var ErrInvalidRequest = errors.New("invalid request")

// Submit validates and queues a request. The stream ends (Recv returns a
// final error) when generation finishes, fails, or ctx is done — a client
// that goes away cancels its sequence and frees its cache blocks before
// the next step. Submit returns ErrQueueFull when MaxQueue requests are
// already waiting, and ErrShutdown once Shutdown or Close was called.
func (e *Engine) Submit(ctx context.Context, req Request) (*Stream, error) {
	if err := e.Validate(&req); err != nil {
		return nil, err
	}
	req.Prompt = append([]int32(nil), req.Prompt...)
	e.mu.Lock()
	if e.closing {
		e.mu.Unlock()
		return nil, ErrShutdown
	}
	if len(e.queue)+e.aside >= e.cfg.MaxQueue {
		e.mu.Unlock()
		return nil, ErrQueueFull
	}
	e.nextID++
	st := newStream(e.nextID)
	sctx, cancel := context.WithCancel(ctx)
	st.cancel = cancel
	heap.Push(&e.queue, &queued{req: req, stream: st, ctx: sctx, at: time.Now(), id: e.nextID})
	e.mu.Unlock()
	// Wake the loop when the request is cancelled, so it is dropped at once
	// even when nothing else is happening.
	context.AfterFunc(sctx, e.poke)
	e.poke()
	return st, nil
}

func (e *Engine) poke() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Shutdown stops accepting requests and lets queued and running ones
// finish until ctx is done; then it ends the rest with ErrShutdown. It
// returns when the engine has stopped.
func (e *Engine) Shutdown(ctx context.Context) error {
	e.mu.Lock()
	e.closing = true
	e.mu.Unlock()
	e.poke()
	select {
	case <-e.loopDone:
		return nil
	case <-ctx.Done():
	}
	e.stopOnce.Do(func() { close(e.stopLoop) })
	<-e.loopDone
	return ctx.Err()
}

// Close ends every request with ErrShutdown and stops the engine.
func (e *Engine) Close() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e.Shutdown(ctx)
}

// Generate submits req and calls emit for each event as it arrives, until
// the stream ends. It returns the result, or the error that ended the
// stream (an error from emit cancels the request and is returned).
func (e *Engine) Generate(ctx context.Context, req Request, emit func(Event) error) (Result, error) {
	st, err := e.Submit(ctx, req)
	if err != nil {
		return Result{}, err
	}
	var evs []Event
	for {
		evs, err = st.Recv(context.Background(), evs[:0])
		for _, ev := range evs {
			if eerr := emit(ev); eerr != nil {
				st.Cancel()
				for err == nil { // drain to the end so blocks are freed
					evs, err = st.Recv(context.Background(), evs[:0])
				}
				return st.Result(), eerr
			}
		}
		if err == io.EOF {
			return st.Result(), nil
		}
		if err != nil {
			return st.Result(), err
		}
	}
}
