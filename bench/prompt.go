package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
)

// The words prompts are made of (see the package documentation):
// common enough to be one token with a leading space in the usual
// vocabularies, and sentence openers that are one token capitalized.
var (
	promptWords = strings.Fields(`time people year way day man thing woman life child world school
		state family student group country problem hand part place case week company system
		program question work government number night point home water room mother area money
		story fact month lot right study book eye job word business issue side kind head house
		service friend father power hour game line end member law car city community name
		president team minute idea kid body information back parent face others level office
		door health person art war history party result change morning reason research girl
		guy moment air teacher force education good new first last long great little own other
		old right big high different small large next early young important few public bad same
		able go make know take see come think look want give use find tell ask work seem feel try
		leave call keep let begin help talk turn start show hear play run move like live believe
		hold bring happen write provide sit stand lose pay meet include continue set learn lead
		understand watch follow stop create speak read spend grow open walk win offer remember
		love consider appear buy wait serve die send expect build stay fall cut reach kill remain
		and of to in for on with at by from as into about over after before under between`)
	promptOpeners = strings.Fields(`The A In When She He They It Then One This Every Some After`)
)

// promptUnits returns the first n units (words or periods) of the
// deterministic text, with their leading spaces.
func promptUnits(n int) []string {
	r := rand.New(rand.NewPCG(0x5eed, 0x5910))
	units := make([]string, 0, n)
	for len(units) < n {
		words := 6 + r.IntN(10)
		units = append(units, " "+promptOpeners[r.IntN(len(promptOpeners))])
		for i := 1; i < words && len(units) < n; i++ {
			units = append(units, " "+promptWords[r.IntN(len(promptWords))])
		}
		if len(units) < n {
			units = append(units, ".")
		}
	}
	return units
}

// promptText joins units into text, without the first unit's leading
// space.
func promptText(units []string) string {
	return strings.TrimPrefix(strings.Join(units, ""), " ")
}

// uniquePrefix is the text put before request i's prompt so that no two
// requests share a prefix a server could cache: a fixed-width number, so
// that every request's prompt has the same length in tokens.
func uniquePrefix(i, requests int) string {
	width := max(len(fmt.Sprint(requests-1)), 6)
	return fmt.Sprintf("[%0*d] ", width, i)
}

// tokenizer counts the tokens of a text on the server.
type tokenizer func(ctx context.Context, text string) (int, error)

// serverTokenizer returns a tokenizer that asks POST {base}/tokenize.
func serverTokenizer(hc *http.Client, base, model, apiKey string) tokenizer {
	return func(ctx context.Context, text string) (int, error) {
		body := map[string]any{
			"content": text, "add_special": false, // llama.cpp, Spigot
			"prompt": text, "add_special_tokens": false, // vLLM
		}
		if model != "" {
			body["model"] = model
		}
		b, _ := json.Marshal(body)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/tokenize", bytes.NewReader(b))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Content-Type", "application/json")
		if apiKey != "" {
			req.Header.Set("Authorization", "Bearer "+apiKey)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("POST /tokenize: %s", resp.Status)
		}
		var out struct {
			Tokens []json.RawMessage `json:"tokens"` // ids, or objects with pieces
			Count  *int              `json:"count"`
		}
		if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&out); err != nil {
			return 0, fmt.Errorf("POST /tokenize: %w", err)
		}
		if out.Count != nil {
			return *out.Count, nil
		}
		if out.Tokens == nil {
			return 0, fmt.Errorf("POST /tokenize: no tokens in the answer")
		}
		return len(out.Tokens), nil
	}
}

// promptSpec is the text of the prompts a run sends.
type promptSpec struct {
	// Text is what follows each request's unique prefix.
	Text string
	// Tokens is the prompt's length in tokens, prefix included, without
	// BOS or chat template: measured by the server if Calibrated, else
	// estimated (0 for a prompt given as text, not measured).
	Tokens int
	// Calibrated reports whether Tokens was measured with /tokenize.
	Calibrated bool
	// Note says why calibration was not possible, if it was tried.
	Note string
}

// makePrompt builds a prompt of about target tokens including prefix (a
// representative unique prefix, "" if none), calibrated with tok if it
// is not nil and works.
func makePrompt(ctx context.Context, target int, prefix string, tok tokenizer) promptSpec {
	prefixEst := estimateTokens(prefix)
	n := max(target-prefixEst, 1)
	units := promptUnits(2*n + 16)
	est := promptSpec{Text: promptText(units[:n]), Tokens: prefixEst + n}
	if tok == nil {
		return est
	}
	count := func(k int) (int, error) { return tok(ctx, prefix+promptText(units[:k])) }
	c0, err := count(n)
	if err != nil {
		est.Note = fmt.Sprintf("not calibrated: %v", err)
		return est
	}
	// Bisect for the largest k with count(k) <= target, keeping the
	// counts seen (the text grows a unit at a time, so count is
	// nondecreasing in k).
	lo, hi := 0, len(units) // count(lo) <= target < count(hi), hi maybe unmeasured
	loCount := 0
	if c0 <= target {
		lo, loCount = n, c0
	} else {
		hi = n
	}
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		c, err := count(mid)
		if err != nil {
			est.Note = fmt.Sprintf("not calibrated: %v", err)
			return est
		}
		if c <= target {
			lo, loCount = mid, c
		} else {
			hi = mid
		}
	}
	text := promptText(units[:lo])
	if lo == 0 {
		if loCount, err = count(0); err != nil {
			est.Note = fmt.Sprintf("not calibrated: %v", err)
			return est
		}
	}
	// Make up a shortfall with filler words, each usually one token.
	for range 4 {
		if loCount >= target {
			break
		}
		c, err := tok(ctx, prefix+text+" a")
		if err != nil || c > target {
			break
		}
		text, loCount = text+" a", c
	}
	return promptSpec{Text: text, Tokens: loCount, Calibrated: true}
}

// estimateTokens guesses a text's length in tokens: a word, a number or
// a punctuation mark is about one token.
func estimateTokens(s string) int {
	n := 0
	inWord := false
	for _, c := range s {
		switch {
		case c == ' ' || c == '\n' || c == '\t':
			inWord = false
		case c >= '0' && c <= '9':
			n++ // Llama's tokenizers split digits
			inWord = false
		case c == '.' || c == ',' || c == '[' || c == ']' || c == ':' || c == '!' || c == '?':
			n++
			inWord = false
		default:
			if !inWord {
				n++
			}
			inWord = true
		}
	}
	return n
}
