package gateway

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// proc is a spigot process the test started.
type proc struct {
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// start runs bin with args and waits until GET url/ready answers 200.
// Cleanup ends it (SIGTERM, then SIGKILL).
func start(t *testing.T, bin, url string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), out: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // dies with the test
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // Pdeathsig follows the starting thread (go.dev/issue/27505)
		defer runtime.UnlockOSThread()
		err := p.cmd.Start()
		started <- err
		if err == nil {
			p.cmd.Wait()
			close(p.exited)
		}
	}()
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", args[0], p.out.String())
		}
	})
	waitFor(t, args[0]+" ready", 60*time.Second, func() bool {
		select {
		case <-p.exited:
			t.Fatalf("%s exited: %s", args[0], p.out.String())
		default:
		}
		resp, err := http.Get(url + "/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// buildSpigot builds cmd/spigot into a temporary directory.
func buildSpigot(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "spigot")
	build := exec.Command("go", "build", "-o", bin, "./cmd/spigot")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestProcessesFailover runs the scenario with real processes on
// loopback: `spigot gateway` in front of three `spigot serve` replicas
// (the built-in demo model), 32 concurrent greedy streams (completions
// and chats over 8 prompts). Once every stream is under way the replica
// serving the most is SIGKILLed; once they have all gone on, the one now
// serving the most gets SIGTERM, and drains with a 1 s shutdown timeout,
// so that the streams still running there are ended and continue
// elsewhere. Every stream must end with exactly the text of an
// undisturbed run, one finish_reason, one [DONE], one id and no error
// event. Afterwards nothing is in flight, the surviving replica runs no
// sequence and holds no KV block, and neither the gateway nor the
// survivor has more goroutines than before the load (counted net of
// those that serve open connections).
func TestProcessesFailover(t *testing.T) {
	bin := buildSpigot(t)
	var urls []string
	procs := map[string]*proc{}
	for i := range 3 {
		addr := freeAddr(t)
		url := "http://" + addr
		procs[fmt.Sprintf("r%d", i)] = start(t, bin, url, "serve", "--addr", addr, "--threads", "1", "--parallel", "16", "--shutdown-timeout", "1s")
		urls = append(urls, url)
	}
	cfg := filepath.Join(t.TempDir(), "gateway.yaml")
	var y strings.Builder
	y.WriteString("upstreams:\n")
	for i, u := range urls {
		fmt.Fprintf(&y, "  - {name: r%d, kind: spigot, url: %s, models: [spigot-demo-random]}\n", i, u)
	}
	y.WriteString("health: {interval: 100ms, cooldown: 1s}\n")
	if err := os.WriteFile(cfg, []byte(y.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	gaddr := freeAddr(t)
	gurl := "http://" + gaddr
	gproc := start(t, bin, gurl, "gateway", "--config", cfg, "--addr", gaddr)

	const streams, maxTokens = 32, 2000
	body := func(i int) (path, body string) {
		prompt := fmt.Sprintf("Story %d: once upon a time", i%8)
		if i%2 == 0 {
			return "/v1/completions", fmt.Sprintf(`{"model":"spigot-demo-random","prompt":%q,"max_tokens":%d,"ignore_eos":true,"temperature":0,"stream":true}`, prompt, maxTokens)
		}
		return "/v1/chat/completions", fmt.Sprintf(`{"model":"spigot-demo-random","messages":[{"role":"user","content":%q}],"max_tokens":%d,"ignore_eos":true,"temperature":0,"stream":true}`, prompt, maxTokens)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: streams}}
	// The undisturbed runs, one at a time, before any replica fails.
	refs := map[string]string{}
	for i := range 16 {
		path, b := body(i)
		ref := stream(context.Background(), client, gurl, path, b, nil)
		if err := ref.check(ref.text); err != nil || len(ref.text) == 0 {
			t.Fatalf("reference run %d: %v", i, err)
		}
		refs[b] = ref.text
	}
	client.CloseIdleConnections()
	baseGW := fixedGoroutines(t, gurl, gproc, gaddr)
	baseSurvivor := map[string]int{}
	for i, u := range urls {
		name := fmt.Sprintf("r%d", i)
		baseSurvivor[name] = fixedGoroutines(t, u, procs[name], strings.TrimPrefix(u, "http://"))
	}

	var counts [streams]atomic.Int64
	results := make([]*streamResult, streams)
	var wg sync.WaitGroup
	for i := range streams {
		path, b := body(i)
		wg.Go(func() {
			results[i] = stream(context.Background(), client, gurl, path, b, func() { counts[i].Add(1) })
		})
	}
	progress := func(what string, n int64) {
		waitFor(t, what, 60*time.Second, func() bool {
			for i := range counts {
				if counts[i].Load() < n {
					return false
				}
			}
			return true
		})
	}
	// busiest is the live replica with the most streams in flight.
	busiest := func(skip string) string {
		m := metricsText(t, gurl)
		best, most := "", -1
		for name := range procs {
			var n int
			if name == skip {
				continue
			}
			for line := range strings.Lines(m) {
				if v, ok := strings.CutPrefix(line, fmt.Sprintf(`spigot_gateway_upstream_in_flight{upstream=%q} `, name)); ok {
					fmt.Sscan(v, &n)
				}
			}
			if n > most {
				best, most = name, n
			}
		}
		if most <= 0 {
			t.Fatalf("no replica has streams in flight:\n%s", m)
		}
		t.Logf("%s has %d streams in flight", best, most)
		return best
	}
	progress("every stream to start", 20)
	killed := busiest("")
	procs[killed].cmd.Process.Signal(syscall.SIGKILL)
	progress("every stream to go on after the kill", 100)
	drained := busiest(killed)
	procs[drained].cmd.Process.Signal(syscall.SIGTERM)
	wg.Wait()
	select {
	case <-procs[drained].exited:
	case <-time.After(20 * time.Second):
		t.Errorf("the drained replica %s did not exit", drained)
	}
	if code := procs[drained].cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("the drained replica exited with %d:\n%s", code, procs[drained].out.String())
	}

	onKilled := 0
	for i, res := range results {
		_, b := body(i)
		if err := res.check(refs[b]); err != nil {
			t.Errorf("stream %d (on %s): %v", i, res.upstream, err)
		}
		if res.upstream == killed {
			onKilled++
		}
	}
	m := metricsText(t, gurl)
	var mid float64
	cut := map[string]float64{}
	for line := range strings.Lines(m) {
		if v, ok := strings.CutPrefix(line, `spigot_gateway_failovers_total{stage="mid_stream"} `); ok {
			fmt.Sscan(v, &mid)
		}
		for _, name := range []string{killed, drained} {
			if v, ok := strings.CutPrefix(line, fmt.Sprintf(`spigot_gateway_upstream_requests_total{outcome="failed",upstream=%q} `, name)); ok {
				var n float64
				fmt.Sscan(v, &n)
				cut[name] = n
			}
		}
		if strings.HasPrefix(line, "spigot_gateway_upstream_in_flight{") && !strings.HasSuffix(line, " 0\n") {
			t.Errorf("after the load: %s", strings.TrimSpace(line))
		}
	}
	t.Logf("%d streams started on %s (killed); streams cut: %v; %g mid-stream failovers", onKilled, killed, cut, mid)
	if onKilled == 0 || mid < float64(onKilled) || cut[killed] < float64(onKilled) || cut[drained] == 0 {
		t.Errorf("want every stream on %s (killed) and some on %s (drained) cut and continued", killed, drained)
	}

	// Leaks: the survivor, and the gateway.
	var survivor string
	for name := range procs {
		if name != killed && name != drained {
			survivor = name
		}
	}
	surl := urls[survivor[1]-'0']
	sm := metricsText(t, surl)
	for _, series := range []string{"spigot_kvcache_blocks_used ", "spigot_engine_running_sequences ", "spigot_engine_queued_requests "} {
		for line := range strings.Lines(sm) {
			if strings.HasPrefix(line, series) && strings.TrimSpace(strings.TrimPrefix(line, series)) != "0" {
				t.Errorf("survivor %s after the load: %s", survivor, strings.TrimSpace(line))
			}
		}
	}
	client.CloseIdleConnections()
	waitFor(t, "the gateway's goroutines to settle", 10*time.Second, func() bool {
		return fixedGoroutines(t, gurl, gproc, gaddr) <= baseGW
	})
	waitFor(t, "the survivor's goroutines to settle", 10*time.Second, func() bool {
		return fixedGoroutines(t, surl, procs[survivor], strings.TrimPrefix(surl, "http://")) <= baseSurvivor[survivor]
	})
	t.Logf("goroutines net of connections: gateway %d (before the load %d), survivor %d (%d)", fixedGoroutines(t, gurl, gproc, gaddr), baseGW,
		fixedGoroutines(t, surl, procs[survivor], strings.TrimPrefix(surl, "http://")), baseSurvivor[survivor])
}

// fixedGoroutines returns a process's goroutines (go_goroutines on its
// /metrics) less those that serve its open TCP connections: one per
// connection accepted on listen (the server's), two per connection it
// made (an http.Transport connection's reader and writer). What is left
// is the goroutines that outlive connections: a leak shows there.
func fixedGoroutines(t *testing.T, url string, p *proc, listen string) int {
	t.Helper()
	var g int
	for line := range strings.Lines(metricsText(t, url)) {
		if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
			fmt.Sscan(v, &g)
		}
	}
	accepted, dialed := tcpConns(t, p.cmd.Process.Pid, listen)
	return g - accepted - 2*dialed
}

// tcpConns counts a process's established TCP connections: those
// accepted on the listen address (host:port) and the others.
func tcpConns(t *testing.T, pid int, listen string) (accepted, dialed int) {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		link, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if inode, ok := strings.CutPrefix(link, "socket:["); ok {
			inodes[strings.TrimSuffix(inode, "]")] = true
		}
	}
	_, port, _ := net.SplitHostPort(listen)
	var lport int
	fmt.Sscan(port, &lport)
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		// sl local_address rem_address st ... inode (field 9)
		if len(f) < 10 || f[3] != "01" || !inodes[f[9]] {
			continue
		}
		var p int
		if _, h, ok := strings.Cut(f[1], ":"); ok {
			fmt.Sscanf(h, "%X", &p)
		}
		if p == lport {
			accepted++
		} else {
			dialed++
		}
	}
	return accepted, dialed
}

func metricsText(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
