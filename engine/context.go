package engine

import (
	"errors"
	"fmt"
	"runtime"
	"structs"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// cContextParams mirrors struct llama_context_params (llama.h): 160 bytes.
type cContextParams struct {
	_                 structs.HostLayout
	NCtx              uint32
	NBatch            uint32
	NUBatch           uint32
	NSeqMax           uint32
	NRsSeq            uint32
	NOutputsMax       uint32
	NOutputsMaxPerSeq uint32
	NThreads          int32
	NThreadsBatch     int32
	CtxType           int32
	RopeScalingType   int32
	PoolingType       int32
	AttentionType     int32
	FlashAttnType     int32
	RopeFreqBase      float32
	RopeFreqScale     float32
	YarnExtFactor     float32
	YarnAttnFactor    float32
	YarnBetaFast      float32
	YarnBetaSlow      float32
	YarnOrigCtx       uint32
	DefragThold       float32
	CbEval            uintptr
	CbEvalUserData    uintptr
	TypeK             int32 // enum ggml_type
	TypeV             int32
	AbortCallback     uintptr
	AbortCallbackData uintptr
	Embeddings        bool
	OffloadKQV        bool
	NoPerf            bool
	OpOffload         bool
	SwaFull           bool
	KVUnified         bool
	_                 [2]byte
	Samplers          uintptr
	NSamplers         uintptr
	CtxOther          uintptr
}

var (
	llamaContextDefaultParams func() cContextParams
	llamaInitFromModel        func(m uintptr, p cContextParams) uintptr
	llamaFree                 func(ctx uintptr)
	llamaAttachThreadpoolSym  uintptr
	llamaSetNThreadsSym       uintptr
	llamaNCtx                 func(ctx uintptr) uint32
	llamaNCtxSeq              func(ctx uintptr) uint32
	llamaNBatch               func(ctx uintptr) uint32
	llamaNUBatch              func(ctx uintptr) uint32
	llamaNSeqMax              func(ctx uintptr) uint32
	llamaDecodeReg            func(ctx uintptr, b cBatch) int32 // reference path, used by tests
	llamaDecodeSym            uintptr
	llamaGetLogitsSym         uintptr
	llamaPerfContextSym       uintptr
)

func bindContext(b *binder) {
	b.fn(&llamaContextDefaultParams, "llama_context_default_params")
	b.fn(&llamaInitFromModel, "llama_init_from_model")
	b.fn(&llamaFree, "llama_free")
	llamaAttachThreadpoolSym = b.sym("llama_attach_threadpool")
	llamaSetNThreadsSym = b.sym("llama_set_n_threads")
	b.fn(&llamaNCtx, "llama_n_ctx")
	b.fn(&llamaNCtxSeq, "llama_n_ctx_seq")
	b.fn(&llamaNBatch, "llama_n_batch")
	b.fn(&llamaNUBatch, "llama_n_ubatch")
	b.fn(&llamaNSeqMax, "llama_n_seq_max")
	b.fn(&llamaDecodeReg, "llama_decode")
	llamaDecodeSym = b.sym("llama_decode")
	llamaGetLogitsSym = b.sym("llama_get_logits")
	llamaPerfContextSym = b.sym("llama_perf_context")
}

// cPerfContextData mirrors struct llama_perf_context_data (llama.h): 48
// bytes, so the System V ABI returns it through a hidden first argument.
type cPerfContextData struct {
	_                                    structs.HostLayout
	TStartMs, TLoadMs, TPEvalMs, TEvalMs float64
	NPEval, NEval, NReused               int32
	_                                    int32
}

// GraphsReused is how many of the context's micro-batches reused the
// previous one's compute graph (llama_perf_context's n_reused). llama.cpp
// keeps one graph per context and reuses it only for a micro-batch of the
// same shape (tokens, sequences, outputs, KV window); any other shape
// builds and allocates a new graph, which costs about as much as a
// one-token decode of stories260K.
func (c *Context) GraphsReused() int {
	if c.ptr == 0 {
		return 0
	}
	// Into the context's own buffer, through call: no allocation per decode.
	a := c.args[:2]
	a[0], a[1] = uintptr(unsafe.Pointer(&c.perf)), c.ptr
	c.call(llamaPerfContextSym, a)
	return int(c.perf.NReused)
}

// FlashAttn selects flash attention. On this CPU build "auto" turns it on,
// which is slower for small models: benchmark both.
type FlashAttn int32

const (
	FlashAttnAuto FlashAttn = -1
	FlashAttnOff  FlashAttn = 0
	FlashAttnOn   FlashAttn = 1
)

// KVType is the element type of the KV cache: "f16" (default), "f32",
// "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl", or "auto"
// (KVAuto). llama.cpp needs flash attention for a quantized V cache.
type KVType string

// KVAuto picks the KV type from the model when a context is made: f32 for
// a model stored in f32 or with heads of at most 16 dimensions, f16 for
// every other (see AutoKVType).
const KVAuto KVType = "auto"

// smallHeadDim is the largest head (key) dimension AutoKVType gives an
// f32 cache whatever the weights.
const smallHeadDim = 16

// AutoKVType is what KVAuto means for a model whose weights take
// bytesPerParam bytes per parameter and whose attention heads have headDim
// dimensions (0: unknown). f32 for f32 weights (≥ 3 bytes): vLLM's
// kv_cache_dtype "auto" likewise follows the model's own precision. f32
// too for heads of at most 16 dimensions, whatever the weights: on a CPU
// an f16 cache costs a conversion call per cached head in every
// attention, which for such short heads outweighs the dot product itself,
// while the cache takes little memory (its size per token grows with the
// head dimension). Every other model gets llama.cpp's default of f16
// (decision 0018).
func AutoKVType(bytesPerParam float64, headDim int) KVType {
	if bytesPerParam >= 3 || (headDim > 0 && headDim <= smallHeadDim) {
		return "f32"
	}
	return "f16"
}

// Resolve is t with KVAuto replaced by the type AutoKVType picks for m.
func (t KVType) Resolve(m *Model) KVType {
	if t != KVAuto {
		return t
	}
	return m.AutoKVType()
}

var kvTypes = map[KVType]int32{
	"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "iq4_nl": 20, "bf16": 30,
}

// GGMLType is the ggml type number of t.
func (t KVType) GGMLType() (int32, error) {
	if t == "" {
		return 1, nil
	}
	if t == KVAuto {
		return 0, fmt.Errorf("engine: KV cache type %q is resolved per model (KVType.Resolve)", string(t))
	}
	g, ok := kvTypes[t]
	if !ok {
		return 0, fmt.Errorf("engine: unknown KV cache type %q (want auto, f16, f32, bf16, q8_0, q4_0, q4_1, q5_0, q5_1 or iq4_nl)", string(t))
	}
	return g, nil
}

// BytesPerElement is the average size of one cached K or V element.
func (t KVType) BytesPerElement() (float64, error) {
	g, err := t.GGMLType()
	if err != nil {
		return 0, err
	}
	ti := ggmlTypes[uint32(g)]
	return float64(ti.size) / float64(ti.block), nil
}

// ContextParams configures a context. Zero numeric fields take the value of
// DefaultContextParams; FlashAttn's zero value is FlashAttnOff and TypeK /
// TypeV "" mean f16.
type ContextParams struct {
	// NCtx is the total number of KV cells, shared by all sequences (each
	// sequence gets NCtx/NSeqMax unless UnifiedKV).
	NCtx int
	// NBatch is the most tokens one Decode may carry; NUBatch the most the
	// backend computes at once (a larger batch is split).
	NBatch, NUBatch int
	// NSeqMax is the number of distinct sequence ids (0..NSeqMax-1).
	NSeqMax int
	// NOutputsMax sizes the logits buffer: the most rows asking for logits in
	// one Decode. 0 means NBatch. llama.cpp aborts the process when a decode
	// needs more, so NewContext raises it to at least NSeqMax and Decode
	// refuses a batch with more logits rows.
	NOutputsMax int
	// Threads is the size of the thread pool the context creates when
	// ThreadPool is nil. Ignored when ThreadPool is set.
	Threads    int
	ThreadPool *ThreadPool
	// ComputeThreads is how many of the pool's threads one decode uses
	// (llama.cpp's n_threads and n_threads_batch); the rest stay idle.
	// 0 means all of them. A tiny draft model can decode faster on one
	// thread than on two: ggml synchronises threads after every graph node.
	ComputeThreads int
	// OneThreadOnPool runs the context's one-thread decodes on the pool
	// itself, whose workers are kicked and keep polling, instead of on
	// its one-thread companion (see ThreadPool). For contexts whose
	// one-thread decodes alternate with decodes on all of the pool (a
	// target and its draft; the scheduler sets it for both): switching to
	// the companion pauses the pool, and the next decode on all of it
	// then waits for the workers to wake.
	OneThreadOnPool bool
	// UnifiedKV lets all sequences draw cells from one pool, which is what
	// makes SeqCopy share cells (prefix caching).
	UnifiedKV    bool
	FlashAttn    FlashAttn
	TypeK, TypeV KVType
}

// DefaultContextParams returns llama.cpp's defaults
// (llama_context_default_params) with Threads = min(4, NumCPU). Before Open
// it returns the same values from constants checked by the ABI test.
func DefaultContextParams() ContextParams {
	p := ContextParams{
		NCtx: 512, NBatch: 2048, NUBatch: 512, NSeqMax: 1, NOutputsMax: 0,
		FlashAttn: FlashAttnAuto, TypeK: "f16", TypeV: "f16",
		Threads: min(4, runtime.NumCPU()),
	}
	openMu.Lock()
	loaded := openLib != nil
	openMu.Unlock()
	if loaded {
		c := llamaContextDefaultParams()
		p.NCtx, p.NBatch, p.NUBatch = int(c.NCtx), int(c.NBatch), int(c.NUBatch)
		p.NSeqMax, p.NOutputsMax = int(c.NSeqMax), int(c.NOutputsMax)
		p.FlashAttn, p.UnifiedKV = FlashAttn(c.FlashAttnType), c.KVUnified
		p.TypeK, p.TypeV = kvTypeName(c.TypeK), kvTypeName(c.TypeV)
	}
	return p
}

func kvTypeName(g int32) KVType {
	for k, v := range kvTypes {
		if v == g {
			return k
		}
	}
	return KVType(GGMLTypeName(uint32(g)))
}

// Validate checks ranges (after zero fields took their defaults).
func (p ContextParams) Validate() error {
	switch {
	case p.NCtx < 0 || p.NBatch < 0 || p.NUBatch < 0 || p.NSeqMax < 0 || p.NOutputsMax < 0 || p.Threads < 0 || p.ComputeThreads < 0:
		return fmt.Errorf("engine: negative context parameter in %+v", p)
	case p.NSeqMax > 256:
		return fmt.Errorf("engine: NSeqMax %d exceeds llama.cpp's limit of 256", p.NSeqMax)
	case p.FlashAttn < FlashAttnAuto || p.FlashAttn > FlashAttnOn:
		return fmt.Errorf("engine: FlashAttn %d is not -1, 0 or 1", p.FlashAttn)
	}
	if _, err := p.TypeK.GGMLType(); err != nil {
		return err
	}
	if _, err := p.TypeV.GGMLType(); err != nil {
		return err
	}
	return nil
}

// Sentinel results of Decode (llama_decode's positive return codes).
var (
	// ErrNoKVSlot: the KV cache has no room for the batch (llama_decode 1).
	// The cache is as before the call; free cells or send fewer tokens.
	ErrNoKVSlot = errors.New("engine: no KV cache slot for the batch")
	// ErrDecodeAborted: the abort callback stopped the decode (llama_decode
	// 2). Processed micro-batches stay in the cache.
	ErrDecodeAborted = errors.New("engine: decode aborted")
)

// Context is a llama.cpp context: a KV cache, a logits buffer and a thread
// pool. Not safe for concurrent use: one goroutine drives it.
type Context struct {
	model   *Model
	ptr     uintptr
	mem     uintptr
	pool    *ThreadPool
	ownPool bool
	nVocab  int
	nCtx    int
	nCtxSeq int
	nBatch  int
	nSeqMax int
	nOutMax int
	unified bool
	typeK   KVType  // resolved: never KVAuto
	threads int     // of the pool's threads, how many a Decode uses
	tp      uintptr // the ggml pool attached: pool.ptr, or its solo pool for one thread
	onPool  bool    // ContextParams.OneThreadOnPool

	// rowOut maps the last decoded batch's rows to output rows (-1: none).
	rowOut []int32
	// logits is llama_get_logits of the last Decode, fetched on first use.
	logits      unsafe.Pointer
	logitsFresh bool
	once        sync.Once
	// args is scratch for purego.SyscallN: passing an existing slice avoids
	// the variadic slice it would otherwise allocate on every call.
	args [16]uintptr
	perf cPerfContextData // GraphsReused's result buffer
}

// NewContext creates a context on m with a thread pool attached.
func (m *Model) NewContext(p ContextParams) (*Context, error) {
	def := DefaultContextParams()
	if p.NCtx == 0 {
		p.NCtx = def.NCtx
	}
	if p.NBatch == 0 {
		p.NBatch = def.NBatch
	}
	if p.NUBatch == 0 {
		p.NUBatch = min(def.NUBatch, p.NBatch)
	}
	if p.NSeqMax == 0 {
		p.NSeqMax = def.NSeqMax
	}
	if p.Threads == 0 {
		p.Threads = def.Threads
	}
	p.TypeK, p.TypeV = p.TypeK.Resolve(m), p.TypeV.Resolve(m)
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if p.NOutputsMax != 0 && p.NOutputsMax < p.NSeqMax {
		p.NOutputsMax = p.NSeqMax
	}
	tk, _ := p.TypeK.GGMLType()
	tv, _ := p.TypeV.GGMLType()

	pool, own := p.ThreadPool, false
	if pool == nil {
		var err error
		if pool, err = m.lib.NewThreadPool(p.Threads); err != nil {
			return nil, err
		}
		own = true
	}
	cp := llamaContextDefaultParams()
	cp.NCtx = uint32(p.NCtx)
	cp.NBatch = uint32(p.NBatch)
	cp.NUBatch = uint32(p.NUBatch)
	cp.NSeqMax = uint32(p.NSeqMax)
	cp.NOutputsMax = uint32(p.NOutputsMax)
	n := pool.nThreads
	if p.ComputeThreads > 0 {
		n = min(n, p.ComputeThreads)
	}
	cp.NThreads = int32(n)
	cp.NThreadsBatch = int32(n)
	cp.FlashAttnType = int32(p.FlashAttn)
	cp.TypeK, cp.TypeV = tk, tv
	cp.KVUnified = p.UnifiedKV

	takeLastError()
	ptr := llamaInitFromModel(m.ptr, cp)
	if ptr == 0 {
		if own {
			pool.Close()
		}
		return nil, withLastError("engine: llama.cpp could not create a context (n_ctx %d, n_batch %d, n_seq_max %d, type_k %s, type_v %s, flash_attn %d)",
			p.NCtx, p.NBatch, p.NSeqMax, p.TypeK, p.TypeV, p.FlashAttn)
	}
	attached := pool.forThreads(n, p.OneThreadOnPool)
	purego.SyscallN(llamaAttachThreadpoolSym, ptr, attached, attached)
	c := &Context{
		model:   m,
		ptr:     ptr,
		mem:     llamaGetMemory(ptr),
		pool:    pool,
		ownPool: own,
		nVocab:  m.vocab.NTokens(),
		nCtx:    int(llamaNCtx(ptr)),
		nCtxSeq: int(llamaNCtxSeq(ptr)),
		nBatch:  int(llamaNBatch(ptr)),
		nSeqMax: int(llamaNSeqMax(ptr)),
		nOutMax: p.NOutputsMax,
		unified: p.UnifiedKV,
		typeK:   p.TypeK,
		threads: n,
		tp:      attached,
		onPool:  p.OneThreadOnPool,
	}
	if c.nOutMax == 0 {
		c.nOutMax = c.nBatch
	}
	c.rowOut = make([]int32, 0, c.nBatch)
	return c, nil
}

// Close frees the context (and its thread pool if it made one).
func (c *Context) Close() {
	if c == nil {
		return
	}
	c.once.Do(func() {
		llamaFree(c.ptr)
		c.ptr = 0
		if c.ownPool {
			c.pool.Close()
		}
	})
}

// Model is the model the context runs.
func (c *Context) Model() *Model { return c.model }

// NCtx is the total number of KV cells.
func (c *Context) NCtx() int { return c.nCtx }

// Threads is how many of the pool's threads a Decode uses.
func (c *Context) Threads() int { return c.threads }

// PoolThreads is the size of the context's thread pool.
func (c *Context) PoolThreads() int { return c.pool.nThreads }

// SetThreads sets how many of the pool's threads the next Decodes use
// (llama_set_n_threads), clamped to [1, PoolThreads], and returns it. One
// thread runs on the pool's one-thread companion, and the pool's workers
// sleep until a decode on more threads (see ThreadPool), unless
// ContextParams.OneThreadOnPool. On a closed context it does nothing.
func (c *Context) SetThreads(n int) int {
	n = max(1, min(n, c.pool.nThreads))
	if c.ptr != 0 && n != c.threads {
		// Through call, as Decode: the scheduler may switch per decode.
		a := c.args[:3]
		if tp := c.pool.forThreads(n, c.onPool); tp != c.tp {
			a[0], a[1], a[2] = c.ptr, tp, tp
			c.call(llamaAttachThreadpoolSym, a)
			c.tp = tp
		}
		a[0], a[1], a[2] = c.ptr, i32(int32(n)), i32(int32(n))
		c.call(llamaSetNThreadsSym, a)
		c.threads = n
	}
	return c.threads
}

// NCtxSeq is the most positions one sequence can hold.
func (c *Context) NCtxSeq() int { return c.nCtxSeq }

// KVType is the element type of the context's K cache, KVAuto resolved.
func (c *Context) KVType() KVType { return c.typeK }

// NSeqMax is the number of sequence ids.
func (c *Context) NSeqMax() int { return c.nSeqMax }

// NBatch is the most tokens one Decode may carry.
func (c *Context) NBatch() int { return c.nBatch }

// NOutputsMax is the most rows one Decode may ask logits for.
func (c *Context) NOutputsMax() int { return c.nOutMax }

// NVocab is the length of one logits row.
func (c *Context) NVocab() int { return c.nVocab }

// Decode runs the batch through the model, appending its tokens to the KV
// cache. It returns ErrNoKVSlot or ErrDecodeAborted for llama_decode's
// warnings and a descriptive error for an invalid batch (-1: bad token id,
// position or sequence id; the cache is unchanged) or a fatal failure (< -1).
func (c *Context) Decode(b *Batch) error {
	if c.ptr == 0 {
		return errors.New("engine: decode on a closed context")
	}
	n := int(b.c.NTokens)
	if n == 0 {
		return errors.New("engine: decode of an empty batch")
	}
	if n > c.nBatch {
		return fmt.Errorf("engine: batch of %d tokens exceeds the context's n_batch %d", n, c.nBatch)
	}
	if int(b.nOut) > c.nOutMax {
		return fmt.Errorf("engine: batch asks logits for %d rows, the context's NOutputsMax is %d", b.nOut, c.nOutMax)
	}
	c.logitsFresh = false
	c.rowOut = append(c.rowOut[:0], b.out[:n]...)
	rc := c.decodeRaw(&b.c)
	switch {
	case rc == 0:
		return nil
	case rc == 1:
		return ErrNoKVSlot
	case rc == 2:
		return ErrDecodeAborted
	case rc == -1:
		c.rowOut = c.rowOut[:0]
		return withLastError("engine: llama_decode rejected the batch (-1, invalid input)")
	default:
		c.rowOut = c.rowOut[:0]
		return withLastError("engine: llama_decode failed with fatal code %d", rc)
	}
}

// decodeRaw calls llama_decode(ctx, batch) without reflection or
// allocation. The 56-byte llama_batch is passed in memory (System V AMD64
// class MEMORY): it goes on the stack after the register arguments, so five
// zero words fill rsi..r9 and the batch's seven words follow on the stack.
func (c *Context) decodeRaw(b *cBatch) int32 {
	a := c.args[:13]
	a[0] = c.ptr
	a[1], a[2], a[3], a[4], a[5] = 0, 0, 0, 0, 0
	copy(a[6:], (*[7]uintptr)(unsafe.Pointer(b))[:])
	return int32(c.call(llamaDecodeSym, a))
}

// call invokes a C function with integer arguments already in c.args.
func (c *Context) call(fn uintptr, a []uintptr) uintptr {
	r, _, _ := purego.SyscallN(fn, a...)
	return r
}

// Logits returns the logits of batch row row of the last Decode: a view of
// NVocab floats in llama.cpp's buffer, valid until the next Decode. It is nil
// when that row asked no logits.
func (c *Context) Logits(row int) []float32 {
	if row < 0 || row >= len(c.rowOut) {
		return nil
	}
	o := c.rowOut[row]
	if o < 0 {
		return nil
	}
	if !c.logitsFresh {
		c.args[0] = c.ptr
		r := c.call(llamaGetLogitsSym, c.args[:1])
		c.logits = *(*unsafe.Pointer)(unsafe.Pointer(&r))
		c.logitsFresh = true
	}
	if c.logits == nil {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Add(c.logits, uintptr(o)*uintptr(c.nVocab)*4)), c.nVocab)
}
