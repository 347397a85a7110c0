package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health/grpc_health_v1"

	spigotv1 "github.com/spigot-llm/spigot/api/spigotpb/spigot/v1"
)

// sseText is the text of a completions stream's chunks.
func sseText(body string) string {
	var text strings.Builder
	for line := range strings.Lines(body) {
		var c struct {
			Choices []struct {
				Text string `json:"text"`
			} `json:"choices"`
		}
		if data, ok := strings.CutPrefix(strings.TrimSpace(line), "data: "); ok && json.Unmarshal([]byte(data), &c) == nil {
			for _, ch := range c.Choices {
				text.WriteString(ch.Text)
			}
		}
	}
	return text.String()
}

// TestGatewayCommand runs `spigot serve` with the shared model and
// `spigot gateway --grpc-addr` in front of it: a stream goes through over
// SSE and gRPC, /v1/models, /ready and the gRPC health service answer,
// and ending the context stops the gateway cleanly.
func TestGatewayCommand(t *testing.T) {
	sctx, scancel := context.WithCancel(context.Background())
	defer scancel()
	logs := newLogWatch()
	served := make(chan error, 1)
	go func() {
		served <- serve(sctx, func() {}, []string{"-m", sharedModel(), "--addr", "127.0.0.1:0", "--threads", "1"}, stdio{nil, io.Discard, logs})
	}()
	up := logs.url(t, served)

	cfg := filepath.Join(t.TempDir(), "gateway.yaml")
	yaml := fmt.Sprintf("upstreams:\n  - name: local\n    kind: spigot\n    url: %s\n    models: [stories260K]\nhealth:\n  interval: 100ms\n", up)
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan string, 1)
	done := make(chan error, 1)
	glog := newLogWatch()
	go func() {
		done <- runGateway(ctx, func() {}, []string{"--config", cfg, "--addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--drain-delay", "300ms"}, stdio{nil, io.Discard, glog}, ready)
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("gateway: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("gateway did not start")
	}
	url := "http://" + addr
	if code, body := get(t, url+"/ready"); code != 200 {
		t.Errorf("/ready = %d %s", code, body)
	}
	if code, body := get(t, url+"/v1/models"); code != 200 || !strings.Contains(body, `"id":"stories260K"`) {
		t.Errorf("/v1/models = %d %s", code, body)
	}
	resp, err := http.Post(url+"/v1/completions", "application/json",
		strings.NewReader(`{"model":"stories260K","prompt":"Once upon a time","max_tokens":8,"temperature":0,"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if s := string(b); resp.StatusCode != 200 || strings.Count(s, `"finish_reason":"length"`) != 1 || !strings.HasSuffix(s, "data: [DONE]\n\n") ||
		resp.Header.Get("X-Spigot-Upstream") != "local" {
		t.Errorf("stream through the gateway: %d %s", resp.StatusCode, s)
	}
	if code, body := get(t, url+"/metrics"); code != 200 || !strings.Contains(body, `spigot_gateway_upstream_requests_total{outcome="ok",upstream="local"} 1`) {
		t.Errorf("/metrics = %d, without the request counted", code)
	}
	m := grpcAddr.FindStringSubmatch(glog.String())
	if m == nil {
		t.Fatalf("no gRPC address in the gateway's log:\n%s", glog.String())
	}
	conn, err := grpc.NewClient("passthrough:///"+m[1], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if r, err := grpc_health_v1.NewHealthClient(conn).Check(ctx, &grpc_health_v1.HealthCheckRequest{}); err != nil ||
		r.GetStatus() != grpc_health_v1.HealthCheckResponse_SERVING {
		t.Errorf("gRPC health: %v, %v", r, err)
	}
	n, temp := int32(8), 0.0
	st, err := spigotv1.NewGenerationClient(conn).Generate(ctx, &spigotv1.GenerateRequest{Model: "stories260K",
		Prompt: &spigotv1.GenerateRequest_Text{Text: "Once upon a time"}, MaxTokens: &n, Temperature: &temp})
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	var finish *spigotv1.Finish
	for {
		ev, err := st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		text.WriteString(ev.GetDelta().GetText())
		if f := ev.GetFinish(); f != nil {
			finish = f
		}
	}
	if finish.GetUsage().GetCompletionTokens() != 8 || finish.GetFinishReason() != "length" || text.String() != sseText(string(b)) {
		t.Errorf("gRPC through the gateway: %q, finish %v; want the SSE stream's text", text.String(), finish)
	}
	cancel()
	// During the drain delay /ready says 503 and requests are still served.
	waitReady503 := time.Now().Add(5 * time.Second)
	for {
		code, _ := get(t, url+"/ready")
		if code == http.StatusServiceUnavailable {
			break
		}
		if time.Now().After(waitReady503) {
			t.Fatalf("/ready = %d after SIGTERM, want 503", code)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code, _ := get(t, url+"/v1/models"); code != 200 {
		t.Errorf("/v1/models during the drain delay = %d, want 200", code)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("gateway after shutdown: %v", err)
		}
		if l := glog.String(); !strings.Contains(l, "msg=stopped") {
			t.Errorf("gateway log:\n%s", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("gateway did not stop")
	}
	scancel()
	<-served
}

func TestGatewayCommandErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("upstreams:\n  - name: a\n    kind: spigot\n    url: http://h\n    models: [m]\n    colour: red\n"), 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--config is required"},
		{[]string{"--config", filepath.Join(t.TempDir(), "none.yaml")}, "no such file"},
		{[]string{"--config", bad}, "field colour not found"},
		{[]string{"--config", bad, "extra"}, "unexpected arguments"},
	} {
		err := runGateway(context.Background(), func() {}, tc.args, stdio{nil, io.Discard, io.Discard}, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("gateway %q = %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}
