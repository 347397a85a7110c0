// Package server is Spigot's HTTP server: the OpenAI-compatible API
// (package [github.com/spigot-llm/spigot/api/openai] holds the wire format)
// over one [engine.Engine], plus health, readiness, metrics, tokenize and
// detokenize routes, and a mount point for the web chat page.
//
// Routes:
//
//	GET  /health                 200 as soon as the process serves HTTP
//	GET  /ready                  200 once the model is loaded, 503 before and while shutting down
//	GET  /metrics                Prometheus exposition (package metrics)
//	GET  /v1/models              the served model
//	GET  /v1/models/{id}         one model, by id or alias
//	POST /v1/completions         text completions, streamed (SSE) or not
//	POST /v1/chat/completions    chat completions, streamed (SSE) or not
//	GET  /v1/streams/{id}        resume a stream (Last-Event-ID or ?after=SEQ)
//	POST /v1/streams/{id}/cancel stop a stream's generation
//	GET  /v1/ws                  WebSocket: several generations per socket (ws.go)
//	POST /tokenize               text to token ids (llama.cpp / vLLM shapes)
//	POST /detokenize             token ids to text
//	POST /generate, /generate_stream, /api/...   TGI and Ollama (see compatRoutes)
//	/                            Config.Web, or a placeholder page
//
// With Config.APIKey set, every route but /health, /ready and the web page
// needs "Authorization: Bearer KEY".
//
// # Streaming
//
// A streamed request becomes a session (session.go): its engine requests,
// and a [github.com/spigot-llm/spigot/stream.Log] of its output that one goroutine per request fills from
// the engine streams whether or not a client reads (several choices add one
// small goroutine each; there is no goroutine per token). The engine never
// waits for a reader. A transport delivers the log: the SSE handler
// (sse.go) reads it with Log.Deliver, which wakes it when entries
// arrive and hands over everything pending; it encodes one chunk per token
// into a buffer it reuses and writes the lot with one Write and one Flush.
// Delivery may be paced and coalesced (stream_options extensions, see
// [github.com/spigot-llm/spigot/api/openai.Delivery]), and sends SSE keepalive comments when silent for
// Config.KeepAlive.
//
// Every event carries an id, "STREAM:SEQ". A client that loses its
// connection resumes with GET /v1/streams/{id} (or by re-sending the
// request) with Last-Event-ID: it gets the events after that one, then the
// live rest. So a disconnect does not cancel the generation: it runs on,
// its events kept, for Config.ResumeWindow; if no client comes back by
// then, it is canceled and its cache blocks freed. Finished streams are
// kept as long (bytes written are not bytes received), within
// Config.ResumeMemory. A request with stream_options.cancel_on_disconnect,
// or a server with resuming off, cancels at once when its client goes
// away; POST /v1/streams/{id}/cancel stops a stream explicitly. A whole
// (non-streamed) response is read by its handler directly, and a client
// that goes away cancels it.
//
// Every stream ends with exactly one final chunk per choice (its
// finish_reason, on the chunk with the last text or alone with an empty
// delta, as OpenAI sends it) or one error event for the whole request, then
// data: [DONE]. Errors found before anything was written get an HTTP status
// instead; [openai.ErrorFor] maps both.
package server

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/spigot-llm/spigot/api/openai"
	"github.com/spigot-llm/spigot/api/wsapi"
	"github.com/spigot-llm/spigot/chat"
	"github.com/spigot-llm/spigot/engine"
	"github.com/spigot-llm/spigot/metrics"
	"github.com/spigot-llm/spigot/tokenizer"
)

// Config configures a Server.
type Config struct {
	// APIKey, if set, is required as "Authorization: Bearer APIKey" on
	// every route except /health, /ready and the web page.
	APIKey string
	// Web serves "/" and every path no API route claims (the chat page).
	// Nil serves a placeholder page at "/" and 404 elsewhere.
	Web http.Handler
	// Registry receives the server's and the engine's metrics and is served
	// at /metrics. Nil means a new registry from [metrics.NewRegistry].
	Registry *prometheus.Registry
	// Logger logs the server's events. Nil discards them.
	Logger *slog.Logger
	// MaxBodyBytes caps request bodies (413 beyond). 0 means
	// [openai.MaxBodyBytes] (8 MiB).
	MaxBodyBytes int64
	// WriteTimeout bounds each write of a response (set with
	// http.ResponseController.SetWriteDeadline before each write, never
	// for the whole response, so long streams live on): a client that
	// reads nothing for this long loses its request. 0 means 60 s.
	WriteTimeout time.Duration
	// ResumeWindow is how long a stream whose client went away keeps
	// generating, its events kept, waiting for the client to resume it
	// (GET /v1/streams/{id} with Last-Event-ID); after that it is
	// canceled. Finished streams are kept as long, for clients cut off
	// before they read the end. 0 means 60 s; negative turns resuming
	// off: a client that goes away cancels its stream at once.
	ResumeWindow time.Duration
	// ResumeMemory caps the memory that finished streams' events hold
	// while they wait out their window; beyond it the oldest go first.
	// 0 means 64 MiB. (Running streams are bounded by the engine's
	// sequences, queue and context.)
	ResumeMemory int64
	// KeepAlive is how long a stream may be silent before the server
	// sends a keepalive (an SSE comment, on the OpenAI routes and TGI's
	// stream; Ollama's NDJSON has none), so that proxies and clients do
	// not time out while a request waits in the queue, during a long
	// prefill, or between paced tokens; WebSockets are pinged this often,
	// and cut when no pong comes back. 0 means 15 s; negative: never.
	KeepAlive time.Duration
}

// Model is the model a Server serves.
type Model struct {
	Engine    *engine.Engine
	Tokenizer *tokenizer.Tokenizer
	// Template renders chat messages into a prompt (the model's own, ChatML,
	// or the operator's override).
	Template *chat.Template
	// ID is the model's name in the API; requests may also name it by any
	// of Aliases. A request with no model uses this one.
	ID      string
	Aliases []string
	// OwnedBy is /v1/models' owned_by ("spigot" if empty).
	OwnedBy string
	// Description, if set, is shown in /v1/models (the demo model says there
	// that it produces random text).
	Description string
	// Created is /v1/models' created time (SetModel's time if zero).
	Created time.Time
}

// Server serves the API for one model. Create it with New; it answers
// /health at once and the API once SetModel was called.
type Server struct {
	cfg     Config
	log     *slog.Logger
	reg     *prometheus.Registry
	metrics *metrics.Metrics
	mux     *http.ServeMux

	model    atomic.Pointer[Model]
	draining atomic.Bool
	streams  streams // resumable streams by id

	shutdown     chan struct{} // closed by Shutdown: sockets close once their generations end
	shutdownOnce sync.Once
	sockets      sync.WaitGroup // open WebSockets (hijacked: http.Server does not track them)

	mu     sync.Mutex   // guards hs and closed
	hs     *http.Server // set by Serve
	closed bool         // Shutdown was called: Serve must not start
}

// New returns a Server with no model yet: /health answers, /ready and the
// API answer 503 until SetModel.
func New(cfg Config) *Server {
	if cfg.Registry == nil {
		cfg.Registry = metrics.NewRegistry()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = openai.MaxBodyBytes
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 60 * time.Second
	}
	if cfg.ResumeWindow == 0 {
		cfg.ResumeWindow = 60 * time.Second
	}
	if cfg.ResumeMemory <= 0 {
		cfg.ResumeMemory = 64 << 20
	}
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = 15 * time.Second
	}
	s := &Server{cfg: cfg, log: cfg.Logger, reg: cfg.Registry, shutdown: make(chan struct{})}
	s.streams.budget = cfg.ResumeMemory
	s.metrics = metrics.New(cfg.Registry)
	s.routes()
	return s
}

// SetModel makes the server serve m: /ready turns 200 and the API answers.
func (s *Server) SetModel(m *Model) {
	if m.Created.IsZero() {
		m.Created = time.Now()
	}
	s.metrics.SetEngine(m.Engine.Stats)
	s.model.Store(m)
}

// Metrics returns the server's metrics (for tests and embedding).
func (s *Server) Metrics() *metrics.Metrics { return s.metrics }

func (s *Server) routes() {
	mux := http.NewServeMux()
	s.mux = mux
	mux.HandleFunc("GET /health", s.handleHealth)
	mux.HandleFunc("GET /ready", s.handleReady)
	mux.Handle("GET /metrics", s.auth(promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{})))
	mux.Handle("GET /v1/models", s.api(s.handleModels))
	mux.Handle("GET /v1/models/{id...}", s.api(s.handleModel))
	mux.Handle("POST /v1/completions", s.api(s.handleCompletions))
	mux.Handle("POST /v1/chat/completions", s.api(s.handleChat))
	mux.Handle("GET /v1/streams/{id}", s.api(s.handleStream))
	mux.Handle("POST /v1/streams/{id}/cancel", s.api(s.handleCancel))
	mux.Handle("GET /v1/ws", s.api(s.handleWS))
	mux.Handle("POST /tokenize", s.api(s.handleTokenize))
	mux.Handle("POST /detokenize", s.api(s.handleDetokenize))
	s.compatRoutes(mux) // TGI and Ollama (compat.go)
	// The same paths with any other method: 405 with OpenAI's error object
	// (the mux's own 405 is plain text).
	for path, allow := range map[string]string{
		"/health": "GET", "/ready": "GET", "/metrics": "GET", "/v1/models": "GET", "/v1/models/": "GET",
		"/v1/completions": "POST", "/v1/chat/completions": "POST", "/tokenize": "POST", "/detokenize": "POST",
		"/v1/streams/{id}": "GET", "/v1/streams/{id}/cancel": "POST", "/v1/ws": "GET",
	} {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			openai.WriteError(w, openai.MethodNotAllowed(r.Method, r.URL.Path, allow))
		})
	}
	// Unknown API paths get OpenAI's error object, whatever serves "/".
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		openai.WriteError(w, openai.NotFound(r.URL.Path))
	})
	if s.cfg.Web != nil {
		mux.Handle("/", s.cfg.Web)
	} else {
		mux.HandleFunc("GET /{$}", s.handlePlaceholder)
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			openai.WriteError(w, openai.NotFound(r.URL.Path))
		})
	}
}

// ServeHTTP serves a request and counts it by route and status.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &statusRecorder{ResponseWriter: w}
	s.mux.ServeHTTP(rec, r)
	route := r.Pattern
	if _, path, ok := strings.Cut(route, " "); ok {
		route = path
	}
	if route == "" {
		route = "other"
	}
	code := rec.status
	if code == 0 {
		code = http.StatusOK
	}
	s.metrics.Request(route, code)
}

// statusRecorder remembers the status a handler sent. Unwrap lets
// http.ResponseController reach the connection's Flush and
// SetWriteDeadline.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(p)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// recordStatus sets the status a metrics line reports for a request whose
// response never got one (a client that went away).
func recordStatus(w http.ResponseWriter, code int) {
	for {
		switch t := w.(type) {
		case *statusRecorder:
			if t.status == 0 {
				t.status = code
			}
			return
		case interface{ Unwrap() http.ResponseWriter }:
			w = t.Unwrap()
		default:
			return
		}
	}
}

// auth checks the API key, if one is configured: the Authorization
// header, or for a WebSocket handshake a "spigot-key.KEY" subprotocol.
func (s *Server) auth(h http.Handler) http.Handler {
	if s.cfg.APIKey == "" {
		return h
	}
	want := []byte("Bearer " + s.cfg.APIKey)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := r.Header.Get("Authorization")
		if k := wsapi.Key(r); got == "" && k != "" {
			got = "Bearer " + k // a browser's WebSocket, which cannot send headers
		}
		if got == "" {
			openai.WriteError(w, openai.Unauthorized(true))
			return
		}
		if subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			openai.WriteError(w, openai.Unauthorized(false))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// api wraps an API route: key check, then 503 while the model loads or the
// server shuts down.
func (s *Server) api(h func(http.ResponseWriter, *http.Request, *Model)) http.Handler {
	return s.auth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.draining.Load() {
			openai.WriteError(w, openai.Unavailable("shutting_down", "the server is shutting down"))
			return
		}
		m := s.model.Load()
		if m == nil {
			openai.WriteError(w, openai.Unavailable("model_loading", "the model is loading; GET /ready says when it is ready"))
			return
		}
		h(w, r, m)
	}))
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	switch {
	case s.draining.Load():
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "shutting down"})
	case s.model.Load() == nil:
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "loading"})
	default:
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// readBody reads a request body of at most MaxBodyBytes.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	return io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
}

// checkModel accepts a request's model field: empty, the model's id, or one
// of its aliases.
func checkModel(m *Model, name string) error {
	if name == "" || name == m.ID {
		return nil
	}
	for _, a := range m.Aliases {
		if name == a {
			return nil
		}
	}
	return openai.ModelNotFound(name)
}

func (m *Model) entry() openai.Model {
	owner := m.OwnedBy
	if owner == "" {
		owner = "spigot"
	}
	return openai.Model{ID: m.ID, Object: "model", Created: m.Created.Unix(), OwnedBy: owner,
		MaxModelLen: m.Engine.Config().Context, Description: m.Description}
}

func (s *Server) handleModels(w http.ResponseWriter, r *http.Request, m *Model) {
	writeJSON(w, http.StatusOK, openai.ModelList{Object: "list", Data: []openai.Model{m.entry()}})
}

func (s *Server) handleModel(w http.ResponseWriter, r *http.Request, m *Model) {
	id := r.PathValue("id")
	if id == "" || checkModel(m, id) != nil {
		openai.WriteError(w, openai.ModelNotFound(id))
		return
	}
	writeJSON(w, http.StatusOK, m.entry())
}

const placeholder = `<!doctype html>
<html lang="en"><meta charset="utf-8"><title>Spigot</title>
<body style="font-family: system-ui, sans-serif; max-width: 40em; margin: 3em auto">
<h1>Spigot</h1>
<p>This server speaks the OpenAI API: <code>POST /v1/chat/completions</code>,
<code>POST /v1/completions</code>, <code>GET /v1/models</code>.
Try:</p>
<pre>curl -N localhost:8080/v1/chat/completions -d '{"messages":[{"role":"user","content":"Hello"}],"stream":true}'</pre>
<p>Health: <a href="/health">/health</a>, <a href="/ready">/ready</a>; metrics: <a href="/metrics">/metrics</a>.</p>
</body></html>
`

func (s *Server) handlePlaceholder(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	io.WriteString(w, placeholder)
}

// Serve accepts connections on ln and serves them until Shutdown, after
// which it returns http.ErrServerClosed. The http.Server has no
// WriteTimeout, which would cut long streams; see Config.WriteTimeout.
func (s *Server) Serve(ln net.Listener) error {
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return http.ErrServerClosed
	}
	s.hs = hs
	s.mu.Unlock()
	return hs.Serve(ln)
}

// Shutdown stops the server gracefully. At once, /ready and every new API
// request answer 503. Running and queued requests go on until ctx is done;
// then the engine ends the rest, whose clients get an error event and
// [DONE] (or a 503 if nothing was sent yet). Then the HTTP server (if Serve
// runs one) closes its listeners and waits, a few seconds at most, for
// handlers to write their last bytes. Shutdown returns ctx's error if
// requests had to be ended, or the HTTP server's.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	var err error
	if m := s.model.Load(); m != nil {
		err = m.Engine.Shutdown(ctx)
	}
	s.streams.close() // every stream has ended: none waits for its client
	s.shutdownOnce.Do(func() { close(s.shutdown) })
	sockets := make(chan struct{})
	go func() { s.sockets.Wait(); close(sockets) }()
	select {
	case <-sockets: // each sent its generations' last messages and closed
	case <-time.After(6 * time.Second):
	}

	s.mu.Lock()
	hs := s.hs
	s.closed = true
	s.mu.Unlock()
	if hs != nil {
		// Streams have ended; their handlers only have final events to
		// write, so this wait is short (idle keep-alive connections are
		// closed at once).
		hctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if herr := hs.Shutdown(hctx); herr != nil {
			err = errors.Join(err, fmt.Errorf("closing the HTTP server: %w", herr))
			hs.Close()
		}
	}
	return err
}
