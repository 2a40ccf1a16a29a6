package scheduler

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"specd/engine"
	"specd/specdec"
)

// Benchmarks against the real backend. They load stories260K and the heavy
// test target once per test binary through realModels (engine_test.go).
//
//	GGML_NO_BACKTRACE=1 go test -run '^$' -bench 'KVLayout|RealThroughput|PrefixPrefill' -benchtime 2x ./scheduler/
//
// docs/BENCHMARKS.md and docs/decisions/ hold the figures.

// benchModels is realModels (engine_test.go), which takes a testing.TB.
func benchModels(tb testing.TB) (*engine.Library, *engine.Model, *engine.Model) {
	tb.Helper()
	return realModels(tb)
}

// benchEngine starts a scheduler over real contexts without the per-step KV
// check (it would count as Go-side step time); the cleanup stops it and
// frees its contexts and thread pool.
func benchEngine(tb testing.TB, cfg Config, target, draft *engine.Model) *Engine {
	tb.Helper()
	l, _, _ := benchModels(tb)
	e, err := NewEngine(cfg, l, target, draft, nil)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go e.Run(ctx)
	tb.Cleanup(func() { cancel(); <-e.Done(); e.Close() })
	return e
}

// runRequests submits reqs at once and returns each one's tokens and final
// event.
func runRequests(tb testing.TB, s *Scheduler, reqs []Request) ([][]int32, []Event) {
	tb.Helper()
	toks := make([][]int32, len(reqs))
	last := make([]Event, len(reqs))
	var wg sync.WaitGroup
	for i, r := range reqs {
		ch, err := s.Submit(context.Background(), r)
		if err != nil {
			tb.Fatalf("submit %d: %v", i, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			toks[i], _, last[i] = collect(ch)
		}()
	}
	wg.Wait()
	for i, ev := range last {
		if ev.Err != nil {
			tb.Fatalf("request %d: %v", i, ev.Err)
		}
	}
	return toks, last
}

// BenchmarkKVLayout measures raw llama_decode throughput (no scheduler) of n
// sequences that each decode one token per call, with a context of about
// ctx tokens per sequence (it grows by up to 32 and is trimmed back), in one
// unified KV pool (kv_unified = true, what paging relies on) or in one
// stream per sequence (kv_unified = false), with 1 or 2 compute threads.
// Both layouts get the same cells: n × 512.
func BenchmarkKVLayout(b *testing.B) {
	l, st, hv := benchModels(b)
	for _, md := range []struct {
		name string
		m    *engine.Model
	}{{"stories", st}, {"heavy", hv}} {
		for _, fa := range []string{"off", "on"} {
			for _, ctxLen := range []int{128, 400} {
				for _, n := range []int{1, 4, 8, 16, 32} {
					if fa == "on" && ctxLen == 128 {
						continue // flash attention: one context length is enough to see the trend
					}
					for _, th := range []int{1, 2} {
						for _, layout := range []string{"unified", "streams"} {
							name := fmt.Sprintf("%s/fa=%s/ctx=%d/n=%d/t=%d/%s", md.name, fa, ctxLen, n, th, layout)
							b.Run(name, func(b *testing.B) {
								benchKVLayout(b, l, md.m, fa == "on", layout == "unified", n, ctxLen, th)
							})
						}
					}
				}
			}
		}
	}
}

func benchKVLayout(b *testing.B, l *engine.Library, m *engine.Model, fa, unified bool, n, ctxLen, threads int) {
	const window = 32 // positions decoded before the tail is trimmed back to ctxLen
	p := engine.DefaultContextParams()
	p.NCtx = n * 512
	p.NBatch, p.NUBatch = 512, 512
	p.NSeqMax = n
	p.Threads = threads
	p.UnifiedKV = unified
	p.FlashAttn = engine.FlashAttnOff
	if fa {
		p.FlashAttn = engine.FlashAttnOn
	}
	c, err := m.NewContext(p)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	batch, err := l.NewBatch(512)
	if err != nil {
		b.Fatal(err)
	}
	defer batch.Close()
	nv := m.Vocab().NTokens()
	rng := rand.New(rand.NewPCG(uint64(n), uint64(ctxLen)))
	next := make([]int32, n)
	rows := make([]int, n)
	// Sequence 0 is prefilled; the others get a copy of its KV through the
	// state API, which writes cells of their own (SeqCopy would share
	// sequence 0's cells and shrink the unified pool's scan), at a fraction
	// of the cost of n prefills (each of which, unified, would attend to all
	// cells before it).
	batch.Reset()
	for i := range ctxLen {
		tok := m.Vocab().BOS()
		if i > 0 {
			tok = int32(3 + rng.IntN(nv-3))
		}
		batch.Add(tok, int32(i), 0, i == ctxLen-1)
	}
	if err := c.Decode(batch); err != nil {
		b.Fatal(err)
	}
	next[0] = specdec.Argmax(c.Logits(ctxLen - 1))
	state, err := c.SaveSeqState(0, nil)
	if err != nil {
		b.Fatal(err)
	}
	for s := 1; s < n; s++ {
		if err := c.RestoreSeqState(int32(s), state); err != nil {
			b.Fatal(err)
		}
		next[s] = int32(3 + rng.IntN(nv-3))
	}
	for s := range n {
		if got := c.SeqPosMax(int32(s)); got != int32(ctxLen-1) {
			b.Fatalf("seq %d: pos_max %d after restore, want %d", s, got, ctxLen-1)
		}
	}
	pos := int32(ctxLen)
	step := func() {
		batch.Reset()
		for s := range n {
			rows[s] = batch.Add(next[s], pos, int32(s), true)
		}
		if err := c.Decode(batch); err != nil {
			b.Fatal(err)
		}
		for s := range n {
			next[s] = specdec.Argmax(c.Logits(rows[s]))
		}
		if pos++; pos == int32(ctxLen+window) {
			for s := range n {
				c.SeqRemove(int32(s), int32(ctxLen), -1)
			}
			pos = int32(ctxLen)
		}
	}
	for range 4 { // warm up: graphs, pool threads
		step()
	}
	cpu0 := cpuTime()
	b.ResetTimer()
	for range b.N {
		step()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "tok/s")
	// Process CPU time per decode: with one thread (no pool threads
	// spinning at barriers) it is the work done, far less disturbed by
	// other jobs on the machine than wall time.
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/decode")
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/decode")
}

// cpuTime is the process's user + system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// throughputRequests are n short distinct greedy prompts with gen-token
// outputs that ignore EOS.
func throughputRequests(tb testing.TB, v *engine.Vocab, n, gen int, sp Speculative) []Request {
	tb.Helper()
	reqs := make([]Request, n)
	for i := range reqs {
		text := fmt.Sprintf("%s %d", storyPrompts[i%len(storyPrompts)], i)
		toks, err := v.Tokenize(text, true, false)
		if err != nil {
			tb.Fatal(err)
		}
		reqs[i] = Request{Prompt: toks, MaxTokens: gen, IgnoreEOS: true, Speculative: sp}
	}
	return reqs
}

// benchThroughputPrompt is benchThroughput without a draft for prompts of
// promptLen synthetic tokens (BenchmarkCeiling's: ids spread over the
// vocabulary, distinct per stream).
func benchThroughputPrompt(b *testing.B, cfg Config, target *engine.Model, streams, promptLen, gen int) {
	reqs := make([]Request, streams)
	for s := range reqs {
		reqs[s] = syntheticRequest(target, s, 0, promptLen, gen)
	}
	benchRun(b, benchEngine(b, cfg, target, nil), reqs)
}

// syntheticRequest is stream s's j-th request: promptLen ids spread over the
// vocabulary, distinct per stream and request, gen tokens ignoring EOS. It
// skips the prefix cache, so that every timed round prefills its prompts as
// the ceiling does (the warm-up round would otherwise have cached them).
func syntheticRequest(target *engine.Model, s, j, promptLen, gen int) Request {
	nv := target.Vocab().NTokens()
	p := make([]int32, promptLen)
	for i := range p {
		p[i] = int32(1 + (s*131+j*17+i*7)%(nv-1))
	}
	return Request{Prompt: p, MaxTokens: gen, IgnoreEOS: true, NoPrefixCache: true}
}

// benchClosedLoop is the arrival pattern of `specd bench` without HTTP:
// streams clients, each sending closedLoopRequests requests one after
// another (a new prompt arrives as soon as a request ends, so prompts are
// prefilled next to the others' decodes rather than in one wave).
func benchClosedLoop(b *testing.B, cfg Config, target *engine.Model, streams, promptLen, gen int) {
	const closedLoopRequests = 8
	e := benchEngine(b, cfg, target, nil)
	runRequests(b, e.Scheduler, []Request{syntheticRequest(target, 0, 0, promptLen, gen)}) // warm up
	var ntok atomic.Int64
	s0 := e.Stats()
	b.ResetTimer()
	for range b.N {
		var wg sync.WaitGroup
		for s := range streams {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range closedLoopRequests {
					ch, err := e.Submit(context.Background(), syntheticRequest(target, s, j, promptLen, gen))
					if err != nil {
						b.Error(err)
						return
					}
					toks, _, last := collect(ch)
					if last.Err != nil {
						b.Error(last.Err)
					}
					ntok.Add(int64(len(toks)))
				}
			}()
		}
		wg.Wait()
	}
	b.StopTimer()
	reportRun(b, s0, e.Stats(), int(ntok.Load()))
}

// benchThroughput runs b.N rounds of `streams` concurrent requests of gen
// tokens each and reports generated tokens per second, the Go-side share of
// step time and, with speculation, the acceptance rate and the last k.
func benchThroughput(b *testing.B, cfg Config, target, draft *engine.Model, streams, gen int, sp Speculative) {
	benchRun(b, benchEngine(b, cfg, target, draft), throughputRequests(b, target.Vocab(), streams, gen, sp))
}

// benchRun runs reqs b.N times after a warm-up round and reports the
// metrics benchThroughput describes.
func benchRun(b *testing.B, e *Engine, reqs []Request) {
	runRequests(b, e.Scheduler, reqs) // warm up
	s0 := e.Stats()
	b.ResetTimer()
	ntok := 0
	for range b.N {
		toks, _ := runRequests(b, e.Scheduler, reqs)
		for _, t := range toks {
			ntok += len(t)
		}
	}
	b.StopTimer()
	reportRun(b, s0, e.Stats(), ntok)
}

// reportRun reports the metrics benchThroughput describes for a timed run
// that made ntok tokens between the stats s0 and s1.
func reportRun(b *testing.B, s0, s1 Stats, ntok int) {
	step, dec := s1.StepTime-s0.StepTime, s1.DecodeTime-s0.DecodeTime
	b.ReportMetric(float64(ntok)/b.Elapsed().Seconds(), "tok/s")
	b.ReportMetric(100*float64(step-dec)/float64(step), "go%")
	b.ReportMetric(float64(step)/float64(s1.Steps-s0.Steps)/1e3, "µs/step")
	if p := s1.DraftProposed - s0.DraftProposed; p > 0 {
		b.ReportMetric(float64(s1.DraftAccepted-s0.DraftAccepted)/float64(p), "accept")
		b.ReportMetric(float64(s1.LastK), "lastK")
	}
}

// BenchmarkRealThroughput: the scheduler end to end on the real backend,
// greedy, 128-token outputs, with a thread pool of 2 (the default) or 1
// thread. stories260K alone without speculation (serve: the daemon's shape,
// all requests at once; serve-closed: the same shape with the closed-loop
// arrivals of `specd bench`, so serve-closed against `specd serve` is what
// HTTP costs); the heavy test target with the stories260K draft loaded,
// without speculation and with the draft proposer and adaptive k.
func BenchmarkRealThroughput(b *testing.B) {
	_, st, hv := benchModels(b)
	const gen = 128
	for _, th := range []int{2, 1} {
		for _, n := range []int{1, 4, 16, 32} {
			b.Run(fmt.Sprintf("stories/none/streams=%d/threads=%d", n, th), func(b *testing.B) {
				cfg := Config{CtxSize: 8192, MaxRunning: n, MaxBatchTokens: 512, Proposer: "none", Threads: th}
				benchThroughput(b, cfg, st, nil, n, gen, Speculative{})
			})
		}
		for _, n := range []int{1, 4, 16, 32} {
			// The daemon's shape and the engine's BenchmarkCeiling workload:
			// one KV stream of 384 cells per sequence, 128-token prompts.
			cfg := Config{CtxSize: n * 384, MaxRunning: n, MaxBatchTokens: 512, Proposer: "none", Threads: th, SplitKV: true}
			b.Run(fmt.Sprintf("stories/none/serve/streams=%d/threads=%d", n, th), func(b *testing.B) {
				benchThroughputPrompt(b, cfg, st, n, 128, gen)
			})
			b.Run(fmt.Sprintf("stories/none/serve-closed/streams=%d/threads=%d", n, th), func(b *testing.B) {
				benchClosedLoop(b, cfg, st, n, 128, gen)
			})
		}
		for _, n := range []int{1, 4} {
			for _, prop := range []string{"none", "draft"} {
				b.Run(fmt.Sprintf("heavy/%s/streams=%d/threads=%d", prop, n, th), func(b *testing.B) {
					cfg := Config{CtxSize: 8192, MaxRunning: n, MaxBatchTokens: 512, Proposer: prop, Threads: th}
					benchThroughput(b, cfg, hv, st, n, gen, Speculative{})
				})
			}
		}
	}
}
