package server

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"specd/scheduler"
)

// fakeBackend is a deterministic stand-in for the scheduler: one token per
// byte of text (plus BOS 1), and a story told one word per token. It records
// every submitted request and whether its context was cancelled before it
// finished, which is what the disconnect tests check.
type fakeBackend struct {
	tokenDelay time.Duration // between generated tokens
	queueFull  atomic.Bool   // Submit returns ErrQueueFull
	closed     atomic.Bool   // Submit returns ErrClosed
	panicOn    string        // Tokenize panics on this text
	failAfter  int           // > 0: the request fails after this many tokens

	mu   sync.Mutex
	reqs []*fakeReq
}

type fakeReq struct {
	req       scheduler.Request
	ctx       context.Context
	cancelled atomic.Bool   // ctx ended before generation finished
	done      chan struct{} // closed after the Done event was sent
}

const (
	fakeVocab = 512
	fakeCtx   = 512
	fakeBOS   = 1
	fakeModel = "stories-fake"
)

// fakeStory is the fake's output: one word per token; without ignore_eos
// generation stops ("stop") after "The end.".
var fakeStory = strings.Fields("Once upon a time there was a little cat who liked to play. The end.")

func newFake() *fakeBackend { return &fakeBackend{} }

// TokenPiece: generated tokens 10.. are the story's words (with offset 0),
// prompt tokens 3..258 bytes.
func (f *fakeBackend) TokenPiece(t int32) string {
	switch {
	case t == 10:
		return fakeStory[0]
	case t >= 10 && t < 110:
		return " " + fakeStory[int(t-10)%len(fakeStory)]
	case t >= 3 && t < 259:
		return string([]byte{byte(t - 3)})
	}
	return ""
}

func (f *fakeBackend) ModelID() string  { return fakeModel }
func (f *fakeBackend) ContextSize() int { return fakeCtx }
func (f *fakeBackend) VocabSize() int   { return fakeVocab }

func (f *fakeBackend) Stats() scheduler.Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return scheduler.Stats{Waiting: 0, Running: len(f.reqs), KVBlocksTotal: 64, KVBlocksUsed: 10, KVBlocksCached: 3,
		PrefixQueries: 9, PrefixHits: 4, PreemptionsRecomp: 2, Steps: 100, DraftProposed: 40, DraftAccepted: 30,
		ProposedByPosition: []uint64{20, 20}, AcceptedByPosition: []uint64{18, 12}, LastK: 2,
		StepTime: time.Second, DecodeTime: 800 * time.Millisecond, DraftDecodeTime: 100 * time.Millisecond}
}

func (f *fakeBackend) Tokenize(text string, addSpecial bool) ([]int32, error) {
	if f.panicOn != "" && text == f.panicOn {
		panic("fake: tokenizer panic")
	}
	var toks []int32
	if addSpecial {
		toks = append(toks, fakeBOS)
	}
	for i := 0; i < len(text); i++ {
		toks = append(toks, 3+int32(text[i])) // 3..258
	}
	return toks, nil
}

func (f *fakeBackend) ApplyChatTemplate(msgs []scheduler.ChatMessage) (string, error) {
	var sb strings.Builder
	for _, m := range msgs {
		if strings.Contains(m.Content, "{%") {
			return "", errors.New("template syntax in message content")
		}
		sb.WriteString("<|" + m.Role + "|>" + m.Content + "\n")
	}
	sb.WriteString("<|assistant|>")
	return sb.String(), nil
}

func (f *fakeBackend) requests() []*fakeReq {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*fakeReq(nil), f.reqs...)
}

func (f *fakeBackend) Submit(ctx context.Context, r scheduler.Request) (<-chan scheduler.Event, error) {
	switch {
	case f.closed.Load():
		return nil, scheduler.ErrClosed
	case f.queueFull.Load():
		return nil, scheduler.ErrQueueFull
	case len(r.Prompt) == 0:
		return nil, scheduler.ErrEmptyPrompt
	case len(r.Prompt)+r.MaxTokens > fakeCtx:
		return nil, scheduler.ErrPromptTooLong
	case r.MaxTokens <= 0:
		return nil, scheduler.ErrBadRequest
	}
	fr := &fakeReq{req: r, ctx: ctx, done: make(chan struct{})}
	f.mu.Lock()
	f.reqs = append(f.reqs, fr)
	f.mu.Unlock()
	ch := make(chan scheduler.Event)
	go f.generate(fr, ch)
	return ch, nil
}

func (f *fakeBackend) generate(fr *fakeReq, ch chan<- scheduler.Event) {
	defer close(fr.done)
	defer close(ch)
	r := fr.req
	start := time.Now()
	u := scheduler.Usage{PromptTokens: len(r.Prompt), Queued: time.Millisecond, PromptTime: 2 * time.Millisecond}
	if len(r.Prediction) > 0 {
		u.DraftProposed = len(r.Prediction)
		u.DraftAccepted = len(r.Prediction) / 2
	}
	offset := 0
	if r.Sampling.Temperature > 0 {
		offset = int(r.Sampling.Seed % uint64(len(fakeStory)))
	}
	var out strings.Builder
	finish := "length"
	end := func(err error) {
		u.GenTime = time.Since(start)
		ch <- scheduler.Event{Done: true, FinishReason: finish, Err: err, Usage: u}
	}
	for i := 0; i < r.MaxTokens; i++ {
		if f.tokenDelay > 0 {
			select {
			case <-time.After(f.tokenDelay):
			case <-fr.ctx.Done():
			}
		}
		if err := fr.ctx.Err(); err != nil {
			fr.cancelled.Store(true)
			end(err)
			return
		}
		if f.failAfter > 0 && i == f.failAfter {
			end(errors.New("fake: decode failed"))
			return
		}
		w := fakeStory[(offset+i)%len(fakeStory)]
		text := w
		if i > 0 {
			text = " " + w
		}
		u.CompletionTokens++
		// Stop strings: the text up to the stop string is emitted, not the
		// stop string itself.
		before := out.Len()
		out.WriteString(text)
		stopped := false
		for _, s := range r.Stop {
			if k := strings.Index(out.String(), s); k >= 0 {
				text = out.String()[before:max(k, before)]
				stopped = true
				break
			}
		}
		if text != "" {
			tok := int32(10 + i%100)
			ev := scheduler.Event{Text: text, Tokens: []int32{tok}}
			if r.Logprobs {
				// The sampled token is the likeliest; then tokens 3, 4, ...
				lp := scheduler.Logprob{Token: tok, Logprob: -0.25}
				for j := range r.TopLogprobs {
					if j == 0 {
						lp.Top = append(lp.Top, scheduler.TokenLogprob{Token: tok, Logprob: -0.25})
					} else {
						lp.Top = append(lp.Top, scheduler.TokenLogprob{Token: int32(2 + j), Logprob: -1 - float32(j)})
					}
				}
				ev.Logprobs = []scheduler.Logprob{lp}
			}
			select {
			case ch <- ev:
			case <-fr.ctx.Done():
				fr.cancelled.Store(true)
				end(fr.ctx.Err())
				return
			}
		}
		if stopped || (!r.IgnoreEOS && w == "end.") {
			finish = "stop"
			break
		}
	}
	end(nil)
}
