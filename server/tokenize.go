package server

import (
	"net/http"
	"unicode/utf8"

	"github.com/spigot-llm/spigot/api/openai"
)

// handleTokenize answers POST /tokenize: {"content"|"prompt": TEXT} →
// {"tokens": [...], "count": N, "max_model_len": CTX}.
func (s *Server) handleTokenize(w http.ResponseWriter, r *http.Request, m *Model) {
	body, err := s.readBody(w, r)
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	var req openai.TokenizeRequest
	if err := openai.Decode(body, &req); err != nil {
		openai.WriteError(w, err)
		return
	}
	if err := checkModel(m, req.Model); err != nil {
		openai.WriteError(w, err)
		return
	}
	var text string
	addSpecial := false // llama.cpp's default for "content"
	switch {
	case req.Content != nil:
		text = *req.Content
	case req.Prompt != nil:
		text, addSpecial = *req.Prompt, true // vLLM's default for "prompt"
	default:
		openai.WriteError(w, openai.BadRequest("content", `want the text as "content" or "prompt"`))
		return
	}
	if req.AddSpecial != nil {
		addSpecial = *req.AddSpecial
	} else if req.AddSpecialTokens != nil {
		addSpecial = *req.AddSpecialTokens
	}
	parseSpecial := req.ParseSpecial == nil || *req.ParseSpecial
	ids := m.Tokenizer.Encode(text, addSpecial, parseSpecial)
	if ids == nil {
		ids = []int32{}
	}
	resp := openai.TokenizeResponse{Tokens: ids, Count: len(ids), MaxModelLen: m.Engine.Config().Context}
	if req.WithPieces {
		pieces := make([]openai.TokenPiece, len(ids))
		for i, id := range ids {
			p := m.Tokenizer.Piece(id)
			pieces[i] = openai.TokenPiece{ID: id, Piece: p}
			if !utf8.ValidString(p) {
				b := make([]int, len(p))
				for k := range len(p) {
					b[k] = int(p[k])
				}
				pieces[i].Piece = b
			}
		}
		resp.Tokens = pieces
	}
	writeJSON(w, http.StatusOK, resp)
}

// handleDetokenize answers POST /detokenize: {"tokens": [...]} →
// {"content": TEXT, "prompt": TEXT}.
func (s *Server) handleDetokenize(w http.ResponseWriter, r *http.Request, m *Model) {
	body, err := s.readBody(w, r)
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	var req openai.DetokenizeRequest
	if err := openai.Decode(body, &req); err != nil {
		openai.WriteError(w, err)
		return
	}
	if err := checkModel(m, req.Model); err != nil {
		openai.WriteError(w, err)
		return
	}
	n := m.Tokenizer.NVocab()
	for i, id := range req.Tokens {
		if id < 0 || int(id) >= n {
			openai.WriteError(w, openai.BadRequest("tokens", "tokens[%d] = %d is outside the vocabulary [0, %d)", i, id, n))
			return
		}
	}
	text := m.Tokenizer.Decode(req.Tokens)
	writeJSON(w, http.StatusOK, openai.DetokenizeResponse{Content: text, Prompt: text})
}
