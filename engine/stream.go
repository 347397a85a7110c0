package engine

import (
	"context"
	"errors"
	"io"
	"sync"
	"unsafe"

	"github.com/spigot-llm/spigot/engine/sample"
)

// Errors a stream can end with.
var (
	ErrQueueFull = errors.New("engine: queue full")
	ErrShutdown  = errors.New("engine: shutting down")
	ErrCanceled  = errors.New("engine: request canceled")
)

// Event is one generated token and the text it made final.
type Event struct {
	// Token is the generated token id, or -1 for text released at the end
	// of the stream (held-back bytes flushed).
	Token int32
	// Text is the text this token made final: whole UTF-8 characters,
	// never part of a stop string. Often empty while text is held back.
	Text string
	// Logprob is the chosen token's log-probability (see
	// sample.Sampler.Logprob), set when Request.Logprobs is true.
	Logprob float32
	// Top holds the Request.TopLogprobs most likely tokens at this step.
	Top []sample.TokenLogprob
	// Finish is set on the stream's last event when the stream ends
	// normally in the same step: the finish reason (FinishStop or
	// FinishLength), so a transport can put it in the chunk that carries
	// the last text. A stream that ends on an end-of-generation token after
	// all its text was sent has no such event; Result has the reason.
	Finish string
}

// Stream is one request's output. The engine appends events and never
// waits for the reader; the reader takes them with Recv.
type Stream struct {
	id     uint64
	notify chan struct{} // capacity 1: "there is something new"
	cancel context.CancelFunc

	mu     sync.Mutex // guards events, done, err, result
	events []Event
	done   bool
	err    error
	result Result
}

func newStream(id uint64) *Stream {
	return &Stream{id: id, notify: make(chan struct{}, 1)}
}

// ID is the engine's number for the request.
func (s *Stream) ID() uint64 { return s.id }

func (s *Stream) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// push appends an event; called by the engine only.
func (s *Stream) push(ev Event) {
	s.mu.Lock()
	s.events = append(s.events, ev)
	s.mu.Unlock()
	s.wake()
}

// finish ends the stream; called by the engine only, exactly once.
func (s *Stream) finish(res Result, err error) {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return
	}
	s.done, s.result, s.err = true, res, err
	s.mu.Unlock()
	s.cancel() // release the request's context
	s.wake()
}

// Recv appends every pending event to dst and returns it. It blocks until
// there is at least one event or the stream has ended. When the stream has
// ended and all events were taken, it returns io.EOF for a normal finish
// (see Result) or the error that ended the stream. A done ctx returns
// ctx.Err() without ending the stream; pending events and the end are
// reported before ctx is looked at, so Recv with an already-cancelled ctx
// is a non-blocking poll.
func (s *Stream) Recv(ctx context.Context, dst []Event) ([]Event, error) {
	for {
		s.mu.Lock()
		if len(s.events) > 0 {
			dst = append(dst, s.events...)
			clear(s.events)
			s.events = s.events[:0]
			s.mu.Unlock()
			return dst, nil
		}
		if s.done {
			err := s.err
			s.mu.Unlock()
			if err == nil {
				err = io.EOF
			}
			return dst, err
		}
		s.mu.Unlock()
		select {
		case <-s.notify:
		case <-ctx.Done():
			return dst, ctx.Err()
		}
	}
}

// Result is the summary of a finished stream: valid once Recv has
// returned io.EOF (or another final error).
func (s *Stream) Result() Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.result
}

// Cancel stops the request: the engine drops it at the next step boundary
// and frees its cache blocks. The stream ends with ErrCanceled.
func (s *Stream) Cancel() { s.cancel() }

// arenaChunk is the size of a textArena's chunks: about a thousand tokens
// of text per allocation.
const arenaChunk = 4096

// A textArena makes the strings of a sequence's events without an
// allocation per token: it appends each text to a chunk and returns a
// string that points into it. Bytes in a chunk are never written again
// once handed out, so the strings stay valid (the chunk lives as long as
// any of them); a full chunk is replaced by a new one.
type textArena struct{ buf []byte }

func (a *textArena) str(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if cap(a.buf)-len(a.buf) < len(b) {
		a.buf = make([]byte, 0, max(arenaChunk, len(b)))
	}
	off := len(a.buf)
	a.buf = append(a.buf, b...)
	return unsafe.String(&a.buf[off], len(b))
}
