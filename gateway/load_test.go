package gateway

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestManyStreams runs 500 concurrent streams through the gateway to
// three scripted upstreams that pace their chunks: every stream arrives
// whole, the load spreads over the upstreams, and no goroutine is left.
func TestManyStreams(t *testing.T) {
	baseline := runtime.NumGoroutine()
	const streams, chunks = 500, 20
	texts := make([]string, chunks)
	for i := range texts {
		texts[i] = fmt.Sprintf(" t%d", i)
	}
	want := strings.Join(texts, "")
	paced := func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, s := range texts {
			fmt.Fprintf(w, "data: {\"id\":\"cmpl-x\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":%q,\"finish_reason\":null}]}\n\n", s)
			w.(http.Flusher).Flush()
			time.Sleep(2 * time.Millisecond)
		}
		fmt.Fprint(w, "data: {\"id\":\"cmpl-x\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\"\",\"finish_reason\":\"length\"}]}\n\ndata: [DONE]\n\n")
	}
	fs := []*fake{newFake(t, paced), newFake(t, paced), newFake(t, paced)}
	gwy := newGW(t, fakeConfig(t, KindSpigot, "", nil, fs...))
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: streams}}
	results := make([]*streamResult, streams)
	var wg sync.WaitGroup
	for i := range streams {
		wg.Go(func() {
			results[i] = stream(context.Background(), client, gwy.ts.URL, "/v1/completions",
				fmt.Sprintf(`{"model":"m","prompt":"prompt %d","stream":true}`, i), nil)
		})
	}
	wg.Wait()
	per := map[string]int{}
	for i, res := range results {
		if err := res.check(want); err != nil {
			t.Errorf("stream %d: %v", i, err)
		}
		per[res.upstream]++
	}
	for _, f := range fs {
		if n := f.posts.Load(); n < streams/10 {
			t.Errorf("an upstream got %d of %d streams (%v)", n, streams, per)
		}
	}
	client.CloseIdleConnections()
	gwy.ts.Close()
	gwy.g.Close()
	for _, f := range fs {
		f.ts.Close()
	}
	checkGoroutines(t, baseline)
}
