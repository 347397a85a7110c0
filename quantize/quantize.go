// Package quantize rewrites a model file with its weight matrices in
// another element type, as llama.cpp's llama-quantize does: 2-D weights are
// converted row by row, 1-D tensors (norms, biases) and the rope
// frequencies stay in float32, and the metadata is copied with
// general.file_type updated.
package quantize

import (
	"fmt"
	"io"
	"strings"

	"github.com/spigot-llm/spigot/gguf"
	"github.com/spigot-llm/spigot/quant"
)

// Types are the target types Write can produce.
var Types = []quant.Type{quant.F32, quant.F16, quant.BF16, quant.Q8_0, quant.Q4_0}

// fileType is general.file_type (llama_ftype) for each target type.
var fileType = map[quant.Type]uint32{quant.F32: 0, quant.F16: 1, quant.Q4_0: 2, quant.Q8_0: 7, quant.BF16: 32}

// Write writes f to w with its weight matrices converted to typ. A matrix
// whose rows are not a whole number of typ's blocks keeps its type, as in
// llama.cpp.
func Write(w io.Writer, f *gguf.File, typ quant.Type) error {
	ft, ok := fileType[typ]
	if !ok {
		return fmt.Errorf("quantize: cannot write %s (supported: F32, F16, BF16, Q8_0, Q4_0)", typ)
	}
	var kvs []gguf.KV
	for _, kv := range f.KVs {
		if kv.Key == "general.file_type" || kv.Key == "general.alignment" {
			continue
		}
		kvs = append(kvs, kv)
	}
	kvs = append(kvs, gguf.KV{Key: "general.file_type", Value: gguf.Val(ft)})
	ts := make([]gguf.WriteTensor, 0, len(f.Tensors))
	for _, t := range f.Tensors {
		to := target(t, typ)
		if to == t.Type {
			ts = append(ts, gguf.WriteTensor{Name: t.Name, Type: t.Type, Dims: t.Dims, Data: t.Data})
			continue
		}
		if !quant.CanDequantize(t.Type) {
			return fmt.Errorf("quantize: tensor %s: cannot read %s", t.Name, t.Type)
		}
		ts = append(ts, gguf.WriteTensor{Name: t.Name, Type: to, Dims: t.Dims, WriteData: convertRows(t, to)})
	}
	return gguf.Write(w, kvs, ts)
}

// target is the type tensor t gets.
func target(t *gguf.Tensor, typ quant.Type) quant.Type {
	if len(t.Dims) < 2 || strings.HasPrefix(t.Name, "rope_") {
		return t.Type
	}
	if t.Dims[0]%uint64(typ.BlockSize()) != 0 {
		return t.Type
	}
	return typ
}

// convertRows converts t row by row, so no more than a row is ever held
// as float32.
func convertRows(t *gguf.Tensor, to quant.Type) func(io.Writer) error {
	return func(w io.Writer) error {
		cols := int(t.Dims[0])
		inRow, err := t.Type.RowSize(cols)
		if err != nil {
			return err
		}
		outRow, err := to.RowSize(cols)
		if err != nil {
			return err
		}
		row := make([]float32, cols)
		buf := make([]byte, outRow)
		for off := 0; off+inRow <= len(t.Data); off += inRow {
			if err := quant.Dequantize(t.Type, row, t.Data[off:off+inRow]); err != nil {
				return err
			}
			if err := quant.Quantize(to, buf, row); err != nil {
				return err
			}
			if _, err := w.Write(buf); err != nil {
				return err
			}
		}
		return nil
	}
}
