package tokenizer

import (
	"encoding/binary"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

// checkStream checks the Decoder's contract on every prefix of ids: what it
// has emitted is valid UTF-8, and with Flush it is Decode of the prefix,
// repaired as strings.ToValidUTF8 does.
func checkStream(t *testing.T, tok *Tokenizer, ids []int32) {
	t.Helper()
	d := tok.NewDecoder()
	var b []byte
	for i, id := range ids {
		b = d.Append(b, id)
		if !utf8.Valid(b) {
			t.Fatalf("after %v the Decoder emitted invalid UTF-8 %q", ids[:i+1], b)
		}
		// Flush a copy, so the stream goes on.
		c := *d
		got := string(c.Flush(append([]byte(nil), b...)))
		want := strings.ToValidUTF8(tok.Decode(ids[:i+1]), "\uFFFD")
		if got != want {
			t.Fatalf("Decoder on %v = %q, want %q", ids[:i+1], got, want)
		}
	}
}

func TestDecoderSteps(t *testing.T) {
	spm := loadVocab(t, "llama-spm")
	g := loadVocab(t, "gpt-2")
	b := func(tok *Tokenizer, c byte) int32 {
		if tok.spm {
			return tok.byteTokens[c]
		}
		return tok.ids[byteToEnc[c]]
	}
	hello := spm.Encode("Hello", false, false)[0] // "▁Hello"
	gid := func(s string) int32 {
		id, ok := g.ids[s]
		if !ok {
			t.Fatalf("gpt-2 has no token %q", s)
		}
		return id
	}
	tests := []struct {
		name  string
		tok   *Tokenizer
		keep  bool
		ids   []int32
		steps []string
		flush string
	}{
		{"leading space stripped", spm, false, []int32{hello, hello}, []string{"Hello", " Hello"}, ""},
		{"leading space kept", spm, true, []int32{hello}, []string{" Hello"}, ""},
		{"BOS takes the strip", spm, false, []int32{1, hello}, []string{"", " Hello"}, ""},
		{"euro in byte tokens", spm, false, []int32{b(spm, 0xE2), b(spm, 0x82), b(spm, 0xAC)}, []string{"", "", "€"}, ""},
		{"control tokens render empty", spm, false, []int32{b(spm, 0xE2), 2, b(spm, 0x82), 1, b(spm, 0xAC)}, []string{"", "", "", "", "€"}, ""},
		{"truncated at end", spm, false, []int32{b(spm, 0xE2), b(spm, 0x82)}, []string{"", ""}, "\uFFFD"},
		{"cut by a new start", spm, false, []int32{b(spm, 0xE2), hello}, []string{"", "\uFFFD Hello"}, ""},
		{"invalid byte", spm, false, []int32{b(spm, 0xFF), b(spm, 0xFE), hello}, []string{"\uFFFD", "", " Hello"}, ""},
		{"emoji", spm, false, []int32{b(spm, 0xF0), b(spm, 0x9F), b(spm, 0xA6), b(spm, 0x99)}, []string{"", "", "", "🦙"}, ""},
		{"gpt-2 split char", g, false, []int32{b(g, 0xC3), b(g, 0xA9)}, []string{"", "é"}, ""},
		{"space before comma", g, false, []int32{gid("Hello"), gid("Ġ"), gid(","), gid("Ġworld")}, []string{"Hello", "", ",", " world"}, ""},
		{"contraction", g, false, []int32{gid("Ġit"), gid("Ġ'"), gid("s")}, []string{" it", "", "'s"}, ""},
		{"quote between spaces", g, false, []int32{gid("a"), gid("Ġ'"), gid("Ġ"), gid("b")}, []string{"a", "", "", "'b"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.tok.NewDecoder()
			d.KeepLeadingSpace = tc.keep
			var out []byte
			for i, id := range tc.ids {
				n := len(out)
				out = d.Append(out, id)
				if got := string(out[n:]); got != tc.steps[i] {
					t.Errorf("Append #%d (%d %q) emitted %q, want %q", i, id, tc.tok.Text(id), got, tc.steps[i])
				}
			}
			n := len(out)
			if out = d.Flush(out); string(out[n:]) != tc.flush {
				t.Errorf("Flush emitted %q, want %q", out[n:], tc.flush)
			}
			if !tc.keep {
				if want := strings.ToValidUTF8(tc.tok.Decode(tc.ids), "\uFFFD"); string(out) != want {
					t.Errorf("stream = %q, Decode = %q", out, want)
				}
			}
			d.Reset()
			out = out[:0]
			for _, id := range tc.ids {
				out = d.Append(out, id)
			}
			if got, want := string(d.Flush(out)), strings.Join(tc.steps, "")+tc.flush; got != want {
				t.Errorf("after Reset: %q, want %q", got, want)
			}
		})
	}
}

// interestingIDs are ids that stress the Decoder: byte tokens, control
// tokens, spaces, apostrophes and the punctuation clean-up looks at.
func interestingIDs(tok *Tokenizer) []int32 {
	var ids []int32
	for c := 0; c < 256; c++ {
		if tok.spm {
			if id := tok.byteTokens[c]; id >= 0 {
				ids = append(ids, id)
			}
		} else if id, ok := tok.ids[byteToEnc[c]]; ok {
			ids = append(ids, id)
		}
	}
	for _, s := range []string{"Ġ", "Ġ'", "'", "s", "m", "re", "ve", "r", "v", "e", ",", ".", "?", "!", "ĠĠ", "▁", "▁'", "▁▁"} {
		if id, ok := tok.ids[s]; ok {
			ids = append(ids, id)
		}
	}
	return append(ids, tok.specials...)
}

// idsFromBytes turns fuzz bytes into ids: two bytes per id, half of them
// drawn from the interesting ids.
func idsFromBytes(tok *Tokenizer, data []byte) []int32 {
	pool := interestingIDs(tok)
	var ids []int32
	for len(data) >= 2 && len(ids) < 64 {
		x := binary.LittleEndian.Uint16(data)
		data = data[2:]
		if x&1 == 0 {
			ids = append(ids, pool[int(x>>1)%len(pool)])
		} else {
			ids = append(ids, int32(int(x>>1)*7919%tok.NVocab()))
		}
	}
	return ids
}

var decoderVocabs = []string{"llama-spm", "gpt-2", "phi-3", "deepseek-llm"}

func TestDecoderProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, name := range decoderVocabs {
		tok := loadVocab(t, name)
		pool := interestingIDs(tok)
		for range 200 {
			ids := make([]int32, rng.IntN(20)+1)
			for i := range ids {
				if rng.IntN(2) == 0 {
					ids[i] = pool[rng.IntN(len(pool))]
				} else {
					ids[i] = rng.Int32N(int32(tok.NVocab()))
				}
			}
			checkStream(t, tok, ids)
		}
		// Whole texts, cut anywhere.
		for _, s := range []string{"Hello, y'all! How are you 😁 ?我想在apple工作1314151天～", "a ' b 's 're  ?? ,", "нещо на Български"} {
			checkStream(t, tok, tok.Encode(s, true, false))
		}
	}
}

func TestDecoderAllocs(t *testing.T) {
	for _, name := range []string{"llama-spm", "gpt-2"} {
		tok := loadVocab(t, name)
		ids := tok.Encode(englishText(2000)+"€🦙 é", false, false)
		d := tok.NewDecoder()
		buf := make([]byte, 0, 1<<16)
		allocs := testing.AllocsPerRun(10, func() {
			buf = buf[:0]
			d.Reset()
			for _, id := range ids {
				buf = d.Append(buf, id)
			}
			buf = d.Flush(buf)
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per decode of %d ids, want 0", name, allocs, len(ids))
		}
	}
}

// The streaming clean-up matches llama.cpp's three passes.
func TestCleanerMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const alphabet = " '?!.,srmvedlxt"
	for range 20000 {
		b := make([]byte, rng.IntN(12))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		var c cleaner
		var out []byte
		for _, x := range b {
			out = c.push(out, x)
		}
		out = c.flush(out)
		if want := cleanSpacesRef(string(b)); string(out) != want {
			t.Fatalf("clean(%q) = %q, want %q", b, out, want)
		}
	}
}

func FuzzDecoder(f *testing.F) {
	spm := loadVocab(f, "llama-spm")
	le := func(ids ...int32) []byte {
		var b []byte
		pool := interestingIDs(spm)
		for _, id := range ids {
			for i, p := range pool {
				if p == id {
					b = binary.LittleEndian.AppendUint16(b, uint16(i<<1))
				}
			}
		}
		return b
	}
	bt := func(c byte) int32 { return spm.byteTokens[c] }
	f.Add(uint8(0), le(bt(0xE2), bt(0x82), bt(0xAC)))
	f.Add(uint8(0), le(bt(0xE2), 1, bt(0x82)))
	f.Add(uint8(0), le(bt(0xFF), bt(0xC3), bt(0xC3), bt(0xA9)))
	f.Add(uint8(0), le(bt(0xF0), bt(0x9F), bt(0xA6)))
	f.Add(uint8(0), le(bt(0xED), bt(0xA0), bt(0x80))) // a surrogate
	f.Add(uint8(1), []byte{0, 0, 2, 0, 4, 0, 255, 255, 1, 0})
	f.Add(uint8(2), []byte("some bytes for ids"))
	f.Add(uint8(3), []byte{0x7F, 0x01, 0x80, 0x01, 0x81, 0x01})
	toks := make([]*Tokenizer, len(decoderVocabs))
	for i, name := range decoderVocabs {
		toks[i] = loadVocab(f, name)
	}
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		tok := toks[int(which)%len(toks)]
		checkStream(t, tok, idsFromBytes(tok, data))
	})
}
