package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
)

// TestStaleConnection: an upstream that closes a kept-alive connection
// when the next POST arrives on it (as llama-server does when the request
// meets its 5 s idle timeout) costs the client nothing: the gateway sends
// the request again on a new connection.
func TestStaleConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns, closed atomic.Int64
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			wg.Go(func() {
				defer c.Close()
				br := bufio.NewReader(c)
				posts := 0
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					body := `{"status":"ok"}`
					if req.Method == http.MethodPost {
						if posts++; posts == 2 {
							closed.Add(1)
							return // the second POST on a connection: closed unanswered
						}
						body = `{"id":"cmpl-1","object":"text_completion","created":1,"model":"m","choices":[{"index":0,"text":"hi","finish_reason":"stop"}]}`
					}
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
				}
			})
		}
	})
	cfg, err := ParseConfig(fmt.Appendf(nil, "upstreams:\n- {name: u, kind: openai, url: \"http://%s\", models: [m]}\nhealth: {interval: 1h}\n", ln.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	gwy := newGW(t, cfg)
	for i := range 3 {
		status, body, _ := post(t, gwy.ts.URL, "/v1/completions", `{"model":"m","prompt":"x","max_tokens":1}`)
		if status != http.StatusOK {
			t.Fatalf("request %d: status %d: %s", i, status, body)
		}
	}
	if closed.Load() == 0 {
		t.Errorf("no connection was closed under a request (%d connections): the test tested nothing", conns.Load())
	}
	if n := gwy.counter(t, "spigot_gateway_upstream_requests_total", "outcome", "failed"); n != 0 {
		t.Errorf("%v failed upstream requests, want 0", n)
	}
}
