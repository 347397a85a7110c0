package server

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestKeepAlive checks the keepalive comments: sent while a request waits
// for its first token (here, a held prefill) and between slowly paced
// tokens, never between events that come often enough; and that event
// streams are never compressed.
func TestKeepAlive(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 2, keepAlive: 50 * time.Millisecond})
	fx.model.hold()
	resp := fx.open(t, http.MethodPost, "/v1/completions",
		`{"prompt":"Once upon a time","max_tokens":6,"ignore_eos":true,"stream":true,"stream_options":{"pace_tokens_per_second":8}}`,
		"Accept-Encoding", "gzip")
	defer resp.Body.Close()
	if ce := resp.Header.Get("Content-Encoding"); ce != "" {
		t.Errorf("Content-Encoding %q on an event stream", ce)
	}
	time.Sleep(300 * time.Millisecond) // the prefill is held: keepalives only
	fx.model.release()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	// Keepalives before the first token, and between tokens 125 ms apart.
	events := strings.Split(strings.TrimSuffix(string(body), "\n\n"), "\n\n")
	before, between, tokens := 0, 0, 0
	for _, ev := range events {
		switch {
		case ev == ": keepalive":
			if tokens == 0 {
				before++
			} else {
				between++
			}
		case strings.Contains(ev, `"text":"`) && !strings.Contains(ev, `"text":""`):
			tokens++
		}
	}
	if before < 4 || between < 3 {
		t.Errorf("%d keepalives before the first token (held 300 ms), %d between %d tokens 125 ms apart; want about 6 and 8 (every 50 ms)", before, between, tokens)
	}
	collect(t, bytes.NewReader(body)) // the stream obeys the rules, keepalives included

	// An unpaced stream sends no keepalive: its events come often enough.
	_, b := fx.post(t, "/v1/completions", `{"prompt":"Once","max_tokens":20,"stream":true}`)
	if bytes.Contains(b, []byte(": keepalive")) {
		t.Errorf("a fast stream carries keepalives:\n%s", b)
	}
}

// TestCompatStreamsProxyFriendly checks that TGI's and Ollama's streams
// have the OpenAI streams' headers for proxies (no buffering, no
// compression), that TGI's sends keepalive comments while the request
// waits for its first token, and that Ollama's NDJSON carries nothing but
// its JSON lines (it has no comment syntax: no keepalives).
func TestCompatStreamsProxyFriendly(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 2, keepAlive: 50 * time.Millisecond})
	cases := []struct {
		path, body string
		keepalives bool
		check      func(t *testing.T, body []byte)
	}{
		{"/generate_stream", `{"inputs":"Once upon a time","parameters":{"max_new_tokens":6}}`, true,
			func(t *testing.T, body []byte) { tgiStream(t, body) }},
		{"/api/generate", `{"model":"stories260K","prompt":"Once upon a time","options":{"num_predict":6}}`, false,
			func(t *testing.T, body []byte) { ollamaLines(t, body) }},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			fx.model.hold()
			resp := fx.open(t, http.MethodPost, tc.path, tc.body, "Accept-Encoding", "gzip")
			defer resp.Body.Close()
			h := resp.Header
			if h.Get("Content-Encoding") != "" || h.Get("Cache-Control") != "no-cache, no-transform" || h.Get("X-Accel-Buffering") != "no" {
				t.Errorf("headers %v; want no Content-Encoding, Cache-Control: no-cache, no-transform, X-Accel-Buffering: no", h)
			}
			time.Sleep(300 * time.Millisecond) // the prefill is held
			fx.model.release()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			n := strings.Count(string(body), ": keepalive\n\n")
			if tc.keepalives && n < 4 || !tc.keepalives && n > 0 {
				t.Errorf("%d keepalives while the prefill was held 300 ms (every 50 ms: want about 6, or none for NDJSON):\n%s", n, body)
			}
			tc.check(t, body)
		})
	}
}

// nginxPath is Debian's nginx, which .ci/run installs.
const nginxPath = "/usr/sbin/nginx"

// startNginx runs nginx as a reverse proxy to upstream on a free local
// port, with its stock buffering (proxy_buffering on) and read timeout
// readTimeout, in a temporary directory, in the foreground. It returns
// the proxy's base URL; Cleanup stops it.
func startNginx(t *testing.T, upstream string, readTimeout time.Duration) string {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		bin = nginxPath
	}
	if _, err := os.Stat(bin); err != nil {
		const msg = "nginx is required in CI; .ci/run installs it (apt-get install nginx)"
		if os.Getenv("CI") != "" {
			t.Fatalf("%s: %v", msg, err)
		}
		t.Skipf("%s: %v", msg, err)
	}
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // free for nginx; a race with another process is unlikely enough
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // else workers switch to nobody, who cannot use dir
	}
	conf := fmt.Sprintf(`%s
daemon off;
worker_processes 1;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log info;
events { worker_connections 64; }
http {
	access_log off;
	client_body_temp_path %[2]s/body;
	proxy_temp_path %[2]s/proxy;
	fastcgi_temp_path %[2]s/fastcgi;
	uwsgi_temp_path %[2]s/uwsgi;
	scgi_temp_path %[2]s/scgi;
	proxy_read_timeout %[3]dms;
	server {
		listen %[4]s;
		location / { proxy_pass %[5]s; }
	}
}
`, user, dir, readTimeout.Milliseconds(), addr, upstream)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", confPath, "-e", filepath.Join(dir, "error.log"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGQUIT) // graceful: the master waits for its workers
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("nginx output:\n%s\nerror.log:\n%s", out.String(), log)
		}
	})
	base := "http://" + addr
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx exited: %s\n%s", out.String(), log)
		default:
		}
		if resp, err := http.Get(base + "/health"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx not answering at %s after 10s", base)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestNginx puts Debian's nginx, configured as people do (stock proxy
// buffering, HTTP/1.0 to the upstream), in front of the server and checks
// that events pass one by one, that a stream cut at the proxy resumes
// through it, and that keepalives keep a stream alive past nginx's read
// timeout while the request waits.
func TestNginx(t *testing.T) {
	fx := newFixture(t, fixtureOptions{parallel: 2, keepAlive: 200 * time.Millisecond})
	proxy := startNginx(t, fx.url, time.Second)
	client := &http.Client{}
	get := func(method, path, body string, header ...string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, proxy+path, strings.NewReader(body))
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}

	t.Run("tokens one by one", func(t *testing.T) {
		// 20 tokens at 20/s: a buffering proxy would deliver them all at
		// the end, a second after the first could have come.
		start := time.Now()
		resp := get("POST", "/v1/completions",
			`{"prompt":"Once upon a time","temperature":0,"max_tokens":20,"ignore_eos":true,"stream":true,"stream_options":{"pace_tokens_per_second":20}}`)
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		r := newSSEReader(t, resp.Body)
		var at []time.Duration
		for {
			data, err := r.next()
			if err != nil {
				break
			}
			if strings.Contains(data, `"text":"`) && !strings.Contains(data, `"text":""`) {
				at = append(at, time.Since(start))
			}
		}
		if len(at) < 15 {
			t.Fatalf("%d chunks with text through nginx; want about 20", len(at))
		}
		first, last := at[0], at[len(at)-1]
		spread := 0 // gaps that show the chunks came separately
		for i := 1; i < len(at); i++ {
			if at[i]-at[i-1] > 25*time.Millisecond {
				spread++
			}
		}
		t.Logf("through nginx: %d chunks, first at %v, last at %v, %d gaps over 25 ms", len(at), first, last, spread)
		if first > 300*time.Millisecond || last-first < 700*time.Millisecond || spread < len(at)-4 {
			t.Errorf("chunks through nginx: first at %v, last at %v, %d of %d gaps over 25 ms; want them one by one, 50 ms apart",
				first, last, spread, len(at)-1)
		}
	})

	t.Run("resume", func(t *testing.T) {
		body := `{"messages":[{"role":"user","content":"Once upon a time"}],"temperature":0,"max_tokens":60,"ignore_eos":true,"stream":true,"stream_options":{"pace_tokens_per_second":200}}`
		resp := get("POST", "/v1/chat/completions", body)
		want := collect(t, resp.Body)
		resp.Body.Close()

		c := newResumer(t)
		resp = get("POST", "/v1/chat/completions", body)
		for i := 0; ; i++ {
			if resp.StatusCode != 200 {
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("connection %d through nginx: %d %s", c.conns+1, resp.StatusCode, b)
			}
			done := c.read(&cutReader{r: resp.Body, n: 700 + 300*i})
			resp.Body.Close() // cuts the connection to nginx, which cuts its own to the server
			if done {
				break
			}
			if c.conns > 50 {
				t.Fatal("no [DONE] after 50 connections")
			}
			resp = get("GET", "/v1/streams/"+c.streamID, "", "Last-Event-ID", c.lastID)
		}
		if c.conns < 3 || c.res.texts[0] != want.texts[0] || fmt.Sprint(c.res.finishes) != fmt.Sprint(want.finishes) {
			t.Errorf("resumed through nginx over %d connections: %q (%v), want %q (%v)", c.conns, c.res.texts[0], c.res.finishes, want.texts[0], want.finishes)
		}
	})

	t.Run("keepalive past the read timeout", func(t *testing.T) {
		// nginx gives up on an upstream silent for 1 s; the request waits
		// 2.5 s for its first token, kept alive by comments every 200 ms.
		fx.model.hold()
		resp := get("POST", "/v1/completions", `{"prompt":"Once","max_tokens":5,"ignore_eos":true,"stream":true}`)
		defer resp.Body.Close()
		go func() {
			time.Sleep(2500 * time.Millisecond)
			fx.model.release()
		}()
		r := newSSEReader(t, resp.Body)
		var events []string
		for {
			data, err := r.next()
			if err != nil {
				if err != io.EOF {
					t.Errorf("reading through nginx: %v", err)
				}
				break
			}
			events = append(events, data)
		}
		if len(events) == 0 || events[len(events)-1] != "[DONE]" || r.keepalives < 8 {
			t.Errorf("through nginx after a 2.5 s wait: %d events (last %q), %d keepalives; want the whole stream and about 12 keepalives",
				len(events), events[max(0, len(events)-1):], r.keepalives)
		}
	})
}
