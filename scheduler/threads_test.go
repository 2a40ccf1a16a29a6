package scheduler

import (
	"testing"
	"time"
)

// simulate runs n decodes of rows rows through c, with cost(threads) as
// each decode's time, and returns how many used one thread.
func simulate(c *threadChooser, rows, n int, cost func(threads int) time.Duration) (ones int) {
	for range n {
		th := c.choose(rows)
		if th == 1 {
			ones++
		}
		c.observe(rows, th, cost(th))
	}
	return ones
}

func TestThreadChooserPicksTheFaster(t *testing.T) {
	c := newThreadChooser(2)
	// Small decodes: one thread takes 0.3 ms, two take 1 ms (barriers).
	small := func(th int) time.Duration {
		if th == 1 {
			return 300 * time.Microsecond
		}
		return time.Millisecond
	}
	// Large decodes: two threads take half the time.
	large := func(th int) time.Duration { return time.Duration(20/th) * time.Millisecond }
	ones := simulate(c, 1, 1000, small)
	if p := c.preferred(1); p != 1 {
		t.Errorf("1 row: preferred %d threads, want 1", p)
	}
	// All threads until the credit pays for a try (~100 decodes), then
	// one thread but for a try of all threads now and then.
	if ones < 850 {
		t.Errorf("1 row: one thread in %d of 1000 decodes", ones)
	}
	ones = simulate(c, 300, 1000, large)
	if p := c.preferred(300); p != 2 {
		t.Errorf("300 rows: preferred %d threads, want 2", p)
	}
	if ones > 2*1000*exploreShare+1 {
		t.Errorf("300 rows: one thread in %d of 1000 decodes", ones)
	}
	// Buckets are separate: 1 row still prefers one thread, and 2-3 rows
	// (a bucket never seen) starts on all threads.
	if p := c.preferred(1); p != 1 {
		t.Errorf("1 row after 300-row decodes: preferred %d", p)
	}
	if p := c.preferred(3); p != 2 {
		t.Errorf("3 rows, never decoded: preferred %d, want 2", p)
	}
}

// Trying the other choice costs about exploreShare of the decode time,
// whether the other choice is a little or a hundred times slower, and
// whichever of the two is preferred.
func TestThreadChooserTryCostIsBounded(t *testing.T) {
	const n = 20000
	for _, slow := range []float64{1.1, 2, 10, 100} {
		for _, oneFaster := range []bool{false, true} {
			c := newThreadChooser(2)
			fast := time.Millisecond
			cost := func(th int) time.Duration {
				if (th == 1) == oneFaster {
					return fast
				}
				return time.Duration(float64(fast) * slow)
			}
			var total time.Duration
			for range n {
				th := c.choose(8)
				d := cost(th)
				c.observe(8, th, d)
				total += d
			}
			// The preferred choice: the faster, except that one thread
			// must win by more than oneThreadWin (at 1.1x it does not).
			best := n * fast
			switch {
			case oneFaster && 1/slow >= oneThreadWin:
				best = time.Duration(float64(n*fast) * slow)
			case oneFaster:
				// One thread is first tried once the credit of
				// ~1/exploreShare decodes on all threads pays for it.
				best += time.Duration(float64(fast)*slow) * time.Duration(1/exploreShare)
			}
			if over := float64(total)/float64(best) - 1; over > 1.5*exploreShare {
				t.Errorf("other choice %gx slower, one thread faster %v: %.2f%% over always choosing the faster", slow, oneFaster, 100*over)
			}
		}
	}
}

// When the costs cross (other load arrives and two threads collapse), the
// choice follows within a few explorations.
func TestThreadChooserFollowsChange(t *testing.T) {
	c := newThreadChooser(4)
	fast2 := func(th int) time.Duration { return time.Duration(8/th) * time.Millisecond }
	simulate(c, 16, 500, fast2)
	if p := c.preferred(16); p != 4 {
		t.Fatalf("preferred %d, want 4", p)
	}
	slow2 := func(th int) time.Duration {
		if th == 1 {
			return 8 * time.Millisecond
		}
		return 50 * time.Millisecond
	}
	simulate(c, 16, 200, slow2)
	if p := c.preferred(16); p != 1 {
		t.Errorf("after the all-thread decodes slowed down: preferred %d, want 1", p)
	}
}

func TestThreadChooserOneThreadPool(t *testing.T) {
	c := newThreadChooser(1)
	for _, rows := range []int{0, 1, 100, 1 << 20} {
		if th := c.choose(rows); th != 1 {
			t.Errorf("pool of 1, %d rows: %d threads", rows, th)
		}
		c.observe(rows, 1, time.Millisecond)
	}
	if threadBucketOf(0) != 0 || threadBucketOf(1) != 0 || threadBucketOf(3) != 1 || threadBucketOf(1<<30) != threadBuckets-1 {
		t.Error("threadBucketOf: wrong bucket")
	}
}

// preferred reports the chooser's current choice for rows rows, in
// threads.
func (t *threadChooser) preferred(rows int) int {
	if t.all <= 1 || t.buckets[threadBucketOf(rows)].best() == 1 {
		return t.all
	}
	return 1
}

// Near a tie all threads are kept: one thread 5 % faster is not worth the
// idle pool (oneThreadWin); 20 % faster is.
func TestThreadChooserNearTieKeepsAll(t *testing.T) {
	for _, tc := range []struct {
		one  time.Duration
		want int
	}{{190 * time.Microsecond, 2}, {160 * time.Microsecond, 1}} {
		c := newThreadChooser(2)
		simulate(c, 1, 2000, func(th int) time.Duration {
			if th == 1 {
				return tc.one
			}
			return 200 * time.Microsecond
		})
		if p := c.preferred(1); p != tc.want {
			t.Errorf("one thread %v against 200µs on two: preferred %d, want %d", tc.one, p, tc.want)
		}
	}
}
