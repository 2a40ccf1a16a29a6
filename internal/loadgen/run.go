package loadgen

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Result is one run: its summary and the raw samples, in completion order.
type Result struct {
	Summary Summary
	Samples []Sample
}

// Run sends the workload in prompts (cycled when Requests exceeds it) under
// cfg and measures every request. It returns when the stop condition is met
// and every request it started has ended. If ctx is cancelled it stops
// issuing, cancels what is in flight, and returns the partial Result with
// ctx's error; requests cut off that way are dropped, not counted as failed.
func Run(ctx context.Context, cfg Config, prompts []Prompt) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	if len(prompts) == 0 {
		return Result{}, errors.New("loadgen: no prompts")
	}
	c := cfg.withDefaults()
	bodies := make([][]byte, len(prompts))
	for i, p := range prompts {
		b, err := buildBody(&c, p)
		if err != nil {
			return Result{}, err
		}
		bodies[i] = b
	}

	for i := 0; i < c.Warmup && ctx.Err() == nil; i++ {
		doRequest(ctx, &c, bodies[i%len(bodies)], time.Now())
	}

	var (
		mu      sync.Mutex
		samples = make([]Sample, 0, max(c.Requests, 16))
		wg      sync.WaitGroup
	)
	t0 := time.Now()
	var deadline time.Time
	if c.Duration > 0 {
		deadline = t0.Add(c.Duration)
	}
	// stop reports whether request i must not be issued.
	stop := func(i int) bool {
		return ctx.Err() != nil ||
			(c.Requests > 0 && i >= c.Requests) ||
			(!deadline.IsZero() && !time.Now().Before(deadline))
	}
	one := func(i int) {
		s := doRequest(ctx, &c, bodies[i%len(bodies)], t0)
		s.Index = i
		if s.Err != nil && ctx.Err() != nil {
			return // the user stopped the run; this is no server failure
		}
		mu.Lock()
		samples = append(samples, s)
		mu.Unlock()
		if c.OnDone != nil {
			c.OnDone(s)
		}
	}

	if c.Rate <= 0 {
		var next atomic.Int64
		for w := 0; w < c.Concurrency; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1) - 1)
					if stop(i) {
						return
					}
					one(i)
				}
			}()
		}
	} else {
		var sem chan struct{}
		if c.Concurrency > 0 {
			sem = make(chan struct{}, c.Concurrency)
		}
		gaps := newArrivals(c.Rate, c.Seed)
		timer := time.NewTimer(0)
		<-timer.C
	issue:
		for i := 0; !stop(i); i++ {
			if i > 0 {
				timer.Reset(gaps.next())
				select {
				case <-ctx.Done():
					timer.Stop()
					break issue
				case <-timer.C:
				}
				if stop(i) {
					break
				}
			}
			if sem != nil {
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					break issue
				}
			}
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				one(i)
				if sem != nil {
					<-sem
				}
			}(i)
		}
	}
	wg.Wait()
	dur := time.Since(t0)
	res := Result{Summary: Summarize(samples, dur), Samples: samples}
	return res, ctx.Err()
}

// arrivals draws the gaps of a Poisson process: exponential with mean
// 1/rate, from a seeded stream so a run's schedule is reproducible.
type arrivals struct {
	rate float64
	rng  *rand.Rand
}

func newArrivals(rate float64, seed int64) *arrivals {
	return &arrivals{rate: rate, rng: rand.New(rand.NewPCG(uint64(seed), 0x9e3779b97f4a7c15))}
}

func (a *arrivals) next() time.Duration {
	// 1-U is in (0,1], so the log is finite.
	return time.Duration(-math.Log(1-a.rng.Float64()) / a.rate * float64(time.Second))
}
