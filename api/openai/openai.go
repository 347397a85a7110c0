// Package openai is the wire format of Spigot's OpenAI-compatible API:
// the request bodies of POST /v1/completions and POST /v1/chat/completions
// and their validation into engine settings ([Options]), the error object
// and the one function that maps errors to HTTP statuses ([ErrorFor]), and
// an [Encoder] that appends responses and stream chunks to a reused buffer.
//
// Field names and shapes follow OpenAI's API reference
// (https://platform.openai.com/docs/api-reference/chat and /completions),
// with the sampling extensions vLLM and llama.cpp's server accept: top_k,
// min_p, repetition_penalty (vLLM) or repeat_penalty (llama.cpp),
// ignore_eos and priority. Not supported, and rejected with a 400 that
// says so: tools and functions, response_format other than text, suffix,
// best_of other than n, and logprobs together with echo. Requests may
// carry fields this package does not know; they are ignored.
//
// The tokenize and detokenize bodies are llama.cpp's and vLLM's, which
// spell the text "content" and "prompt" respectively; both are accepted.
package openai

// Model is one entry of GET /v1/models. MaxModelLen (vLLM's field) and
// Description are extensions.
type Model struct {
	ID          string `json:"id"`
	Object      string `json:"object"` // "model"
	Created     int64  `json:"created"`
	OwnedBy     string `json:"owned_by"`
	MaxModelLen int    `json:"max_model_len,omitempty"`
	Description string `json:"description,omitempty"`
}

// ModelList is the body of GET /v1/models.
type ModelList struct {
	Object string  `json:"object"` // "list"
	Data   []Model `json:"data"`
}

// TokenizeRequest is the body of POST /tokenize. The text is "content"
// (llama.cpp) or "prompt" (vLLM). BOS is added when add_special
// (llama.cpp's name, default false) or add_special_tokens (vLLM's, default
// true) says so; whichever spelling the text used decides the default.
type TokenizeRequest struct {
	Content          *string `json:"content"`
	Prompt           *string `json:"prompt"`
	Model            string  `json:"model"`
	AddSpecial       *bool   `json:"add_special"`
	AddSpecialTokens *bool   `json:"add_special_tokens"`
	// ParseSpecial turns special-token text such as <s> into its id
	// (default true, as llama.cpp).
	ParseSpecial *bool `json:"parse_special"`
	// WithPieces returns {"id","piece"} objects instead of bare ids
	// (llama.cpp).
	WithPieces bool `json:"with_pieces"`
}

// TokenizeResponse is the body POST /tokenize answers: llama.cpp's tokens,
// plus vLLM's count and max_model_len.
type TokenizeResponse struct {
	Tokens      any `json:"tokens"` // []int32, or []TokenPiece with with_pieces
	Count       int `json:"count"`
	MaxModelLen int `json:"max_model_len"`
}

// TokenPiece is a token with its text, as llama.cpp's with_pieces returns
// it: Piece is a string, or an array of bytes when the text is not valid
// UTF-8 (one byte of a multi-byte character).
type TokenPiece struct {
	ID    int32 `json:"id"`
	Piece any   `json:"piece"`
}

// DetokenizeRequest is the body of POST /detokenize.
type DetokenizeRequest struct {
	Tokens []int32 `json:"tokens"`
	Model  string  `json:"model"`
}

// DetokenizeResponse is the body POST /detokenize answers, with the text
// under both llama.cpp's name (content) and vLLM's (prompt).
type DetokenizeResponse struct {
	Content string `json:"content"`
	Prompt  string `json:"prompt"`
}
