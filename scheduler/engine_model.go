package scheduler

import (
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"specd/engine"
	"specd/internal/gbnf"
	"specd/specdec"
)

// engineModel adapts an engine.Context and its reusable batch to Model.
type engineModel struct {
	ctx   *engine.Context
	batch *engine.Batch
	// threads, if set, picks each decode's threads (DecodeThreads auto).
	threads *threadChooser
	// decodes counts llama_decode calls and reused the context's compute
	// graphs reused (written by the loop, read by Stats).
	decodes, reused atomic.Uint64
}

func (m *engineModel) Add(tok, pos, seq int32, logits bool) int {
	return m.batch.Add(tok, pos, seq, logits)
}
func (m *engineModel) Pending() int { return m.batch.Len() }
func (m *engineModel) Discard()     { m.batch.Reset() }
func (m *engineModel) Decode() error {
	defer m.count()
	if m.threads == nil {
		err := m.ctx.Decode(m.batch)
		m.batch.Reset()
		return err
	}
	rows := m.batch.Len()
	n := m.ctx.SetThreads(m.threads.choose(rows))
	t0 := time.Now()
	err := m.ctx.Decode(m.batch)
	if err == nil {
		m.threads.observe(rows, n, time.Since(t0))
	}
	m.batch.Reset()
	return err
}

func (m *engineModel) count() {
	m.decodes.Add(1)
	m.reused.Store(uint64(m.ctx.GraphsReused()))
}
func (m *engineModel) Logits(row int) []float32    { return m.ctx.Logits(row) }
func (m *engineModel) Remove(seq, p0, p1 int32)    { m.ctx.SeqRemove(seq, p0, p1) }
func (m *engineModel) Copy(src, dst, p0, p1 int32) { m.ctx.SeqCopy(src, dst, p0, p1) }
func (m *engineModel) PosMax(seq int32) int32      { return m.ctx.SeqPosMax(seq) }
func (m *engineModel) SaveState(seq int32) ([]byte, error) {
	return m.ctx.SaveSeqState(seq, nil)
}
func (m *engineModel) RestoreState(seq int32, data []byte) error {
	return m.ctx.RestoreSeqState(seq, data)
}

// Engine is a scheduler over real llama.cpp contexts: the target, an optional
// draft, and the one thread pool they share (draft and target never decode
// at once, so one pool of Threads serves both without oversubscribing).
type Engine struct {
	*Scheduler
	pool                *engine.ThreadPool
	tctx, dctx          *engine.Context
	tbatch, dbatch      *engine.Batch
	targetMod, draftMod *engine.Model
}

// NewEngine makes the contexts for cfg and a scheduler over them. draft may
// be nil. The caller keeps ownership of the models; Close frees the rest.
func NewEngine(cfg Config, lib *engine.Library, target, draft *engine.Model, logger *slog.Logger) (*Engine, error) {
	cfg.EnsureDefaults()
	if cfg.MaxSeqLen == 0 {
		cfg.MaxSeqLen = target.Info().NCtxTrain
	}
	if draft != nil {
		if err := target.Vocab().CompatibleWith(draft.Vocab()); err != nil {
			return nil, fmt.Errorf("draft model does not share the target's vocabulary: %w", err)
		}
	}
	e := &Engine{targetMod: target, draftMod: draft}
	ok := false
	defer func() {
		if !ok {
			e.Close()
		}
	}()
	var err error
	if e.pool, err = lib.NewThreadPool(cfg.Threads); err != nil {
		return nil, err
	}
	fa := map[string]engine.FlashAttn{"off": engine.FlashAttnOff, "on": engine.FlashAttnOn, "auto": engine.FlashAttnAuto}[cfg.FlashAttn]
	mk := func(m *engine.Model, outputs int) (*engine.Context, *engine.Batch, error) {
		p := engine.DefaultContextParams()
		// With a draft, one-thread decodes (the draft's, and the
		// target's one-row ones) sit between decodes on all threads:
		// pausing the pool for them makes the next decode wait for the
		// workers to wake, which the thread chooser does not see, and it
		// made adaptive k unstable on the heavy pair (decision 0002). The
		// one-thread pool is for a target alone.
		p.OneThreadOnPool = draft != nil
		p.NCtx = cfg.CtxSize
		p.NBatch = cfg.MaxBatchTokens
		p.NUBatch = cfg.MaxBatchTokens
		p.NSeqMax = NumSlots(cfg)
		// llama.cpp asserts n_outputs_max >= n_seq_max at the first decode.
		p.NOutputsMax = max(outputs, NumSlots(cfg))
		p.Threads = cfg.Threads
		p.ThreadPool = e.pool
		p.UnifiedKV = !cfg.SplitKV
		p.FlashAttn = fa
		p.TypeK, p.TypeV = engine.KVType(cfg.KVType), engine.KVType(cfg.KVType)
		c, err := m.NewContext(p)
		if err != nil {
			return nil, nil, err
		}
		b, err := lib.NewBatch(cfg.MaxBatchTokens)
		if err != nil {
			c.Close()
			return nil, nil, err
		}
		return c, b, nil
	}
	if e.tctx, e.tbatch, err = mk(target, min(cfg.MaxBatchTokens, cfg.MaxRunning*(cfg.KMax+1))); err != nil {
		return nil, fmt.Errorf("target context: %w", err)
	}
	if cfg.SplitKV {
		// llama.cpp rounds each stream up to a multiple of 256 cells
		// (n_ctx_seq): a sequence may use them all, as a llama-server slot
		// does, and the draft's context gets the same streams.
		cfg.CtxSize = e.tctx.NCtx()
	}
	var dm Model
	if draft != nil {
		if e.dctx, e.dbatch, err = mk(draft, cfg.MaxRunning); err != nil {
			return nil, fmt.Errorf("draft context: %w", err)
		}
		dm = e.model(cfg, e.dctx, e.dbatch)
	}
	if err := warmUp(e.tctx, e.tbatch, target.Vocab()); err != nil {
		return nil, fmt.Errorf("target context: warm-up decode: %w", err)
	}
	if e.dctx != nil {
		if err := warmUp(e.dctx, e.dbatch, draft.Vocab()); err != nil {
			return nil, fmt.Errorf("draft context: warm-up decode: %w", err)
		}
	}
	e.Scheduler, err = New(cfg, e.model(cfg, e.tctx, e.tbatch), dm, engineVocab{Vocab: target.Vocab(), maskLimit: cfg.GrammarMaskLimit}, logger)
	if err != nil {
		return nil, err
	}
	if draft != nil && target.Info().SizeBytes > 0 {
		// Until a draft step is measured it costs at most the models' size
		// ratio of a target decode (decode reads the weights): a draft as
		// big as the target is not tried on a prior of 0.1, and a small one
		// is tried even if a stall slowed its first prompt.
		r := float64(draft.Info().SizeBytes) / float64(target.Info().SizeBytes)
		e.Scheduler.costs.DraftPrior = min(max(r, 1e-3), 1)
	}
	ok = true
	return e, nil
}

// warmUp decodes one token in c and clears its KV, as llama-server does
// before it serves: the first decode of a context faults the weights in
// and touches its buffers for the first time (a fresh draft's first decode
// took 21 ms for 5 tokens, 1-2 ms after), which the first request would
// otherwise wait for and adaptive k's first cost readings would include.
func warmUp(c *engine.Context, b *engine.Batch, v *engine.Vocab) error {
	tok := v.BOS()
	if tok < 0 {
		tok = 0
	}
	b.Reset()
	b.Add(tok, 0, 0, true)
	err := c.Decode(b)
	b.Reset()
	c.ClearKV()
	return err
}

// model wraps a context for the scheduler, with its own thread chooser
// under DecodeThreads auto (target and draft differ in cost per row).
func (e *Engine) model(cfg Config, c *engine.Context, b *engine.Batch) *engineModel {
	m := &engineModel{ctx: c, batch: b}
	if cfg.DecodeThreads == "auto" && c.PoolThreads() > 1 {
		m.threads = newThreadChooser(c.PoolThreads())
	}
	return m
}

// DecodeThreadCounts reports, under DecodeThreads auto, how many target
// and draft decodes ran on one thread and on all: {target, draft} ×
// {one, all}. Zero otherwise.
func (e *Engine) DecodeThreadCounts() (n [2][2]uint64) {
	for i, m := range []Model{e.Scheduler.target, e.Scheduler.draft} {
		if em, ok := m.(*engineModel); ok && em.threads != nil {
			n[i] = [2]uint64{em.threads.used[0].Load(), em.threads.used[1].Load()}
		}
	}
	return n
}

// Stats is the scheduler's counters with DecodeThreads filled in.
func (e *Engine) Stats() Stats {
	st := e.Scheduler.Stats()
	st.DecodeThreads = e.DecodeThreadCounts()
	for i, m := range []Model{e.Scheduler.target, e.Scheduler.draft} {
		if em, ok := m.(*engineModel); ok {
			st.Decodes[i], st.GraphsReused[i] = em.decodes.Load(), em.reused.Load()
		}
	}
	st.GrammarTime, st.LiveGrammars = engine.GrammarTime(), engine.LiveGrammars()
	return st
}

// Tokenize tokenizes with the target's vocabulary (BOS as the model wants).
func (e *Engine) Tokenize(text string, addSpecial bool) ([]int32, error) {
	return e.targetMod.Vocab().Tokenize(text, addSpecial, true)
}

// TargetContext and DraftContext expose the contexts for tests that compare
// the allocator's view with llama.cpp's.
func (e *Engine) TargetContext() *engine.Context { return e.tctx }
func (e *Engine) DraftContext() *engine.Context  { return e.dctx }

// Close frees contexts, batches and the thread pool. Call it after Run has
// returned. (It shadows Scheduler.Close, which stops accepting requests:
// call e.Scheduler.Close() for that.)
func (e *Engine) Close() {
	for _, b := range []*engine.Batch{e.tbatch, e.dbatch} {
		if b != nil {
			b.Close()
		}
	}
	for _, c := range []*engine.Context{e.tctx, e.dctx} {
		if c != nil {
			c.Close()
		}
	}
	if e.pool != nil {
		e.pool.Close()
	}
}

// engineVocab is the target's vocabulary, compiling grammars with
// llama.cpp's grammar sampler. maskLimit (0: the default) bounds one full
// mask; tests lower it.
type engineVocab struct {
	*engine.Vocab
	maskLimit time.Duration
}

// CompileGrammar checks the text in Go first (gbnf.Check): llama.cpp's
// parser prints its errors with the whole grammar to stderr, and some
// grammars it accepts hang or crash it. A grammar whose first full mask
// takes longer than maxMaskTime is refused too (ambiguous grammars can make
// llama.cpp's matcher exponential, and masks run on the scheduler's loop).
func (v engineVocab) CompileGrammar(text string) (specdec.Grammar, error) {
	if err := gbnf.Check(text, "root"); err != nil {
		return nil, err
	}
	g, err := v.NewGrammar(text, "root")
	if err != nil {
		return nil, err
	}
	limit := v.maskLimit
	if limit == 0 {
		limit = max(maxMaskTime, time.Duration(v.NTokens())*2*time.Microsecond)
	}
	eg := engineGrammar{Grammar: g, guard: &maskGuard{limit: limit}}
	eg.Mask(make([]float32, v.NTokens()))
	if err := eg.Err(); err != nil {
		g.Free()
		return nil, err
	}
	return eg, nil
}

// maxMaskTime bounds the first full mask of a grammar (or 2 µs per token
// of a larger vocabulary): 100 ms at 512 tokens is 1,000x what the JSON
// grammars take (BenchmarkGrammar).
const maxMaskTime = 100 * time.Millisecond

// engineGrammar is an engine.Grammar whose full masks are timed: one that
// takes longer than the limit (a state where llama.cpp's matcher blows up;
// it cannot be interrupted) makes the grammar and its clones unusable, so
// its request fails at once instead of stalling the loop step after step.
type engineGrammar struct {
	*engine.Grammar
	guard *maskGuard // shared with clones
}

type maskGuard struct {
	limit time.Duration
	err   error
}

func (g engineGrammar) Mask(row []float32) int {
	if g.guard.err != nil {
		return 0
	}
	t0 := time.Now()
	n := g.Grammar.Mask(row)
	if g.guard.check(time.Since(t0)); g.guard.err != nil {
		return 0
	}
	return n
}

func (g engineGrammar) Allowed(t int32) bool {
	if g.guard.err != nil {
		return false
	}
	t0 := time.Now()
	ok := g.Grammar.Allowed(t)
	g.guard.check(time.Since(t0))
	return ok && g.guard.err == nil
}

func (g engineGrammar) Accept(t int32) error {
	if g.guard.err != nil {
		return g.guard.err
	}
	t0 := time.Now()
	err := g.Grammar.Accept(t)
	g.guard.check(time.Since(t0))
	return err
}

func (m *maskGuard) check(d time.Duration) {
	if d > m.limit && m.err == nil {
		m.err = fmt.Errorf("too complex for the matcher (%v for one token; at most %v)", d.Round(time.Millisecond), m.limit)
	}
}

func (g engineGrammar) Err() error { return g.guard.err }

func (g engineGrammar) Clone() (specdec.Grammar, error) {
	c, err := g.Grammar.Clone()
	if err != nil {
		return nil, err
	}
	return engineGrammar{Grammar: c, guard: g.guard}, nil
}
