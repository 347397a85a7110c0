package main

import (
	"log/slog"
	"net"
	"time"

	"github.com/spigot-llm/spigot/server"
)

// startGRPC serves srv's gRPC API (spigot.v1.Generation, health,
// reflection) on addr when it is set. stop ends it: after srv.Shutdown has
// ended every generation, calls still open get a few seconds to send
// their last events, then are cut.
func startGRPC(srv *server.Server, addr string, log *slog.Logger) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	gs := srv.GRPCServer()
	go gs.Serve(ln) // returns when stopped
	log.Info("gRPC listening", "addr", ln.Addr().String(), "service", "spigot.v1.Generation")
	return func() {
		done := make(chan struct{})
		go func() { gs.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			gs.Stop()
		}
	}, nil
}
