package scheduler

import (
	"fmt"
	"time"
)

// Config is the scheduler's configuration. Zero fields take the documented
// defaults in EnsureDefaults.
type Config struct {
	// CtxSize is the total KV tokens shared by all running sequences
	// (llama-server's -c). Default 4096.
	CtxSize int
	// MaxSeqLen caps one sequence (prompt + output). Default: the model's
	// training context, at most CtxSize.
	MaxSeqLen int
	// MaxRunning is the most sequences decoded together (--parallel).
	// Default 8.
	MaxRunning int
	// MaxBatchTokens is the token budget of one step (target rows per
	// decode). Default 512.
	MaxBatchTokens int
	// MaxWaiting bounds the waiting queue; Submit beyond it returns
	// ErrQueueFull. Default 256.
	MaxWaiting int
	// BlockSize is the paging block in tokens. Default 16.
	BlockSize int
	// PrefixCache reuses KV of shared prompt prefixes. Default on (set
	// DisablePrefixCache to turn it off).
	DisablePrefixCache bool
	// PrefixCacheBlocks bounds the blocks the prefix cache keeps after their
	// requests end (paging.Config.MaxCachedBlocks). With a unified pool
	// every decode attends over the cached cells too, so they cost time.
	// Default 0: unified, paging.DefaultMaxCachedTokens (512) tokens' worth,
	// at most the pool; SplitKV, the whole pool (a finished sequence's
	// cells sit in its own stream, which no other decode reads);
	// CtxSize/BlockSize: no bound but the pool.
	// docs/decisions/0005-prefix-cache-budget.md.
	PrefixCacheBlocks int
	// SplitKV gives every sequence its own KV stream of CtxSize/MaxRunning
	// cells (llama.cpp kv_unified=false, as llama-server runs by default)
	// instead of one pool shared by all. Attention then scans only the
	// sequence's own cells, which is several times faster with many
	// sequences (docs/decisions/0001-kv-layout.md); the price is a
	// per-sequence cap of CtxSize/MaxRunning tokens and a prefix cache that
	// reuses only a finished sequence's own stream (llama.cpp copies between
	// streams only whole): a new prompt takes over the stream of the
	// finished sequence that shares its longest prefix, as llama-server
	// picks a slot (paging.Config.SlotLocal).
	SplitKV bool
	// Preemption is "recompute" (default) or "swap".
	Preemption string
	// Proposer is the default proposer: "draft" (when a draft model is
	// loaded), "ngram" or "none". Default: "draft" if a draft is loaded,
	// else "none".
	Proposer string
	// SpecK fixes the draft length when > 0; 0 = adaptive in [KMin, KMax].
	SpecK      int
	KMin, KMax int // defaults 1 and 8
	// DraftPMin stops a sequence's draft early: after the first draft
	// token, at a position where the draft model's most likely token has
	// less than this probability, nothing more is proposed (llama.cpp's
	// --draft-p-min, which reads the top probability too; its default
	// there is 0).
	// The stop depends only on the draft, so output stays lossless. 0: off.
	DraftPMin float64
	// GrammarMaskLimit bounds the time of one grammar's full mask (the
	// tokens it allows next, on the loop): a request whose grammar takes
	// longer fails at once (decision 0016). 0: 100 ms, or 2 µs per token
	// of a larger vocabulary.
	GrammarMaskLimit time.Duration
	// SpecMinGain is the margin adaptive k asks of speculation: a step
	// speculates only if the cost model expects more than this fraction
	// above plain decoding's tokens per second (specdec.KConfig.MinGain).
	// 0: the default, 0.1; negative: no margin.
	SpecMinGain float64
	// Threads is the compute threads of the one thread pool that target
	// and draft share (they never decode at once). Default 2.
	Threads int
	// DecodeThreads is how many of those threads each decode uses:
	// "auto" (default) picks one or all per decode, by the decode times it
	// measures for each model and batch size (threadChooser); "all" always
	// uses all of them.
	DecodeThreads string
	// FlashAttn: "off" (default, faster on CPU here), "on", "auto".
	FlashAttn string
	// KVType: "auto" (default: f32 for a model stored in f32 or with
	// heads of at most 16 dimensions, else f16; engine.AutoKVType), "f16",
	// "f32", "q8_0", ... Each model's context
	// resolves "auto" for itself.
	KVType string
}

// DefaultSpecMinGain is SpecMinGain's default: adaptive k speculates only
// where the cost model expects it to pay by more than 10 % (decisions/0008).
const DefaultSpecMinGain = 0.1

// EnsureDefaults fills zero fields.
func (c *Config) EnsureDefaults() {
	if c.CtxSize == 0 {
		c.CtxSize = 4096
	}
	if c.MaxRunning == 0 {
		c.MaxRunning = 8
	}
	if c.MaxBatchTokens == 0 {
		c.MaxBatchTokens = 512
	}
	if c.MaxWaiting == 0 {
		c.MaxWaiting = 256
	}
	if c.BlockSize == 0 {
		c.BlockSize = 16
	}
	if c.Preemption == "" {
		c.Preemption = "recompute"
	}
	if c.KMin == 0 {
		c.KMin = 1
	}
	if c.KMax == 0 {
		c.KMax = 8
	}
	if c.Threads == 0 {
		c.Threads = 2
	}
	if c.DecodeThreads == "" {
		c.DecodeThreads = "auto"
	}
	if c.SpecMinGain == 0 {
		c.SpecMinGain = DefaultSpecMinGain
	}
	if c.FlashAttn == "" {
		c.FlashAttn = "off"
	}
	if c.KVType == "" {
		c.KVType = "auto"
	}
}

// Validate reports the first invalid field.
func (c *Config) Validate() error {
	switch {
	case c.CtxSize < 16:
		return fmt.Errorf("ctx-size %d: must be at least 16", c.CtxSize)
	case c.MaxRunning < 1 || c.MaxRunning > 128:
		return fmt.Errorf("parallel %d: must be in 1..128", c.MaxRunning)
	case c.MaxBatchTokens < 1:
		return fmt.Errorf("batch budget %d: must be positive", c.MaxBatchTokens)
	case c.MaxWaiting < 1:
		return fmt.Errorf("max waiting %d: must be positive", c.MaxWaiting)
	case c.BlockSize < 1 || c.BlockSize > 1024:
		return fmt.Errorf("block size %d: must be in 1..1024", c.BlockSize)
	case c.CtxSize/c.BlockSize < 1:
		return fmt.Errorf("ctx-size %d is smaller than one block (%d)", c.CtxSize, c.BlockSize)
	case c.PrefixCacheBlocks < 0 || c.PrefixCacheBlocks > c.CtxSize/c.BlockSize:
		return fmt.Errorf("prefix-cache-blocks %d: must be in 0..%d (ctx-size / block size; 0 = default)", c.PrefixCacheBlocks, c.CtxSize/c.BlockSize)
	case c.Preemption != "recompute" && c.Preemption != "swap":
		return fmt.Errorf("preemption %q: must be recompute or swap", c.Preemption)
	case c.Proposer != "" && c.Proposer != "draft" && c.Proposer != "ngram" && c.Proposer != "none":
		return fmt.Errorf("proposer %q: must be draft, ngram or none", c.Proposer)
	case c.SpecK < 0 || c.SpecK > maxK:
		return fmt.Errorf("spec-k %d: must be in 0..%d", c.SpecK, maxK)
	case c.KMin < 0 || c.KMax < c.KMin || c.KMax > maxK:
		return fmt.Errorf("k bounds %d..%d: need 0 <= kmin <= kmax <= %d", c.KMin, c.KMax, maxK)
	case c.DraftPMin < 0 || c.DraftPMin >= 1:
		return fmt.Errorf("draft p-min %g: must be in [0, 1)", c.DraftPMin)
	case !(c.SpecMinGain <= 10): // negative = none; NaN fails
		return fmt.Errorf("speculation min gain %g: must be at most 10", c.SpecMinGain)
	case c.Threads < 1:
		return fmt.Errorf("threads %d: must be positive", c.Threads)
	case c.DecodeThreads != "auto" && c.DecodeThreads != "all":
		return fmt.Errorf("decode threads %q: must be auto or all", c.DecodeThreads)
	case c.FlashAttn != "off" && c.FlashAttn != "on" && c.FlashAttn != "auto":
		return fmt.Errorf("flash-attn %q: must be off, on or auto", c.FlashAttn)
	}
	if c.SplitKV && c.CtxSize/c.MaxRunning < 16 {
		return fmt.Errorf("ctx-size %d over %d sequences leaves %d tokens each: too few", c.CtxSize, c.MaxRunning, c.CtxSize/c.MaxRunning)
	}
	if c.MaxBatchTokens < c.MaxRunning*(c.KMax+1) {
		return fmt.Errorf("batch budget %d is smaller than parallel × (kmax+1) = %d", c.MaxBatchTokens, c.MaxRunning*(c.KMax+1))
	}
	return nil
}

// maxK is the longest draft the scheduler ever verifies.
const maxK = 16
