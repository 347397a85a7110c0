// Package kvcache holds the attention keys and values of running sequences
// in fixed-size blocks drawn from one pool that is sized once, at startup.
//
// A sequence owns a block table: position p of a sequence lives in block
// table[p/BlockSize] at offset p%BlockSize. Blocks carry reference counts so
// that sequences sharing a prompt prefix can share the blocks that hold it.
//
// A Cache is safe for concurrent use; a Seq is used by one goroutine at a
// time (the engine's step loop).
package kvcache

import (
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"sync"

	"github.com/spigot-llm/spigot/kernels"
)

// ErrFull is returned when the pool has no free block left.
var ErrFull = errors.New("kvcache: no free blocks")

// Config sizes a cache.
type Config struct {
	Layers    int // transformer layers
	KVDim     int // floats per position per layer: KV heads × head size
	BlockSize int // positions per block (16 when 0)
	Blocks    int // blocks in the pool
}

// Cache is a pool of blocks. Keys and values of block b, layer l, offset o
// start at ((b*Layers+l)*BlockSize+o)*KVDim in k and v.
type Cache struct {
	cfg Config
	k   []uint16 // half precision (IEEE binary16 bits)
	v   []uint16

	mu   sync.Mutex // guards everything below
	free []int32    // blocks holding nothing reusable
	refs []int32    // sequences holding each block

	// Prefix cache: full blocks registered by Publish are found by the
	// hash of their tokens and of everything before them. A registered
	// block whose last holder releases it stays "idle" (in LRU order) and
	// can be reused by Reuse until alloc needs it back.
	byHash     map[uint64]int32
	hash       []uint64 // per block; 0 when not registered
	tokens     []int32  // per block, BlockSize tokens, to verify a hash match
	prev, next []int32  // idle LRU list links; -1 ends
	head, tail int32    // idle LRU: head is the least recently used
	idle       int
	hits       uint64 // tokens found by Reuse
	queries    uint64 // tokens looked up by Reuse
}

// New allocates a cache. Keys and values are stored in half precision, as
// llama.cpp's default cache stores them: the memory it takes is 2 × 2 bytes
// × Blocks × BlockSize × Layers × KVDim.
func New(cfg Config) (*Cache, error) {
	if cfg.BlockSize == 0 {
		cfg.BlockSize = 16
	}
	if cfg.Layers <= 0 || cfg.KVDim <= 0 || cfg.BlockSize <= 0 || cfg.Blocks <= 0 {
		return nil, fmt.Errorf("kvcache: bad config %+v", cfg)
	}
	n := uint64(1)
	for _, x := range []int{cfg.Layers, cfg.KVDim, cfg.BlockSize, cfg.Blocks} {
		hi, lo := bits.Mul64(n, uint64(x))
		if hi != 0 || lo > 1<<40 {
			return nil, fmt.Errorf("kvcache: %+v needs too much memory", cfg)
		}
		n = lo
	}
	c := &Cache{cfg: cfg, k: make([]uint16, n), v: make([]uint16, n), refs: make([]int32, cfg.Blocks),
		byHash: map[uint64]int32{}, hash: make([]uint64, cfg.Blocks), tokens: make([]int32, cfg.Blocks*cfg.BlockSize),
		prev: make([]int32, cfg.Blocks), next: make([]int32, cfg.Blocks), head: -1, tail: -1}
	c.free = make([]int32, cfg.Blocks)
	for i := range c.free {
		c.free[i] = int32(cfg.Blocks - 1 - i) // hand out low blocks first
	}
	return c, nil
}

// Config returns the cache's configuration.
func (c *Cache) Config() Config { return c.cfg }

// BlocksInUse is the number of blocks held by some sequence.
func (c *Cache) BlocksInUse() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg.Blocks - len(c.free) - c.idle
}

// BlocksFree is the number of blocks not held by any sequence, including
// idle prefix-cache blocks that alloc may take back.
func (c *Cache) BlocksFree() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.free) + c.idle
}

// BlocksCached is the number of blocks registered in the prefix cache,
// held or idle.
func (c *Cache) BlocksCached() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.byHash)
}

// PrefixStats returns how many prompt tokens Reuse looked up and how many
// of them it found cached.
func (c *Cache) PrefixStats() (queried, hit uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queries, c.hits
}

func (c *Cache) alloc() (int32, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b int32
	switch {
	case len(c.free) > 0:
		b = c.free[len(c.free)-1]
		c.free = c.free[:len(c.free)-1]
	case c.idle > 0: // evict the least recently used cached block
		b = c.head
		c.unlinkIdle(b)
		delete(c.byHash, c.hash[b])
		c.hash[b] = 0
	default:
		return 0, ErrFull
	}
	c.refs[b] = 1
	return b, nil
}

func (c *Cache) release(blocks []int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range blocks {
		c.refs[b]--
		if c.refs[b] > 0 {
			continue
		}
		if c.hash[b] != 0 {
			c.pushIdle(b)
		} else {
			c.free = append(c.free, b)
		}
	}
}

func (c *Cache) pushIdle(b int32) {
	c.prev[b], c.next[b] = c.tail, -1
	if c.tail >= 0 {
		c.next[c.tail] = b
	} else {
		c.head = b
	}
	c.tail = b
	c.idle++
}

func (c *Cache) unlinkIdle(b int32) {
	p, n := c.prev[b], c.next[b]
	if p >= 0 {
		c.next[p] = n
	} else {
		c.head = n
	}
	if n >= 0 {
		c.prev[n] = p
	} else {
		c.tail = p
	}
	c.idle--
}

// chainHash is the prefix-cache key of a block: FNV-1a over the previous
// block's key and this block's tokens. It is never 0.
func chainHash(prev uint64, toks []int32) uint64 {
	const prime = 1099511628211
	h := prev ^ 14695981039346656037
	for i := 0; i < 8; i++ {
		h = (h ^ (prev >> (8 * i) & 0xff)) * prime
	}
	for _, t := range toks {
		u := uint32(t)
		for i := 0; i < 4; i++ {
			h = (h ^ uint64(u>>(8*i)&0xff)) * prime
		}
	}
	if h == 0 {
		h = 1
	}
	return h
}

// Reuse attaches to an empty sequence the longest run of cached full
// blocks that hold a prefix of tokens, and returns how many tokens that
// covers (a multiple of BlockSize). The caller computes the rest. To keep
// at least one token to compute, pass the prompt without its last token.
func (s *Seq) Reuse(tokens []int32) int {
	if s.n != 0 || len(s.blocks) != 0 {
		panic("kvcache: Reuse on a non-empty sequence")
	}
	c := s.c
	bs := c.cfg.BlockSize
	c.mu.Lock()
	defer c.mu.Unlock()
	c.queries += uint64(len(tokens))
	h := uint64(0)
	for i := 0; (i+1)*bs <= len(tokens); i++ {
		blk := tokens[i*bs : (i+1)*bs]
		h = chainHash(h, blk)
		b, ok := c.byHash[h]
		if !ok || !slices.Equal(c.tokens[int(b)*bs:(int(b)+1)*bs], blk) {
			break
		}
		if c.refs[b] == 0 {
			c.unlinkIdle(b)
		}
		c.refs[b]++
		s.blocks = append(s.blocks, b)
	}
	s.n = len(s.blocks) * bs
	c.hits += uint64(s.n)
	return s.n
}

// Publish registers the sequence's full blocks that hold tokens (the
// tokens at positions 0, 1, …, which must already be stored) in the prefix
// cache, so later sequences with the same prefix can Reuse them. Blocks
// whose content is already registered (from another sequence) are skipped.
func (s *Seq) Publish(tokens []int32) {
	c := s.c
	bs := c.cfg.BlockSize
	n := min(len(tokens), s.n) / bs
	c.mu.Lock()
	defer c.mu.Unlock()
	h := uint64(0)
	for i := 0; i < n; i++ {
		blk := tokens[i*bs : (i+1)*bs]
		h = chainHash(h, blk)
		b := s.blocks[i]
		if c.hash[b] == h {
			continue // this block is the registered one already
		}
		if _, taken := c.byHash[h]; taken || c.hash[b] != 0 {
			continue
		}
		c.byHash[h] = b
		c.hash[b] = h
		copy(c.tokens[int(b)*bs:], blk)
	}
}

// Seq is one sequence's view of the cache: its block table and length.
type Seq struct {
	c      *Cache
	blocks []int32
	n      int
}

// NewSeq returns an empty sequence.
func (c *Cache) NewSeq() *Seq { return &Seq{c: c} }

// Len is the number of positions whose keys and values are stored.
func (s *Seq) Len() int { return s.n }

// SetLen records that positions [0, n) are stored. n must not exceed the
// capacity reserved with Reserve.
func (s *Seq) SetLen(n int) {
	if n < 0 || n > len(s.blocks)*s.c.cfg.BlockSize {
		panic(fmt.Sprintf("kvcache: SetLen(%d) beyond reserved %d", n, len(s.blocks)*s.c.cfg.BlockSize))
	}
	s.n = n
}

// Grow makes the block table hold positions [0, n) without reallocating,
// so that later Reserve calls up to n do not allocate (steady-state decode
// steps stay allocation-free). It takes no blocks from the pool.
func (s *Seq) Grow(n int) {
	bs := s.c.cfg.BlockSize
	s.blocks = slices.Grow(s.blocks, (n+bs-1)/bs-len(s.blocks))
}

// Reserve makes room for positions [0, n), taking blocks from the pool. On
// ErrFull the sequence keeps what it had.
func (s *Seq) Reserve(n int) error {
	bs := s.c.cfg.BlockSize
	need := (n + bs - 1) / bs
	start := len(s.blocks)
	for len(s.blocks) < need {
		b, err := s.c.alloc()
		if err != nil {
			s.c.release(s.blocks[start:])
			s.blocks = s.blocks[:start]
			return err
		}
		s.blocks = append(s.blocks, b)
	}
	return nil
}

// Release returns all the sequence's blocks to the pool and empties it.
func (s *Seq) Release() {
	s.c.release(s.blocks)
	s.blocks = s.blocks[:0]
	s.n = 0
}

// Blocks returns the sequence's block table (not a copy).
func (s *Seq) Blocks() []int32 { return s.blocks }

func (s *Seq) offset(layer, pos int) int {
	cfg := &s.c.cfg
	b := int(s.blocks[pos/cfg.BlockSize])
	return ((b*cfg.Layers+layer)*cfg.BlockSize + pos%cfg.BlockSize) * cfg.KVDim
}

// K returns the key vector of layer at pos, KVDim halves, for reading or
// writing. pos must be within the reserved capacity.
func (s *Seq) K(layer, pos int) []uint16 {
	o := s.offset(layer, pos)
	return s.c.k[o : o+s.c.cfg.KVDim : o+s.c.cfg.KVDim]
}

// V returns the value vector of layer at pos, like K.
func (s *Seq) V(layer, pos int) []uint16 {
	o := s.offset(layer, pos)
	return s.c.v[o : o+s.c.cfg.KVDim : o+s.c.cfg.KVDim]
}

// Store writes the key and value vectors of layer at pos, rounded to
// half precision: attention sees exactly the values llama.cpp's default
// f16 cache holds, so greedy decoding agrees with it token for token, in
// half the memory of float32.
func (s *Seq) Store(layer, pos int, k, v []float32) {
	o := s.offset(layer, pos)
	n := s.c.cfg.KVDim
	kernels.ToF16(s.c.k[o:o+n], k[:n])
	kernels.ToF16(s.c.v[o:o+n], v[:n])
}

// BlockSize is the positions per block of the sequence's cache.
func (s *Seq) BlockSize() int { return s.c.cfg.BlockSize }

// Block returns the keys and values of layer in the sequence's i-th block
// (positions [i*BlockSize, (i+1)*BlockSize)), BlockSize × KVDim floats
// each, for reading. Positions past Len hold whatever the block held
// before, not this sequence's values.
func (s *Seq) Block(layer, i int) (k, v []uint16) {
	cfg := &s.c.cfg
	o := (int(s.blocks[i])*cfg.Layers + layer) * cfg.BlockSize * cfg.KVDim
	n := cfg.BlockSize * cfg.KVDim
	return s.c.k[o : o+n : o+n], s.c.v[o : o+n : o+n]
}

// Span returns the keys and values of layer for the run of positions
// [pos, end) that lies in one block, with end = the block's end or limit,
// whichever is first. Attention walks a sequence span by span.
func (s *Seq) Span(layer, pos, limit int) (k, v []uint16, end int) {
	bs := s.c.cfg.BlockSize
	end = min((pos/bs+1)*bs, limit)
	o := s.offset(layer, pos)
	n := (end - pos) * s.c.cfg.KVDim
	return s.c.k[o : o+n : o+n], s.c.v[o : o+n : o+n], end
}
