package server

import (
	"errors"
	"fmt"
	"time"
)

// Config is the HTTP server's configuration. A zero field takes the default
// written next to it (see withDefaults); Validate refuses values that no
// default can fix.
type Config struct {
	Host string // default "127.0.0.1"
	Port int    // default 8080
	// APIKeys, when non-empty, are the accepted bearer tokens for /v1/*
	// (Authorization: Bearer <key>). /health and /metrics stay open.
	APIKeys []string
	// MaxBodyBytes bounds a request body; larger ones get 413. Default 4 MiB.
	MaxBodyBytes int
	// RequestTimeout bounds one generation request from arrival to its last
	// byte; at the deadline the request is cancelled (504, or an error event
	// in a stream). Default 10m.
	RequestTimeout time.Duration
	// ShutdownGrace is how long Shutdown lets in-flight requests finish
	// before it cancels them. Default 10s.
	ShutdownGrace time.Duration
	// DefaultMaxTokens is the completion length when the request gives none
	// (capped by the room left in the context). Default 256.
	DefaultMaxTokens int
	// MaxN is the largest accepted `n` (choices per prompt). Default 16.
	MaxN int
	// StreamInterval is how many tokens' text a streamed choice sends per
	// chunk after its first chunk, which goes out at once (vLLM's and
	// SGLang's --stream-interval): each chunk is a socket write and a wake-up
	// of the client, which at many concurrent streams costs the host more
	// than the tokens do. The last chunk carries what is left. Default 1:
	// every token as it comes.
	StreamInterval int
}

// Defaults of Config's zero fields.
const (
	DefaultHost             = "127.0.0.1"
	DefaultPort             = 8080
	DefaultMaxBodyBytes     = 4 << 20
	DefaultRequestTimeout   = 10 * time.Minute
	DefaultShutdownGrace    = 10 * time.Second
	DefaultDefaultMaxTokens = 256
	DefaultMaxN             = 16
	DefaultStreamInterval   = 1
)

// maxPrompts bounds the prompts of one /v1/completions request: each becomes
// n scheduler requests, and a body of a million one-token prompts must not
// become a million submissions.
const maxPrompts = 256

func (c Config) withDefaults() Config {
	if c.Host == "" {
		c.Host = DefaultHost
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = DefaultShutdownGrace
	}
	if c.DefaultMaxTokens == 0 {
		c.DefaultMaxTokens = DefaultDefaultMaxTokens
	}
	if c.MaxN == 0 {
		c.MaxN = DefaultMaxN
	}
	if c.StreamInterval == 0 {
		c.StreamInterval = DefaultStreamInterval
	}
	return c
}

// Validate reports the first invalid field. Zero fields are valid (they
// take their defaults).
func (c Config) Validate() error {
	switch {
	case c.Port < 0 || c.Port > 65535:
		return fmt.Errorf("server: Port %d out of range [0, 65535]", c.Port)
	case c.MaxBodyBytes < 0:
		return fmt.Errorf("server: MaxBodyBytes %d < 0", c.MaxBodyBytes)
	case c.RequestTimeout < 0:
		return fmt.Errorf("server: RequestTimeout %v < 0", c.RequestTimeout)
	case c.ShutdownGrace < 0:
		return fmt.Errorf("server: ShutdownGrace %v < 0", c.ShutdownGrace)
	case c.DefaultMaxTokens < 0:
		return fmt.Errorf("server: DefaultMaxTokens %d < 0", c.DefaultMaxTokens)
	case c.MaxN < 0:
		return fmt.Errorf("server: MaxN %d < 0", c.MaxN)
	case c.StreamInterval < 0:
		return fmt.Errorf("server: StreamInterval %d < 0", c.StreamInterval)
	}
	for i, k := range c.APIKeys {
		if k == "" {
			return errors.New("server: APIKeys[" + fmt.Sprint(i) + "] is empty")
		}
	}
	return nil
}
