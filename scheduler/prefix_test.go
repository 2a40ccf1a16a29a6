package scheduler

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"specd/engine"
)

// longStory is TinyStories-style text: stories260K tokenizes it into a
// thousand-odd tokens, enough for several distinct 400-token prompts.
const longStory = `Once upon a time, there was a little girl named Lily. She lived in a small house with her mom and dad and a big brown dog named Max. Every morning, Lily and Max went to the park to play. They liked to run on the grass and look at the birds in the trees.
One day, Lily saw a red ball under a bench. She picked it up and threw it far away. Max ran after the ball and brought it back to her. Lily laughed and said, "Good dog, Max!" They played with the ball all morning until the sun was high in the sky.
Then Lily felt hungry. She said, "Max, let's go home and eat some lunch." Max wagged his tail and they walked home together. Mom made a big sandwich for Lily and gave Max a bowl of food. Lily ate her sandwich and drank some milk. After lunch, she was very sleepy, so she took a nap on the soft bed.
When Lily woke up, it was raining outside. She was sad because she could not go to the park. Mom said, "Don't be sad, Lily. We can play a game inside." They played with blocks and built a tall tower. Then Max bumped into the tower and it fell down. Lily and Mom laughed and laughed. Max barked and ran in a circle.
The next day, the sun came out again. Lily and Max went back to the park. There, Lily met a boy named Tom. Tom had a little kite with a long tail. He said, "Do you want to fly my kite with me?" Lily said, "Yes, please!" They ran together and the kite went up, up, up into the blue sky. Max jumped and barked at the kite.
Tom and Lily became best friends. Every day they played in the park. They shared their toys and their snacks. One day, Tom was sad because he lost his favorite toy car. Lily helped him look for it. They looked under the slide and behind the big tree. At last, Max found the car in the sand and gave it to Tom. Tom hugged Max and said, "Thank you, Max! You are a good dog."
In the evening, Lily told her mom and dad about her day. Dad smiled and said, "It is good to help your friends." Lily nodded and gave Max a big hug. Then she went to bed and dreamed about kites, balls and her best friend Tom. The end.
Once there was a little bird who lived in a tall tree. The bird liked to sing every morning. One day, a cat came to the tree and wanted to catch the bird. The bird was scared and flew high up into the sky. The cat could not fly, so it sat down and waited. The bird was smart. It called all its friends, and they sang a loud song together. The cat did not like the noise and ran away. The birds were happy and sang all day long.`

// storyTokens tokenizes longStory once (with BOS first).
func storyTokens(tb testing.TB, v *engine.Vocab) []int32 {
	tb.Helper()
	toks, err := v.Tokenize(longStory, true, false)
	if err != nil {
		tb.Fatal(err)
	}
	if len(toks) < 900 {
		tb.Fatalf("story is only %d tokens", len(toks))
	}
	return toks
}

// prefixPair is a 400-token prompt and a second prompt that shares its
// first `shared` tokens and continues with other text of the story.
func prefixPair(story []int32, off, shared, n int) (first, second []int32) {
	first = append([]int32{story[0]}, story[1+off:off+n]...)
	second = append(slices.Clip(first[:shared]), story[off+n+100:off+n+100+n-shared]...)
	return first, second
}

// TestRealPrefixCacheHit: a prompt sharing 360 of 400 tokens with an earlier
// finished request reuses the shared full blocks (22 × 16 = 352 tokens) and
// generates exactly what a cold run (prefix cache off) generates, greedy,
// with and without a draft model (whose cache must follow the target's),
// in the unified pool and with per-sequence streams (where the second
// prompt takes over the first one's stream).
func TestRealPrefixCacheHit(t *testing.T) {
	_, st, hv := realModels(t)
	const n, shared, gen = 400, 360, 64
	story := storyTokens(t, st.Vocab())
	var firsts, seconds []Request
	for _, off := range []int{0, 150, 300} {
		a, b := prefixPair(story, off, shared, n)
		firsts = append(firsts, Request{Prompt: a, MaxTokens: gen, IgnoreEOS: true})
		seconds = append(seconds, Request{Prompt: b, MaxTokens: gen, IgnoreEOS: true})
	}
	for _, tc := range []struct {
		name          string
		target, draft *engine.Model
		proposer      string
		split         bool
	}{
		{"stories", st, nil, "none", false},
		{"heavy+draft", hv, st, "draft", false},
		{"stories/streams", st, nil, "none", true},
		{"heavy+draft/streams", hv, st, "draft", true},
		// The draft is loaded but not used: its KV lags behind the
		// target's except for the prompt, which must still be cached.
		{"heavy+draft-unused/streams", hv, st, "none", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{CtxSize: 2048, MaxRunning: 4, MaxBatchTokens: 512, Proposer: tc.proposer, SpecK: 3, SplitKV: tc.split}
			coldCfg := cfg
			coldCfg.DisablePrefixCache = true
			cold := newEngineRig(t, coldCfg, tc.target, tc.draft)
			want, _ := runRequests(t, cold.Scheduler, seconds)
			warm := newEngineRig(t, cfg, tc.target, tc.draft)
			bs := warm.Config().BlockSize
			for i := range firsts {
				_, ev := runRequests(t, warm.Scheduler, firsts[i:i+1])
				if c := ev[0].Usage.CachedTokens; c != 0 {
					t.Fatalf("prompt %d: the first request found %d cached tokens", i, c)
				}
				before := waitIdle(t, warm.Scheduler)
				got, ev := runRequests(t, warm.Scheduler, seconds[i:i+1])
				after := waitIdle(t, warm.Scheduler)
				wantCached := shared / bs * bs
				u := ev[0].Usage
				if u.CachedTokens != wantCached {
					t.Fatalf("prompt %d: cached %d tokens, want %d (%d shared, block %d)", i, u.CachedTokens, wantCached, shared, bs)
				}
				if hits := after.PrefixHits - before.PrefixHits; hits < uint64(wantCached/bs) {
					t.Fatalf("prompt %d: PrefixHits grew by %d blocks, want at least %d", i, hits, wantCached/bs)
				}
				if !slices.Equal(got[0], want[i]) {
					t.Fatalf("prompt %d: with the prefix cache %v\ncold %v", i, got[0], want[i])
				}
				if len(got[0]) != gen {
					t.Fatalf("prompt %d: %d tokens, want %d", i, len(got[0]), gen)
				}
				t.Logf("prompt %d: cached %d of %d, prompt time %v", i, u.CachedTokens, u.PromptTokens, u.PromptTime)
			}
			// cache_prompt: false: the same prompt again, prefilled whole.
			nc := seconds[0]
			nc.NoPrefixCache = true
			got, ev := runRequests(t, warm.Scheduler, []Request{nc})
			if c := ev[0].Usage.CachedTokens; c != 0 || !slices.Equal(got[0], want[0]) {
				t.Fatalf("NoPrefixCache: cached %d (want 0), output equal %v", c, slices.Equal(got[0], want[0]))
			}
			checkKVMatches(t, warm)
		})
	}
}

// TestRealPrefixCacheOneTokenRequest: a request that finishes in the step
// that prefilled it (max_tokens 1, or EOS / a stop string at once) should
// leave its prompt's full blocks in the cache like any other. Today
// updateOne commits only while the sequence is unfinished, so such a prompt
// is never cached; the test skips on that known gap and asserts once it is
// fixed (commit before finish: see the report in docs/BENCHMARKS.md).
func TestRealPrefixCacheOneTokenRequest(t *testing.T) {
	_, st, _ := realModels(t)
	const n, shared = 400, 360
	story := storyTokens(t, st.Vocab())
	a, b := prefixPair(story, 0, shared, n)
	e := newEngineRig(t, Config{CtxSize: 2048, MaxRunning: 4, MaxBatchTokens: 512, Proposer: "none"}, st, nil)
	runRequests(t, e.Scheduler, []Request{{Prompt: a, MaxTokens: 1}})
	_, ev := runRequests(t, e.Scheduler, []Request{{Prompt: b, MaxTokens: 1}})
	want := shared / e.Config().BlockSize * e.Config().BlockSize
	if c := ev[0].Usage.CachedTokens; c != want {
		t.Fatalf("cached %d, want %d: a request that ends in its first step must still commit its blocks", c, want)
	}
}

// TestPrefixCacheBudget (fake engine): finished requests leave at most
// PrefixCacheBlocks blocks cached, whose cells are all the KV left; the
// default is paging's (512 tokens' worth); out-of-range budgets are errors.
func TestPrefixCacheBudget(t *testing.T) {
	const budget, bs = 6, 8
	cfg := Config{CtxSize: 1024, MaxRunning: 4, MaxBatchTokens: 256, KMax: 4, BlockSize: bs, PrefixCacheBlocks: budget}
	r := newRig(t, cfg, false)
	runAll(t, r.s, mkJobs(24, 9, 0))
	waitIdle(t, r.s)
	r.s.Close()
	<-r.s.Done()
	st := r.s.alloc.Stats()
	if st.Cached == 0 || st.Cached > budget || st.Evictions == 0 {
		t.Fatalf("budget %d: %+v", budget, st)
	}
	if n := r.target.usedCells(); n != st.Cached*bs {
		t.Fatalf("%d KV cells left, %d cached blocks of %d", n, st.Cached, bs)
	}

	newSched := func(c Config) (*Scheduler, error) {
		return New(c, newFake(fakeVocabN, c.CtxSize+64, 0), nil, fakeVocab{fakeVocabN}, nil)
	}
	s, err := newSched(Config{CtxSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.alloc.Config().MaxCachedBlocks; got != 32 {
		t.Fatalf("default budget %d blocks, want 32 (512 tokens of 16)", got)
	}
	for _, bad := range []int{-1, cfg.CtxSize/bs + 1} {
		c := cfg
		c.PrefixCacheBlocks = bad
		if _, err := newSched(c); err == nil {
			t.Fatalf("PrefixCacheBlocks %d accepted", bad)
		}
	}
}

// BenchmarkPrefixPrefill: admission-to-first-token time (Usage.PromptTime)
// of a 400-token prompt that shares 360 tokens with a finished request
// (warm, 352 tokens from the cache) against the same prompt with the prefix
// cache off (cold). Each iteration uses a prompt no earlier one shares a
// block with. Metrics: mean cold and warm prompt time and their ratio.
// Both pool sizes run with the default prefix-cache budget
// (paging.DefaultMaxCachedTokens), which should keep the ratio from falling
// with the pool's size (docs/decisions/0005-prefix-cache-budget.md).
func BenchmarkPrefixPrefill(b *testing.B) {
	for _, th := range []int{1, 2} {
		// unified: ctx is the pool's size. Cached blocks stay in it, up to
		// the budget, and every decode attends over the pool's whole used
		// range. streams: 4 streams of ctx/4 cells; the warm prompt takes
		// over the finished request's stream and scans only its own cells.
		for _, c := range []struct {
			split bool
			ctx   int
		}{{false, 1024}, {false, 4096}, {true, 2048}} {
			layout := map[bool]string{false: "unified", true: "streams"}[c.split]
			b.Run(fmt.Sprintf("threads=%d/%s/ctx=%d", th, layout, c.ctx), func(b *testing.B) { benchPrefixPrefill(b, th, c.ctx, c.split) })
		}
	}
}

func benchPrefixPrefill(b *testing.B, threads, ctxSize int, split bool) {
	l, st, _ := benchModels(b)
	const n, shared = 400, 360
	story := storyTokens(b, st.Vocab())
	var firsts, seconds []Request
	for i := range b.N {
		a, s := prefixPair(story, 0, shared, n)
		// Tokens 1 and 2 make iteration i's prefix its own.
		for _, p := range [][]int32{a, s} {
			p[1], p[2] = int32(3+i%500), int32(3+(i/500)%500)
		}
		// MaxTokens 2: a request that finishes in its first step leaves
		// nothing in the cache (see TestRealPrefixCacheOneTokenRequest).
		firsts = append(firsts, Request{Prompt: a, MaxTokens: 2})
		seconds = append(seconds, Request{Prompt: s, MaxTokens: 1})
	}
	cfg := Config{CtxSize: ctxSize, MaxRunning: 4, MaxBatchTokens: 512, Proposer: "none", Threads: threads, SplitKV: split}
	b.ResetTimer()
	// Cold, then warm: one engine (and one thread pool) at a time.
	var coldT, warmT time.Duration
	func() {
		c := cfg
		c.DisablePrefixCache = true
		e, err := NewEngine(c, l, st, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer e.Close()
		stop := runScheduler(e)
		defer stop()
		runRequests(b, e.Scheduler, firsts[:1]) // warm up
		for i := range b.N {
			_, ev := runRequests(b, e.Scheduler, seconds[i:i+1])
			coldT += ev[0].Usage.PromptTime
		}
	}()
	func() {
		e, err := NewEngine(cfg, l, st, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer e.Close()
		stop := runScheduler(e)
		defer stop()
		for i := range b.N {
			runRequests(b, e.Scheduler, firsts[i:i+1])
			_, ev := runRequests(b, e.Scheduler, seconds[i:i+1])
			if want := shared / 16 * 16; ev[0].Usage.CachedTokens != want {
				b.Fatalf("iteration %d: cached %d, want %d", i, ev[0].Usage.CachedTokens, want)
			}
			warmT += ev[0].Usage.PromptTime
		}
	}()
	b.StopTimer()
	b.ReportMetric(float64(coldT.Microseconds())/float64(b.N), "cold-µs")
	b.ReportMetric(float64(warmT.Microseconds())/float64(b.N), "warm-µs")
	b.ReportMetric(float64(coldT)/float64(warmT), "cold/warm")
}

// runScheduler runs e's loop until the returned stop is called.
func runScheduler(e *Engine) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	go e.Run(ctx)
	return func() { cancel(); <-e.Done() }
}

// TestRealPrefixCopyFromRunning: with per-sequence streams, a prompt that
// shares a prefix with a request still running gets a copy of that
// request's stream (trimmed to the shared full blocks) instead of
// prefilling it again, and generates exactly what a cold run generates;
// the running request is undisturbed. With the stories260K target alone and
// with the heavy target drafting with stories260K (both caches copy).
func TestRealPrefixCopyFromRunning(t *testing.T) {
	_, st, hv := realModels(t)
	const n, shared = 400, 360
	story := storyTokens(t, st.Vocab())
	first, second := prefixPair(story, 0, shared, n)
	long := Request{Prompt: first, MaxTokens: 96, IgnoreEOS: true}
	short := Request{Prompt: second, MaxTokens: 32, IgnoreEOS: true}
	for _, tc := range []struct {
		name          string
		target, draft *engine.Model
		proposer      string
	}{{"stories", st, nil, "none"}, {"heavy+draft", hv, st, "draft"}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{CtxSize: 2048, MaxRunning: 4, MaxBatchTokens: 512, Proposer: tc.proposer, SpecK: 3, SplitKV: true}
			coldCfg := cfg
			coldCfg.DisablePrefixCache = true
			cold := newEngineRig(t, coldCfg, tc.target, tc.draft)
			want, _ := runRequests(t, cold.Scheduler, []Request{long, short})

			warm := newEngineRig(t, cfg, tc.target, tc.draft)
			ch, err := warm.Submit(context.Background(), long)
			if err != nil {
				t.Fatal(err)
			}
			// Wait for the first generated tokens: its prompt is committed.
			var gotLong []int32
			for ev := range ch {
				gotLong = append(gotLong, ev.Tokens...)
				if len(gotLong) >= 4 || ev.Done {
					break
				}
			}
			before := warm.Stats().PrefixStreamCopies
			got, ev := runRequests(t, warm.Scheduler, []Request{short})
			if c := warm.Stats().PrefixStreamCopies - before; c != 1 {
				t.Fatalf("%d stream copies, want 1 (did the first request finish too soon?)", c)
			}
			for e := range ch {
				gotLong = append(gotLong, e.Tokens...)
			}
			if c := ev[0].Usage.CachedTokens; c != shared/16*16 {
				t.Fatalf("cached %d tokens, want %d copied from the running request", c, shared/16*16)
			}
			if !slices.Equal(got[0], want[1]) {
				t.Fatalf("copied prefix: %v\ncold %v", got[0], want[1])
			}
			if !slices.Equal(gotLong, want[0]) {
				t.Fatalf("the running request changed: %v\ncold %v", gotLong, want[0])
			}
			checkKVMatches(t, warm)
		})
	}
}
