package engine

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"structs"
)

// cQuantizeParams mirrors llama_model_quantize_params (llama.h): 64 bytes.
type cQuantizeParams struct {
	_                    structs.HostLayout
	NThread              int32
	Ftype                int32
	OutputTensorType     int32
	TokenEmbeddingType   int32
	AllowRequantize      bool
	QuantizeOutputTensor bool
	OnlyCopy             bool
	Pure                 bool
	KeepSplit            bool
	DryRun               bool
	_                    [2]byte
	Imatrix              uintptr
	KVOverrides          uintptr
	TTOverrides          uintptr
	PruneLayers          uintptr
	MaxBufSize           uintptr
}

var (
	llamaModelQuantizeDefaultParams func() cQuantizeParams
	llamaModelQuantize              func(in, out string, p *cQuantizeParams) uint32
)

func bindQuantize(b *binder) {
	b.fn(&llamaModelQuantizeDefaultParams, "llama_model_quantize_default_params")
	b.fn(&llamaModelQuantize, "llama_model_quantize")
}

// fileTypes maps llama_ftype names (llama.h, as llama-quantize spells them)
// to their values.
var fileTypes = map[string]int32{
	"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9,
	"Q2_K": 10, "Q3_K_S": 11, "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15,
	"Q5_K_S": 16, "Q5_K_M": 17, "Q6_K": 18, "IQ2_XXS": 19, "IQ2_XS": 20, "Q2_K_S": 21,
	"IQ3_XS": 22, "IQ3_XXS": 23, "IQ1_S": 24, "IQ4_NL": 25, "IQ3_S": 26, "IQ3_M": 27,
	"IQ2_S": 28, "IQ2_M": 29, "IQ4_XS": 30, "IQ1_M": 31, "BF16": 32, "TQ1_0": 36,
	"TQ2_0": 37, "MXFP4_MOE": 38,
}

// aliases llama-quantize accepts for the K-quant mixes.
var fileTypeAliases = map[string]string{"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}

// FileTypes lists the quantization type names Quantize accepts.
func FileTypes() []string {
	out := make([]string, 0, len(fileTypes))
	for k := range fileTypes {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ParseFileType maps a name such as "q8_0" or "Q4_K_M" (any case) to its
// llama_ftype value.
func ParseFileType(name string) (int32, error) {
	n := strings.ToUpper(strings.TrimSpace(name))
	if a, ok := fileTypeAliases[n]; ok {
		n = a
	}
	ft, ok := fileTypes[n]
	if !ok {
		return 0, fmt.Errorf("engine: unknown quantization type %q (one of %s)", name, strings.Join(FileTypes(), ", "))
	}
	return ft, nil
}

// FileTypeName is the name of a llama_ftype value ("Q8_0"), as GGUF's
// general.file_type stores it.
func FileTypeName(ft int32) string {
	for k, v := range fileTypes {
		if v == ft {
			return k
		}
	}
	return fmt.Sprintf("ftype(%d)", ft)
}

// Quantize writes a copy of the model in with its weights converted to typ
// (e.g. "Q8_0", "Q4_K_M", "F16"; case-insensitive) to out, using threads
// threads (<= 0: all cores). A failed run leaves no output file.
func (l *Library) Quantize(in, out string, typ string, threads int) error {
	ft, err := ParseFileType(typ)
	if err != nil {
		return err
	}
	if err := CheckGGUF(in); err != nil {
		return err
	}
	ai, _ := filepath.Abs(in)
	ao, _ := filepath.Abs(out)
	if ai == ao {
		return errors.New("engine: quantize output must differ from its input")
	}
	_, statErr := os.Stat(out)
	existed := statErr == nil
	p := llamaModelQuantizeDefaultParams()
	p.Ftype = ft
	p.NThread = int32(threads)
	takeLastError()
	if rc := llamaModelQuantize(in, out, &p); rc != 0 {
		if !existed {
			os.Remove(out)
		}
		return withLastError("engine: quantizing %s to %s failed (code %d)", in, FileTypeName(ft), rc)
	}
	return nil
}
