package scheduler

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"specd/specdec"
)

// item is one sequence's share of a step: target input t[from:to), and when
// to reaches the end of the sequence, logits for the pending token plus k
// draft tokens to verify. The plan is plain data: schedule decides it,
// execute runs it, update applies the result.
type item struct {
	q        *seq
	from, to int
	logits   bool
	k        int // draft tokens verified this step (len(q.drafts) after propose)
	row      int // target row of the token at to-1 (when logits)
	prow     int // target row of the token at from (prompt logprobs)
	drow     int // draft row whose logits give the next proposal
	dto      int // > 0: the draft KV is fed up to dto this step
}

// draftLag is how many positions the draft KV of a sequence that does not
// draft may trail the target's before it is caught up anyway.
const draftLag = 64

// ErrKVExhausted fails a request that cannot fit in the KV pool even alone.
var ErrKVExhausted = errors.New("scheduler: KV cache too small for this request")

func (s *Scheduler) step() {
	t0 := time.Now()
	s.reap()
	items := s.schedule()
	if len(items) == 0 {
		s.publishStats(time.Since(t0), 0)
		return
	}
	s.propose(items)
	dt := s.decodeTarget(items)
	s.update(items)
	if s.checkKV {
		s.verifyKV()
	}
	s.publishStats(time.Since(t0), dt)
}

// reap drops cancelled requests (client gone, timeout) and retries
// delivering held-back events.
func (s *Scheduler) reap() {
	for i := 0; i < len(s.running); i++ {
		q := s.running[i]
		if q.ctx.Err() != nil {
			s.finish(q, "", q.ctx.Err())
			i--
		}
	}
	kept := s.waiting[:0]
	for _, q := range s.waiting {
		if q.ctx.Err() != nil {
			s.nWait.Add(-1)
			q.finished = true
			s.deliver(q, Event{Done: true, Err: q.ctx.Err(), Usage: q.usage}, true)
			continue
		}
		kept = append(kept, q)
	}
	clear(s.waiting[len(kept):])
	s.waiting = kept
	for _, q := range s.running {
		if q.hasPend {
			s.deliver(q, Event{}, false)
		}
	}
	for _, q := range append([]*seq(nil), s.undelivered...) {
		s.deliver(q, Event{}, true)
	}
}

// schedule decides this step: running sequences first, oldest first, then
// admissions while the token budget, the slots and the KV blocks allow.
func (s *Scheduler) schedule() []item {
	items := s.items[:0]
	budget := s.cfg.MaxBatchTokens
	s.planK()
	preempted := false
	for i := 0; i < len(s.running) && budget > 0; i++ {
		q := s.running[i]
		need := len(q.tokens) - q.computed
		n := min(need, budget)
		logits := n == need
		k := 0
		if logits {
			k = s.kFor(q, budget-n)
		}
		for {
			missing := s.alloc.Grow(q.slot, q.computed+n+k-s.alloc.Len(q.slot))
			if missing == 0 {
				break
			}
			if k > 0 {
				k = 0
				continue
			}
			if victim := s.newestAfter(i); victim != nil {
				s.preempt(victim)
				preempted = true
				continue
			}
			if len(s.running) > 1 {
				// q is the newest: it yields to the older ones.
				s.preempt(q)
				preempted = true
				i--
			} else if q.generated() > 0 {
				s.finish(q, "length", nil)
				i--
			} else {
				s.finish(q, "", ErrKVExhausted)
				i--
			}
			q = nil
			break
		}
		if q == nil {
			continue
		}
		items = append(items, item{q: q, from: q.computed, to: q.computed + n, logits: logits, k: k})
		budget -= n + k
	}
	// Admission stops after a preemption in this step: the pool is short.
	for !preempted && budget > 0 && len(s.waiting) > 0 && len(s.running) < s.cfg.MaxRunning {
		q := s.waiting[0]
		it, ok := s.admit(q, budget)
		if !ok {
			if len(s.running) == 0 && len(items) == 0 {
				// Nothing runs and the head still does not fit: it never will.
				s.waiting = s.waiting[1:]
				s.nWait.Add(-1)
				q.finished = true
				s.deliver(q, Event{Done: true, Err: ErrKVExhausted, Usage: q.usage}, true)
				continue
			}
			break
		}
		s.waiting = s.waiting[1:]
		s.nWait.Add(-1)
		items = append(items, it)
		budget -= it.to - it.from + it.k
	}
	sortBySlot(items)
	s.items = items
	return items
}

// sortBySlot orders the step's items by sequence id (insertion sort: the
// batch is small and mostly sorted already; no allocation). With
// per-sequence KV streams llama.cpp puts only consecutive, increasing
// sequence ids into one ubatch (split_equal, sequential): a batch in
// admission order costs up to one graph compute per sequence, twice the
// step time at 16 sequences. The lowest-free-slot rule of paging keeps the
// ids themselves contiguous.
func sortBySlot(items []item) {
	for i := 1; i < len(items); i++ {
		it := items[i]
		j := i
		for j > 0 && items[j-1].q.slot > it.q.slot {
			items[j] = items[j-1]
			j--
		}
		items[j] = it
	}
}

// admit moves the head of the waiting queue into the running set if a slot
// and blocks for its first chunk are available.
func (s *Scheduler) admit(q *seq, budget int) (item, bool) {
	// Probe first: a failed admission must not churn the prefix cache.
	prompt := q.tokens
	if q.state == stSwapped || (q.req.NoPrefixCache && q.admitted == 0) {
		prompt = nil
	}
	pr := s.alloc.Probe(prompt)
	have := pr.Cached
	if q.state == stSwapped {
		have = 0
	}
	first := min(len(q.tokens)-have, budget)
	if q.state == stSwapped {
		first = q.computed + min(len(q.tokens)-q.computed, budget)
	}
	if !pr.Slot || s.alloc.BlocksFor(have, first) > pr.FreeBlocks {
		return item{}, false
	}
	var cached int
	var ok bool
	q.slot, cached, ok = s.alloc.Admit(prompt)
	if !ok {
		return item{}, false
	}
	if q.state != stSwapped {
		q.computed, q.dcomputed = cached, cached
		if q.admitted == 0 {
			q.cachedTokens = cached
			q.usage.CachedTokens = cached
		}
	}
	need := len(q.tokens) - q.computed
	n := min(need, budget)
	logits := n == need
	k := 0 // a newly admitted sequence verifies no draft in its first step
	// Reserve the restored KV (swap) and the first chunk at once, so a
	// failure leaves the swapped state intact.
	grow := n
	if q.state == stSwapped {
		grow += q.computed
	}
	if s.alloc.Grow(q.slot, grow) != 0 {
		s.alloc.Free(q.slot)
		q.slot = -1
		return item{}, false
	}
	if q.state == stSwapped && !s.restore(q) {
		s.alloc.Free(q.slot)
		q.slot = -1
		return item{}, false // restore turned it into a recompute; next step
	}
	s.admitSeq++
	q.admitted = s.admitSeq
	q.state = stRunning
	if q.admittedAt.IsZero() {
		q.admittedAt = time.Now()
		q.usage.Queued = q.admittedAt.Sub(q.submitted)
	}
	s.running = append(s.running, q)
	if s.trace != nil {
		s.trace("admit %d (cached %d)", q.id, cached)
	}
	return item{q: q, from: q.computed, to: q.computed + n, logits: logits, k: k}, true
}

// restore brings a swapped sequence's KV back from host memory.
func (s *Scheduler) restore(q *seq) bool {
	if err := s.target.RestoreState(int32(q.slot), q.swapT); err != nil {
		s.log.Warn("swap-in failed; recomputing", "err", err)
		s.recomputeInstead(q)
		return false
	}
	if s.draft != nil && q.swapD != nil {
		if err := s.draft.RestoreState(int32(q.slot), q.swapD); err != nil {
			s.log.Warn("draft swap-in failed; recomputing", "err", err)
			s.target.Remove(int32(q.slot), 0, -1)
			s.recomputeInstead(q)
			return false
		}
	}
	q.swapT, q.swapD = nil, nil
	return true
}

func (s *Scheduler) recomputeInstead(q *seq) {
	q.state = stWaiting
	q.computed, q.dcomputed = 0, 0
	q.swapT, q.swapD = nil, nil
}

// newestAfter is the most recently admitted running sequence at an index
// after i (not yet scheduled this step), or nil.
func (s *Scheduler) newestAfter(i int) *seq {
	var v *seq
	for _, q := range s.running[i+1:] {
		if v == nil || q.admitted > v.admitted {
			v = q
		}
	}
	return v
}

// preempt takes a running sequence out and puts it first in the waiting
// queue: its KV is either dropped (recompute) or saved to host memory (swap).
func (s *Scheduler) preempt(q *seq) {
	s.removeRunning(q)
	swapped := false
	if s.cfg.Preemption == "swap" {
		t, err := s.target.SaveState(int32(q.slot))
		var d []byte
		if err == nil && s.draft != nil {
			d, err = s.draft.SaveState(int32(q.slot))
		}
		if err == nil {
			q.swapT, q.swapD = t, d
			swapped = true
		} else {
			s.log.Warn("swap-out failed; preempting by recompute", "err", err)
		}
	}
	s.alloc.Free(q.slot)
	q.slot = -1
	if swapped {
		q.state = stSwapped
		s.statsMu.Lock()
		s.stats.PreemptionsSwap++
		s.statsMu.Unlock()
	} else {
		q.state = stWaiting
		q.computed, q.dcomputed = 0, 0
		s.statsMu.Lock()
		s.stats.PreemptionsRecomp++
		s.statsMu.Unlock()
	}
	s.waiting = append([]*seq{q}, s.waiting...)
	s.nWait.Add(1)
	if s.trace != nil {
		s.trace("preempt %d (%s, kept %d tokens)", q.id, map[bool]string{true: "swap", false: "recompute"}[swapped], q.computed)
	}
}

func (s *Scheduler) removeRunning(q *seq) {
	for i, r := range s.running {
		if r == q {
			copy(s.running[i:], s.running[i+1:])
			s.running[len(s.running)-1] = nil
			s.running = s.running[:len(s.running)-1]
			return
		}
	}
}

// planK chooses this step's draft length for every running sequence that
// is decoding (its pending token is all it has left to compute): model-free
// proposals are made here, since their length bounds k; then one batch-wide
// choice maximises expected tokens per second under the measured costs
// (specdec.BatchChooser), which may turn speculation off for some sequences
// or all of them. A sequence whose request fixed k, or that carries a
// Predicted Output, is not the chooser's to decide: it verifies all it may
// (the request asked for it, as OpenAI's Predicted Outputs always use the
// prediction), and the chooser counts those rows as already committed.
func (s *Scheduler) planK() {
	s.bseqs = s.bseqs[:0]
	for _, q := range s.running {
		q.kWant = 0
		limit := 0
		if q.proposer != propNone && len(q.tokens)-q.computed == 1 {
			limit = min(s.cfg.KMax, q.req.MaxTokens-q.generated()-1, s.cfg.MaxSeqLen-len(q.tokens)-1)
			if q.fixedK > 0 {
				limit = min(limit, q.fixedK)
			}
			switch q.proposer {
			case propNGram:
				q.drafts = ngram.Propose(q.tokens, max(limit, 0), q.drafts[:0])
				limit = len(q.drafts)
			case propPrediction:
				q.drafts = q.pred.Propose(q.tokens[q.nPrompt:], max(limit, 0), q.drafts[:0])
				limit = len(q.drafts)
			}
		}
		limit = max(limit, 0)
		fixed := 0
		if q.forcedK() {
			q.kWant = limit // bounded by what it may still produce
			fixed, limit = limit, 0
		}
		s.bseqs = append(s.bseqs, specdec.BatchSeq{Alpha: q.acc.Alpha(), Limit: limit, Fixed: fixed,
			Model: q.proposer == propDraft, Slot: int(q.slot)})
	}
	var costs specdec.Costs = &s.costs
	if s.costSeam != nil {
		costs = s.costSeam
	}
	s.chooser.Choose(s.kcfg, s.bseqs, costs)
	candidates, chosen := false, false
	if s.draft != nil {
		for _, b := range s.bseqs {
			candidates = candidates || b.Model && b.Limit > 0
			chosen = chosen || b.Model && b.K > 0
		}
		switch {
		case chosen:
			s.draftUnchosen = 0
		case candidates:
			s.draftUnchosen++
		}
		s.draftIdle = s.draftUnchosen >= draftIdleSteps || !s.chooser.DraftMayPay(s.kcfg, s.bseqs, costs)
	}
	for i, q := range s.running {
		if q.forcedK() {
			continue
		}
		q.kWant = s.bseqs[i].K
		if s.draftIdle && s.bseqs[i].Model {
			q.kWant = 0 // Choose agrees: no acceptance beats plain decoding
		}
	}
	if s.draft != nil {
		s.exploreDraft(chosen, candidates, costs)
	}
}

// exploreK is the draft length of a try: the first draft decode catches
// the sequence's draft KV up and proposes one token, the second is a
// one-row draft step, the reading every choice of k prices.
const exploreK = 2

// exploreDraft lets one sequence draft exploreK tokens as a try when
// unchosen (adaptive k let no sequence draft with the model though some
// could) and enough credit has accrued to pay for the try at the measured
// costs: each such step earns exploreShare (as the thread chooser's tries)
// of its plain decode's price, and a try is priced at least one plain
// one-row decode, so that tries take at most that share of the decode
// time and of the steps.
//
// Adaptive k decides from readings, and an option it stops choosing is not
// measured again: a sequence's acceptance estimate stays where a bad
// stretch left it, and a cost reading taken when the machine stalled stays
// in the averages. The first draft decode of a fresh server once took 21
// ms for a 5-token prompt (1-2 ms after), which priced a draft step at 12
// ms against a 10 ms target decode, so adaptive k never drafted in that
// run (heavy pair, one stream: 2 runs in 6, at half the speed). A try
// re-measures the draft step, the verify of exploreK+1 rows and the
// sequence's acceptance, and Choose takes it from there.
func (s *Scheduler) exploreDraft(chosen, candidates bool, costs specdec.Costs) {
	if chosen {
		s.exploreCredit = 0
		return
	}
	if !candidates {
		return // a prompt step: the credit waits for the decode steps
	}
	s.exploreCredit += exploreShare * costs.VerifyCost(len(s.running))
	n := len(s.running)
	for j := range n {
		i := (s.exploreNext + j) % n
		b, q := s.bseqs[i], s.running[i]
		lag := max(len(q.tokens)-q.dcomputed, 1)
		if !b.Model || b.Limit == 0 || q.forcedK() || lag > draftLag {
			// A draft KV trailing further (an idle draft) would make the
			// try a prefill of the draft: tries wait for a sequence in
			// step, as every new request is after its prompt.
			continue
		}
		k := min(exploreK, b.Limit)
		one := costs.VerifyCost(1)
		try := max(costs.DraftCost(lag)+float64(k-1)*costs.DraftCost(1)+max(costs.VerifyCost(k+1)-one, 0), one)
		if s.exploreCredit < try {
			return
		}
		s.exploreCredit -= try
		s.exploreNext = i + 1
		q.kWant = k
		s.statsMu.Lock()
		s.stats.DraftTries++
		s.statsMu.Unlock()
		if s.trace != nil {
			s.trace("try draft %d: k %d, catch-up %d", q.id, k, lag)
		}
		return
	}
}

// draftIdleSteps: after this many steps in a row in which adaptive k let
// no sequence draft with the model, the draft idles as it does when it
// cannot pay at all (its KV trails without bound) until a step chooses it
// again. DraftMayPay asks about full acceptance, and with a draft about as
// costly as the target that is break-even, so noise in the cost readings
// (under load, a draft sharing the target's weights read 40 % cheaper per
// row) could keep the draft in step for a whole run in which it never
// drafted (TestRealAdaptiveK, 1 run in 6 under load).
const draftIdleSteps = 16

// forcedK: the request fixed k, or carries a prediction; the chooser does
// not decide its k.
func (q *seq) forcedK() bool {
	return q.fixedK > 0 || q.proposer == propPrediction
}

// ngram is the prompt-lookup proposer: a match must be at least 3 tokens
// long (llama.cpp's ngram-simple default). With 1-token matches, on the
// copy-heavy benchmark prompts only 9% of proposed tokens were accepted
// against llama-server's 40-49% (docs/BENCHMARKS.md, scenario 3).
var ngram = specdec.NGram{MinN: 3, MaxN: 4}

// kFor is the number of draft tokens sequence q verifies this step.
func (s *Scheduler) kFor(q *seq, budgetLeft int) int {
	return max(min(q.kWant, budgetLeft), 0)
}

// propose fills q.drafts for every item with k > 0 and keeps the draft
// model's KV caught up with the target's.
func (s *Scheduler) propose(items []item) {
	for i := range items {
		it := &items[i]
		q := it.q
		if q.proposer == propNGram || q.proposer == propPrediction {
			it.k = min(it.k, len(q.drafts)) // proposed in planK
			q.drafts = q.drafts[:it.k]
		} else {
			q.drafts = q.drafts[:0]
		}
	}
	if s.draft == nil {
		return
	}
	s.runDraft(items)
}

// runDraft: the first draft decode feeds each sequence's catch-up tokens
// (what the target will have after this step) and, for sequences drafting
// with the model, yields the first proposal; each further position is one
// more batched decode over all of them.
func (s *Scheduler) runDraft(items []item) {
	kmax, nwant, rows := 0, 0, 0
	room := s.cfg.MaxBatchTokens // the draft batch's capacity
	for i := range items {
		it := &items[i]
		it.drow = -1
		q := it.q
		want := it.logits && q.proposer == propDraft && it.k > 0
		if q.proposer != propDraft && s.cfg.DisablePrefixCache {
			// Its draft KV would only serve prefix-cache hits of draft
			// users; without the cache, keeping it in step is waste.
			continue
		}
		// When a sequence does not draft this step, let its draft KV trail
		// by up to draftLag positions and catch up in one chunk when it
		// drafts again (a one-token draft decode per step for every
		// sequence cost as much as the target's decode with a draft as
		// costly as the target, and 5-15 % with the heavy benchmark pair,
		// whenever adaptive k chose not to speculate). While the draft
		// cannot pay at this batch size even if every draft token were
		// accepted (s.draftIdle), it trails without bound and catches up
		// in chunks of this step's room once it may pay again. With the
		// prefix cache the prompt still goes to the draft as it is
		// prefilled, so cached prompt blocks serve draft users too; the
		// cache keeps only blocks both models computed (committable), so a
		// finished sequence's last generated tokens the draft trails may
		// go uncached. A sequence drafts only once its draft KV is caught
		// up.
		lag := it.to - q.dcomputed
		prompt := !s.cfg.DisablePrefixCache && it.from < q.nPrompt
		trail := lag <= draftLag || (s.draftIdle && q.fixedK == 0)
		if (!want && trail && !prompt) || room == 0 {
			if q.proposer == propDraft {
				it.k = 0
			}
			continue
		}
		if lag > room {
			want = false
		}
		it.dto = q.dcomputed + min(lag, room)
		room -= it.dto - q.dcomputed
		if !want && q.proposer == propDraft {
			it.k = 0
		}
		if want {
			it.drow = 0 // its row is added below
			nwant++
			kmax = max(kmax, it.k)
			if !q.sampler.Greedy() {
				if need := it.k * s.nVocab; cap(q.qbuf) < need {
					q.qbuf = make([]float32, need)
				}
				q.q = q.q[:0]
			}
		}
	}
	pairs := 0 // drafting sequences with two rows to feed
	for i := range items {
		if it := &items[i]; it.dto > 0 {
			rows += it.dto - it.q.dcomputed
			if it.drow >= 0 && it.dto-it.q.dcomputed == 2 {
				pairs++
			}
		}
	}
	if rows == 0 {
		return
	}
	t0 := time.Now()
	// When every drafting sequence has two rows to feed (each accepted
	// all its draft tokens: the last draft token and the target's own
	// next one) and nothing else is fed, the first rows go in a decode of
	// their own, with logits, so that every draft decode of the step has
	// the shape of a draft step, one row and one output per drafting
	// sequence: llama.cpp then reuses one compute graph for all of them
	// instead of building one for the two-row decode and again for the
	// next (stories260K after a heavy-q8 verify, one stream: 0.57 ms for
	// a two-row first decode and 0.25 for each of the next two, against
	// 0.32-0.35 and 0.17-0.20 when every decode has one row; +3 % output
	// tok/s on the benchmark pair at one stream, docs/BENCHMARKS.md
	// session 15). Any other mix builds a graph anyway, so it is fed in
	// one decode.
	split := nwant > 0 && pairs == nwant && rows == 2*nwant
	for i := range items {
		it := &items[i]
		if it.dto == 0 {
			continue
		}
		want := it.drow >= 0 // then dto == to
		end := it.dto
		if split && want {
			end-- // its last row comes after the split
		}
		for p := it.q.dcomputed; p < end; p++ {
			// The split-off decode asks logits of its rows too (unused):
			// the graph's shape counts its outputs.
			row := s.draft.Add(it.q.tokens[p], int32(p), int32(it.q.slot), split || (want && p == it.to-1))
			if want && p == it.to-1 {
				it.drow = row
			}
		}
	}
	if split {
		if err := s.decodeDraft(); err != nil {
			s.draftFailed(items, err)
			return
		}
		for i := range items {
			if it := &items[i]; it.drow >= 0 {
				p := it.to - 1
				it.drow = s.draft.Add(it.q.tokens[p], int32(p), int32(it.q.slot), true)
			}
		}
	}
	if err := s.decodeDraft(); err != nil {
		s.draftFailed(items, err)
		return
	}
	for i := range items {
		if items[i].dto > 0 {
			items[i].q.dcomputed = items[i].dto
		}
	}
	for j := 0; j < kmax; j++ {
		for i := range items {
			it := &items[i]
			q := it.q
			if q.proposer != propDraft || !it.logits || j >= it.k {
				continue
			}
			logits := s.draft.Logits(it.drow)
			q.adjust.Add(logits, q.drafts)
			if q.grammar != nil && !s.maskDraft(q, j, logits) {
				it.k = j // nothing the grammar allows: propose what there is
				continue
			}
			var d int32
			var dist []float32
			var conf float64 // how sure the draft is, as llama.cpp's --draft-p-min reads it
			if q.sampler.Greedy() {
				d = specdec.Argmax(logits)
				if j > 0 && s.cfg.DraftPMin > 0 {
					conf = specdec.ProbOf(logits, d) // softmax at the argmax
				}
			} else {
				// The top probability of the sampling distribution (the
				// proposal itself may be a less likely token).
				var top float32
				dist, top = q.sampler.DistTop(logits, q.qbuf[j*s.nVocab:(j+1)*s.nVocab])
				d = q.sampler.SampleDraft(dist)
				conf = float64(top)
			}
			if j > 0 && s.cfg.DraftPMin > 0 && conf < s.cfg.DraftPMin {
				// Unsure: propose the j tokens so far. Its KV past them
				// is trimmed with the rejected ones after verification.
				it.k = j
				continue
			}
			if q.gdraft != nil && q.gdraft.Accept(d) != nil {
				it.k = j
				continue
			}
			if dist != nil {
				q.q = append(q.q, dist)
			}
			q.drafts = append(q.drafts, d)
			if j+1 < it.k {
				it.drow = s.draft.Add(d, int32(it.to+j), int32(q.slot), true)
			}
		}
		if s.draft.Pending() == 0 {
			break
		}
		if err := s.decodeDraft(); err != nil {
			s.draftFailed(items, err)
			return
		}
		for i := range items {
			it := &items[i]
			if it.q.proposer == propDraft && it.logits && j+1 < it.k {
				it.q.dcomputed++
			}
		}
	}
	dt := time.Since(t0)
	s.statsMu.Lock()
	s.stats.DraftDecodeTime += dt
	s.stats.DraftDecoded += s.draftRows
	s.statsMu.Unlock()
	s.draftRows = 0
	for i := range items {
		if q := items[i].q; q.gdraft != nil {
			q.gdraft.Free()
			q.gdraft = nil
		}
	}
}

// maskDraft masks draft model row j of q's proposal to the tokens q's
// grammar allows after the j tokens proposed so far, so that the draft
// proposes what the constrained target can keep; false if it allows none.
func (s *Scheduler) maskDraft(q *seq, j int, logits []float32) bool {
	if j == 0 {
		freeGrammar(q.gdraft)
		q.gdraft = nil
		g, err := q.grammar.Clone()
		if err != nil {
			return false
		}
		q.gdraft = g
	}
	if q.gdraft == nil {
		return false
	}
	if q.sampler.Greedy() && q.gdraft.Allowed(specdec.Argmax(logits)) {
		return true // the draft proposes the argmax, which the grammar allows
	}
	return q.gdraft.Mask(logits) > 0
}

// decodeDraft runs one draft decode and measures it by its rows: a pass
// that feeds a prompt or catches lagging KV up is priced as the prefill it
// is, not as a draft step (counted as one step over the batch, a 128-token
// prompt made the draft look as dear as a prefill, and adaptive k could
// stay at 0 without ever measuring a drafting pass: one stream, 2 threads,
// 1 run in 3).
func (s *Scheduler) decodeDraft() error {
	rows := s.draft.Pending()
	t0 := time.Now()
	if err := s.draft.Decode(); err != nil {
		return err
	}
	s.costs.ObserveDraft(rows, time.Since(t0))
	s.draftRows += uint64(rows) // published with the step's draft time
	return nil
}

// draftFailed: a failed draft decode costs speculation, not correctness:
// drop the draft KV past what the target has and verify nothing this step.
func (s *Scheduler) draftFailed(items []item, err error) {
	s.log.Warn("draft decode failed; speculating without it this step", "err", err)
	s.draft.Discard()
	for i := range items {
		it := &items[i]
		q := it.q
		if q.proposer == propDraft {
			q.drafts = q.drafts[:0]
			it.k = 0
		}
		q.dcomputed = min(q.dcomputed, q.computed)
		s.draft.Remove(int32(q.slot), int32(q.dcomputed), -1)
	}
}

// decodeTarget runs the one target decode of the step. A failed batch is
// retried one sequence at a time so that only the sequences that fail alone
// are failed.
func (s *Scheduler) decodeTarget(items []item) time.Duration {
	rows := 0
	s.ubSlots, s.ubRows = s.ubSlots[:0], s.ubRows[:0]
	for i := range items {
		n := s.addTarget(&items[i])
		rows += n
		if s.cfg.SplitKV {
			s.ubSlots, s.ubRows = append(s.ubSlots, int(items[i].q.slot)), append(s.ubRows, n)
		}
	}
	t0 := time.Now()
	err := s.target.Decode()
	dt := time.Since(t0)
	if err == nil {
		// The cost curve is of one ubatch: with per-sequence streams a
		// decode llama.cpp splits into several (rows of unequal counts, a
		// prefill chunk beside decodes) is not a reading of its rows.
		if !s.cfg.SplitKV {
			s.costs.ObserveVerify(rows, dt)
		} else if s.ubBuf = specdec.UBatches(s.ubSlots, s.ubRows, s.cfg.MaxBatchTokens, s.ubBuf[:0]); len(s.ubBuf) == 1 {
			s.costs.ObserveVerify(rows, dt)
		}
		return dt
	}
	s.log.Warn("target decode failed; retrying one sequence at a time", "err", err, "rows", rows)
	for i := range items {
		s.target.Remove(int32(items[i].q.slot), int32(items[i].from), -1)
	}
	for i := range items {
		it := items[i]
		s.addTarget(&it)
		if err := s.target.Decode(); err != nil {
			s.target.Remove(int32(it.q.slot), int32(it.from), -1)
			s.finish(it.q, "", fmt.Errorf("decode failed: %w", err))
			items[i].q = nil
			continue
		}
		// Its logits are gone after the next decode: verify it now.
		s.updateOne(&it)
		items[i].q = nil
	}
	return time.Since(t0)
}

func (s *Scheduler) addTarget(it *item) int {
	q := it.q
	for p := it.from; p < it.to; p++ {
		// Prompt logprobs: every prompt row not scored yet predicts the
		// next prompt token.
		plp := q.req.PromptLogprobs && p >= len(q.plp) && p < q.nPrompt-1
		r := s.target.Add(q.tokens[p], int32(p), int32(q.slot), plp || (it.logits && p == it.to-1))
		if p == it.from {
			it.prow = r
		}
		if it.logits && p == it.to-1 {
			it.row = r
		}
	}
	for j, d := range q.drafts[:it.k] {
		s.target.Add(d, int32(it.to+j), int32(q.slot), true)
	}
	return it.to - it.from + it.k
}

// update verifies and appends for every item of the step.
func (s *Scheduler) update(items []item) {
	for i := range items {
		if items[i].q != nil {
			s.updateOne(&items[i])
		}
	}
}

func (s *Scheduler) updateOne(it *item) {
	q := it.q
	if q.req.PromptLogprobs && !q.plpSent {
		s.scorePrompt(it)
	}
	if !it.logits {
		q.computed = it.to
		return
	}
	if q.req.MaxTokens == 0 { // scored the prompt; nothing to generate
		q.computed = it.to
		s.finish(q, "length", nil)
		return
	}
	rows := s.rowsBuf[:0]
	for j := 0; j <= it.k; j++ {
		rows = append(rows, s.target.Logits(it.row+j))
	}
	var qd [][]float32
	if q.proposer == propDraft && !q.sampler.Greedy() && it.k > 0 {
		qd = q.q[:it.k]
	}
	if q.grammar != nil && q.req.Logprobs {
		// The grammar's mask is not undone by Restore: keep the rows.
		for j, row := range rows {
			if j == len(s.gsaved) {
				s.gsaved = append(s.gsaved, nil)
			}
			s.gsaved[j] = append(s.gsaved[j][:0], row...)
		}
	}
	q.adjust.Apply(rows, q.drafts[:it.k])
	k := it.k
	if q.grammar != nil {
		var err error
		if k, err = specdec.ConstrainRows(q.grammar, rows, q.drafts[:k], q.sampler.Greedy()); err != nil {
			q.adjust.Restore(rows)
			s.finish(q, "", fmt.Errorf("grammar: %w", err))
			return
		}
		if qd != nil {
			qd = qd[:k]
		}
	}
	out, accepted := q.sampler.Verify(q.drafts[:k], qd, rows[:k+1], s.tokBuf[:0])
	q.adjust.Restore(rows) // logprobs read the model's own logits
	if q.grammar != nil && q.req.Logprobs {
		for j := range rows {
			copy(rows[j], s.gsaved[j])
		}
	}
	s.tokBuf = out[:0]
	s.rowsBuf = rows[:0]
	if it.k > 0 {
		q.acc.Observe(it.k, accepted)
		q.usage.DraftProposed += it.k
		q.usage.DraftAccepted += accepted
		s.statsMu.Lock()
		s.stats.DraftProposed += uint64(it.k)
		s.stats.DraftAccepted += uint64(accepted)
		for j := 0; j < it.k && j < len(s.stats.ProposedByPosition); j++ {
			s.stats.ProposedByPosition[j]++
			if j < accepted {
				s.stats.AcceptedByPosition[j]++
			}
		}
		s.stats.LastK = it.k
		s.statsMu.Unlock()
	}
	q.computed = it.to + accepted
	if s.alloc.Len(q.slot) > q.computed {
		s.alloc.Trim(q.slot, q.computed)
	}
	q.dcomputed = min(q.dcomputed, q.computed)
	s.appendTokens(q, out, rows)
	if !q.finished {
		s.alloc.Commit(q.slot, q.tokens[:s.committable(q)])
	}
}

// scorePrompt takes the logprobs of the prompt tokens this item's rows
// predict (raw model rows, before any adjustment), and delivers them all
// once the last is in.
func (s *Scheduler) scorePrompt(it *item) {
	q := it.q
	for p := max(it.from, len(q.plp)); p < it.to && p < q.nPrompt-1; p++ {
		row := s.target.Logits(it.prow + p - it.from)
		if row == nil {
			break
		}
		lp := Logprob{Token: q.tokens[p+1]}
		lp.Logprob, lp.Top = specdec.Logprobs(row, lp.Token, q.req.TopLogprobs, nil)
		q.plp = append(q.plp, lp)
	}
	if len(q.plp) >= q.nPrompt-1 {
		q.plpSent = true
		s.deliver(q, Event{PromptLogprobs: q.plp}, false)
	}
}

// committable is how many of q's tokens have their KV in every context a
// prefix-cache hit would copy from.
func (s *Scheduler) committable(q *seq) int {
	done := min(q.computed, len(q.tokens))
	if s.draft != nil {
		done = min(done, q.dcomputed)
	}
	return done
}

// appendTokens adds verified tokens to q, streams their text and finishes q
// on an end-of-generation token, a stop string, max_tokens or a full context.
// rows[i] are the target's logits that toks[i] was chosen from (logprobs).
func (s *Scheduler) appendTokens(q *seq, toks []int32, rows [][]float32) {
	var piece [64]byte
	ev := Event{}
	reason := ""
	for i, t := range toks {
		if q.firstTok.IsZero() {
			q.firstTok = time.Now()
		}
		q.tokens = append(q.tokens, t)
		q.adjust.Accept(q.tokens[len(q.tokens)-1:])
		q.usage.CompletionTokens++
		ev.Tokens = append(ev.Tokens, t)
		if (!q.req.IgnoreEOS || q.grammar != nil) && s.vocab.IsEOG(t) {
			reason = "stop"
			break
		}
		if q.grammar != nil {
			if err := q.grammar.Accept(t); err != nil {
				// Verification chose it from masked rows: a bug if here.
				s.deliver(q, ev, false)
				s.finish(q, "", fmt.Errorf("grammar refused token %d: %w", t, err))
				return
			}
		}
		if q.req.Logprobs {
			lp := Logprob{Token: t}
			lp.Logprob, lp.Top = specdec.Logprobs(rows[i], t, q.req.TopLogprobs, nil)
			ev.Logprobs = append(ev.Logprobs, lp)
		}
		text, stopped := q.out.push(s.vocab.AppendPiece(piece[:0], t, q.req.SpecialText))
		ev.Text += text
		if stopped || slices.Contains(q.req.StopTokens, t) {
			reason = "stop"
			break
		}
		if q.generated() >= q.req.MaxTokens || len(q.tokens) >= s.cfg.MaxSeqLen {
			reason = "length"
			break
		}
	}
	if reason != "" {
		ev.Text += q.out.flush()
	}
	if ev.Text != "" || len(ev.Tokens) > 0 {
		s.deliver(q, ev, false)
	}
	if reason != "" {
		s.finish(q, reason, nil)
	}
}

// finish ends a running sequence: frees its KV and delivers Done.
func (s *Scheduler) finish(q *seq, reason string, err error) {
	if q.finished {
		return
	}
	q.finished = true
	if s.trace != nil {
		s.trace("finish %d (%s%v) after %d tokens", q.id, reason, errString(err), q.generated())
	}
	s.removeRunning(q)
	if q.slot >= 0 && err == nil && q.state == stRunning {
		// Blocks completed in the last step are worth caching too.
		s.alloc.Commit(q.slot, q.tokens[:s.committable(q)])
	}
	if q.slot >= 0 {
		s.alloc.Free(q.slot)
		q.slot = -1
	}
	q.state = stDone
	now := time.Now()
	q.usage.PromptTokens = q.nPrompt
	if !q.admittedAt.IsZero() {
		if q.firstTok.IsZero() {
			q.usage.PromptTime = now.Sub(q.admittedAt)
		} else {
			q.usage.PromptTime = q.firstTok.Sub(q.admittedAt)
			q.usage.GenTime = now.Sub(q.firstTok)
		}
	}
	s.deliver(q, Event{Done: true, FinishReason: reason, Err: err, Usage: q.usage}, true)
}

// deliver hands an event to the request's channel without ever blocking the
// loop: text coalesces while the reader lags; Done is kept until delivered
// (or the reader is gone).
func (s *Scheduler) deliver(q *seq, ev Event, final bool) {
	if ev.Done {
		freeGrammar(q.gdraft)
		freeGrammar(q.grammar)
		q.grammar, q.gdraft = nil, nil
	}
	if q.hasPend {
		q.pending.Text += ev.Text
		q.pending.Tokens = append(q.pending.Tokens, ev.Tokens...)
		q.pending.Logprobs = append(q.pending.Logprobs, ev.Logprobs...)
		q.pending.PromptLogprobs = append(q.pending.PromptLogprobs, ev.PromptLogprobs...)
		if ev.Done {
			q.pending.Done, q.pending.FinishReason, q.pending.Err, q.pending.Usage = true, ev.FinishReason, ev.Err, ev.Usage
		}
	} else if ev.Done || ev.Text != "" || len(ev.Tokens) > 0 || len(ev.PromptLogprobs) > 0 {
		q.pending, q.hasPend = ev, true
	}
	if !q.hasPend {
		return
	}
	select {
	case q.events <- q.pending:
		done := q.pending.Done
		q.pending, q.hasPend = Event{}, false
		if done {
			close(q.events)
			s.removeUndelivered(q)
		}
		return
	default:
	}
	if q.pending.Done {
		if q.ctx.Err() != nil {
			// Nobody is reading any more.
			s.removeUndelivered(q)
			return
		}
		s.addUndelivered(q)
	}
}

func (s *Scheduler) addUndelivered(q *seq) {
	for _, r := range s.undelivered {
		if r == q {
			return
		}
	}
	s.undelivered = append(s.undelivered, q)
}

func (s *Scheduler) removeUndelivered(q *seq) {
	for i, r := range s.undelivered {
		if r == q {
			s.undelivered = append(s.undelivered[:i], s.undelivered[i+1:]...)
			return
		}
	}
}

// verifyKV compares, for every running sequence, paging's length and the
// scheduler's computed positions with what llama.cpp's KV holds. Tests turn
// it on; a mismatch is recorded, not fatal.
func (s *Scheduler) verifyKV() {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	s.kvCheckN++
	for _, q := range s.running {
		slot := int32(q.slot)
		if l := s.alloc.Len(q.slot); l != q.computed {
			s.kvErr = fmt.Errorf("seq %d: paging length %d, computed %d", slot, l, q.computed)
		}
		if p := s.target.PosMax(slot); int(p) != q.computed-1 {
			s.kvErr = fmt.Errorf("seq %d: target pos_max %d, computed %d", slot, p, q.computed)
		}
		if s.draft != nil {
			if p := s.draft.PosMax(slot); int(p) != q.dcomputed-1 {
				s.kvErr = fmt.Errorf("seq %d: draft pos_max %d, dcomputed %d", slot, p, q.dcomputed)
			}
		}
	}
}

func (s *Scheduler) kvMismatch() error {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return s.kvErr
}

func (s *Scheduler) kvChecks() int {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return s.kvCheckN
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return "error: " + err.Error()
}
