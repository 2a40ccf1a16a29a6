package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"specd/paging"
	"specd/specdec"
)

// Scheduler runs the continuous-batching loop. One goroutine (Run) owns all
// sequence state and both model contexts; requests arrive through Submit and
// leave through their own event channels.
type Scheduler struct {
	cfg    Config
	target Model
	draft  Model // nil without a draft model
	vocab  Vocab
	nVocab int
	alloc  *paging.Allocator
	log    *slog.Logger

	inbox   chan *seq
	nWait   atomic.Int64 // requests submitted and not yet admitted
	closed  atomic.Bool
	nextID  atomic.Uint64
	wake    chan struct{}
	done    chan struct{}
	stopped atomic.Bool

	// Loop state.
	waiting  []*seq // FIFO; preempted sequences go to the front
	running  []*seq // admission order
	admitSeq uint64
	costs    specdec.CostModel
	// draftIdle: this step the draft model cannot pay even at full
	// acceptance, or adaptive k has not let any sequence draft with it
	// for draftIdleSteps steps, so sequences' draft KV trails without
	// bound (planK).
	draftIdle     bool
	draftUnchosen int // steps in a row in which no sequence drafted with the model
	// exploreCredit (seconds): while adaptive k lets no sequence draft
	// with the model, exploreShare of each step's priced target decode
	// accrues here, and a try of the draft spends it (exploreDraft).
	// exploreNext rotates the tries over the running sequences.
	exploreCredit float64
	exploreNext   int
	draftRows     uint64 // draft tokens decoded since the last stats update
	chooser       specdec.BatchChooser
	ws            *specdec.Workspace // sampling scratch shared by all requests (loop goroutine only)
	eog           []int32            // the vocabulary's end-of-generation tokens, found at the first min_tokens (loop goroutine only)
	bseqs         []specdec.BatchSeq
	// Scratch: the target decode's rows per sequence in slot order, and
	// its ubatches (decodeTarget).
	ubSlots, ubRows, ubBuf []int
	kcfg                   specdec.KConfig
	items                  []item // scratch: this step's plan
	tokBuf                 []int32
	rowsBuf                [][]float32
	gsaved                 [][]float32 // verify rows before a grammar masked them (logprobs)
	// Finished sequences whose Done event the reader has not taken yet.
	undelivered []*seq

	statsMu sync.Mutex
	stats   Stats

	// Tests: compare the scheduler's view of each sequence with the KV, and
	// narrate decisions for golden traces.
	trace    func(format string, args ...any)
	checkKV  bool
	costSeam specdec.Costs // replaces the measured costs
	kvErr    error
	kvCheckN int
}

// New makes a scheduler over a target model context, an optional draft
// context (nil for none) and the target's vocabulary. The contexts must have
// at least NumSlots() sequences and CtxSize cells, unified KV.
func New(cfg Config, target, draft Model, vocab Vocab, logger *slog.Logger) (*Scheduler, error) {
	cfg.EnsureDefaults()
	if cfg.Proposer == "" {
		if draft != nil {
			cfg.Proposer = "draft"
		} else {
			cfg.Proposer = "none"
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Proposer == "draft" && draft == nil {
		return nil, errors.New("proposer draft needs a draft model")
	}
	if cfg.MaxSeqLen == 0 || cfg.MaxSeqLen > cfg.CtxSize {
		cfg.MaxSeqLen = cfg.CtxSize
	}
	if cfg.SplitKV {
		cfg.MaxSeqLen = min(cfg.MaxSeqLen, cfg.CtxSize/NumSlots(cfg))
	}
	if logger == nil {
		logger = slog.Default()
	}
	s := &Scheduler{
		cfg:    cfg,
		target: target,
		draft:  draft,
		vocab:  vocab,
		nVocab: vocab.NTokens(),
		log:    logger,
		inbox:  make(chan *seq, cfg.MaxWaiting),
		ws:     specdec.NewWorkspace(vocab.NTokens()),
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
		kcfg: specdec.KConfig{
			KMin:    cfg.KMin,
			KMax:    cfg.KMax,
			Fixed:   cfg.SpecK,
			MinGain: max(cfg.SpecMinGain, 0),
			Streams: cfg.SplitKV,
			UBatch:  cfg.MaxBatchTokens,
		},
	}
	cached := cfg.PrefixCacheBlocks
	if cached == 0 && cfg.SplitKV {
		cached = cfg.CtxSize / cfg.BlockSize
	}
	alloc, err := paging.New(paging.Config{
		BlockSize:       cfg.BlockSize,
		NumBlocks:       cfg.CtxSize / cfg.BlockSize,
		NumSlots:        NumSlots(cfg),
		PrefixCache:     !cfg.DisablePrefixCache,
		MaxCachedBlocks: cached,
		SlotLocal:       cfg.SplitKV,
	}, kvOps{s})
	if err != nil {
		return nil, err
	}
	s.alloc = alloc
	s.stats.AcceptedByPosition = make([]uint64, maxK)
	s.stats.ProposedByPosition = make([]uint64, maxK)
	return s, nil
}

// NumSlots is how many llama.cpp sequence ids the contexts need: running
// sequences plus as many again to hold prefix-cache blocks of finished ones
// (with SplitKV, one stream per running sequence: a finished sequence's
// stream keeps its cache until a new sequence takes it over).
func NumSlots(cfg Config) int {
	cfg.EnsureDefaults()
	if cfg.SplitKV {
		return cfg.MaxRunning
	}
	n := 2 * cfg.MaxRunning
	if n > 256 {
		n = 256
	}
	return n
}

// kvOps applies paging's KV requests to both contexts, so the target's and
// the draft's caches stay in step.
type kvOps struct{ s *Scheduler }

func (k kvOps) Remove(slot int32, p0, p1 int32) {
	k.s.target.Remove(slot, p0, p1)
	if k.s.draft != nil {
		k.s.draft.Remove(slot, p0, p1)
	}
}

func (k kvOps) Copy(src, dst int32, p0, p1 int32) {
	k.s.target.Copy(src, dst, p0, p1)
	if k.s.draft != nil {
		k.s.draft.Copy(src, dst, p0, p1)
	}
}

// Config returns the effective configuration (defaults filled).
func (s *Scheduler) Config() Config { return s.cfg }

// Submit queues a request. It fails at once with ErrQueueFull when the
// waiting queue is full and ErrClosed after Close; invalid requests get
// ErrBadRequest, ErrEmptyPrompt or ErrPromptTooLong (wrapped with details).
// Cancelling ctx removes the request within one step.
func (s *Scheduler) Submit(ctx context.Context, r Request) (<-chan Event, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if err := s.validate(&r); err != nil {
		return nil, err
	}
	var g specdec.Grammar
	if r.Grammar != "" {
		gc, ok := s.vocab.(GrammarCompiler)
		if !ok {
			return nil, fmt.Errorf("%w: this backend has no grammar support", ErrBadRequest)
		}
		var err error
		if g, err = gc.CompileGrammar(r.Grammar); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
		}
	}
	if r.PromptLogprobs {
		r.NoPrefixCache = true // every prompt row is computed
	}
	if s.nWait.Add(1) > int64(s.cfg.MaxWaiting) {
		s.nWait.Add(-1)
		freeGrammar(g)
		return nil, ErrQueueFull
	}
	q := &seq{
		grammar:   g,
		id:        s.nextID.Add(1),
		ctx:       ctx,
		req:       r,
		events:    make(chan Event, 64),
		tokens:    append(make([]int32, 0, len(r.Prompt)+r.MaxTokens+maxK+1), r.Prompt...),
		nPrompt:   len(r.Prompt),
		submitted: time.Now(),
		out:       newTextOut(r.Stop, r.KeepStop),
		slot:      -1,
	}
	q.fixedK = r.Speculative.K
	q.acc = specdec.NewAcceptance(s.kcfg)
	switch p := r.Speculative.Proposer; {
	case len(r.Prediction) > 0 && (p == "" || p == "prediction"):
		q.proposer = propPrediction
		q.pred = specdec.NewPrediction(r.Prediction)
	case p == "":
		q.proposer = parseProposer(s.cfg.Proposer)
	default:
		q.proposer = parseProposer(p)
	}
	if q.fixedK == 0 && s.cfg.SpecK > 0 {
		q.fixedK = s.cfg.SpecK
	}
	select {
	case s.inbox <- q:
	default:
		s.nWait.Add(-1)
		freeGrammar(g)
		return nil, ErrQueueFull
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return q.events, nil
}

func parseProposer(p string) proposerKind {
	switch p {
	case "draft":
		return propDraft
	case "ngram":
		return propNGram
	case "prediction":
		return propPrediction
	}
	return propNone
}

func (s *Scheduler) validate(r *Request) error {
	if len(r.Prompt) == 0 {
		return ErrEmptyPrompt
	}
	for i, t := range r.Prompt {
		if t < 0 || int(t) >= s.nVocab {
			return fmt.Errorf("%w: prompt token %d at index %d is outside the vocabulary (0..%d)", ErrBadRequest, t, i, s.nVocab-1)
		}
	}
	for _, t := range r.Prediction {
		if t < 0 || int(t) >= s.nVocab {
			return fmt.Errorf("%w: prediction token %d is outside the vocabulary", ErrBadRequest, t)
		}
	}
	if r.MaxTokens < 1 && !(r.MaxTokens == 0 && r.PromptLogprobs) {
		return fmt.Errorf("%w: max_tokens must be at least 1 (0 only with prompt logprobs)", ErrBadRequest)
	}
	if len(r.Prompt)+1 > s.cfg.MaxSeqLen {
		return fmt.Errorf("%w: %d prompt tokens, the context holds %d per sequence", ErrPromptTooLong, len(r.Prompt), s.cfg.MaxSeqLen)
	}
	if r.MaxTokens > s.cfg.MaxSeqLen-len(r.Prompt) {
		r.MaxTokens = s.cfg.MaxSeqLen - len(r.Prompt)
	}
	switch r.Speculative.Proposer {
	case "", "none", "ngram", "prediction":
	case "draft":
		if s.draft == nil {
			return fmt.Errorf("%w: speculative.proposer \"draft\" needs a draft model, and none is loaded", ErrBadRequest)
		}
	default:
		return fmt.Errorf("%w: speculative.proposer %q: must be draft, ngram or none", ErrBadRequest, r.Speculative.Proposer)
	}
	if r.Speculative.K < 0 || r.Speculative.K > s.cfg.KMax {
		return fmt.Errorf("%w: speculative.k %d: must be in 0..%d", ErrBadRequest, r.Speculative.K, s.cfg.KMax)
	}
	if r.MinTokens < 0 || r.MinTokens > r.MaxTokens || (r.MinTokens > 0 && r.Grammar != "") {
		return fmt.Errorf("%w: min_tokens %d: must be in 0..max_tokens (%d), and 0 under structured outputs", ErrBadRequest, r.MinTokens, r.MaxTokens)
	}
	if len(r.StopTokens) > MaxStopTokens {
		return fmt.Errorf("%w: %d stop tokens, at most %d", ErrBadRequest, len(r.StopTokens), MaxStopTokens)
	}
	for _, t := range r.StopTokens {
		if t < 0 || int(t) >= s.nVocab {
			return fmt.Errorf("%w: stop token %d: tokens must be in 0..%d", ErrBadRequest, t, s.nVocab-1)
		}
	}
	for t, b := range r.LogitBias {
		if t < 0 || int(t) >= s.nVocab || !(b >= -specdec.MaxLogitBias && b <= specdec.MaxLogitBias) {
			return fmt.Errorf("%w: logit_bias %d: %v: tokens must be in 0..%d, biases in -%d..%d", ErrBadRequest, t, b, s.nVocab-1, specdec.MaxLogitBias, specdec.MaxLogitBias)
		}
	}
	for _, v := range []float32{r.Sampling.PresencePenalty, r.Sampling.FrequencyPenalty} {
		if !(v >= -specdec.MaxPenalty && v <= specdec.MaxPenalty) {
			return fmt.Errorf("%w: presence and frequency penalties must be in -%d..%d", ErrBadRequest, specdec.MaxPenalty, specdec.MaxPenalty)
		}
	}
	if rp := r.Sampling.RepeatPenalty; rp != 0 && !(rp > 0 && rp <= specdec.MaxRepeatPenalty) || r.Sampling.RepeatLastN < -1 {
		return fmt.Errorf("%w: repeat_penalty %v: must be in (0, %d]; repeat_last_n %d: must be >= -1", ErrBadRequest, rp, specdec.MaxRepeatPenalty, r.Sampling.RepeatLastN)
	}
	if r.TopLogprobs < 0 || r.TopLogprobs > specdec.MaxTopLogprobs || (r.TopLogprobs > 0 && !r.Logprobs) {
		return fmt.Errorf("%w: top_logprobs %d: must be in 0..%d, with logprobs on", ErrBadRequest, r.TopLogprobs, specdec.MaxTopLogprobs)
	}
	smp := specdec.SamplingParams{Temperature: r.Sampling.Temperature, TopK: r.Sampling.TopK, TopP: r.Sampling.TopP, MinP: r.Sampling.MinP, Seed: r.Sampling.Seed}
	if err := smp.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	return nil
}

// Close stops accepting requests; Run then finishes the running and waiting
// ones and returns. Use the context given to Run to stop at once.
func (s *Scheduler) Close() {
	s.closed.Store(true)
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Done is closed when Run has returned.
func (s *Scheduler) Done() <-chan struct{} { return s.done }

// Stats returns a snapshot for /metrics.
func (s *Scheduler) Stats() Stats {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	st := s.stats
	st.AcceptedByPosition = append([]uint64(nil), s.stats.AcceptedByPosition...)
	st.ProposedByPosition = append([]uint64(nil), s.stats.ProposedByPosition...)
	return st
}

// Run is the loop. It returns when ctx is cancelled (failing every request
// still in flight) or after Close once all work is done.
//
// The loop stays on one OS thread (runtime.LockOSThread): every llama_decode
// is made from it, and native backends keep per-thread state: an OpenMP
// build of ggml keeps one worker team per calling thread, so a goroutine
// that migrated between threads woke a cold team (or made a new one) for
// many decodes; GPU backends keep a current device per thread.
func (s *Scheduler) Run(ctx context.Context) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer close(s.done)
	defer s.stopped.Store(true)
	for {
		s.drainInbox()
		if len(s.waiting) == 0 && len(s.running) == 0 {
			if s.closed.Load() && len(s.inbox) == 0 {
				s.publishStats(0, 0)
				return
			}
			s.publishStats(0, 0)
			var retry <-chan time.Time
			if len(s.undelivered) > 0 {
				retry = time.After(time.Millisecond)
			}
			select {
			case <-ctx.Done():
				s.abortAll(ctx.Err())
				return
			case q := <-s.inbox:
				s.accept(q)
			case <-s.wake:
			case <-retry:
				s.reap()
			}
			continue
		}
		if ctx.Err() != nil {
			s.abortAll(ctx.Err())
			return
		}
		s.safeStep()
	}
}

// accept takes a submitted request into the loop's waiting queue. Samplers
// are made here, on the loop goroutine, because they share its workspace.
func (s *Scheduler) accept(q *seq) {
	r := q.req.Sampling
	q.sampler = specdec.NewSamplerIn(specdec.SamplingParams{
		Temperature: r.Temperature, TopK: r.TopK, TopP: r.TopP, MinP: r.MinP, Seed: r.Seed,
	}, s.ws)
	q.adjust = specdec.NewAdjust(q.req.LogitBias, r.PresencePenalty, r.FrequencyPenalty)
	if r.RepeatPenalty != 0 {
		lastN := r.RepeatLastN
		if lastN < 0 {
			lastN = s.cfg.MaxSeqLen
		}
		q.adjust = q.adjust.WithRepeat(r.RepeatPenalty, lastN, q.req.Prompt)
	}
	if q.req.MinTokens > 0 {
		ban := q.req.StopTokens
		if !q.req.IgnoreEOS {
			ban = append(slices.Clip(ban), s.eogTokens()...)
		}
		q.adjust = q.adjust.WithMinTokens(q.req.MinTokens, ban)
	}
	s.waiting = append(s.waiting, q)
}

// eogTokens lists the vocabulary's end-of-generation tokens (once).
func (s *Scheduler) eogTokens() []int32 {
	if s.eog == nil {
		s.eog = []int32{}
		for t := range int32(s.nVocab) {
			if s.vocab.IsEOG(t) {
				s.eog = append(s.eog, t)
			}
		}
	}
	return s.eog
}

func (s *Scheduler) drainInbox() {
	for {
		select {
		case q := <-s.inbox:
			s.accept(q)
		default:
			return
		}
	}
}

// safeStep runs one step; a panic inside (a bug, or a native failure that
// surfaced as one) fails the sequences of that step, not the daemon.
func (s *Scheduler) safeStep() {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("scheduler step panicked; failing its sequences", "panic", r)
			err := fmt.Errorf("internal error: %v", r)
			for _, q := range append([]*seq(nil), s.running...) {
				s.finish(q, "", err)
			}
			s.target.Discard()
			if s.draft != nil {
				s.draft.Discard()
			}
		}
	}()
	s.step()
}

func (s *Scheduler) abortAll(err error) {
	s.drainInbox()
	for _, q := range append([]*seq(nil), s.running...) {
		s.finish(q, "", err)
	}
	for _, q := range s.waiting {
		s.nWait.Add(-1)
		q.finished = true
		q.usage.PromptTokens = q.nPrompt
		s.deliver(q, Event{Done: true, Err: err, Usage: q.usage}, true)
	}
	s.waiting = nil
}

// publishStats refreshes the snapshot Stats returns.
func (s *Scheduler) publishStats(step, decode time.Duration) {
	ps := s.alloc.Stats()
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	st := &s.stats
	st.Waiting = int(s.nWait.Load())
	st.Running = len(s.running)
	st.KVBlocksTotal = ps.Total
	st.KVBlocksUsed = ps.Used
	st.KVBlocksCached = ps.Cached
	st.PrefixQueries = ps.PrefixQueries
	st.PrefixHits = ps.PrefixHits
	st.PrefixStreamCopies = ps.StreamCopies
	if step > 0 {
		st.Steps++
		st.StepTime += step
		st.DecodeTime += decode
	}
}
