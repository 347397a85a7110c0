package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"

	"github.com/spigot-llm/spigot/quant"
	"github.com/spigot-llm/spigot/quantize"
)

func quantizeCmd(args []string, std stdio) error {
	fs := flag.NewFlagSet("quantize", flag.ContinueOnError)
	fs.SetOutput(std.err)
	typ := fs.String("type", "Q8_0", "weight type: F32, F16, BF16, Q8_0, Q4_0")
	tokPath := fs.String("tokenizer", "", "tokenizer.bin for a llama2.c checkpoint")
	// Flags may come before or after IN and OUT.
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != 2 {
		return fmt.Errorf("want IN and OUT files, got %d arguments", len(pos))
	}
	t, err := quant.ParseType(*typ)
	if err != nil {
		return err
	}
	in, err := openFile(pos[0], *tokPath)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(pos[1])
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(out, 4<<20)
	if err := quantize.Write(w, in, t); err != nil {
		out.Close()
		os.Remove(pos[1])
		return err
	}
	if err := w.Flush(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
