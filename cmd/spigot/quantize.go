package main

import (
	"bufio"
	"flag"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/spigot-llm/spigot/quant"
	"github.com/spigot-llm/spigot/quantize"
)

func quantizeCmd(args []string, std stdio) error {
	fs := flag.NewFlagSet("quantize", flag.ContinueOnError)
	fs.SetOutput(std.err)
	typ := fs.String("type", "Q8_0", "file type, as llama-quantize names them: "+strings.Join(quantize.FileTypeNames(), ", ")+" (Q4_K and Q5_K mean Q4_K_M and Q5_K_M)")
	pure := fs.Bool("pure", false, "give every weight matrix the type's base type (no Q6_K output layer, no Q6_K attn_v/ffn_down in _M mixes), as llama-quantize --pure")
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
	ft, err := quantize.ParseFileType(*typ)
	if err != nil {
		return err
	}
	opt := quantize.Options{Type: ft, Pure: *pure}
	in, err := openFile(pos[0], *tokPath)
	if err != nil {
		return err
	}
	defer in.Close()
	types, err := quantize.Plan(in, opt)
	if err != nil {
		return err
	}
	out, err := os.Create(pos[1])
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(out, 4<<20)
	if err := quantize.Write(w, in, opt); err != nil {
		out.Close()
		os.Remove(pos[1])
		return err
	}
	if err := w.Flush(); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	// One line saying which types the tensors got, as llama-quantize's
	// per-tensor log does at length.
	count := map[quant.Type]int{}
	for _, t := range types {
		count[t]++
	}
	var parts []string
	for _, t := range slices.Sorted(maps.Keys(count)) {
		parts = append(parts, fmt.Sprintf("%d %s", count[t], t))
	}
	fmt.Fprintf(std.err, "%s: %s, %d tensors: %s\n", pos[1], ft, len(types), strings.Join(parts, ", "))
	return nil
}
