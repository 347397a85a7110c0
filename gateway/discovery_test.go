package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spigot-llm/spigot/metrics"
)

// fakeDNS answers lookups of one name with the addresses a test sets.
type fakeDNS struct {
	host    string
	mu      sync.Mutex
	addrs   []netip.Addr
	err     error
	lookups atomic.Int64
}

func (d *fakeDNS) set(err error, addrs ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.err, d.addrs = err, nil
	for _, a := range addrs {
		d.addrs = append(d.addrs, netip.MustParseAddr(a))
	}
}

func (d *fakeDNS) lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	defer d.lookups.Add(1)
	if host != d.host {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.addrs), d.err
}

// addrTransport sends requests for each fake address to a real server.
func addrTransport(t *testing.T, to map[string]*fake) http.RoundTripper {
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		f, ok := to[addr]
		if !ok {
			return nil, fmt.Errorf("dial %s: no server there", addr)
		}
		var d net.Dialer
		return d.DialContext(ctx, network, f.ts.Listener.Addr().String())
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// TestDNSDiscovery: an upstream with discovery: dns becomes one upstream
// per address of its name, each joining after its first passing check; an
// address that leaves the answer drains (no new requests, the one in
// flight finishes) and is then dropped; one that comes back while
// draining is taken back; a failed lookup changes nothing; "no such
// host" drains them all.
func TestDNSDiscovery(t *testing.T) {
	gate := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(gate) }) }
	defer release()
	held := func(w http.ResponseWriter, r *http.Request, body []byte) {
		if !strings.Contains(string(body), "hold") {
			okStream(w, r, body)
			return
		}
		sseChunks(w, false, "cmpl-held", []string{"a"}, "", 0)
		<-gate
		sseChunks(w, false, "cmpl-held", []string{"b"}, "stop", 3)
	}
	f1, f2, f3 := newFake(t, held), newFake(t, okStream), newFake(t, okStream)
	f2.healthy.Store(false)
	tr := addrTransport(t, map[string]*fake{"10.0.0.1:8080": f1, "10.0.0.2:8080": f2, "[fd00::3]:8080": f3})
	cfg, err := ParseConfig([]byte("upstreams:\n" +
		"- {name: pool, kind: spigot, url: 'http://pool.test:8080', models: [m], weight: 3, discovery: dns, resolve_interval: 10ms}\n" +
		"health: {interval: 10ms, timeout: 1s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	dns := &fakeDNS{host: "pool.test"}
	dns.set(nil, "10.0.0.2", "10.0.0.1")
	reg := metrics.NewRegistry()
	g := New(cfg, Options{Registry: reg, Transport: tr, LookupNetIP: dns.lookup})
	ts := httptest.NewServer(g)
	defer g.Close()
	defer ts.Close()
	gwy := &gw{g: g, reg: reg, ts: ts}

	names := func() string {
		var s []string
		for _, u := range g.Upstreams() {
			state := "out"
			switch {
			case u.Draining():
				state = "draining"
			case u.Healthy(time.Now()):
				state = "in"
			}
			s = append(s, u.Name()+" "+state)
		}
		return strings.Join(s, ", ")
	}
	wait := func(want string) {
		t.Helper()
		waitFor(t, want, 10*time.Second, func() bool { return names() == want })
	}
	complete := func(prompt string) string {
		t.Helper()
		res := stream(context.Background(), http.DefaultClient, ts.URL, "/v1/completions", `{"model":"m","prompt":"`+prompt+`","stream":true}`, nil)
		if err := res.check("ab"); err != nil {
			t.Fatalf("prompt %s: %v", prompt, err)
		}
		return res.upstream
	}

	// Both found; 10.0.0.2 fails its check, so it has not joined and
	// gets nothing, even when 10.0.0.1 is the prefix's.
	wait("pool/10.0.0.1 in, pool/10.0.0.2 out")
	u := g.Upstreams()[0]
	if u.cfg.URL != "http://10.0.0.1:8080" || u.cfg.Kind != KindSpigot || u.cfg.Weight != 3 || !slices.Equal(u.cfg.Models, []string{"m"}) {
		t.Errorf("found upstream %+v, want the entry's kind, models and weight and the address in the URL", u.cfg)
	}
	for i := range 5 {
		if got := complete(fmt.Sprint("p", i)); got != "pool/10.0.0.1" {
			t.Fatalf("request went to %s before pool/10.0.0.2 passed a check", got)
		}
	}
	// A stream held open on 10.0.0.1.
	done := make(chan *streamResult, 1)
	go func() {
		done <- stream(context.Background(), http.DefaultClient, ts.URL, "/v1/completions", `{"model":"m","prompt":"hold","stream":true}`, nil)
	}()
	waitFor(t, "the held stream to reach 10.0.0.1", 10*time.Second, func() bool { return f1.posts.Load() == 6 })
	f2.healthy.Store(true)
	wait("pool/10.0.0.1 in, pool/10.0.0.2 in")

	// 10.0.0.1 leaves DNS: it drains, new requests go to 10.0.0.2, and the
	// held stream is not cut.
	dns.set(nil, "10.0.0.2")
	wait("pool/10.0.0.1 draining, pool/10.0.0.2 in")
	for i := range 5 {
		if got := complete(fmt.Sprint("q", i)); got != "pool/10.0.0.2" {
			t.Fatalf("request went to %s, want the one not draining", got)
		}
	}
	if n := gwy.counter(t, "spigot_gateway_upstream_in_flight", "upstream", "pool/10.0.0.1"); n != 1 {
		t.Errorf("in flight on the draining upstream = %g, want 1", n)
	}
	// Back in DNS while draining: taken back after a passing check, then
	// gone again.
	dns.set(nil, "10.0.0.1", "10.0.0.2")
	wait("pool/10.0.0.1 in, pool/10.0.0.2 in")
	dns.set(nil, "10.0.0.2")
	wait("pool/10.0.0.1 draining, pool/10.0.0.2 in")
	release()
	if res := <-done; res.check("ab") != nil || res.upstream != "pool/10.0.0.1" {
		t.Errorf("held stream on %s: %v, want it to finish on pool/10.0.0.1", res.upstream, res.check("ab"))
	}
	// Drained: dropped, with its series.
	wait("pool/10.0.0.2 in")
	if n := gwy.counter(t, "spigot_gateway_upstream_requests_total", "upstream", "pool/10.0.0.1"); n != 0 {
		t.Errorf("a dropped upstream still has %g requests counted", n)
	}

	// A new address joins (an IPv6 one: bracketed in the URL).
	dns.set(nil, "10.0.0.2", "fd00::3")
	wait("pool/10.0.0.2 in, pool/fd00::3 in")
	if u := g.Upstreams()[1]; u.cfg.URL != "http://[fd00::3]:8080" {
		t.Errorf("URL %s, want http://[fd00::3]:8080", u.cfg.URL)
	}

	// A failed lookup keeps what was found.
	dns.set(errors.New("i/o timeout"))
	n := dns.lookups.Load()
	waitFor(t, "three failed lookups", 10*time.Second, func() bool { return dns.lookups.Load() >= n+3 })
	if got, want := names(), "pool/10.0.0.2 in, pool/fd00::3 in"; got != want {
		t.Errorf("after failed lookups: %s, want %s", got, want)
	}

	// No such host: nothing left; the model is still known (502
	// upstream_unavailable, not 404), and /ready says no upstream is
	// healthy.
	dns.set(&net.DNSError{Err: "no such host", Name: "pool.test", IsNotFound: true})
	wait("")
	code, body, _ := post(t, ts.URL, "/v1/completions", `{"model":"m","prompt":"x"}`)
	if code != http.StatusBadGateway || !strings.Contains(string(body), "upstream_unavailable") {
		t.Errorf("no upstream: %d %s, want 502 upstream_unavailable", code, body)
	}
	resp, err := http.Get(ts.URL + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/ready = %d with no upstream, want 503", resp.StatusCode)
	}
}
