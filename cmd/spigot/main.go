// Command spigot runs language models and streams their output.
//
// Usage:
//
//	spigot serve    [-m MODEL] [--addr 127.0.0.1:8080] ...
//	spigot gateway  --config FILE [--addr 127.0.0.1:8080] [--drain-delay D]
//	spigot bench    --url URL --concurrency N --requests M ...
//	spigot run      -m MODEL -p PROMPT [-n N] [--temp T] [--seed S] ...
//	spigot tokenize -m MODEL [--ids] TEXT
//	spigot synth    --shape NAME --type T -o FILE
//	spigot quantize IN OUT --type T [--pure]
//
// Run "spigot COMMAND -h" for a command's flags.
package main

import (
	"fmt"
	"io"
	"os"
)

// stdio is where a command reads and writes; tests substitute their own.
type stdio struct {
	in       io.Reader
	out, err io.Writer
}

type command struct {
	name, summary string
	run           func(args []string, io stdio) error
}

var commands []command

func init() {
	commands = []command{
		{"run", "generate text from a prompt, printing each piece as it is decoded", runCmd},
		{"serve", "serve the OpenAI-compatible HTTP API (streaming), with a chat page", serveCmd},
		{"tokenize", "print a text's token ids as a JSON array", tokenizeCmd},
		{"synth", "write a Llama GGUF file with deterministic random weights", synthCmd},
		{"quantize", "rewrite a model's weight matrices as llama-quantize does (F16, BF16, Q8_0, Q4_0, Q6_K, Q5_K_M, Q4_K_M, ...)", quantizeCmd},
		{"gateway", "route the OpenAI API to several upstreams (spigot, vLLM, TGI, Ollama) with health checks and failover", gatewayCmd},
		{"bench", "load-test an OpenAI-compatible server with streaming requests", benchCmd},
	}
}

func usage() {
	fmt.Fprintf(os.Stderr, "Spigot runs language models and streams their output token by token.\n\nUsage: spigot COMMAND [flags]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(os.Stderr, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(os.Stderr, "\nRun 'spigot COMMAND -h' for a command's flags.\n")
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	name := os.Args[1]
	if name == "-h" || name == "--help" || name == "help" {
		usage()
		return
	}
	for _, c := range commands {
		if c.name == name {
			if err := c.run(os.Args[2:], stdio{os.Stdin, os.Stdout, os.Stderr}); err != nil {
				fmt.Fprintf(os.Stderr, "spigot %s: %v\n", name, err)
				os.Exit(1)
			}
			return
		}
	}
	fmt.Fprintf(os.Stderr, "spigot: unknown command %q\n\n", name)
	usage()
	os.Exit(2)
}
