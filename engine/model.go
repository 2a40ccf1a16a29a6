package engine

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"structs"
	"sync"

	"github.com/ebitengine/purego"
)

// cModelParams mirrors struct llama_model_params (llama.h): 80 bytes.
type cModelParams struct {
	_                        structs.HostLayout
	Devices                  uintptr
	TensorBuftOverrides      uintptr
	NGPULayers               int32
	SplitMode                int32
	LoadMode                 int32
	LazyMode                 int32
	MainGPU                  int32
	_                        [4]byte
	TensorSplit              uintptr
	ProgressCallback         uintptr
	ProgressCallbackUserData uintptr
	KVOverrides              uintptr
	VocabOnly                bool
	CheckTensors             bool
	UseExtraBufts            bool
	NoHost                   bool
	NoAlloc                  bool
	LoadMTP                  bool
	_                        [2]byte
}

// cChatMessage mirrors struct llama_chat_message.
type cChatMessage struct {
	_       structs.HostLayout
	Role    *byte
	Content *byte
}

var (
	llamaModelDefaultParams  func() cModelParams
	llamaModelLoadFromFile   func(path string, p cModelParams) uintptr
	llamaModelFree           func(m uintptr)
	llamaModelGetVocab       func(m uintptr) uintptr
	llamaModelNCtxTrain      func(m uintptr) int32
	llamaModelNEmbd          func(m uintptr) int32
	llamaModelNLayer         func(m uintptr) int32
	llamaModelNHead          func(m uintptr) int32
	llamaModelNHeadKV        func(m uintptr) int32
	llamaModelNParams        func(m uintptr) uint64
	llamaModelSize           func(m uintptr) uint64
	llamaModelMetaValStr     func(m uintptr, key string, buf *byte, size uintptr) int32
	llamaModelDesc           func(m uintptr, buf *byte, size uintptr) int32
	llamaModelFtype          func(m uintptr) int32
	llamaFtypeName           func(ftype int32) *byte
	llamaModelChatTemplate   func(m uintptr, name *byte) *byte
	llamaChatApplyTemplate   func(tmpl *byte, chat *cChatMessage, n uintptr, addAss bool, buf *byte, length int32) int32
	llamaChatBuiltinTemplate func(out **byte, n uintptr) int32
)

func bindModel(b *binder) {
	b.fn(&llamaModelDefaultParams, "llama_model_default_params")
	b.fn(&llamaModelLoadFromFile, "llama_model_load_from_file")
	b.fn(&llamaModelFree, "llama_model_free")
	b.fn(&llamaModelGetVocab, "llama_model_get_vocab")
	b.fn(&llamaModelNCtxTrain, "llama_model_n_ctx_train")
	b.fn(&llamaModelNEmbd, "llama_model_n_embd")
	b.fn(&llamaModelNLayer, "llama_model_n_layer")
	b.fn(&llamaModelNHead, "llama_model_n_head")
	b.fn(&llamaModelNHeadKV, "llama_model_n_head_kv")
	b.fn(&llamaModelNParams, "llama_model_n_params")
	b.fn(&llamaModelSize, "llama_model_size")
	b.fn(&llamaModelMetaValStr, "llama_model_meta_val_str")
	b.fn(&llamaModelDesc, "llama_model_desc")
	b.fn(&llamaModelFtype, "llama_model_ftype")
	b.fn(&llamaFtypeName, "llama_ftype_name")
	b.fn(&llamaModelChatTemplate, "llama_model_chat_template")
	b.fn(&llamaChatApplyTemplate, "llama_chat_apply_template")
	b.fn(&llamaChatBuiltinTemplate, "llama_chat_builtin_templates")
}

// ModelParams says which model to load and how.
type ModelParams struct {
	Path string
	// GPULayers is the number of layers to offload to a GPU: -1 all, 0 none
	// (the default: this build is CPU only).
	GPULayers int
	// Progress, if set, is called with the load fraction 0..1.
	Progress func(fraction float32)
}

// Model is a loaded model. It is safe for concurrent reads (Info, Vocab);
// close its contexts before Close.
type Model struct {
	lib   *Library
	ptr   uintptr
	info  ModelInfo
	vocab *Vocab
	once  sync.Once
}

// ModelInfo describes a loaded model.
type ModelInfo struct {
	Path, Name, Arch, FileType string
	Desc                       string // llama.cpp's description, e.g. "llama ?B all F32"
	NParams, SizeBytes         uint64 // SizeBytes: total bytes of the tensors
	NCtxTrain, NLayer, NEmbd   int
	NHead, NHeadKV, NVocab     int
	HeadDim                    int    // of the keys: <arch>.attention.key_length, else NEmbd / NHead
	ChatTemplate               string // "" when the model has none
}

// progress callbacks: one C callback for the process, dispatching on the
// user-data word to the load in flight.
type loadState struct {
	ctx      context.Context
	progress func(float32)
}

var (
	progressMu   sync.Mutex
	progressNext uintptr
	progressRegs = map[uintptr]*loadState{}
	progressOnce sync.Once
	progressCb   uintptr
)

func progressCallback() uintptr {
	progressOnce.Do(func() {
		progressCb = purego.NewCallback(func(fraction float32, user uintptr) bool {
			progressMu.Lock()
			st := progressRegs[user]
			progressMu.Unlock()
			if st == nil {
				return true
			}
			if st.ctx.Err() != nil {
				return false
			}
			if st.progress != nil {
				st.progress(fraction)
			}
			return true
		})
	})
	return progressCb
}

// LoadModel checks the file with CheckGGUF and loads it. Cancelling ctx
// aborts the load and returns ctx.Err().
func (l *Library) LoadModel(ctx context.Context, p ModelParams) (*Model, error) {
	if err := CheckGGUF(p.Path); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	mp := llamaModelDefaultParams()
	mp.NGPULayers = int32(p.GPULayers)
	mp.ProgressCallback = progressCallback()

	progressMu.Lock()
	progressNext++
	id := progressNext
	progressRegs[id] = &loadState{ctx: ctx, progress: p.Progress}
	progressMu.Unlock()
	defer func() {
		progressMu.Lock()
		delete(progressRegs, id)
		progressMu.Unlock()
	}()
	mp.ProgressCallbackUserData = id

	takeLastError()
	ptr := llamaModelLoadFromFile(p.Path, mp)
	if ptr == 0 {
		if err := ctx.Err(); err != nil {
			takeLastError()
			return nil, err
		}
		return nil, withLastError("engine: llama.cpp could not load %s", p.Path)
	}
	m := &Model{lib: l, ptr: ptr}
	m.info = m.readInfo(p.Path)
	m.vocab = newVocab(llamaModelGetVocab(ptr))
	m.info.NVocab = m.vocab.NTokens()
	return m, nil
}

func (m *Model) readInfo(path string) ModelInfo {
	info := ModelInfo{
		Path:      path,
		Name:      m.meta("general.name"),
		Arch:      m.meta("general.architecture"),
		FileType:  goStringPtr(llamaFtypeName(llamaModelFtype(m.ptr))),
		NParams:   llamaModelNParams(m.ptr),
		SizeBytes: llamaModelSize(m.ptr),
		NCtxTrain: int(llamaModelNCtxTrain(m.ptr)),
		NLayer:    int(llamaModelNLayer(m.ptr)),
		NEmbd:     int(llamaModelNEmbd(m.ptr)),
		NHead:     int(llamaModelNHead(m.ptr)),
		NHeadKV:   int(llamaModelNHeadKV(m.ptr)),
	}
	if k, err := strconv.Atoi(m.meta(info.Arch + ".attention.key_length")); err == nil && k > 0 {
		info.HeadDim = k
	} else if info.NHead > 0 {
		info.HeadDim = info.NEmbd / info.NHead
	}
	buf := make([]byte, 256)
	if n := llamaModelDesc(m.ptr, &buf[0], uintptr(len(buf))); n > 0 {
		info.Desc = string(buf[:min(int(n), len(buf)-1)])
	}
	info.ChatTemplate = goStringPtr(llamaModelChatTemplate(m.ptr, nil))
	return info
}

// meta reads a scalar metadata value as a string ("" when absent).
func (m *Model) meta(key string) string {
	buf := make([]byte, 512)
	for {
		n := llamaModelMetaValStr(m.ptr, key, &buf[0], uintptr(len(buf)))
		if n < 0 {
			return ""
		}
		if int(n) < len(buf) {
			return string(buf[:n])
		}
		buf = make([]byte, n+1)
	}
}

// Meta returns a scalar GGUF metadata value as a string, false if absent.
func (m *Model) Meta(key string) (string, bool) {
	buf := make([]byte, 8)
	if llamaModelMetaValStr(m.ptr, key, &buf[0], uintptr(len(buf))) < 0 {
		return "", false
	}
	return m.meta(key), true
}

// AutoKVType is the KV type KVAuto resolves to for m (by its bytes per
// parameter and its head dimension).
func (m *Model) AutoKVType() KVType {
	bpp := 0.0
	if m.info.NParams > 0 {
		bpp = float64(m.info.SizeBytes) / float64(m.info.NParams)
	}
	return AutoKVType(bpp, m.info.HeadDim)
}

// Info describes the model.
func (m *Model) Info() ModelInfo { return m.info }

// Vocab is the model's vocabulary.
func (m *Model) Vocab() *Vocab { return m.vocab }

// Close frees the model. Close every context made from it first.
func (m *Model) Close() {
	if m == nil {
		return
	}
	m.once.Do(func() {
		llamaModelFree(m.ptr)
		m.ptr = 0
	})
}

// ChatMessage is one turn of a chat.
type ChatMessage struct{ Role, Content string }

// ErrNoChatTemplate is returned by ApplyChatTemplate when tmpl is "" and the
// model carries no template.
var ErrNoChatTemplate = errors.New("engine: model has no chat template")

// ApplyChatTemplate formats msgs with llama.cpp's built-in template engine
// (llama_chat_apply_template: a fixed list of known templates, not Jinja).
// tmpl "" uses the model's own template; otherwise it is a template text or
// a built-in name such as "chatml" or "llama3".
func (m *Model) ApplyChatTemplate(tmpl string, msgs []ChatMessage, addAssistant bool) (string, error) {
	if tmpl == "" {
		tmpl = m.info.ChatTemplate
		if tmpl == "" {
			return "", ErrNoChatTemplate
		}
	}
	ctmpl := cString(tmpl)
	cmsgs := make([]cChatMessage, len(msgs)+1) // +1: never index an empty slice
	total := len(tmpl)
	for i, msg := range msgs {
		r, c := cString(msg.Role), cString(msg.Content)
		cmsgs[i] = cChatMessage{Role: &r[0], Content: &c[0]}
		total += len(msg.Role) + len(msg.Content)
	}
	buf := make([]byte, 2*total+256)
	for {
		n := llamaChatApplyTemplate(&ctmpl[0], &cmsgs[0], uintptr(len(msgs)), addAssistant, &buf[0], int32(len(buf)))
		if n < 0 {
			return "", fmt.Errorf("engine: chat template not supported by llama_chat_apply_template (built-in templates: %v)", builtinTemplates())
		}
		if int(n) <= len(buf) {
			return string(buf[:n]), nil
		}
		buf = make([]byte, n)
	}
}

func builtinTemplates() []string {
	n := llamaChatBuiltinTemplate(nil, 0)
	if n <= 0 {
		return nil
	}
	ptrs := make([]*byte, n)
	llamaChatBuiltinTemplate(&ptrs[0], uintptr(n))
	out := make([]string, n)
	for i, p := range ptrs {
		out[i] = goStringPtr(p)
	}
	return out
}

// cString returns s as a NUL-terminated byte slice.
func cString(s string) []byte {
	b := make([]byte, len(s)+1)
	copy(b, s)
	return b
}
