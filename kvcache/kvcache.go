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
	"sync"

	"github.com/spigot-llm/spigot/quant"
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
	k   []float32
	v   []float32

	mu   sync.Mutex // guards free and refs
	free []int32
	refs []int32
}

// New allocates a cache. The memory it takes is 2 × 4 bytes × Blocks ×
// BlockSize × Layers × KVDim.
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
	c := &Cache{cfg: cfg, k: make([]float32, n), v: make([]float32, n), refs: make([]int32, cfg.Blocks)}
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
	return c.cfg.Blocks - len(c.free)
}

// BlocksFree is the number of blocks not held by any sequence.
func (c *Cache) BlocksFree() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.free)
}

func (c *Cache) alloc() (int32, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.free) == 0 {
		return 0, ErrFull
	}
	b := c.free[len(c.free)-1]
	c.free = c.free[:len(c.free)-1]
	c.refs[b] = 1
	return b, nil
}

func (c *Cache) release(blocks []int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range blocks {
		c.refs[b]--
		if c.refs[b] == 0 {
			c.free = append(c.free, b)
		}
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

// K returns the key vector of layer at pos, KVDim floats, for reading or
// writing. pos must be within the reserved capacity.
func (s *Seq) K(layer, pos int) []float32 {
	o := s.offset(layer, pos)
	return s.c.k[o : o+s.c.cfg.KVDim : o+s.c.cfg.KVDim]
}

// V returns the value vector of layer at pos, like K.
func (s *Seq) V(layer, pos int) []float32 {
	o := s.offset(layer, pos)
	return s.c.v[o : o+s.c.cfg.KVDim : o+s.c.cfg.KVDim]
}

// Store writes the key and value vectors of layer at pos, rounded to
// half precision. Keeping F16 precision (in float32 storage, for now) makes
// attention see exactly the values llama.cpp's default f16 cache holds, so
// greedy decoding agrees with it token for token.
func (s *Seq) Store(layer, pos int, k, v []float32) {
	o := s.offset(layer, pos)
	n := s.c.cfg.KVDim
	roundF16(s.c.k[o:o+n], k[:n])
	roundF16(s.c.v[o:o+n], v[:n])
}

func roundF16(dst, src []float32) {
	for i, x := range src {
		dst[i] = quant.F16ToF32(quant.F32ToF16(x))
	}
}

// Span returns the keys and values of layer for the run of positions
// [pos, end) that lies in one block, with end = the block's end or limit,
// whichever is first. Attention walks a sequence span by span.
func (s *Seq) Span(layer, pos, limit int) (k, v []float32, end int) {
	bs := s.c.cfg.BlockSize
	end = min((pos/bs+1)*bs, limit)
	o := s.offset(layer, pos)
	n := (end - pos) * s.c.cfg.KVDim
	return s.c.k[o : o+n : o+n], s.c.v[o : o+n : o+n], end
}
