// Package stream is the per-request event log that sits between the engine
// and the transports. A request's output (its choices' tokens, their ends,
// and the request's end) is appended to a [Log] as numbered [Entry] values,
// kept whole while the request may still be read, and read by transports
// (SSE, WebSocket, …) from any position: a client that reconnects names the
// last entry it got and reads on from there, with nothing repeated and
// nothing lost. [Log.Deliver] writes a log to a transport's [Sink], at full
// speed or paced to a rate of tokens per second and coalesced into frames
// at least an interval apart, with keepalives while nothing else is sent.
//
// The log never waits for a reader: a slow or absent reader only lets
// entries accumulate, bounded by the request's token limit. Entries are
// transport-neutral (engine events and results); each transport encodes
// them in its own format.
package stream

import (
	"fmt"
	"slices"
	"sync"
	"unsafe"

	"github.com/spigot-llm/spigot/engine"
	"github.com/spigot-llm/spigot/engine/sample"
)

// Kind says what an Entry records.
type Kind uint8

// The kinds of entries, in the order a request's log holds them: a Start
// per choice, then Token entries as the choices generate (interleaved), an
// End per choice that finished, then Final and Done. A request that fails
// has no End entries after the failure: its Final carries the error.
const (
	Start Kind = iota + 1 // choice Choice begins (a chat stream's role chunk)
	Token                 // Event is a generated token of choice Choice, or text without a token (Token -1: echoed prompt text, text flushed at the end)
	End                   // choice Choice finished normally: Result
	Final                 // every choice has ended: Err is the request's error, else Results holds every choice's result
	Done                  // the last entry: nothing follows
)

func (k Kind) String() string {
	switch k {
	case Start:
		return "start"
	case Token:
		return "token"
	case End:
		return "end"
	case Final:
		return "final"
	case Done:
		return "done"
	}
	return fmt.Sprintf("Kind(%d)", k)
}

// Entry is one numbered item of a request's output.
type Entry struct {
	// Seq numbers the entries of a log from 1, without gaps. Transports
	// send it with what they write for the entry (an SSE id, a WebSocket
	// message's seq) so that a client can resume after it.
	Seq    uint64
	Kind   Kind
	Choice int
	// Visible is set on Token entries that every transport shows: the
	// text is not empty, or the request asked for logprobs and this is a
	// token. An invisible entry carries no finish reason (the End entry
	// brings it) and is sent along with the next visible one.
	Visible bool
	// FinishSent is set on End entries whose finish reason rode on the
	// choice's last visible Token entry (Event.Finish), as OpenAI streams
	// send it with the last text; transports that send a separate finish
	// skip it then.
	FinishSent bool
	Event      engine.Event    // Token
	Result     engine.Result   // End
	Results    []engine.Result // Final, when Err is nil: per choice
	Err        error           // Final: the error that ended the request
}

// Paced reports whether the entry counts against a delivery rate: a
// visible generated token.
func (e *Entry) Paced() bool { return e.Kind == Token && e.Visible && e.Event.Token >= 0 }

// Size is roughly the memory an entry holds, in bytes.
func (e *Entry) Size() int64 {
	n := int64(unsafe.Sizeof(*e)) + int64(len(e.Event.Text)) +
		int64(len(e.Event.Top))*int64(unsafe.Sizeof(sample.TokenLogprob{}))
	return n + int64(len(e.Results))*int64(unsafe.Sizeof(engine.Result{}))
}

// Log is one request's output: an append-only sequence of entries that
// readers take from any position, each at its own pace. One goroutine
// appends; any number read. The zero Log is empty and ready.
type Log struct {
	mu      sync.Mutex
	entries []Entry // entries[i].Seq == i+1
	done    bool    // the Done entry was appended
	bytes   int64
	// waiters are the channels of readers that have read everything,
	// signaled (without blocking) by the next Append. Readers own them and
	// reuse them, so waiting allocates nothing.
	waiters []chan<- struct{}
}

// Append numbers entries (their Seq is overwritten) and adds them, waking
// readers. It returns the bytes the log now holds (by [Entry.Size]).
// Appending after a Done entry panics: that is a programming error.
func (l *Log) Append(es ...Entry) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range es {
		if l.done {
			panic("stream: Append after the Done entry")
		}
		e.Seq = uint64(len(l.entries)) + 1
		l.bytes += e.Size()
		l.entries = append(l.entries, e)
		if e.Kind == Done {
			l.done = true
		}
	}
	for i, w := range l.waiters {
		select {
		case w <- struct{}{}:
		default: // already signaled
		}
		l.waiters[i] = nil
	}
	l.waiters = l.waiters[:0]
	return l.bytes
}

// Last returns the Seq of the last entry, 0 when there is none.
func (l *Log) Last() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return uint64(len(l.entries))
}

// Done reports whether the Done entry was appended.
func (l *Log) Done() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.done
}

// Bytes returns the memory the entries hold, roughly (see [Entry.Size]).
func (l *Log) Bytes() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.bytes
}

// ErrAhead is returned when a reader asks for entries after a Seq the log
// has not reached: the position is not one the log ever gave out.
var ErrAhead = fmt.Errorf("stream: position past the end of the log")

// Read appends to dst the entries after Seq after, at most max of them
// (max <= 0: all). more reports whether entries may follow those returned:
// the log is not done, or max cut the batch short. When it returned every
// entry there is and the log is not done, Read registers wake (if not
// nil), a channel with a buffer of one, for the next Append to signal;
// the reader then waits on it and reads again. A signal may be stale (an
// append the reader has already read): reading again is always right.
func (l *Log) Read(dst []Entry, after uint64, max int, wake chan<- struct{}) (out []Entry, more bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if after > uint64(len(l.entries)) {
		return dst, false, fmt.Errorf("%w: entry %d asked for, the log has %d", ErrAhead, after, len(l.entries))
	}
	rest := l.entries[after:]
	if max > 0 && len(rest) > max {
		return append(dst, rest[:max]...), true, nil
	}
	dst = append(dst, rest...)
	if l.done {
		return dst, false, nil
	}
	if wake != nil && !slices.Contains(l.waiters, wake) {
		l.waiters = append(l.waiters, wake)
	}
	return dst, true, nil
}

// Range calls fn with every entry up to and including Seq upTo, in order,
// until fn returns false. Transports use it to rebuild encoder state (text
// offsets) when a client resumes after upTo.
func (l *Log) Range(upTo uint64, fn func(*Entry) bool) {
	l.mu.Lock()
	n := min(upTo, uint64(len(l.entries)))
	es := l.entries[:n:n] // entries are never modified once appended
	l.mu.Unlock()
	for i := range es {
		if !fn(&es[i]) {
			return
		}
	}
}
