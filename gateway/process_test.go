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

// TestProcessesKill runs `spigot gateway` in front of two `spigot serve`
// processes (the built-in demo model) and SIGKILLs the one serving the
// streams while they run: every stream still ends with exactly the text of
// an undisturbed run (the continuation starts from the token ids generated
// so far), one finish_reason, one [DONE] and one id, and no error event;
// the gateway counts a mid-stream failover.
func TestProcessesKill(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "spigot")
	build := exec.Command("go", "build", "-o", bin, "./cmd/spigot")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var urls []string
	procs := map[string]*proc{}
	for i := range 2 {
		addr := freeAddr(t)
		url := "http://" + addr
		procs[fmt.Sprintf("r%d", i)] = start(t, bin, url, "serve", "--addr", addr, "--threads", "1", "--parallel", "4")
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
	start(t, bin, gurl, "gateway", "--config", cfg, "--addr", gaddr)

	// The same prompt on every stream: affinity puts them all on one
	// replica, the one to kill (3 requests: a 4th would exceed the
	// affinity factor's 2 × (0 + 1) and go to the other replica).
	const streams = 3
	body := `{"model":"spigot-demo-random","prompt":"Once upon a time","max_tokens":1500,"ignore_eos":true,"temperature":0,"stream":true}`
	var counts [streams]atomic.Int64
	results := make([]*streamResult, streams)
	var wg sync.WaitGroup
	for i := range streams {
		wg.Go(func() {
			results[i] = stream(context.Background(), http.DefaultClient, gurl, "/v1/completions", body, func() { counts[i].Add(1) })
		})
	}
	waitFor(t, "streams to start", 30*time.Second, func() bool {
		for i := range counts {
			if counts[i].Load() < 20 {
				return false
			}
		}
		return true
	})
	// Stream 0's first upstream is in its response header, which the
	// callback cannot see yet; the gateway's in-flight gauge says where
	// the streams are.
	victim := ""
	for name := range procs {
		if strings.Contains(metricsText(t, gurl), fmt.Sprintf(`spigot_gateway_upstream_in_flight{upstream=%q} %d`, name, streams)) {
			victim = name
		}
	}
	if victim == "" {
		t.Fatalf("the streams are not all on one replica:\n%s", metricsText(t, gurl))
	}
	procs[victim].cmd.Process.Signal(syscall.SIGKILL)
	wg.Wait()

	ref := stream(context.Background(), http.DefaultClient, gurl, "/v1/completions", body, nil)
	if err := ref.check(ref.text); err != nil {
		t.Fatalf("reference run: %v", err)
	}
	for i, res := range results {
		if err := res.check(ref.text); err != nil {
			t.Errorf("stream %d: %v", i, err)
		}
		if res.upstream != victim {
			t.Errorf("stream %d started on %s, not on %s", i, res.upstream, victim)
		}
	}
	m := metricsText(t, gurl)
	if !strings.Contains(m, `spigot_gateway_failovers_total{stage="mid_stream"}`) {
		t.Errorf("no mid-stream failover counted:\n%s", m)
	}
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
