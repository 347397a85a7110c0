package tokenizer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// fuzzVocabs are the vocabularies FuzzEncode runs each input through.
var fuzzVocabs = []string{"llama-spm", "gpt-2", "deepseek-llm", "deepseek-coder", "falcon", "starcoder", "mpt"}

func FuzzEncode(f *testing.F) {
	data, err := os.ReadFile(filepath.Join(vocabDir, "ggml-vocab-gpt-2.gguf.inp"))
	if err != nil {
		f.Fatalf("reading seeds: %v", err)
	}
	for _, s := range strings.Split(string(data), "\n__ggml_vocab_test__\n") {
		f.Add(s)
	}
	f.Add("<s>Hello</s><|endoftext|> <unk>")
	f.Add("\xff\xfe invalid \xe2\x82 utf-8 \xed\xa0\x80 \xf4\x90\x80\x80")
	f.Add("▁▁ already escaped")
	toks := make([]*Tokenizer, len(fuzzVocabs))
	for i, name := range fuzzVocabs {
		toks[i] = loadVocab(f, name)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, tok := range toks {
			for _, special := range []bool{false, true} {
				ids := tok.Encode(s, special, special)
				for _, id := range ids {
					if id < 0 || int(id) >= tok.NVocab() {
						t.Fatalf("Encode(%q) gave id %d out of range", s, id)
					}
				}
				if special {
					continue
				}
				got := tok.Decode(ids)
				var want string
				switch {
				case !utf8.ValidString(s):
					// BPE reads invalid bytes as U+FFFD; SentencePiece
					// cuts sequences by their lead byte, which may swallow
					// an escaped space. Both as llama.cpp.
					continue
				case !tok.spm && !hasByteTokens(tok, s):
					continue // llama.cpp drops bytes the vocabulary lacks
				case tok.spm:
					// ▁ in the input comes back as a space.
					want = strings.ReplaceAll(s, "▁", " ")
				case tok.cleanSpaces:
					want = cleanSpacesRef(s)
				default:
					want = s
				}
				if got != want {
					t.Fatalf("%s: Decode(Encode(%q)) = %q, want %q (ids %v)", tok.pre.nameOr("spm"), s, got, want, ids)
				}
			}
		}
	})
}

// hasByteTokens reports whether a byte-level BPE vocabulary has a token for
// every byte of s.
func hasByteTokens(tok *Tokenizer, s string) bool {
	for i := 0; i < len(s); i++ {
		if _, ok := tok.ids[byteToEnc[s[i]]]; !ok {
			return false
		}
	}
	return true
}
