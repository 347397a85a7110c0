package gateway

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"

	"github.com/spigot-llm/spigot/api/openai"
)

// handleTokenize proxies POST /tokenize and /detokenize (llama.cpp's and
// vLLM's shapes, which Spigot serves) to an upstream of kind spigot or
// openai serving the body's model, answer passed back as it is. TGI and
// Ollama upstreams are not asked: their tokenizers' routes differ or are
// absent. Clients such as `spigot bench` use them to size prompts.
func (g *Gateway) handleTokenize(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, openai.MaxBodyBytes))
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	var req struct {
		Model string `json:"model"`
	}
	if json.Unmarshal(body, &req) != nil {
		openai.WriteError(w, openai.BadRequest("", "the request body must be a JSON object"))
		return
	}
	if !g.serves(req.Model) {
		openai.WriteError(w, openai.ModelNotFound(req.Model))
		return
	}
	var skip []*Upstream
	for _, u := range g.Upstreams() {
		if u.cfg.Kind != KindSpigot && u.cfg.Kind != KindOpenAI {
			skip = append(skip, u)
		}
	}
	var last error
	for range g.cfg.Routing.MaxAttempts {
		u, _ := g.pick(req.Model, 0, false, skip)
		if u == nil {
			break
		}
		skip = append(skip, u)
		hreq, err := http.NewRequestWithContext(r.Context(), http.MethodPost, u.cfg.URL+r.URL.Path, bytes.NewReader(body))
		if err != nil {
			last = err
			continue
		}
		hreq.Header.Set("Content-Type", "application/json")
		switch {
		case u.cfg.APIKey != "":
			hreq.Header.Set("Authorization", "Bearer "+u.cfg.APIKey)
		case len(g.keys) == 0 && r.Header.Get("Authorization") != "":
			hreq.Header.Set("Authorization", r.Header.Get("Authorization"))
		}
		resp, err := g.client.Do(hreq)
		if err != nil {
			if r.Context().Err() != nil {
				return
			}
			u.eject(g.now(), g.cfg.Health.Cooldown)
			last = err
			continue
		}
		b, err := readAllLimit(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
			if err == nil {
				err = &upstreamError{u.cfg.Name, "status " + resp.Status}
			}
			last = err
			continue
		}
		copyHeader(w.Header(), resp.Header, "Content-Type")
		w.WriteHeader(resp.StatusCode)
		w.Write(b)
		return
	}
	msg := "no upstream that serves /tokenize could answer"
	if last != nil {
		msg += ": " + last.Error()
	}
	openai.WriteError(w, &openai.Error{Status: http.StatusBadGateway, Type: openai.TypeServer, Code: "upstream_unavailable", Message: msg})
}
