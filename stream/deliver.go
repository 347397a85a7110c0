package stream

import (
	"context"
	"time"
)

// Sink is a transport's side of [Log.Deliver].
type Sink interface {
	// Write sends entries, consecutive and in order, as one frame (for
	// SSE: one write and one flush). An error ends the delivery.
	Write(entries []Entry) error
	// KeepAlive sends something that carries no entry (an SSE comment),
	// so that proxies and clients see the connection is alive.
	KeepAlive() error
}

// Options say how entries are delivered. The zero Options send every
// entry as soon as it exists, and no keepalives.
type Options struct {
	// Rate paces visible generated tokens ([Entry.Paced]) to this many
	// per second, evenly spaced while the log holds tokens ahead of the
	// reader; tokens that come slower than the rate go out as they come.
	// The count spans all of a request's choices, as entries go out in
	// order. 0 means no pacing.
	Rate float64
	// MinInterval is the least time between two frames that carry
	// tokens: whatever has accumulated meanwhile goes out together (the
	// Sink may merge it into fewer messages). The first token is not held
	// back. 0 sends each token as it comes.
	MinInterval time.Duration
	// KeepAlive, when positive, calls Sink.KeepAlive after this long
	// without a write: while the request waits in the queue, during a
	// long prefill, or between paced tokens.
	KeepAlive time.Duration
}

// batch caps the entries one pass of Deliver reads: a reader far behind
// (a resumed client) takes its backlog in several frames rather than
// copying the whole log at every paced token.
const batch = 512

// Deliver writes the entries after Seq after to sink, as o says, until the
// Done entry was written (it returns nil), ctx is done (ctx.Err()), or the
// sink fails (its error). It returns the Seq of the last entry written.
func (l *Log) Deliver(ctx context.Context, after uint64, o Options, sink Sink) (uint64, error) {
	var period time.Duration
	if o.Rate > 0 {
		period = time.Duration(float64(time.Second) / o.Rate)
	}
	var (
		buf       []Entry
		lastWrite = time.Now()
		lastFrame time.Time // the last write that carried a paced token
		due       time.Time // when the next paced token may go
		// starved is set while the reader waits for the log with nothing
		// held back: a token that then comes later than its due time
		// restarts the schedule instead of being followed by a burst.
		starved = true
		timer   = time.NewTimer(time.Hour)
		wake    = make(chan struct{}, 1) // signaled by the log's next append
	)
	timer.Stop()
	defer timer.Stop()
	for {
		var (
			more bool
			err  error
		)
		buf, more, err = l.Read(buf[:0], after, batch, wake)
		if err != nil {
			return after, err
		}
		if len(buf) == 0 && !more {
			return after, nil // the Done entry was delivered before
		}
		now := time.Now()
		// Release the leading entries whose time has come; hold the
		// rest from the first paced token that must wait.
		n, tokens := 0, false
		var next time.Time // when the first held entry may go; zero if none is held
		for ; n < len(buf); n++ {
			e := &buf[n]
			if !e.Paced() {
				continue
			}
			if o.MinInterval > 0 && !tokens && !lastFrame.IsZero() {
				if t := lastFrame.Add(o.MinInterval); now.Before(t) {
					next = t
					break
				}
			}
			if period > 0 {
				if due.IsZero() || starved && due.Before(now) {
					due = now
				}
				starved = false
				if now.Before(due) {
					next = due
					break
				}
				due = due.Add(period)
			}
			tokens = true
		}
		if n > 0 {
			if err := sink.Write(buf[:n]); err != nil {
				return after, err
			}
			after = buf[n-1].Seq
			lastWrite = now
			if tokens {
				lastFrame = now
			}
			if buf[n-1].Kind == Done {
				return after, nil
			}
			if next.IsZero() && len(buf) == batch {
				continue // a full batch: read on at once
			}
		}
		// Wait: for the held entries' time, or for more entries.
		var woken <-chan struct{}
		if next.IsZero() {
			woken, starved = wake, true
		}
		deadline := next
		if o.KeepAlive > 0 {
			if ka := lastWrite.Add(o.KeepAlive); deadline.IsZero() || ka.Before(deadline) {
				deadline = ka
			}
		}
		var tick <-chan time.Time
		if !deadline.IsZero() {
			timer.Reset(deadline.Sub(now))
			tick = timer.C
		}
		select {
		case <-ctx.Done():
			return after, ctx.Err()
		case <-woken:
		case <-tick:
		}
		timer.Stop()
		if o.KeepAlive > 0 {
			if now := time.Now(); !now.Before(lastWrite.Add(o.KeepAlive)) {
				if err := sink.KeepAlive(); err != nil {
					return after, err
				}
				lastWrite = now
			}
		}
	}
}
