package engine

import (
	"os"
	"runtime"
	"strconv"
	"testing"
)

// Decode benchmarks on stories260K with 2 threads and flash attention off,
// the setting of `llama-bench -n 128 -t 2 -fa 0` (tg128): each sequence
// generates 128 tokens from an empty cache, then the cache is cleared.
// One b.N iteration is one llama_decode; tok/s counts generated tokens.

const benchGen = 128

// benchThreads is 2, or $SPECD_BENCH_THREADS (to compare with llama-bench -t N).
func benchThreads() int {
	if n, err := strconv.Atoi(os.Getenv("SPECD_BENCH_THREADS")); err == nil && n > 0 {
		return n
	}
	return 2
}

// benchComputeThreads is $SPECD_BENCH_COMPUTE_THREADS: how many of the
// pool's threads a decode uses (0 = all).
func benchComputeThreads() int {
	n, _ := strconv.Atoi(os.Getenv("SPECD_BENCH_COMPUTE_THREADS"))
	return max(n, 0)
}

func benchDecode(b *testing.B, nSeq int) {
	// As the scheduler's loop does: an OpenMP build keeps a worker team per
	// calling OS thread, and a goroutine that migrates wakes cold ones.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	l, m := stories(b)
	c := newCtx(b, m, ContextParams{NCtx: nSeq * 256, NSeqMax: nSeq, NBatch: max(512, nSeq), Threads: benchThreads(), ComputeThreads: benchComputeThreads(), FlashAttn: FlashAttnOff})
	batch := newBatch(b, l, nSeq)
	next := make([]int32, nSeq)
	rows := make([]int, nSeq)
	for s := range next {
		next[s] = m.Vocab().BOS()
	}
	pos := int32(0)
	step := func() {
		if pos == benchGen {
			c.ClearKV()
			pos = 0
		}
		batch.Reset()
		for s := range nSeq {
			rows[s] = batch.Add(next[s], pos, int32(s), true)
		}
		if err := c.Decode(batch); err != nil {
			b.Fatal(err)
		}
		for s := range nSeq {
			next[s] = argmax(c.Logits(rows[s]))
		}
		pos++
	}
	for range 2 * benchGen { // warm up: graphs, caches, pool threads
		step()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		step()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*nSeq)/b.Elapsed().Seconds(), "tok/s")
}

func BenchmarkDecodeSingle(b *testing.B)  { benchDecode(b, 1) }
func BenchmarkDecodeBatch8(b *testing.B)  { benchDecode(b, 8) }
func BenchmarkDecodeBatch32(b *testing.B) { benchDecode(b, 32) }
