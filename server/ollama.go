package server

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/spigot-llm/spigot/api/ollama"
	"github.com/spigot-llm/spigot/api/openai"
	"github.com/spigot-llm/spigot/chat"
	"github.com/spigot-llm/spigot/engine"
)

// Ollama's native API (package api/ollama holds the wire format):
//
//	POST /api/generate   NDJSON stream (or one object with "stream": false)
//	POST /api/chat       the same for chat messages
//	GET  /api/tags       the served model
//	POST /api/show       its details, template and model_info
//	GET  /api/ps         the served model, as loaded
//	GET  /api/version    the Ollama API version followed

func writeOllamaError(w http.ResponseWriter, err error) { ollama.WriteError(w, err) }

// checkOllamaModel accepts a request's model: Ollama requires one, and
// names carry a tag (":latest" when none was given).
func checkOllamaModel(m *Model, name string) error {
	if name == "" {
		return ollama.BadRequest("model is required")
	}
	if checkModel(m, name) == nil || checkModel(m, strings.TrimSuffix(name, ":latest")) == nil {
		return nil
	}
	return ollama.ModelNotFound(name)
}

// ollamaJob is a validated Ollama generation request.
type ollamaJob struct {
	job
	chat    bool
	model   string  // the name the request used, echoed in every line
	stream  bool    // NDJSON lines, or one object
	context []int32 // /api/generate: the prompt's tokens, for "context"; nil when raw
	load    bool    // nothing to generate: answer done_reason "load" at once
}

// prepareOllama parses and validates an /api/generate or /api/chat body;
// every error is an *ollama.Error.
func prepareOllama(m *Model, body []byte, isChat bool) (*ollamaJob, error) {
	var (
		oj   = &ollamaJob{chat: isChat}
		opts map[string]json.RawMessage
		ids  []int32
	)
	if isChat {
		var req ollama.ChatRequest
		if err := ollama.Decode(body, &req); err != nil {
			return nil, err
		}
		if err := checkOllamaModel(m, req.Model); err != nil {
			return nil, err
		}
		for _, f := range []struct {
			name string
			raw  json.RawMessage
		}{{"format", req.Format}, {"tools", req.Tools}, {"think", req.Think}} {
			if err := ollama.Unsupported(f.name, f.raw); err != nil {
				return nil, err
			}
		}
		oj.model, oj.stream, opts = req.Model, req.Stream == nil || *req.Stream, req.Options
		if len(req.Messages) == 0 {
			oj.load = true
			return oj, nil
		}
		msgs := make([]chat.Message, len(req.Messages))
		for i, msg := range req.Messages {
			role := strings.ToLower(msg.Role)
			switch role {
			case "system", "user", "assistant", "tool":
			default:
				return nil, ollama.BadRequest("messages[%d].role %q is not one of system, user, assistant, tool", i, msg.Role)
			}
			if len(msg.Images) > 0 {
				return nil, ollama.BadRequest("messages[%d].images: images are not supported (the model reads text only)", i)
			}
			if err := ollama.Unsupported("messages.tool_calls", msg.ToolCalls); err != nil {
				return nil, err
			}
			msgs[i] = chat.Message{Role: role, Content: msg.Content, Name: msg.ToolName}
		}
		prompt, err := m.Template.Render(msgs, true)
		if err != nil {
			return nil, ollama.BadRequest("the model's chat template cannot render these messages: %s",
				strings.TrimPrefix(err.Error(), "chat: rendering template: "))
		}
		ids = encodeChat(m.Tokenizer, prompt)
	} else {
		var req ollama.GenerateRequest
		if err := ollama.Decode(body, &req); err != nil {
			return nil, err
		}
		if err := checkOllamaModel(m, req.Model); err != nil {
			return nil, err
		}
		for _, f := range []struct {
			name string
			raw  json.RawMessage
		}{{"format", req.Format}, {"think", req.Think}} {
			if err := ollama.Unsupported(f.name, f.raw); err != nil {
				return nil, err
			}
		}
		switch {
		case req.Suffix != "":
			return nil, ollama.BadRequest("suffix is not supported (no fill-in-the-middle)")
		case req.Template != "":
			return nil, ollama.BadRequest("template is not supported: Spigot renders prompts with the model's Jinja chat template, not Go templates")
		case len(req.Images) > 0:
			return nil, ollama.BadRequest("images are not supported (the model reads text only)")
		}
		oj.model, oj.stream, opts = req.Model, req.Stream == nil || *req.Stream, req.Options
		if req.Prompt == "" && len(req.Context) == 0 {
			oj.load = true
			return oj, nil
		}
		if req.Raw {
			ids = m.Tokenizer.Encode(req.Prompt, true, true)
		} else {
			// As Ollama: the earlier conversation's tokens, as text, then
			// the prompt rendered with the template.
			var prev strings.Builder
			if len(req.Context) > 0 {
				ctxIDs := make([]int32, len(req.Context))
				for i, id := range req.Context {
					if id < 0 || id >= int64(m.Tokenizer.NVocab()) {
						return nil, ollama.BadRequest("context[%d] = %d is not a token id of this model (0 to %d)", i, id, m.Tokenizer.NVocab()-1)
					}
					ctxIDs[i] = int32(id)
				}
				prev.WriteString(m.Tokenizer.Decode(ctxIDs))
			}
			var msgs []chat.Message
			if req.System != "" {
				msgs = append(msgs, chat.Message{Role: "system", Content: req.System})
			}
			msgs = append(msgs, chat.Message{Role: "user", Content: req.Prompt})
			prompt, err := m.Template.Render(msgs, true)
			if err != nil {
				return nil, ollama.BadRequest("the model's chat template cannot render this prompt: %s",
					strings.TrimPrefix(err.Error(), "chat: rendering template: "))
			}
			ids = encodeChat(m.Tokenizer, prev.String()+prompt)
			oj.context = ids
		}
	}
	o, err := ollama.ParseOptions(opts)
	if err != nil {
		return nil, err
	}
	if err := o.Fit(len(ids), m.Engine.Config().Context); err != nil {
		return nil, err
	}
	oo := openai.Options{Request: o.Request, N: 1}
	param := "prompt"
	if isChat {
		param = "messages"
	}
	if err := validate(m, oo, ids, param); err != nil {
		return nil, ollama.ErrorFor(err)
	}
	oj.job = job{kind: openai.Completion, opts: oo, reqs: []engine.Request{oo.Choice(0, ids)}, promptTokens: len(ids)}
	if isChat {
		oj.kind = openai.Chat
	}
	return oj, nil
}

func (s *Server) handleOllamaGenerate(w http.ResponseWriter, r *http.Request, m *Model) {
	s.serveOllama(w, r, m, false)
}

func (s *Server) handleOllamaChat(w http.ResponseWriter, r *http.Request, m *Model) {
	s.serveOllama(w, r, m, true)
}

func (s *Server) serveOllama(w http.ResponseWriter, r *http.Request, m *Model, isChat bool) {
	start := time.Now()
	body, err := s.readBody(w, r)
	if err != nil {
		ollama.WriteError(w, err)
		return
	}
	oj, err := prepareOllama(m, body, isChat)
	if err != nil {
		ollama.WriteError(w, err)
		return
	}
	o := &ollamaResponse{oj: oj, start: start}
	if oj.load {
		// Ollama loads the model and answers at once; Spigot's is loaded.
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Write(o.final(ollama.DoneLoad, ""))
		return
	}
	g, err := s.startOne(r.Context(), m, &oj.job, start)
	if err != nil {
		ollama.WriteError(w, err)
		return
	}
	o.g = g
	if oj.stream {
		o.streamLines(w)
	} else {
		o.respond(w)
	}
	g.finish(w, r)
}

// ollamaResponse is one Ollama response in progress.
type ollamaResponse struct {
	oj     *ollamaJob
	g      *generation
	start  time.Time
	text   strings.Builder // the whole text, for "stream": false
	tokens []int32         // generated token ids, for /api/generate's context
}

// final returns the last object of a response: done, its reason, the
// metrics (none for a load), and text when the response is not streamed.
func (o *ollamaResponse) final(reason, text string) []byte {
	var met ollama.Metrics
	if o.g != nil {
		met = ollama.MetricsOf(o.g.results[0], time.Since(o.start))
	}
	now := time.Now().UTC()
	var v any
	if o.oj.chat {
		v = ollama.ChatResponse{Model: o.oj.model, CreatedAt: now, Message: ollama.Message{Role: "assistant", Content: text},
			Done: true, DoneReason: reason, Metrics: met}
	} else {
		var ctx []int32
		if o.oj.context != nil && reason != ollama.DoneLoad {
			ctx = append(append(make([]int32, 0, len(o.oj.context)+len(o.tokens)), o.oj.context...), o.tokens...)
		}
		v = ollama.GenerateResponse{Model: o.oj.model, CreatedAt: now, Response: text, Done: true, DoneReason: reason,
			Context: ctx, Metrics: met}
	}
	b, _ := json.Marshal(v) // plain structs: cannot fail
	return append(b, '\n')
}

func (o *ollamaResponse) take(evs []engine.Event) {
	for k := range evs {
		if evs[k].Token >= 0 && o.oj.context != nil {
			o.tokens = append(o.tokens, evs[k].Token)
		}
	}
}

// streamLines answers with one NDJSON line per event that carries text,
// then the final line (or an error line).
func (o *ollamaResponse) streamLines(w http.ResponseWriter) {
	sw := o.g.s.streamWriter(w, "application/x-ndjson")
	defer sw.done()
	sw.flush()
	o.g.drive(func(evs []engine.Event, end error) {
		o.take(evs)
		now := time.Now().UTC()
		for k := range evs {
			if evs[k].Text == "" {
				continue
			}
			if o.oj.chat {
				sw.buf = ollama.AppendChatChunk(sw.buf, o.oj.model, now, evs[k].Text)
			} else {
				sw.buf = ollama.AppendGenerateChunk(sw.buf, o.oj.model, now, evs[k].Text)
			}
		}
		switch {
		case end == io.EOF:
			sw.buf = append(sw.buf, o.final(ollama.DoneReason(o.g.results[0].FinishReason), "")...)
		case end != nil:
			sw.buf = ollama.AppendErrorLine(sw.buf, ollama.ErrorFor(end))
		}
	}, sw.flush)
}

// respond answers with one object holding the whole text.
func (o *ollamaResponse) respond(w http.ResponseWriter) {
	o.g.drive(func(evs []engine.Event, end error) {
		o.take(evs)
		for k := range evs {
			o.text.WriteString(evs[k].Text)
		}
	}, nil)
	if o.g.failure != nil {
		ollama.WriteError(w, o.g.failure)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	if _, err := w.Write(o.final(ollama.DoneReason(o.g.results[0].FinishReason), o.text.String())); err != nil {
		o.g.failure = err
	}
}

// ollamaDetails describes the served model as Ollama's listings do.
func ollamaDetails(m *Model) ollama.ModelDetails {
	c := m.Engine.Config().Model.Config()
	return ollama.ModelDetails{Format: "gguf", Family: c.Arch, Families: []string{c.Arch},
		ParameterSize: ollama.ParameterSize(parameterCount(m))}
}

// parameterCount estimates the model's parameters from its shape: the
// embedding (counted once, as if tied to the output) and each layer's
// attention, feed-forward and norm weights.
func parameterCount(m *Model) int64 {
	c := m.Engine.Config().Model.Config()
	q := int64(c.Heads * c.HeadDim)
	layer := int64(c.Dim)*q*2 + int64(c.Dim)*int64(c.KVDim())*2 + 3*int64(c.Dim)*int64(c.FFN) + 2*int64(c.Dim)
	return int64(c.Vocab)*int64(c.Dim) + int64(c.Layers)*layer + int64(c.Dim)
}

// ollamaDigest stands in for Ollama's manifest digest: the SHA-256 of the
// model's id (Spigot has no manifest, and hashing the weights would read
// gigabytes).
func ollamaDigest(m *Model) string {
	sum := sha256.Sum256([]byte(m.ID))
	return hex.EncodeToString(sum[:])
}

func (s *Server) handleOllamaTags(w http.ResponseWriter, r *http.Request, m *Model) {
	name := ollama.Name(m.ID)
	writeJSON(w, http.StatusOK, ollama.ListResponse{Models: []ollama.ListModel{{
		Name: name, Model: name, ModifiedAt: m.Created, Digest: ollamaDigest(m), Details: ollamaDetails(m),
	}}})
}

func (s *Server) handleOllamaPS(w http.ResponseWriter, r *http.Request, m *Model) {
	name := ollama.Name(m.ID)
	writeJSON(w, http.StatusOK, ollama.ProcessResponse{Models: []ollama.ProcessModel{{
		Name: name, Model: name, Digest: ollamaDigest(m), Details: ollamaDetails(m),
		// The model stays loaded: Ollama's expiry for keep_alive < 0.
		ExpiresAt:     time.Now().Add(time.Duration(math.MaxInt64)),
		ContextLength: m.Engine.Config().Context,
	}}})
}

func (s *Server) handleOllamaShow(w http.ResponseWriter, r *http.Request, m *Model) {
	body, err := s.readBody(w, r)
	if err != nil {
		ollama.WriteError(w, err)
		return
	}
	var req ollama.ShowRequest
	if err := ollama.Decode(body, &req); err != nil {
		ollama.WriteError(w, err)
		return
	}
	name := req.Model
	if name == "" {
		name = req.Name
	}
	if err := checkOllamaModel(m, name); err != nil {
		ollama.WriteError(w, err)
		return
	}
	c := m.Engine.Config().Model.Config()
	a := c.Arch
	info := map[string]any{
		"general.architecture":         a,
		"general.parameter_count":      parameterCount(m),
		a + ".context_length":          m.Engine.Config().Context,
		a + ".embedding_length":        c.Dim,
		a + ".block_count":             c.Layers,
		a + ".attention.head_count":    c.Heads,
		a + ".attention.head_count_kv": c.KVHeads,
		a + ".feed_forward_length":     c.FFN,
		a + ".vocab_size":              c.Vocab,
		"tokenizer.ggml.bos_token_id":  m.Tokenizer.BOS(),
		"tokenizer.ggml.eos_token_id":  m.Tokenizer.EOS(),
		"general.name":                 c.Name,
		a + ".rope.dimension_count":    c.HeadDim,
		"spigot.description":           m.Description,
	}
	writeJSON(w, http.StatusOK, ollama.ShowResponse{
		Modelfile:    "# Served by Spigot; there is no Modelfile.\nFROM " + m.ID + "\n",
		Template:     m.Template.Source(),
		Details:      ollamaDetails(m),
		ModelInfo:    info,
		Capabilities: []string{"completion"},
		ModifiedAt:   m.Created,
	})
}

func (s *Server) handleOllamaVersion(w http.ResponseWriter, r *http.Request, m *Model) {
	writeJSON(w, http.StatusOK, ollama.VersionResponse{Version: ollama.Version})
}
