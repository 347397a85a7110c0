package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"time"

	"github.com/spigot-llm/spigot/api/ollama"
	"github.com/spigot-llm/spigot/api/openai"
	"github.com/spigot-llm/spigot/api/tgi"
)

// answer is an upstream's 200 response, read as OpenAI's API answers.
type answer struct {
	stream source                 // the stream, for stream requests
	whole  func() ([]byte, error) // the whole response, for the others
}

// translateError is a request an upstream's API cannot express; the
// client gets err.
type translateError struct{ err *openai.Error }

func (e *translateError) Error() string { return e.err.Message }

// send sends an attempt's body (OpenAI's, possibly a continuation) to u in
// u's own API. On a 200 the answer reads the response as OpenAI's; on
// other statuses only the response is meaningful.
func (g *Gateway) send(ctx context.Context, u *Upstream, r *request, body []byte, auth string) (*http.Response, *answer, error) {
	path, native := r.path, false
	var tr translator
	switch {
	case u.cfg.Kind == KindTGI && r.kind == openai.Completion:
		b, err := toTGI(body, r.stream)
		if err != nil {
			return nil, nil, err
		}
		path, body, native = "/generate", b, true
		if r.stream {
			path = "/generate_stream"
		}
		tr = &tgiTranslator{}
	case u.cfg.Kind == KindOllama:
		b, err := toOllama(body, r.kind, r.stream, u.cfg.Models[0])
		if err != nil {
			return nil, nil, err
		}
		path, body, native = "/api/generate", b, true
		if r.kind == openai.Chat {
			path = "/api/chat"
		}
		tr = &ollamaTranslator{}
	}
	// TGI's chat requests go to its OpenAI-compatible Messages API
	// (/v1/chat/completions) as they are: its native API has no chat.
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, u.cfg.URL+path, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	if r.stream && u.cfg.Kind != KindOllama {
		hreq.Header.Set("Accept", "text/event-stream")
	}
	switch {
	case u.cfg.APIKey != "":
		hreq.Header.Set("Authorization", "Bearer "+u.cfg.APIKey)
	case auth != "":
		hreq.Header.Set("Authorization", auth)
	}
	resp, err := g.do(ctx, hreq, body)
	if err != nil {
		return nil, nil, err
	}
	a := &answer{}
	if !native {
		a.stream = newSSESource(resp.Body)
		a.whole = func() ([]byte, error) { return readAllLimit(resp.Body) }
		return resp, a, nil
	}
	model := r.model
	if model == "" {
		model = u.cfg.Models[0]
	}
	enc := openai.NewEncoder(openai.EncoderConfig{Kind: r.kind, ID: newID(r.kind), Created: time.Now().Unix(),
		Model: model, Choices: 1, IncludeUsage: r.includeUsage})
	tr.init(enc, r)
	if r.stream {
		a.stream = newTranslatedSource(resp.Body, tr, u.cfg.Kind == KindTGI)
	} else {
		a.whole = func() ([]byte, error) {
			b, err := readAllLimit(resp.Body)
			if err != nil {
				return nil, err
			}
			return tr.whole(b)
		}
	}
	return resp, a, nil
}

// do sends req, whose body is body, to an upstream. An upstream may close
// a kept-alive connection just as a request goes out on it: llama-server,
// like uvicorn (vLLM) and Node, closes connections idle for 5 s, and
// net/http does not send a POST again. So a request that fails on a
// reused connection before any response is sent again (twice at most)
// rather than counted as the upstream's failure.
func (g *Gateway) do(ctx context.Context, req *http.Request, body []byte) (*http.Response, error) {
	var reused bool
	trace := &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) { reused = ci.Reused }}
	req = req.WithContext(httptrace.WithClientTrace(ctx, trace))
	for try := 0; ; try++ {
		reused = false
		resp, err := g.client.Do(req)
		if err == nil || !reused || try == 2 || ctx.Err() != nil {
			return resp, err
		}
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
}

func readAllLimit(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxResponseBody+1))
	if err == nil && len(b) > maxResponseBody {
		err = fmt.Errorf("gateway: upstream response over %d bytes", maxResponseBody)
	}
	return b, err
}

// newID returns a response id such as "chatcmpl-3f2a…", as Spigot's.
func newID(kind openai.Kind) string {
	prefix := "cmpl-"
	if kind == openai.Chat {
		prefix = "chatcmpl-"
	}
	return fmt.Sprintf("%s%016x%08x", prefix, rand.Uint64(), rand.Uint32())
}

// upstreamClientError reads a 4xx answer: nil when it is an OpenAI error
// object, passed on as it is, else the OpenAI error to send instead.
func upstreamClientError(u *Upstream, resp *http.Response, msg []byte) *openai.Error {
	var oe struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(msg, &oe) == nil && len(oe.Error) > 0 && oe.Error[0] == '{' {
		return nil
	}
	text := string(bytes.TrimSpace(msg))
	var se struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(msg, &se) == nil && se.Error != "" { // TGI's and Ollama's {"error": "..."}
		text = se.Error
	}
	e := &openai.Error{Status: resp.StatusCode, Type: openai.TypeInvalidRequest, Message: fmt.Sprintf("upstream %s: %s", u.cfg.Name, text)}
	if resp.StatusCode == http.StatusNotFound && u.cfg.Kind == KindOllama {
		e.Code = "model_not_found"
	}
	return e
}

// sampling are the OpenAI fields translated to TGI's and Ollama's.
type sampling struct {
	openai.Params
	Prompt   json.RawMessage  `json:"prompt"`
	Messages []openai.Message `json:"messages"`
}

func (s *sampling) stops() ([]string, error) {
	raw := bytes.TrimSpace(s.Stop)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if raw[0] == '"' {
		var one string
		err := json.Unmarshal(raw, &one)
		return []string{one}, err
	}
	var list []string
	err := json.Unmarshal(raw, &list)
	return list, err
}

func parseSampling(body []byte) (*sampling, []string, error) {
	var s sampling
	if err := json.Unmarshal(body, &s); err != nil {
		return nil, nil, &translateError{openai.BadRequest("", "the request cannot be read: %v", err)}
	}
	stops, err := s.stops()
	if err != nil {
		return nil, nil, &translateError{openai.BadRequest("stop", "stop must be a string or an array of strings")}
	}
	return &s, stops, nil
}

// textPrompt returns a completion's one text prompt.
func (s *sampling) textPrompt(kind string) (string, error) {
	var p string
	if raw := bytes.TrimSpace(s.Prompt); len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &p) != nil {
		return "", &translateError{openai.BadRequest("prompt", "%s upstreams take one text prompt (not token ids or several prompts)", kind)}
	}
	return p, nil
}

// toTGI translates a completions body to TGI's /generate(_stream) body.
// OpenAI's default temperature is 1 (sampling); temperature 0 is TGI's
// greedy decoding (do_sample false, no temperature: TGI refuses 0).
func toTGI(body []byte, stream bool) ([]byte, error) {
	s, stops, err := parseSampling(body)
	if err != nil {
		return nil, err
	}
	prompt, err := s.textPrompt("tgi")
	if err != nil {
		return nil, err
	}
	p := tgi.Parameters{Details: true, Stop: stops, TopP: s.TopP, TopK: s.TopK, RepetitionPenalty: s.RepetitionPenalty,
		FrequencyPenalty: s.FrequencyPenalty}
	if s.RepetitionPenalty == nil {
		p.RepetitionPenalty = s.RepeatPenalty
	}
	if p.TopK != nil && *p.TopK <= 0 {
		p.TopK = nil
	}
	if p.TopP != nil && *p.TopP >= 1 {
		p.TopP = nil // TGI wants top_p < 1
	}
	maxNew := openai.DefaultCompletionMaxTokens
	if s.MaxTokens != nil {
		maxNew = *s.MaxTokens
	}
	p.MaxNewTokens = &maxNew
	temp := 1.0
	if s.Temperature != nil {
		temp = *s.Temperature
	}
	if temp > 0 {
		p.DoSample, p.Temperature = true, &temp
	}
	if s.Seed != nil {
		seed := uint64(*s.Seed)
		p.Seed = &seed
	}
	return json.Marshal(map[string]any{"inputs": prompt, "parameters": p, "stream": stream})
}

// toOllama translates a completions body to /api/generate's (raw: the
// prompt is not templated, as OpenAI's completions are not) or a chat body
// to /api/chat's. A chat ending in an assistant message is continued by
// Ollama (the message is the start of the answer).
func toOllama(body []byte, kind openai.Kind, stream bool, defModel string) ([]byte, error) {
	s, stops, err := parseSampling(body)
	if err != nil {
		return nil, err
	}
	opts := map[string]any{}
	set := func(name string, v any, ok bool) {
		if ok {
			opts[name] = v
		}
	}
	set("temperature", s.Temperature, s.Temperature != nil)
	set("top_p", s.TopP, s.TopP != nil)
	set("top_k", s.TopK, s.TopK != nil)
	set("min_p", s.MinP, s.MinP != nil)
	set("seed", s.Seed, s.Seed != nil)
	set("presence_penalty", s.PresencePenalty, s.PresencePenalty != nil)
	set("frequency_penalty", s.FrequencyPenalty, s.FrequencyPenalty != nil)
	set("repeat_penalty", s.RepetitionPenalty, s.RepetitionPenalty != nil)
	set("repeat_penalty", s.RepeatPenalty, s.RepeatPenalty != nil)
	set("stop", stops, len(stops) > 0)
	switch {
	case s.MaxTokens != nil:
		opts["num_predict"] = *s.MaxTokens
	case kind == openai.Completion:
		opts["num_predict"] = openai.DefaultCompletionMaxTokens
	}
	model := s.Model
	if model == "" {
		model = defModel
	}
	m := map[string]any{"model": model, "stream": stream, "options": opts}
	if kind == openai.Completion {
		prompt, err := s.textPrompt("ollama")
		if err != nil {
			return nil, err
		}
		m["prompt"], m["raw"] = prompt, true
	} else {
		var cr struct {
			MaxCompletionTokens *int `json:"max_completion_tokens"`
		}
		json.Unmarshal(body, &cr)
		if cr.MaxCompletionTokens != nil {
			opts["num_predict"] = *cr.MaxCompletionTokens
		}
		msgs := make([]ollama.Message, len(s.Messages))
		for i := range s.Messages {
			role, text, err := s.Messages[i].Text(i)
			if err != nil {
				return nil, &translateError{openai.ErrorFor(err)}
			}
			msgs[i] = ollama.Message{Role: role, Content: text}
		}
		m["messages"] = msgs
	}
	return json.Marshal(m)
}
