package scheduler

import (
	"context"
	"errors"
	"time"

	"specd/specdec"
)

// Errors Submit returns before a request is queued. The server maps them to
// HTTP statuses (ErrQueueFull → 429, ErrClosed → 503, the others → 400).
var (
	ErrQueueFull     = errors.New("scheduler: waiting queue is full")
	ErrClosed        = errors.New("scheduler: shutting down")
	ErrPromptTooLong = errors.New("scheduler: prompt does not fit the context")
	ErrEmptyPrompt   = errors.New("scheduler: empty prompt")
	ErrBadRequest    = errors.New("scheduler: invalid request")
)

// Sampling is how a request picks tokens. Temperature 0 is greedy.
type Sampling struct {
	Temperature float32 // 0 = greedy (argmax)
	TopK        int     // 0 = off
	TopP        float32 // 1 = off
	MinP        float32 // 0 = off
	Seed        uint64  // per-request random stream; same seed, same output
	// OpenAI's penalties over the generated tokens, in ±specdec.MaxPenalty
	// (specdec.Adjust): 0 = off.
	PresencePenalty, FrequencyPenalty float32
	// llama.cpp's repeat_penalty over the last RepeatLastN tokens of prompt
	// and output (-1: all of them); 0 (or 1) = off. In
	// (0, specdec.MaxRepeatPenalty].
	RepeatPenalty float32
	RepeatLastN   int
}

// Speculative are a request's speculation settings (the `speculative`
// extension object of the HTTP API). Zero value: the daemon's defaults.
type Speculative struct {
	Proposer string // "" (default), "draft", "ngram", "none"
	K        int    // 0 = default (adaptive or the configured fixed k); > 0 fixed k
}

// Request is one generation. Prompt is already tokenized (Tokenize).
type Request struct {
	Prompt    []int32
	MaxTokens int // > 0
	Sampling  Sampling
	Stop      []string // stop strings: never emitted, not part of the output
	// StopTokens end the choice when one is generated, even with
	// IgnoreEOS (vLLM's stop_token_ids); the token and its text are part
	// of the output (a control token has no text).
	StopTokens []int32
	// MinTokens (vLLM's min_tokens): until this many tokens are generated,
	// end-of-generation tokens (unless IgnoreEOS) and StopTokens cannot be
	// chosen. At most MaxTokens; not with a Grammar, whose end may allow
	// nothing else.
	MinTokens int
	// KeepStop keeps the stop string that ended the output in it (vLLM's
	// include_stop_str_in_output); SpecialText renders control tokens'
	// text, like "<s>" (vLLM's skip_special_tokens: false). The
	// end-of-generation token that ends an output has no text either way.
	KeepStop, SpecialText bool
	IgnoreEOS             bool
	// NoPrefixCache: do not reuse cached KV for this prompt (llama.cpp's
	// cache_prompt: false); its own blocks are still cached for later ones.
	NoPrefixCache bool
	Speculative   Speculative
	Prediction    []int32 // OpenAI Predicted Outputs, tokenized; used as the draft
	// Logprobs: report each generated token's log-probability and the
	// TopLogprobs (0..specdec.MaxTopLogprobs) most likely tokens at its
	// position (Event.Logprobs).
	Logprobs    bool
	TopLogprobs int
	// PromptLogprobs: also report each prompt token's log-probability
	// given the tokens before it (all but the first; TopLogprobs
	// alternatives each), in Event.PromptLogprobs, as the prefill computes
	// them (the prefix cache is skipped). MaxTokens may then be 0: score
	// the prompt, generate nothing (finish reason "length").
	PromptLogprobs bool
	// LogitBias (OpenAI's logit_bias) is added to the target's logits
	// before sampling and verification (the output is the biased target's),
	// and to the draft model's, so that it proposes what the biased target
	// keeps: token → bias in ±specdec.MaxLogitBias.
	LogitBias map[int32]float32
	// Grammar (GBNF, start rule "root") constrains the output to its
	// language: each verify row and each draft model row is masked to the
	// tokens it allows after the text so far (specdec.ConstrainRows), so
	// the output is the constrained target's. Under a grammar an
	// end-of-generation token always ends the choice (even with IgnoreEOS).
	// Submit compiles it (GrammarCompiler); an invalid one is ErrBadRequest.
	Grammar string
}

// GrammarCompiler is what a Vocab implements to serve Request.Grammar.
type GrammarCompiler interface {
	CompileGrammar(gbnf string) (specdec.Grammar, error)
}

// TokenLogprob is a token and its log-probability under the target model's
// own distribution (log-softmax of its logits: temperature 1, no top-k,
// top-p or min-p), what OpenAI's logprobs report.
type TokenLogprob = specdec.TokenLogprob

// Logprob is one generated token's log-probability and the most likely
// tokens at its position, most likely first.
type Logprob struct {
	Token   int32
	Logprob float32
	Top     []TokenLogprob
}

// Event is what a request's channel carries: zero or more events with new
// text, then exactly one with Done set. The channel is closed after Done.
type Event struct {
	Text   string  // new text, always whole UTF-8 characters
	Tokens []int32 // the tokens behind Text (may be longer than Text shows while a stop string is pending)
	// Logprobs (Request.Logprobs): one per token of Tokens, except an
	// end-of-generation token that ended the sequence (it has no text).
	Logprobs []Logprob
	// PromptLogprobs (Request.PromptLogprobs): prompt tokens 1..n-1, in
	// order, all in one event before any generated token's.
	PromptLogprobs []Logprob
	Done           bool
	FinishReason   string // on Done: "stop" (EOG or stop string) or "length"
	Err            error  // on Done: non-nil if the request failed
	Usage          Usage  // on Done
}

// Usage is a finished request's accounting.
type Usage struct {
	PromptTokens     int
	CompletionTokens int
	CachedTokens     int // prompt tokens served from the prefix cache
	DraftProposed    int // draft tokens proposed for this request
	DraftAccepted    int // of which accepted
	Queued           time.Duration
	PromptTime       time.Duration // admission to first token
	GenTime          time.Duration // first token to done
}

// ChatMessage is one message of a chat prompt.
type ChatMessage struct {
	Role    string
	Content string
}

// Stats is a snapshot of the scheduler for /metrics.
type Stats struct {
	Waiting, Running     int
	KVBlocksTotal        int
	KVBlocksUsed         int
	KVBlocksCached       int
	PrefixQueries        uint64 // prompt blocks looked up
	PrefixHits           uint64 // prompt blocks found cached
	PrefixStreamCopies   uint64 // hits copied from a running sequence's KV stream (streams layout)
	PreemptionsRecomp    uint64
	PreemptionsSwap      uint64
	Steps                uint64
	DraftProposed        uint64
	DraftAccepted        uint64
	AcceptedByPosition   []uint64 // [i] = draft tokens accepted at draft position i
	ProposedByPosition   []uint64
	LastK                int           // k chosen at the last speculative step
	DraftTries           uint64        // steps in which a sequence drafted as a try while adaptive k chose no drafting (exploreDraft)
	StepTime, DecodeTime time.Duration // cumulative wall time of steps and of the target's llama_decode within them
	DraftDecodeTime      time.Duration // cumulative wall time of the draft model's decodes
	DraftDecoded         uint64        // tokens (rows) the draft model decoded
	// DecodeThreads counts decodes by the threads they ran on under
	// DecodeThreads auto: [0] target, [1] draft; [.][0] one thread, [.][1]
	// all. Filled by Engine.Stats.
	DecodeThreads [2][2]uint64
	// Decodes counts llama_decode calls, [0] target, [1] draft, and
	// GraphsReused the micro-batches that reused the context's previous
	// compute graph (same shape). Filled by Engine.Stats.
	Decodes, GraphsReused [2]uint64
	// GrammarTime is the wall time in grammar operations (structured
	// outputs, tools) and LiveGrammars the grammars alive (requests' and
	// their clones). Filled by Engine.Stats.
	GrammarTime  time.Duration
	LiveGrammars int64
}

// Submitter is what the server needs of the scheduler.
type Submitter interface {
	Submit(ctx context.Context, r Request) (<-chan Event, error)
}

// MaxStopTokens bounds Request.StopTokens (checked per generated token).
const MaxStopTokens = 256
