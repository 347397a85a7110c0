package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spigot-llm/spigot/chat"
	"github.com/spigot-llm/spigot/engine"
	"github.com/spigot-llm/spigot/gguf"
	"github.com/spigot-llm/spigot/hub"
	"github.com/spigot-llm/spigot/internal/demo"
	"github.com/spigot-llm/spigot/kernels"
	"github.com/spigot-llm/spigot/model"
	"github.com/spigot-llm/spigot/server"
	"github.com/spigot-llm/spigot/tokenizer"
	"github.com/spigot-llm/spigot/web"
)

// serveConfig is what serve's flags say.
type serveConfig struct {
	model, tokenizer string
	addr             string
	grpcAddr         string
	parallel, ctx    int
	threads          int
	maxQueue         int
	stepTime         time.Duration
	packTiles        bool
	apiKey           string
	chatTemplate     string
	shutdownTimeout  time.Duration
	resumeWindow     time.Duration
	keepAlive        time.Duration
}

func serveCmd(args []string, std stdio) error {
	// Signals are caught from the start, so that SIGTERM or Ctrl-C during
	// loading or serving shuts down cleanly; a second one kills the process.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serve(ctx, stop, args, std)
}

// serve runs the server until ctx is done, then shuts it down gracefully.
// unnotify, called when shutdown starts, restores the default action of the
// signals that ended ctx.
func serve(ctx context.Context, unnotify func(), args []string, std stdio) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(std.err)
	var c serveConfig
	fs.StringVar(&c.model, "m", "", "model: a GGUF file, a llama2.c .bin, or hf:OWNER/REPO/FILE.gguf (none: a built-in demo model that produces random text)")
	fs.StringVar(&c.tokenizer, "tokenizer", "", "tokenizer.bin for a llama2.c checkpoint")
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "address to listen on (host:port; port 0 picks a free one)")
	fs.StringVar(&c.grpcAddr, "grpc-addr", "", "also serve the gRPC API (spigot.v1.Generation, health, reflection) on this address, such as 127.0.0.1:9090 (empty: no gRPC)")
	fs.IntVar(&c.parallel, "parallel", 4, "sequences decoded together")
	fs.BoolVar(&c.packTiles, "pack-tiles", true, "with --parallel above 1, keep a packed copy of Q8_0 weights for batched steps (about a tenth faster, for the weights' size in memory)")
	fs.IntVar(&c.ctx, "ctx", 0, "context length per sequence (0: the model's)")
	fs.IntVar(&c.threads, "threads", 0, "threads to compute with (0: all cores)")
	fs.IntVar(&c.maxQueue, "max-queue", 64, "requests that may wait for a free sequence; more get 429")
	fs.DurationVar(&c.stepTime, "step-time", 85*time.Millisecond, "target time of a step that reads prompts: bounds running streams' inter-token latency while prompts are prefilled (negative: fixed 512-token chunks)")
	fs.StringVar(&c.apiKey, "api-key", os.Getenv("SPIGOT_API_KEY"), "require \"Authorization: Bearer KEY\" (default $SPIGOT_API_KEY)")
	fs.StringVar(&c.chatTemplate, "chat-template", "", "chat template: a file, Jinja text, or a built-in name ("+strings.Join(chat.Builtins(), ", ")+"); default: the model's own, else chatml")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 30*time.Second, "on SIGTERM or Ctrl-C, how long running requests may go on before they are ended")
	fs.DurationVar(&c.resumeWindow, "resume-window", 60*time.Second, "how long a stream whose client disconnected keeps generating for the client to resume it (GET /v1/streams/ID with Last-Event-ID, a WebSocket resume, gRPC Resume for streams started resumable); then it is canceled (0: a disconnect cancels at once)")
	fs.DurationVar(&c.keepAlive, "keepalive", 15*time.Second, "send a keepalive (an SSE comment, a WebSocket ping) on a stream silent this long, so proxies do not time it out (0: never)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	log := slog.New(slog.NewTextHandler(std.err, nil))

	window := c.resumeWindow
	if window <= 0 {
		window = -1 // the server's "off"
	}
	keepAlive := c.keepAlive
	if keepAlive <= 0 {
		keepAlive = -1 // the server's "never"
	}
	srv := server.New(server.Config{APIKey: c.apiKey, Web: web.Handler(), Logger: log, ResumeWindow: window, KeepAlive: keepAlive})
	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("listening", "url", "http://"+ln.Addr().String(), "ready", "GET /ready answers 200 once the model is loaded")
	stopGRPC, err := startGRPC(srv, c.grpcAddr, log)
	if err != nil {
		srv.Shutdown(context.Background())
		<-served
		return err
	}
	defer stopGRPC()

	m, closeModel, err := loadServed(ctx, c, log)
	if err != nil {
		srv.Shutdown(context.Background())
		<-served
		return err
	}
	defer closeModel()
	srv.SetModel(m)
	log.Info("ready", "model", m.ID, "context", m.Engine.Config().Context, "parallel", m.Engine.Config().Parallel,
		"url", "http://"+ln.Addr().String()+"/v1")

	select {
	case <-ctx.Done():
	case err := <-served:
		return err // the listener failed
	}
	unnotify()
	log.Info("shutting down: new requests get 503; running requests may finish", "timeout", c.shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), c.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); errors.Is(err, context.DeadlineExceeded) {
		log.Info("requests still running at the deadline were ended")
	} else if err != nil {
		log.Warn("shutting down", "err", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("stopped")
	return nil
}

// loadServed loads the model serve was asked for (the demo model when none
// was), starts its engine and returns it with a function that frees it all.
func loadServed(ctx context.Context, c serveConfig, log *slog.Logger) (*server.Model, func(), error) {
	var (
		f       *gguf.File
		err     error
		id      string
		aliases []string
		sm      = &server.Model{}
	)
	switch {
	case c.model == "":
		f, err = demo.File()
		id = demo.ID
		sm.OwnedBy = "spigot (demo: random weights)"
		sm.Description = demo.Description
		log.Warn("no model given (-m): serving the built-in demo model, which produces RANDOM TEXT. " +
			"Load a real model with: spigot serve -m FILE.gguf, or spigot serve -m hf:OWNER/REPO/FILE.gguf")
	default:
		path := c.model
		if hub.IsRef(path) {
			aliases = append(aliases, path, strings.TrimPrefix(path, hub.Prefix))
			if path, err = hub.NewClient().Resolve(ctx, path); err != nil {
				return nil, nil, err
			}
		}
		log.Info("loading", "file", path)
		f, err = openFile(path, c.tokenizer)
		id = strings.TrimSuffix(strings.TrimSuffix(filepath.Base(path), ".gguf"), ".bin")
		aliases = append(aliases, c.model)
	}
	if err != nil {
		return nil, nil, err
	}
	if name, ok := f.String("general.name"); ok && name != "" && c.model != "" {
		aliases = append(aliases, name)
	}
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	tmplSrc := c.chatTemplate
	if tmplSrc != "" {
		if b, err := os.ReadFile(tmplSrc); err == nil {
			tmplSrc = string(b)
		}
	}
	tmpl, err := chat.FromGGUF(f, tmplSrc)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("chat template: %w", err)
	}
	pool := kernels.NewPool(c.threads)
	mdl, err := model.Load(f, model.Options{Pool: pool, PackTiles: c.packTiles && c.parallel > 1})
	if err != nil {
		pool.Close()
		f.Close()
		return nil, nil, err
	}
	eng, err := engine.New(engine.Config{Model: mdl, Tokenizer: tok, Parallel: c.parallel, Context: c.ctx, MaxQueue: c.maxQueue, StepTarget: c.stepTime})
	if err != nil {
		pool.Close()
		f.Close()
		return nil, nil, err
	}
	sm.Engine, sm.Tokenizer, sm.Template, sm.ID = eng, tok, tmpl, id
	for _, a := range aliases {
		if a != id {
			sm.Aliases = append(sm.Aliases, a)
		}
	}
	return sm, func() {
		eng.Close()
		pool.Close()
		f.Close()
	}, nil
}
