package engine

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
)

// GGUF is what InspectGGUF reads from a model file without loading it: the
// metadata and the tensor table. Pure Go, no native library needed.
type GGUF struct {
	Path       string
	Version    uint32
	FileSize   int64
	Alignment  uint64
	DataOffset int64 // where the tensor data section starts
	Metadata   map[string]any
	Tensors    []TensorInfo
}

// GGUFArray is an array metadata value. Numeric arrays of up to
// maxKeptArray elements keep their values (as float64); longer arrays and
// string arrays (the tokenizer's vocabulary) keep only their length.
type GGUFArray struct {
	ElemType uint32
	Len      uint64
	Numbers  []float64
}

// TensorInfo is one entry of the tensor table.
type TensorInfo struct {
	Name   string
	Type   uint32 // enum ggml_type
	Dims   []uint64
	Offset uint64 // relative to GGUF.DataOffset
	Size   uint64 // bytes, from Dims and Type
}

// Elements is the product of the dimensions.
func (t TensorInfo) Elements() uint64 {
	n := uint64(1)
	for _, d := range t.Dims {
		n *= d
	}
	return n
}

const (
	ggufMaxTensors = 1 << 20
	ggufMaxKV      = 1 << 20
	ggufMaxDims    = 4 // GGML_MAX_DIMS
	ggufMaxKey     = 1 << 16
	maxKeptArray   = 1 << 16
)

// gguf value types (gguf.h)
const (
	ggufUint8   = 0
	ggufInt8    = 1
	ggufUint16  = 2
	ggufInt16   = 3
	ggufUint32  = 4
	ggufInt32   = 5
	ggufFloat32 = 6
	ggufBool    = 7
	ggufString  = 8
	ggufArray   = 9
	ggufUint64  = 10
	ggufInt64   = 11
	ggufFloat64 = 12
)

var ggufScalarSize = map[uint32]int{
	ggufUint8: 1, ggufInt8: 1, ggufUint16: 2, ggufInt16: 2, ggufUint32: 4, ggufInt32: 4,
	ggufFloat32: 4, ggufBool: 1, ggufUint64: 8, ggufInt64: 8, ggufFloat64: 8,
}

// ggmlTypeInfo is a ggml type's block size (elements) and bytes per block,
// as ggml_blck_size / ggml_type_size report them for this tree (checked by
// TestGGMLTypeTable against the loaded library).
type ggmlTypeInfo struct {
	name  string
	block uint64
	size  uint64
}

var ggmlTypes = map[uint32]ggmlTypeInfo{
	0: {"f32", 1, 4}, 1: {"f16", 1, 2}, 2: {"q4_0", 32, 18}, 3: {"q4_1", 32, 20},
	6: {"q5_0", 32, 22}, 7: {"q5_1", 32, 24}, 8: {"q8_0", 32, 34}, 9: {"q8_1", 32, 36},
	10: {"q2_K", 256, 84}, 11: {"q3_K", 256, 110}, 12: {"q4_K", 256, 144}, 13: {"q5_K", 256, 176},
	14: {"q6_K", 256, 210}, 15: {"q8_K", 256, 292}, 16: {"iq2_xxs", 256, 66}, 17: {"iq2_xs", 256, 74},
	18: {"iq3_xxs", 256, 98}, 19: {"iq1_s", 256, 50}, 20: {"iq4_nl", 32, 18}, 21: {"iq3_s", 256, 110},
	22: {"iq2_s", 256, 82}, 23: {"iq4_xs", 256, 136}, 24: {"i8", 1, 1}, 25: {"i16", 1, 2},
	26: {"i32", 1, 4}, 27: {"i64", 1, 8}, 28: {"f64", 1, 8}, 29: {"iq1_m", 256, 56},
	30: {"bf16", 1, 2}, 34: {"tq1_0", 256, 54}, 35: {"tq2_0", 256, 66}, 39: {"mxfp4", 32, 17},
	40: {"nvfp4", 64, 36}, 41: {"q1_0", 128, 18}, 42: {"q2_0", 64, 18},
}

// GGMLTypeName is ggml's name of a tensor type ("q8_0"), or "type(N)".
func GGMLTypeName(t uint32) string {
	if ti, ok := ggmlTypes[t]; ok {
		return ti.name
	}
	return fmt.Sprintf("type(%d)", t)
}

// CheckGGUF reads the header, metadata and tensor table of a GGUF file and
// checks that every tensor's data lies inside the file. It catches a missing
// file, a non-GGUF file and a truncated download before llama.cpp sees them.
func CheckGGUF(path string) error {
	_, err := InspectGGUF(path)
	return err
}

// ggufReader reads little-endian values and knows how much file is left.
type ggufReader struct {
	r    *bufio.Reader
	pos  int64
	size int64
	path string
	buf  [8]byte
}

var errTruncated = errors.New("truncated")

func (g *ggufReader) read(n int) ([]byte, error) {
	if _, err := io.ReadFull(g.r, g.buf[:n]); err != nil {
		return nil, errTruncated
	}
	g.pos += int64(n)
	return g.buf[:n], nil
}

func (g *ggufReader) u32() (uint32, error) {
	b, err := g.read(4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (g *ggufReader) u64() (uint64, error) {
	b, err := g.read(8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

func (g *ggufReader) skip(n uint64) error {
	if n > uint64(g.size-g.pos) {
		return errTruncated
	}
	for n > 0 {
		step := n
		if step > 1<<30 {
			step = 1 << 30
		}
		d, err := g.r.Discard(int(step))
		g.pos += int64(d)
		if err != nil {
			return errTruncated
		}
		n -= step
	}
	return nil
}

// str reads a GGUF string; when keep is false it only skips it.
func (g *ggufReader) str(keep bool, max uint64) (string, error) {
	n, err := g.u64()
	if err != nil {
		return "", err
	}
	if n > uint64(g.size-g.pos) {
		return "", errTruncated
	}
	if !keep {
		return "", g.skip(n)
	}
	if n > max {
		return "", fmt.Errorf("string of %d bytes at offset %d is implausibly long", n, g.pos-8)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(g.r, b); err != nil {
		return "", errTruncated
	}
	g.pos += int64(n)
	return string(b), nil
}

func (g *ggufReader) scalar(typ uint32) (any, error) {
	sz, ok := ggufScalarSize[typ]
	if !ok {
		return nil, fmt.Errorf("unknown metadata value type %d at offset %d", typ, g.pos)
	}
	b, err := g.read(sz)
	if err != nil {
		return nil, err
	}
	switch typ {
	case ggufUint8:
		return uint64(b[0]), nil
	case ggufInt8:
		return int64(int8(b[0])), nil
	case ggufUint16:
		return uint64(binary.LittleEndian.Uint16(b)), nil
	case ggufInt16:
		return int64(int16(binary.LittleEndian.Uint16(b))), nil
	case ggufUint32:
		return uint64(binary.LittleEndian.Uint32(b)), nil
	case ggufInt32:
		return int64(int32(binary.LittleEndian.Uint32(b))), nil
	case ggufFloat32:
		return float64(math.Float32frombits(binary.LittleEndian.Uint32(b))), nil
	case ggufBool:
		return b[0] != 0, nil
	case ggufUint64:
		return binary.LittleEndian.Uint64(b), nil
	case ggufInt64:
		return int64(binary.LittleEndian.Uint64(b)), nil
	default: // ggufFloat64
		return math.Float64frombits(binary.LittleEndian.Uint64(b)), nil
	}
}

func (g *ggufReader) value(typ uint32, key string) (any, error) {
	switch typ {
	case ggufString:
		return g.str(true, uint64(g.size))
	case ggufArray:
		et, err := g.u32()
		if err != nil {
			return nil, err
		}
		n, err := g.u64()
		if err != nil {
			return nil, err
		}
		arr := GGUFArray{ElemType: et, Len: n}
		if et == ggufString {
			// Each string takes at least its 8-byte length.
			if n > uint64(g.size-g.pos)/8 {
				return nil, errTruncated
			}
			for range n {
				if _, err := g.str(false, 0); err != nil {
					return nil, err
				}
			}
			return arr, nil
		}
		if et == ggufArray {
			return nil, fmt.Errorf("metadata %q: nested arrays are not supported", key)
		}
		sz, ok := ggufScalarSize[et]
		if !ok {
			return nil, fmt.Errorf("metadata %q: unknown array element type %d", key, et)
		}
		if n > uint64(g.size-g.pos)/uint64(sz) {
			return nil, errTruncated
		}
		if n > maxKeptArray {
			return arr, g.skip(n * uint64(sz))
		}
		arr.Numbers = make([]float64, n)
		for i := range arr.Numbers {
			v, err := g.scalar(et)
			if err != nil {
				return nil, err
			}
			arr.Numbers[i] = toFloat(v)
		}
		return arr, nil
	default:
		return g.scalar(typ)
	}
}

func toFloat(v any) float64 {
	switch x := v.(type) {
	case uint64:
		return float64(x)
	case int64:
		return float64(x)
	case float64:
		return x
	case bool:
		if x {
			return 1
		}
	}
	return 0
}

// InspectGGUF reads and checks a GGUF file's header, metadata and tensor
// table (see CheckGGUF).
func InspectGGUF(path string) (*GGUF, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("model file %s does not exist", path)
		}
		return nil, fmt.Errorf("model file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("model file: %w", err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("model file %s is a directory", path)
	}
	g := &ggufReader{r: bufio.NewReaderSize(f, 1<<16), size: st.Size(), path: path}
	out, err := g.parse()
	if err != nil {
		if errors.Is(err, errTruncated) {
			return nil, fmt.Errorf("%s is truncated (%d bytes; the header or tensor table runs past the end)", path, st.Size())
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out.Path = path
	return out, nil
}

func (g *ggufReader) parse() (*GGUF, error) {
	magic := make([]byte, 4)
	if n, _ := io.ReadFull(g.r, magic); n < 4 || string(magic) != "GGUF" {
		return nil, fmt.Errorf("not a GGUF file (starts with %q, want \"GGUF\")", magic[:n])
	}
	g.pos = 4
	ver, err := g.u32()
	if err != nil {
		return nil, err
	}
	if ver != 2 && ver != 3 {
		return nil, fmt.Errorf("unsupported GGUF version %d (want 2 or 3)", ver)
	}
	nTensors, err := g.u64()
	if err != nil {
		return nil, err
	}
	nKV, err := g.u64()
	if err != nil {
		return nil, err
	}
	if nTensors > ggufMaxTensors {
		return nil, fmt.Errorf("implausible tensor count %d", nTensors)
	}
	if nKV > ggufMaxKV {
		return nil, fmt.Errorf("implausible metadata count %d", nKV)
	}
	out := &GGUF{Version: ver, FileSize: g.size, Alignment: 32, Metadata: make(map[string]any, nKV)}
	for range nKV {
		key, err := g.str(true, ggufMaxKey)
		if err != nil {
			return nil, err
		}
		typ, err := g.u32()
		if err != nil {
			return nil, err
		}
		v, err := g.value(typ, key)
		if err != nil {
			return nil, err
		}
		if _, dup := out.Metadata[key]; dup {
			return nil, fmt.Errorf("duplicate metadata key %q", key)
		}
		out.Metadata[key] = v
	}
	if a, ok := out.Metadata["general.alignment"]; ok {
		al, ok := a.(uint64)
		if !ok || al == 0 || al&(al-1) != 0 {
			return nil, fmt.Errorf("general.alignment %v is not a power of two", a)
		}
		out.Alignment = al
	}
	out.Tensors = make([]TensorInfo, 0, nTensors)
	for range nTensors {
		var ti TensorInfo
		if ti.Name, err = g.str(true, ggufMaxKey); err != nil {
			return nil, err
		}
		nd, err := g.u32()
		if err != nil {
			return nil, err
		}
		if nd == 0 || nd > ggufMaxDims {
			return nil, fmt.Errorf("tensor %q has %d dimensions (want 1..%d)", ti.Name, nd, ggufMaxDims)
		}
		ti.Dims = make([]uint64, nd)
		elems := uint64(1)
		for i := range ti.Dims {
			if ti.Dims[i], err = g.u64(); err != nil {
				return nil, err
			}
			if ti.Dims[i] == 0 || ti.Dims[i] > 1<<40 || elems > math.MaxUint64/ti.Dims[i] {
				return nil, fmt.Errorf("tensor %q has an implausible shape %v", ti.Name, ti.Dims[:i+1])
			}
			elems *= ti.Dims[i]
		}
		if ti.Type, err = g.u32(); err != nil {
			return nil, err
		}
		tt, ok := ggmlTypes[ti.Type]
		if !ok {
			return nil, fmt.Errorf("tensor %q has unknown ggml type %d", ti.Name, ti.Type)
		}
		if ti.Dims[0]%tt.block != 0 {
			return nil, fmt.Errorf("tensor %q: row of %d elements is not a multiple of %s's block of %d", ti.Name, ti.Dims[0], tt.name, tt.block)
		}
		ti.Size = elems / tt.block * tt.size
		if ti.Offset, err = g.u64(); err != nil {
			return nil, err
		}
		if ti.Offset%out.Alignment != 0 {
			return nil, fmt.Errorf("tensor %q offset %d is not aligned to %d", ti.Name, ti.Offset, out.Alignment)
		}
		out.Tensors = append(out.Tensors, ti)
	}
	out.DataOffset = (g.pos + int64(out.Alignment) - 1) / int64(out.Alignment) * int64(out.Alignment)
	for _, ti := range out.Tensors {
		end := uint64(out.DataOffset) + ti.Offset + ti.Size
		if ti.Offset > uint64(g.size) || end > uint64(g.size) {
			return nil, fmt.Errorf("%w: tensor %q data ends at byte %d, file has %d", errTruncated, ti.Name, end, g.size)
		}
	}
	return out, nil
}

// String returns a string metadata value.
func (f *GGUF) String(key string) (string, bool) {
	s, ok := f.Metadata[key].(string)
	return s, ok
}

// Uint returns an integer metadata value (any width or sign, as uint64);
// for a numeric array (per-layer values) it returns the largest element.
func (f *GGUF) Uint(key string) (uint64, bool) {
	switch v := f.Metadata[key].(type) {
	case uint64:
		return v, true
	case int64:
		if v >= 0 {
			return uint64(v), true
		}
	case GGUFArray:
		if len(v.Numbers) > 0 {
			m := 0.0
			for _, x := range v.Numbers {
				m = max(m, x)
			}
			return uint64(m), true
		}
	}
	return 0, false
}

// ArrayLen returns the length of an array metadata value.
func (f *GGUF) ArrayLen(key string) (uint64, bool) {
	a, ok := f.Metadata[key].(GGUFArray)
	return a.Len, ok
}

// NParams is the total number of tensor elements.
func (f *GGUF) NParams() uint64 {
	var n uint64
	for _, t := range f.Tensors {
		n += t.Elements()
	}
	return n
}

// TensorBytes is the total size of the tensor data.
func (f *GGUF) TensorBytes() uint64 {
	var n uint64
	for _, t := range f.Tensors {
		n += t.Size
	}
	return n
}
