package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/spigot-llm/spigot/gateway"
)

func gatewayCmd(args []string, std stdio) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runGateway(ctx, stop, args, std, nil)
}

// runGateway serves the gateway until ctx is done, then drains it. When
// ready is not nil it receives the listening address.
func runGateway(ctx context.Context, unnotify func(), args []string, std stdio, ready chan<- string) error {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(std.err)
	configPath := fs.String("config", "", "the gateway's YAML configuration: upstreams, health checks, routing (see gateway/example.yaml)")
	addr := fs.String("addr", "127.0.0.1:8080", "address to listen on (host:port; port 0 picks a free one)")
	shutdownTimeout := fs.Duration("shutdown-timeout", 30*time.Second, "on SIGTERM or Ctrl-C, how long running requests may go on before they are ended")
	drainDelay := fs.Duration("drain-delay", 0, "on SIGTERM, how long /ready answers 503 while new requests are still served, before the listener closes (let a load balancer notice)")
	tlsCert := fs.String("tls-cert", "", "serve HTTPS with this certificate (PEM; with --tls-key)")
	tlsKey := fs.String("tls-key", "", "the private key of --tls-cert (PEM)")
	grpcAddr := fs.String("grpc-addr", "", "also serve the gRPC API (spigot.v1.Generation, health, reflection) on this address, such as 127.0.0.1:9090 (empty: no gRPC)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *configPath == "" {
		return errors.New("--config is required")
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	var tlsCfg *tls.Config
	if *tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			return fmt.Errorf("loading the TLS certificate: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	cfg, err := gateway.LoadConfig(*configPath)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(std.err, nil))
	g := gateway.New(cfg, gateway.Options{Logger: log})
	defer g.Close()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: g, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn), TLSConfig: tlsCfg}
	scheme := "http"
	if tlsCfg != nil {
		scheme = "https"
	}
	served := make(chan error, 1)
	go func() {
		if tlsCfg != nil {
			served <- hs.ServeTLS(ln, "", "") // the certificate is in TLSConfig
		} else {
			served <- hs.Serve(ln)
		}
	}()
	log.Info("gateway listening", "url", scheme+"://"+ln.Addr().String()+"/v1", "upstreams", len(cfg.Upstreams))
	var gs *grpc.Server
	if *grpcAddr != "" {
		gln, err := net.Listen("tcp", *grpcAddr)
		if err != nil {
			hs.Close()
			return err
		}
		var opts []grpc.ServerOption
		if tlsCfg != nil {
			opts = append(opts, grpc.Creds(credentials.NewTLS(tlsCfg)))
		}
		gs = g.GRPCServer(opts...)
		go gs.Serve(gln) // returns when stopped
		log.Info("gRPC listening", "addr", gln.Addr().String(), "service", "spigot.v1.Generation")
	}
	if ready != nil {
		ready <- ln.Addr().String()
	}
	select {
	case <-ctx.Done():
	case err := <-served:
		return err
	}
	unnotify()
	g.Drain()
	if *drainDelay > 0 {
		log.Info("draining: /ready answers 503; new requests are still served", "for", *drainDelay)
		select {
		case <-time.After(*drainDelay):
		case err := <-served:
			return err
		}
	}
	log.Info("shutting down: /ready answers 503; running requests may finish", "timeout", *shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), *shutdownTimeout)
	defer cancel()
	if gs != nil {
		go func() {
			<-sctx.Done()
			gs.Stop()
		}()
	}
	if err := hs.Shutdown(sctx); err != nil {
		log.Info("requests still running at the deadline were ended", "err", err)
		hs.Close()
	}
	if gs != nil {
		gs.GracefulStop() // gs.Stop at the deadline
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("stopped")
	return nil
}
