package engine

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"github.com/ebitengine/purego"

	"specd/internal/testenv"
)

// Runs first (file and source order) so the bad-folder case sees no library
// loaded yet.
func TestOpenErrors(t *testing.T) {
	empty := t.TempDir()
	_, err := Open(Options{LibDir: empty})
	if err == nil || !strings.Contains(err.Error(), "libggml-base") || strings.Contains(err.Error(), "\n") {
		t.Errorf("empty dir: err = %v", err)
	}
	_, err = Open(Options{LibDir: filepath.Join(empty, "nope")})
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing dir: err = %v", err)
	}
	// A folder with libraries that are not ELF files.
	bad := t.TempDir()
	for _, n := range []string{"libggml-base.so", "libggml.so", "libllama.so"} {
		if err := os.WriteFile(filepath.Join(bad, n), []byte("not a library"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	openMu.Lock()
	already := openLib != nil
	openMu.Unlock()
	_, err = Open(Options{LibDir: bad})
	want := "could not open"
	if already { // only one llama.cpp per process: the folder is refused first
		want = "already loaded"
	}
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("bad libraries: err = %v, want %q", err, want)
	}
	// Once open, the same folder returns the same library, another is refused.
	l, _ := stories(t)
	l2, err := Open(Options{LibDir: testenv.LibDir(t)})
	if err != nil || l2 != l {
		t.Errorf("second Open: %v, same=%v", err, l2 == l)
	}
	if !strings.Contains(l.SystemInfo(), "CPU") {
		t.Errorf("SystemInfo = %q", l.SystemInfo())
	}
}

// The Go mirrors of llama.h's structs must match the header byte for byte:
// a wrong layout corrupts silently. Sizes are for linux/amd64.
func TestABIStructSizes(t *testing.T) {
	for _, tc := range []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"llama_model_params", unsafe.Sizeof(cModelParams{}), 80},
		{"llama_context_params", unsafe.Sizeof(cContextParams{}), 160},
		{"llama_batch", unsafe.Sizeof(cBatch{}), 56},
		{"llama_model_quantize_params", unsafe.Sizeof(cQuantizeParams{}), 64},
		{"ggml_threadpool_params", unsafe.Sizeof(cThreadpoolParams{}), 528},
		{"llama_token_data", unsafe.Sizeof(cTokenData{}), 12},
		{"llama_token_data_array", unsafe.Sizeof(cTokenDataArray{}), 32},
		{"llama_chat_message", unsafe.Sizeof(cChatMessage{}), 16},
		{"llama_perf_context_data", unsafe.Sizeof(cPerfContextData{}), 48},
	} {
		if tc.got != tc.want {
			t.Errorf("sizeof(%s) = %d, want %d", tc.name, tc.got, tc.want)
		}
	}
	// Offsets of the fields after padding, from the header's layout.
	var cp cContextParams
	var mp cModelParams
	var qp cQuantizeParams
	for _, tc := range []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"context.flash_attn_type", unsafe.Offsetof(cp.FlashAttnType), 52},
		{"context.cb_eval", unsafe.Offsetof(cp.CbEval), 88},
		{"context.type_k", unsafe.Offsetof(cp.TypeK), 104},
		{"context.abort_callback", unsafe.Offsetof(cp.AbortCallback), 112},
		{"context.embeddings", unsafe.Offsetof(cp.Embeddings), 128},
		{"context.kv_unified", unsafe.Offsetof(cp.KVUnified), 133},
		{"context.samplers", unsafe.Offsetof(cp.Samplers), 136},
		{"context.ctx_other", unsafe.Offsetof(cp.CtxOther), 152},
		{"model.tensor_split", unsafe.Offsetof(mp.TensorSplit), 40},
		{"model.vocab_only", unsafe.Offsetof(mp.VocabOnly), 72},
		{"quantize.imatrix", unsafe.Offsetof(qp.Imatrix), 24},
		{"quantize.max_buf_size", unsafe.Offsetof(qp.MaxBufSize), 56},
	} {
		if tc.got != tc.want {
			t.Errorf("offsetof(%s) = %d, want %d", tc.name, tc.got, tc.want)
		}
	}
}

// The defaults the library returns, read through our structs, must equal
// the values in the tree's src/llama-context.cpp, src/llama-model.cpp and
// src/llama-quant.cpp: a shifted field shows up here.
func TestABIDefaults(t *testing.T) {
	stories(t)
	c := llamaContextDefaultParams()
	checks := []struct {
		name      string
		got, want any
	}{
		{"n_ctx", c.NCtx, uint32(512)},
		{"n_batch", c.NBatch, uint32(2048)},
		{"n_ubatch", c.NUBatch, uint32(512)},
		{"n_seq_max", c.NSeqMax, uint32(1)},
		{"n_rs_seq", c.NRsSeq, uint32(0)},
		{"n_outputs_max", c.NOutputsMax, uint32(0)},
		{"n_outputs_max_per_seq", c.NOutputsMaxPerSeq, uint32(1)},
		{"n_threads", c.NThreads, int32(4)}, // GGML_DEFAULT_N_THREADS
		{"n_threads_batch", c.NThreadsBatch, int32(4)},
		{"ctx_type", c.CtxType, int32(0)},
		{"rope_scaling_type", c.RopeScalingType, int32(-1)},
		{"pooling_type", c.PoolingType, int32(-1)},
		{"attention_type", c.AttentionType, int32(-1)},
		{"flash_attn_type", c.FlashAttnType, int32(-1)},
		{"rope_freq_base", c.RopeFreqBase, float32(0)},
		{"yarn_ext_factor", c.YarnExtFactor, float32(-1)},
		{"yarn_beta_slow", c.YarnBetaSlow, float32(-1)},
		{"yarn_orig_ctx", c.YarnOrigCtx, uint32(0)},
		{"defrag_thold", c.DefragThold, float32(-1)},
		{"cb_eval", c.CbEval, uintptr(0)},
		{"type_k", c.TypeK, int32(1)}, // GGML_TYPE_F16
		{"type_v", c.TypeV, int32(1)},
		{"abort_callback", c.AbortCallback, uintptr(0)},
		{"embeddings", c.Embeddings, false},
		{"offload_kqv", c.OffloadKQV, true},
		{"no_perf", c.NoPerf, true},
		{"op_offload", c.OpOffload, true},
		{"swa_full", c.SwaFull, true},
		{"kv_unified", c.KVUnified, false},
		{"samplers", c.Samplers, uintptr(0)},
		{"n_samplers", c.NSamplers, uintptr(0)},
		{"ctx_other", c.CtxOther, uintptr(0)},
	}
	m := llamaModelDefaultParams()
	checks = append(checks, []struct {
		name      string
		got, want any
	}{
		{"model.devices", m.Devices, uintptr(0)},
		{"model.n_gpu_layers", m.NGPULayers, int32(-1)},
		{"model.split_mode", m.SplitMode, int32(1)}, // LLAMA_SPLIT_MODE_LAYER
		{"model.load_mode", m.LoadMode, int32(-1)},  // LLAMA_LOAD_MODE_AUTO
		{"model.lazy_mode", m.LazyMode, int32(1)},   // LLAMA_LAZY_MODE_AUTO
		{"model.main_gpu", m.MainGPU, int32(0)},
		{"model.progress_callback", m.ProgressCallback, uintptr(0)},
		{"model.vocab_only", m.VocabOnly, false},
		{"model.check_tensors", m.CheckTensors, false},
		{"model.use_extra_bufts", m.UseExtraBufts, true},
		{"model.no_host", m.NoHost, false},
		{"model.no_alloc", m.NoAlloc, false},
		{"model.load_mtp", m.LoadMTP, false},
	}...)
	q := llamaModelQuantizeDefaultParams()
	checks = append(checks, []struct {
		name      string
		got, want any
	}{
		{"quantize.nthread", q.NThread, int32(0)},
		{"quantize.ftype", q.Ftype, int32(7)},                          // Q8_0
		{"quantize.output_tensor_type", q.OutputTensorType, int32(43)}, // GGML_TYPE_COUNT
		{"quantize.token_embedding_type", q.TokenEmbeddingType, int32(43)},
		{"quantize.allow_requantize", q.AllowRequantize, false},
		{"quantize.quantize_output_tensor", q.QuantizeOutputTensor, true},
		{"quantize.dry_run", q.DryRun, false},
		{"quantize.imatrix", q.Imatrix, uintptr(0)},
		{"quantize.max_buf_size", q.MaxBufSize, uintptr(8 << 30)},
	}...)
	var tp cThreadpoolParams
	tp.Paused = true
	ggmlThreadpoolParamsInit(&tp, 3)
	checks = append(checks, []struct {
		name      string
		got, want any
	}{
		{"threadpool.n_threads", tp.NThreads, int32(3)},
		{"threadpool.prio", tp.Prio, int32(0)},
		{"threadpool.poll", tp.Poll, uint32(50)},
		{"threadpool.strict_cpu", tp.StrictCPU, false},
		{"threadpool.paused", tp.Paused, false},
	}...)
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("default %s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	d := DefaultContextParams()
	if d.NCtx != 512 || d.NBatch != 2048 || d.NUBatch != 512 || d.NSeqMax != 1 || d.FlashAttn != FlashAttnAuto ||
		d.TypeK != "f16" || d.TypeV != "f16" || d.UnifiedKV || d.Threads < 1 || d.Threads > 4 {
		t.Errorf("DefaultContextParams = %+v", d)
	}
}

// The Go table of ggml type sizes (used by CheckGGUF and KV sizing) must
// agree with the loaded library.
func TestGGMLTypeTable(t *testing.T) {
	stories(t)
	var typeSize func(typ int32) uintptr
	var blckSize func(typ int32) int64
	var typeName func(typ int32) string
	for _, s := range []struct {
		fn   any
		name string
	}{{&typeSize, "ggml_type_size"}, {&blckSize, "ggml_blck_size"}, {&typeName, "ggml_type_name"}} {
		sym, err := purego.Dlsym(purego.RTLD_DEFAULT, s.name)
		if err != nil {
			t.Fatal(err)
		}
		purego.RegisterFunc(s.fn, sym)
	}
	n := 0
	for typ := int32(0); typ < 43; typ++ {
		size := typeSize(typ)
		ti, ok := ggmlTypes[uint32(typ)]
		if size == 0 {
			if ok {
				t.Errorf("type %d in the Go table but removed from ggml", typ)
			}
			continue
		}
		n++
		if !ok || ti.size != uint64(size) || ti.block != uint64(blckSize(typ)) || ti.name != typeName(typ) {
			t.Errorf("type %d: Go %+v, ggml %s block %d size %d", typ, ti, typeName(typ), blckSize(typ), size)
		}
	}
	if n != len(ggmlTypes) {
		t.Errorf("ggml has %d types, Go table %d", n, len(ggmlTypes))
	}
}
