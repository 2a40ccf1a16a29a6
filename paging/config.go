package paging

import (
	"errors"
	"fmt"
)

// MaxSlots is llama.cpp's LLAMA_MAX_SEQ: sequence ids live in [0, 256).
const MaxSlots = 256

// DefaultBlockSize is the block size in tokens when Config.BlockSize is 0.
const DefaultBlockSize = 16

// DefaultMaxCachedTokens sizes the prefix cache when Config.MaxCachedBlocks
// is 0: ceil(512 / BlockSize) blocks (32 of 16 tokens), at most NumBlocks.
//
// With llama.cpp's unified KV every decode attends over the pool's whole used
// cell range, cached cells included (masked), so each cached cell slows every
// decode. The default bounds that scan in cells, whatever the pool size: in
// BenchmarkPrefixPrefill a 1024-cell pool (a running 400-token request plus
// ~38 cached blocks) met the >= 5x warm/cold goal and a 4096-cell pool full
// of cached blocks did not (docs/decisions/0005-prefix-cache-budget.md).
// 512 tokens keep such a prompt's shared prefix; a longer prompt keeps its
// first 512 tokens (a sequence's deepest blocks are evicted first). Models
// whose weights dominate a decode pay far less per cached cell and gain from
// a larger budget.
const DefaultMaxCachedTokens = 512

// Config sizes an Allocator. Zero fields take the documented defaults
// (WithDefaults); the zero value of PrefixCache turns prefix caching off,
// DefaultConfig turns it on.
type Config struct {
	// BlockSize is the block size in tokens. Default 16.
	BlockSize int
	// NumBlocks is the pool size: the context size (n_ctx of the unified
	// KV cache) divided by BlockSize, rounded down. Required.
	NumBlocks int
	// NumSlots is how many llama.cpp sequence ids paging may hand out: the
	// contexts' n_seq_max, at most 256. Running sequences and the zombie
	// slots that keep prefix-cache blocks alive share them. Required.
	NumSlots int
	// PrefixCache keeps committed full blocks after their sequences end and
	// lets new prompts reuse them. DefaultConfig: true.
	PrefixCache bool
	// MaxCachedBlocks bounds the cached blocks: committed blocks no running
	// sequence references, kept only for later prompts. When Free leaves
	// more, the least recently used are evicted at once instead of lazily in
	// Grow. 0 = ceil(DefaultMaxCachedTokens / BlockSize), at most NumBlocks;
	// otherwise in [1, NumBlocks] (NumBlocks: no bound beyond the pool).
	MaxCachedBlocks int
	// SlotLocal says a slot's cells cannot be shared with another slot:
	// llama.cpp's per-sequence KV streams (kv_unified = false), where
	// llama_memory_seq_cp copies only whole streams. A prompt then reuses
	// cached blocks only from the one zombie slot it adopts (the slot whose
	// own leading blocks match it longest, as llama-server picks a slot by
	// its cached prompt), Copy is never called, and every committed block is
	// cached when its sequence ends (equal blocks in two slots are two
	// copies, each usable only by its own slot). Slots are chosen to keep the
	// running sequence ids in as few consecutive runs as possible.
	SlotLocal bool
}

// DefaultConfig is the configuration for a context of ctxSize cells shared
// by numSlots sequence ids, with 16-token blocks and prefix caching on.
func DefaultConfig(ctxSize, numSlots int) Config {
	return Config{
		BlockSize:   DefaultBlockSize,
		NumBlocks:   ctxSize / DefaultBlockSize,
		NumSlots:    numSlots,
		PrefixCache: true,
	}
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.BlockSize == 0 {
		c.BlockSize = DefaultBlockSize
	}
	if c.MaxCachedBlocks == 0 && c.BlockSize > 0 {
		c.MaxCachedBlocks = max(1, min(c.NumBlocks, (DefaultMaxCachedTokens+c.BlockSize-1)/c.BlockSize))
	}
	return c
}

// ErrConfig wraps every error Validate returns.
var ErrConfig = errors.New("paging: invalid config")

// Validate reports whether c (with defaults filled) describes a usable pool.
func (c Config) Validate() error {
	c = c.WithDefaults()
	switch {
	case c.BlockSize < 1 || c.BlockSize > 1<<16:
		return fmt.Errorf("%w: BlockSize %d not in [1, 65536]", ErrConfig, c.BlockSize)
	case c.NumBlocks < 1:
		return fmt.Errorf("%w: NumBlocks %d < 1 (context smaller than one block?)", ErrConfig, c.NumBlocks)
	case int64(c.NumBlocks)*int64(c.BlockSize) > 1<<30:
		return fmt.Errorf("%w: NumBlocks×BlockSize = %d positions exceeds 2^30", ErrConfig, int64(c.NumBlocks)*int64(c.BlockSize))
	case c.NumSlots < 1 || c.NumSlots > MaxSlots:
		return fmt.Errorf("%w: NumSlots %d not in [1, %d]", ErrConfig, c.NumSlots, MaxSlots)
	case c.MaxCachedBlocks < 1 || c.MaxCachedBlocks > c.NumBlocks:
		return fmt.Errorf("%w: MaxCachedBlocks %d not in [0, NumBlocks %d] (0 = default)", ErrConfig, c.MaxCachedBlocks, c.NumBlocks)
	}
	return nil
}
