package engine

import (
	"container/heap"
	"context"
	"slices"
	"sync/atomic"
	"time"

	"github.com/spigot-llm/spigot/engine/sample"
	"github.com/spigot-llm/spigot/engine/stop"
)

// queued is a request waiting for a free sequence slot.
type queued struct {
	req    Request
	stream *Stream
	ctx    context.Context
	at     time.Time
	id     uint64
}

// waitQueue orders waiting requests by priority (lower first, as vLLM
// orders them), then by arrival.
type waitQueue []*queued

func (q waitQueue) Len() int { return len(q) }
func (q waitQueue) Less(i, j int) bool {
	if q[i].req.Priority != q[j].req.Priority {
		return q[i].req.Priority < q[j].req.Priority
	}
	return q[i].id < q[j].id
}
func (q waitQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *waitQueue) Push(x any)   { *q = append(*q, x.(*queued)) }
func (q *waitQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return x
}

// loop is the engine goroutine: admit, step, repeat.
func (e *Engine) loop() {
	defer close(e.loopDone)
	for {
		select {
		case <-e.stopLoop:
			e.abortAll()
			return
		default:
		}
		e.dropCanceled()
		e.admit()
		if len(e.seqs) == 0 {
			e.mu.Lock()
			done := e.closing && len(e.queue) == 0
			e.mu.Unlock()
			if done {
				return
			}
			select {
			case <-e.wake:
			case <-e.stopLoop:
				e.abortAll()
				return
			}
			continue
		}
		e.step()
	}
}

// dropCanceled ends cancelled requests, running or queued, and frees
// their cache blocks.
func (e *Engine) dropCanceled() {
	kept := e.seqs[:0]
	for _, s := range e.seqs {
		if s.ctx.Err() != nil {
			e.end(s, ErrCanceled)
			continue
		}
		kept = append(kept, s)
	}
	clear(e.seqs[len(kept):])
	e.seqs = kept
	e.setRunning()

	e.mu.Lock()
	var gone []*queued
	for i := 0; i < len(e.queue); {
		if q := e.queue[i]; q.ctx.Err() != nil {
			heap.Remove(&e.queue, i)
			gone = append(gone, q)
			continue
		}
		i++
	}
	e.mu.Unlock()
	for _, q := range gone {
		e.stats.canceled.Add(1)
		q.stream.finish(Result{PromptTokens: len(q.req.Prompt), QueueTime: time.Since(q.at)}, ErrCanceled)
	}
}

// admit moves waiting requests into free sequence slots, attaching any
// cached prefix of their prompts.
func (e *Engine) admit() {
	var deferred []*queued
	defer func() {
		e.mu.Lock()
		for _, q := range deferred {
			heap.Push(&e.queue, q)
		}
		e.aside = 0
		e.mu.Unlock()
		e.setRunning()
	}()
	for len(e.seqs) < e.cfg.Parallel {
		e.mu.Lock()
		if len(e.queue) == 0 {
			e.mu.Unlock()
			return
		}
		q := heap.Pop(&e.queue).(*queued)
		if e.prefillingSame(q.req.Prompt) {
			// A running sequence is computing the same leading block:
			// wait for it to publish its blocks instead of computing
			// them twice (n > 1 choices and retried requests). Others
			// behind it may start meanwhile.
			deferred = append(deferred, q)
			e.aside++
			e.mu.Unlock()
			continue
		}
		e.mu.Unlock()
		s := &seqState{
			req:      q.req,
			stream:   q.stream,
			ctx:      q.ctx,
			kv:       e.cache.NewSeq(),
			sampler:  sample.New(q.req.Sample, e.vocab),
			dec:      e.cfg.Tokenizer.NewDecoder(),
			stops:    stop.New(q.req.Stop),
			start:    time.Now(),
			enqueued: q.at,
		}
		s.dec.KeepLeadingSpace = true // the output continues the prompt
		s.res.PromptTokens = len(q.req.Prompt)
		s.res.QueueTime = s.start.Sub(q.at)
		prompt := q.req.Prompt
		s.kv.Grow(e.cfg.Context)
		s.next = s.kv.Reuse(prompt[:len(prompt)-1])
		s.res.CachedTokens = s.next
		e.stats.prefixQuery.Add(uint64(len(prompt) - 1))
		e.stats.prefixHit.Add(uint64(s.next))
		for _, id := range prompt {
			s.sampler.Accept(id)
		}
		e.seqs = append(e.seqs, s)
	}
}

// prefillingSame reports whether a running sequence that has not finished
// its prompt starts with the same full cache block as prompt (its last
// token excluded, as Reuse sees it).
func (e *Engine) prefillingSame(prompt []int32) bool {
	bs := e.cfg.BlockSize
	if len(prompt)-1 < bs {
		return false
	}
	for _, s := range e.seqs {
		p := s.req.Prompt
		if s.next < len(p) && len(p)-1 >= bs && slices.Equal(p[:bs], prompt[:bs]) {
			return true
		}
	}
	return false
}

func (e *Engine) setRunning() { atomic.StoreInt32(&e.running, int32(len(e.seqs))) }

// step runs one forward pass: the next token of every decoding sequence,
// then prompt chunks up to the step budget, then sampling.
func (e *Engine) step() {
	e.batch.Reset()
	budget := e.stepBudget()
	rows := 0
	for _, s := range e.seqs {
		s.row = -1
		if s.next == len(s.req.Prompt) {
			s.row = rows
			rows++
			e.batch.Add(s.last, s.kv.Len(), s.kv, true)
			budget--
		}
	}
	var prefilled []*seqState
	for _, s := range e.seqs {
		prompt := s.req.Prompt
		if s.next == len(prompt) || budget <= 0 {
			continue
		}
		n := min(len(prompt)-s.next, budget)
		for i := s.next; i < s.next+n; i++ {
			last := i == len(prompt)-1
			e.batch.Add(prompt[i], i, s.kv, last)
			if last {
				s.row = rows
				rows++
				prefilled = append(prefilled, s)
			}
		}
		s.next += n
		budget -= n
		e.stats.prompt.Add(uint64(n))
	}
	e.stats.steps.Add(1)
	t0 := time.Now()
	err := e.cfg.Model.Forward(&e.batch, e.logits[:rows*e.vocab])
	e.observeStep(time.Since(t0), len(e.batch.Tokens))
	if err != nil {
		for _, s := range e.seqs {
			e.end(s, err)
		}
		clear(e.seqs)
		e.seqs = e.seqs[:0]
		e.setRunning()
		return
	}
	for _, s := range prefilled {
		s.kv.Publish(s.req.Prompt)
	}
	kept := e.seqs[:0]
	for _, s := range e.seqs {
		if s.row >= 0 && e.emit(s, e.logits[s.row*e.vocab:(s.row+1)*e.vocab]) {
			continue // finished
		}
		kept = append(kept, s)
	}
	clear(e.seqs[len(kept):])
	e.seqs = kept
	e.setRunning()
}

// stepBudget is the token budget of the next step: StepTokens, lowered so
// that a step is expected to take about StepTarget, but never so low that
// prompts starve (room for 16 prompt tokens beside the running sequences).
// Every running sequence's next token is always added, whatever the budget.
func (e *Engine) stepBudget() int {
	b := e.cfg.StepTokens
	if e.cfg.StepTarget > 0 && e.perToken > 0 {
		b = min(b, max(int(e.cfg.StepTarget/e.perToken), len(e.seqs)+16))
	}
	return b
}

// observeStep updates the per-token step time from a step of n tokens. Small
// steps say little about prefill cost (fixed per-step work dominates), so
// only steps of at least 8 tokens count.
func (e *Engine) observeStep(d time.Duration, n int) {
	if n < 8 {
		return
	}
	per := d / time.Duration(n)
	if e.perToken == 0 {
		e.perToken = per
		return
	}
	e.perToken = (3*e.perToken + per) / 4
}

// emit samples the next token of s from logits and streams it. It reports
// whether the sequence finished.
func (e *Engine) emit(s *seqState, logits []float32) bool {
	id := s.sampler.Sample(logits)
	s.sampler.Accept(id)
	s.res.Tokens++
	e.stats.generated.Add(1)
	if s.res.Tokens == 1 {
		s.res.TTFT = time.Since(s.start)
	}
	if !s.req.IgnoreEOS && e.cfg.Tokenizer.IsEOG(id) {
		e.finish(s, FinishStop)
		return true
	}
	ev := Event{Token: id}
	if s.req.Logprobs {
		ev.Logprob = s.sampler.Logprob(id)
	}
	if s.req.TopLogprobs > 0 {
		ev.Top = s.sampler.TopLogprobs(nil, s.req.TopLogprobs)
	}
	s.text = s.dec.Append(s.text[:0], id)
	out, stopped := s.stops.Push(s.text)
	ev.Text = s.arena.str(out)
	switch {
	case stopped:
		ev.Finish = FinishStop
	case (s.req.MaxTokens > 0 && s.res.Tokens >= s.req.MaxTokens) || s.kv.Len()+1 >= e.cfg.Context:
		var tail string
		tail, ev.Finish = e.flush(s, FinishLength)
		ev.Text += tail
	}
	s.stream.push(ev)
	if ev.Finish != "" {
		s.res.FinishReason = ev.Finish
		e.end(s, nil)
		return true
	}
	s.last = id
	return false
}

// flush returns the text s still holds (in the decoder and the stop
// matcher) and the finish reason: reason, or FinishStop when the held text
// completes a stop string.
func (e *Engine) flush(s *seqState, reason string) (string, string) {
	out, stopped := s.stops.Push(s.dec.Flush(s.text[:0]))
	text := string(out)
	if !stopped {
		text += string(s.stops.Flush())
	}
	if _, ok := s.stops.Matched(); ok {
		reason = FinishStop
	}
	return text, reason
}

// finish ends s normally after its last token was sent, sending any text
// it still holds as a final event.
func (e *Engine) finish(s *seqState, reason string) {
	text, reason := e.flush(s, reason)
	s.res.FinishReason = reason
	if text != "" {
		s.stream.push(Event{Token: -1, Text: text, Finish: reason})
	}
	e.end(s, nil)
}

// end releases s's cache blocks and ends its stream with err (nil for a
// normal finish).
func (e *Engine) end(s *seqState, err error) {
	s.kv.Release()
	s.res.Elapsed = time.Since(s.start)
	switch {
	case err == nil && s.res.FinishReason == FinishStop:
		e.stats.stop.Add(1)
	case err == nil:
		e.stats.length.Add(1)
	case err == ErrCanceled:
		e.stats.canceled.Add(1)
	default:
		e.stats.failed.Add(1)
	}
	s.stream.finish(s.res, err)
}

// abortAll ends every running and queued request with ErrShutdown.
func (e *Engine) abortAll() {
	for _, s := range e.seqs {
		e.end(s, ErrShutdown)
	}
	clear(e.seqs)
	e.seqs = e.seqs[:0]
	e.setRunning()
	e.mu.Lock()
	e.closing = true
	q := e.queue
	e.queue = nil
	e.mu.Unlock()
	for _, w := range q {
		e.stats.failed.Add(1)
		w.stream.finish(Result{PromptTokens: len(w.req.Prompt)}, ErrShutdown)
	}
}
