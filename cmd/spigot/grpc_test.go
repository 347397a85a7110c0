package main

import (
	"context"
	"io"
	"regexp"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health/grpc_health_v1"

	spigotv1 "github.com/spigot-llm/spigot/api/spigotpb/spigot/v1"
)

var grpcAddr = regexp.MustCompile(`msg="gRPC listening" addr=(\S+)`)

// TestServeGRPC runs `spigot serve --grpc-addr` with the demo model: the
// gRPC port answers health checks and generations, and stops with the
// server.
func TestServeGRPC(t *testing.T) {
	logs := newLogWatch()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, func() {}, []string{"--addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--threads", "1"}, stdio{nil, io.Discard, logs})
	}()
	logs.url(t, done) // ready
	m := grpcAddr.FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("no gRPC address in the log:\n%s", logs.String())
	}
	conn, err := grpc.NewClient("passthrough:///"+m[1], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if r, err := grpc_health_v1.NewHealthClient(conn).Check(ctx, &grpc_health_v1.HealthCheckRequest{}); err != nil ||
		r.GetStatus() != grpc_health_v1.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v, %v", r, err)
	}
	n := int32(5)
	st, err := spigotv1.NewGenerationClient(conn).Generate(ctx, &spigotv1.GenerateRequest{
		Prompt: &spigotv1.GenerateRequest_Text{Text: "hi"}, MaxTokens: &n, IgnoreEos: true})
	if err != nil {
		t.Fatal(err)
	}
	var finish *spigotv1.Finish
	for {
		ev, err := st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if f := ev.GetFinish(); f != nil {
			finish = f
		}
	}
	if finish.GetUsage().GetCompletionTokens() != 5 || finish.GetFinishReason() != "length" {
		t.Errorf("finish %v, want 5 tokens, length", finish)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve = %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}
}
