package tokenizer

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseSpecial(t *testing.T) {
	tests := []struct {
		vocab        string
		text         string
		parseSpecial bool
		want         []int32 // nil: just check that id is absent / present
		wantID       int32
		wantPresent  bool
	}{
		{vocab: "gpt-2", text: "<|endoftext|>", parseSpecial: true, want: []int32{50256}},
		{vocab: "gpt-2", text: "a<|endoftext|>b", parseSpecial: true, wantID: 50256, wantPresent: true},
		{vocab: "gpt-2", text: "<|endoftext|>", parseSpecial: false, wantID: 50256, wantPresent: false},
		{vocab: "llama-spm", text: "<s>", parseSpecial: true, want: []int32{1}},
		// After a special token the text gets the space prefix again.
		{vocab: "llama-spm", text: "<s>Hello", parseSpecial: true, want: []int32{1, 15043}},
		{vocab: "llama-spm", text: "<s>", parseSpecial: false, wantID: 1, wantPresent: false},
		{vocab: "phi-3", text: "<|user|>Hi<|end|>", parseSpecial: true, wantID: 32007, wantPresent: true},
	}
	for _, tc := range tests {
		tok := loadVocab(t, tc.vocab)
		got := tok.Encode(tc.text, false, tc.parseSpecial)
		if tc.want != nil {
			if !slices.Equal(got, tc.want) {
				t.Errorf("%s: Encode(%q, parseSpecial=%v) = %v, want %v", tc.vocab, tc.text, tc.parseSpecial, got, tc.want)
			}
			continue
		}
		if slices.Contains(got, tc.wantID) != tc.wantPresent {
			t.Errorf("%s: Encode(%q, parseSpecial=%v) = %v; contains %d: %v, want %v",
				tc.vocab, tc.text, tc.parseSpecial, got, tc.wantID, !tc.wantPresent, tc.wantPresent)
		}
	}
}

// User-defined tokens are split out even without parseSpecial, as in
// llama.cpp (gpt-neox has tokens for runs of spaces).
func TestUserDefinedAlwaysParsed(t *testing.T) {
	tok := loadVocab(t, "gpt-neox")
	spaces := strings.Repeat(" ", 24)
	id, ok := tok.ids[spaces]
	if !ok || tok.attrs[id]&attrUserDefined == 0 {
		t.Fatalf("gpt-neox has no user-defined token of 24 spaces")
	}
	got := tok.Encode("a"+spaces+"b", false, false)
	if !slices.Contains(got, id) {
		t.Errorf("Encode(a<24 spaces>b) = %v, want it to contain %d", got, id)
	}
}

func TestAddSpecial(t *testing.T) {
	spm := loadVocab(t, "llama-spm")
	if got := spm.Encode("", true, false); !slices.Equal(got, []int32{1}) {
		t.Errorf("llama-spm Encode(\"\", addSpecial) = %v, want [1]", got)
	}
	if got := spm.Encode("", false, false); len(got) != 0 {
		t.Errorf("llama-spm Encode(\"\") = %v, want []", got)
	}
	ds := loadVocab(t, "deepseek-llm") // add_bos_token = true in the file
	if got := ds.Encode("Hi", true, false); len(got) == 0 || got[0] != 100000 {
		t.Errorf("deepseek-llm Encode(Hi, addSpecial) = %v, want BOS 100000 first", got)
	}
	g := loadVocab(t, "gpt-2") // BPE default: no BOS
	if g.AddBOS() || g.Encode("Hi", true, false)[0] == g.BOS() {
		t.Errorf("gpt-2 adds BOS, want not")
	}
}

func TestNewErrors(t *testing.T) {
	base := Vocab{Model: "gpt2", Tokens: []string{"a", "b", "ab"}, Merges: []string{"a b"},
		BOS: -1, EOS: -1, UNK: -1, PAD: -1, EOT: -1, EOM: -1, SEP: -1}
	tests := []struct {
		name   string
		edit   func(v *Vocab)
		want   error
		substr string
	}{
		{"unknown pre", func(v *Vocab) { v.Pre = "no-such-pre" }, ErrUnsupported, `"no-such-pre"`},
		{"unimplemented pre", func(v *Vocab) { v.Pre = "kimi-k2" }, ErrUnsupported, `"kimi-k2"`},
		{"unknown model", func(v *Vocab) { v.Model = "t5" }, ErrUnsupported, `"t5"`},
		{"bert", func(v *Vocab) { v.Model = "bert" }, ErrUnsupported, `"bert"`},
		{"no tokens", func(v *Vocab) { v.Tokens = nil }, ErrInvalid, "no tokens"},
		{"no merges", func(v *Vocab) { v.Merges = nil }, ErrInvalid, "merges"},
		{"short types", func(v *Vocab) { v.Types = []int32{1} }, ErrInvalid, "types"},
		{"add bos without bos", func(v *Vocab) { v.Pre = "chatglm-bpe"; v.AddBOS, v.AddBOSSet = true, true }, ErrInvalid, "bos_token_id"},
	}
	for _, tc := range tests {
		v := base
		tc.edit(&v)
		_, err := New(v)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.substr) {
			t.Errorf("%s: New error = %v, want %v mentioning %s", tc.name, err, tc.want, tc.substr)
		}
	}
	if _, err := New(base); err != nil {
		t.Errorf("New(valid) = %v", err)
	}
}

// Every pre-tokenizer New accepts must tokenize, and decoding must undo it,
// with a vocabulary of single bytes (and <0xXX> tokens for the raw-byte ones).
func TestAllPreTokenizers(t *testing.T) {
	tokens := []string{"<|endoftext|>", "▁"}
	types := []int32{TypeControl, TypeNormal}
	for c := 0; c < 256; c++ {
		tokens = append(tokens, byteToEnc[c], fmt.Sprintf("<0x%02X>", c))
		types = append(types, TypeNormal, TypeByte)
	}
	text := "Hello, y'all! I'M 12345 ÉÉA DON'T  \t\n\n  ~~~ <sentinel:12> IMGIMGABZ 我想在apple工作 🦙 нещо ゙ ́<|endoftext|>"
	for name := range preTokenizers {
		tok, err := New(Vocab{Model: "gpt2", Pre: name, Tokens: tokens, Types: types, Merges: []string{},
			BOS: 0, EOS: 0, UNK: -1, PAD: -1, EOT: -1, EOM: -1, SEP: -1})
		if err != nil {
			t.Errorf("New(pre %q): %v", name, err)
			continue
		}
		want := text
		if tok.cleanSpaces {
			want = cleanSpacesRef(text)
		}
		ids := tok.Encode(text, true, false)
		if got := tok.Decode(ids); got != want {
			t.Errorf("pre %q: Decode(Encode(%q)) = %q", name, text, got)
		}
		if ids := tok.Encode(text, false, true); ids[len(ids)-1] != 0 {
			t.Errorf("pre %q: <|endoftext|> not parsed: %v", name, ids)
		}
	}
}

func TestEOG(t *testing.T) {
	tests := []struct {
		vocab string
		eog   []int32
		not   []int32
	}{
		{"gpt-2", []int32{50256}, []int32{0, 1}},
		{"llama-spm", []int32{2}, []int32{0, 1}},
		// <|endoftext|>, <|end|>, and EOS 32000.
		{"phi-3", []int32{32000, 32007}, []int32{1, 32001}},
		{"starcoder", []int32{0, 4}, []int32{1, 2, 3}}, // <|endoftext|>, <fim_pad>
	}
	for _, tc := range tests {
		tok := loadVocab(t, tc.vocab)
		for _, id := range tc.eog {
			if !tok.IsEOG(id) {
				t.Errorf("%s: IsEOG(%d %q) = false, want true", tc.vocab, id, tok.Text(id))
			}
		}
		for _, id := range tc.not {
			if tok.IsEOG(id) {
				t.Errorf("%s: IsEOG(%d %q) = true, want false", tc.vocab, id, tok.Text(id))
			}
		}
		if tok.IsEOG(-1) || tok.IsEOG(int32(tok.NVocab())) {
			t.Errorf("%s: IsEOG of an invalid id = true", tc.vocab)
		}
	}
}

func TestPiece(t *testing.T) {
	spm := loadVocab(t, "llama-spm")
	g := loadVocab(t, "gpt-2")
	tests := []struct {
		tok     *Tokenizer
		id      int32
		piece   string
		special string
	}{
		{spm, 1, "", "<s>"},
		{spm, 0, "", "<unk>"},
		{spm, 13, "\n", "\n"}, // <0x0A>
		{spm, 15043, " Hello", " Hello"},
		{g, 50256, "", "<|endoftext|>"},
		{g, 18435, " Hello", " Hello"},
		{g, 198, "\n", "\n"},
		{g, -1, "", ""},
		{g, 1 << 20, "", ""},
	}
	for _, tc := range tests {
		if got := tc.tok.Piece(tc.id); got != tc.piece {
			t.Errorf("Piece(%d) = %q, want %q", tc.id, got, tc.piece)
		}
		if got := tc.tok.PieceSpecial(tc.id); got != tc.special {
			t.Errorf("PieceSpecial(%d) = %q, want %q", tc.id, got, tc.special)
		}
	}
	if !spm.IsControl(1) || spm.IsControl(15043) || spm.IsControl(-5) {
		t.Errorf("IsControl wrong")
	}
}

// englishText returns n bytes of English-like prose.
func englishText(n int) string {
	const para = "It was the best of times, it was the worst of times, it was the age of wisdom, " +
		"it was the age of foolishness; it was the epoch of belief, it was the epoch of incredulity. " +
		"We had everything before us, we had nothing before us (1859). \"Don't you see?\" she said.\n\n"
	var b strings.Builder
	for b.Len() < n {
		b.WriteString(para)
	}
	return b.String()[:n]
}

func TestEncodeSpeed(t *testing.T) {
	tok := loadVocab(t, "gpt-2")
	text := englishText(10 << 10)
	tok.Encode(text, false, false) // warm up the pool and tables
	best := time.Duration(1 << 62)
	for range 5 {
		start := time.Now()
		tok.Encode(text, false, false)
		best = min(best, time.Since(start))
	}
	limit := 50 * time.Millisecond
	if raceEnabled {
		limit *= 10
	}
	t.Logf("10 KiB with gpt-2: %v", best)
	if best > limit {
		t.Errorf("encoding 10 KiB took %v, want under %v", best, limit)
	}
	// No quadratic blow-up on long runs of one class.
	for _, s := range []string{strings.Repeat(" ", 20000), strings.Repeat("a", 20000), strings.Repeat("1", 20000), strings.Repeat("\n ", 10000)} {
		start := time.Now()
		tok.Encode(s, false, true)
		if d := time.Since(start); d > 20*limit {
			t.Errorf("encoding a 20000-byte run of %q took %v", s[:1], d)
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	text := englishText(10 << 10)
	for _, name := range []string{"gpt-2", "llama-spm", "deepseek-llm"} {
		tok := loadVocab(b, name)
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			n := 0
			for b.Loop() {
				n += len(tok.Encode(text, false, false))
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "tok/s")
		})
	}
}

func BenchmarkDecoder(b *testing.B) {
	tok := loadVocab(b, "gpt-2")
	ids := tok.Encode(englishText(10<<10), false, false)
	d := tok.NewDecoder()
	buf := make([]byte, 0, 64<<10)
	b.ResetTimer()
	for b.Loop() {
		buf = buf[:0]
		d.Reset()
		for _, id := range ids {
			buf = d.Append(buf, id)
		}
		buf = d.Flush(buf)
	}
	b.ReportMetric(float64(len(ids)*b.N)/b.Elapsed().Seconds(), "tok/s")
}

// A tiny SentencePiece-style BPE vocabulary (tokenizer.ggml.model "gemma4"):
// raw UTF-8 tokens, ▁ for spaces, <0xXX> byte fallback.
func TestRawBytesBPE(t *testing.T) {
	tokens := []string{"<pad>", "<eos>", "<bos>", "▁", "H", "i", "▁H", "▁Hi", "\n", "\n\n"}
	types := []int32{TypeControl, TypeControl, TypeControl, 1, 1, 1, 1, 1, 1, 1}
	for c := 0; c < 256; c++ {
		tokens = append(tokens, fmt.Sprintf("<0x%02X>", c))
		types = append(types, TypeByte)
	}
	tok, err := New(Vocab{Model: "gemma4", Tokens: tokens, Types: types, Merges: []string{"▁ H", "▁H i", "\n \n"},
		BOS: 2, EOS: 1, UNK: -1, PAD: 0, EOT: -1, EOM: -1, SEP: -1})
	if err != nil {
		t.Fatal(err)
	}
	got := tok.Encode(" Hi Hi\n\n€", true, false)
	eur := []int32{10 + 0xE2, 10 + 0x82, 10 + 0xAC}
	want := append([]int32{2, 7, 7, 9}, eur...)
	if !slices.Equal(got, want) {
		t.Errorf("Encode = %v, want %v", got, want)
	}
	if s := tok.Decode(got); s != " Hi Hi\n\n€" {
		t.Errorf("Decode = %q", s)
	}
	if !tok.IsEOG(1) {
		t.Errorf("<eos> is not EOG")
	}
}
