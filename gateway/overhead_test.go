package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestOverhead's load; the defaults are a short run that CI can afford.
// The figure is
//
//	go test ./gateway -run '^TestOverhead$' -v -gwload.streams=500 -gwload.duration=60s
var (
	loadStreams  = flag.Int("gwload.streams", 50, "TestOverhead: concurrent streams on each path")
	loadDuration = flag.Duration("gwload.duration", 2*time.Second, "TestOverhead: how long each path (direct, through the gateway) carries the load")
	loadTokens   = flag.Int("gwload.tokens", 64, "TestOverhead: tokens per stream")
	loadInterval = flag.Duration("gwload.interval", 20*time.Millisecond, "TestOverhead: the scripted upstream's time to the first token and between tokens")
	loadBaseline = flag.Bool("gwload.baseline", false, "TestOverhead: also measure a bare copying relay, for comparison")
)

// childEnv, when set in a test binary's environment, makes it a gateway
// process (gatewayChild) for the YAML configuration it holds instead of
// running tests: TestOverhead measures the gateway's CPU time in a
// process of its own.
const childEnv = "SPIGOT_GATEWAY_TEST_CHILD"

func TestMain(m *testing.M) {
	if cfg := os.Getenv(childEnv); cfg != "" {
		if err := gatewayChild(cfg); err != nil {
			fmt.Fprintln(os.Stderr, "gateway child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// gatewayChild serves a gateway for the YAML configuration cfg on a free
// loopback port, which it prints as "listening ADDR", until its stdin
// closes. GET /test/rusage answers the process's CPU time so far. With
// SPIGOT_GATEWAY_TEST_CHILD_CPUPROFILE=FILE it writes a CPU profile
// there. With SPIGOT_GATEWAY_TEST_CHILD_PROXY=URL it serves, instead of
// the gateway, copyRelay to URL: what relaying streams costs without the
// gateway's work.
func gatewayChild(cfg string) error {
	if path := os.Getenv(childEnv + "_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var h http.Handler
	if target := os.Getenv(childEnv + "_PROXY"); target != "" {
		h = copyRelay(target)
	} else {
		c, err := ParseConfig([]byte(cfg))
		if err != nil {
			return err
		}
		g := New(c, Options{})
		defer g.Close()
		h = g
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/", h)
	mux.HandleFunc("GET /test/rusage", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(selfCPU())
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)
	fmt.Printf("listening %s\n", ln.Addr())
	io.Copy(io.Discard, os.Stdin)
	hs.Close()
	return nil
}

// copyRelay is the least a streaming proxy does: it sends each request
// to target and copies the answer back, flushing after every read, with
// no parsing, routing or deadlines.
func copyRelay(target string) http.Handler {
	client := &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024}}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, err := http.NewRequestWithContext(r.Context(), r.Method, target+r.URL.Path, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		req.Header.Set("Content-Type", r.Header.Get("Content-Type"))
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		w.WriteHeader(resp.StatusCode)
		buf := make([]byte, 32<<10)
		for {
			n, err := resp.Body.Read(buf)
			if n > 0 {
				if _, err := w.Write(buf[:n]); err != nil {
					return
				}
				w.(http.Flusher).Flush()
			}
			if err != nil {
				return
			}
		}
	})
}

// selfCPU is the calling process's user plus system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// startGatewayChild runs this test binary as a gateway process for cfg
// and returns its base URL; cleanup ends it.
func startGatewayChild(t *testing.T, cfg string, env ...string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), childEnv+"="+cfg), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	runtime.LockOSThread() // Pdeathsig follows the starting thread (go.dev/issue/27505)
	err = cmd.Start()
	runtime.UnlockOSThread()
	if err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		stdin.Close()
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	if err != nil || !ok {
		t.Fatalf("gateway child: read %q: %v", line, err)
	}
	return "http://" + addr
}

// scriptedUpstream is an OpenAI-compatible server that streams every chat
// completion as tokens chunks " t0", " t1", ..., the first after interval
// and the others interval apart (a fixed decode rate), with the fields
// Spigot's and llama.cpp's chunks have, then the finish and usage chunks
// and [DONE]. It counts the connections it accepts.
type scriptedUpstream struct {
	ts    *httptest.Server
	conns atomic.Int64
}

func newScriptedUpstream(t testing.TB, tokens int, interval time.Duration) *scriptedUpstream {
	t.Helper()
	u := &scriptedUpstream{}
	var seq atomic.Int64
	u.ts = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			io.WriteString(w, `{"status":"ok"}`)
			return
		}
		io.Copy(io.Discard, r.Body)
		start := time.Now()
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		head := fmt.Appendf(nil, `data: {"id":"chatcmpl-%024d","object":"chat.completion.chunk","created":%d,"model":"m","system_fingerprint":"b7000-scripted","choices":[{"index":0,`,
			seq.Add(1), start.Unix())
		var buf []byte
		write := func(rest string) bool {
			buf = append(append(buf[:0], head...), rest...)
			if _, err := w.Write(buf); err != nil {
				return false
			}
			w.(http.Flusher).Flush()
			return true
		}
		if !write(`"delta":{"role":"assistant","content":null},"logprobs":null,"finish_reason":null}]}` + "\n\n") {
			return
		}
		for i := range tokens {
			time.Sleep(time.Until(start.Add(time.Duration(i+1) * interval)))
			if !write(fmt.Sprintf(`"delta":{"content":" t%d"},"logprobs":null,"finish_reason":null}]}`+"\n\n", i)) {
				return
			}
		}
		write(`"delta":{},"logprobs":null,"finish_reason":"length"}]}` + "\n\n")
		fmt.Fprintf(w, "%s"+`"delta":{},"finish_reason":null}],"usage":{"prompt_tokens":9,"completion_tokens":%d,"total_tokens":%d}}`+"\n\ndata: [DONE]\n\n",
			bytes.TrimSuffix(head, []byte(`{"index":0,`)), tokens, tokens+9)
	}))
	u.ts.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			u.conns.Add(1)
		}
	}
	u.ts.Start()
	t.Cleanup(u.ts.Close)
	return u
}

// overheadStream is what the client measured of one stream.
type overheadStream struct {
	ttft   time.Duration // request sent to the first chunk with text
	tokens int           // chunks with text
	err    error
}

// runOverheadStream posts a streamed chat completion to url and reads it
// with as little work as it can while still checking that it is whole:
// the text the scripted upstream sends, one finish_reason, one [DONE].
func runOverheadStream(ctx context.Context, client *http.Client, url, want string) overheadStream {
	var s overheadStream
	body := `{"model":"m","messages":[{"role":"user","content":"Once upon a time"}],"stream":true,"max_tokens":1000}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		s.err = err
		return s
	}
	req.Header.Set("Content-Type", "application/json")
	t0 := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		s.err = err
		return s
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		s.err = fmt.Errorf("status %d: %s", resp.StatusCode, b)
		return s
	}
	br := bufio.NewReaderSize(resp.Body, 4096)
	var text []byte
	finishes, dones := 0, 0
	for {
		line, err := br.ReadSlice('\n')
		if err == io.EOF && len(line) == 0 {
			break
		}
		if err != nil {
			s.err = err
			return s
		}
		data, ok := bytes.CutPrefix(line, []byte("data: "))
		if !ok {
			continue
		}
		data = bytes.TrimSpace(data)
		if dones > 0 {
			s.err = fmt.Errorf("event after [DONE]: %q", data)
			return s
		}
		if string(data) == "[DONE]" {
			dones++
			continue
		}
		if bytes.Contains(data, []byte(`"error"`)) {
			s.err = fmt.Errorf("error event: %s", data)
			return s
		}
		if _, c, ok := bytes.Cut(data, []byte(`"content":"`)); ok {
			c, _, _ = bytes.Cut(c, []byte(`"`))
			if len(c) > 0 {
				if s.tokens == 0 {
					s.ttft = time.Since(t0)
				}
				s.tokens++
				text = append(text, c...)
			}
		}
		if bytes.Contains(data, []byte(`"finish_reason":"`)) {
			finishes++
		}
	}
	if string(text) != want || finishes != 1 || dones != 1 {
		s.err = fmt.Errorf("text %q (want %q), %d finish reasons, %d [DONE]", text, want, finishes, dones)
	}
	return s
}

// overheadPath is one way to the upstream and what the load measured on
// it.
type overheadPath struct {
	name    string
	url     string
	cpu     func() time.Duration // the relaying process's CPU time; nil: none
	ttfts   []time.Duration
	tokens  int
	streams int
	errs    []error
	cpuUsed time.Duration // cpu's difference over the phases
	conns   int64         // connections the upstream accepted
}

// TestOverhead measures what the gateway adds to streams: W concurrent
// streams (-gwload.streams), each a chat completion that a scripted
// upstream answers at a fixed rate, go directly to the upstream and
// through a gateway running in a process of its own (this test binary,
// see TestMain), in alternating phases with the same client, for
// -gwload.duration each. It reports the time to first token on both
// paths (so the gateway's added p50 and p99), and the gateway process's
// CPU time per token relayed. With -gwload.baseline a third path goes
// through copyRelay in a process of its own: the cost of relaying alone. It checks that every stream arrived whole on every
// path; the figures are logged, not asserted (BENCHMARKS.md has them).
func TestOverhead(t *testing.T) {
	W, tokens, interval := *loadStreams, *loadTokens, *loadInterval
	if W < 1 || tokens < 1 || interval <= 0 || *loadDuration <= 0 {
		t.Fatalf("bad -gwload flags: streams %d, tokens %d, interval %v, duration %v", W, tokens, interval, *loadDuration)
	}
	var want strings.Builder
	for i := range tokens {
		fmt.Fprintf(&want, " t%d", i)
	}
	up := newScriptedUpstream(t, tokens, interval)
	client := &http.Client{Transport: &http.Transport{
		MaxIdleConns: 8 * W, MaxIdleConnsPerHost: 2 * W, DisableCompression: true, IdleConnTimeout: time.Minute}}
	t.Cleanup(client.CloseIdleConnections)
	cpuOf := func(base string) func() time.Duration {
		return func() time.Duration {
			resp, err := client.Get(base + "/test/rusage")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var d time.Duration
			if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
				t.Fatal(err)
			}
			return d
		}
	}
	cfg := fmt.Sprintf("upstreams:\n- {name: u, kind: openai, url: %q, models: [m]}\n", up.ts.URL)
	gwURL := startGatewayChild(t, cfg)
	paths := []*overheadPath{
		{name: "direct", url: up.ts.URL},
		{name: "gateway", url: gwURL, cpu: cpuOf(gwURL)},
	}
	if *loadBaseline {
		rpURL := startGatewayChild(t, cfg, childEnv+"_PROXY="+up.ts.URL)
		paths = append(paths, &overheadPath{name: "relay", url: rpURL, cpu: cpuOf(rpURL)})
	}

	// phase runs W workers on p for d: each starts a stream, reads it
	// whole and starts the next until d has passed. Their first streams
	// are spread over one stream's length, as in a steady state.
	streamTime := time.Duration(tokens) * interval
	phase := func(p *overheadPath, d time.Duration, record bool) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		var cpu0 time.Duration
		if p.cpu != nil {
			cpu0 = p.cpu()
		}
		conns0 := up.conns.Load()
		deadline := time.Now().Add(d)
		for w := range W {
			wg.Go(func() {
				time.Sleep(streamTime * time.Duration(w) / time.Duration(W))
				for time.Now().Before(deadline) {
					s := runOverheadStream(context.Background(), client, p.url, want.String())
					mu.Lock()
					if s.err != nil {
						p.errs = append(p.errs, s.err)
					} else if record {
						p.ttfts = append(p.ttfts, s.ttft)
						p.tokens += s.tokens
						p.streams++
					}
					mu.Unlock()
					if s.err != nil {
						return
					}
				}
			})
		}
		wg.Wait()
		if record {
			if p.cpu != nil {
				p.cpuUsed += p.cpu() - cpu0
			}
			p.conns += up.conns.Load() - conns0
		}
	}

	// Warm up every path (connections, pools), then run rounds of phases
	// of at most 10 s, the order rotating each round, so that drift in
	// the machine's load falls on every path alike.
	for _, p := range paths {
		phase(p, streamTime, false)
	}
	rounds := max(1, int(*loadDuration/(10*time.Second)))
	each := *loadDuration / time.Duration(rounds)
	for r := range rounds {
		for i := range paths {
			phase(paths[(r+i)%len(paths)], each, true)
		}
	}

	for _, p := range paths {
		if len(p.errs) > 0 {
			t.Errorf("%s: %d streams failed; the first: %v", p.name, len(p.errs), errors.Join(p.errs[:min(3, len(p.errs))]...))
		}
		// Every worker ran at least one whole stream in every phase.
		if p.streams < W*rounds || p.tokens != p.streams*tokens {
			t.Errorf("%s: %d streams, %d tokens; want at least %d streams of %d tokens", p.name, p.streams, p.tokens, W*rounds, tokens)
		}
	}
	// With one upstream a failure could not be hidden by a failover, but
	// the gateway must not have seen one either.
	resp, err := client.Get(gwURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	sawOK := false
	for line := range strings.Lines(string(m)) {
		sawOK = sawOK || strings.HasPrefix(line, "spigot_gateway_upstream_requests_total") && strings.Contains(line, `outcome="ok"`)
		if strings.HasPrefix(line, "spigot_gateway_failovers_total") && !strings.HasSuffix(line, " 0\n") ||
			strings.HasPrefix(line, "spigot_gateway_upstream_requests_total") && !strings.Contains(line, `outcome="ok"`) && !strings.HasSuffix(line, " 0\n") {
			t.Errorf("gateway metrics: %s", strings.TrimSpace(line))
		}
	}
	if !sawOK {
		t.Errorf("gateway metrics: no spigot_gateway_upstream_requests_total{outcome=\"ok\"} in\n%s", m)
	}
	if t.Failed() {
		return
	}
	pct := func(xs []time.Duration, p float64) time.Duration { return xs[min(len(xs)-1, int(p*float64(len(xs))))] }
	t.Logf("%d concurrent streams of %d tokens at %v/token, %v on each path in %d rounds, GOMAXPROCS %d",
		W, tokens, interval, *loadDuration, rounds, runtime.GOMAXPROCS(0))
	t.Logf("%-8s %8s %8s %10s %10s %10s %10s %9s %10s", "path", "streams", "tokens", "TTFT p50", "p90", "p99", "max", "up conns", "CPU/token")
	ms := func(d time.Duration) string { return fmt.Sprintf("%.3fms", float64(d)/float64(time.Millisecond)) }
	for _, p := range paths {
		slices.Sort(p.ttfts)
		x := p.ttfts
		cpu := "-"
		if p.cpu != nil {
			cpu = fmt.Sprintf("%.2fµs", float64(p.cpuUsed)/float64(time.Microsecond)/float64(p.tokens))
		}
		t.Logf("%-8s %8d %8d %10s %10s %10s %10s %9d %10s", p.name, p.streams, p.tokens,
			ms(pct(x, 0.5)), ms(pct(x, 0.9)), ms(pct(x, 0.99)), ms(x[len(x)-1]), p.conns, cpu)
	}
	d := paths[0].ttfts
	for _, p := range paths[1:] {
		t.Logf("%s adds to TTFT: p50 %s, p90 %s, p99 %s; its process used %v of CPU for %d tokens (%.0f%% of a core over its phases)",
			p.name, ms(pct(p.ttfts, 0.5)-pct(d, 0.5)), ms(pct(p.ttfts, 0.9)-pct(d, 0.9)), ms(pct(p.ttfts, 0.99)-pct(d, 0.99)),
			p.cpuUsed.Round(time.Millisecond), p.tokens, 100*p.cpuUsed.Seconds()/(*loadDuration+time.Duration(rounds)*streamTime).Seconds())
	}
}
