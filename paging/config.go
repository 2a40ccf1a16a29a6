package paging

import (
	"errors"
	"fmt"
)

// MaxSlots is llama.cpp's LLAMA_MAX_SEQ: sequence ids live in [0, 256).
const MaxSlots = 256

// DefaultBlockSize is the block size in tokens when Config.BlockSize is 0.
const DefaultBlockSize = 16

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
	}
	return nil
}
