// Package engine turns a model into token streams: it prefills prompts in
// batches, decodes autoregressively, samples, detokenizes incrementally and
// stops on end-of-generation tokens, token limits and stop strings.
package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spigot-llm/spigot/engine/sample"
	"github.com/spigot-llm/spigot/engine/stop"
	"github.com/spigot-llm/spigot/kvcache"
	"github.com/spigot-llm/spigot/model"
	"github.com/spigot-llm/spigot/tokenizer"
)

// Finish reasons, named as the OpenAI API names them.
const (
	FinishStop   = "stop"   // an end-of-generation token or a stop string
	FinishLength = "length" // the token limit or the context was reached
)

// PrefillChunk is the most prompt tokens one forward step takes.
const PrefillChunk = 512

// Request is one generation.
type Request struct {
	Prompt    []int32 // token ids, BOS included when the model wants one
	MaxTokens int     // tokens to generate at most; 0 means until the context is full
	Sample    sample.Params
	Stop      []string // stop strings; the text never includes them
	IgnoreEOS bool     // keep going past end-of-generation tokens
}

// Result summarizes a finished generation.
type Result struct {
	PromptTokens int
	Tokens       int    // generated tokens
	FinishReason string // FinishStop or FinishLength
	TTFT         time.Duration
	Elapsed      time.Duration
}

// Generator runs one sequence at a time on a model.
type Generator struct {
	Model     model.Model
	Tokenizer *tokenizer.Tokenizer
	Cache     *kvcache.Cache
	// Context is the most positions a sequence may use (prompt and output);
	// 0 means the model's training context.
	Context int
}

// Generate runs req. It calls emit once for every generated token except an
// end-of-generation token, with the text that became final with it (whole
// UTF-8 characters, never part of a stop string; often empty while text is
// held back), and at the end, if text was still held, once more with id -1.
// text is valid only during the call. An error from emit or a done ctx ends
// generation with that error.
func (g *Generator) Generate(ctx context.Context, req Request, emit func(text []byte, id int32) error) (Result, error) {
	start := time.Now()
	cfg := g.Model.Config()
	limit := g.Context
	if limit <= 0 || limit > cfg.Context {
		limit = cfg.Context
	}
	res := Result{PromptTokens: len(req.Prompt)}
	if len(req.Prompt) == 0 {
		return res, errors.New("engine: empty prompt")
	}
	if len(req.Prompt) >= limit {
		return res, fmt.Errorf("engine: prompt of %d tokens does not fit the context of %d", len(req.Prompt), limit)
	}
	if err := req.Sample.Validate(cfg.Vocab); err != nil {
		return res, err
	}
	seq := g.Cache.NewSeq()
	defer seq.Release()
	smp := sample.New(req.Sample, cfg.Vocab)
	for _, id := range req.Prompt {
		smp.Accept(id)
	}
	dec := g.Tokenizer.NewDecoder()
	dec.KeepLeadingSpace = true // the output continues the prompt
	stops := stop.New(req.Stop)
	logits := make([]float32, cfg.Vocab)
	var batch model.Batch

	// Prefill in chunks; only the last prompt token needs logits.
	for off := 0; off < len(req.Prompt); off += PrefillChunk {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		end := min(off+PrefillChunk, len(req.Prompt))
		batch.Reset()
		for i := off; i < end; i++ {
			batch.Add(req.Prompt[i], i, seq, i == len(req.Prompt)-1)
		}
		if err := g.Model.Forward(&batch, logits); err != nil {
			return res, err
		}
	}
	var text []byte
	// finish emits what the decoder and the stop matcher still hold.
	finish := func(reason string) (Result, error) {
		res.FinishReason = reason
		res.Elapsed = time.Since(start)
		out, stopped := stops.Push(dec.Flush(text[:0]))
		if len(out) > 0 {
			if err := emit(out, -1); err != nil {
				return res, err
			}
		}
		if stopped {
			res.FinishReason = FinishStop
			return res, nil
		}
		if out := stops.Flush(); len(out) > 0 {
			if err := emit(out, -1); err != nil {
				return res, err
			}
		}
		if _, ok := stops.Matched(); ok { // a pending match confirmed by Flush
			res.FinishReason = FinishStop
		}
		return res, nil
	}
	for pos := len(req.Prompt); ; pos++ {
		id := smp.Sample(logits)
		smp.Accept(id)
		res.Tokens++
		if res.Tokens == 1 {
			res.TTFT = time.Since(start)
		}
		if !req.IgnoreEOS && g.Tokenizer.IsEOG(id) {
			return finish(FinishStop)
		}
		text = dec.Append(text[:0], id)
		out, stopped := stops.Push(text)
		if err := emit(out, id); err != nil {
			return res, err
		}
		if stopped {
			res.FinishReason = FinishStop
			res.Elapsed = time.Since(start)
			return res, nil
		}
		if (req.MaxTokens > 0 && res.Tokens >= req.MaxTokens) || pos+1 >= limit {
			return finish(FinishLength)
		}
		if err := ctx.Err(); err != nil {
			return res, err
		}
		batch.Reset()
		batch.Add(id, pos, seq, true)
		if err := g.Model.Forward(&batch, logits); err != nil {
			return res, err
		}
	}
}
