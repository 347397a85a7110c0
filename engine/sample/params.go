package sample

import (
	"errors"
	"fmt"
	"math"
)

// DefaultRepeatLastN is the penalty window used when [Params.RepeatLastN] is
// 0. It is llama.cpp's default (repeat_last_n = 64).
const DefaultRepeatLastN = 64

// Params are the sampling settings of one sequence. The zero value is greedy
// decoding with every transform off; each field's comment says which value
// turns it off. Check a request's Params with [Params.Validate] before
// passing them to [New].
type Params struct {
	// Temperature divides the logits before truncation and the draw. 0 means
	// greedy decoding: the token with the largest logit after penalties and
	// bias, ties going to the lowest id. Must be finite and >= 0.
	Temperature float32

	// TopK keeps only the TopK most likely tokens. 0 (or any value >= the
	// vocabulary size) turns it off. Must be >= 0.
	TopK int

	// TopP keeps the smallest set of most likely tokens whose probabilities,
	// after temperature and top-k, sum to at least TopP (nucleus sampling).
	// 0 or 1 turns it off; otherwise it must be in (0, 1].
	TopP float32

	// MinP keeps only tokens whose probability is at least MinP times the
	// probability of the most likely token. 0 turns it off. Must be in [0, 1].
	MinP float32

	// RepeatPenalty is llama.cpp's repetition penalty: the logit l of every
	// token that occurs in the penalty window becomes l/RepeatPenalty when
	// l > 0 and l*RepeatPenalty otherwise, once regardless of how often the
	// token occurs. 0 or 1 turns it off. Must be finite and >= 0.
	RepeatPenalty float32

	// RepeatLastN is the penalty window: the number of most recently accepted
	// tokens (see [Sampler.Accept]) that RepeatPenalty, PresencePenalty and
	// FrequencyPenalty look at. 0 means DefaultRepeatLastN (64, as llama.cpp);
	// -1 means the whole history. Unlike llama.cpp, 0 does not turn the
	// penalties off: set them to their neutral values instead (a front end
	// that accepts llama.cpp's repeat_last_n = 0 should do that). Must be
	// >= -1.
	RepeatLastN int

	// PresencePenalty is subtracted once from the logit of every token that
	// occurs in the penalty window (OpenAI presence_penalty). Must be finite;
	// OpenAI's [-2, 2] range is left to the API layer.
	PresencePenalty float32

	// FrequencyPenalty times the number of occurrences of a token in the
	// penalty window is subtracted from its logit (OpenAI frequency_penalty).
	// Must be finite.
	FrequencyPenalty float32

	// LogitBias is added to the logits of the given token ids after the
	// penalties. A bias of -Inf bans the token. Ids must be in [0, nVocab);
	// biases must be finite or -Inf. New copies the map; later changes to it
	// have no effect.
	LogitBias map[int32]float32

	// Seed seeds the sampler's PRNG (PCG from math/rand/v2). The same Seed,
	// Params and sequence of logits and accepted tokens give the same tokens.
	// 0 is an ordinary seed, not "random": a caller that wants a fresh
	// sequence each time must choose a random seed itself.
	Seed uint64
}

// ErrInvalidParams is matched (with [errors.Is]) by every error that
// [Params.Validate] returns.
var ErrInvalidParams = errors.New("sample: invalid parameters")

// ParamError is the error [Params.Validate] returns. Field is the parameter's
// wire name as the OpenAI and llama.cpp APIs spell it (temperature, top_k,
// top_p, min_p, repeat_penalty, repeat_last_n, presence_penalty,
// frequency_penalty, logit_bias) or n_vocab.
type ParamError struct {
	Field  string
	Reason string
}

// Error returns "sample: invalid <field>: <reason>".
func (e *ParamError) Error() string {
	return "sample: invalid " + e.Field + ": " + e.Reason
}

// Unwrap returns [ErrInvalidParams].
func (e *ParamError) Unwrap() error { return ErrInvalidParams }

// Validate reports whether p can be used with a vocabulary of nVocab tokens.
// It returns a *[ParamError] naming the first bad field in the order the
// fields are declared; for logit_bias it names the lowest bad token id.
func (p Params) Validate(nVocab int) error {
	bad := func(field, format string, args ...any) error {
		return &ParamError{Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	if nVocab <= 0 {
		return bad("n_vocab", "must be > 0, got %d", nVocab)
	}
	if !finite(p.Temperature) || p.Temperature < 0 {
		return bad("temperature", "must be a finite number >= 0, got %v", p.Temperature)
	}
	if p.TopK < 0 {
		return bad("top_k", "must be >= 0 (0 disables), got %d", p.TopK)
	}
	if !(p.TopP >= 0 && p.TopP <= 1) { // also catches NaN
		return bad("top_p", "must be in (0, 1] (0 or 1 disables), got %v", p.TopP)
	}
	if !(p.MinP >= 0 && p.MinP <= 1) {
		return bad("min_p", "must be in [0, 1] (0 disables), got %v", p.MinP)
	}
	if !finite(p.RepeatPenalty) || p.RepeatPenalty < 0 {
		return bad("repeat_penalty", "must be a finite number > 0 (0 or 1 disables), got %v", p.RepeatPenalty)
	}
	if p.RepeatLastN < -1 {
		return bad("repeat_last_n", "must be >= -1 (-1 is the whole history, 0 the default %d), got %d", DefaultRepeatLastN, p.RepeatLastN)
	}
	if !finite(p.PresencePenalty) {
		return bad("presence_penalty", "must be finite, got %v", p.PresencePenalty)
	}
	if !finite(p.FrequencyPenalty) {
		return bad("frequency_penalty", "must be finite, got %v", p.FrequencyPenalty)
	}
	var (
		badID  int32
		reason string
	)
	for id, b := range p.LogitBias {
		if reason != "" && id > badID {
			continue
		}
		switch {
		case id < 0 || int(id) >= nVocab:
			badID, reason = id, fmt.Sprintf("token id %d out of range [0, %d)", id, nVocab)
		case math.IsNaN(float64(b)) || math.IsInf(float64(b), 1):
			badID, reason = id, fmt.Sprintf("token %d: bias must be finite or -Inf, got %v", id, b)
		}
	}
	if reason != "" {
		return bad("logit_bias", "%s", reason)
	}
	return nil
}

func finite(f float32) bool {
	return !math.IsNaN(float64(f)) && !math.IsInf(float64(f), 0)
}
