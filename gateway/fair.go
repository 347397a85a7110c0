package gateway

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync"

	"github.com/spigot-llm/spigot/api/openai"
)

// admission holds generation requests back while the gateway has
// limits.max_in_flight in flight, or their key its max_concurrent, and
// admits the waiting ones fairly: by stride scheduling over the keys that
// wait, each key's pass advancing by 1/share per admitted request, so
// that while keys wait, each is admitted in proportion to its share,
// whatever the number of requests it has queued. Within a key, requests
// go first come, first served.
type admission struct {
	max int // limits.max_in_flight; 0: none

	mu       sync.Mutex // guards the rest, and every class's fields
	inflight int
	vtime    float64 // the pass of the last admitted key
}

// class is one key's (or the keyless requests') place in admission.
type class struct {
	share   float64
	maxConc int // 0: no cap of its own

	running int
	pass    float64
	waiting []*waiter
}

type waiter struct {
	ready   chan struct{}
	granted bool
}

// classes lists every class, to pick among; fixed after New.
type classList []*class

// acquire waits until a request of c may go (or ctx is done: then it
// returns false). The caller calls release once the request ends.
func (a *admission) acquire(ctx context.Context, all classList, c *class) bool {
	if a.max == 0 && c.maxConc == 0 {
		return true
	}
	w := &waiter{ready: make(chan struct{})}
	a.mu.Lock()
	if len(c.waiting) == 0 && c.pass < a.vtime {
		c.pass = a.vtime // no credit for time spent idle
	}
	c.waiting = append(c.waiting, w)
	a.dispatch(all)
	a.mu.Unlock()
	select {
	case <-w.ready:
		return true
	case <-ctx.Done():
	}
	a.mu.Lock()
	if w.granted {
		a.mu.Unlock()
		a.release(all, c)
		return false
	}
	for i, x := range c.waiting {
		if x == w {
			c.waiting = append(c.waiting[:i], c.waiting[i+1:]...)
			break
		}
	}
	a.mu.Unlock()
	return false
}

// release ends a request of c admitted by acquire and admits waiting ones.
func (a *admission) release(all classList, c *class) {
	if a.max == 0 && c.maxConc == 0 {
		return
	}
	a.mu.Lock()
	c.running--
	a.inflight--
	a.dispatch(all)
	a.mu.Unlock()
}

// dispatch admits waiting requests while there is room: each time the
// first waiter of the eligible class with the least pass. mu is held.
func (a *admission) dispatch(all classList) {
	for a.max == 0 || a.inflight < a.max {
		var best *class
		for _, c := range all {
			if len(c.waiting) == 0 || c.maxConc > 0 && c.running >= c.maxConc {
				continue
			}
			if best == nil || c.pass < best.pass {
				best = c
			}
		}
		if best == nil {
			return
		}
		w := best.waiting[0]
		best.waiting = best.waiting[1:]
		w.granted = true
		close(w.ready)
		best.running++
		a.inflight++
		a.vtime = best.pass
		best.pass += 1 / best.share
	}
}

// serveGenerate is POST /v1/completions and /v1/chat/completions: the
// key is checked and charged a request, the request waits its turn in
// admission, and is proxied with its tokens metered.
func (g *Gateway) serveGenerate(w http.ResponseWriter, r *http.Request, kind openai.Kind) {
	k, ok := g.lookupKey(w, r)
	if !ok {
		return
	}
	c := g.anon
	var m *meter
	if k != nil {
		if !g.limit(w, k) {
			return
		}
		c = k.class
		m = &meter{g: g, key: k}
		if k.cfg.Priority != nil {
			m.priority = mustJSON(*k.cfg.Priority)
		}
	}
	// The body is read before waiting: only then does the server notice
	// a client that goes away (and cancel r's context).
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, openai.MaxBodyBytes))
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	start := g.now()
	if !g.adm.acquire(r.Context(), g.classes, c) {
		return // the client went away while waiting
	}
	var once sync.Once
	release := func() { once.Do(func() { g.adm.release(g.classes, c) }) }
	g.m.admissionWait.Observe(g.now().Sub(start).Seconds())
	g.handleGenerate(w, r, kind, m, release)
}
