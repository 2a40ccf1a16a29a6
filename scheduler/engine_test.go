package scheduler

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"specd/engine"
	"specd/internal/testenv"
	"specd/specdec"
)

var testThreads = 1

var (
	modelsOnce sync.Once
	lib        *engine.Library
	stories    *engine.Model
	heavy      *engine.Model
	modelsErr  error
)

// realModels loads the backend, stories260K and the heavygen test target
// once per test binary.
func realModels(t testing.TB) (*engine.Library, *engine.Model, *engine.Model) {
	t.Helper()
	dir := testenv.LibDir(t)
	sp := testenv.StoriesModel(t)
	hp := testenv.HeavyModel(t)
	modelsOnce.Do(func() {
		lib, modelsErr = engine.Open(engine.Options{LibDir: dir})
		if modelsErr != nil {
			return
		}
		if stories, modelsErr = lib.LoadModel(context.Background(), engine.ModelParams{Path: sp}); modelsErr != nil {
			return
		}
		heavy, modelsErr = lib.LoadModel(context.Background(), engine.ModelParams{Path: hp})
	})
	if modelsErr != nil {
		t.Fatal(modelsErr)
	}
	return lib, stories, heavy
}

func newEngineRig(t *testing.T, cfg Config, target, draft *engine.Model) *Engine {
	t.Helper()
	e, stop := startEngine(t, cfg, target, draft)
	t.Cleanup(stop)
	return e
}

// startEngine starts a scheduler over real contexts; stop ends it and frees
// its contexts and thread pool (an idle pool left behind would compete for
// the cores).
func startEngine(t *testing.T, cfg Config, target, draft *engine.Model) (*Engine, func()) {
	t.Helper()
	if cfg.Threads == 0 {
		// Test binaries of several packages run at once on 2 cores: one
		// compute thread each keeps spinning threads from fighting.
		cfg.Threads = testThreads
	}
	lib, _, _ := realModels(t)
	e, err := NewEngine(cfg, lib, target, draft, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.checkKV = true
	ctx, cancel := context.WithCancel(context.Background())
	go e.Run(ctx)
	return e, func() { cancel(); <-e.Done(); e.Close() }
}

var storyPrompts = []string{
	"Once upon a time", "The little dog", "Lily wanted to", "One day, a big", "Tom and his mom",
	"The sun was", "There was a girl named Sue. She", "In the park, the kids", "Ben had a red ball.",
	"The cat sat on", "Mom said, \"", "A bird flew", "The old man", "Sara liked to play", "Max was sad because",
	"It was a sunny day.", "The tree", "They went to the", "He saw a", "The fish",
}

// realRequests are greedy requests of mixed prompt and output lengths.
func realRequests(t *testing.T, v *engine.Vocab, n int) []Request {
	t.Helper()
	rng := rand.New(rand.NewPCG(42, 1))
	var out []Request
	for i := 0; i < n; i++ {
		text := storyPrompts[i%len(storyPrompts)]
		if i >= len(storyPrompts) {
			text = storyPrompts[(i*7)%len(storyPrompts)] + " " + text
		}
		toks, err := v.Tokenize(text, true, false)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, Request{Prompt: toks, MaxTokens: 8 + rng.IntN(56), IgnoreEOS: i%2 == 0})
	}
	return out
}

// fixedRequests is realRequests with every output max tokens long (with
// ignoreEOS) or ending at its end-of-generation token.
func fixedRequests(t *testing.T, v *engine.Vocab, n, max int, ignoreEOS bool) []Request {
	t.Helper()
	reqs := realRequests(t, v, n)
	for i := range reqs {
		reqs[i].MaxTokens, reqs[i].IgnoreEOS = max, ignoreEOS
	}
	return reqs
}

// The reference: each request alone on a scheduler without speculation.
func realAlone(t *testing.T, target *engine.Model, reqs []Request) [][]int32 {
	t.Helper()
	e, stop := startEngine(t, Config{CtxSize: 1024, MaxRunning: 1, MaxBatchTokens: 512, Proposer: "none", DisablePrefixCache: true}, target, nil)
	defer stop()
	out := make([][]int32, len(reqs))
	for i, r := range reqs {
		out[i] = runAll(t, e.Scheduler, []Request{r})[0]
	}
	return out
}

func TestRealBatchedEqualsAlone(t *testing.T) {
	_, st, hv := realModels(t)
	reqs := realRequests(t, st.Vocab(), 32)
	want := realAlone(t, st, reqs)
	for _, c := range []struct {
		prop  string
		split bool
	}{{"none", false}, {"ngram", false}, {"none", true}, {"ngram", true}} {
		prop := c.prop
		name := "stories/" + prop
		if c.split {
			name += "/streams"
		}
		t.Run(name, func(t *testing.T) {
			e := newEngineRig(t, Config{CtxSize: 8192, MaxRunning: 32, MaxBatchTokens: 1024, Proposer: prop, SpecK: 3, SplitKV: c.split}, st, nil)
			got := runAll(t, e.Scheduler, reqs)
			for i := range reqs {
				if !slices.Equal(got[i], want[i]) {
					t.Fatalf("request %d: batched %v\nalone %v", i, got[i], want[i])
				}
			}
			checkKVMatches(t, e)
		})
	}
	// Heavy target + stories260K draft: speculation must not change a token,
	// whatever the proposer and k (0 = adaptive).
	hreqs := realRequests(t, hv.Vocab(), 24)
	hwant := realAlone(t, hv, hreqs)
	predicted := make([]Request, len(hreqs))
	for i, r := range hreqs {
		// Predicted Outputs: the true continuation with every 5th token
		// changed, so the proposer has to re-align after rejections.
		p := slices.Clone(hwant[i])
		for j := 4; j < len(p); j += 5 {
			p[j] = (p[j] + 17) % int32(hv.Vocab().NTokens())
		}
		r.Prediction = p
		predicted[i] = r
	}
	for _, prop := range []string{"draft", "ngram", "prediction"} {
		for _, k := range []int{0, 1, 2, 4, 8} {
			t.Run(fmt.Sprintf("heavy/%s/k%d", prop, k), func(t *testing.T) {
				// Even k runs on per-sequence KV streams, odd on the unified pool.
				cfg := Config{CtxSize: 8192, MaxRunning: 32, MaxBatchTokens: 1024, Proposer: prop, SpecK: k, SplitKV: k%2 == 0}
				reqs := hreqs
				var draft *engine.Model
				switch prop {
				case "draft":
					draft = st
				case "prediction":
					cfg.Proposer = "none"
					reqs = predicted
				}
				e := newEngineRig(t, cfg, hv, draft)
				got := runAll(t, e.Scheduler, reqs)
				for i := range reqs {
					if !slices.Equal(got[i], hwant[i]) {
						t.Fatalf("request %d: speculative %v\nplain %v", i, got[i], hwant[i])
					}
				}
				s := waitIdle(t, e.Scheduler)
				if k > 0 && s.DraftProposed == 0 {
					t.Fatalf("k=%d: nothing proposed", k)
				}
				t.Logf("proposed %d accepted %d (%.2f)", s.DraftProposed, s.DraftAccepted, float64(s.DraftAccepted)/max(1, float64(s.DraftProposed)))
				checkKVMatches(t, e)
			})
		}
	}
	// Two threads, each decode on one or both as the thread chooser
	// measures: the same tokens (a decode computes the same logits on
	// either), and the chooser tried both.
	t.Run("heavy/draft/threads2", func(t *testing.T) {
		// One sequence at a time: decodes of one size, enough of them for
		// the credit to pay for tries (about 100 decodes each).
		e := newEngineRig(t, Config{CtxSize: 2048, MaxRunning: 1, MaxBatchTokens: 512, Proposer: "draft", SpecK: 2, SplitKV: true, Threads: 2}, hv, st)
		got := runAll(t, e.Scheduler, hreqs)
		for i := range hreqs {
			if !slices.Equal(got[i], hwant[i]) {
				t.Fatalf("request %d: two threads %v\none %v", i, got[i], hwant[i])
			}
		}
		waitIdle(t, e.Scheduler)
		n := e.DecodeThreadCounts()
		t.Logf("decodes on one thread / on two: target %v, draft %v", n[0], n[1])
		if n[0][1] == 0 || n[1][1] == 0 || n[0][0]+n[1][0] == 0 {
			t.Fatalf("decodes on one thread / on two: target %v, draft %v; want both choices used", n[0], n[1])
		}
		checkKVMatches(t, e)
	})
	// A draft stopped early where the draft model is unsure (DraftPMin):
	// still the plain output, and later positions are proposed less often.
	t.Run("heavy/draft/k8/p_min", func(t *testing.T) {
		e := newEngineRig(t, Config{CtxSize: 8192, MaxRunning: 32, MaxBatchTokens: 1024, Proposer: "draft", SpecK: 8, DraftPMin: 0.6, SplitKV: true}, hv, st)
		got := runAll(t, e.Scheduler, hreqs)
		for i := range hreqs {
			if !slices.Equal(got[i], hwant[i]) {
				t.Fatalf("request %d: speculative %v\nplain %v", i, got[i], hwant[i])
			}
		}
		s := waitIdle(t, e.Scheduler)
		first, last := s.ProposedByPosition[0], s.ProposedByPosition[7]
		if first == 0 || last*10 > first*9 {
			t.Fatalf("proposed at position 1: %d, at 8: %d; p_min should cut drafts short", first, last)
		}
		t.Logf("proposed at position 1..8: %v", s.ProposedByPosition[:8])
		checkKVMatches(t, e)
	})
}

// checkKVMatches: after every step the scheduler compared each running
// sequence's view (paging's length, computed positions) with llama.cpp's
// pos_max in both contexts; no mismatch may have been recorded.
func checkKVMatches(t *testing.T, e *Engine) {
	t.Helper()
	waitIdle(t, e.Scheduler)
	if err := e.kvMismatch(); err != nil {
		t.Fatal(err)
	}
	if e.kvChecks() == 0 {
		t.Fatal("no KV check ran")
	}
}

func TestRealSmallPoolPreempts(t *testing.T) {
	_, st, _ := realModels(t)
	reqs := realRequests(t, st.Vocab(), 12)
	for i := range reqs {
		reqs[i].IgnoreEOS = true
		reqs[i].MaxTokens = 48
		if i%3 == 0 {
			// Constrained requests keep their grammar's state through
			// preemption (at least 40 words: no early end).
			reqs[i].Grammar = `root ::= (" " [a-z]+){40,}`
		}
	}
	want := realAlone(t, st, reqs)
	for _, mode := range []string{"recompute", "swap"} {
		t.Run(mode, func(t *testing.T) {
			e := newEngineRig(t, Config{CtxSize: 256, MaxRunning: 12, MaxBatchTokens: 256, Proposer: "none", Preemption: mode, KMax: 4}, st, nil)
			got := runAll(t, e.Scheduler, reqs)
			for i := range reqs {
				if !slices.Equal(got[i], want[i]) {
					t.Fatalf("request %d: %v\nwant %v", i, got[i], want[i])
				}
			}
			s := waitIdle(t, e.Scheduler)
			if s.PreemptionsRecomp+s.PreemptionsSwap == 0 {
				t.Fatal("no preemption with a pool of 256 tokens")
			}
			if n := engine.LiveGrammars(); n != 0 {
				t.Fatalf("%d grammars left unfreed", n)
			}
		})
	}
}

func TestRealCancellationsLeaveNoKV(t *testing.T) {
	_, st, hv := realModels(t)
	e := newEngineRig(t, Config{CtxSize: 4096, MaxRunning: 16, MaxBatchTokens: 512, Proposer: "draft", SpecK: 3, DisablePrefixCache: true}, hv, st)
	reqs := realRequests(t, hv.Vocab(), 32)
	rng := rand.New(rand.NewPCG(9, 9))
	var wg sync.WaitGroup
	for i, r := range reqs {
		r.IgnoreEOS, r.MaxTokens = true, 64
		if i%2 == 0 {
			r.Grammar = `root ::= (" " [a-z]+){40,}`
		}
		ctx, cancel := context.WithCancel(context.Background())
		ch, err := e.Submit(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		after := rng.IntN(8)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cancel()
			n := 0
			for range ch {
				if n++; n == after {
					cancel()
				}
			}
		}()
	}
	wg.Wait()
	waitIdle(t, e.Scheduler)
	e.Scheduler.Close()
	<-e.Done()
	for slot := int32(0); slot < int32(NumSlots(e.Config())); slot++ {
		if p := e.TargetContext().SeqPosMax(slot); p != -1 {
			t.Fatalf("target KV still holds seq %d up to pos %d", slot, p)
		}
		if p := e.DraftContext().SeqPosMax(slot); p != -1 {
			t.Fatalf("draft KV still holds seq %d up to pos %d", slot, p)
		}
	}
	if n := engine.LiveGrammars(); n != 0 {
		t.Fatalf("%d grammars left unfreed", n)
	}
}

// With KV streams llama.cpp rounds each stream up to a multiple of 256
// cells, and a sequence may use the whole stream, as a llama-server slot
// does: ctx 768 over 2 sequences gives streams of 512, and a 420-token
// prompt (over 768/2) completes with the draft model speculating.
func TestRealStreamHoldsRoundedCells(t *testing.T) {
	_, st, _ := realModels(t)
	e, stop := startEngine(t, Config{CtxSize: 768, MaxRunning: 2, SplitKV: true, Proposer: "draft"}, st, st)
	defer stop()
	if got := e.Config().MaxSeqLen; got != 512 {
		t.Fatalf("MaxSeqLen %d with streams of %d cells, want 512", got, e.TargetContext().NCtxSeq())
	}
	prompt := make([]int32, 420)
	for i := range prompt {
		prompt[i] = int32(1 + (i*7)%300)
	}
	out := runAll(t, e.Scheduler, []Request{{Prompt: prompt, MaxTokens: 80, IgnoreEOS: true}})
	if len(out[0]) != 80 {
		t.Fatalf("%d tokens, want 80", len(out[0]))
	}
	waitIdle(t, e.Scheduler)
}

// speculativeMatches runs reqs batched with each proposer of props (draft
// model, n-gram, or want as the prediction) at k = 4, and checks each
// output is want's, token for token.
func speculativeMatches(t *testing.T, draftM, target *engine.Model, reqs []Request, want [][]int32, props ...string) {
	t.Helper()
	for _, prop := range props {
		t.Run(prop, func(t *testing.T) {
			cfg := Config{CtxSize: 8192, MaxRunning: 32, MaxBatchTokens: 1024, Proposer: prop, SpecK: 4}
			rs := reqs
			var draft *engine.Model
			switch prop {
			case "draft":
				draft = draftM
			case "prediction":
				cfg.Proposer = "none"
				rs = make([]Request, len(reqs))
				for i, r := range reqs {
					r.Prediction = want[i]
					rs[i] = r
				}
			}
			e := newEngineRig(t, cfg, target, draft)
			got := runAll(t, e.Scheduler, rs)
			for i := range rs {
				if !slices.Equal(got[i], want[i]) {
					t.Fatalf("request %d: speculative %v\nplain %v", i, got[i], want[i])
				}
			}
			if s := waitIdle(t, e.Scheduler); s.DraftAccepted == 0 {
				t.Fatalf("nothing accepted: not a speculative run (%+v)", s)
			}
			checkKVMatches(t, e)
		})
	}
}

// TestRealLogitBiasLossless: logit_bias changes the output (banned tokens
// never appear, a forced one always does), and speculation with the draft
// model, n-gram and a prediction still gives token for token the biased
// target's greedy output.
func TestRealLogitBiasLossless(t *testing.T) {
	_, st, hv := realModels(t)
	plain := realRequests(t, hv.Vocab(), 12)
	unbiased := realAlone(t, hv, plain)
	// Ban each request's first unbiased token; push its third down. (Banning
	// the first two made request 1 meet a near-tie, 2e-4 nats apart at its
	// 16th token, which batched arithmetic decides differently from a lone
	// decode, with speculation or without: not what this test is about.)
	reqs := make([]Request, len(plain))
	for i, r := range plain {
		r.LogitBias = map[int32]float32{unbiased[i][0]: -100, unbiased[i][2]: -2}
		reqs[i] = r
	}
	want := realAlone(t, hv, reqs)
	for i := range reqs {
		if slices.Equal(want[i], unbiased[i]) {
			t.Fatalf("request %d: logit_bias changed nothing: %v", i, want[i])
		}
		for _, tok := range want[i] {
			if reqs[i].LogitBias[tok] == -100 {
				t.Fatalf("request %d: banned token %d in %v", i, tok, want[i])
			}
		}
	}
	speculativeMatches(t, st, hv, reqs, want, "draft", "ngram", "prediction")
	// Forcing one token (+100) makes the output that token throughout.
	force := Request{Prompt: plain[0].Prompt, MaxTokens: 6, IgnoreEOS: true, LogitBias: map[int32]float32{unbiased[3][0]: 100}}
	e := newEngineRig(t, Config{CtxSize: 1024, MaxRunning: 1, Proposer: "none"}, hv, nil)
	got := runAll(t, e.Scheduler, []Request{force})[0]
	if !slices.Equal(got, slices.Repeat([]int32{unbiased[3][0]}, 6)) {
		t.Fatalf("+100 on %d gave %v", unbiased[3][0], got)
	}
}

// TestRealPenaltiesLossless: a frequency penalty makes greedy output repeat
// itself less, and speculation keeps the penalised output token for token:
// each verify row is penalised for the draft tokens before it.
func TestRealPenaltiesLossless(t *testing.T) {
	_, st, hv := realModels(t)
	plain := fixedRequests(t, hv.Vocab(), 12, 48, true)
	unpen := realAlone(t, hv, plain)
	reqs := make([]Request, len(plain))
	for i, r := range plain {
		r.Sampling.FrequencyPenalty, r.Sampling.PresencePenalty = 0.6, 0.3
		reqs[i] = r
	}
	want := realAlone(t, hv, reqs)
	repeats := func(outs [][]int32) (n int) {
		for _, o := range outs {
			seen := map[int32]bool{}
			for _, tok := range o {
				if seen[tok] {
					n++
				}
				seen[tok] = true
			}
		}
		return n
	}
	if a, b := repeats(unpen), repeats(want); b >= a {
		t.Fatalf("penalised outputs repeat %d tokens, unpenalised %d", b, a)
	} else {
		t.Logf("repeated tokens: %d unpenalised, %d penalised", a, b)
	}
	speculativeMatches(t, st, hv, reqs, want, "draft", "ngram", "prediction")
	// llama.cpp's repeat_penalty over a 16-token window of prompt and output.
	for i, r := range plain {
		r.Sampling.RepeatPenalty, r.Sampling.RepeatLastN = 1.5, 16
		reqs[i] = r
	}
	rep := realAlone(t, hv, reqs)
	if slices.EqualFunc(rep, want, slices.Equal) {
		t.Fatal("repeat_penalty gave the presence/frequency outputs")
	}
	if a, b := repeats(unpen), repeats(rep); b >= a {
		t.Fatalf("repeat_penalty outputs repeat %d tokens, unpenalised %d", b, a)
	} else {
		t.Logf("repeated tokens: %d unpenalised, %d with repeat_penalty", a, b)
	}
	speculativeMatches(t, st, hv, reqs, rep, "draft", "ngram", "prediction")
	// Seeded sampling is checked in specdec (TestPenalisedPointMassEqualsPlain):
	// on the real backend a seeded draw near a boundary of the inverse CDF
	// flips with the batch shape's rounding (decision 0003).
}

// storyGrammar: a sentence of lower-case words after a capitalised one,
// then a full stop, and nothing after it.
const storyGrammar = `root ::= " " [A-Z] [a-z]* (" " [a-z]+){2,30} "."`

var storyGrammarRE = regexp.MustCompile(`^ [A-Z][a-z]*( [a-z]+){2,30}\.?$`)

// TestRealGrammarLossless: under a grammar every output is in its language
// (a prefix of it at max_tokens), and speculation (draft model, n-gram,
// prediction) gives the lone plain constrained output token for token,
// with constrained and free requests in one batch. No grammar is left
// behind.
func TestRealGrammarLossless(t *testing.T) {
	_, st, hv := realModels(t)
	reqs := realRequests(t, hv.Vocab(), 12)
	free := realAlone(t, hv, reqs)
	for i := range reqs {
		if i%3 != 2 {
			reqs[i].Grammar = storyGrammar
		}
	}
	want := realAlone(t, hv, reqs)
	ended := 0
	for i, r := range reqs {
		if r.Grammar == "" {
			continue
		}
		if slices.Equal(want[i], free[i]) {
			t.Errorf("request %d: the grammar changed nothing: %v", i, want[i])
		}
		text := detok(t, hv.Vocab(), want[i])
		if !storyGrammarRE.MatchString(text) {
			t.Errorf("request %d: %q is not in the grammar's language", i, text)
		}
		if len(want[i]) < r.MaxTokens {
			ended++
			if last := want[i][len(want[i])-1]; !hv.Vocab().IsEOG(last) || !strings.HasSuffix(text, ".") {
				t.Errorf("request %d ended early without a full sentence: %q", i, text)
			}
		}
	}
	if ended == 0 {
		t.Error("no constrained output reached the end of its sentence")
	}
	speculativeMatches(t, st, hv, reqs, want, "draft", "ngram", "prediction")
	if n := engine.LiveGrammars(); n != 0 {
		t.Errorf("%d grammars left unfreed", n)
	}
}

func detok(t *testing.T, v *engine.Vocab, toks []int32) string {
	t.Helper()
	var b []byte
	for _, tok := range toks {
		b = v.AppendPiece(b, tok, false)
	}
	return string(b)
}

// TestRealGrammarErrors: a grammar llama.cpp cannot use is a bad request;
// a grammar with a token the vocabulary cannot spell fails that request
// alone, and a cancelled constrained request frees its grammar.
func TestRealGrammarErrors(t *testing.T) {
	_, _, hv := realModels(t)
	e, stop := startEngine(t, Config{CtxSize: 1024, MaxRunning: 4, Proposer: "none"}, hv, nil)
	defer stop()
	prompt := realRequests(t, hv.Vocab(), 1)[0].Prompt
	// The last three are grammars llama.cpp accepts and then hangs on,
	// crashes on, or runs out of memory on: gbnf.Check refuses them first.
	for _, g := range []string{`root ::= "a`, `root ::= nothing`, `start ::= "a"`,
		`root ::= "a"{2,1}`, "a ::= root\na ::= \"x\"", "root ::= a root \"x\" | \"y\"\na ::= \"z\"?"} {
		if _, err := e.Submit(context.Background(), Request{Prompt: prompt, MaxTokens: 4, Grammar: g}); !errors.Is(err, ErrBadRequest) {
			t.Errorf("grammar %q: %v, want ErrBadRequest", g, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := e.Submit(ctx, Request{Prompt: prompt, MaxTokens: 500, IgnoreEOS: true, Grammar: `root ::= [a-z ]*`})
	if err != nil {
		t.Fatal(err)
	}
	<-ch
	cancel()
	for range ch {
	}
	got := runAll(t, e.Scheduler, []Request{{Prompt: prompt, MaxTokens: 8, Grammar: `root ::= " " [a-z]+`}})
	if len(got[0]) == 0 {
		t.Error("a request after the cancelled one made nothing")
	}
	// A grammar whose matching is too slow fails its request, not the loop:
	// with a limit of 1 ns every full mask is too slow.
	slow, stopSlow := startEngine(t, Config{CtxSize: 1024, MaxRunning: 4, Proposer: "none", GrammarMaskLimit: time.Nanosecond}, hv, nil)
	defer stopSlow()
	if _, err := slow.Submit(context.Background(), Request{Prompt: prompt, MaxTokens: 4, Grammar: `root ::= [a-z ]*`}); !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), "too complex") {
		t.Errorf("a grammar slower than the limit at its first mask: %v", err)
	}
	if out := runAll(t, slow.Scheduler, []Request{{Prompt: prompt, MaxTokens: 4}}); len(out[0]) != 4 {
		t.Errorf("a free request after it: %v", out[0])
	}
	waitIdle(t, e.Scheduler)
	if n := engine.LiveGrammars(); n != 0 {
		t.Errorf("%d grammars left unfreed", n)
	}
}

// TestRealPromptLogprobs: every prompt token after the first gets the
// logprob and alternatives of the row that predicts it, across prefill
// chunks, equal (to 1e-3) to what the same prefix gives as its first
// generated token's; max_tokens 0 scores the prompt and generates nothing.
func TestRealPromptLogprobs(t *testing.T) {
	_, st, _ := realModels(t)
	prompt, err := st.Vocab().Tokenize("Once upon a time, there was a little girl named Lily. She liked to play in the park with her dog.", true, false)
	if err != nil || len(prompt) < 20 {
		t.Fatalf("prompt of %d tokens (%v)", len(prompt), err)
	}
	e, stop := startEngine(t, Config{CtxSize: 1024, MaxRunning: 1, MaxBatchTokens: 9, KMax: 8, Proposer: "none"}, st, nil)
	defer stop()
	var plp []Logprob
	for _, maxTok := range []int{0, 4} {
		ch, err := e.Submit(context.Background(), Request{Prompt: prompt, MaxTokens: maxTok, PromptLogprobs: true, Logprobs: true, TopLogprobs: 3})
		if err != nil {
			t.Fatal(err)
		}
		var got []Logprob
		var last Event
		n := 0
		for ev := range ch {
			got = append(got, ev.PromptLogprobs...)
			if len(ev.PromptLogprobs) > 0 && n > 0 {
				t.Fatal("prompt logprobs after generated tokens")
			}
			n += len(ev.Tokens)
			last = ev
		}
		if last.Err != nil || n != maxTok || (maxTok == 0 && last.FinishReason != "length") {
			t.Fatalf("max_tokens %d: %d tokens, %v, %q", maxTok, n, last.Err, last.FinishReason)
		}
		if len(got) != len(prompt)-1 {
			t.Fatalf("max_tokens %d: %d prompt logprobs for %d tokens", maxTok, len(got), len(prompt))
		}
		plp = got
	}
	close := func(x, y float32) bool { return math.Abs(float64(x-y)) <= 1e-3*max(1, math.Abs(float64(x))) }
	for k := 1; k < len(prompt); k++ {
		lp := plp[k-1]
		if lp.Token != prompt[k] || len(lp.Top) != 3 || lp.Logprob > 0 {
			t.Fatalf("token %d: %+v", k, lp)
		}
		out := runAllEvents(t, e.Scheduler, Request{Prompt: prompt[:k], MaxTokens: 1, Logprobs: true, TopLogprobs: 3})
		ref := out.Logprobs[0].Top
		for j := range ref {
			if ref[j].Token != lp.Top[j].Token || !close(ref[j].Logprob, lp.Top[j].Logprob) {
				t.Fatalf("token %d: alternatives %v, the prefix alone gives %v", k, lp.Top, ref)
			}
			if ref[j].Token == lp.Token && !close(ref[j].Logprob, lp.Logprob) {
				t.Fatalf("token %d: logprob %v, the prefix alone gives %v", k, lp.Logprob, ref[j].Logprob)
			}
		}
	}
	if _, err := e.Submit(context.Background(), Request{Prompt: prompt, MaxTokens: 0}); !errors.Is(err, ErrBadRequest) {
		t.Errorf("max_tokens 0 without prompt logprobs: %v", err)
	}
}

// runAllEvents runs one request and returns its events merged.
func runAllEvents(t *testing.T, s *Scheduler, r Request) Event {
	t.Helper()
	ch, err := s.Submit(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	var all Event
	for ev := range ch {
		all.Tokens = append(all.Tokens, ev.Tokens...)
		all.Logprobs = append(all.Logprobs, ev.Logprobs...)
		all.Err = ev.Err
	}
	if all.Err != nil {
		t.Fatal(all.Err)
	}
	return all
}

// TestRealGrammarGuard: once one of its operations takes longer than the
// limit, a grammar and its clones allow nothing and verification fails
// with that error (a state where llama.cpp's matcher blows up must not
// stall the loop step after step).
func TestRealGrammarGuard(t *testing.T) {
	_, _, hv := realModels(t)
	v := engineVocab{Vocab: hv.Vocab()}
	sg, err := v.CompileGrammar(`root ::= [a-z ]*`)
	if err != nil {
		t.Fatal(err)
	}
	defer sg.Free()
	g := sg.(engineGrammar)
	rows := [][]float32{make([]float32, hv.Vocab().NTokens()), make([]float32, hv.Vocab().NTokens())}
	if _, err := specdec.ConstrainRows(g, rows, []int32{0}, false); err != nil {
		t.Fatalf("under the limit: %v", err)
	}
	g.guard.limit = time.Nanosecond
	_, err = specdec.ConstrainRows(g, rows, []int32{0}, false)
	if err == nil || !strings.Contains(err.Error(), "too complex") || g.Err() == nil {
		t.Fatalf("over the limit: %v", err)
	}
	if g.Allowed(' ') || g.Accept(' ') == nil || g.Mask(rows[0]) != 0 {
		t.Fatal("a grammar over the limit still allows tokens")
	}
}

// TestRealDraftGraphReuse: one stream drafting with the model keeps every
// draft decode at one row with one output, so llama.cpp reuses the draft's
// compute graph for all of them: after a pass that accepted every draft
// token, the draft's catch-up (the last draft token and the target's next
// one) is split into two one-row decodes instead of one two-row decode,
// which built a graph for it and again for the next one-row decode.
func TestRealDraftGraphReuse(t *testing.T) {
	_, st, hv := realModels(t)
	toks, err := hv.Vocab().Tokenize("Once upon a time", true, false)
	if err != nil {
		t.Fatal(err)
	}
	e := newEngineRig(t, Config{CtxSize: 512, MaxRunning: 1, MaxBatchTokens: 256, Proposer: "draft", SpecK: 3}, hv, st)
	out := runAll(t, e.Scheduler, []Request{{Prompt: toks, MaxTokens: 120, IgnoreEOS: true}})[0]
	waitIdle(t, e.Scheduler)
	s := e.Stats()
	if len(out) != 120 || s.DraftAccepted == 0 {
		t.Fatalf("%d tokens, %d accepted: not a speculative run", len(out), s.DraftAccepted)
	}
	full := s.AcceptedByPosition[2] // passes that accepted all three
	built := s.Decodes[1] - s.GraphsReused[1]
	t.Logf("draft: %d decodes, %d built a graph; %d passes accepted all 3 of %d first proposals",
		s.Decodes[1], built, full, s.ProposedByPosition[0])
	if full < 5 {
		t.Fatalf("only %d passes accepted every draft token: the test needs some", full)
	}
	// Built: the prompt's, the first drafting decode's, and at most a few
	// more (the KV window growing past 256 cells, a pass drafting fewer).
	if built > 6 {
		t.Errorf("%d of %d draft decodes built a compute graph, want at most 6", built, s.Decodes[1])
	}
}

// TestRealStopTokens: a stop token ends the output just after its first
// occurrence, also with ignore_eos, and speculation keeps that output.
func TestRealStopTokens(t *testing.T) {
	_, st, hv := realModels(t)
	plain := fixedRequests(t, hv.Vocab(), 8, 64, true)
	full := realAlone(t, hv, plain)
	reqs := make([]Request, len(plain))
	want := make([][]int32, len(plain))
	for i, r := range plain {
		stop := full[i][30+i%20]
		cut := slices.Index(full[i], stop) + 1
		r.StopTokens = []int32{stop}
		reqs[i], want[i] = r, full[i][:cut]
	}
	got := realAlone(t, hv, reqs)
	for i := range got {
		if !slices.Equal(got[i], want[i]) {
			t.Errorf("request %d, stop token %d: %v, want %v", i, reqs[i].StopTokens[0], got[i], want[i])
		}
	}
	speculativeMatches(t, st, hv, reqs, want, "draft", "ngram", "prediction")
}

// TestRealMinTokens: with min_tokens an answer that ended early goes on
// past its end-of-generation token (the same tokens before it), and
// speculation keeps that output. A logit_bias on the end-of-sequence token
// makes answers end early (neither model ends a greedy story in 400
// tokens); min_tokens's ban outweighs any bias.
func TestRealMinTokens(t *testing.T) {
	_, st, hv := realModels(t)
	plain := fixedRequests(t, hv.Vocab(), 16, 96, false)
	for i := range plain {
		plain[i].LogitBias = map[int32]float32{hv.Vocab().EOS(): 8 + 2*float32(i%8)}
	}
	natural := realAlone(t, hv, plain)
	var reqs []Request
	var ends, from []int
	for i, out := range natural {
		if n := len(out); n < 80 && hv.Vocab().IsEOG(out[n-1]) {
			r := plain[i]
			r.MinTokens = n + 8
			reqs, ends, from = append(reqs, r), append(ends, n), append(from, i)
		}
	}
	if len(reqs) < 2 {
		for _, out := range natural {
			t.Logf("%d tokens, last %d", len(out), out[len(out)-1])
		}
		t.Fatalf("only %d of %d answers end early; the test needs two", len(reqs), len(plain))
	}
	got := realAlone(t, hv, reqs)
	for i, out := range got {
		n := ends[i]
		if len(out) < reqs[i].MinTokens || !slices.Equal(out[:n-1], natural[from[i]][:n-1]) {
			t.Errorf("min_tokens %d: %d tokens %v; natural %d tokens", reqs[i].MinTokens, len(out), out, n)
		}
		for j, tok := range out[:reqs[i].MinTokens] {
			if hv.Vocab().IsEOG(tok) {
				t.Errorf("min_tokens %d: end-of-generation token at %d", reqs[i].MinTokens, j)
			}
		}
	}
	t.Logf("%d answers lengthened from %v tokens", len(reqs), ends)
	speculativeMatches(t, st, hv, reqs, got, "draft", "ngram", "prediction")
}

// TestRealSlowFirstReadingStillDrafts: a stall during the draft's first
// prompt (its reading 40 ms for 5 rows, the target's 15 ms) once priced
// every draft step at 2.7 target decodes, so adaptive k never drafted and
// never measured a draft step (a fresh server on the heavy pair, short
// prompts: 2 runs in 6, at half the speed). Until a draft step is measured
// it is priced at most at the models' size ratio, and a sequence that
// drafts replaces the reading.
func TestRealSlowFirstReadingStillDrafts(t *testing.T) {
	lib, st, hv := realModels(t)
	e, err := NewEngine(Config{CtxSize: 512, MaxRunning: 1, Threads: testThreads, Proposer: "draft"}, lib, hv, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.checkKV = true
	e.costs.ObserveDraft(5, 40*time.Millisecond)
	e.costs.ObserveVerify(5, 15*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	go e.Run(ctx)
	defer func() { cancel(); <-e.Done(); e.Close() }()
	out := runAll(t, e.Scheduler, fixedRequests(t, hv.Vocab(), 1, 64, true))[0]
	s := waitIdle(t, e.Scheduler)
	t.Logf("%d tokens, %d draft tokens proposed, %d accepted, %d tries (size prior %.2f)", len(out), s.DraftProposed, s.DraftAccepted, s.DraftTries, e.costs.DraftPrior)
	if s.DraftProposed < 32 {
		t.Errorf("%d draft tokens proposed for 64 output tokens: adaptive k kept the slow reading", s.DraftProposed)
	}
}

// TestRealStaleReadingExpires: a verify size measured during a stall (60 ms
// for 2 rows, against 1 ms for one row) floors every larger size while it
// is fresh, so adaptive k does not draft; plain decodes go on and, once the
// reading is costStale observations old, it no longer counts and
// speculation resumes. Before, it floored the verify sizes for good: a
// benchmark server stopped speculating for the rest of its runs, and here
// the last requests drafted nothing.
func TestRealStaleReadingExpires(t *testing.T) {
	lib, st, _ := realModels(t)
	// A target about 15x costlier per token than the draft: speculation
	// pays on it (on the heavy test model the draft costs half a decode).
	hv, err := lib.LoadModel(context.Background(), engine.ModelParams{Path: testenv.CostlyModel(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer hv.Close()
	e, err := NewEngine(Config{CtxSize: 512, MaxRunning: 1, Threads: testThreads, Proposer: "draft"}, lib, hv, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.checkKV = true
	e.costs.ObserveVerify(1, time.Millisecond)
	e.costs.ObserveVerify(2, 60*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	go e.Run(ctx)
	defer func() { cancel(); <-e.Done(); e.Close() }()
	reqs := fixedRequests(t, hv.Vocab(), 8, 128, true)
	var per []uint64
	var triesBefore uint64
	for i, r := range reqs {
		runAll(t, e.Scheduler, []Request{r})
		s := waitIdle(t, e.Scheduler)
		per = append(per, s.DraftProposed)
		if i == 3 {
			triesBefore = s.DraftTries
		}
	}
	fin := waitIdle(t, e.Scheduler)
	t.Logf("draft tokens proposed after each request (cumulative): %v; tries %d", per, fin.DraftTries)
	if per[0] > 8 {
		t.Fatalf("the planted 60 ms reading did not stop speculation: %v", per)
	}
	// 8 x 128 plain steps pass costStale by the fifth request: the stall
	// no longer prices the verify sizes, and adaptive k chooses to draft
	// again, beyond its tries of exploreK tokens. (On this pair
	// speculation pays only a little, so how much it drafts after that
	// depends on the host's load.)
	if v := e.costs.VerifyCost(4); v > 30e-3 {
		t.Errorf("a 4-row verify is priced at %.1f ms after the stall went stale", v*1e3)
	}
	if chosen := per[7] - per[3] - exploreK*(fin.DraftTries-triesBefore); chosen < 4 {
		t.Errorf("adaptive k chose %d draft tokens in the last four requests: the stale reading still counts (%v)", chosen, per)
	}
}
