package scheduler

import (
	"time"
)

// Calibration is what Calibrate measured.
type Calibration struct {
	// VerifySizes and DraftSizes are the decode sizes (rows) measured on
	// the target and the draft model.
	VerifySizes, DraftSizes []int
	// Verify and Draft are the cheapest of the passes' readings at those
	// sizes.
	Verify, Draft []time.Duration
	Elapsed       time.Duration
}

// Calibrate measures the decode costs adaptive k chooses between before any
// request is served: draft decodes of 1 up to parallel rows, then target
// decodes of 1 up to parallel × (k_max+1) rows, smallest first, each size
// twice (a second pass over what the first measured), keeping the cheaper
// reading, until budget is spent. Without it, adaptive k learns a
// size's cost only by choosing it: an unmeasured verify size reads as the
// largest measured size below it, so the first steps at a new batch size
// speculate to find out, and readings of different sizes are taken at
// different times, under different machine load (decisions 0009, 0011).
// Serving keeps updating the same readings. The rows of one decode are
// spread over min(rows, parallel) sequences from position 0, as a verify
// spreads its rows over the batch, and removed afterwards. Call it before
// Run, never beside it. Nothing is measured with a fixed k (SpecK > 0) or
// budget <= 0; a failed decode ends the calibration with what it has.
func (s *Scheduler) Calibrate(budget time.Duration) Calibration {
	var c Calibration
	if budget <= 0 || s.cfg.SpecK > 0 {
		return c
	}
	t0 := time.Now()
	deadline := t0.Add(budget)
	maxRows := min(s.cfg.MaxBatchTokens, s.cfg.MaxRunning*(s.cfg.KMax+1))
	if s.draft != nil { // first: its few small decodes are cheap
		c.DraftSizes, c.Draft = s.probeSizes(s.draft, calibrationSizes(s.cfg.MaxRunning), deadline)
	}
	c.VerifySizes, c.Verify = s.probeSizes(s.target, calibrationSizes(maxRows), deadline)
	for i, n := range c.VerifySizes {
		s.costs.ObserveVerify(n, c.Verify[i])
	}
	for i, n := range c.DraftSizes {
		s.costs.ObserveDraft(n, c.Draft[i])
	}
	c.Elapsed = time.Since(t0)
	return c
}

// calibrationSizes: every size up to 8, then steps of a quarter up to 32
// and of a half beyond (costs grow about linearly there, and the cost
// model interpolates between measured sizes), ending at top.
func calibrationSizes(top int) []int {
	var out []int
	for n := 1; n <= top; {
		out = append(out, n)
		switch {
		case n < 8:
			n++
		case n < 32:
			n = min(n+(n+3)/4, 32)
		default:
			n += n / 2
		}
	}
	if len(out) > 0 && out[len(out)-1] != top {
		out = append(out, top)
	}
	return out
}

// probeSizes decodes every size twice (two passes, smallest first) and
// returns the sizes the first pass measured, with the cheaper of their
// readings; it stops at the deadline or at a failed decode.
func (s *Scheduler) probeSizes(m Model, sizes []int, deadline time.Time) ([]int, []time.Duration) {
	best := make([]time.Duration, len(sizes))
	measured := 0 // sizes measured in the first pass
	for pass := range 2 {
		for i := 0; i < len(sizes) && (pass == 0 || i < measured); i++ {
			if time.Now().After(deadline) {
				return sizes[:measured], best[:measured]
			}
			d, ok := s.probe(m, sizes[i])
			if !ok {
				return sizes[:measured], best[:measured]
			}
			if pass == 0 {
				best[i], measured = d, i+1
			} else {
				best[i] = min(best[i], d)
			}
		}
	}
	return sizes[:measured], best[:measured]
}

// probe times one decode of n rows with logits, spread over the first
// min(n, parallel) sequences, and removes them again.
func (s *Scheduler) probe(m Model, n int) (time.Duration, bool) {
	nSeq := min(n, s.cfg.MaxRunning)
	for i := range n {
		m.Add(int32(1+i%(s.nVocab-1)), int32(i/nSeq), int32(i%nSeq), true)
	}
	t0 := time.Now()
	err := m.Decode()
	d := time.Since(t0)
	for q := range nSeq {
		m.Remove(int32(q), 0, -1)
	}
	if err != nil {
		s.log.Warn("cost calibration stopped: a decode failed", "rows", n, "err", err)
		return 0, false
	}
	return d, true
}
