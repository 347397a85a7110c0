package gguf

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"

	"github.com/spigot-llm/spigot/quant"
)

// WriteTensor is a tensor to write: its directory entry and where its bytes
// come from. Exactly one of Data and WriteData is set; WriteData lets large
// tensors be generated while writing instead of held in memory.
type WriteTensor struct {
	Name string
	Type quant.Type
	Dims []uint64
	Data []byte
	// WriteData writes exactly the tensor's size in bytes to w.
	WriteData func(w io.Writer) error
}

// Write writes a GGUF v3 file with the given metadata and tensors to w. The
// alignment is taken from a general.alignment entry in kvs, if any.
func Write(w io.Writer, kvs []KV, tensors []WriteTensor) error {
	align := uint64(DefaultAlignment)
	for _, kv := range kvs {
		if kv.Key == "general.alignment" {
			a, ok := kv.Value.Int()
			if !ok || a <= 0 || a&(a-1) != 0 {
				return fmt.Errorf("gguf: general.alignment %v is not a power of two", kv.Value)
			}
			align = uint64(a)
		}
	}
	bw := &countWriter{w: bufio.NewWriterSize(w, 1<<20)}
	bw.raw([]byte(Magic))
	bw.u32(3)
	bw.u64(uint64(len(tensors)))
	bw.u64(uint64(len(kvs)))
	for _, kv := range kvs {
		bw.str(kv.Key)
		bw.u32(uint32(kv.Value.Type))
		if err := bw.value(kv.Value); err != nil {
			return fmt.Errorf("gguf: writing %q: %w", kv.Key, err)
		}
	}
	sizes := make([]uint64, len(tensors))
	off := uint64(0)
	for i, t := range tensors {
		n := uint64(1)
		for _, d := range t.Dims {
			n *= d
		}
		if len(t.Dims) == 0 || len(t.Dims) > MaxTensorDims {
			return fmt.Errorf("gguf: tensor %q: %d dimensions", t.Name, len(t.Dims))
		}
		rowBytes, err := t.Type.RowSize(int(t.Dims[0]))
		if err != nil {
			return fmt.Errorf("gguf: tensor %q: %w", t.Name, err)
		}
		sizes[i] = uint64(rowBytes) * (n / t.Dims[0])
		if t.Data != nil && uint64(len(t.Data)) != sizes[i] {
			return fmt.Errorf("gguf: tensor %q: %d bytes of data, want %d", t.Name, len(t.Data), sizes[i])
		}
		bw.str(t.Name)
		bw.u32(uint32(len(t.Dims)))
		for _, d := range t.Dims {
			bw.u64(d)
		}
		bw.u32(uint32(t.Type))
		bw.u64(off)
		off = (off + sizes[i] + align - 1) / align * align
	}
	bw.pad(align)
	for i, t := range tensors {
		start := bw.n
		if t.WriteData != nil {
			if err := t.WriteData(bw); err != nil {
				return fmt.Errorf("gguf: tensor %q: %w", t.Name, err)
			}
		} else {
			bw.raw(t.Data)
		}
		if bw.err == nil && bw.n-start != sizes[i] {
			return fmt.Errorf("gguf: tensor %q: wrote %d bytes, want %d", t.Name, bw.n-start, sizes[i])
		}
		bw.pad(align)
	}
	if bw.err != nil {
		return fmt.Errorf("gguf: %w", bw.err)
	}
	return bw.w.(*bufio.Writer).Flush()
}

type countWriter struct {
	w   io.Writer
	n   uint64
	err error
}

func (c *countWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	c.n += uint64(n)
	c.err = err
	return n, err
}

func (c *countWriter) raw(b []byte) { c.Write(b) }
func (c *countWriter) u8(x uint8)   { c.Write([]byte{x}) }
func (c *countWriter) u16(x uint16) { c.Write(binary.LittleEndian.AppendUint16(nil, x)) }
func (c *countWriter) u32(x uint32) { c.Write(binary.LittleEndian.AppendUint32(nil, x)) }
func (c *countWriter) u64(x uint64) { c.Write(binary.LittleEndian.AppendUint64(nil, x)) }
func (c *countWriter) str(s string) { c.u64(uint64(len(s))); io.WriteString(c, s) }

func (c *countWriter) pad(align uint64) {
	if r := c.n % align; r != 0 {
		c.Write(make([]byte, align-r))
	}
}

func (c *countWriter) value(v Value) error {
	switch x := v.v.(type) {
	case uint8:
		c.u8(x)
	case int8:
		c.u8(uint8(x))
	case uint16:
		c.u16(x)
	case int16:
		c.u16(uint16(x))
	case uint32:
		c.u32(x)
	case int32:
		c.u32(uint32(x))
	case float32:
		c.u32(math.Float32bits(x))
	case bool:
		if x {
			c.u8(1)
		} else {
			c.u8(0)
		}
	case string:
		c.str(x)
	case uint64:
		c.u64(x)
	case int64:
		c.u64(uint64(x))
	case float64:
		c.u64(math.Float64bits(x))
	default:
		if v.Type != TypeArray {
			return fmt.Errorf("value of Go type %T", x)
		}
		c.u32(uint32(v.Elem))
		c.u64(uint64(v.Len()))
		return c.array(x)
	}
	return nil
}

func (c *countWriter) array(a any) error {
	switch a := a.(type) {
	case []Value:
		for _, e := range a {
			c.u32(uint32(e.Elem))
			c.u64(uint64(e.Len()))
			if err := c.array(e.v); err != nil {
				return err
			}
		}
	case []string:
		for _, s := range a {
			c.str(s)
		}
	case []uint8:
		c.raw(a)
	case []int8:
		for _, x := range a {
			c.u8(uint8(x))
		}
	case []bool:
		for _, x := range a {
			c.value(Val(x))
		}
	default:
		// Fixed-size little-endian numbers.
		buf, err := binary.Append(nil, binary.LittleEndian, a)
		if err != nil {
			return err
		}
		c.raw(buf)
	}
	return nil
}
