package gateway

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// prompts returns n different story openings.
func prompts(n int) []string {
	names := []string{"Lily", "Tom", "Ben", "Sue", "Max", "Mia", "Sam", "Anna"}
	things := []string{"a red ball", "a big dog", "a little bird", "a shiny car"}
	ps := make([]string, n)
	for i := range ps {
		ps[i] = fmt.Sprintf("Once upon a time, %s had %s. One day,", names[i%len(names)], things[(i/len(names))%len(things)])
	}
	return ps
}

func completionBody(prompt string, maxTokens int) string {
	return fmt.Sprintf(`{"model":"stories260K","prompt":%q,"max_tokens":%d,"temperature":0,"stream":true}`, prompt, maxTokens)
}

func chatBody(prompt string, maxTokens int) string {
	return fmt.Sprintf(`{"model":"stories260K","messages":[{"role":"user","content":%q}],"max_tokens":%d,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}`, prompt, maxTokens)
}

// TestFailoverMidStream runs 32 greedy streams (completions and chat)
// through the gateway in front of 3 replicas, kills one replica and drains
// another while the streams run, and checks that every stream ends with
// exactly the text of an undisturbed run, one finish_reason and one
// [DONE]: a cut stream continues from the token ids generated so far.
func TestFailoverMidStream(t *testing.T) {
	baseline := runtime.NumGoroutine()
	const streams, maxTokens = 32, 60
	reps := []*replica{newReplica(t, 16), newReplica(t, 16), newReplica(t, 16)}
	gwy := newGW(t, testConfig(t, reps[0].url, reps[1].url, reps[2].url))
	type cut struct {
		text   string
		tokens int
		byIDs  bool
	}
	var mu sync.Mutex
	cuts := map[string][]cut{} // by request body
	gwy.g.onContinue = func(r *request, text string, tokens int, byIDs bool) {
		mu.Lock()
		defer mu.Unlock()
		cuts[string(r.raw)] = append(cuts[string(r.raw)], cut{text, tokens, byIDs})
	}
	ps := prompts(streams)
	// Odd streams are chats: their continuation goes to /v1/completions
	// with the ids and comes back as chat chunks.
	paths, bodies := make([]string, streams), make([]string, streams)
	for i, p := range ps {
		paths[i], bodies[i] = "/v1/completions", completionBody(p, maxTokens)
		if i%2 == 1 {
			paths[i], bodies[i] = "/v1/chat/completions", chatBody(p, maxTokens)
		}
	}

	// The undisturbed runs, one at a time on one replica.
	want := make([]*streamResult, streams)
	for i := range ps {
		res := stream(context.Background(), http.DefaultClient, reps[2].url, paths[i], bodies[i], nil)
		if err := res.check(res.text); err != nil {
			t.Fatalf("reference run %d: %v", i, err)
		}
		want[i] = res
	}

	for _, r := range reps {
		r.model.delay.Store(int64(4 * time.Millisecond))
	}
	var chunks atomic.Int64
	results := make([]*streamResult, streams)
	var wg sync.WaitGroup
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: streams}}
	defer client.CloseIdleConnections()
	for i := range streams {
		wg.Go(func() {
			results[i] = stream(context.Background(), client, gwy.ts.URL, paths[i], bodies[i], func() { chunks.Add(1) })
		})
	}
	// Cut replicas once the streams are well under way.
	waitFor(t, "streams to start", 20*time.Second, func() bool { return chunks.Load() >= streams*5 })
	inflight := func(r *replica) int64 {
		for _, u := range gwy.g.Upstreams() {
			if u.cfg.URL == r.url {
				return u.inflight.Load()
			}
		}
		return 0
	}
	t.Logf("in flight before the cut: %d %d %d", inflight(reps[0]), inflight(reps[1]), inflight(reps[2]))
	reps[0].kill()
	drained := make(chan struct{})
	go func() { reps[1].drain(50 * time.Millisecond); close(drained) }()
	wg.Wait()
	<-drained

	// Every stream, cut or not, has the undisturbed run's text; a cut one
	// continued from token ids, and its usage counts every token once.
	exact := 0
	for i, res := range results {
		cs := cuts[bodies[i]]
		for _, c := range cs {
			if !c.byIDs || !strings.HasPrefix(want[i].text, c.text) {
				t.Errorf("stream %d: cut after %q (%d tokens), by ids %v", i, c.text, c.tokens, c.byIDs)
			}
		}
		if err := res.check(want[i].text); err != nil {
			t.Errorf("stream %d (%s %q, first on %s, cuts %+v): %v", i, paths[i], ps[i], res.upstream, cs, err)
			continue
		}
		exact++
		if len(want[i].usage) > 0 && len(res.usage) > 0 && !maps.Equal(res.usage[len(res.usage)-1], want[i].usage[0]) {
			t.Errorf("stream %d: usage %v, want %v (cuts %+v)", i, res.usage, want[i].usage, cs)
		}
	}
	kinds := map[string]bool{}
	for i := range streams {
		if len(cuts[bodies[i]]) > 0 {
			kinds[paths[i]] = true
		}
	}
	t.Logf("%d streams cut, %d of %d equal to the undisturbed run", len(cuts), exact, streams)
	if len(kinds) != 2 {
		t.Errorf("streams cut only on %v: the test must cut completions and chats", kinds)
	}
	mid := gwy.counter(t, "spigot_gateway_failovers_total", "stage", "mid_stream")
	t.Logf("failovers mid-stream %g, before the first token %g; affinity hits %g misses %g", mid,
		gwy.counter(t, "spigot_gateway_failovers_total", "stage", "before_first_token"),
		gwy.counter(t, "spigot_gateway_affinity_total", "result", "hit"), gwy.counter(t, "spigot_gateway_affinity_total", "result", "miss"))
	if mid == 0 {
		t.Error("no stream failed over mid-stream: the test cut nothing")
	}
	// The survivor, and the drained replica, hold no cache blocks once
	// the cut streams' cancellations have reached them.
	for _, i := range []int{1, 2} {
		waitFor(t, fmt.Sprintf("replica %d to free its blocks", i), 5*time.Second, func() bool {
			s := reps[i].eng.Stats()
			return s.BlocksInUse == 0 && s.Running == 0 && s.Queued == 0
		})
	}
	if got := gwy.counter(t, "spigot_gateway_upstream_in_flight"); got != 0 {
		t.Errorf("in flight after the streams = %g, want 0", got)
	}
	waitFor(t, "the killed replica to be ejected", 5*time.Second, func() bool {
		return gwy.counter(t, "spigot_gateway_upstream_healthy", "upstream", "r0") == 0 &&
			gwy.counter(t, "spigot_gateway_upstream_healthy", "upstream", "r1") == 0
	})

	client.CloseIdleConnections()
	gwy.ts.Close()
	gwy.g.Close()
	for _, r := range reps {
		r.close()
	}
	http.DefaultClient.CloseIdleConnections()
	checkGoroutines(t, baseline)
}

// TestDrainingReplica: once a Spigot replica starts shutting down (its
// /ready turns 503 while its running streams finish), the gateway sends
// it no new requests; its running stream still completes.
func TestDrainingReplica(t *testing.T) {
	reps := []*replica{newReplica(t, 4), newReplica(t, 4)}
	gwy := newGW(t, testConfig(t, reps[0].url, reps[1].url))
	reps[0].model.delay.Store(int64(5 * time.Millisecond))
	// A long stream straight to replica 0 keeps its shutdown waiting.
	running := make(chan *streamResult, 1)
	var chunks atomic.Int64
	go func() {
		running <- stream(context.Background(), http.DefaultClient, reps[0].url, "/v1/completions",
			completionBody("Once upon a time", 100), func() { chunks.Add(1) })
	}()
	waitFor(t, "the long stream to start", 10*time.Second, func() bool { return chunks.Load() > 0 })
	drained := make(chan struct{})
	go func() { reps[0].drain(30 * time.Second); close(drained) }()
	waitFor(t, "the gateway to see replica 0 draining", 5*time.Second, func() bool {
		return gwy.counter(t, "spigot_gateway_upstream_healthy", "upstream", "r0") == 0
	})
	before := gwy.counter(t, "spigot_gateway_upstream_requests_total", "upstream", "r0")
	for i := range 6 {
		res := stream(context.Background(), http.DefaultClient, gwy.ts.URL, "/v1/completions", completionBody(fmt.Sprintf("Prompt %d:", i), 5), nil)
		if err := res.check(res.text); err != nil || res.upstream != "r1" {
			t.Errorf("request %d during the drain: %v, served by %q", i, err, res.upstream)
		}
	}
	if after := gwy.counter(t, "spigot_gateway_upstream_requests_total", "upstream", "r0"); after != before {
		t.Errorf("the draining replica got %g requests", after-before)
	}
	res := <-running
	if len(res.finishes) != 1 || res.dones != 1 || len(res.errors) != 0 {
		t.Errorf("the draining replica's own stream: finishes %q, %d [DONE], errors %q", res.finishes, res.dones, res.errors)
	}
	<-drained
}
