package tokenizer

// preTokenizer is what a tokenizer.ggml.pre value selects for byte-level BPE:
// the regexes text is split with, in order (each splits every chunk the
// previous ones made), and the flags llama.cpp's llama_vocab::impl::load sets
// for it.
type preTokenizer struct {
	name         string
	splits       []splitFunc
	cleanSpaces  bool // detokenize runs clean_up_tokenization_spaces
	ignoreMerges bool // a chunk that is a token is emitted whole
	addBOS       bool // default of tokenizer.ggml.add_bos_token
	noBOS        bool // no default BOS id (chatglm)
	rawBytes     bool // tokens are raw UTF-8 with ▁ for spaces and <0xXX> bytes (gemma4)
	gemma4       bool // BOS always added; a chunk of newlines that is a token is emitted whole
}

// nameOr is p's name, or def when p is nil (SentencePiece).
func (p *preTokenizer) nameOr(def string) string {
	if p == nil {
		return def
	}
	return p.name
}

var (
	gpt2Split    = splitByMatch(matchGPT2)
	llama3Split  = splitByMatch(llama3Opts{digits: 3, trail: "\r\n"}.match)
	qwen2Split   = splitByMatch(llama3Opts{digits: 1, trail: "\r\n"}.match)
	digitSplit   = splitByMatch(classRun{in: flagClass(fNumber), max: 1}.match)
	digits3Split = splitByMatch(classRun{in: flagClass(fNumber), max: 3}.match)
	numbersSplit = splitByMatch(classRun{in: flagClass(fNumber)}.match)
	threeDigits  = splitByMatch(matchThreeDigits)
	crlfSplit    = splitByMatch(matchCRLF)
	bloomSplit   = splitByMatch(classRun{in: bloomWord, prefix: ' '}.match)
	linesSplit   = splitByMatch(matchLines)
	ds3CJKSplit  = splitByMatch(classRun{in: rangeClass(deepseek3CJK)}.match)
	dsCJKSplit   = splitByMatch(classRun{in: rangeClass(deepseekCJK)}.match)
)

// preTokenizers maps every tokenizer.ggml.pre value this package supports.
var preTokenizers = map[string]*preTokenizer{}

// unsupportedPre lists values llama.cpp knows that this package does not
// implement yet.
var unsupportedPre = map[string]bool{
	"tiny_aya": true, "cohere2moe": true, "youtu": true, "superbpe": true,
	"kimi-k2": true, "afmoe": true, "whitespace": true,
}

func register(p preTokenizer, names ...string) {
	for _, n := range names {
		q := p
		q.name = n
		preTokenizers[n] = &q
	}
}

func init() {
	// Most values keep llama.cpp's BPE default of clean_spaces = true.
	register(preTokenizer{cleanSpaces: true, splits: []splitFunc{
		splitByMatch(punctRun("$+<=>^~|")), gpt2Split, numbersSplit, threeDigits,
	}}, "", "default")
	register(preTokenizer{cleanSpaces: true, splits: []splitFunc{gpt2Split}},
		"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v1-en", "jina-v2-es",
		"jina-v2-de", "jina-v2-code", "roberta-bpe", "a.x-4.0", "mellum", "modern-bert",
		"exaone4", "mpt", "olmo", "jais")
	register(preTokenizer{splits: []splitFunc{gpt2Split}}, "trillion", "granite-docling")
	register(preTokenizer{cleanSpaces: true, splits: []splitFunc{digitSplit, gpt2Split}},
		"starcoder", "refact", "codeshell", "exaone", "minerva-7b", "mellum2")
	register(preTokenizer{splits: []splitFunc{digitSplit, gpt2Split}}, "command-r", "smollm")
	register(preTokenizer{cleanSpaces: true, splits: []splitFunc{
		splitByMatch(punctRun("$+<=>^~|`")), gpt2Split, threeDigits,
	}}, "falcon")
	register(preTokenizer{cleanSpaces: true, ignoreMerges: true, addBOS: true, splits: []splitFunc{llama3Split}},
		"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano")
	register(preTokenizer{cleanSpaces: true, splits: []splitFunc{llama3Split}}, "dbrx", "smaug-bpe")
	register(preTokenizer{cleanSpaces: true, noBOS: true, splits: []splitFunc{llama3Split}}, "chatglm-bpe", "glm4")
	register(preTokenizer{cleanSpaces: true, splits: []splitFunc{
		splitByMatch(llama3Opts{digits: 3, trail: "\r\n", jais2: true}.match),
	}}, "jais-2")
	register(preTokenizer{splits: []splitFunc{qwen2Split}},
		"qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "hunyuan", "solar-open", "grok-2",
		"bailingmoe", "bailingmoe2", "llada-moe")
	register(preTokenizer{cleanSpaces: true, splits: []splitFunc{qwen2Split}}, "megrez", "stablelm2")
	register(preTokenizer{splits: []splitFunc{
		splitByMatch(llama3Opts{digits: 1, marks: true, trail: "\r\n"}.match),
	}}, "qwen35")
	register(preTokenizer{splits: []splitFunc{
		splitByMatch(llama3Opts{digits: 1}.match),
	}}, "seed-coder")
	register(preTokenizer{splits: []splitFunc{
		splitByMatch(llama3Opts{noContractions: true, digits: 1, trail: "\r\n"}.match),
	}}, "ufakzeka")
	register(preTokenizer{ignoreMerges: true, cleanSpaces: true, splits: []splitFunc{
		digits3Split, splitByMatch(llama3Opts{trail: "\r\n"}.match),
	}}, "minicpm5")
	register(preTokenizer{splits: []splitFunc{linesSplit, qwen2Split}}, "laguna")
	register(preTokenizer{cleanSpaces: true, splits: []splitFunc{splitByMatch(matchExaoneMoE)}}, "exaone-moe")
	register(preTokenizer{splits: []splitFunc{
		crlfSplit,
		splitByMatch(classRun{in: rangeClass(deepseekLetters), prefix: 's'}.match),
		splitByMatch(classRun{in: rangeClass(deepseekPunct), prefix: 's'}.match),
		splitTrailingSpace,
		dsCJKSplit,
		numbersSplit,
	}}, "deepseek-llm")
	register(preTokenizer{splits: []splitFunc{
		crlfSplit,
		splitByMatch(classRun{in: flagClass(fLetter), prefix: 's'}.match),
		splitByMatch(classRun{in: (*cpText).rxPunct, prefix: 's'}.match),
		dsCJKSplit,
		digitSplit,
	}}, "deepseek-coder")
	register(preTokenizer{splits: []splitFunc{
		digits3Split, ds3CJKSplit, splitByMatch(deepseek3Opts{}.match),
	}}, "deepseek-v3", "deepseek3-llm", "hunyuan-dense", "joyai-llm", "hy_v4")
	register(preTokenizer{splits: []splitFunc{
		digits3Split, ds3CJKSplit, splitByMatch(deepseek3Opts{spark: true}.match), digitSplit,
	}}, "spark2_5")
	register(preTokenizer{splits: []splitFunc{bloomSplit}}, "poro-chat")
	register(preTokenizer{cleanSpaces: true, splits: []splitFunc{bloomSplit}}, "bloom", "gpt3-finnish")
	register(preTokenizer{splits: []splitFunc{bloomSplit, digitSplit}}, "viking")
	register(preTokenizer{ignoreMerges: true, addBOS: true, splits: []splitFunc{
		splitByMatch(casedOpts{digits: 1}.match),
	}}, "tekken")
	register(preTokenizer{splits: []splitFunc{
		splitByMatch(casedOpts{contractions: true, digits: 3}.match),
	}}, "gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2")
	register(preTokenizer{ignoreMerges: true, splits: []splitFunc{
		splitByMatch(casedOpts{contractions: true, marks: true, digits: 3}.match),
	}}, "granite-embed-multi-97m")
	register(preTokenizer{addBOS: true, splits: []splitFunc{
		splitByMatch(matchSentinel),
		splitByMatch(matchImage),
		splitByMatch(matchChameleonSpace),
		digitSplit,
		splitByMatch(matchChameleonPunct),
		gpt2Split,
	}}, "chameleon")
	register(preTokenizer{cleanSpaces: true, rawBytes: true, gemma4: true, splits: []splitFunc{linesSplit}},
		"gemma4", "granite-embed-multi-311m")
	register(preTokenizer{rawBytes: true, splits: []splitFunc{linesSplit}}, "sarvam-moe")
}
