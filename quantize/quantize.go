// Package quantize rewrites a model file with its weight matrices in
// another element type, as llama.cpp's llama-quantize does (without an
// importance matrix): each weight matrix gets the type llama-quantize picks
// for it in the requested file type, including the K-quant mixes Q4_K_M
// and Q5_K_M; 1-D tensors (norms, biases) and the rope frequencies stay as
// they are; the metadata is copied with general.file_type and
// general.quantization_version set. The quantizers are package quant's,
// which write the same bytes as ggml's, so for the file types both support
// Spigot's output equals llama-quantize's tensor for tensor.
package quantize

import (
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/spigot-llm/spigot/gguf"
	"github.com/spigot-llm/spigot/quant"
)

// FileType is a llama_ftype, the value of general.file_type: the overall
// type of a model file, from which each tensor's type follows.
type FileType uint32

// The file types Write can produce, numbered as llama.h numbers them.
const (
	AllF32      FileType = 0
	MostlyF16   FileType = 1
	MostlyQ4_0  FileType = 2
	MostlyQ8_0  FileType = 7
	MostlyQ4_KS FileType = 14
	MostlyQ4_KM FileType = 15
	MostlyQ5_KS FileType = 16
	MostlyQ5_KM FileType = 17
	MostlyQ6_K  FileType = 18
	MostlyBF16  FileType = 32
)

var fileTypes = []struct {
	name string
	ft   FileType
	base quant.Type // the type most matrices get
}{
	{"F32", AllF32, quant.F32},
	{"F16", MostlyF16, quant.F16},
	{"BF16", MostlyBF16, quant.BF16},
	{"Q8_0", MostlyQ8_0, quant.Q8_0},
	{"Q4_0", MostlyQ4_0, quant.Q4_0},
	{"Q6_K", MostlyQ6_K, quant.Q6_K},
	{"Q5_K_M", MostlyQ5_KM, quant.Q5_K},
	{"Q5_K_S", MostlyQ5_KS, quant.Q5_K},
	{"Q4_K_M", MostlyQ4_KM, quant.Q4_K},
	{"Q4_K_S", MostlyQ4_KS, quant.Q4_K},
}

// aliases are llama-quantize's other names for file types.
var aliases = map[string]FileType{"Q4_K": MostlyQ4_KM, "Q5_K": MostlyQ5_KM}

// FileTypeNames lists the names [ParseFileType] accepts, aliases last.
func FileTypeNames() []string {
	var names []string
	for _, f := range fileTypes {
		names = append(names, f.name)
	}
	return append(names, "Q4_K", "Q5_K")
}

// ParseFileType returns the file type named s, case-insensitively, as
// llama-quantize names them: F32, F16, BF16, Q8_0, Q4_0, Q6_K, Q5_K_M,
// Q5_K_S, Q4_K_M, Q4_K_S, and Q4_K and Q5_K, which (as in llama-quantize)
// mean Q4_K_M and Q5_K_M.
func ParseFileType(s string) (FileType, error) {
	u := strings.ToUpper(s)
	if ft, ok := aliases[u]; ok {
		return ft, nil
	}
	for _, f := range fileTypes {
		if f.name == u {
			return f.ft, nil
		}
	}
	return 0, fmt.Errorf("quantize: unknown type %q (have %s)", s, strings.Join(FileTypeNames(), ", "))
}

// String returns llama-quantize's name for ft, such as "Q4_K_M".
func (ft FileType) String() string {
	for _, f := range fileTypes {
		if f.ft == ft {
			return f.name
		}
	}
	return "ftype(" + strconv.Itoa(int(ft)) + ")"
}

// Base returns the type most of ft's weight matrices get, or false if ft
// is not one Write supports.
func (ft FileType) Base() (quant.Type, bool) {
	for _, f := range fileTypes {
		if f.ft == ft {
			return f.base, true
		}
	}
	return 0, false
}

// Options says what to write.
type Options struct {
	// Type is the file type.
	Type FileType
	// Pure gives every weight matrix Type's base type, as llama-quantize's
	// --pure does: no Q6_K output layer, no more bits for attn_v and
	// ffn_down. (Unlike llama-quantize, which then fails on them, rows that
	// are not whole blocks still fall back; see [Plan].)
	Pure bool
}

// Plan returns the type Write gives each of f's tensors, in f.Tensors
// order. It follows llama.cpp's llama_tensor_get_type for the file types
// above:
//
//   - A tensor is quantized only if it has 2 or more dimensions and its
//     name ends in "weight" and is not a norm ("_norm.weight"), a
//     mixture-of-experts router (ffn_gate_inp.weight) or a position or
//     token-type embedding.
//   - F32, F16 and BF16 files, and Pure, give every such tensor the base
//     type. Otherwise, for the quantized file types:
//   - output.weight, and token_embd.weight when the file has no
//     output.weight (tied embeddings), get Q6_K (Q8_0 in a Q8_0 file, and
//     Q8_0 when their rows are not whole blocks of the base type);
//   - in Q4_K_M and Q5_K_M, attn_v.weight (and a fused attn_qkv.weight)
//     and ffn_down.weight get Q6_K in the layers that "use more bits": the
//     first and last eighth of the layers and every third layer in
//     between (layer i of n when i < n/8, i ≥ 7n/8 or (i − n/8) mod 3 = 2);
//   - in Q4_K_S, the first four attn_v and the first eighth of the
//     ffn_down get Q5_K;
//   - in a 70B Llama (80 layers with grouped-query attention) or Qwen2,
//     attn_v gets Q5_K instead of Q4_K.
//
// Rows that are not a whole number of the chosen type's blocks fall back
// as in llama.cpp: Q4_K to Q5_0, Q5_K to Q5_1 and Q6_K to Q8_0, and if the
// rows are not whole 32-element blocks either, to F16. (A model whose width
// is not a multiple of 256, such as stories260K with 64, therefore gets
// legacy types in a K-quant file.) For Q8_0 and Q4_0, where llama-quantize
// gives up, such a tensor keeps its type instead.
//
// Plan returns an error for file types Write does not support and, unless
// Pure, for the models llama.cpp has other rules for that Spigot does not
// reproduce: Falcon and mixture-of-experts models.
func Plan(f *gguf.File, opt Options) ([]quant.Type, error) {
	base, ok := opt.Type.Base()
	if !ok {
		return nil, fmt.Errorf("quantize: cannot write file type %v (supported: %s)", opt.Type, strings.Join(FileTypeNames(), ", "))
	}
	mixed := !opt.Pure && base.BlockSize() > 1
	arch, _ := f.String("general.architecture")
	if mixed {
		if arch == "falcon" {
			return nil, fmt.Errorf("quantize: %v of a Falcon model is not supported (llama-quantize has other rules for it); use Pure", opt.Type)
		}
		if n, _ := f.Uint(arch + ".expert_count"); n > 1 {
			return nil, fmt.Errorf("quantize: %v of a mixture-of-experts model is not supported (llama-quantize has other rules for it); use Pure", opt.Type)
		}
	}
	types := make([]quant.Type, len(f.Tensors))
	st := newMixState(f, arch)
	// llama.cpp visits tensors sorted by layer, then name, and counts
	// attn_v and ffn_down tensors as it goes.
	order := make([]int, len(f.Tensors))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		ta, tb := f.Tensors[a].Name, f.Tensors[b].Name
		if la, lb := layerOf(ta), layerOf(tb); la != lb {
			return la - lb
		}
		return strings.Compare(ta, tb)
	})
	for _, i := range order {
		t := f.Tensors[i]
		types[i] = t.Type
		if !quantizable(t) {
			continue
		}
		to := base
		if mixed {
			to = st.choose(t, opt.Type, base)
		}
		types[i] = fallback(t, to)
	}
	return types, nil
}

// quantizable is llama.cpp's tensor_allows_quantization, for the tensor
// names of the models Spigot knows.
func quantizable(t *gguf.Tensor) bool {
	n := t.Name
	if len(t.Dims) < 2 || !strings.HasSuffix(n, "weight") {
		return false
	}
	for _, s := range []string{"_norm.weight", "ffn_gate_inp.weight", "ssm_conv1d", "attn_rel_b.weight"} {
		if strings.Contains(n, s) {
			return false
		}
	}
	return n != "position_embd.weight" && n != "token_types.weight"
}

// layerOf is the N of a "blk.N." name, or -1.
func layerOf(name string) int {
	rest, ok := strings.CutPrefix(name, "blk.")
	if !ok {
		return -1
	}
	end := 0
	for end < len(rest) && '0' <= rest[end] && rest[end] <= '9' {
		end++
	}
	n, err := strconv.Atoi(rest[:end])
	if err != nil {
		return -1
	}
	return n
}

// mixState is what llama.cpp's quantize_state_impl keeps for choosing
// types: the attn_v and ffn_down counts and counters.
type mixState struct {
	tied           bool // no output.weight: token_embd is the output layer too
	nAttnV, iAttnV int
	nLayer, iFFN   int
	is70B          bool
}

func newMixState(f *gguf.File, arch string) *mixState {
	st := &mixState{tied: true}
	for _, t := range f.Tensors {
		switch {
		case t.Name == "output.weight":
			st.tied = false
		case isAttnV(t.Name):
			st.nAttnV++
		}
	}
	n, _ := f.Uint(arch + ".block_count")
	st.nLayer = int(min(n, math.MaxInt32))
	heads, _ := f.Uint(arch + ".attention.head_count")
	kvHeads, ok := f.Uint(arch + ".attention.head_count_kv")
	if !ok {
		kvHeads = heads
	}
	st.is70B = n == 80 && (arch == "llama" && heads != kvHeads || arch == "qwen2")
	return st
}

func isAttnV(name string) bool {
	return strings.Contains(name, "attn_v.weight") || strings.Contains(name, "attn_qkv.weight") || strings.Contains(name, "attn_kv_b.weight")
}

// useMoreBits is llama.cpp's use_more_bits: the layers that get a bigger
// type in the _M mixes.
func useMoreBits(i, n int) bool {
	return i < n/8 || i >= 7*n/8 || (i-n/8)%3 == 2
}

// choose is llama.cpp's llama_tensor_get_type_impl for the supported file
// types (Falcon and mixture-of-experts branches left out).
func (st *mixState) choose(t *gguf.Tensor, ft FileType, base quant.Type) quant.Type {
	name := t.Name
	switch {
	case name == "output.weight" || st.tied && name == "token_embd.weight":
		if t.Dims[0]%uint64(base.BlockSize()) != 0 {
			return quant.Q8_0
		}
		if base != quant.Q8_0 {
			return quant.Q6_K
		}
		return base
	case name == "token_embd.weight":
		return base
	case isAttnV(name):
		to := base
		switch {
		case (ft == MostlyQ4_KM || ft == MostlyQ5_KM) && useMoreBits(st.iAttnV, st.nAttnV):
			to = quant.Q6_K
		case ft == MostlyQ4_KS && st.iAttnV < 4:
			to = quant.Q5_K
		}
		if st.is70B && (to == quant.Q3_K || to == quant.Q4_K) {
			to = quant.Q5_K
		}
		st.iAttnV++
		return to
	case strings.Contains(name, "ffn_down"):
		to := base
		i, n := st.iFFN, st.nLayer
		switch {
		case (ft == MostlyQ4_KM || ft == MostlyQ5_KM) && useMoreBits(i, n):
			to = quant.Q6_K
		case ft == MostlyQ4_KS && i < n/8:
			to = quant.Q5_K
		}
		st.iFFN++
		return to
	}
	return base
}

// fallback is llama.cpp's tensor_type_fallback: the type a tensor gets
// when its rows are not a whole number of to's blocks.
func fallback(t *gguf.Tensor, to quant.Type) quant.Type {
	cols := t.Dims[0]
	if cols%uint64(to.BlockSize()) == 0 {
		return to
	}
	var next quant.Type
	switch to {
	case quant.Q4_K:
		next = quant.Q5_0
	case quant.Q5_K:
		next = quant.Q5_1
	case quant.Q6_K:
		next = quant.Q8_0
	default:
		return t.Type // llama-quantize refuses; keep the tensor as it is
	}
	if cols%uint64(next.BlockSize()) != 0 {
		return quant.F16
	}
	return next
}

// Write writes f to w with its tensors in the types [Plan] gives them.
// Tensors already of their type are copied; the others are dequantized and
// quantized row by row, several rows at a time in parallel, so that no
// more than a few rows per CPU are ever held as float32. A row holding a
// NaN or infinity, or values too large for the target type's
// half-precision scales, is an error naming the tensor and row (as
// llama-quantize's validation is), since the file would be corrupt.
func Write(w io.Writer, f *gguf.File, opt Options) error {
	types, err := Plan(f, opt)
	if err != nil {
		return err
	}
	var kvs []gguf.KV
	for _, kv := range f.KVs {
		switch kv.Key {
		case "general.file_type", "general.alignment", "general.quantization_version":
			continue
		}
		kvs = append(kvs, kv)
	}
	kvs = append(kvs,
		gguf.KV{Key: "general.quantization_version", Value: gguf.Val(uint32(2))}, // GGML_QNT_VERSION
		gguf.KV{Key: "general.file_type", Value: gguf.Val(uint32(opt.Type))})
	ts := make([]gguf.WriteTensor, 0, len(f.Tensors))
	for i, t := range f.Tensors {
		to := types[i]
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

// convertRows converts t to type to, in batches of rows that workers
// convert in parallel and that are then written in order.
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
		rows := 0
		if inRow > 0 {
			rows = len(t.Data) / inRow
		}
		workers := runtime.GOMAXPROCS(0)
		// Each worker takes a chunk of rows; a batch is one chunk per
		// worker. Chunks of about 64K elements keep the float32 scratch
		// and the output small and the goroutines few.
		chunk := max(1, (1<<16)/max(cols, 1))
		batch := make([]byte, workers*chunk*outRow)
		check := to.BlockSize() > 1 // F32, F16 and BF16 hold what they are given
		errs := make([]error, workers)
		for first := 0; first < rows; first += workers * chunk {
			n := min(rows-first, workers*chunk)
			var wg sync.WaitGroup
			for k := range workers {
				lo, hi := k*chunk, min(n, (k+1)*chunk)
				if lo >= hi {
					break
				}
				wg.Go(func() {
					errs[k] = convert(t, to, first+lo, first+hi, cols, inRow, outRow, batch[lo*outRow:hi*outRow], check)
				})
			}
			wg.Wait()
			for _, err := range errs {
				if err != nil {
					return err
				}
			}
			if _, err := w.Write(batch[:n*outRow]); err != nil {
				return err
			}
		}
		return nil
	}
}

// convert converts rows [lo, hi) of t into out.
func convert(t *gguf.Tensor, to quant.Type, lo, hi, cols, inRow, outRow int, out []byte, check bool) error {
	row := make([]float32, cols)
	back := make([]float32, cols)
	for r := lo; r < hi; r++ {
		if err := quant.Dequantize(t.Type, row, t.Data[r*inRow:(r+1)*inRow]); err != nil {
			return err
		}
		q := out[(r-lo)*outRow : (r-lo+1)*outRow]
		if err := quant.Quantize(to, q, row); err != nil {
			return err
		}
		if !check {
			continue
		}
		if c := nonFinite(row); c >= 0 {
			return fmt.Errorf("quantize: tensor %s row %d column %d is %v; %s cannot hold it", t.Name, r, c, row[c], to)
		}
		if err := quant.Dequantize(to, back, q); err != nil {
			return err
		}
		if c := nonFinite(back); c >= 0 {
			return fmt.Errorf("quantize: tensor %s row %d: values too large for %s (near column %d, %v)", t.Name, r, to, c, row[c])
		}
	}
	return nil
}

// nonFinite returns the index of the first NaN or infinity in x, or -1.
func nonFinite(x []float32) int {
	for i, v := range x {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return i
		}
	}
	return -1
}
