package scheduler

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// threadChooser picks, for each decode, how many of the pool's threads it
// uses: one or all. ggml synchronises its threads after every graph node,
// so a decode with little work per node (a tiny model, a few rows) can run
// faster on one thread, while a large one runs faster on all; on a host
// whose cores other processes also use, a descheduled thread stalls every
// barrier, which makes the small decodes slower still. Where the line lies
// depends on the model, the build and the machine, so the chooser measures
// it. Per decode size (rows, in power-of-two buckets) it keeps the last
// few decode times of each choice and uses the one with the lower mean,
// all threads until it knows better. It tries the other choice only as
// often as pays for itself: each decode on the preferred choice earns
// exploreShare of its time as credit, and a try is made when the credit
// covers what the try is expected to cost (the difference of the means, or
// the preferred mean itself while the other choice is unmeasured, that
// is, as if it took twice as long). So trying costs at most about
// exploreShare of decode time, however slow the other choice is; a 400 ms
// prompt on the wrong choice is tried once in ~100 prompts, a 0.3 ms draft
// token once in ~100 tokens.
//
// Pure logic: the caller times its decodes and reports them.
type threadChooser struct {
	all     int // the pool's size; <= 1: always 1
	buckets [threadBuckets]threadBucket
	used    [2]atomic.Uint64 // decodes observed on one thread, on all (read by other goroutines)
}

const (
	threadBuckets = 14   // rows 1, 2-3, 4-7, ..., 8192 and more
	threadWindow  = 8    // readings kept per choice and bucket
	exploreShare  = 0.01 // of decode time, spent trying the other choice
)

type threadBucket struct {
	times  [2][threadWindow]time.Duration // [0]: one thread, [1]: all
	n      [2]int                         // readings so far
	credit time.Duration                  // earned for trying the other choice
}

func newThreadChooser(poolThreads int) *threadChooser {
	return &threadChooser{all: poolThreads}
}

func threadBucketOf(rows int) int {
	return min(bits.Len(uint(max(rows, 1)))-1, threadBuckets-1)
}

// mean of choice c's kept readings; 0 without any.
func (b *threadBucket) mean(c int) time.Duration {
	n := min(b.n[c], threadWindow)
	if n == 0 {
		return 0
	}
	var s time.Duration
	for _, d := range b.times[c][:n] {
		s += d
	}
	return s / time.Duration(n)
}

// oneThreadWin: one thread is preferred only when its mean is below this
// share of all threads' mean. A one-thread decode leaves the pool's other
// threads idle, and the next decode on all of them (the target's, after a
// draft's) can pay for it where the chooser does not look: on the heavy
// pair at one stream the draft's one-row decodes measured 0.19 ms on one
// thread against 0.20 on two, and the target's verify after them took
// 0.5-1 ms more in some runs (session 17). Near such a tie all threads
// win; a clear win of one thread (a tiny model's decode, a busy core) is
// still taken.
const oneThreadWin = 0.9

// best is the preferred choice: 1 (all threads) unless one thread has a
// clearly lower mean.
func (b *threadBucket) best() int {
	if b.n[0] > 0 && b.n[1] > 0 && float64(b.mean(0)) < oneThreadWin*float64(b.mean(1)) {
		return 0
	}
	return 1
}

// tryCost is what a try of the other choice is expected to cost: at least
// a tenth of the preferred mean, so that near a tie the preferred choice
// still gets most decodes and fresh readings.
func (b *threadBucket) tryCost() time.Duration {
	p := b.best()
	if b.n[1-p] == 0 {
		return b.mean(p)
	}
	return max(b.mean(1-p)-b.mean(p), b.mean(p)/10)
}

// choose returns the threads for a decode of rows rows.
func (t *threadChooser) choose(rows int) int {
	if t.all <= 1 {
		return 1
	}
	b := &t.buckets[threadBucketOf(rows)]
	c := b.best()
	if b.n[c] > 0 {
		if cost := b.tryCost(); b.credit >= cost {
			b.credit -= cost
			c = 1 - c
		}
	}
	if c == 1 {
		return t.all
	}
	return 1
}

// observe records that a decode of rows rows on threads threads took d.
func (t *threadChooser) observe(rows, threads int, d time.Duration) {
	if t.all <= 1 {
		return
	}
	c := 0
	if threads > 1 {
		c = 1
	}
	t.used[c].Add(1)
	b := &t.buckets[threadBucketOf(rows)]
	if c == b.best() {
		b.credit += time.Duration(float64(d) * exploreShare)
	}
	b.times[c][b.n[c]%threadWindow] = d
	b.n[c]++
}
