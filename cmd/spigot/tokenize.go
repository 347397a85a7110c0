package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/spigot-llm/spigot/tokenizer"
)

func tokenizeCmd(args []string, std stdio) error {
	fs := flag.NewFlagSet("tokenize", flag.ContinueOnError)
	fs.SetOutput(std.err)
	modelPath := fs.String("m", "", "model or vocabulary file (GGUF, or llama2.c .bin)")
	tokPath := fs.String("tokenizer", "", "tokenizer.bin for a llama2.c checkpoint")
	idsOnly := fs.Bool("ids", false, "print only the ids, not the pieces")
	noSpecial := fs.Bool("no-bos", false, "do not add BOS/EOS even if the model asks for them")
	noParse := fs.Bool("no-parse-special", false, "treat special-token text such as <s> as plain text")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("want one TEXT argument (- reads standard input), got %d", fs.NArg())
	}
	text := fs.Arg(0)
	if text == "-" {
		b, err := io.ReadAll(std.in)
		if err != nil {
			return err
		}
		text = string(b)
	}
	f, err := openFile(*modelPath, *tokPath)
	if err != nil {
		return err
	}
	defer f.Close()
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		return err
	}
	ids := tok.Encode(text, !*noSpecial, !*noParse)
	if ids == nil {
		ids = []int32{}
	}
	enc := json.NewEncoder(std.out)
	if *idsOnly {
		return enc.Encode(ids)
	}
	type piece struct {
		ID    int32  `json:"id"`
		Piece string `json:"piece"`
	}
	pieces := make([]piece, len(ids))
	for i, id := range ids {
		pieces[i] = piece{id, tok.Piece(id)}
	}
	return enc.Encode(pieces)
}
