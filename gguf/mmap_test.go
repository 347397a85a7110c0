//go:build linux

package gguf

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// bigFile writes a GGUF file holding one 1 GiB F32 tensor. The data is a
// hole (the file is sparse), so making it is cheap.
func bigFile(tb testing.TB) string {
	tb.Helper()
	const n = 1 << 28 // floats: 1 GiB
	h := header(3, 1, 0).str("big").u32(1).u64(n).u32(0).u64(0)
	for h.b.Len()%DefaultAlignment != 0 {
		h.b.WriteByte(0)
	}
	path := filepath.Join(tb.TempDir(), "big.gguf")
	if err := os.WriteFile(path, h.b.Bytes(), 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.Truncate(path, int64(h.b.Len())+4*n); err != nil {
		tb.Fatal(err)
	}
	return path
}

func rssBytes(t testing.TB) int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(b))
	pages, _ := strconv.ParseInt(fields[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// TestOpenMapsLazily checks that opening a 1 GiB model costs almost no
// memory: the tensor is mapped, not read, and pages come in when touched.
func TestOpenMapsLazily(t *testing.T) {
	path := bigFile(t)
	before := rssBytes(t)
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	after := rssBytes(t)
	if grew := after - before; grew > 16<<20 {
		t.Errorf("RSS grew by %d MiB on Open of a 1 GiB file", grew>>20)
	}
	big, _ := f.Tensor("big")
	if len(big.Data) != 1<<30 {
		t.Fatalf("tensor data is %d bytes", len(big.Data))
	}
	// Touch 64 MiB: RSS grows by about that much, not by the whole file.
	sum := 0
	for i := 0; i < 64<<20; i += 4096 {
		sum += int(big.Data[i])
	}
	touched := rssBytes(t) - after
	if touched < 32<<20 || touched > 256<<20 || sum != 0 {
		t.Errorf("touching 64 MiB grew RSS by %d MiB", touched>>20)
	}
}

// BenchmarkOpen1GiB times opening (mapping and parsing) a 1 GiB model file.
func BenchmarkOpen1GiB(b *testing.B) {
	path := bigFile(b)
	for b.Loop() {
		f, err := Open(path)
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}
