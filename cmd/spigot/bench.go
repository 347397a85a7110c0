package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spigot-llm/spigot/bench"
)

// benchCmd load-tests an OpenAI-compatible server (Spigot, llama.cpp's
// llama-server, vLLM) with streaming requests and prints the figures.
// Ctrl-C stops the run and prints what it measured so far.
func benchCmd(args []string, std stdio) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(std.err)
	url := fs.String("url", "", "server base URL, e.g. http://127.0.0.1:8080 (required)")
	concurrency := fs.Int("concurrency", 1, "requests in flight at a time")
	requests := fs.Int("requests", 16, "requests to send")
	promptTokens := fs.Int("prompt-tokens", bench.DefaultPromptTokens, "generate a prompt of this many tokens (calibrated with the server's /tokenize if it has one)")
	prompt := fs.String("prompt", "", "prompt text, instead of a generated one")
	promptFile := fs.String("prompt-file", "", "read the prompt from a file (- for standard input)")
	samePrompt := fs.Bool("same-prompt", false, "send the same prompt every time, rather than each starting with its request number (lets a prefix cache work)")
	maxTokens := fs.Int("max-tokens", bench.DefaultMaxTokens, "tokens to generate per request (max_tokens)")
	model := fs.String("model", "", "model name to send (default: the first of GET /v1/models)")
	api := fs.String("api", bench.APIChat, "API: chat (/v1/chat/completions) or completions (/v1/completions)")
	apiKey := fs.String("api-key", "", "send Authorization: Bearer KEY")
	temperature := fs.Float64("temperature", 0, "sampling temperature")
	ignoreEOS := fs.Bool("ignore-eos", true, `send "ignore_eos": true so that every stream generates max-tokens tokens (--ignore-eos=false to leave it out)`)
	timeout := fs.Duration("timeout", bench.DefaultTimeout, "limit for each request")
	duration := fs.Duration("duration", 0, "limit for the whole run; what is in flight then is cancelled (0: none)")
	jsonOut := fs.String("json", "", "also write the figures as JSON to this file (- for standard output, the table then going to standard error)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *url == "" {
		return errors.New("no server: use --url http://HOST:PORT")
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	n := 0
	for _, name := range []string{"prompt", "prompt-file", "prompt-tokens"} {
		if set[name] {
			n++
		}
	}
	if n > 1 {
		return errors.New("give one of --prompt, --prompt-file and --prompt-tokens")
	}
	text := *prompt
	if *promptFile != "" {
		var b []byte
		var err error
		if *promptFile == "-" {
			b, err = io.ReadAll(std.in)
		} else {
			b, err = os.ReadFile(*promptFile)
		}
		if err != nil {
			return err
		}
		if text = string(b); text == "" {
			return fmt.Errorf("prompt file %s is empty", *promptFile)
		}
	}

	cfg := bench.Config{
		URL:          *url,
		API:          *api,
		Model:        *model,
		APIKey:       *apiKey,
		Concurrency:  *concurrency,
		Requests:     *requests,
		Prompt:       text,
		PromptTokens: *promptTokens,
		SamePrompt:   *samePrompt,
		MaxTokens:    *maxTokens,
		Temperature:  *temperature,
		IgnoreEOS:    *ignoreEOS,
		Timeout:      *timeout,
		Duration:     *duration,
	}
	if f, ok := std.err.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			cfg.Progress = f
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	res, err := bench.Run(ctx, cfg)
	interrupted := ctx.Err() != nil
	stop() // a second Ctrl-C kills
	if err != nil {
		return err
	}

	table := std.out
	if *jsonOut == "-" {
		table = std.err
	}
	if err := res.WriteText(table); err != nil {
		return err
	}
	if *jsonOut != "" {
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return err
		}
		b = append(b, '\n')
		if *jsonOut == "-" {
			_, err = std.out.Write(b)
		} else {
			err = os.WriteFile(*jsonOut, b, 0o644)
		}
		if err != nil {
			return err
		}
	}
	switch {
	case interrupted:
		return fmt.Errorf("interrupted after %d of %d requests", res.Completed+res.Errors+res.RateLimited, res.Requests)
	case res.Completed == 0:
		return fmt.Errorf("no request completed (%d errors, %d rate-limited)", res.Errors, res.RateLimited)
	}
	return nil
}
