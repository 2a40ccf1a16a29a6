package server

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"

	"specd/engine"
	"specd/internal/testenv"
	"specd/scheduler"
)

// With SPECD_SERVER_BACKEND=real the behavioural tests (those built on
// newTestBackend) run against the real scheduler over llama.cpp on
// stories260K instead of the fake:
//
//	GGML_NO_BACKTRACE=1 SPECD_SERVER_BACKEND=real go test -race ./server/
func init() {
	if os.Getenv("SPECD_SERVER_BACKEND") == "real" {
		newTestBackend = realBackend
	}
}

var (
	realOnce sync.Once
	realB    *realStories
	realErr  error
)

// realStories is Backend over scheduler.Engine on stories260K, loaded once
// per test process and shared by the tests.
type realStories struct {
	eng    *scheduler.Engine
	target *engine.Model
	tmpl   string
}

func realBackend(t testing.TB) Backend {
	lib, model := testenv.LibDir(t), testenv.StoriesModel(t)
	realOnce.Do(func() {
		var l *engine.Library
		if l, realErr = engine.Open(engine.Options{LibDir: lib, Logger: slog.New(slog.DiscardHandler)}); realErr != nil {
			return
		}
		r := &realStories{tmpl: "chatml"}
		if r.target, realErr = l.LoadModel(context.Background(), engine.ModelParams{Path: model}); realErr != nil {
			return
		}
		if tm := r.target.Info().ChatTemplate; tm != "" {
			r.tmpl = tm
		}
		if r.eng, realErr = scheduler.NewEngine(scheduler.Config{CtxSize: 2048, MaxRunning: 8, Threads: 1}, l, r.target, nil, slog.New(slog.DiscardHandler)); realErr != nil {
			return
		}
		// Runs for the rest of the test process: the backend is shared.
		go r.eng.Run(context.Background())
		realB = r
	})
	if realErr != nil {
		t.Fatalf("real backend: %v", realErr)
	}
	return realB
}

func (r *realStories) Submit(ctx context.Context, q scheduler.Request) (<-chan scheduler.Event, error) {
	return r.eng.Submit(ctx, q)
}

func (r *realStories) Tokenize(text string, addSpecial bool) ([]int32, error) {
	return r.target.Vocab().Tokenize(text, addSpecial, true)
}

func (r *realStories) ApplyChatTemplate(msgs []scheduler.ChatMessage) (string, error) {
	em := make([]engine.ChatMessage, len(msgs))
	for i, m := range msgs {
		em[i] = engine.ChatMessage{Role: m.Role, Content: m.Content}
	}
	return r.target.ApplyChatTemplate(r.tmpl, em, true)
}

func (r *realStories) TokenPiece(t int32) string {
	return string(r.target.Vocab().AppendPiece(nil, t, false))
}

func (r *realStories) ModelID() string        { return "stories260K" }
func (r *realStories) ContextSize() int       { return r.eng.Config().MaxSeqLen }
func (r *realStories) VocabSize() int         { return r.target.Vocab().NTokens() }
func (r *realStories) Stats() scheduler.Stats { return r.eng.Stats() }
