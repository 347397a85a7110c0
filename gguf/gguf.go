// Package gguf reads and writes GGUF model files (versions 2 and 3): their
// metadata, tensor directory and tensor data. Files are memory-mapped, so
// tensor data stays in its stored form and is paged in only when touched.
//
// The reader treats every file as hostile: counts, lengths, dimensions and
// offsets are checked against the file size before anything is allocated,
// and a bad file is an error wrapping [ErrFormat], never a panic.
//
// The package knows nothing of model semantics; see package model for that.
package gguf

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"os"

	"github.com/spigot-llm/spigot/quant"
)

// Magic is the first four bytes of every GGUF file.
const Magic = "GGUF"

// DefaultAlignment is the data alignment when general.alignment is absent.
const DefaultAlignment = 32

// Limits that bound what a file can make the reader allocate or do.
const (
	MaxStringLength = 64 << 20 // chat templates are the longest strings seen, a few KB
	MaxTensorDims   = 4        // GGML_MAX_DIMS
	MaxArrayDepth   = 4        // arrays of arrays nest at most this deep
	MaxNameLength   = 64 << 10 // tensor names are short; GGML itself caps them at 64 bytes
)

// ErrFormat is wrapped by every error about a malformed file.
var ErrFormat = errors.New("malformed GGUF file")

// Tensor describes one tensor in the file.
type Tensor struct {
	Name string
	Type quant.Type
	// Dims are GGML's ne[]: Dims[0] is the length of a row (the fastest
	// varying dimension).
	Dims []uint64
	// Offset is where the data starts, relative to the data section.
	Offset uint64
	// Size is the number of bytes of data.
	Size uint64
	// Data is the tensor's bytes in the file (a view of the mapping when the
	// file was opened with [Open]). Valid until the File is closed.
	Data []byte
}

// Elements is the number of elements (the product of Dims).
func (t *Tensor) Elements() uint64 {
	n := uint64(1)
	for _, d := range t.Dims {
		n *= d
	}
	return n
}

// File is a parsed GGUF file.
type File struct {
	Version   uint32
	Alignment uint64
	// KVs holds the metadata in file order.
	KVs []KV
	// Tensors holds the tensor directory in file order.
	Tensors []*Tensor
	// DataOffset is where the tensor data section starts in the file.
	DataOffset uint64

	kv      map[string]int
	tensors map[string]int
	data    []byte
	unmap   func() error
}

// Open memory-maps the file at path and parses it. Close releases the
// mapping; tensor Data must not be used after that.
func Open(path string) (*File, error) {
	fd, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	defer fd.Close()
	st, err := fd.Stat()
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	if st.Size() == 0 {
		return nil, fmt.Errorf("gguf: %s: empty file: %w", path, ErrFormat)
	}
	data, unmap, err := mapFile(fd, st.Size())
	if err != nil {
		return nil, fmt.Errorf("gguf: mapping %s: %w", path, err)
	}
	f, err := Parse(data)
	if err != nil {
		unmap()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f.unmap = unmap
	return f, nil
}

// Close releases the file's memory mapping.
func (f *File) Close() error {
	if f.unmap == nil {
		return nil
	}
	err := f.unmap()
	f.unmap = nil
	f.data = nil
	for _, t := range f.Tensors {
		t.Data = nil
	}
	return err
}

// Parse parses a whole GGUF file held in memory. Tensor Data slices point
// into data.
func Parse(data []byte) (*File, error) {
	r := &reader{buf: data}
	f, err := r.file()
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	f.data = data
	return f, nil
}

type reader struct {
	buf []byte
	off uint64
}

func (r *reader) errorf(format string, args ...any) error {
	return fmt.Errorf("at byte %d: %s: %w", r.off, fmt.Sprintf(format, args...), ErrFormat)
}

func (r *reader) remaining() uint64 { return uint64(len(r.buf)) - r.off }

func (r *reader) bytes(n uint64, what string) ([]byte, error) {
	if n > r.remaining() {
		return nil, r.errorf("%s: need %d bytes, file has %d left (truncated?)", what, n, r.remaining())
	}
	b := r.buf[r.off : r.off+n]
	r.off += n
	return b, nil
}

func (r *reader) u8(what string) (uint8, error) {
	b, err := r.bytes(1, what)
	if err != nil {
		return 0, err
	}
	return b[0], nil
}

func (r *reader) u16(what string) (uint16, error) {
	b, err := r.bytes(2, what)
	if err != nil {
		return 0, err
	}
	return uint16(b[0]) | uint16(b[1])<<8, nil
}

func (r *reader) u32(what string) (uint32, error) {
	b, err := r.bytes(4, what)
	if err != nil {
		return 0, err
	}
	return le32(b), nil
}

func (r *reader) u64(what string) (uint64, error) {
	b, err := r.bytes(8, what)
	if err != nil {
		return 0, err
	}
	return le64(b), nil
}

func le32(b []byte) uint32 {
	_ = b[3]
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

func le64(b []byte) uint64 {
	_ = b[7]
	return uint64(le32(b)) | uint64(le32(b[4:]))<<32
}

func (r *reader) str(what string) (string, error) {
	n, err := r.u64(what + " length")
	if err != nil {
		return "", err
	}
	if n > MaxStringLength {
		return "", r.errorf("%s: length %d exceeds the %d-byte limit", what, n, MaxStringLength)
	}
	b, err := r.bytes(n, what)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

func (r *reader) file() (*File, error) {
	magic, err := r.bytes(4, "magic")
	if err != nil {
		return nil, err
	}
	if string(magic) != Magic {
		return nil, r.errorf("bad magic %q, want %q (not a GGUF file)", magic, Magic)
	}
	f := &File{Alignment: DefaultAlignment, kv: map[string]int{}, tensors: map[string]int{}}
	if f.Version, err = r.u32("version"); err != nil {
		return nil, err
	}
	switch {
	case f.Version == 1:
		return nil, r.errorf("version 1 is not supported (convert the file with a newer tool)")
	case f.Version > 3 && bits.ReverseBytes32(f.Version) <= 3:
		return nil, r.errorf("version %d looks byte-swapped: big-endian files are not supported", f.Version)
	case f.Version != 2 && f.Version != 3:
		return nil, r.errorf("unsupported version %d (want 2 or 3)", f.Version)
	}
	nTensors, err := r.u64("tensor count")
	if err != nil {
		return nil, err
	}
	nKV, err := r.u64("metadata count")
	if err != nil {
		return nil, err
	}
	// Each KV takes at least 8+4+1 bytes and each tensor info at least
	// 8+4+4+8 bytes, so larger counts cannot be honest.
	if nKV > r.remaining()/13 {
		return nil, r.errorf("metadata count %d is impossible for a file of %d bytes", nKV, len(r.buf))
	}
	if nTensors > r.remaining()/24 {
		return nil, r.errorf("tensor count %d is impossible for a file of %d bytes", nTensors, len(r.buf))
	}
	f.KVs = make([]KV, 0, nKV)
	for i := uint64(0); i < nKV; i++ {
		key, err := r.str(fmt.Sprintf("metadata key %d", i))
		if err != nil {
			return nil, err
		}
		if _, dup := f.kv[key]; dup {
			return nil, r.errorf("duplicate metadata key %q", key)
		}
		t, err := r.u32(fmt.Sprintf("type of %q", key))
		if err != nil {
			return nil, err
		}
		v, err := r.value(ValueType(t), key, 0)
		if err != nil {
			return nil, err
		}
		f.kv[key] = len(f.KVs)
		f.KVs = append(f.KVs, KV{Key: key, Value: v})
	}
	if v, ok := f.Lookup("general.alignment"); ok {
		a, isInt := v.Int()
		if !isInt || a <= 0 || a&(a-1) != 0 || a > 1<<30 {
			return nil, r.errorf("general.alignment %v is not a power of two", v)
		}
		f.Alignment = uint64(a)
	}
	f.Tensors = make([]*Tensor, 0, nTensors)
	for i := uint64(0); i < nTensors; i++ {
		t, err := r.tensorInfo(i)
		if err != nil {
			return nil, err
		}
		if _, dup := f.tensors[t.Name]; dup {
			return nil, r.errorf("duplicate tensor name %q", t.Name)
		}
		f.tensors[t.Name] = len(f.Tensors)
		f.Tensors = append(f.Tensors, t)
	}
	// The data section starts at the next multiple of the alignment.
	start := (r.off + f.Alignment - 1) / f.Alignment * f.Alignment
	if len(f.Tensors) > 0 && start > uint64(len(r.buf)) {
		return nil, r.errorf("data section at %d is past the end of the file (%d bytes)", start, len(r.buf))
	}
	f.DataOffset = start
	dataLen := uint64(0)
	if start < uint64(len(r.buf)) {
		dataLen = uint64(len(r.buf)) - start
	}
	for _, t := range f.Tensors {
		if t.Offset%f.Alignment != 0 {
			return nil, fmt.Errorf("tensor %q: offset %d is not a multiple of the alignment %d: %w", t.Name, t.Offset, f.Alignment, ErrFormat)
		}
		end, carry := bits.Add64(t.Offset, t.Size, 0)
		if carry != 0 || end > dataLen {
			return nil, fmt.Errorf("tensor %q: data [%d, %d+%d) runs past the end of the data section (%d bytes; truncated file?): %w",
				t.Name, t.Offset, t.Offset, t.Size, dataLen, ErrFormat)
		}
		t.Data = r.buf[start+t.Offset : start+end : start+end]
	}
	return f, nil
}

func (r *reader) tensorInfo(i uint64) (*Tensor, error) {
	name, err := r.str(fmt.Sprintf("tensor %d name", i))
	if err != nil {
		return nil, err
	}
	if len(name) > MaxNameLength {
		return nil, r.errorf("tensor %d: name of %d bytes is too long", i, len(name))
	}
	nDims, err := r.u32(fmt.Sprintf("tensor %q dimension count", name))
	if err != nil {
		return nil, err
	}
	if nDims > MaxTensorDims {
		return nil, r.errorf("tensor %q: %d dimensions (at most %d)", name, nDims, MaxTensorDims)
	}
	t := &Tensor{Name: name, Dims: make([]uint64, nDims)}
	n := uint64(1)
	for j := range t.Dims {
		d, err := r.u64(fmt.Sprintf("tensor %q dimension %d", name, j))
		if err != nil {
			return nil, err
		}
		if d > math.MaxInt64 {
			return nil, r.errorf("tensor %q: dimension %d is %d", name, j, d)
		}
		hi, lo := bits.Mul64(n, d)
		if hi != 0 || lo > math.MaxInt64 {
			return nil, r.errorf("tensor %q: element count overflows (dims %v…)", name, t.Dims[:j+1])
		}
		t.Dims[j] = d
		n = lo
	}
	typ, err := r.u32(fmt.Sprintf("tensor %q type", name))
	if err != nil {
		return nil, err
	}
	t.Type = quant.Type(typ)
	if !t.Type.Known() {
		return nil, r.errorf("tensor %q: unknown tensor type %d", name, typ)
	}
	bs := uint64(t.Type.BlockSize())
	if nDims > 0 && t.Dims[0]%bs != 0 {
		return nil, r.errorf("tensor %q: row of %d elements is not a whole number of %s blocks (%d)", name, t.Dims[0], t.Type, bs)
	}
	hi, size := bits.Mul64(n/bs, uint64(t.Type.TypeSize()))
	if hi != 0 {
		return nil, r.errorf("tensor %q: size overflows", name)
	}
	t.Size = size
	if t.Offset, err = r.u64(fmt.Sprintf("tensor %q offset", name)); err != nil {
		return nil, err
	}
	return t, nil
}

func (r *reader) value(t ValueType, key string, depth int) (Value, error) {
	switch t {
	case TypeUint8:
		x, err := r.u8(key)
		return Value{Type: t, v: x}, err
	case TypeInt8:
		x, err := r.u8(key)
		return Value{Type: t, v: int8(x)}, err
	case TypeUint16:
		x, err := r.u16(key)
		return Value{Type: t, v: x}, err
	case TypeInt16:
		x, err := r.u16(key)
		return Value{Type: t, v: int16(x)}, err
	case TypeUint32:
		x, err := r.u32(key)
		return Value{Type: t, v: x}, err
	case TypeInt32:
		x, err := r.u32(key)
		return Value{Type: t, v: int32(x)}, err
	case TypeFloat32:
		x, err := r.u32(key)
		return Value{Type: t, v: math.Float32frombits(x)}, err
	case TypeBool:
		x, err := r.u8(key)
		if err == nil && x > 1 {
			return Value{}, r.errorf("%s: bool value %d", key, x)
		}
		return Value{Type: t, v: x == 1}, err
	case TypeString:
		s, err := r.str(key)
		return Value{Type: t, v: s}, err
	case TypeUint64:
		x, err := r.u64(key)
		return Value{Type: t, v: x}, err
	case TypeInt64:
		x, err := r.u64(key)
		return Value{Type: t, v: int64(x)}, err
	case TypeFloat64:
		x, err := r.u64(key)
		return Value{Type: t, v: math.Float64frombits(x)}, err
	case TypeArray:
		return r.array(key, depth)
	}
	return Value{}, r.errorf("%s: unknown value type %d", key, uint32(t))
}

func (r *reader) array(key string, depth int) (Value, error) {
	if depth >= MaxArrayDepth {
		return Value{}, r.errorf("%s: arrays nested deeper than %d", key, MaxArrayDepth)
	}
	et, err := r.u32(key + " element type")
	if err != nil {
		return Value{}, err
	}
	elem := ValueType(et)
	n, err := r.u64(key + " element count")
	if err != nil {
		return Value{}, err
	}
	// The smallest encoding of one element bounds the count by what is left.
	minSize := uint64(elem.size())
	switch elem {
	case TypeString, TypeArray:
		minSize = 8 // a length or a type+count
	case TypeUint8, TypeInt8, TypeBool, TypeUint16, TypeInt16, TypeUint32, TypeInt32, TypeFloat32, TypeUint64, TypeInt64, TypeFloat64:
	default:
		return Value{}, r.errorf("%s: unknown array element type %d", key, et)
	}
	if n > r.remaining()/minSize {
		return Value{}, r.errorf("%s: array of %d %s elements cannot fit in the %d bytes left (truncated?)", key, n, elem, r.remaining())
	}
	v := Value{Type: TypeArray, Elem: elem}
	if s := elem.size(); s > 0 {
		raw, _ := r.bytes(n*uint64(s), key)
		v.v = decodeScalars(elem, raw, int(n))
		return v, nil
	}
	if elem == TypeString {
		a := make([]string, n)
		for i := range a {
			if a[i], err = r.str(key); err != nil {
				return Value{}, err
			}
		}
		v.v = a
		return v, nil
	}
	a := make([]Value, n)
	for i := range a {
		if a[i], err = r.value(TypeArray, key, depth+1); err != nil {
			return Value{}, err
		}
	}
	v.v = a
	return v, nil
}

func decodeScalars(t ValueType, b []byte, n int) any {
	switch t {
	case TypeUint8:
		return append([]uint8(nil), b...)
	case TypeInt8:
		a := make([]int8, n)
		for i := range a {
			a[i] = int8(b[i])
		}
		return a
	case TypeBool:
		a := make([]bool, n)
		for i := range a {
			a[i] = b[i] != 0
		}
		return a
	case TypeUint16:
		a := make([]uint16, n)
		for i := range a {
			a[i] = uint16(b[2*i]) | uint16(b[2*i+1])<<8
		}
		return a
	case TypeInt16:
		a := make([]int16, n)
		for i := range a {
			a[i] = int16(uint16(b[2*i]) | uint16(b[2*i+1])<<8)
		}
		return a
	case TypeUint32:
		a := make([]uint32, n)
		for i := range a {
			a[i] = le32(b[4*i:])
		}
		return a
	case TypeInt32:
		a := make([]int32, n)
		for i := range a {
			a[i] = int32(le32(b[4*i:]))
		}
		return a
	case TypeFloat32:
		a := make([]float32, n)
		for i := range a {
			a[i] = math.Float32frombits(le32(b[4*i:]))
		}
		return a
	case TypeUint64:
		a := make([]uint64, n)
		for i := range a {
			a[i] = le64(b[8*i:])
		}
		return a
	case TypeInt64:
		a := make([]int64, n)
		for i := range a {
			a[i] = int64(le64(b[8*i:]))
		}
		return a
	case TypeFloat64:
		a := make([]float64, n)
		for i := range a {
			a[i] = math.Float64frombits(le64(b[8*i:]))
		}
		return a
	}
	panic("unreachable")
}

// Lookup returns the metadata value stored under key.
func (f *File) Lookup(key string) (Value, bool) {
	i, ok := f.kv[key]
	if !ok {
		return Value{}, false
	}
	return f.KVs[i].Value, true
}

// String returns the string stored under key.
func (f *File) String(key string) (string, bool) {
	v, _ := f.Lookup(key)
	s, ok := v.v.(string)
	return s, ok
}

// Int returns an integer stored under key, of any integer type.
func (f *File) Int(key string) (int64, bool) {
	v, _ := f.Lookup(key)
	return v.Int()
}

// Uint returns a non-negative integer stored under key, of any integer type.
func (f *File) Uint(key string) (uint64, bool) {
	v, _ := f.Lookup(key)
	if x, ok := v.v.(uint64); ok {
		return x, true
	}
	i, ok := v.Int()
	if !ok || i < 0 {
		return 0, false
	}
	return uint64(i), true
}

// Float returns a number stored under key, of any numeric type.
func (f *File) Float(key string) (float64, bool) {
	v, _ := f.Lookup(key)
	return v.Float()
}

// Bool returns the bool stored under key.
func (f *File) Bool(key string) (bool, bool) {
	v, _ := f.Lookup(key)
	b, ok := v.v.(bool)
	return b, ok
}

// Strings returns the string array stored under key.
func (f *File) Strings(key string) ([]string, bool) {
	v, _ := f.Lookup(key)
	a, ok := v.v.([]string)
	return a, ok
}

// Float32s returns the float32 array stored under key.
func (f *File) Float32s(key string) ([]float32, bool) {
	v, _ := f.Lookup(key)
	a, ok := v.v.([]float32)
	return a, ok
}

// Int32s returns an integer array stored under key as []int32, whatever its
// element type, if every element fits.
func (f *File) Int32s(key string) ([]int32, bool) {
	v, _ := f.Lookup(key)
	if a, ok := v.v.([]int32); ok {
		return a, true
	}
	wide, ok := v.ints()
	if !ok {
		return nil, false
	}
	a := make([]int32, len(wide))
	for i, x := range wide {
		if x < math.MinInt32 || x > math.MaxInt32 {
			return nil, false
		}
		a[i] = int32(x)
	}
	return a, true
}

// Tensor returns the tensor called name.
func (f *File) Tensor(name string) (*Tensor, bool) {
	i, ok := f.tensors[name]
	if !ok {
		return nil, false
	}
	return f.Tensors[i], true
}

// New assembles a File from metadata and tensors that are already in
// memory, as loaders of other formats do. Tensor Size is set from the type
// and dims and must match len(Data). close, if not nil, is called by Close.
func New(kvs []KV, tensors []*Tensor, close func() error) (*File, error) {
	f := &File{Version: 3, Alignment: DefaultAlignment, KVs: kvs, Tensors: tensors, kv: map[string]int{}, tensors: map[string]int{}, unmap: close}
	for i, kv := range kvs {
		if _, dup := f.kv[kv.Key]; dup {
			return nil, fmt.Errorf("gguf: duplicate metadata key %q", kv.Key)
		}
		f.kv[kv.Key] = i
	}
	for i, t := range tensors {
		if _, dup := f.tensors[t.Name]; dup {
			return nil, fmt.Errorf("gguf: duplicate tensor name %q", t.Name)
		}
		f.tensors[t.Name] = i
		if len(t.Dims) == 0 {
			return nil, fmt.Errorf("gguf: tensor %q has no dimensions", t.Name)
		}
		row, err := t.Type.RowSize(int(t.Dims[0]))
		if err != nil {
			return nil, fmt.Errorf("gguf: tensor %q: %w", t.Name, err)
		}
		t.Size = uint64(row) * (t.Elements() / t.Dims[0])
		if uint64(len(t.Data)) != t.Size {
			return nil, fmt.Errorf("gguf: tensor %q: %d bytes of data, want %d", t.Name, len(t.Data), t.Size)
		}
	}
	return f, nil
}
