// Package model defines what every architecture provides to the engine: its
// hyperparameters, a batched forward pass over many sequences at once, and a
// registry that picks the implementation named by a file's
// general.architecture.
package model

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/spigot-llm/spigot/gguf"
	"github.com/spigot-llm/spigot/kernels"
	"github.com/spigot-llm/spigot/kvcache"
)

// ErrUnsupported is wrapped by errors about architectures, tensor types or
// options that Spigot does not implement.
var ErrUnsupported = errors.New("unsupported model")

// Config holds the hyperparameters the engine needs to know.
type Config struct {
	Arch    string
	Name    string
	Vocab   int // logits per token
	Dim     int // embedding width
	Layers  int
	Heads   int
	KVHeads int
	HeadDim int
	FFN     int
	Context int // training context length
}

// KVDim is the width of one position's keys (or values) in one layer.
func (c Config) KVDim() int { return c.KVHeads * c.HeadDim }

// Batch is the input of one forward step: any number of tokens from any
// number of sequences. Tokens of the same sequence must appear in order and
// carry consecutive positions that start at that sequence's cached length.
type Batch struct {
	Tokens []int32
	Pos    []int32
	Seqs   []*kvcache.Seq
	// Logits marks the tokens whose next-token logits are wanted (usually
	// the last token of each sequence).
	Logits []bool
}

// Add appends one token to the batch.
func (b *Batch) Add(token int32, pos int, seq *kvcache.Seq, logits bool) {
	b.Tokens = append(b.Tokens, token)
	b.Pos = append(b.Pos, int32(pos))
	b.Seqs = append(b.Seqs, seq)
	b.Logits = append(b.Logits, logits)
}

// Reset empties the batch, keeping its storage.
func (b *Batch) Reset() {
	b.Tokens, b.Pos, b.Seqs, b.Logits = b.Tokens[:0], b.Pos[:0], b.Seqs[:0], b.Logits[:0]
}

// NumLogits is the number of tokens marked for logits.
func (b *Batch) NumLogits() int {
	n := 0
	for _, l := range b.Logits {
		if l {
			n++
		}
	}
	return n
}

// Model is a loaded model. A Model is used by one goroutine at a time (the
// engine's step loop): Forward keeps its scratch buffers between calls.
type Model interface {
	Config() Config
	// NewCache allocates a KV cache pool of the given number of blocks that
	// fits this model.
	NewCache(blocks, blockSize int) (*kvcache.Cache, error)
	// Forward runs the batch through the model, stores each token's keys and
	// values in its sequence's cache, advances each sequence's length, and
	// writes Config().Vocab logits per marked token, in batch order, to
	// logits (len ≥ b.NumLogits()*Vocab).
	Forward(b *Batch, logits []float32) error
}

// Options configure loading.
type Options struct {
	Pool *kernels.Pool // required: the threads to compute with
	// PackTiles keeps a second copy of the weight matrices whose packed
	// layout is about their size (kernels.PackTiles; Q8_0 today), for
	// steps of many tokens to read without packing: about a tenth faster
	// batched decoding, for that much more memory. Servers with parallel
	// sequences want it; a single stream does not.
	PackTiles bool
}

// Loader builds a model from a file's metadata and tensors.
type Loader func(f *gguf.File, opts Options) (Model, error)

var (
	registryMu sync.Mutex
	registry   = map[string]Loader{}
)

// Register makes an architecture available under the general.architecture
// names given. It is called from init functions.
func Register(load Loader, archs ...string) {
	registryMu.Lock()
	defer registryMu.Unlock()
	for _, a := range archs {
		if _, dup := registry[a]; dup {
			panic("model: Register called twice for " + a)
		}
		registry[a] = load
	}
}

// Load builds the model described by f with the registered loader for its
// architecture.
func Load(f *gguf.File, opts Options) (Model, error) {
	arch, ok := f.String("general.architecture")
	if !ok {
		return nil, fmt.Errorf("model: general.architecture is missing: %w", ErrUnsupported)
	}
	registryMu.Lock()
	load, ok := registry[arch]
	var known []string
	for a := range registry {
		known = append(known, a)
	}
	registryMu.Unlock()
	if !ok {
		sort.Strings(known)
		return nil, fmt.Errorf("model: architecture %q is not supported (supported: %s): %w", arch, strings.Join(known, ", "), ErrUnsupported)
	}
	if opts.Pool == nil {
		return nil, errors.New("model: Options.Pool is nil")
	}
	return load(f, opts)
}
