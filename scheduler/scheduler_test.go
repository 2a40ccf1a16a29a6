package scheduler

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

const fakeVocabN = 64

type rig struct {
	s             *Scheduler
	target, draft *fakeModel
	cancel        context.CancelFunc
}

func newRig(t *testing.T, cfg Config, withDraft bool) *rig {
	t.Helper()
	return newRigWith(t, cfg, withDraft, nil)
}

// newRigWith lets setup adjust the scheduler before its loop starts.
func newRigWith(t *testing.T, cfg Config, withDraft bool, setup func(*Scheduler)) *rig {
	t.Helper()
	target := newFake(fakeVocabN, cfg.CtxSize+64, 0)
	var draft *fakeModel
	var dm Model
	if withDraft {
		draft = newFake(fakeVocabN, cfg.CtxSize+64, 77)
		dm = draft
	}
	s, err := New(cfg, target, dm, fakeVocab{fakeVocabN}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.checkKV = true
	if setup != nil {
		setup(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go s.Run(ctx)
	t.Cleanup(func() {
		if err := s.kvMismatch(); err != nil {
			t.Errorf("KV view mismatch: %v", err)
		}
	})
	r := &rig{s: s, target: target, draft: draft, cancel: cancel}
	t.Cleanup(func() { cancel(); <-s.Done() })
	return r
}

// collect reads a request's events to the end.
func collect(ch <-chan Event) (toks []int32, text string, last Event) {
	for ev := range ch {
		toks = append(toks, ev.Tokens...)
		text += ev.Text
		if ev.Done {
			last = ev
		}
	}
	return
}

func mkPrompt(rng *rand.Rand, n int) []int32 {
	p := make([]int32, n)
	p[0] = 1
	for i := 1; i < n; i++ {
		p[i] = int32(3 + rng.IntN(fakeVocabN-3))
	}
	return p
}

type job struct {
	req Request
}

func mkJobs(n int, seed uint64, temp float32) []Request {
	rng := rand.New(rand.NewPCG(seed, 1))
	var out []Request
	for i := 0; i < n; i++ {
		r := Request{Prompt: mkPrompt(rng, 2+rng.IntN(60)), MaxTokens: 1 + rng.IntN(40), IgnoreEOS: i%3 == 0}
		r.Sampling.Temperature = temp
		r.Sampling.Seed = uint64(i)
		if i%4 == 1 {
			// Repetitive prompt so the n-gram proposer finds matches.
			for j := range r.Prompt[1:] {
				r.Prompt[1+j] = int32(3 + j%7)
			}
		}
		out = append(out, r)
	}
	return out
}

// runAll submits every request at once and returns the outputs in order.
func runAll(t *testing.T, s *Scheduler, reqs []Request) [][]int32 {
	t.Helper()
	outs := make([][]int32, len(reqs))
	var wg sync.WaitGroup
	for i, r := range reqs {
		ch, err := s.Submit(context.Background(), r)
		if err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			toks, _, last := collect(ch)
			if last.Err != nil {
				t.Errorf("request %d: %v", i, last.Err)
			}
			outs[i] = toks
		}()
	}
	wg.Wait()
	return outs
}

// runAlone runs each request by itself on a fresh scheduler without
// speculation: the reference output.
func runAlone(t *testing.T, cfg Config, reqs []Request) [][]int32 {
	t.Helper()
	cfg.Proposer = "none"
	r := newRig(t, cfg, false)
	outs := make([][]int32, len(reqs))
	for i, q := range reqs {
		q.Speculative = Speculative{}
		outs[i] = runAll(t, r.s, []Request{q})[0]
	}
	return outs
}

func waitIdle(t *testing.T, s *Scheduler) Stats {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := s.Stats()
		if st.Running == 0 && st.Waiting == 0 && st.KVBlocksUsed == 0 {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("scheduler not idle: %+v", st)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestBatchedEqualsAloneAcrossProposers(t *testing.T) {
	for _, temp := range []float32{0, 0.8} {
		reqs := mkJobs(32, 7, temp)
		base := Config{CtxSize: 4096, MaxRunning: 32, MaxBatchTokens: 512, KMax: 8}
		want := runAlone(t, base, reqs)
		for _, prop := range []string{"none", "draft", "ngram"} {
			if temp > 0 && prop != "none" {
				// Rejection sampling keeps the distribution, not the exact
				// tokens: seeded equality holds only without speculation.
				continue
			}
			for _, k := range []int{0, 1, 4} {
				t.Run(fmt.Sprintf("T%.1f/%s/k%d", temp, prop, k), func(t *testing.T) {
					cfg := base
					cfg.Proposer = prop
					cfg.SpecK = k
					r := newRig(t, cfg, prop == "draft")
					got := runAll(t, r.s, reqs)
					for i := range reqs {
						if !slices.Equal(got[i], want[i]) {
							t.Fatalf("request %d: batched %v, alone %v", i, got[i], want[i])
						}
					}
					st := waitIdle(t, r.s)
					if prop != "none" && k > 0 && st.DraftProposed == 0 {
						t.Fatalf("no draft tokens proposed with %s", prop)
					}
					if prop == "draft" && k > 0 && (st.DraftAccepted == 0 || st.DraftAccepted == st.DraftProposed) {
						t.Fatalf("acceptance %d/%d: the fake draft should agree sometimes, not always", st.DraftAccepted, st.DraftProposed)
					}
					if n := r.target.usedCells(); n != 0 && cfg.DisablePrefixCache {
						t.Fatalf("%d target cells left", n)
					}
				})
			}
		}
	}
}

func TestSmallPoolPreemptsAndCompletes(t *testing.T) {
	reqs := mkJobs(16, 11, 0)
	for i := range reqs {
		reqs[i].IgnoreEOS = true
		reqs[i].MaxTokens = 30
	}
	base := Config{CtxSize: 256, MaxRunning: 16, MaxBatchTokens: 256, KMax: 4, BlockSize: 8}
	want := runAlone(t, Config{CtxSize: 4096, MaxRunning: 16, MaxBatchTokens: 256, KMax: 4}, reqs)
	for _, mode := range []string{"recompute", "swap"} {
		for _, prop := range []string{"none", "draft"} {
			t.Run(mode+"/"+prop, func(t *testing.T) {
				cfg := base
				cfg.Preemption = mode
				cfg.Proposer = prop
				r := newRig(t, cfg, prop == "draft")
				got := runAll(t, r.s, reqs)
				for i := range reqs {
					if !slices.Equal(got[i], want[i]) {
						t.Fatalf("request %d: got %v, want %v", i, got[i], want[i])
					}
				}
				st := waitIdle(t, r.s)
				if st.PreemptionsRecomp+st.PreemptionsSwap == 0 {
					t.Fatalf("pool of %d blocks never preempted", st.KVBlocksTotal)
				}
				if mode == "swap" && st.PreemptionsSwap == 0 {
					t.Fatalf("swap mode made no swap preemption: %+v", st)
				}
			})
		}
	}
}

func TestCancellationsFreeEverything(t *testing.T) {
	cfg := Config{CtxSize: 2048, MaxRunning: 8, MaxBatchTokens: 256, KMax: 4, DisablePrefixCache: true}
	r := newRig(t, cfg, true)
	reqs := mkJobs(40, 5, 0)
	rng := rand.New(rand.NewPCG(3, 3))
	var wg sync.WaitGroup
	for _, q := range reqs {
		q.MaxTokens = 40
		q.IgnoreEOS = true
		ctx, cancel := context.WithCancel(context.Background())
		ch, err := r.s.Submit(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		after := rng.IntN(6)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cancel()
			n := 0
			for ev := range ch {
				n++
				if n == after {
					cancel()
				}
				_ = ev
			}
		}()
	}
	wg.Wait()
	waitIdle(t, r.s)
	// The loop may still be inside its last step; give it a moment.
	time.Sleep(10 * time.Millisecond)
	r.s.Close()
	<-r.s.Done()
	if n := r.target.usedCells(); n != 0 {
		t.Fatalf("%d target KV cells left after all requests ended", n)
	}
	if n := r.draft.usedCells(); n != 0 {
		t.Fatalf("%d draft KV cells left", n)
	}
}

func TestQueueFullAndValidation(t *testing.T) {
	cfg := Config{CtxSize: 256, MaxRunning: 1, MaxBatchTokens: 64, KMax: 4, MaxWaiting: 2}
	target := newFake(fakeVocabN, 512, 0)
	s, err := New(cfg, target, nil, fakeVocab{fakeVocabN}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Not running: submissions stay queued.
	ok := Request{Prompt: []int32{1, 5}, MaxTokens: 4}
	for i := 0; i < 2; i++ {
		if _, err := s.Submit(context.Background(), ok); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Submit(context.Background(), ok); err != ErrQueueFull {
		t.Fatalf("third submit: %v, want ErrQueueFull", err)
	}
	bad := []Request{
		{Prompt: nil, MaxTokens: 1},
		{Prompt: []int32{1, 999}, MaxTokens: 1},
		{Prompt: make([]int32, 300), MaxTokens: 1},
		{Prompt: []int32{1}, MaxTokens: 0},
		{Prompt: []int32{1}, MaxTokens: 1, Speculative: Speculative{Proposer: "draft"}},
		{Prompt: []int32{1}, MaxTokens: 1, Speculative: Speculative{Proposer: "bogus"}},
		{Prompt: []int32{1}, MaxTokens: 1, Sampling: Sampling{Temperature: -1}},
	}
	for i, b := range bad {
		if _, err := s.Submit(context.Background(), b); err == nil || err == ErrQueueFull {
			t.Fatalf("bad request %d accepted (err %v)", i, err)
		}
	}
}

func TestStopStringsAndMaxTokens(t *testing.T) {
	cfg := Config{CtxSize: 1024, MaxRunning: 4, MaxBatchTokens: 128, KMax: 4}
	r := newRig(t, cfg, false)
	req := Request{Prompt: []int32{1, 9, 10}, MaxTokens: 20, IgnoreEOS: true}
	toks, text, last := collect(mustSubmit(t, r.s, req))
	if last.FinishReason != "length" || len(toks) != 20 || last.Usage.CompletionTokens != 20 {
		t.Fatalf("finish %q, %d tokens, usage %+v", last.FinishReason, len(toks), last.Usage)
	}
	// Stop at the text of the 5th token: output is the first 4 tokens' text.
	var piece []byte
	stopAt := string(fakeVocab{}.AppendPiece(piece, toks[4], false))
	want := ""
	for _, tk := range toks[:4] {
		want += string(fakeVocab{}.AppendPiece(nil, tk, false))
	}
	// The stop string may occur earlier in the text; only check it is cut.
	req.Stop = []string{stopAt}
	_, text2, last2 := collect(mustSubmit(t, r.s, req))
	if last2.FinishReason != "stop" || len(text2) > len(want) || !startsWith(text, text2) {
		t.Fatalf("stop %q: text %q finish %q; full text %q", stopAt, text2, last2.FinishReason, text)
	}
}

func startsWith(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

func mustSubmit(t *testing.T, s *Scheduler, r Request) <-chan Event {
	t.Helper()
	ch, err := s.Submit(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func TestDecodeFailureFailsOnlyItsStep(t *testing.T) {
	cfg := Config{CtxSize: 1024, MaxRunning: 4, MaxBatchTokens: 128, KMax: 4}
	target := newFake(fakeVocabN, 2048, 0)
	target.failAt = 3
	s, err := New(cfg, target, nil, fakeVocab{fakeVocabN}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); <-s.Done() }()
	go s.Run(ctx)
	reqs := mkJobs(4, 9, 0)
	outs := runAll(t, s, reqs) // the batch retry path keeps every request alive
	want := runAlone(t, cfg, reqs)
	for i := range reqs {
		if !slices.Equal(outs[i], want[i]) {
			t.Fatalf("request %d after a failed decode: %v want %v", i, outs[i], want[i])
		}
	}
}

// switchCosts prices a draft that cannot pay until the scheduler's step
// from, then one that costs nothing. It notes what the draft had decoded
// and proposed when it turned cheap.
type switchCosts struct {
	s              *Scheduler
	at             uint64
	draft          *fakeModel
	flipped        bool
	rows, proposed uint64
}

func (c *switchCosts) cheap() bool {
	st := c.s.Stats()
	if !c.flipped && st.Steps >= c.at {
		c.flipped, c.rows, c.proposed = true, uint64(c.draft.rows), st.DraftProposed
	}
	return c.flipped
}
func (c *switchCosts) VerifyCost(int) float64 { return 1e-3 }
func (c *switchCosts) DraftCost(int) float64 {
	if c.cheap() {
		return 1e-6
	}
	return 1e-3
}

// While the draft cannot pay, a sequence's draft KV trails the target's
// without bound (only prompts are fed); once it may pay, lags far beyond one
// step's room are caught up in chunks, after which the sequences draft. The
// fake models refuse a row whose earlier positions are missing, and checkKV
// compares each sequence's draft KV with the scheduler's view.
func TestIdleDraftTrailsThenCatchesUp(t *testing.T) {
	cfg := Config{CtxSize: 2048, MaxRunning: 3, MaxBatchTokens: 16, KMax: 4, Proposer: "draft"}
	rng := rand.New(rand.NewPCG(5, 1))
	var reqs []Request
	prompts := 0
	for i := range 3 {
		r := Request{Prompt: mkPrompt(rng, 12), MaxTokens: 160, IgnoreEOS: true}
		if i == 2 {
			r.Speculative.Proposer = "ngram" // kept in step for the prefix cache
		}
		prompts += len(r.Prompt)
		reqs = append(reqs, r)
	}
	want := runAlone(t, cfg, reqs)
	var costs *switchCosts
	r := newRigWith(t, cfg, true, func(s *Scheduler) {
		costs = &switchCosts{s: s, at: 100}
		s.costSeam = costs
	})
	costs.draft = r.draft
	got := runAll(t, r.s, reqs)
	for i := range reqs {
		if !slices.Equal(got[i], want[i]) {
			t.Fatalf("request %d: %v, alone %v", i, got[i], want[i])
		}
	}
	st := waitIdle(t, r.s)
	if !costs.flipped {
		t.Fatal("the run ended before the draft turned cheap")
	}
	if costs.rows > uint64(prompts) || costs.proposed != 0 {
		t.Errorf("while it could not pay, the draft decoded %d tokens (prompts: %d) and proposed %d", costs.rows, prompts, costs.proposed)
	}
	if r.draft.most > cfg.MaxBatchTokens {
		t.Errorf("a draft decode of %d rows, over the step's %d", r.draft.most, cfg.MaxBatchTokens)
	}
	if st.DraftProposed == 0 || uint64(r.draft.rows) < costs.rows+2*90 {
		t.Errorf("after turning cheap: %d draft tokens proposed, the draft decoded %d tokens (%d before)", st.DraftProposed, r.draft.rows, costs.rows)
	}
}

// linearCosts prices a verify by its rows, as a compute-bound target does:
// at any acceptance below 1, speculating never pays.
type linearCosts struct{}

func (linearCosts) VerifyCost(n int) float64 { return float64(n) * 1e-3 }
func (linearCosts) DraftCost(int) float64    { return 1e-6 }

// A Predicted Output is verified whatever the chooser would decide (OpenAI
// always uses the prediction): with costs under which adaptive k never
// speculates, the prediction request still has its drafts verified and
// accepted, and the n-gram request beside it does not speculate.
func TestPredictionAlwaysVerified(t *testing.T) {
	cfg := Config{CtxSize: 2048, MaxRunning: 4, KMax: 4}
	rng := rand.New(rand.NewPCG(9, 2))
	plain := []Request{{Prompt: mkPrompt(rng, 12), MaxTokens: 40, IgnoreEOS: true}}
	want := runAlone(t, cfg, plain)[0]
	pred := plain[0]
	pred.Prediction = slices.Clone(want)
	ng := plain[0]
	ng.Speculative.Proposer = "ngram"
	r := newRigWith(t, cfg, false, func(s *Scheduler) { s.costSeam = linearCosts{} })
	ev, err := r.s.Submit(context.Background(), ng)
	if err != nil {
		t.Fatal(err)
	}
	gotNG, _, _ := collect(ev)
	ev, err = r.s.Submit(context.Background(), pred)
	if err != nil {
		t.Fatal(err)
	}
	got, _, fin := collect(ev)
	if !slices.Equal(got, want) || !slices.Equal(gotNG, want) {
		t.Fatalf("prediction %v, n-gram %v, want %v", got, gotNG, want)
	}
	st := waitIdle(t, r.s)
	t.Logf("accepted %d of %d proposed", fin.Usage.DraftAccepted, fin.Usage.DraftProposed)
	if fin.Usage.DraftAccepted < len(want)/2 {
		t.Errorf("an exact prediction: %d of %d tokens accepted", fin.Usage.DraftAccepted, len(want))
	}
	if st.DraftProposed != uint64(fin.Usage.DraftProposed) {
		t.Errorf("%d drafts proposed, %d of them the prediction request's: the n-gram request speculated", st.DraftProposed, fin.Usage.DraftProposed)
	}
}

// With KV streams only decodes that llama.cpp runs as one ubatch are cost
// readings: two prompts of 12 and 30 tokens prefilled together (ubatches
// of 24 and 18 rows), or one beside the other's decode (2 and 29), are
// not readings of 42 or 31 rows; the steps where both decode one token
// are. Unified KV is one ubatch, and every decode is a reading.
func TestCostReadingsOneUBatch(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	reqs := []Request{
		{Prompt: mkPrompt(rng, 12), MaxTokens: 20, IgnoreEOS: true},
		{Prompt: mkPrompt(rng, 30), MaxTokens: 20, IgnoreEOS: true},
	}
	for _, split := range []bool{true, false} {
		cfg := Config{CtxSize: 1024, MaxRunning: 2, SplitKV: split}
		// Both requests wait before the loop starts, so that they run
		// side by side however slowly the test goroutines are scheduled.
		var evs []<-chan Event
		r := newRigWith(t, cfg, false, func(s *Scheduler) {
			for _, q := range reqs {
				ev, err := s.Submit(context.Background(), q)
				if err != nil {
					t.Fatal(err)
				}
				evs = append(evs, ev)
			}
		})
		for _, ev := range evs {
			if _, _, fin := collect(ev); fin.Err != nil {
				t.Fatal(fin.Err)
			}
		}
		waitIdle(t, r.s)
		// The loop is idle: its cost model is safe to read.
		c := &r.s.costs
		mixed := c.VerifyReadings(42) + c.VerifyReadings(31)
		if c.VerifyReadings(2) == 0 {
			t.Errorf("split %v: the two-decode steps were not read", split)
		}
		if split && mixed != 0 {
			t.Errorf("split: %d readings of decodes llama.cpp splits into ubatches", mixed)
		}
		if !split && mixed == 0 {
			t.Error("unified: the prefill step was not read")
		}
	}
}

// breakEvenCosts: a draft that would pay at full acceptance but not at the
// acceptance a sequence starts with (0.5) under a margin of 0.3: 10 ms a
// verify plus 4 ms a row, 1 ms a draft step.
type breakEvenCosts struct{}

func (breakEvenCosts) VerifyCost(n int) float64 { return 10e-3 + 4e-3*float64(n) }
func (breakEvenCosts) DraftCost(int) float64    { return 1e-3 }

// A draft that adaptive k never lets draft idles after draftIdleSteps
// steps even though it could pay at full acceptance: its KV is not kept in
// step with the generated tokens (it was, in chunks of draftLag, for the
// whole run), and the output is unchanged.
func TestUnchosenDraftIdles(t *testing.T) {
	cfg := Config{CtxSize: 2048, MaxRunning: 2, KMax: 4, Proposer: "draft", SpecMinGain: 0.3}
	rng := rand.New(rand.NewPCG(6, 1))
	reqs := []Request{{Prompt: mkPrompt(rng, 12), MaxTokens: 240, IgnoreEOS: true}}
	want := runAlone(t, cfg, reqs)
	r := newRigWith(t, cfg, true, func(s *Scheduler) { s.costSeam = breakEvenCosts{} })
	if !slices.Equal(runAll(t, r.s, reqs)[0], want[0]) {
		t.Fatal("output differs from the request alone")
	}
	st := waitIdle(t, r.s)
	if st.DraftProposed != 0 {
		t.Fatalf("adaptive k proposed %d draft tokens; the test needs it never to", st.DraftProposed)
	}
	if max := uint64(len(reqs[0].Prompt) + draftLag); st.DraftDecoded > max {
		t.Errorf("the draft decoded %d tokens for a %d-token prompt (at most %d: the prompt and one catch-up chunk)", st.DraftDecoded, len(reqs[0].Prompt), max)
	}
}

// A draft that adaptive k does not let draft is still tried now and then
// (exploreDraft): one sequence at a time drafts exploreK tokens when the
// credit of exploreShare of the plain decodes' price pays for it, so a
// choice made on a stale reading can change. The tries keep the output and
// stay within their budget: a try is priced at least one plain decode, so
// at most exploreShare of the steps try.
func TestUnchosenDraftIsTried(t *testing.T) {
	cfg := Config{CtxSize: 2048, MaxRunning: 2, KMax: 4, Proposer: "draft", SpecMinGain: 0.3}
	rng := rand.New(rand.NewPCG(8, 1))
	var reqs []Request
	for range 16 {
		reqs = append(reqs, Request{Prompt: mkPrompt(rng, 12), MaxTokens: 60, IgnoreEOS: true})
	}
	want := runAlone(t, cfg, reqs)
	r := newRigWith(t, cfg, true, func(s *Scheduler) { s.costSeam = breakEvenCosts{} })
	for i, req := range reqs {
		if got := runAll(t, r.s, []Request{req})[0]; !slices.Equal(got, want[i]) {
			t.Fatalf("request %d: %v, alone %v", i, got, want[i])
		}
	}
	st := waitIdle(t, r.s)
	t.Logf("%d steps, %d tries, %d draft tokens proposed, %d decoded", st.Steps, st.DraftTries, st.DraftProposed, st.DraftDecoded)
	// 16 x 59 decode steps earn 0.01 x 14 ms each; a try is priced at
	// 1 + 1 + (22 - 14) = 10 ms, floored at a plain decode's 14 ms.
	if st.DraftTries < 3 || st.DraftTries > st.Steps/100+1 {
		t.Errorf("%d tries in %d steps, want 3 to %d", st.DraftTries, st.Steps, st.Steps/100+1)
	}
	if st.DraftProposed != exploreK*st.DraftTries {
		t.Errorf("%d draft tokens proposed in %d tries of %d", st.DraftProposed, st.DraftTries, exploreK)
	}
}
