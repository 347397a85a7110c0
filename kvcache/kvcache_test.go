package kvcache

import (
	"errors"
	"github.com/spigot-llm/spigot/quant"
	"testing"
)

func TestReserveRelease(t *testing.T) {
	c, err := New(Config{Layers: 2, KVDim: 3, BlockSize: 4, Blocks: 5})
	if err != nil {
		t.Fatal(err)
	}
	a, b := c.NewSeq(), c.NewSeq()
	if err := a.Reserve(9); err != nil { // 3 blocks
		t.Fatal(err)
	}
	if got := c.BlocksInUse(); got != 3 {
		t.Errorf("BlocksInUse = %d, want 3", got)
	}
	if err := b.Reserve(12); !errors.Is(err, ErrFull) { // needs 3, 2 left
		t.Errorf("Reserve beyond the pool = %v, want ErrFull", err)
	}
	if got := c.BlocksInUse(); got != 3 {
		t.Errorf("a failed Reserve kept blocks: in use %d, want 3", got)
	}
	// Writes through K/V land where Span reads them, and sequences do not overlap.
	for pos := range 9 {
		for l := range 2 {
			a.K(l, pos)[0] = uint16(100*l + pos)
			a.V(l, pos)[2] = uint16(5000 + 100*l + pos)
		}
	}
	a.SetLen(9)
	if err := b.Reserve(8); err != nil {
		t.Fatal(err)
	}
	for pos := range 8 {
		b.K(1, pos)[0] = 7
	}
	for pos := 0; pos < 9; {
		k, v, end := a.Span(1, pos, 9)
		for i := pos; i < end; i++ {
			if k[(i-pos)*3] != uint16(100+i) || v[(i-pos)*3+2] != uint16(5100+i) {
				t.Fatalf("Span(1, %d) position %d = %v/%v", pos, i, k[(i-pos)*3], v[(i-pos)*3+2])
			}
		}
		pos = end
	}
	a.Release()
	b.Release()
	if got := c.BlocksInUse(); got != 0 {
		t.Errorf("after Release, BlocksInUse = %d, want 0", got)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{{}, {Layers: 1, KVDim: 1, Blocks: -1}, {Layers: 1 << 20, KVDim: 1 << 20, BlockSize: 1 << 10, Blocks: 1 << 20}} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

func TestStoreRoundsToHalf(t *testing.T) {
	c, _ := New(Config{Layers: 1, KVDim: 2, BlockSize: 4, Blocks: 1})
	s := c.NewSeq()
	if err := s.Reserve(1); err != nil {
		t.Fatal(err)
	}
	// 1+2^-11 is halfway between two halves and rounds to even (1); 1+2^-10
	// is a half exactly.
	s.Store(0, 0, []float32{1 + 1.0/2048, 1 + 1.0/1024}, []float32{3, -0.5})
	f := quant.F16ToF32
	if k := s.K(0, 0); f(k[0]) != 1 || f(k[1]) != 1+1.0/1024 {
		t.Errorf("K = %v, %v, want [1 %v]", f(k[0]), f(k[1]), 1+1.0/1024)
	}
	if v := s.V(0, 0); f(v[0]) != 3 || f(v[1]) != -0.5 {
		t.Errorf("V = %v, %v", f(v[0]), f(v[1]))
	}
}

func TestPrefixReuse(t *testing.T) {
	c, _ := New(Config{Layers: 1, KVDim: 1, BlockSize: 2, Blocks: 4})
	prompt := []int32{1, 2, 3, 4, 5}
	a := c.NewSeq()
	if got := a.Reuse(prompt[:4]); got != 0 {
		t.Fatalf("Reuse on an empty cache = %d", got)
	}
	if err := a.Reserve(5); err != nil {
		t.Fatal(err)
	}
	for pos := range 5 {
		a.K(0, pos)[0] = uint16(10 + pos)
	}
	a.SetLen(5)
	a.Publish(prompt) // registers blocks [1 2] and [3 4]; [5] is not full
	if n := c.BlocksCached(); n != 2 {
		t.Errorf("BlocksCached = %d, want 2", n)
	}
	b := c.NewSeq()
	if got := b.Reuse([]int32{1, 2, 3, 9}); got != 2 {
		t.Errorf("Reuse of a prompt sharing one block = %d tokens, want 2", got)
	}
	if b.K(0, 1)[0] != 11 {
		t.Errorf("reused block holds %v, want 11", b.K(0, 1)[0])
	}
	b.Release()
	a.Release()
	if n := c.BlocksInUse(); n != 0 {
		t.Errorf("BlocksInUse = %d after release, want 0 (cached blocks are idle)", n)
	}
	// Idle cached blocks are found again after everyone released them.
	d := c.NewSeq()
	if got := d.Reuse(prompt[:4]); got != 4 {
		t.Errorf("Reuse after release = %d, want 4", got)
	}
	d.Release()
	// Allocating the whole pool evicts the idle blocks, least recent first.
	e := c.NewSeq()
	if err := e.Reserve(8); err != nil {
		t.Fatalf("Reserve of the whole pool with idle cached blocks: %v", err)
	}
	if n := c.BlocksCached(); n != 0 {
		t.Errorf("BlocksCached = %d after eviction, want 0", n)
	}
	e.Release()
	f := c.NewSeq()
	if got := f.Reuse(prompt[:4]); got != 0 {
		t.Errorf("Reuse found %d tokens of evicted blocks", got)
	}
	if q, h := c.PrefixStats(); q != 4+4+4+4 || h != 2+4 {
		t.Errorf("PrefixStats = %d queried, %d hit; want 16, 6", q, h)
	}
}
