package specdec

import (
	"fmt"
	"math"
	"math/bits"
	"time"
)

// MaxK is the largest draft length anything in this package handles.
const MaxK = 32

// KConfig bounds the draft length. Zero fields take the defaults.
type KConfig struct {
	// KMin, KMax bound an adaptive k (besides 0, always a candidate).
	// Defaults 1 and 8; KMax <= MaxK.
	KMin, KMax int
	// Fixed > 0 disables adaptation: every step proposes Fixed tokens.
	Fixed int
	// Alpha0 is the acceptance rate assumed before a sequence has any
	// observations (default 0.5), worth PriorTrials trials (default 4).
	Alpha0      float64
	PriorTrials float64
	// Decay is the weight kept by the acceptance average per observed step
	// (default 0.9: the last ~10 steps dominate).
	Decay float64
	// MinGain is the margin speculation must promise over plain decoding:
	// a batch speculates only if its expected tokens per second beat the
	// k = 0 rate by more than this fraction (0: any gain; no default).
	// Near break-even the measured costs cannot tell the two apart, and a
	// few speculating steps desynchronise sequences that would otherwise
	// prefill and decode in lockstep.
	MinGain float64
	// Streams: the target's KV has one stream per sequence, and llama.cpp
	// splits such a decode into ubatches with split_equal(sequential): one
	// ubatch takes the same number of rows from each sequence of a run of
	// consecutive ids (Slot), and every ubatch is a graph compute of its
	// own, weights read again. A verify where some sequences carry more
	// rows than others then costs the sum of its ubatches (heavy target, 2
	// threads: rows 2,1,2,1 cost 36 ms, 4 x 2 rows 22 ms, 4 x 1 row 13 ms).
	// Without it a decode is one ubatch (llama.cpp's split_simple).
	Streams bool
	// UBatch is llama.cpp's n_ubatch, the most rows in one ubatch (0: no
	// cap).
	UBatch int
}

// KConfig defaults.
const (
	DefaultKMin        = 1
	DefaultKMax        = 8
	DefaultAlpha0      = 0.5
	DefaultPriorTrials = 4
	DefaultDecay       = 0.9
)

// WithDefaults fills zero fields.
func (c KConfig) WithDefaults() KConfig {
	if c.KMin == 0 {
		c.KMin = DefaultKMin
	}
	if c.KMax == 0 {
		c.KMax = max(DefaultKMax, c.KMin)
	}
	if c.Alpha0 == 0 {
		c.Alpha0 = DefaultAlpha0
	}
	if c.PriorTrials == 0 {
		c.PriorTrials = DefaultPriorTrials
	}
	if c.Decay == 0 {
		c.Decay = DefaultDecay
	}
	return c
}

// Validate checks the configuration after defaults.
func (c KConfig) Validate() error {
	d := c.WithDefaults()
	switch {
	case d.KMin < 0 || d.KMax < d.KMin || d.KMax > MaxK:
		return fmt.Errorf("specdec: k bounds %d..%d (want 0 <= min <= max <= %d)", c.KMin, c.KMax, MaxK)
	case d.Fixed < 0 || d.Fixed > MaxK:
		return fmt.Errorf("specdec: fixed k %d (want 0..%d)", c.Fixed, MaxK)
	case !(d.Alpha0 > 0 && d.Alpha0 < 1):
		return fmt.Errorf("specdec: alpha0 %v (want 0 < a < 1)", c.Alpha0)
	case !(d.PriorTrials > 0):
		return fmt.Errorf("specdec: prior trials %v (want > 0)", c.PriorTrials)
	case !(d.Decay > 0 && d.Decay < 1):
		return fmt.Errorf("specdec: decay %v (want 0 < d < 1)", c.Decay)
	case !(d.MinGain >= 0 && d.MinGain <= 10):
		return fmt.Errorf("specdec: min gain %v (want 0 <= g <= 10)", c.MinGain)
	}
	return nil
}

// Acceptance tracks one sequence's draft acceptance. Its rate Alpha is the
// per-token acceptance probability under the usual geometric model (each
// draft token kept with probability α until the first rejection): the
// maximum-likelihood estimate accepted / (accepted + rejections), with both
// sums decayed per step and seeded with the prior. It also keeps totals
// and per-position counters for reporting.
type Acceptance struct {
	succ, trials float64
	decay        float64
	Proposed     uint64 // draft tokens proposed in total
	Accepted     uint64 // of which accepted
	Pos          PositionCounters
}

// NewAcceptance returns a tracker with cfg's prior.
func NewAcceptance(cfg KConfig) Acceptance {
	c := cfg.WithDefaults()
	return Acceptance{succ: c.Alpha0 * c.PriorTrials, trials: c.PriorTrials, decay: c.Decay}
}

// Observe records a verify step that proposed `proposed` tokens and kept
// `accepted` of them. Steps with no proposal teach nothing and are ignored.
func (a *Acceptance) Observe(proposed, accepted int) {
	if proposed <= 0 {
		return
	}
	accepted = min(max(accepted, 0), proposed)
	if a.decay == 0 {
		*a = NewAcceptance(KConfig{})
	}
	t := float64(accepted)
	if accepted < proposed {
		t++ // one rejection
	}
	a.succ = a.succ*a.decay + float64(accepted)
	a.trials = a.trials*a.decay + t
	a.Proposed += uint64(proposed)
	a.Accepted += uint64(accepted)
	a.Pos.Observe(proposed, accepted)
}

// Alpha is the current estimate of the per-token acceptance rate.
func (a *Acceptance) Alpha() float64 {
	if a.trials <= 0 {
		return DefaultAlpha0
	}
	return a.succ / a.trials
}

// PositionCounters count proposals and acceptances per draft position:
// Proposed[i] steps proposed a token at position i, Accepted[i] kept it.
type PositionCounters struct {
	Proposed, Accepted [MaxK]uint64
}

// Observe adds one verify step.
func (c *PositionCounters) Observe(proposed, accepted int) {
	proposed = min(proposed, MaxK)
	for i := 0; i < proposed; i++ {
		c.Proposed[i]++
	}
	for i := 0; i < min(accepted, proposed); i++ {
		c.Accepted[i]++
	}
}

// Add adds o's counts to c (aggregation over requests).
func (c *PositionCounters) Add(o *PositionCounters) {
	for i := range c.Proposed {
		c.Proposed[i] += o.Proposed[i]
		c.Accepted[i] += o.Accepted[i]
	}
}

// ExpectedTokens is the expected number of tokens a verify step with k
// draft tokens emits when each is accepted with probability alpha:
// (1 - α^(k+1)) / (1 - α) (accepted drafts plus the target's own token).
func ExpectedTokens(alpha float64, k int) float64 {
	alpha = min(max(alpha, 0), 1)
	if k <= 0 {
		return 1
	}
	if alpha > 1-1e-12 {
		return float64(k + 1)
	}
	return (1 - math.Pow(alpha, float64(k+1))) / (1 - alpha)
}

// ChooseK picks k in {0} ∪ [KMin, KMax] maximising expected tokens per
// unit of cost, ExpectedTokens(alpha, k) / (draft(k) + verify(k)), where
// draft(k) is the cost of proposing k tokens (k draft-model steps; 0 for
// model-free proposers) and verify(k) the cost of the target pass that
// checks them; verify(0) is a plain decode. With cfg.Fixed > 0 it returns
// Fixed. For a batch sharing one k, pass the batch's costs: the number of
// sequences cancels out.
func ChooseK(cfg KConfig, alpha float64, draft func(k int) float64, verify func(k int) float64) int {
	c := cfg.WithDefaults()
	if c.Fixed > 0 {
		return c.Fixed
	}
	best, bestRate := 0, 1/verify(0)
	floor := bestRate * (1 + c.MinGain)
	for k := max(c.KMin, 1); k <= c.KMax; k++ {
		if rate := ExpectedTokens(alpha, k) / (draft(k) + verify(k)); rate > bestRate && rate > floor {
			best, bestRate = k, rate
		}
	}
	return best
}

// Costs are measured step costs in seconds; CostModel implements it.
type Costs interface {
	DraftCost(batchSeqs int) float64 // one draft-model decode over batchSeqs sequences
	VerifyCost(tokens int) float64   // one target decode of tokens tokens
}

// BatchSeq is one decoding sequence as the batch k choice sees it.
type BatchSeq struct {
	Alpha float64 // Acceptance.Alpha
	Limit int     // most draft tokens it can take this step (proposal length, context room); 0: none
	Model bool    // its proposals cost draft-model steps
	// Fixed: draft rows it verifies whatever the choice (a request's own
	// k, a Predicted Output); such a sequence has Limit 0.
	Fixed int
	Slot  int // its sequence id in the decode (KConfig.Streams)
	K     int // out: the chosen k (0: plain decode)
}

// BatchChooser picks per-sequence k for a whole step. It keeps scratch so
// choosing allocates nothing once it has seen the batch size.
type BatchChooser struct {
	order  []int // speculation candidates, by acceptance
	k      []int // the k being priced, per sequence
	bySlot []int // sequence indices in slot order (Streams)
	slots  []int // scratch for UBatches
	rows   []int
	ub     []int
}

// Choose sets seqs[i].K to maximise the step's expected tokens per second:
// Σ E(α_i, k_i) / (D·DraftCost(#model sequences drafting) + the target
// decode's cost), where D is the draft depth (the largest k of a model
// sequence) and the decode carries, per sequence, 1 + Fixed + k rows; with cfg.Streams it costs the sum of
// its ubatches (UBatches), else VerifyCost of all its rows. It tries each
// depth D in {0} ∪ [KMin, KMax] and, for each, letting the m sequences
// with the highest acceptance speculate (k_i = min(D, Limit_i)), every m;
// so it chooses k = 0 for the sequences, or the whole batch, where
// speculating does not pay by more than cfg.MinGain (with cfg.Streams,
// above m = 8 only about four values of m per octave, and m = all). It
// returns the expected tokens per second of the choice. With cfg.Fixed > 0
// every sequence gets min(Fixed, Limit).
func (b *BatchChooser) Choose(cfg KConfig, seqs []BatchSeq, cost Costs) float64 {
	c := cfg.WithDefaults()
	B := len(seqs)
	if c.Fixed > 0 {
		for i := range seqs {
			seqs[i].K = min(c.Fixed, seqs[i].Limit)
		}
		return math.NaN()
	}
	b.prepare(c, seqs)
	b.order = b.order[:0]
	for i := range seqs {
		seqs[i].K = 0
		if seqs[i].Limit > 0 {
			b.order = append(b.order, i)
		}
	}
	// Insertion sort by alpha descending (stable): batches are small, and a
	// closure over seqs would escape and allocate per step.
	for i := 1; i < len(b.order); i++ {
		for j := i; j > 0 && seqs[b.order[j]].Alpha > seqs[b.order[j-1]].Alpha; j-- {
			b.order[j], b.order[j-1] = b.order[j-1], b.order[j]
		}
	}
	bestD, bestM := 0, 0
	bestRate := float64(B) / b.verifyCost(c, seqs, cost)
	floor := bestRate * (1 + c.MinGain)
	for D := max(c.KMin, 1); D <= c.KMax; D++ {
		clear(b.k)
		tokens, nModel := float64(B), 0
		next := 1 // with Streams, the next m priced
		for m, i := range b.order {
			s := &seqs[i]
			k := min(D, s.Limit)
			b.k[i] = k
			tokens += ExpectedTokens(s.Alpha, k) - 1
			if s.Model {
				nModel++
			}
			if c.Streams && m+1 != next && m+1 != len(b.order) {
				// Pricing per ubatch costs O(B) per candidate: beyond 8
				// sequences, about four values of m per octave are
				// priced (and all of them), not every one.
				continue
			}
			next += max(1, next/4)
			t := b.verifyCost(c, seqs, cost)
			if nModel > 0 {
				t += float64(D) * cost.DraftCost(nModel)
			}
			if rate := tokens / t; rate > bestRate && rate > floor {
				bestRate, bestD, bestM = rate, D, m+1
			}
		}
	}
	for _, i := range b.order[:bestM] {
		seqs[i].K = min(bestD, seqs[i].Limit)
	}
	return bestRate
}

// prepare sizes the scratch for seqs, zeroes the priced k and, with
// Streams, orders the sequences by slot.
func (b *BatchChooser) prepare(c KConfig, seqs []BatchSeq) {
	b.k = b.k[:0]
	for range seqs {
		b.k = append(b.k, 0)
	}
	if !c.Streams {
		return
	}
	b.bySlot = b.bySlot[:0]
	for i := range seqs {
		b.bySlot = append(b.bySlot, i)
	}
	for i := 1; i < len(b.bySlot); i++ {
		for j := i; j > 0 && seqs[b.bySlot[j]].Slot < seqs[b.bySlot[j-1]].Slot; j-- {
			b.bySlot[j], b.bySlot[j-1] = b.bySlot[j-1], b.bySlot[j]
		}
	}
}

// verifyCost prices the target decode with b.k draft rows per sequence.
func (b *BatchChooser) verifyCost(c KConfig, seqs []BatchSeq, cost Costs) float64 {
	if !c.Streams {
		n := 0
		for i := range seqs {
			n += 1 + seqs[i].Fixed + b.k[i]
		}
		return cost.VerifyCost(n)
	}
	b.slots, b.rows = b.slots[:0], b.rows[:0]
	for _, i := range b.bySlot {
		b.slots = append(b.slots, seqs[i].Slot)
		b.rows = append(b.rows, 1+seqs[i].Fixed+b.k[i])
	}
	t := 0.0
	b.ub = UBatches(b.slots, b.rows, c.UBatch, b.ub[:0])
	for _, n := range b.ub {
		t += cost.VerifyCost(n)
	}
	return t
}

// UBatches appends to dst the sizes of the ubatches llama.cpp makes of a
// decode over per-sequence KV streams (split_equal with sequential ids, in
// src/llama-batch.cpp): the sequences, ascending by slot (their sequence
// id), add rows[i] rows each. A ubatch starts at the first sequence with
// rows left, extends over the following sequences while their ids are
// consecutive and they have rows left (at most nu sequences; nu <= 0: no
// cap), and takes the same number of rows from each: the fewest any of
// them has left, at most nu / sequences. It modifies rows.
func UBatches(slots, rows []int, nu int, dst []int) []int {
	i := 0 // every sequence before i has no rows left
	for {
		for i < len(rows) && rows[i] <= 0 {
			i++
		}
		if i == len(rows) {
			return dst
		}
		j, t := i, rows[i]
		for j+1 < len(rows) && rows[j+1] > 0 && slots[j+1] == slots[j]+1 && (nu <= 0 || j+1-i < nu) {
			j++
			t = min(t, rows[j])
		}
		n := j - i + 1
		if nu > 0 {
			t = min(t, max(nu/n, 1))
		}
		dst = append(dst, n*t)
		for q := i; q <= j; q++ {
			rows[q] -= t
		}
	}
}

// DraftMayPay reports whether a draft model could pay in this step: whether
// some depth D in [KMin, KMax] would beat plain decoding by cfg.MinGain if
// every sequence that may draft with the model (Model, Limit > 0) drafted
// min(D, Limit) tokens and all of them were accepted, the decode priced as
// Choose prices it. When it cannot (a draft as costly as the target, or a
// compute-bound verify at a large batch), keeping the draft's KV in step
// with the target's is pure cost. With cfg.Fixed > 0 it is true. It leaves
// seqs' K as it was.
func (b *BatchChooser) DraftMayPay(cfg KConfig, seqs []BatchSeq, cost Costs) bool {
	c := cfg.WithDefaults()
	if c.Fixed > 0 {
		return true
	}
	m := 0
	for i := range seqs {
		if seqs[i].Model && seqs[i].Limit > 0 {
			m++
		}
	}
	if m == 0 {
		return false
	}
	b.prepare(c, seqs)
	B := float64(len(seqs))
	floor := B / b.verifyCost(c, seqs, cost) * (1 + c.MinGain)
	for D := max(c.KMin, 1); D <= c.KMax; D++ {
		tokens := B
		for i := range seqs {
			if seqs[i].Model && seqs[i].Limit > 0 {
				b.k[i] = min(D, seqs[i].Limit)
				tokens += float64(b.k[i])
			}
		}
		if tokens/(b.verifyCost(c, seqs, cost)+float64(D)*cost.DraftCost(m)) > floor {
			return true
		}
	}
	return false
}

// CostModel keeps measured step costs: running averages per bucket of the
// rows in one decode, exact up to 32 and 8 buckets per octave above, read
// back with linear interpolation between measured buckets. Before anything
// is measured, VerifyCost is a nominal 1 ms and a draft decode costs
// DraftPrior (default 0.1) of a verify of the same size. While the draft
// has been measured only on decodes larger than the one asked for (it fed
// prompts but has not drafted yet), its cost is that of the target scaled
// by the two models' measured ratio on the smallest such decode, or by
// DraftPrior if that is lower. With DraftPrior the two models' size ratio
// (the scheduler's engine sets it), a draft as costly as the target is
// priced so from its first prompt, and a cheap one is tried and then
// measured even when one slow prompt reading (a stall of the host) made
// the ratio look like a costly draft's. (With the default 0.1 for every
// draft, one as costly as the target drafted too and, at break-even with
// full acceptance, was kept in step in 3 of 8 runs under load.)
// Not safe for concurrent use.
type CostModel struct {
	DraftPrior float64
	draft      costCurve
	verify     costCurve
}

const (
	costBuckets = 32 + 8*26
	costWindow  = 16 // running average over about the last 16 observations
	// costStale: a bucket not observed in the last costStale observations
	// of its curve is stale. A stale bucket neither floors larger ones nor
	// prices a size that a fresh bucket on the same side can price: a
	// reading taken while the host stalled, at a size the choices then
	// avoided, would otherwise keep them avoiding it for good (one server
	// stopped speculating for the rest of a benchmark, 3 runs of 6).
	costStale = 512
	// costOutlier: once a bucket holds costOutlierAfter readings, a reading
	// counts at most costOutlier times its average.
	costOutlier      = 2
	costOutlierAfter = 4
)

type costCurve struct {
	x, y  [costBuckets]float64
	n     [costBuckets]uint32
	seen  [costBuckets]uint64 // clock at the bucket's last observation
	clock uint64              // observations so far
	any   bool
	// Rebuilt by each observation (staleness moves only with the clock):
	// env[j], the most any fresh bucket up to j costs; lo[0][j] and
	// hi[0][j], the nearest fresh bucket at or below / at or above j, and
	// lo[1], hi[1] the nearest measured one; -1 for none.
	env    [costBuckets]float64
	lo, hi [2][costBuckets]int16
}

func costBucket(n int) int {
	if n < 32 {
		return max(n, 0)
	}
	oct := bits.Len(uint(n)) - 1 // >= 5
	b := 32 + (oct-5)*8 + (n>>(oct-3))&7
	return min(b, costBuckets-1)
}

func (c *costCurve) observe(n int, d time.Duration) {
	b := costBucket(n)
	if c.n[b] > 0 && !c.fresh(b) {
		c.n[b] = 0 // a stale average does not weigh on a fresh reading
	}
	sec := d.Seconds()
	if c.n[b] >= costOutlierAfter {
		// One stall of the host (a reading many times the mean) moves the
		// average by at most 1/costWindow of the mean: otherwise it could
		// price the size adaptive k was using above the others for the
		// window's worth of readings it no longer takes (a server fell to
		// 1.6 tokens a pass for part of a benchmark run). A lasting change
		// still takes over within a few readings.
		sec = min(sec, costOutlier*c.y[b])
	}
	if c.n[b] < costWindow {
		c.n[b]++
	}
	w := 1 / float64(c.n[b])
	c.x[b] += (float64(n) - c.x[b]) * w
	c.y[b] += (sec - c.y[b]) * w
	c.clock++
	c.seen[b] = c.clock
	c.any = true
	c.index()
}

// index rebuilds env, lo and hi.
func (c *costCurve) index() {
	top := 0.0
	lo := [2]int16{-1, -1}
	for j := range costBuckets {
		if c.n[j] > 0 {
			lo[1] = int16(j)
			if c.fresh(j) {
				lo[0] = int16(j)
				top = max(top, c.y[j])
			}
		}
		c.env[j] = top
		c.lo[0][j], c.lo[1][j] = lo[0], lo[1]
	}
	hi := [2]int16{-1, -1}
	for j := costBuckets - 1; j >= 0; j-- {
		if c.n[j] > 0 {
			hi[1] = int16(j)
			if c.fresh(j) {
				hi[0] = int16(j)
			}
		}
		c.hi[0][j], c.hi[1][j] = hi[0], hi[1]
	}
}

// fresh: bucket j has a reading from the last costStale observations.
func (c *costCurve) fresh(j int) bool {
	return c.n[j] > 0 && c.clock-c.seen[j] < costStale
}

// smallest is the measured bucket of fewest rows, a fresh one if any.
func (c *costCurve) smallest() (x, y float64, ok bool) {
	if !c.any {
		return 0, 0, false
	}
	j := c.hi[0][0]
	if j < 0 {
		j = c.hi[1][0]
	}
	return c.x[j], c.y[j], true
}

// at interpolates between the nearest measured buckets around n; beyond the
// measured range it extends the slope of the two outermost (never
// decreasing), or stays flat with only one. It never reads below what a
// smaller fresh measured size costs: more rows never cost less (a size
// measured while the machine was busy must not make larger sizes look
// cheaper than it, since a size that stops being chosen is not measured
// again).
func (c *costCurve) at(n int) float64 {
	if !c.any {
		return 0
	}
	return max(c.interp(n), c.env[costBucket(n)])
}

// below is the nearest measured bucket at or below bucket b whose rows x
// are at most v, a fresh one if there is any, else -1; above likewise
// upwards with x >= v. (Buckets partition the row counts in order, so
// only bucket b itself can hold rows on the wrong side of v.)
func (c *costCurve) below(b int, v float64) int {
	if b < 0 || !c.any {
		return -1
	}
	for k := range 2 {
		j := int(c.lo[k][b])
		if j == b && c.x[j] > v {
			j = -1
			if b > 0 {
				j = int(c.lo[k][b-1])
			}
		}
		if j >= 0 {
			return j
		}
	}
	return -1
}

func (c *costCurve) above(b int, v float64) int {
	if b >= costBuckets || !c.any {
		return -1
	}
	for k := range 2 {
		j := int(c.hi[k][b])
		if j == b && c.x[j] < v {
			j = -1
			if b+1 < costBuckets {
				j = int(c.hi[k][b+1])
			}
		}
		if j >= 0 {
			return j
		}
	}
	return -1
}

func (c *costCurve) interp(n int) float64 {
	b := costBucket(n)
	x := float64(n)
	lo, hi := c.below(b, x), c.above(b, x)
	switch {
	case lo >= 0 && hi >= 0:
		if c.x[hi] == c.x[lo] {
			return c.y[lo]
		}
		if n < 32 && c.x[hi] >= 32 {
			// An unmeasured small batch (a verify of a few drafts) between a
			// measured small one and prefill-sized ones: assume it costs no
			// more than the smaller one until measured. Interpolating
			// towards a prefill's per-row cost made the first drafts look
			// dear, so adaptive k could settle at 0 without ever measuring
			// a verify (single stream, 2 threads: 46 tok/s against 124 at
			// a fixed k). Optimism here is corrected by the first step that
			// tries it.
			return c.y[lo]
		}
		return c.y[lo] + (c.y[hi]-c.y[lo])*(x-c.x[lo])/(c.x[hi]-c.x[lo])
	case lo >= 0:
		if j := c.below(lo-1, c.x[lo]-0.5); j >= 0 && c.x[j] < c.x[lo] {
			slope := max(0, (c.y[lo]-c.y[j])/(c.x[lo]-c.x[j]))
			return c.y[lo] + slope*(x-c.x[lo])
		}
		return c.y[lo]
	case hi >= 0:
		return c.y[hi]
	}
	return 0
}

// ObserveDraft records one draft-model decode of rows rows (one per
// drafting sequence, plus any prompt or catch-up tokens fed in the same
// decode).
func (m *CostModel) ObserveDraft(rows int, d time.Duration) { m.draft.observe(rows, d) }

// ObserveVerify records one target decode of tokens tokens.
func (m *CostModel) ObserveVerify(tokens int, d time.Duration) { m.verify.observe(tokens, d) }

// VerifyReadings is how many readings (at most the averaging window) the
// bucket of a target decode of tokens tokens holds.
func (m *CostModel) VerifyReadings(tokens int) int { return int(m.verify.n[costBucket(tokens)]) }

// VerifyCost estimates the seconds of a target decode of tokens tokens.
func (m *CostModel) VerifyCost(tokens int) float64 {
	if !m.verify.any {
		return 1e-3
	}
	return m.verify.at(tokens)
}

// DraftCost estimates the seconds of one draft decode over batchSeqs
// sequences.
func (m *CostModel) DraftCost(batchSeqs int) float64 {
	if x, y, ok := m.draft.smallest(); ok && m.verify.any {
		if x <= float64(batchSeqs) {
			return m.draft.at(batchSeqs)
		}
		// Measured only on larger decodes (prompts): the ratio of the two
		// models there, applied to the target's cost at this size.
		if v := m.verify.at(int(math.Round(x))); v > 0 {
			return min(y/v, m.draftPrior()) * m.VerifyCost(batchSeqs)
		}
	}
	return m.draftPrior() * m.VerifyCost(batchSeqs)
}

func (m *CostModel) draftPrior() float64 {
	if m.DraftPrior == 0 {
		return 0.1
	}
	return m.DraftPrior
}
