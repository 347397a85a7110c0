package tokenizer

import (
	"fmt"

	"github.com/spigot-llm/spigot/gguf"
)

// FromGGUF builds the Tokenizer described by a GGUF file's tokenizer.*
// metadata (the file may hold only the vocabulary).
func FromGGUF(f *gguf.File) (*Tokenizer, error) {
	v, err := VocabFromGGUF(f)
	if err != nil {
		return nil, err
	}
	return New(v)
}

// VocabFromGGUF reads the Vocab a GGUF file's tokenizer.* metadata describes.
func VocabFromGGUF(f *gguf.File) (Vocab, error) {
	var v Vocab
	var ok bool
	if v.Model, ok = f.String("tokenizer.ggml.model"); !ok {
		return v, fmt.Errorf("%w: tokenizer.ggml.model missing or not a string", ErrInvalid)
	}
	v.Pre, _ = f.String("tokenizer.ggml.pre")
	if v.Tokens, ok = f.Strings("tokenizer.ggml.tokens"); !ok {
		return v, fmt.Errorf("%w: tokenizer.ggml.tokens missing or not a string array", ErrInvalid)
	}
	if _, present := f.Lookup("tokenizer.ggml.scores"); present {
		if v.Scores, ok = f.Float32s("tokenizer.ggml.scores"); !ok {
			ints, ok := f.Int32s("tokenizer.ggml.scores")
			if !ok {
				return v, fmt.Errorf("%w: tokenizer.ggml.scores is not a float32 or int32 array", ErrInvalid)
			}
			v.Scores = make([]float32, len(ints))
			for i, x := range ints {
				v.Scores[i] = float32(x)
			}
		}
	}
	if _, present := f.Lookup("tokenizer.ggml.token_type"); present {
		if v.Types, ok = f.Int32s("tokenizer.ggml.token_type"); !ok {
			return v, fmt.Errorf("%w: tokenizer.ggml.token_type is not an integer array", ErrInvalid)
		}
	}
	if _, present := f.Lookup("tokenizer.ggml.merges"); present {
		if v.Merges, ok = f.Strings("tokenizer.ggml.merges"); !ok {
			return v, fmt.Errorf("%w: tokenizer.ggml.merges is not a string array", ErrInvalid)
		}
	}
	id := func(key string) int32 {
		x, ok := f.Uint("tokenizer.ggml." + key)
		if !ok || x >= uint64(len(v.Tokens)) {
			return -1
		}
		return int32(x)
	}
	v.BOS, v.EOS, v.UNK = id("bos_token_id"), id("eos_token_id"), id("unknown_token_id")
	v.PAD, v.SEP = id("padding_token_id"), id("seperator_token_id") // sic
	v.EOT, v.EOM = id("eot_token_id"), id("eom_token_id")
	v.AddBOS, v.AddBOSSet = f.Bool("tokenizer.ggml.add_bos_token")
	v.AddEOS, v.AddEOSSet = f.Bool("tokenizer.ggml.add_eos_token")
	v.AddSpacePrefix, v.AddSpacePrefixSet = f.Bool("tokenizer.ggml.add_space_prefix")
	v.Name, _ = f.String("general.name")
	v.Arch, _ = f.String("general.architecture")
	return v, nil
}
