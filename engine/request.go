// Package engine turns a model into token streams. One goroutine owns the
// model and runs steps: each step is one batched forward pass over every
// running sequence (continuous batching), with long prompts prefilled in
// chunks so running streams keep flowing. Requests wait in a bounded queue
// ordered by priority; prompts reuse cached KV blocks of earlier prompts
// with the same prefix. Each generated token is sampled, detokenized
// incrementally (never splitting a UTF-8 character), checked against stop
// strings (which never leak), and appended to the request's Stream without
// ever waiting for the reader.
package engine

import (
	"time"

	"github.com/spigot-llm/spigot/engine/sample"
)

// Finish reasons, named as the OpenAI API names them.
const (
	FinishStop   = "stop"   // an end-of-generation token or a stop string
	FinishLength = "length" // the token limit or the context was reached
)

// Request is one generation.
type Request struct {
	Prompt    []int32 // token ids, BOS included when the model wants one
	MaxTokens int     // tokens to generate at most; 0 means until the context is full
	Sample    sample.Params
	Stop      []string // stop strings; the text never includes them
	IgnoreEOS bool     // keep going past end-of-generation tokens
	// Priority orders the wait queue: lower values start first (vLLM's
	// convention); equal priorities start in arrival order.
	Priority int
	// Logprobs asks for each token's log-probability in Event.Logprob.
	Logprobs bool
	// TopLogprobs asks for this many (at most 20) most likely alternatives
	// at each step, in Event.Top.
	TopLogprobs int
}

// Result summarizes a finished request.
type Result struct {
	PromptTokens int
	CachedTokens int    // prompt tokens whose KV came from the prefix cache
	Tokens       int    // generated tokens, an end-of-generation token included
	FinishReason string // FinishStop or FinishLength
	QueueTime    time.Duration
	TTFT         time.Duration // from leaving the queue to the first token
	Elapsed      time.Duration // from leaving the queue to the end
}
