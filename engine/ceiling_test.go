package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"specd/internal/testenv"
)

// BenchmarkCeiling is the backend's own limit for the serving workload of
// bench/compare.sh scenario 1: c streams, each a 128-token prompt and 128
// greedy output tokens, no HTTP, no scheduler, perfectly batched (all
// prompts prefilled together in 512-token batches, then 128 decodes of c
// tokens, one KV stream per sequence of 384 cells as `specd serve
// --ctx-size c*384 --parallel c`). No daemon on the same build can beat
// it: it is what a server's output tok/s is to be read against
// (docs/BENCHMARKS.md). The model is stories260K or $SPECD_TEST_MODEL;
// threads 2 or $SPECD_BENCH_THREADS.
func BenchmarkCeiling(b *testing.B) {
	for _, c := range []int{1, 4, 16, 32} {
		b.Run(fmt.Sprintf("c=%d", c), func(b *testing.B) { benchCeiling(b, c, 128, 128) })
	}
}

func benchCeiling(b *testing.B, nSeq, nIn, nOut int) {
	const nBatch = 512
	l, m := stories(b)
	c := newCtx(b, m, ContextParams{NCtx: nSeq * 384, NSeqMax: nSeq, NBatch: nBatch, NUBatch: nBatch,
		NOutputsMax: max(nSeq, 1), Threads: benchThreads(), FlashAttn: FlashAttnOff,
		TypeK: benchKV(), TypeV: benchKV()})
	batch := newBatch(b, l, nBatch)
	next := make([]int32, nSeq)
	rows := make([]int, nSeq)
	nv := m.Vocab().NTokens()
	request := func() {
		c.ClearKV()
		// Prefill: every prompt, in batches of up to nBatch tokens, logits
		// for each prompt's last token.
		batch.Reset()
		for s := range nSeq {
			for p := range nIn {
				if batch.Len() == nBatch {
					if err := c.Decode(batch); err != nil {
						b.Fatal(err)
					}
					fetch(c, next, rows, nSeq)
					batch.Reset()
				}
				last := p == nIn-1
				r := batch.Add(int32(1+(s*131+p*7)%(nv-1)), int32(p), int32(s), last)
				if last {
					rows[s] = r
				} else if p == 0 {
					rows[s] = -1
				}
			}
		}
		if err := c.Decode(batch); err != nil {
			b.Fatal(err)
		}
		fetch(c, next, rows, nSeq)
		for i := 1; i < nOut; i++ {
			batch.Reset()
			for s := range nSeq {
				rows[s] = batch.Add(next[s], int32(nIn+i-1), int32(s), true)
			}
			if err := c.Decode(batch); err != nil {
				b.Fatal(err)
			}
			fetch(c, next, rows, nSeq)
		}
	}
	request() // warm up
	b.ResetTimer()
	for range b.N {
		request()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*nSeq*nOut)/b.Elapsed().Seconds(), "out-tok/s")
}

// benchKV is the KV cache type: f16 (llama.cpp's default) or $SPECD_BENCH_KV.
func benchKV() KVType {
	if t := os.Getenv("SPECD_BENCH_KV"); t != "" {
		return KVType(t)
	}
	return "f16"
}

// fetch takes the greedy token of every sequence whose row is in the batch
// just decoded, and marks the rows consumed.
func fetch(c *Context, next []int32, rows []int, n int) {
	for s := range n {
		if rows[s] >= 0 {
			next[s] = argmax(c.Logits(rows[s]))
			rows[s] = -1
		}
	}
}

// BenchmarkVerifyCost is the cost v of a speculative verify pass relative
// to a plain decode: one sequence with a 128-token history decodes n tokens
// in one llama_decode (logits for all n), n = 1..9; ms/pass for n = k+1
// divided by ms/pass for n = 1 is v(k) in the Leviathan bound
// E / (k·c + v). Run it on the benchmark target:
// SPECD_TEST_MODEL=.cache/models/heavy-q8.gguf SPECD_BENCH_THREADS=1.
func BenchmarkVerifyCost(b *testing.B) {
	for n := 1; n <= 9; n++ {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) { benchVerify(b, n) })
	}
}

// BenchmarkVerifyCostInterleaved measures the same passes (1..9 tokens at
// a 128-token history) round-robin in one context, rotating the order every
// round, so that drift of the machine's speed (other jobs, frequency) falls
// on every n alike; separate sub-benchmarks run minutes apart and their
// ratios spread by up to 1.6x. One iteration = one pass of every n. Reports
// ms per pass for each n (n1-ms ... n9-ms), the median over iterations.
func BenchmarkVerifyCostInterleaved(b *testing.B) {
	const maxN = 9
	pass := verifyPass(b)
	for n := 1; n <= maxN; n++ {
		pass(n)
	}
	times := make([][]float64, maxN+1)
	b.ResetTimer()
	for i := range b.N {
		for j := range maxN {
			n := 1 + (i+j)%maxN
			times[n] = append(times[n], float64(pass(n).Microseconds())/1000)
		}
	}
	b.StopTimer()
	for n := 1; n <= maxN; n++ {
		reportMedian(b, times[n], fmt.Sprintf("n%d-ms", n))
	}
}

// reportMedian reports the median of v (sorted in place) as metric unit.
func reportMedian(b *testing.B, v []float64, unit string) {
	slices.Sort(v)
	b.ReportMetric(v[len(v)/2], unit)
}

func benchVerify(b *testing.B, n int) {
	pass := verifyPass(b)
	for range 3 {
		pass(n)
	}
	b.ResetTimer()
	for range b.N {
		pass(n)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/pass")
}

// verifyPass sets up one sequence with a 128-token history and returns a
// pass: decode n more tokens in one llama_decode with logits for all n,
// argmax each, drop them again. It returns the pass's time.
func verifyPass(b *testing.B) func(n int) time.Duration {
	const hist = 128
	l, m := stories(b)
	c := newCtx(b, m, ContextParams{NCtx: 512, NSeqMax: 1, NBatch: 512, NUBatch: 512,
		Threads: benchThreads(), FlashAttn: FlashAttnOff, TypeK: benchKV(), TypeV: benchKV()})
	batch := newBatch(b, l, 512)
	nv := m.Vocab().NTokens()
	batch.Reset()
	for p := range hist {
		batch.Add(int32(1+p*7%(nv-1)), int32(p), 0, false)
	}
	if err := c.Decode(batch); err != nil {
		b.Fatal(err)
	}
	return func(n int) time.Duration {
		batch.Reset()
		for j := range n {
			batch.Add(int32(1+j*13%(nv-1)), int32(hist+j), 0, true)
		}
		t0 := time.Now()
		if err := c.Decode(batch); err != nil {
			b.Fatal(err)
		}
		for j := range n {
			_ = argmax(c.Logits(j))
		}
		d := time.Since(t0)
		c.SeqRemove(0, hist, -1)
		return d
	}
}

// BenchmarkDraftAfterVerify is the draft model's one-token decode as the
// speculative loop sees it: after each target verify pass of 4 tokens
// (SPECD_TEST_MODEL, at a 128-token history), 3 draft decodes (stories260K,
// or $SPECD_BENCH_DRAFT), against the same draft decodes back to back with
// no target pass between rounds. Reports the median ms per draft decode of
// each (after-verify-ms, alone-ms), of the first after a verify
// (first-after-ms) and of the verify pass (verify-ms).
func BenchmarkDraftAfterVerify(b *testing.B) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	const k, hist = 3, 128
	pass := verifyPass(b)
	l, _ := stories(b)
	path := os.Getenv("SPECD_BENCH_DRAFT")
	if path == "" {
		path = filepath.Join(testenv.RepoRoot(), "..", "shared", "models", "stories260K.gguf")
	}
	dm, err := l.LoadModel(context.Background(), ModelParams{Path: path})
	if err != nil {
		b.Fatal(err)
	}
	defer dm.Close()
	dc := newCtx(b, dm, ContextParams{NCtx: 512, NSeqMax: 1, NBatch: 512, NUBatch: 512,
		Threads: benchThreads(), FlashAttn: FlashAttnOff})
	batch := newBatch(b, l, 512)
	nv := dm.Vocab().NTokens()
	for p := range hist {
		batch.Add(int32(1+p*7%(nv-1)), int32(p), 0, p == hist-1)
	}
	if err := dc.Decode(batch); err != nil {
		b.Fatal(err)
	}
	// every returns v[i], v[i+n], v[i+2n], ...
	every := func(v []float64, n, i int) (out []float64) {
		for ; i < len(v); i += n {
			out = append(out, v[i])
		}
		return out
	}
	// drafts decodes k tokens one at a time after the history, then drops
	// them; it returns the time of each decode.
	drafts := func(out []float64) []float64 {
		tok := int32(1)
		for j := range k {
			batch.Reset()
			batch.Add(tok, int32(hist+j), 0, true)
			t0 := time.Now()
			if err := dc.Decode(batch); err != nil {
				b.Fatal(err)
			}
			tok = argmax(dc.Logits(0))
			out = append(out, float64(time.Since(t0).Microseconds())/1000)
		}
		dc.SeqRemove(0, hist, -1)
		return out
	}
	var after, alone, verify []float64
	b.ResetTimer()
	for range b.N {
		verify = append(verify, float64(pass(k+1).Microseconds())/1000)
		after = drafts(after)
		alone = drafts(alone)
	}
	b.StopTimer()
	for _, s := range []struct {
		name string
		v    []float64
	}{{"after-verify-ms", after}, {"first-after-ms", every(after, k, 0)}, {"alone-ms", alone}, {"verify-ms", verify}} {
		reportMedian(b, s.v, s.name)
	}
}

// BenchmarkStepShapes times the target passes continuous batching mixes,
// round-robin in one context of 4 streams: one 128-token prompt, four at
// once, three one-token decodes (64-token histories) plus one prompt, and
// three or four decodes alone. Reports the median ms of each. With
// SPECD_TEST_MODEL=.cache/models/heavy-q8.gguf SPECD_BENCH_THREADS=1 it
// shows whether prompts arriving together (lockstep) or one at a time next
// to decodes cost more per row (decisions/0008).
func BenchmarkStepShapes(b *testing.B) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	l, m := stories(b)
	c := newCtx(b, m, ContextParams{NCtx: 4 * 384, NSeqMax: 4, NBatch: 512, NUBatch: 512,
		Threads: benchThreads(), FlashAttn: FlashAttnOff, TypeK: benchKV(), TypeV: benchKV()})
	batch := newBatch(b, l, 512)
	nv := m.Vocab().NTokens()
	tok := func(s, p int) int32 { return int32(1 + (s*131+p*7)%(nv-1)) }
	// pass: decoders (after a 64-token history each) decode one token, and
	// prompts prefill 128 tokens, in one llama_decode; its time.
	pass := func(prompts, decoders []int) time.Duration {
		c.ClearKV()
		batch.Reset()
		for _, s := range decoders {
			for p := range 64 {
				batch.Add(tok(s, p), int32(p), int32(s), false)
			}
		}
		if batch.Len() > 0 {
			if err := c.Decode(batch); err != nil {
				b.Fatal(err)
			}
		}
		batch.Reset()
		// Ascending sequence ids, as the scheduler sorts a step's items.
		for s := range 4 {
			if slices.Contains(decoders, s) {
				batch.Add(tok(s, 64), 64, int32(s), true)
			}
			if slices.Contains(prompts, s) {
				for p := range 128 {
					batch.Add(tok(s, p), int32(p), int32(s), p == 127)
				}
			}
		}
		t0 := time.Now()
		if err := c.Decode(batch); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	shapes := []struct {
		name              string
		prompts, decoders []int
	}{
		{"prompt", []int{3}, nil},
		{"4prompts", []int{0, 1, 2, 3}, nil},
		{"3dec+prompt", []int{3}, []int{0, 1, 2}},
		{"3dec", nil, []int{0, 1, 2}},
		{"4dec", nil, []int{0, 1, 2, 3}},
	}
	times := make([][]float64, len(shapes))
	b.ResetTimer()
	for i := range b.N {
		for j := range shapes {
			n := (i + j) % len(shapes)
			times[n] = append(times[n], float64(pass(shapes[n].prompts, shapes[n].decoders).Microseconds())/1000)
		}
	}
	b.StopTimer()
	for n, sh := range shapes {
		reportMedian(b, times[n], sh.name+"-ms")
	}
}

// BenchmarkVerifyShapes times one target decode of verify-shaped batches
// over per-sequence KV streams, each sequence after a 128-token history:
// "4x2" is 4 sequences with 2 rows each, "2,1,2,1" 4 sequences with 2, 1,
// 2 and 1 rows. llama.cpp splits a decode over streams into ubatches that
// take the same number of rows from each of a run of consecutive sequence
// ids (split_equal), so unequal rows cost extra graph computes
// (docs/decisions/0011). Shapes alternate; medians are reported. With
// SPECD_TEST_MODEL=.cache/models/heavy-q8.gguf SPECD_BENCH_THREADS=2 it
// times the benchmark pair's target.
func BenchmarkVerifyShapes(b *testing.B) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	l, m := stories(b)
	c := newCtx(b, m, ContextParams{NCtx: 16 * 384, NSeqMax: 16, NBatch: 512, NUBatch: 512, NOutputsMax: 512,
		Threads: benchThreads(), FlashAttn: FlashAttnOff, TypeK: benchKV(), TypeV: benchKV()})
	batch := newBatch(b, l, 512)
	nv := m.Vocab().NTokens()
	tok := func(s, p int) int32 { return int32(1 + (s*131+p*7)%(nv-1)) }
	for s := range 16 {
		batch.Reset()
		for p := range 128 {
			batch.Add(tok(s, p), int32(p), int32(s), false)
		}
		if err := c.Decode(batch); err != nil {
			b.Fatal(err)
		}
	}
	pass := func(rows []int) time.Duration {
		batch.Reset()
		for s, r := range rows {
			for j := range r {
				batch.Add(tok(s, 128+j), int32(128+j), int32(s), true)
			}
		}
		t0 := time.Now()
		if err := c.Decode(batch); err != nil {
			b.Fatal(err)
		}
		d := time.Since(t0)
		for s := range rows {
			c.SeqRemove(int32(s), 128, -1)
		}
		return d
	}
	rep := func(n, r int) []int { return slices.Repeat([]int{r}, n) }
	shapes := []struct {
		name string
		rows []int
	}{
		{"1x1", rep(1, 1)}, {"1x5", rep(1, 5)}, {"4x1", rep(4, 1)}, {"5x1", rep(5, 1)}, {"8x1", rep(8, 1)},
		{"4x2", rep(4, 2)}, {"2,1,2,1", []int{2, 1, 2, 1}}, {"2,1,1,1", []int{2, 1, 1, 1}}, {"4x3", rep(4, 3)},
		{"16x1", rep(16, 1)}, {"16x2", rep(16, 2)},
	}
	times := make([][]float64, len(shapes))
	b.ResetTimer()
	for i := range b.N {
		for j := range shapes {
			n := (i + j) % len(shapes)
			times[n] = append(times[n], float64(pass(shapes[n].rows).Microseconds())/1000)
		}
	}
	b.StopTimer()
	for n, sh := range shapes {
		reportMedian(b, times[n], sh.name+"-ms")
	}
}
