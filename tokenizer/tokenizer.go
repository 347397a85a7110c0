// Package tokenizer turns text into token ids and ids back into text for the
// vocabularies GGUF files carry, reproducing llama.cpp's tokenizers
// (src/llama-vocab.cpp and src/unicode.cpp) id for id:
//
//   - SentencePiece-style vocabularies (tokenizer.ggml.model "llama"): bigram
//     merges by score, "▁" for spaces, byte fallback tokens <0xXX>;
//   - byte-level BPE (tokenizer.ggml.model "gpt2"): merges by rank after the
//     pre-tokenizer named by tokenizer.ggml.pre splits the text;
//   - special tokens (control and user-defined) found in the text,
//     BOS/EOS insertion, the end-of-generation set, detokenization, and a
//     streaming [Decoder] that only ever emits whole UTF-8.
//
// The package owns tokenization only. Reading GGUF is package gguf's job;
// [FromGGUF] just maps its tokenizer.* metadata onto a [Vocab]. A
// [Tokenizer] is immutable and safe for concurrent use.
package tokenizer

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Errors New returns, wrapped with detail.
var (
	// ErrUnsupported is wrapped by errors about vocabularies or
	// pre-tokenizers this package does not implement.
	ErrUnsupported = errors.New("tokenizer: unsupported")
	// ErrInvalid is wrapped by errors about inconsistent vocabularies.
	ErrInvalid = errors.New("tokenizer: invalid vocabulary")
)

// Token types, as tokenizer.ggml.token_type stores them.
const (
	TypeUndefined   = 0
	TypeNormal      = 1
	TypeUnknown     = 2
	TypeControl     = 3
	TypeUserDefined = 4
	TypeUnused      = 5
	TypeByte        = 6
)

// Token attributes, as llama.cpp's llama_token_attr.
const (
	attrUnknown uint16 = 1 << iota
	attrUnused
	attrNormal
	attrControl
	attrUserDefined
	attrByte
	attrLStrip
	attrRStrip
)

// Vocab is everything a Tokenizer is built from, decoupled from file formats.
// Its fields are the GGUF tokenizer.* metadata; where a value is absent, New
// applies the default llama.cpp applies.
type Vocab struct {
	// Model is tokenizer.ggml.model: "llama" (SentencePiece) or "gpt2"
	// (byte-level BPE); "gemma4" is BPE over raw UTF-8. Others ("bert", "t5",
	// "rwkv") are not supported yet.
	Model string
	// Pre is tokenizer.ggml.pre, the BPE pre-tokenizer; "" means "default".
	// SentencePiece vocabularies ignore it.
	Pre string
	// Tokens is the token text of every id. Empty texts are replaced by
	// "[EMPTY_<id>]" as llama.cpp does.
	Tokens []string
	// Scores are the SentencePiece merge scores; nil means all 0.
	Scores []float32
	// Types are the token types (TypeNormal …); nil means all normal.
	Types []int32
	// Merges are the BPE merges, "left right", highest priority first.
	Merges []string
	// Special token ids; -1 when the metadata does not set them. New then
	// uses llama.cpp's defaults (SentencePiece: BOS 1, EOS 2, UNK 0;
	// BPE: BOS = EOS = 11) where they are in range, and looks EOT and EOM up
	// by their usual texts ("<|eot_id|>", "<|im_end|>", "<|eom_id|>" …).
	// Ids out of range count as absent.
	BOS, EOS, UNK, PAD, EOT, EOM, SEP int32
	// AddBOS, AddEOS and AddSpacePrefix are tokenizer.ggml.add_bos_token,
	// add_eos_token and add_space_prefix. Each takes effect only when its Set
	// field is true; otherwise New uses llama.cpp's default for Model and Pre
	// (SentencePiece: add BOS and a space prefix; BPE: add BOS only for the
	// llama3, tekken and chameleon pre-tokenizers).
	AddBOS, AddEOS, AddSpacePrefix          bool
	AddBOSSet, AddEOSSet, AddSpacePrefixSet bool
	// Name and Arch are general.name and general.architecture. llama.cpp
	// keys a few token attributes on them: Phi-3's special tokens strip the
	// white space after them, and jina-v2's <mask> the white space before.
	Name, Arch string
}

// Tokenizer encodes and decodes text for one vocabulary. It is immutable
// and safe for concurrent use.
type Tokenizer struct {
	spm    bool
	pre    *preTokenizer
	texts  []string
	ids    map[string]int32
	scores []float32
	attrs  []uint16
	pieces []string // llama.cpp's token_to_piece(special=true)
	ranks  map[[2]string]int32

	bos, eos, unk, pad, eot, eom, sep int32

	addBOS, addEOS, addSpacePrefix, cleanSpaces bool

	byteTokens [256]int32 // SentencePiece and raw-byte BPE fallback
	eog        []int32    // sorted

	specials []int32 // control, user-defined and unknown tokens, longest first
	trie     trie    // their texts; values index specials
}

// New builds a Tokenizer. It fails on an unknown or unsupported Model or Pre
// (naming it), on lengths that disagree, and where BOS/EOS must be added but
// have no id.
func New(v Vocab) (*Tokenizer, error) {
	n := len(v.Tokens)
	if n == 0 {
		return nil, fmt.Errorf("%w: no tokens", ErrInvalid)
	}
	if n > 1<<30 {
		return nil, fmt.Errorf("%w: %d tokens", ErrInvalid, n)
	}
	if v.Scores != nil && len(v.Scores) < n {
		return nil, fmt.Errorf("%w: %d scores for %d tokens", ErrInvalid, len(v.Scores), n)
	}
	if v.Types != nil && len(v.Types) < n {
		return nil, fmt.Errorf("%w: %d token types for %d tokens", ErrInvalid, len(v.Types), n)
	}
	t := &Tokenizer{}
	bos, eos, unk := int32(-1), int32(-1), int32(-1)
	switch v.Model {
	case "llama":
		t.spm = true
		bos, eos, unk = 1, 2, 0
		t.addBOS = true
		t.addSpacePrefix = true
	case "gpt2", "gemma4":
		pre := v.Pre
		if v.Model == "gemma4" {
			pre = "gemma4"
		}
		p, ok := preTokenizers[pre]
		if !ok {
			if unsupportedPre[pre] {
				return nil, fmt.Errorf("%w: pre-tokenizer %q (tokenizer.ggml.pre) is not implemented", ErrUnsupported, pre)
			}
			return nil, fmt.Errorf("%w: unknown pre-tokenizer %q (tokenizer.ggml.pre)", ErrUnsupported, pre)
		}
		t.pre = p
		if v.Model == "gpt2" {
			bos, eos = 11, 11
		}
		if p.noBOS {
			bos = -1
		}
		t.addBOS = p.addBOS
		t.cleanSpaces = p.cleanSpaces
		if v.Merges == nil {
			return nil, fmt.Errorf("%w: BPE vocabulary without merges", ErrInvalid)
		}
	case "":
		return nil, fmt.Errorf("%w: no tokenizer model", ErrInvalid)
	default:
		return nil, fmt.Errorf("%w: tokenizer model %q (tokenizer.ggml.model)", ErrUnsupported, v.Model)
	}
	if v.AddSpacePrefixSet {
		t.addSpacePrefix = v.AddSpacePrefix
	}

	t.texts = make([]string, n)
	t.ids = make(map[string]int32, n)
	t.attrs = make([]uint16, n)
	for i, s := range v.Tokens {
		if s == "" {
			s = fmt.Sprintf("[EMPTY_%d]", i)
		}
		t.texts[i] = s
		t.ids[s] = int32(i)
		t.attrs[i] = attrNormal
		if v.Types != nil {
			t.attrs[i] = typeAttr(v.Types[i])
		}
	}
	t.scores = v.Scores
	if v.Merges != nil {
		t.ranks = make(map[[2]string]int32, len(v.Merges))
		for i, m := range v.Merges {
			k := [2]string{}
			if len(m) > 1 {
				if j := strings.IndexByte(m[1:], ' '); j >= 0 {
					k = [2]string{m[:j+1], m[j+2:]}
				}
			}
			if _, dup := t.ranks[k]; !dup {
				t.ranks[k] = int32(i)
			}
		}
	}

	inRange := func(id int32) bool { return id >= 0 && int(id) < n }
	pick := func(meta, def int32) int32 {
		if inRange(meta) {
			return meta
		}
		if inRange(def) {
			return def
		}
		return -1
	}
	t.bos, t.eos, t.unk = pick(v.BOS, bos), pick(v.EOS, eos), pick(v.UNK, unk)
	t.pad, t.sep = pick(v.PAD, -1), pick(v.SEP, -1)
	t.eot, t.eom = pick(v.EOT, -1), pick(v.EOM, -1)
	if v.AddBOSSet {
		t.addBOS = v.AddBOS
	}
	if v.AddEOSSet {
		t.addEOS = v.AddEOS
	}
	if t.pre != nil && t.pre.gemma4 {
		t.addBOS = true
	}
	if t.addBOS && t.bos < 0 {
		return nil, fmt.Errorf("%w: tokenizer.ggml.add_bos_token is true, but tokenizer.ggml.bos_token_id is not set", ErrInvalid)
	}
	if t.addEOS && t.eos < 0 {
		return nil, fmt.Errorf("%w: tokenizer.ggml.add_eos_token is true, but tokenizer.ggml.eos_token_id is not set", ErrInvalid)
	}

	t.findSpecialIDs()
	t.setStripAttrs(v)
	t.buildPieces()
	t.buildSpecials()
	for b := 0; b < 256; b++ {
		t.byteTokens[b] = t.findByteToken(byte(b))
	}
	return t, nil
}

func typeAttr(typ int32) uint16 {
	switch typ {
	case TypeNormal:
		return attrNormal
	case TypeUnknown:
		return attrUnknown
	case TypeControl:
		return attrControl
	case TypeUserDefined:
		return attrUserDefined
	case TypeUnused:
		return attrUnused
	case TypeByte:
		return attrByte
	}
	return 0
}

// Texts llama.cpp recognises special tokens by (llama_vocab::impl::load).
var (
	eotTexts = []string{"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
		"<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>"}
	eomTexts    = []string{"<|eom_id|>"}
	fimPadTexts = []string{"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"}
	fimRepTexts = []string{"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"}
	fimSepTexts = []string{"<|file_sep|>"}
	// The FIM prefix, suffix and middle tokens are not end-of-generation, but
	// llama.cpp marks them control all the same.
	fimOtherTexts = []string{"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
		"<|code_prefix|>", "<|prefix|>", "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>",
		"▁<SUF>", "<|code_suffix|>", "<|suffix|>", "<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>",
		"<MID>", "▁<MID>", "<|code_middle|>", "<|middle|>"}
	eogTexts = []string{"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
		"<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
		"<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>", "[e~["}
)

// findSpecialIDs finds EOT, EOM and the FIM tokens by text where the
// metadata did not name them, marks them control, and builds the
// end-of-generation set, as llama.cpp does.
func (t *Tokenizer) findSpecialIDs() {
	// first returns the lowest id whose text is in texts.
	first := func(texts []string) int32 {
		best := int32(-1)
		for _, s := range texts {
			if id, ok := t.ids[s]; ok && (best < 0 || id < best) {
				best = id
			}
		}
		return best
	}
	mark := func(id int32) {
		if id >= 0 {
			t.attrs[id] |= attrControl
		}
	}
	if t.eot < 0 {
		t.eot = first(eotTexts)
		mark(t.eot)
	}
	if t.eom < 0 {
		t.eom = first(eomTexts)
		mark(t.eom)
	}
	fimPad, fimRep, fimSep := first(fimPadTexts), first(fimRepTexts), first(fimSepTexts)
	mark(fimPad)
	mark(fimRep)
	mark(fimSep)
	for _, s := range fimOtherTexts {
		if id, ok := t.ids[s]; ok {
			mark(id)
		}
	}
	eog := map[int32]bool{}
	for _, id := range []int32{fimPad, fimRep, fimSep} {
		if id >= 0 {
			eog[id] = true
		}
	}
	for _, s := range eogTexts {
		if id, ok := t.ids[s]; ok {
			eog[id] = true
			mark(id)
		}
	}
	// gpt-oss: these render as text.
	for _, s := range []string{"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"} {
		if id, ok := t.ids[s]; ok {
			t.attrs[id] = attrUserDefined
		}
	}
	for _, id := range []int32{t.eos, t.eot, t.eom} {
		if id >= 0 {
			eog[id] = true
		}
	}
	has := func(s string) (int32, bool) {
		id, ok := t.ids[s]
		return id, ok && eog[id]
	}
	// o200k_harmony and solar-open: <|end|> ends a message, not the turn.
	_, ret := has("<|return|>")
	_, call := has("<|call|>")
	_, calls := has("<|calls|>")
	_, flush := has("<|flush|>")
	if end, ok := has("<|end|>"); ok && ((ret && (call || calls)) || ((call || calls) && flush)) {
		delete(eog, end)
		t.attrs[end] = attrUserDefined
	}
	// gemma4 and paddleocr: </s> is ordinary text.
	if s, ok := has("</s>"); ok {
		if _, tool := has("<|tool_response>"); tool {
			delete(eog, s)
			t.attrs[s] = attrNormal
		}
	}
	for id := range eog {
		t.eog = append(t.eog, id)
	}
	sort.Slice(t.eog, func(i, j int) bool { return t.eog[i] < t.eog[j] })
}

// setStripAttrs applies the per-model white-space stripping llama.cpp keys on
// the model name and pre-tokenizer.
func (t *Tokenizer) setStripAttrs(v Vocab) {
	set := func(s string, a uint16, on bool) {
		if id, ok := t.ids[s]; ok {
			if on {
				t.attrs[id] |= a
			} else {
				t.attrs[id] &^= a
			}
		}
	}
	name := strings.ToLower(v.Name)
	switch {
	case strings.Contains(v.Pre, "jina-v2-de") || strings.Contains(v.Pre, "jina-v2-es") ||
		strings.Contains(v.Pre, "jina-v2-code") || strings.Contains(v.Arch, "nomic-bert-moe") ||
		strings.Contains(v.Arch, "jina-bert-v3"):
		set("<mask>", attrLStrip, true)
	case strings.Contains(name, "phi-3") || strings.Contains(name, "phi3"):
		for id, a := range t.attrs {
			if a&(attrControl|attrUserDefined|attrUnknown) != 0 {
				t.attrs[id] |= attrRStrip
			}
		}
		set("</s>", attrRStrip, true)
		for _, s := range []string{"<unk>", "<s>", "<|endoftext|>"} {
			set(s, attrRStrip, false)
		}
	case strings.Contains(name, "modern-bert"):
		set("[MASK]", attrLStrip, true)
	}
}

// NVocab is the number of tokens.
func (t *Tokenizer) NVocab() int { return len(t.texts) }

// BOS is the beginning-of-sequence token id, -1 if none.
func (t *Tokenizer) BOS() int32 { return t.bos }

// EOS is the end-of-sequence token id, -1 if none.
func (t *Tokenizer) EOS() int32 { return t.eos }

// EOT is the end-of-turn token id, -1 if none.
func (t *Tokenizer) EOT() int32 { return t.eot }

// AddBOS reports whether Encode with addSpecial puts BOS first.
func (t *Tokenizer) AddBOS() bool { return t.addBOS }

// AddEOS reports whether Encode with addSpecial puts EOS last.
func (t *Tokenizer) AddEOS() bool { return t.addEOS }

// IsEOG reports whether id ends generation: EOS, EOT, EOM, and the tokens
// llama.cpp recognises by text ("<|eot_id|>", "<|im_end|>", "<|end|>",
// "<end_of_turn>", "<|endoftext|>", FIM padding …).
func (t *Tokenizer) IsEOG(id int32) bool {
	i := sort.Search(len(t.eog), func(i int) bool { return t.eog[i] >= id })
	return i < len(t.eog) && t.eog[i] == id
}

// IsControl reports whether id is a control token (BOS, EOS, chat markers…),
// which Decode and Piece render as nothing.
func (t *Tokenizer) IsControl(id int32) bool {
	return t.valid(id) && t.attrs[id]&attrControl != 0
}

// Text is the token's text as the vocabulary stores it ("▁the", "Ġthe",
// "<0x0A>"), "" for an invalid id.
func (t *Tokenizer) Text(id int32) string {
	if !t.valid(id) {
		return ""
	}
	return t.texts[id]
}

func (t *Tokenizer) valid(id int32) bool { return id >= 0 && int(id) < len(t.texts) }
