package server

import (
	"context"
	"crypto/subtle"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/spigot-llm/spigot/api/openai"
	"github.com/spigot-llm/spigot/engine"
)

// This file holds what the other wire formats (TGI, Ollama; see tgi.go
// and ollama.go) share: route wrapping with their own error objects, and
// the loop that reads one engine stream into a response.

// errorWriter sends an error before anything of the response was written,
// in one API's error format.
type errorWriter func(w http.ResponseWriter, err error)

// compatAPI wraps a route of another wire format as api wraps OpenAI's:
// the API key, then 503 while the model loads or the server shuts down,
// each error in the route's own format.
func (s *Server) compatAPI(writeErr errorWriter, h func(http.ResponseWriter, *http.Request, *Model)) http.Handler {
	var want []byte
	if s.cfg.APIKey != "" {
		want = []byte("Bearer " + s.cfg.APIKey)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if want != nil {
			got := r.Header.Get("Authorization")
			if got == "" || subtle.ConstantTimeCompare([]byte(got), want) != 1 {
				writeErr(w, openai.Unauthorized(got == ""))
				return
			}
		}
		if s.draining.Load() {
			writeErr(w, openai.Unavailable("shutting_down", "the server is shutting down"))
			return
		}
		m := s.model.Load()
		if m == nil {
			writeErr(w, openai.Unavailable("model_loading", "the model is loading; GET /ready says when it is ready"))
			return
		}
		h(w, r, m)
	})
}

// startOne submits a job of one engine request for a handler of another
// wire format; ctx (the request's) ends the generation when it is done. On
// error nothing was written; the caller sends the error.
func (s *Server) startOne(ctx context.Context, m *Model, j *job, start time.Time) (*generation, error) {
	st, err := m.Engine.Submit(ctx, j.reqs[0])
	if err != nil {
		return nil, err
	}
	return &generation{s: s, j: j, sts: []*engine.Stream{st}, start: start, results: make([]engine.Result, 1)}, nil
}

// drive reads g's one stream to its end. emit gets every batch of events
// and, with the last, the stream's end (io.EOF for a normal finish, after
// which g.results[0] is set; another error, already recorded with fail);
// it is not called after a failure. Then flush, when not nil, writes what
// emit buffered; a flush error (the client is gone or stopped reading)
// cancels the generation.
func (g *generation) drive(emit func(evs []engine.Event, end error), flush func() error) {
	g.driveKeepAlive(emit, flush, 0, nil)
}

// driveKeepAlive is drive that also calls keepAlive whenever the stream
// has been silent for every (while the request waits in the queue,
// during a long prefill), if every is positive; a keepAlive error cancels
// the generation as a flush error does.
func (g *generation) driveKeepAlive(emit func(evs []engine.Event, end error), flush func() error, every time.Duration, keepAlive func() error) {
	tokens := make([]int, 1)
	in := newFanIn(g.sts)
	if every > 0 && keepAlive != nil {
		in.idle = every
		in.onIdle = func() {
			if err := keepAlive(); err != nil {
				g.fail(fmt.Errorf("writing to the client: %v: %w", err, context.Canceled))
			}
		}
	}
	defer in.close()
	for left := 1; left > 0; {
		tokens[0] = 0
		in.next(func(_ int, evs []engine.Event, end error) {
			for k := range evs {
				if evs[k].Token >= 0 {
					tokens[0]++
				}
			}
			if end != nil {
				left--
				if end == io.EOF {
					g.results[0] = g.sts[0].Result()
				} else {
					g.fail(end)
				}
			}
			if g.failure == nil || end != nil && end != io.EOF {
				emit(evs, end)
			}
		})
		if flush != nil {
			if err := flush(); err != nil {
				g.fail(fmt.Errorf("writing to the client: %v: %w", err, context.Canceled))
				continue
			}
		}
		g.observe(time.Now(), tokens)
	}
}

// finish records the end of a request served by drive, as generate does
// for OpenAI's routes: the status of a request that failed, a log line,
// or the end-to-end latency.
func (g *generation) finish(w http.ResponseWriter, r *http.Request) {
	if g.failure == nil {
		g.s.metrics.E2E.Observe(time.Since(g.start).Seconds())
		return
	}
	status := openai.ErrorFor(g.failure).Status
	recordStatus(w, status)
	level := slog.LevelInfo
	switch {
	case status == openai.StatusClientClosed:
		level = slog.LevelDebug
	case status >= 500:
		level = slog.LevelWarn
	}
	g.s.log.Log(r.Context(), level, "request ended early", "path", r.URL.Path, "status", status, "err", g.failure)
}

// streamWriter starts a streamed response of the given content type and
// returns its writer (one Write and one Flush per flush, under the write
// deadline). Call done when the response is complete.
func (s *Server) streamWriter(w http.ResponseWriter, contentType string) *sseWriter {
	h := w.Header()
	h.Set("Content-Type", contentType)
	// As SSE's: no-transform tells proxies not to compress (and so
	// buffer) the stream; X-Accel-Buffering: nginx passes each write on.
	h.Set("Cache-Control", "no-cache, no-transform")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	return &sseWriter{w: w, rc: http.NewResponseController(w), timeout: s.cfg.WriteTimeout, buf: getBuf()}
}

// compatRoutes registers the routes of the other wire formats:
//
//	POST /generate            TGI: one response
//	POST /generate_stream     TGI: SSE
//	POST /api/generate        Ollama: NDJSON, or one object
//	POST /api/chat            Ollama: the same for chat messages
//	GET  /api/tags, /api/ps, /api/version; POST /api/show: Ollama's listings
//
// Each answers a wrong method with 405 in its own error format.
func (s *Server) compatRoutes(mux *http.ServeMux) {
	routes := []struct {
		method, path string
		writeErr     errorWriter
		h            func(http.ResponseWriter, *http.Request, *Model)
	}{
		{"POST", "/generate", writeTGIError, s.handleTGIGenerate},
		{"POST", "/generate_stream", writeTGIError, s.handleTGIStream},
		{"POST", "/api/generate", writeOllamaError, s.handleOllamaGenerate},
		{"POST", "/api/chat", writeOllamaError, s.handleOllamaChat},
		{"POST", "/api/show", writeOllamaError, s.handleOllamaShow},
		{"GET", "/api/tags", writeOllamaError, s.handleOllamaTags},
		{"GET", "/api/ps", writeOllamaError, s.handleOllamaPS},
		{"GET", "/api/version", writeOllamaError, s.handleOllamaVersion},
	}
	for _, rt := range routes {
		mux.Handle(rt.method+" "+rt.path, s.compatAPI(rt.writeErr, rt.h))
		mux.HandleFunc(rt.path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", rt.method)
			rt.writeErr(w, openai.MethodNotAllowed(r.Method, r.URL.Path, rt.method))
		})
	}
	// Other Ollama paths (pull, create, embed...): 404 in Ollama's format.
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeOllamaError(w, openai.NotFound(r.URL.Path))
	})
}
