package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spigot-llm/spigot/gguf"
)

var sharedDir = filepath.Join("..", "..", "..", "shared")

func sharedModel() string { return filepath.Join(sharedDir, "models", "stories260K.gguf") }

// writeLog records each Write separately, to see how output was chunked.
type writeLog struct{ writes []string }

func (w *writeLog) Write(p []byte) (int, error) {
	w.writes = append(w.writes, string(p))
	return len(p), nil
}

func firstReference(t *testing.T) (prompt, text string) {
	t.Helper()
	fd, err := os.Open(filepath.Join(sharedDir, "reference", "greedy-stories260K.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	sc := bufio.NewScanner(fd)
	sc.Scan()
	var r struct {
		Prompt     string `json:"prompt"`
		OutputText string `json:"output_text"`
	}
	if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	return r.Prompt, r.OutputText
}

// TestRunStreamsPieces checks that run writes each piece as it is decoded,
// one write per token, and that greedy output is llama.cpp's.
func TestRunStreamsPieces(t *testing.T) {
	prompt, want := firstReference(t)
	var out writeLog
	var errb bytes.Buffer
	err := runCmd([]string{"-m", sharedModel(), "-p", prompt, "-n", "48", "--temp", "0"}, stdio{strings.NewReader(""), &out, &errb})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(out.writes, "")
	if got != want+"\n" {
		t.Errorf("output %q, want %q", got, want)
	}
	nonEmpty := 0
	for _, w := range out.writes {
		if w != "" {
			nonEmpty++
		}
	}
	if nonEmpty < 40 { // 48 tokens, each its own piece but for held-back bytes
		t.Errorf("output came in %d writes; want one per token", nonEmpty)
	}
	summary := errb.String()
	for _, field := range []string{"prompt tokens: 10", "generated tokens: 48", "time to first token", "tokens/s"} {
		if !strings.Contains(summary, field) {
			t.Errorf("summary %q lacks %q", summary, field)
		}
	}
}

func TestRunLlama2cCheckpoint(t *testing.T) {
	prompt, want := firstReference(t)
	var out, errb bytes.Buffer
	err := runCmd([]string{"-m", filepath.Join(sharedDir, "models", "stories260K.bin"), "-p", prompt, "-n", "48", "--temp", "0"}, stdio{nil, &out, &errb})
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != want+"\n" {
		t.Errorf("output %q, want %q", out.String(), want)
	}
}

func TestTokenize(t *testing.T) {
	var out bytes.Buffer
	err := tokenizeCmd([]string{"-m", sharedModel(), "--ids", "-"}, stdio{strings.NewReader("Once upon a time, there was a little"), &out, &bytes.Buffer{}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(out.String()); got != "[1,403,407,261,378,432,383,286,261,376]" {
		t.Errorf("tokenize --ids = %s", got)
	}
	out.Reset()
	if err := tokenizeCmd([]string{"-m", sharedModel(), "Once"}, stdio{nil, &out, &bytes.Buffer{}}); err != nil {
		t.Fatal(err)
	}
	var pieces []struct {
		ID    int32  `json:"id"`
		Piece string `json:"piece"`
	}
	if err := json.Unmarshal(out.Bytes(), &pieces); err != nil || len(pieces) < 2 || pieces[0].ID != 1 {
		t.Errorf("tokenize = %s (%v)", out.String(), err)
	}
}

func TestSynthLoadsAndRuns(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s15M.gguf")
	vocab := filepath.Join(sharedDir, "vocab", "ggml-vocab-llama-spm.gguf")
	if err := synthCmd([]string{"--shape", "s15M", "--type", "Q8_0", "--vocab", vocab, "-o", path}, stdio{nil, &bytes.Buffer{}, &bytes.Buffer{}}); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	var out, errb bytes.Buffer
	if err := runCmd([]string{"-m", path, "-p", "Hello", "-n", "5", "--seed", "1"}, stdio{nil, &out, &errb}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errb.String(), "generated tokens: 5") {
		t.Errorf("summary %q", errb.String())
	}
}

func TestCommandErrors(t *testing.T) {
	cases := []struct {
		name string
		run  func([]string, stdio) error
		args []string
		want string
	}{
		{"run without model", runCmd, []string{"-p", "x"}, "no model"},
		{"run missing file", runCmd, []string{"-m", "/nonexistent.gguf", "-p", "x"}, "no such file"},
		{"run not a gguf", runCmd, []string{"-m", "main.go", "-p", "x"}, "not a GGUF"},
		{"run bad bias", runCmd, []string{"-m", sharedModel(), "--logit-bias", "x"}, "ID=BIAS"},
		{"run bad temp", runCmd, []string{"-m", sharedModel(), "-p", "x", "--temp", "-1"}, "temperature"},
		{"synth bad shape", synthCmd, []string{"--shape", "huge", "-o", "x"}, "unknown shape"},
		{"synth bad type", synthCmd, []string{"--type", "Q9", "-o", "x"}, "unknown type"},
		{"tokenize no text", tokenizeCmd, []string{"-m", sharedModel()}, "TEXT"},
	}
	for _, tc := range cases {
		err := tc.run(tc.args, stdio{strings.NewReader(""), &bytes.Buffer{}, &bytes.Buffer{}})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to mention %q", tc.name, err, tc.want)
		}
	}
}

func TestQuantizeCommand(t *testing.T) {
	out := filepath.Join(t.TempDir(), "q8.gguf")
	if err := quantizeCmd([]string{sharedModel(), out, "--type", "Q8_0"}, stdio{nil, &bytes.Buffer{}, &bytes.Buffer{}}); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if q, _ := f.Tensor("blk.0.attn_q.weight"); q.Type.String() != "Q8_0" {
		t.Errorf("attn_q is %s", q.Type)
	}
	if ft, _ := f.Uint("general.file_type"); ft != 7 {
		t.Errorf("general.file_type = %d, want 7 (MOSTLY_Q8_0)", ft)
	}
	var o, e bytes.Buffer
	if err := runCmd([]string{"-m", out, "-p", "Once", "-n", "4", "--temp", "0"}, stdio{nil, &o, &e}); err != nil {
		t.Fatal(err)
	}
	if err := quantizeCmd([]string{sharedModel()}, stdio{nil, &bytes.Buffer{}, &bytes.Buffer{}}); err == nil {
		t.Error("quantize with one argument succeeded")
	}
	// A K mix, flags after the files: stories260K is 64 wide, so its
	// matrices fall back to Q5_0 (Q8_0 for the Q6_K ones, F16 for ffn_down,
	// whose 172-wide rows are not whole 32-element blocks), as in llama.cpp.
	km := filepath.Join(t.TempDir(), "q4km.gguf")
	var stderr bytes.Buffer
	if err := quantizeCmd([]string{sharedModel(), km, "--type", "q4_k"}, stdio{nil, &bytes.Buffer{}, &stderr}); err != nil {
		t.Fatal(err)
	}
	if want := "Q4_K_M, 48 tensors: 11 F32, 5 F16, 29 Q5_0, 3 Q8_0"; !strings.Contains(stderr.String(), want) {
		t.Errorf("quantize --type q4_k said %q, want it to contain %q", stderr.String(), want)
	}
	if err := runCmd([]string{"-m", km, "-p", "Once", "-n", "4", "--temp", "0"}, stdio{nil, &o, &e}); err != nil {
		t.Fatal(err)
	}
	if err := quantizeCmd([]string{sharedModel(), km, "--type", "Q3_K_M"}, stdio{nil, &bytes.Buffer{}, &bytes.Buffer{}}); err == nil {
		t.Error("quantize --type Q3_K_M succeeded")
	}
}
