package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spigot-llm/spigot/engine"
)

// TestConcurrentStreams runs 32 streams of different lengths and priorities
// at once against one server with 8 sequences, cancelling every fourth
// midway (the client closes the connection). Every other stream must get
// its tokens in order (its text is a prefix of llama.cpp's greedy text, or
// extends it) and exactly one final event; afterwards no cache block is in
// use and, once everything is closed, no goroutine is left.
func TestConcurrentStreams(t *testing.T) {
	baseline := runtime.NumGoroutine()
	fx := newFixture(t, fixtureOptions{parallel: 8, maxQueue: 64})
	refs := references(t)
	const streams = 32
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for i := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ref := refs[i%len(refs)]
			maxTokens := 8 + (i*7)%57 // 8 … 64
			cancelAt := -1
			if i%4 == 3 {
				cancelAt = 2 // close the connection after two events
			}
			body := fmt.Sprintf(`{"prompt":%s,"temperature":0,"max_tokens":%d,"priority":%d,"stream":true,"stream_options":{"include_usage":true}}`,
				jsonString(ref.Prompt), maxTokens, i%5)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, fx.url+"/v1/completions", strings.NewReader(body))
			resp, err := fx.ts.Client().Do(req)
			if err != nil {
				errs <- fmt.Errorf("stream %d: %v", i, err)
				return
			}
			defer resp.Body.Close()
			if cancelAt >= 0 {
				r := newSSEReader(t, resp.Body)
				for range cancelAt {
					if _, err := r.next(); err != nil {
						errs <- fmt.Errorf("stream %d: %v", i, err)
						return
					}
				}
				cancel()
				return
			}
			res := collect(t, resp.Body)
			text := res.texts[0]
			switch {
			case !res.done || len(res.errors) > 0:
				errs <- fmt.Errorf("stream %d: done %v, errors %v", i, res.done, res.errors)
			case len(res.finishes[0]) != 1:
				errs <- fmt.Errorf("stream %d: finishes %v, want exactly one", i, res.finishes[0])
			case !strings.HasPrefix(ref.OutputText, text) && !strings.HasPrefix(text, ref.OutputText):
				errs <- fmt.Errorf("stream %d: text %q is not llama.cpp's greedy text %q (or a prefix)", i, text, ref.OutputText)
			case res.usage == nil || res.finishes[0][0] == "length" && res.usage.Usage.CompletionTokens != maxTokens:
				errs <- fmt.Errorf("stream %d: finish %v, usage %+v, want %d tokens", i, res.finishes[0], res.usage, maxTokens)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	waitFor(t, "the engine to be idle with no cache block in use", func() bool {
		s := fx.eng.Stats()
		return s.Running == 0 && s.Queued == 0 && fx.eng.Cache().BlocksInUse() == 0
	})
	s := fx.eng.Stats()
	if got := s.FinishedStop + s.FinishedLength + s.FinishedCanceled + s.FinishedError; got != streams {
		t.Errorf("engine finished %d requests, want %d (%+v)", got, streams, s)
	}
	fx.close()
	waitFor(t, fmt.Sprintf("goroutines to return to %d", baseline), func() bool { return runtime.NumGoroutine() <= baseline })
}

// TestQueueFull checks the 429 a request gets when the queue is full.
func TestQueueFull(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 1, maxQueue: 1})
	fx.model.hold()
	ctx := context.Background()
	a := fx.stream(ctx, t, "/v1/completions", `{"prompt":"Once","max_tokens":4,"stream":true}`)
	defer a.Body.Close()
	waitFor(t, "the first request to run", func() bool { return fx.eng.Stats().Running == 1 })
	b := fx.stream(ctx, t, "/v1/completions", `{"prompt":"Once","max_tokens":4,"stream":true}`)
	defer b.Body.Close()
	waitFor(t, "the second request to wait", func() bool { return fx.eng.Stats().Queued == 1 })

	resp, body := fx.post(t, "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}]}`)
	var e apiError
	json.Unmarshal(body, &e)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" ||
		e.Error == nil || e.Error.Type != "rate_limit_error" || e.Error.Code == nil || *e.Error.Code != "queue_full" {
		t.Errorf("status %d, Retry-After %q, body %s; want 429 queue_full", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	// The same with n = 2 when one slot is free: nothing may stay queued.
	fx.model.release()
	for _, r := range []*http.Response{a, b} {
		if res := collect(t, r.Body); !res.done || len(res.finishes[0]) != 1 {
			t.Errorf("a waiting request did not finish: %v", res.events)
		}
	}
	fx.model.hold()
	a = fx.stream(ctx, t, "/v1/completions", `{"prompt":"Once","max_tokens":4,"stream":true}`)
	defer a.Body.Close()
	waitFor(t, "the first request to run", func() bool { return fx.eng.Stats().Running == 1 })
	resp, body = fx.post(t, "/v1/completions", `{"prompt":"Once","max_tokens":4,"n":2}`)
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("n=2 with one free queue slot: %d %s", resp.StatusCode, body)
	}
	fx.model.release()
	collect(t, a.Body)
	waitFor(t, "the queue to empty", func() bool { s := fx.eng.Stats(); return s.Queued == 0 && s.Running == 0 })
}

// TestPriority checks that with one sequence, a waiting request with a
// lower priority number starts before one that came earlier with a higher
// number.
func TestPriority(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 1, maxQueue: 8, delay: 2 * time.Millisecond})
	fx.model.hold()
	ctx := context.Background()
	body := func(prio int) string {
		return fmt.Sprintf(`{"prompt":"Once upon a time","max_tokens":10,"ignore_eos":true,"priority":%d,"stream":true}`, prio)
	}
	first := fx.stream(ctx, t, "/v1/completions", body(0))
	waitFor(t, "the first request to run", func() bool { return fx.eng.Stats().Running == 1 })
	late := fx.stream(ctx, t, "/v1/completions", body(10))
	waitFor(t, "one waiting", func() bool { return fx.eng.Stats().Queued == 1 })
	urgent := fx.stream(ctx, t, "/v1/completions", body(1))
	waitFor(t, "two waiting", func() bool { return fx.eng.Stats().Queued == 2 })
	fx.model.release()

	var mu sync.Mutex
	var order []string
	var wg sync.WaitGroup
	for name, resp := range map[string]*http.Response{"first": first, "late": late, "urgent": urgent} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer resp.Body.Close()
			r := newSSEReader(t, resp.Body)
			if _, err := r.next(); err != nil { // the first token
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, name)
			mu.Unlock()
			r.all()
		}()
	}
	wg.Wait()
	if strings.Join(order, ",") != "first,urgent,late" {
		t.Errorf("first tokens came in order %v, want first, urgent, late", order)
	}
}

// TestShutdownLetsStreamsFinish checks graceful shutdown with time to
// spare: the running stream completes normally, while new requests and
// /ready get 503.
func TestShutdownLetsStreamsFinish(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 2, delay: 2 * time.Millisecond})
	resp := fx.stream(context.Background(), t, "/v1/chat/completions",
		`{"messages":[{"role":"user","content":"hi"}],"max_tokens":40,"ignore_eos":true,"stream":true}`)
	defer resp.Body.Close()
	r := newSSEReader(t, resp.Body)
	for range 2 {
		if _, err := r.next(); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		done <- fx.srv.Shutdown(ctx)
	}()
	waitFor(t, "draining", fx.srv.draining.Load)

	rs, b := fx.post(t, "/v1/completions", `{"prompt":"x"}`)
	var e apiError
	json.Unmarshal(b, &e)
	if rs.StatusCode != 503 || e.Error == nil || e.Error.Code == nil || *e.Error.Code != "shutting_down" || rs.Header.Get("Retry-After") == "" {
		t.Errorf("new request while shutting down: %d %s", rs.StatusCode, b)
	}
	if rs, _ := fx.do(t, http.MethodGet, "/ready", ""); rs.StatusCode != 503 {
		t.Errorf("/ready while shutting down: %d", rs.StatusCode)
	}
	if rs, _ := fx.do(t, http.MethodGet, "/health", ""); rs.StatusCode != 200 {
		t.Errorf("/health while shutting down: %d", rs.StatusCode)
	}
	res := collect(t, resp.Body)
	if len(res.errors) > 0 || !res.done || len(res.finishes[0]) != 1 || res.finishes[0][0] != "length" {
		t.Errorf("the running stream did not finish normally: %v", res.events[max(0, len(res.events)-3):])
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown = %v", err)
	}
}

// TestShutdownDeadline checks that at the shutdown deadline every
// unfinished request ends with a final event: streams (running or queued)
// get an error event and [DONE], a waiting non-streamed request a 503.
func TestShutdownDeadline(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 1, delay: 10 * time.Millisecond})
	long := `{"prompt":"Once upon a time","max_tokens":100,"ignore_eos":true,"stream":true}`
	running := fx.stream(context.Background(), t, "/v1/completions", long)
	defer running.Body.Close()
	waitFor(t, "the first request to run", func() bool { return fx.eng.Stats().Running == 1 })
	queued := fx.stream(context.Background(), t, "/v1/completions", long)
	defer queued.Body.Close()
	plain := make(chan *http.Response, 1)
	go func() {
		rs, _ := fx.post(t, "/v1/completions", `{"prompt":"Once","max_tokens":5}`)
		plain <- rs
	}()
	waitFor(t, "two waiting", func() bool { return fx.eng.Stats().Queued == 2 })

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := fx.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want the deadline's error", err)
	}
	for name, resp := range map[string]*http.Response{"running": running, "queued": queued} {
		res := collect(t, resp.Body)
		if !res.done || len(res.errors) != 1 || len(res.finishes[0]) != 0 {
			t.Errorf("%s stream: done %v, %d errors, finishes %v; want one error event then [DONE]", name, res.done, len(res.errors), res.finishes)
			continue
		}
		if e := res.errors[0].Error; e.Code == nil || *e.Code != "shutting_down" || e.Type != "server_error" {
			t.Errorf("%s stream error %+v", name, e)
		}
	}
	if rs := <-plain; rs.StatusCode != 503 {
		t.Errorf("waiting non-streamed request: %d, want 503", rs.StatusCode)
	}
	if s := fx.eng.Stats(); s.Running != 0 || s.Queued != 0 || fx.eng.Cache().BlocksInUse() != 0 {
		t.Errorf("after shutdown: %+v, %d blocks in use", s, fx.eng.Cache().BlocksInUse())
	}
	if _, err := fx.eng.Submit(context.Background(), engine.Request{Prompt: []int32{1}}); !errors.Is(err, engine.ErrShutdown) {
		t.Errorf("Submit after shutdown = %v", err)
	}
}
