package gguf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/spigot-llm/spigot/quant"
)

func sampleKVs() []KV {
	return []KV{
		{"general.architecture", Val("llama")},
		{"u8", Val(uint8(200))},
		{"i8", Val(int8(-3))},
		{"u16", Val(uint16(65000))},
		{"i16", Val(int16(-30000))},
		{"u32", Val(uint32(1 << 31))},
		{"i32", Val(int32(-7))},
		{"f32", Val(float32(1.5))},
		{"bool", Val(true)},
		{"u64", Val(uint64(1 << 40))},
		{"i64", Val(int64(-1 << 40))},
		{"f64", Val(math.Pi)},
		{"strs", Val([]string{"a", "", "ü▁"})},
		{"f32s", Val([]float32{1, -2, 3.25})},
		{"i32s", Val([]int32{1, -2, 3})},
		{"u8s", Val([]uint8{1, 2, 3})},
		{"bools", Val([]bool{true, false})},
		{"i64s", Val([]int64{-1, 5})},
		{"nested", Val([]Value{Val([]string{"x"}), Val([]uint16{9})})},
	}
}

func sampleTensors() []WriteTensor {
	f32 := make([]byte, 4*6)
	for i := range 6 {
		binary.LittleEndian.PutUint32(f32[4*i:], math.Float32bits(float32(i)))
	}
	q8 := make([]byte, 34*2)
	for i := range q8 {
		q8[i] = byte(i)
	}
	return []WriteTensor{
		{Name: "a", Type: quant.F32, Dims: []uint64{3, 2}, Data: f32},
		{Name: "b", Type: quant.Q8_0, Dims: []uint64{32, 2}, WriteData: func(w io.Writer) error {
			_, err := w.Write(q8)
			return err
		}},
	}
}

func writeSample(t testing.TB, kvs []KV) []byte {
	t.Helper()
	var buf bytes.Buffer
	ts := sampleTensors()
	if err := Write(&buf, kvs, ts); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	for _, align := range []uint32{0, 32, 64} {
		kvs := sampleKVs()
		if align != 0 {
			kvs = append(kvs, KV{"general.alignment", Val(align)})
		}
		data := writeSample(t, kvs)
		f, err := Parse(data)
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		if f.Version != 3 {
			t.Errorf("Version = %d, want 3", f.Version)
		}
		if len(f.KVs) != len(kvs) {
			t.Fatalf("got %d KVs, want %d", len(f.KVs), len(kvs))
		}
		for i, kv := range kvs {
			got := f.KVs[i]
			if got.Key != kv.Key || got.Value.Type != kv.Value.Type || got.Value.Elem != kv.Value.Elem || !reflect.DeepEqual(got.Value.Any(), kv.Value.Any()) {
				t.Errorf("KV %d = %v %v, want %v %v", i, got.Key, got.Value.Any(), kv.Key, kv.Value.Any())
			}
		}
		if s, _ := f.String("general.architecture"); s != "llama" {
			t.Errorf("String = %q", s)
		}
		if n, ok := f.Uint("u32"); !ok || n != 1<<31 {
			t.Errorf("Uint(u32) = %d %v", n, ok)
		}
		if _, ok := f.Uint("i32"); ok {
			t.Errorf("Uint of a negative value should fail")
		}
		if a, ok := f.Int32s("u8s"); !ok || !reflect.DeepEqual(a, []int32{1, 2, 3}) {
			t.Errorf("Int32s(u8s) = %v %v", a, ok)
		}
		if x, ok := f.Float("f32"); !ok || x != 1.5 {
			t.Errorf("Float = %v", x)
		}
		a, ok := f.Tensor("a")
		if !ok || a.Elements() != 6 || a.Size != 24 || math.Float32frombits(binary.LittleEndian.Uint32(a.Data[20:])) != 5 {
			t.Fatalf("tensor a = %+v", a)
		}
		b, _ := f.Tensor("b")
		if b.Size != 68 || b.Data[67] != 67 || (f.DataOffset+b.Offset)%f.Alignment != 0 {
			t.Errorf("tensor b = %+v", b)
		}
	}
}

func TestOpenSharedModel(t *testing.T) {
	path := filepath.Join("..", "..", "shared", "models", "stories260K.gguf")
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if arch, _ := f.String("general.architecture"); arch != "llama" {
		t.Errorf("architecture = %q", arch)
	}
	if toks, ok := f.Strings("tokenizer.ggml.tokens"); !ok || len(toks) != 512 {
		t.Errorf("tokens: %d %v", len(toks), ok)
	}
	emb, ok := f.Tensor("token_embd.weight")
	if !ok || emb.Dims[0] != 64 || emb.Dims[1] != 512 {
		t.Fatalf("token_embd.weight = %+v", emb)
	}
	if uint64(len(emb.Data)) != emb.Size {
		t.Errorf("data length %d, size %d", len(emb.Data), emb.Size)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(filepath.Join(dir, "missing.gguf")); err == nil {
		t.Error("Open of a missing file succeeded")
	}
	empty := filepath.Join(dir, "empty.gguf")
	os.WriteFile(empty, nil, 0o644)
	if _, err := Open(empty); !errors.Is(err, ErrFormat) {
		t.Errorf("Open(empty) = %v, want ErrFormat", err)
	}
}

// corrupt builds a file by hand so that each hostile field can be set.
type corrupt struct {
	b bytes.Buffer
}

func (c *corrupt) u32(x uint32) *corrupt { binary.Write(&c.b, binary.LittleEndian, x); return c }
func (c *corrupt) u64(x uint64) *corrupt { binary.Write(&c.b, binary.LittleEndian, x); return c }
func (c *corrupt) pad() []byte           { c.b.Write(make([]byte, 64)); return c.b.Bytes() }
func (c *corrupt) str(s string) *corrupt { c.u64(uint64(len(s))); c.b.WriteString(s); return c }
func header(version uint32, nTensors, nKV uint64) *corrupt {
	c := &corrupt{}
	c.b.WriteString("GGUF")
	return c.u32(version).u64(nTensors).u64(nKV)
}

func TestHostile(t *testing.T) {
	valid := writeSample(t, sampleKVs())
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"bad magic", []byte("GGUX\x03\x00\x00\x00"), "bad magic"},
		{"short", []byte("GG"), "truncated"},
		{"version 1", header(1, 0, 0).b.Bytes(), "version 1"},
		{"big endian", header(3<<24, 0, 0).b.Bytes(), "byte-swapped"},
		{"version 9", header(9, 0, 0).b.Bytes(), "unsupported version"},
		{"huge kv count", header(3, 0, 1<<62).b.Bytes(), "metadata count"},
		{"huge tensor count", header(3, 1<<62, 0).b.Bytes(), "tensor count"},
		{"huge string", header(3, 0, 1).u64(1 << 60).pad(), "exceeds"},
		{"string past end", header(3, 0, 1).u64(100).pad(), "truncated"},
		{"unknown value type", header(3, 0, 1).str("k").u32(77).b.Bytes(), "unknown value type"},
		{"huge array", header(3, 0, 1).str("k").u32(uint32(TypeArray)).u32(uint32(TypeUint32)).u64(1 << 61).b.Bytes(), "cannot fit"},
		{"unknown array type", header(3, 0, 1).str("k").u32(uint32(TypeArray)).u32(99).u64(1).b.Bytes(), "unknown array element type"},
		{"bad bool", header(3, 0, 1).str("k").u32(uint32(TypeBool)).u32(7).b.Bytes(), "bool value"},
		{"duplicate key", header(3, 0, 2).str("k").u32(uint32(TypeUint32)).u32(1).str("k").u32(uint32(TypeUint32)).u32(1).b.Bytes(), "duplicate metadata key"},
		{"bad alignment", header(3, 0, 1).str("general.alignment").u32(uint32(TypeUint32)).u32(3).b.Bytes(), "power of two"},
		{"too many dims", header(3, 1, 0).str("t").u32(5).pad(), "dimensions"},
		{"overflowing dims", header(3, 1, 0).str("t").u32(3).u64(1 << 40).u64(1 << 40).u64(1 << 40).b.Bytes(), "overflows"},
		{"unknown tensor type", header(3, 1, 0).str("t").u32(1).u64(4).u32(99).u64(0).u64(0).u64(0).b.Bytes(), "unknown tensor type 99"},
		{"partial block", header(3, 1, 0).str("t").u32(1).u64(33).u32(uint32(quant.Q8_0)).u64(0).u64(0).u64(0).b.Bytes(), "whole number"},
		{"offset past end", header(3, 1, 0).str("t").u32(1).u64(4).u32(0).u64(1 << 50).u64(0).b.Bytes(), "past the end"},
		{"misaligned offset", header(3, 1, 0).str("t").u32(1).u64(1).u32(0).u64(4).u64(0).b.Bytes(), "alignment"},
		{"truncated data", valid[:len(valid)-40], "past the end"},
		{"truncated header", valid[:400], "truncated"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.data)
			if err == nil {
				t.Fatalf("Parse succeeded, want error containing %q", tc.want)
			}
			if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse = %v, want ErrFormat containing %q", err, tc.want)
			}
		})
	}
}

func TestWriteErrors(t *testing.T) {
	var buf bytes.Buffer
	err := Write(&buf, nil, []WriteTensor{{Name: "x", Type: quant.F32, Dims: []uint64{4}, Data: make([]byte, 3)}})
	if err == nil || !strings.Contains(err.Error(), "3 bytes") {
		t.Errorf("Write with short data = %v", err)
	}
	err = Write(&buf, nil, []WriteTensor{{Name: "x", Type: quant.Q4_0, Dims: []uint64{31}, Data: nil}})
	if err == nil {
		t.Errorf("Write with a partial block succeeded")
	}
}

func FuzzParse(f *testing.F) {
	f.Add(writeSample(f, sampleKVs()))
	f.Add(header(3, 0, 0).b.Bytes())
	f.Add(header(2, 1, 1).str("general.alignment").u32(uint32(TypeUint32)).u32(64).str("t").u32(1).u64(4).u32(0).u64(0).b.Bytes())
	if data, err := os.ReadFile(filepath.Join("..", "..", "shared", "models", "stories260K.gguf")); err == nil {
		f.Add(data[:8192])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error %v does not wrap ErrFormat", err)
			}
			return
		}
		for _, ts := range file.Tensors {
			if uint64(len(ts.Data)) != ts.Size {
				t.Fatalf("tensor %q: %d bytes of data, size %d", ts.Name, len(ts.Data), ts.Size)
			}
		}
		// What parses must write back and parse to the same metadata.
		var wts []WriteTensor
		for _, ts := range file.Tensors {
			if len(ts.Dims) == 0 {
				return
			}
			wts = append(wts, WriteTensor{Name: ts.Name, Type: ts.Type, Dims: ts.Dims, Data: ts.Data})
		}
		var buf bytes.Buffer
		if err := Write(&buf, file.KVs, wts); err != nil {
			return // e.g. zero-sized dims the writer refuses
		}
		again, err := Parse(buf.Bytes())
		if err != nil {
			t.Fatalf("re-parse of written file: %v", err)
		}
		if len(again.KVs) != len(file.KVs) || len(again.Tensors) != len(file.Tensors) {
			t.Fatalf("round trip changed counts")
		}
	})
}
