package server

import (
	"container/list"
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/spigot-llm/spigot/api/openai"
	"github.com/spigot-llm/spigot/engine"
	"github.com/spigot-llm/spigot/stream"
)

// A session is one streamed generation: its engine streams, and the log
// of its output that one goroutine (pump) fills from them whether or not
// a client is reading. Transports deliver the log to clients: the
// connection that started the request, then any that resume it. Sessions
// that may be resumed are kept in the server's registry (streams) by id.
//
// The generation core that every transport shares is startSession (submit
// a job, start the pump) and session.attach plus [stream.Log.Deliver]
// with the transport's own [stream.Sink].
type session struct {
	srv       *Server
	id        string // the response id (chatcmpl-…, cmpl-…), which names the stream
	m         *Model
	j         *job
	enc       openai.EncoderConfig // every reader's encoder is made from it
	sts       []*engine.Stream
	cancelGen context.CancelFunc // cancels every choice's engine request
	start     time.Time
	resumable bool // registered; a disconnect leaves it running for the window
	log       stream.Log

	mu      sync.Mutex // guards the fields below
	reader  context.CancelCauseFunc
	readers uint64      // attach count: tells a replaced reader's release apart
	timer   *time.Timer // the resume window, while no reader is attached
	failure error       // the error that ended the request, once the pump knows
	// Registry state, guarded by the registry's mutex.
	elem  *list.Element // in streams.finished
	bytes int64         // accounted in streams.finishedBytes
	// Metrics: the last entry any client was sent (later deliveries of an
	// entry are not observed again), when the first token was written, and
	// each choice's last write of tokens.
	written uint64
	first   time.Time
	last    []time.Time
	tokens  []int
}

// errReplaced ends a reader's delivery when another connection resumes
// the stream.
var errReplaced = errors.New("another connection resumed the stream")

// startSession submits a job's engine requests and starts filling the
// session's log. Engine requests do not end with ctx (the client's
// request): a stream outlives its connection while it can be resumed.
// Errors are the engine's (queue full, shutting down).
func (s *Server) startSession(ctx context.Context, m *Model, j *job, start time.Time) (*session, error) {
	gctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	sts := make([]*engine.Stream, 0, len(j.reqs))
	for _, req := range j.reqs {
		st, err := m.Engine.Submit(gctx, req)
		if err != nil {
			// The choices already queued are dropped at the engine's next
			// step; nothing waits for them.
			cancel()
			return nil, err
		}
		sts = append(sts, st)
	}
	ss := &session{
		srv: s, id: newID(j.kind), m: m, j: j, sts: sts, cancelGen: cancel, start: start,
		resumable: s.cfg.ResumeWindow > 0 && !j.opts.Delivery.CancelOnDisconnect,
	}
	ss.enc = openai.EncoderConfig{
		Kind:         j.kind,
		ID:           ss.id,
		Created:      time.Now().Unix(),
		Model:        m.ID,
		Choices:      len(sts),
		Logprobs:     j.opts.Request.Logprobs,
		IncludeUsage: j.opts.IncludeUsage,
		Piece:        m.Tokenizer.Piece,
	}
	if j.opts.TokenIDs {
		ss.enc.TokenIDs, ss.enc.PromptIDs = true, j.promptIDs()
	}
	// The choices' starts (and echoed prompts) are in the log before
	// anyone reads it, so the first write carries them at once.
	starts := make([]stream.Entry, 0, 2*len(sts))
	for i := range sts {
		starts = append(starts, stream.Entry{Kind: stream.Start, Choice: i})
		if j.echo != nil && j.echo[i] != "" {
			starts = append(starts, stream.Entry{Kind: stream.Token, Choice: i, Visible: true, Event: engine.Event{Token: -1, Text: j.echo[i]}})
		}
	}
	ss.log.Append(starts...)
	if ss.resumable {
		s.streams.add(ss)
	}
	go ss.pump()
	return ss, nil
}

// pump moves the engine's events into the log until every choice has
// ended, then appends the Final and Done entries. The first error of any
// choice ends the request: the other choices are canceled, and no more of
// their output is logged.
func (ss *session) pump() {
	defer ss.cancelGen() // releases the engine requests' context
	n := len(ss.sts)
	logprobs := ss.j.opts.Request.Logprobs
	var (
		failure    error
		results    = make([]engine.Result, n)
		finishSent = make([]bool, n)
		batch      []stream.Entry
	)
	in := newFanIn(ss.sts)
	for left := n; left > 0; {
		batch = batch[:0]
		in.next(func(i int, evs []engine.Event, end error) {
			if failure == nil {
				for _, ev := range evs {
					visible := ev.Text != "" || logprobs && ev.Token >= 0
					if !visible {
						ev.Finish = "" // the End entry brings it
					} else if ev.Finish != "" {
						finishSent[i] = true
					}
					batch = append(batch, stream.Entry{Kind: stream.Token, Choice: i, Visible: visible, Event: ev})
				}
			}
			if end == nil {
				return
			}
			left--
			if end != io.EOF {
				if failure == nil {
					failure = end
					ss.cancelGen()
				}
				return
			}
			results[i] = ss.sts[i].Result()
			if failure == nil {
				batch = append(batch, stream.Entry{Kind: stream.End, Choice: i, Result: results[i], FinishSent: finishSent[i]})
			}
		})
		if len(batch) > 0 {
			ss.log.Append(batch...)
		}
	}
	in.close()
	final := stream.Entry{Kind: stream.Final, Err: failure}
	if failure == nil {
		final.Results = results
	}
	ss.mu.Lock()
	ss.failure = failure
	ss.mu.Unlock()
	ss.log.Append(final, stream.Entry{Kind: stream.Done})
	if failure != nil {
		status := openai.ErrorFor(failure).Status
		level := slog.LevelInfo
		switch {
		case status == openai.StatusClientClosed:
			level = slog.LevelDebug // canceled: by the client, or abandoned past the resume window
		case status >= 500:
			level = slog.LevelWarn
		}
		ss.srv.log.Log(context.Background(), level, "request ended early", "stream", ss.id, "choices", n, "status", status, "err", failure)
	}
	if ss.resumable {
		ss.srv.streams.finish(ss)
	}
}

// usage sums the token counts of a request whose choices have these
// results.
func (ss *session) usage(results []engine.Result) openai.Usage {
	u := openai.Usage{PromptTokens: ss.j.promptTokens}
	for _, r := range results {
		u.CompletionTokens += r.Tokens
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	return u
}

// attach makes the caller the stream's reader: a previous reader's
// delivery ends (its context is canceled with errReplaced), and the
// resume window stops running. The returned context is done when parent
// is or when another reader attaches. The caller must call release when
// its delivery ends, saying whether it wrote the Done entry: a reader that
// did not (its client went away) leaves a resumable stream running for the
// resume window, and cancels one that may not be resumed.
func (ss *session) attach(parent context.Context) (ctx context.Context, release func(delivered bool)) {
	ctx, cancel := context.WithCancelCause(parent)
	ss.mu.Lock()
	if ss.reader != nil {
		ss.reader(errReplaced)
	}
	ss.readers++
	n := ss.readers
	ss.reader = cancel
	if ss.timer != nil {
		ss.timer.Stop()
		ss.timer = nil
	}
	ss.mu.Unlock()
	return ctx, func(delivered bool) {
		cancel(nil)
		ss.mu.Lock()
		defer ss.mu.Unlock()
		if ss.readers != n {
			return // replaced: the new reader owns the stream
		}
		ss.reader = nil
		if !ss.resumable {
			if !delivered {
				ss.cancelGen()
			}
			return
		}
		// Even a stream whose every byte was written is kept: written is
		// not received, and a client cut off before the end resumes.
		ss.timer = time.AfterFunc(ss.srv.cfg.ResumeWindow, ss.expire)
	}
}

// expire ends a stream whose resume window passed with no reader: it
// leaves the registry, and a generation still running is canceled (the
// engine frees its cache blocks at the next step).
func (ss *session) expire() {
	ss.mu.Lock()
	if ss.reader != nil || ss.timer == nil {
		ss.mu.Unlock()
		return // a reader came back just now
	}
	ss.timer = nil
	ss.mu.Unlock()
	ss.srv.streams.remove(ss)
	ss.cancelGen()
}

// delivered records the timing metrics of entries written to a client at
// now. Only entries no client was sent before count: a resumed stream's
// replay is not observed twice. Tokens after a choice's first are
// inter-token latencies: a write's gap since the choice's previous one is
// shared among the tokens it carries, and tokens that came with the first
// token count 0 (they reached the client together), so that the latencies
// of a choice sum to the time from its first token to its last. Writing
// the Done entry of a request that finished normally observes its
// end-to-end latency.
func (ss *session) delivered(now time.Time, es []stream.Entry) {
	m := ss.srv.metrics
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(es) == 0 || es[len(es)-1].Seq <= ss.written {
		return
	}
	if ss.last == nil {
		ss.last = make([]time.Time, len(ss.sts))
		ss.tokens = make([]int, len(ss.sts))
	}
	clear(ss.tokens)
	done := false
	for i := range es {
		e := &es[i]
		if e.Seq <= ss.written {
			continue
		}
		switch {
		case e.Kind == stream.Token && e.Event.Token >= 0:
			ss.tokens[e.Choice]++
		case e.Kind == stream.Done:
			done = true
		}
	}
	ss.written = es[len(es)-1].Seq
	for i, k := range ss.tokens {
		if k == 0 {
			continue
		}
		if ss.first.IsZero() {
			ss.first = now
			m.TTFT.Observe(now.Sub(ss.start).Seconds())
		}
		per := 0.0
		if !ss.last[i].IsZero() {
			per = now.Sub(ss.last[i]).Seconds() / float64(k)
		} else {
			k-- // the choice's first token
		}
		for range k {
			m.InterToken.Observe(per)
		}
		ss.last[i] = now
	}
	if done && ss.failure == nil {
		m.E2E.Observe(now.Sub(ss.start).Seconds())
	}
}

// streams is the registry of resumable sessions by id. Lock order: the
// registry's mutex before a session's. A session enters
// when it starts and leaves when its resume window passes with no client
// attached, or, once finished, when finished sessions hold more than the
// budget of memory (oldest first): running sessions are bounded by the
// engine's limits (sequences, queue, context), finished ones by the budget.
type streams struct {
	mu            sync.Mutex
	byID          map[string]*session
	finished      list.List // of *session, registered and finished, oldest first
	finishedBytes int64
	budget        int64
}

func (r *streams) add(ss *session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byID == nil {
		r.byID = make(map[string]*session)
	}
	r.byID[ss.id] = ss
}

// get returns the session named id, or nil.
func (r *streams) get(id string) *session {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byID[id]
}

// remove drops ss from the registry (if it is still there).
func (r *streams) remove(ss *session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.drop(ss)
}

func (r *streams) drop(ss *session) {
	if r.byID[ss.id] == ss {
		delete(r.byID, ss.id)
	}
	if ss.elem != nil {
		r.finished.Remove(ss.elem)
		ss.elem = nil
		r.finishedBytes -= ss.bytes
		ss.bytes = 0
	}
}

// finish accounts a session whose log is complete against the budget,
// dropping the oldest finished sessions beyond it.
func (r *streams) finish(ss *session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byID[ss.id] != ss {
		return // already expired
	}
	ss.bytes = ss.log.Bytes()
	ss.elem = r.finished.PushBack(ss)
	r.finishedBytes += ss.bytes
	for r.finishedBytes > r.budget && r.finished.Len() > 0 {
		old := r.finished.Front().Value.(*session)
		r.drop(old)
		// Its window's timer would hold its log until then.
		old.mu.Lock()
		if old.timer != nil {
			old.timer.Stop()
			old.timer = nil
		}
		old.mu.Unlock()
	}
}

// len returns the number of sessions registered.
func (r *streams) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byID)
}

// close drops every session, stopping their windows' timers; the server
// calls it when shutting down, after the engine has ended every stream.
func (r *streams) close() {
	r.mu.Lock()
	all := make([]*session, 0, len(r.byID))
	for _, ss := range r.byID {
		all = append(all, ss)
	}
	for _, ss := range all {
		r.drop(ss)
	}
	r.mu.Unlock()
	for _, ss := range all {
		ss.mu.Lock()
		if ss.timer != nil {
			ss.timer.Stop()
			ss.timer = nil
		}
		ss.mu.Unlock()
		ss.cancelGen()
	}
}
