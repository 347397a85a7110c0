//go:build linux

package web

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"image/png"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

var screenshotFile = flag.String("screenshot", "", "also write TestE2E's screenshot of the page to this file")

// The metrics TestE2E reads to see that Stop reached the engine; package
// metrics defines them.
const (
	metricFinished = "spigot_engine_requests_finished_total" // {reason="canceled"} counts canceled requests
	metricRunning  = "spigot_engine_running_sequences"
	metricRequests = "spigot_http_requests_total" // {route,code}
)

// TestE2E runs the chat page in chromium against a real `spigot serve` with
// a 110M-parameter random-weight model, over server-sent events and then
// over a WebSocket: an answer streams into the page piece by piece, and
// Stop ends the generation in the server too.
func TestE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("builds spigot and a 120 MB model")
	}
	needChromium(t)
	start := time.Now()
	root, bin := buildSpigot(t)
	tmp := filepath.Dir(bin)
	model := filepath.Join(tmp, "m.gguf")
	vocab := filepath.Join(root, "..", "shared", "vocab", "ggml-vocab-llama-spm.gguf")
	if _, err := os.Stat(vocab); err != nil {
		t.Fatalf("the vocabulary for the test model: %v (../shared must sit beside the project)", err)
	}
	step := time.Now()
	command(t, time.Minute, root, bin, "synth", "--shape", "s110M", "--type", "Q8_0", "-o", model, "--vocab", vocab)
	t.Logf("wrote the model in %v", time.Since(step).Round(time.Millisecond))
	step = time.Now()
	base := startServer(t, bin, "-m", model)
	t.Logf("server ready in %v", time.Since(step).Round(time.Millisecond))

	b := newBrowser(t)
	b.do(t, chromedp.Navigate(base+"/"))
	b.waitPage(t, 10*time.Second, "the model list", func(p page) bool { return p.Model != "" })

	for i, transport := range []string{"sse", "ws"} {
		t.Run(transport, func(t *testing.T) {
			var chats float64 // chat requests over HTTP, which the SSE run made
			if transport == "ws" {
				chats = metric(t, base, metricRequests, `route="/v1/chat/completions"`)
			}
			e2eTransport(t, b, base, transport, 2*i, i == 0)
			// Over WebSocket the page must not fall back to HTTP.
			if transport == "ws" {
				if after := metric(t, base, metricRequests, `route="/v1/chat/completions"`); after != chats {
					t.Errorf("the page sent %v chat requests over HTTP in WebSocket mode", after-chats)
				}
			}
		})
	}
	t.Logf("whole test %v", time.Since(start).Round(time.Millisecond))
}

// e2eTransport runs the page's checks over one transport ("sse" or "ws"),
// with answers answers on the page before: an answer of 300 tokens renders
// as it streams, and Stop ends a long one in the page and in the server.
// shot also takes the screenshot.
func e2eTransport(t *testing.T, b *browser, base, transport string, answers int, shot bool) {
	b.do(t, chromedp.SetValue(chromedp.ID("transport"), transport))

	// 1. An answer of 300 tokens renders as it streams.
	step := time.Now()
	b.do(t,
		chromedp.SetValue(chromedp.ID("max-tokens"), "300"),
		chromedp.SendKeys(chromedp.ID("prompt"), "Tell me a long story about a spigot."),
		chromedp.Click(chromedp.ID("send")),
	)
	var (
		growths  int // samples, taken while the page said it was generating, in which the text had grown
		samples  int
		lastLen  int
		lengths  []int
		deadline = time.Now().Add(60 * time.Second)
		p        page
	)
	for {
		p = b.page(t)
		if p.State != "generating" {
			break
		}
		samples++
		if n := len(p.Text); n > lastLen {
			if lastLen > 0 {
				growths++
			}
			lastLen = n
			lengths = append(lengths, n)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the answer did not finish in 60s; the page shows %+v", p)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("%s: first answer: %v, %d samples while generating, text lengths %v, then %d bytes; stats: %s, first token %s, %s tokens, finish %s",
		transport, time.Since(step).Round(time.Millisecond), samples, lengths, len(p.Text), p.TPS, p.TTFT, p.Tokens, p.Finish)
	if growths < 2 {
		t.Errorf("the answer grew %d times while the page said it was generating; want at least 2 (text lengths %v)", growths, lengths)
	}
	if p.Status != "Done" || p.Text == "" || len(p.Errors) > 0 || p.Answers != answers+1 {
		t.Fatalf("after the first answer: %+v; want status Done, text, no error", p)
	}
	if !regexp.MustCompile(`^\d+\.\d tok/s$`).MatchString(p.TPS) {
		t.Errorf("tokens/s shows %q, want a rate", p.TPS)
	}
	switch p.Finish {
	case "length":
		if !strings.HasPrefix(p.Tokens, "300 ") {
			t.Errorf("finish length with tokens %q, want 300", p.Tokens)
		}
	case "stop": // the random model can draw its end-of-sequence token
	default:
		t.Errorf("finish reason shows %q, want length or stop", p.Finish)
	}
	if p.Elements != 0 {
		t.Errorf("model output made %d elements; it must be text only", p.Elements)
	}

	// 2. The page, as it looks after the first answer.
	if shot {
		shot, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatal(err)
		}
		if cfg, err := png.DecodeConfig(bytes.NewReader(shot)); err != nil || cfg.Width < 800 {
			t.Errorf("screenshot: %dx%d, %v; want a PNG of the window", cfg.Width, cfg.Height, err)
		}
		shotPath := filepath.Join(t.TempDir(), "page.png")
		if *screenshotFile != "" {
			shotPath = *screenshotFile
		}
		if err := os.WriteFile(shotPath, shot, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", shotPath)
	}

	// 3. Stop ends a 2000-token answer, in the page and in the server.
	canceledBefore := metric(t, base, metricFinished, `reason="canceled"`)
	b.do(t,
		chromedp.SetValue(chromedp.ID("max-tokens"), "2000"),
		chromedp.SendKeys(chromedp.ID("prompt"), "Now a much longer one."),
		chromedp.Click(chromedp.ID("send")),
	)
	b.waitPage(t, 20*time.Second, "the second answer to start", func(p page) bool {
		return p.Answers == answers+2 && p.State == "generating" && len(p.Text) > 0
	})
	step = time.Now()
	b.do(t, chromedp.Click(chromedp.ID("stop")))
	p = b.waitPage(t, 2*time.Second, "the page to leave the generating state", func(p page) bool { return p.State == "idle" })
	stopped := p.Text
	var canceled, running float64
	deadline = time.Now().Add(10 * time.Second)
	for {
		canceled = metric(t, base, metricFinished, `reason="canceled"`)
		running = metric(t, base, metricRunning, "")
		if canceled > canceledBefore && running == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10s after Stop: %s{reason=\"canceled\"} went from %v to %v, %s is %v; want it up by one and 0 running",
				metricFinished, canceledBefore, canceled, metricRunning, running)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%s: stopped after %d bytes; the server counted the cancel (%v → %v) and had 0 running within %v of the click",
		transport, len(stopped), canceledBefore, canceled, time.Since(step).Round(time.Millisecond))
	for i := 0; i < 5; i++ { // half a second
		time.Sleep(100 * time.Millisecond)
		if q := b.page(t); q.Text != stopped {
			t.Fatalf("the answer grew after Stop: %d bytes, then %d", len(stopped), len(q.Text))
		}
	}
	if p.Status != "Stopped" || p.Finish != "stopped" || p.SendDisabled || !p.StopDisabled {
		t.Errorf("after Stop: status %q, finish %q, send disabled %v, stop disabled %v; want Stopped, stopped, false, true",
			p.Status, p.Finish, p.SendDisabled, p.StopDisabled)
	}
}

// TestE2EAPIKey runs the page against `spigot serve --api-key` with its
// built-in demo model: the page says a key is needed, and works once the
// key is entered.
func TestE2EAPIKey(t *testing.T) {
	if testing.Short() {
		t.Skip("builds spigot")
	}
	needChromium(t)
	_, bin := buildSpigot(t)
	base := startServer(t, bin, "--api-key", "e2e-key")

	b := newBrowser(t)
	b.do(t, chromedp.Navigate(base+"/"))
	p := b.waitPage(t, 10*time.Second, "the model list to fail", func(p page) bool { return p.Notice != "" })
	if !strings.Contains(p.Notice, "401") || !strings.Contains(p.Notice, "API key") {
		t.Errorf("without a key, the notice says %q; want it to name 401 and the API key", p.Notice)
	}
	b.do(t,
		chromedp.SetValue(chromedp.ID("max-tokens"), "20"),
		chromedp.SendKeys(chromedp.ID("prompt"), "hi"),
		chromedp.Click(chromedp.ID("send")),
	)
	p = b.waitPage(t, 10*time.Second, "the 401", func(p page) bool { return len(p.Errors) > 0 && p.State == "idle" })
	if e := p.Errors[0]; !strings.Contains(e, "401") || !strings.Contains(e, "API key") {
		t.Errorf("without a key, sending shows %q; want it to name 401 and the API key", e)
	}
	if p.Prompt != "hi" {
		t.Errorf("after a 401 the prompt box holds %q; want the prompt back", p.Prompt)
	}

	b.do(t,
		chromedp.SendKeys(chromedp.ID("api-key"), "e2e-key"),
		chromedp.Blur(chromedp.ID("api-key")),
	)
	p = b.waitPage(t, 10*time.Second, "the model list", func(p page) bool { return p.Model != "" })
	if !strings.Contains(p.Notice, "random") {
		t.Errorf("the demo model's notice says %q; want it to say the weights are random", p.Notice)
	}
	b.do(t, chromedp.Click(chromedp.ID("send")))
	p = b.waitPage(t, 30*time.Second, "the answer", func(p page) bool { return p.State == "idle" && p.Status != "Generating…" })
	if p.Status != "Done" || p.Text == "" || (p.Finish != "length" && p.Finish != "stop") {
		t.Errorf("with the key: status %q, finish %q, %d bytes of answer; want Done, length or stop, text", p.Status, p.Finish, len(p.Text))
	}

	// Over a WebSocket, which carries the key as a subprotocol: a wrong
	// key fails with a message that names it, the right one works.
	b.do(t,
		chromedp.SetValue(chromedp.ID("transport"), "ws"),
		chromedp.SetValue(chromedp.ID("api-key"), "wrong"),
		chromedp.SendKeys(chromedp.ID("prompt"), "over the socket"),
		chromedp.Click(chromedp.ID("send")),
	)
	p = b.waitPage(t, 10*time.Second, "the refused socket", func(p page) bool { return len(p.Errors) > 1 && p.State == "idle" })
	if e := p.Errors[len(p.Errors)-1]; !strings.Contains(e, "WebSocket") || !strings.Contains(e, "API key") {
		t.Errorf("with a wrong key over WebSocket the page says %q; want it to name the WebSocket and the API key", e)
	}
	b.do(t,
		chromedp.SetValue(chromedp.ID("api-key"), "e2e-key"),
		chromedp.Click(chromedp.ID("send")),
	)
	p = b.waitPage(t, 30*time.Second, "the answer over the socket", func(p page) bool { return p.State == "idle" && p.Answers == 2 })
	if p.Status != "Done" || p.Text == "" {
		t.Errorf("with the key over WebSocket: status %q, %d bytes of answer; want Done and text", p.Status, len(p.Text))
	}
}

// buildSpigot builds cmd/spigot into a temporary directory and returns the
// module root and the binary.
func buildSpigot(t *testing.T) (root, bin string) {
	t.Helper()
	root = moduleRoot(t)
	bin = filepath.Join(t.TempDir(), "spigot")
	start := time.Now()
	command(t, 3*time.Minute, root, "go", "build", "-o", bin, "./cmd/spigot")
	t.Logf("built spigot in %v", time.Since(start).Round(time.Millisecond))
	return root, bin
}

// moduleRoot is the directory of the module's go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		t.Fatal("go env GOMOD: not in a module")
	}
	return filepath.Dir(gomod)
}

// command runs a program to completion, failing the test with its output if
// it fails or runs past timeout.
func command(t *testing.T, timeout time.Duration, dir, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
}

// syncBuffer collects a process's output from its copying goroutines.
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

// startServer starts `spigot serve` on a free local port and waits (at most
// 60s) until GET /ready answers 200. It returns the base URL. Cleanup stops
// the server (SIGTERM, then SIGKILL after 5s) and waits for it; its output
// goes to the test log if the test failed.
func startServer(t *testing.T, bin string, args ...string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // free for the server; a race with another process is unlikely enough
	cmd := exec.Command(bin, append([]string{"serve", "--addr", addr}, args...)...)
	// The key, if any, is the test's to give: not one from the environment.
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "SPIGOT_API_KEY=") })
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// If this test process dies without running its cleanups (a panic, a
	// go test timeout), the kernel kills the server.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		// Pdeathsig fires when the thread that started the process exits,
		// so start and wait from a goroutine that holds its thread until
		// the server is gone (go.dev/issue/27505).
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		err := cmd.Start()
		started <- err
		if err == nil {
			cmd.Wait()
			close(exited)
		}
	}()
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			t.Errorf("spigot serve still running 5s after SIGTERM; killing it")
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("spigot serve output:\n%s", tail(out.String(), 4000))
		}
	})

	base := "http://" + addr
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("spigot serve exited (%v) before it was ready:\n%s", cmd.ProcessState, tail(out.String(), 4000))
		default:
		}
		if resp, err := client.Get(base + "/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("spigot serve not ready after 60s:\n%s", tail(out.String(), 4000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// metric reads one sample from the server's Prometheus text exposition: the
// series name whose labels include label (or any series of name if label
// is empty). A missing series is a test failure: its name is wrong.
func metric(t *testing.T, base, name, label string) float64 {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		// name{labels} value [timestamp]; label values may hold spaces.
		series, rest, _ := strings.Cut(line, " ")
		if i := strings.IndexByte(line, '}'); i >= 0 {
			series, rest = line[:i+1], line[i+1:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		value := fields[0]
		metricName, labels, _ := strings.Cut(series, "{")
		if metricName != name || !strings.Contains(labels, label) {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("/metrics: %q: %v", line, err)
		}
		return v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	t.Fatalf("/metrics has no series %s{%s}", name, label)
	return 0
}
