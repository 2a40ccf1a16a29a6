package server

import (
	"context"

	"specd/scheduler"
)

// Backend is what the server needs of the model and its scheduler. The
// daemon implements it over scheduler + engine; tests use a fake.
type Backend interface {
	// Submit queues one generation. The channel carries the request's events
	// (see scheduler.Event) and is closed after the Done event. Cancelling ctx
	// ends the request early (it still ends with a Done event). Errors before
	// queueing: scheduler.ErrQueueFull → 429, ErrClosed → 503,
	// ErrPromptTooLong / ErrEmptyPrompt / ErrBadRequest → 400; anything
	// else → 500.
	Submit(ctx context.Context, r scheduler.Request) (<-chan scheduler.Event, error)
	// Tokenize turns text into tokens, parsing special-token text (chat
	// templates rely on it). addSpecial adds BOS (and whatever else the model
	// wants at the start of a sequence) when the model asks for it; the
	// server passes false for a prediction, which continues a sequence.
	Tokenize(text string, addSpecial bool) ([]int32, error)
	// ApplyChatTemplate renders messages with the model's chat template,
	// ending with the assistant's turn opened. Its error text is shown to
	// the client in a 400.
	ApplyChatTemplate(msgs []scheduler.ChatMessage) (string, error)
	// TokenPiece is token t's text as generated text shows it (special
	// tokens have none), for logprobs.
	TokenPiece(t int32) string
	ModelID() string
	ContextSize() int // max tokens of one sequence (prompt + completion)
	VocabSize() int   // token ids of array prompts must be in [0, VocabSize)
	Stats() scheduler.Stats
}

// Props describes the served models for llama-server's GET /props.
type Props struct {
	Slots        int    // sequences decoded together
	ChatTemplate string // the template in use: a built-in's name or its source
	ModelPath    string
	DraftPath    string // "" without a draft model
}

// Propser is a Backend that describes itself for /props (the daemon's);
// without it /props gives what Backend alone tells.
type Propser interface {
	Props() Props
}
