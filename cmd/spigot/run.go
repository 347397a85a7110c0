package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"strings"

	"github.com/spigot-llm/spigot/engine"
	"github.com/spigot-llm/spigot/engine/sample"
)

// listFlag collects a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func runCmd(args []string, std stdio) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(std.err)
	modelPath := fs.String("m", "", "model file (GGUF, or llama2.c .bin)")
	tokPath := fs.String("tokenizer", "", "tokenizer.bin for a llama2.c checkpoint")
	prompt := fs.String("p", "", "prompt text (- reads standard input)")
	n := fs.Int("n", 128, "tokens to generate at most (0: until the context is full)")
	threads := fs.Int("threads", 0, "threads to compute with (0: all cores)")
	ctxLen := fs.Int("ctx", 0, "context length (0: the model's)")
	temp := fs.Float64("temp", 0.8, "temperature (0: greedy)")
	seed := fs.Int64("seed", -1, "sampling seed (-1: random)")
	topK := fs.Int("top-k", 40, "top-k (0: off)")
	topP := fs.Float64("top-p", 0.95, "top-p (1: off)")
	minP := fs.Float64("min-p", 0.05, "min-p (0: off)")
	repeat := fs.Float64("repeat-penalty", 1, "repetition penalty (1: off)")
	repeatN := fs.Int("repeat-last-n", 64, "tokens the penalties look back (-1: all)")
	presence := fs.Float64("presence-penalty", 0, "presence penalty")
	frequency := fs.Float64("frequency-penalty", 0, "frequency penalty")
	ignoreEOS := fs.Bool("ignore-eos", false, "keep generating past end-of-generation tokens")
	var stops, biases listFlag
	fs.Var(&stops, "stop", "stop string (repeatable)")
	fs.Var(&biases, "logit-bias", "ID=BIAS added to a token's logit (repeatable; BIAS may be -inf)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (flags go before them? the prompt goes in -p)", fs.Args())
	}
	text := *prompt
	if text == "-" {
		b, err := io.ReadAll(std.in)
		if err != nil {
			return err
		}
		text = string(b)
	}
	params := sample.Params{
		Temperature:      float32(*temp),
		TopK:             *topK,
		TopP:             float32(*topP),
		MinP:             float32(*minP),
		RepeatPenalty:    float32(*repeat),
		RepeatLastN:      *repeatN,
		PresencePenalty:  float32(*presence),
		FrequencyPenalty: float32(*frequency),
		Seed:             uint64(*seed),
	}
	if *seed < 0 {
		params.Seed = rand.Uint64()
	}
	if len(biases) > 0 {
		params.LogitBias = map[int32]float32{}
		for _, b := range biases {
			id, bias, ok := strings.Cut(b, "=")
			i, err1 := strconv.ParseInt(id, 10, 32)
			v, err2 := strconv.ParseFloat(bias, 32)
			if !ok || err1 != nil || err2 != nil {
				return fmt.Errorf("--logit-bias %q: want ID=BIAS", b)
			}
			params.LogitBias[int32(i)] = float32(v)
		}
	}

	l, err := load(*modelPath, *tokPath, *threads)
	if err != nil {
		return err
	}
	defer l.Close()
	cfg := l.model.Config()
	if err := params.Validate(cfg.Vocab); err != nil {
		return err
	}
	eng, err := engine.New(engine.Config{Model: l.model, Tokenizer: l.tok, Parallel: 1, Context: *ctxLen})
	if err != nil {
		return err
	}
	defer eng.Close()
	ids := l.tok.Encode(text, true, true)

	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stopSignals()
	out := std.out // os.Stdout is unbuffered: each piece reaches the terminal as decoded
	res, err := eng.Generate(ctx, engine.Request{
		Prompt:    ids,
		MaxTokens: *n,
		Sample:    params,
		Stop:      stops,
		IgnoreEOS: *ignoreEOS,
	}, func(ev engine.Event) error {
		_, err := io.WriteString(out, ev.Text)
		return err
	})
	fmt.Fprintln(out)
	if err != nil {
		return err
	}
	gen1 := res.Elapsed - res.TTFT
	tps := 0.0
	if res.Tokens > 1 && gen1 > 0 {
		tps = float64(res.Tokens-1) / gen1.Seconds()
	}
	fmt.Fprintf(std.err, "prompt tokens: %d, generated tokens: %d (%s), time to first token: %.1f ms, %.2f tokens/s, threads: %d\n",
		res.PromptTokens, res.Tokens, res.FinishReason, float64(res.TTFT.Microseconds())/1000, tps, l.pool.Threads())
	return nil
}
