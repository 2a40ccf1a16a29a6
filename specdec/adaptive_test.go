package specdec

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestExpectedTokens(t *testing.T) {
	for _, c := range []struct {
		alpha float64
		k     int
		want  float64
	}{
		{0.5, 0, 1}, {0.5, 1, 1.5}, {0.5, 3, 1.875}, {0, 4, 1}, {1, 4, 5}, {0.8, 2, 1 + 0.8 + 0.64},
	} {
		if got := ExpectedTokens(c.alpha, c.k); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("ExpectedTokens(%v, %d) = %v, want %v", c.alpha, c.k, got, c.want)
		}
	}
}

func TestChooseK(t *testing.T) {
	ms := func(x float64) float64 { return x * 1e-3 }
	flatVerify := func(k int) float64 { return ms(10 + 0.1*float64(k)) } // memory-bound target: k nearly free
	linearVerify := func(k int) float64 { return ms(10 * float64(1+k)) } // compute-bound: each token costs a decode
	cheapDraft := func(k int) float64 { return ms(0.5 * float64(k)) }
	costlyDraft := func(k int) float64 { return ms(10 * float64(k)) }
	free := func(int) float64 { return 0 }
	cfg := KConfig{}
	for _, c := range []struct {
		name          string
		cfg           KConfig
		alpha         float64
		draft, verify func(int) float64
		lo, hi        int
	}{
		{"high alpha, cheap draft: large k", cfg, 0.9, cheapDraft, flatVerify, 6, 8},
		{"certain acceptance, free proposals: KMax", cfg, 0.99, free, flatVerify, 8, 8},
		{"low alpha: small k", cfg, 0.1, cheapDraft, flatVerify, 0, 1},
		{"draft as costly as the target: no speculation", cfg, 0.8, costlyDraft, flatVerify, 0, 0},
		{"compute-bound target: no speculation", cfg, 0.9, free, linearVerify, 0, 0},
		{"bounds respected", KConfig{KMin: 2, KMax: 3}, 0.99, free, flatVerify, 3, 3},
		{"fixed", KConfig{Fixed: 5}, 0.01, costlyDraft, linearVerify, 5, 5},
	} {
		if k := ChooseK(c.cfg, c.alpha, c.draft, c.verify); k < c.lo || k > c.hi {
			t.Errorf("%s: k=%d, want %d..%d", c.name, k, c.lo, c.hi)
		}
	}
}

// geometric simulates a verify step: draft tokens kept with probability
// alpha until the first rejection.
func geometric(r *rand.Rand, alpha float64, k int) int {
	a := 0
	for a < k && r.Float64() < alpha {
		a++
	}
	return a
}

func TestAcceptanceConverges(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	a := NewAcceptance(KConfig{})
	if a.Alpha() != DefaultAlpha0 {
		t.Fatalf("prior alpha %v, want %v", a.Alpha(), DefaultAlpha0)
	}
	mean := func(alpha float64, k, steps, tail int) float64 {
		var s float64
		for i := range steps {
			a.Observe(k, geometric(r, alpha, k))
			if i >= steps-tail {
				s += a.Alpha()
			}
		}
		return s / float64(tail)
	}
	if got := mean(0.75, 4, 2000, 1000); math.Abs(got-0.75) > 0.03 {
		t.Errorf("alpha 0.75: estimate %v", got)
	}
	// It tracks a change within a few dozen steps.
	if got := mean(0.2, 4, 60, 20); math.Abs(got-0.2) > 0.08 {
		t.Errorf("after a drop to 0.2: estimate %v", got)
	}
	if got := mean(0.95, 8, 2000, 1000); math.Abs(got-0.95) > 0.02 {
		t.Errorf("alpha 0.95: estimate %v", got)
	}
	if a.Proposed == 0 || a.Accepted > a.Proposed || a.Pos.Proposed[0] != 4060 || a.Pos.Proposed[7] != 2000 {
		t.Errorf("totals: proposed %d accepted %d, per position %v", a.Proposed, a.Accepted, a.Pos.Proposed)
	}
	for i := 1; i < MaxK; i++ {
		if a.Pos.Accepted[i] > a.Pos.Accepted[i-1] {
			t.Fatalf("acceptance at position %d exceeds position %d", i, i-1)
		}
	}
	var zero Acceptance // usable without NewAcceptance
	zero.Observe(2, 2)
	if zero.Alpha() <= DefaultAlpha0 {
		t.Errorf("zero Acceptance after a full acceptance: %v", zero.Alpha())
	}
}

func TestCostModel(t *testing.T) {
	var m CostModel
	if m.VerifyCost(4) <= 0 || m.DraftCost(4) <= 0 || m.DraftCost(4) >= m.VerifyCost(4) {
		t.Fatalf("unmeasured costs: verify %v draft %v", m.VerifyCost(4), m.DraftCost(4))
	}
	ms := func(x float64) time.Duration { return time.Duration(x * float64(time.Millisecond)) }
	for range 3 {
		m.ObserveVerify(1, ms(10))
		m.ObserveVerify(9, ms(12))
		m.ObserveVerify(64, ms(20))
		m.ObserveVerify(128, ms(30))
	}
	for _, c := range []struct {
		n    int
		want float64
	}{
		{1, 10}, {5, 11}, {9, 12}, {0, 10}, {96, 25}, {128, 30}, {256, 30 + 128*10.0/64},
	} {
		if got := m.VerifyCost(c.n) * 1e3; math.Abs(got-c.want) > 1e-6 {
			t.Errorf("VerifyCost(%d) = %vms, want %v", c.n, got, c.want)
		}
	}
	if got := m.DraftCost(9) * 1e3; math.Abs(got-1.2) > 1e-6 {
		t.Errorf("unmeasured DraftCost(9) = %vms, want 0.1 x verify = 1.2", got)
	}
	// A draft measured only on prompts (64 rows at 2 ms against the
	// target's 20 ms) is priced at that ratio below them, not flat at the
	// prompt's cost.
	m.ObserveDraft(64, ms(2))
	if got := m.DraftCost(9) * 1e3; math.Abs(got-1.2) > 1e-6 {
		t.Errorf("DraftCost(9) measured on a 64-row prompt = %vms, want 0.1 x verify = 1.2", got)
	}
	// One slow prompt reading (20 ms, a stall) makes the draft prefill at
	// 0.55x the target: until a draft step is measured it is priced at
	// the prior, so it gets tried (the ratio, 5.5 ms against a 10 ms
	// target step, once kept a run from ever drafting).
	m.ObserveDraft(64, ms(20))
	if got := m.DraftCost(1) * 1e3; math.Abs(got-1) > 1e-6 {
		t.Errorf("DraftCost(1) of a draft that prefilled at 0.55x the target = %vms, want the prior 0.1 x 10", got)
	}
	// A prior of the models' size ratio, 1 for a draft as big as the
	// target: then the measured ratio prices it.
	m.DraftPrior = 1
	if got := m.DraftCost(1) * 1e3; math.Abs(got-5.5) > 1e-6 {
		t.Errorf("DraftCost(1) with prior 1 = %vms, want the measured ratio 5.5", got)
	}
	m.DraftPrior = 0
	m.ObserveDraft(1, ms(6))
	if got := m.DraftCost(1) * 1e3; got != 6 {
		t.Errorf("DraftCost(1) once measured = %vms, want 6", got)
	}
	// More rows never cost less: a 2-row step measured while the machine
	// was busy (13 ms) floors a 6-row one measured while idle (9 ms), so
	// speculation with no acceptance cannot look cheaper than plain steps.
	m = CostModel{}
	m.ObserveVerify(2, ms(13))
	m.ObserveVerify(6, ms(9))
	m.ObserveVerify(64, ms(20))
	for _, n := range []int{2, 4, 6, 9} {
		if got := m.VerifyCost(n) * 1e3; got < 13 {
			t.Errorf("VerifyCost(%d) = %vms, below the 2-row step's 13", n, got)
		}
	}
	if got := m.VerifyCost(64) * 1e3; got != 20 {
		t.Errorf("VerifyCost(64) = %vms, want 20", got)
	}
	// ... but only while the busy reading is fresh. Plain one-row steps go
	// on being measured, the 2-row size is no longer chosen: once its
	// reading is costStale observations old it floors nothing, and an
	// unmeasured 4-row verify is priced as the one-row step again, so it
	// gets tried and measured.
	m = CostModel{}
	m.ObserveVerify(2, ms(40))
	m.ObserveVerify(128, ms(300))
	m.ObserveVerify(1, ms(10))
	if got := m.VerifyCost(4) * 1e3; got < 40 {
		t.Errorf("VerifyCost(4) = %vms with a fresh 40 ms 2-row reading", got)
	}
	for range costStale {
		m.ObserveVerify(1, ms(10))
	}
	m.ObserveVerify(128, ms(300))
	if got := m.VerifyCost(4) * 1e3; got != 10 {
		t.Errorf("VerifyCost(4) = %vms after the 2-row reading went stale, want the one-row 10", got)
	}
	if got := m.VerifyCost(2) * 1e3; got != 10 {
		t.Errorf("VerifyCost(2) = %vms, want 10: the fresh one-row reading prices it, not its own stale one", got)
	}
	// A stale draft step is priced like an unmeasured one: at the prompt
	// ratio.
	m.ObserveDraft(1, ms(30))
	for range costStale {
		m.ObserveDraft(128, ms(6))
	}
	if got := m.DraftCost(1) * 1e3; math.Abs(got-6.0/300*10) > 1e-6 {
		t.Errorf("DraftCost(1) = %vms after its 30 ms reading went stale, want %v", got, 6.0/300*10)
	}
	// One stall among steady readings moves the average by little; a
	// lasting change takes over.
	m = CostModel{}
	for range 8 {
		m.ObserveVerify(4, ms(10))
	}
	m.ObserveVerify(4, ms(200))
	if got := m.VerifyCost(4) * 1e3; got > 10+(20-10)/9.0+1e-9 {
		t.Errorf("VerifyCost(4) = %vms after one 200 ms stall among 10 ms readings, want at most %v", got, 10+(20-10)/9.0)
	}
	for range 50 {
		m.ObserveVerify(4, ms(30))
	}
	if got := m.VerifyCost(4) * 1e3; got < 29 {
		t.Errorf("VerifyCost(4) = %vms after 50 readings of 30 ms, want about 30", got)
	}
	m = CostModel{}
	m.ObserveVerify(9, ms(12))
	m.ObserveDraft(4, ms(2))
	if got := m.DraftCost(8) * 1e3; got != 2 {
		t.Errorf("DraftCost(8) with one measurement = %vms, want flat 2", got)
	}
	// A running average: a changed cost takes over.
	for range 100 {
		m.ObserveDraft(4, ms(3))
	}
	if got := m.DraftCost(4) * 1e3; math.Abs(got-3) > 1e-3 {
		t.Errorf("DraftCost(4) after the cost moved = %vms, want 3", got)
	}
}

type fakeCosts struct{ verifyBase, perToken, draftStep float64 }

func (f fakeCosts) VerifyCost(n int) float64 { return f.verifyBase + f.perToken*float64(n) }
func (f fakeCosts) DraftCost(int) float64    { return f.draftStep }

func TestBatchChooser(t *testing.T) {
	var b BatchChooser
	cfg := KConfig{}
	memBound := fakeCosts{10e-3, 0.05e-3, 0.5e-3}
	seqs := []BatchSeq{
		{Alpha: 0.9, Limit: 8, Model: true},
		{Alpha: 0.05, Limit: 8, Model: true},
		{Alpha: 0.85, Limit: 2, Model: false},
		{Alpha: 0.02, Limit: 8, Model: false},
		{Alpha: 0.9, Limit: 0}, // no proposal this step
	}
	rate := b.Choose(cfg, seqs, memBound)
	if seqs[0].K < 4 || seqs[2].K != 2 || seqs[1].K != 0 || seqs[3].K != 0 || seqs[4].K != 0 {
		t.Errorf("mixed batch: ks %v", ks(seqs))
	}
	if plain := 5 / memBound.VerifyCost(5); rate <= plain {
		t.Errorf("chosen rate %v not above plain decode %v", rate, plain)
	}
	// Compute-bound target: nobody speculates.
	b.Choose(cfg, seqs, fakeCosts{1e-3, 5e-3, 0})
	for _, s := range seqs {
		if s.K != 0 {
			t.Fatalf("compute-bound: ks %v, want all 0", ks(seqs))
		}
	}
	// Fixed: everyone gets min(Fixed, Limit).
	b.Choose(KConfig{Fixed: 3}, seqs, memBound)
	if got := ks(seqs); got != [5]int{3, 3, 2, 3, 0} {
		t.Errorf("fixed: ks %v", got)
	}
	var costs Costs = memBound // the interface conversion would be the test's allocation
	if n := testing.AllocsPerRun(10, func() { b.Choose(cfg, seqs, costs) }); n != 0 {
		t.Errorf("Choose: %v allocs/op", n)
	}
}

// MinGain: a batch whose best k promises a few per cent over plain decoding
// speculates without a margin and not with one; a large gain passes both.
func TestBatchChooserMinGain(t *testing.T) {
	var b BatchChooser
	// 10 ms a pass plus 2 ms a row, free drafts, 4 sequences: plain 4
	// tokens / 18 ms; k = 1 at alpha 0.53: 4*1.53 tokens / 26 ms, 1.06
	// times the plain rate.
	costs := fakeCosts{10e-3, 2e-3, 0}
	batch := func(alpha float64) []BatchSeq {
		s := make([]BatchSeq, 4)
		for i := range s {
			s[i] = BatchSeq{Alpha: alpha, Limit: 8, Model: true}
		}
		return s
	}
	spec := func(seqs []BatchSeq) bool {
		for _, s := range seqs {
			if s.K > 0 {
				return true
			}
		}
		return false
	}
	plain := 4 / costs.VerifyCost(4)
	seqs := batch(0.53)
	if rate := b.Choose(KConfig{KMax: 1}, seqs, costs); !spec(seqs) || rate < 1.03*plain || rate > 1.1*plain {
		t.Fatalf("no margin: ks %v, rate %.1f vs plain %.1f: want speculation at a 3-10 %% gain", ks(seqs), rate, plain)
	}
	if rate := b.Choose(KConfig{KMax: 1, MinGain: 0.1}, seqs, costs); spec(seqs) || rate != plain {
		t.Errorf("margin 0.1: ks %v, rate %.1f vs plain %.1f: want no speculation", ks(seqs), rate, plain)
	}
	seqs = batch(0.99)
	if b.Choose(KConfig{MinGain: 0.1}, seqs, fakeCosts{10e-3, 0.05e-3, 0.5e-3}); !spec(seqs) {
		t.Errorf("margin 0.1, memory-bound, alpha 0.99: ks %v, want speculation", ks(seqs))
	}
	if k := ChooseK(KConfig{KMax: 1, MinGain: 0.1}, 0.53, func(int) float64 { return 0 },
		func(k int) float64 { return costs.VerifyCost(4 * (k + 1)) }); k != 0 {
		t.Errorf("ChooseK with margin 0.1 at a 6 %% gain: k = %d, want 0", k)
	}
}

func ks(seqs []BatchSeq) (out [5]int) {
	for i := range min(len(out), len(seqs)) {
		out[i] = seqs[i].K
	}
	return out
}

func TestKConfigValidate(t *testing.T) {
	for _, c := range []struct {
		c  KConfig
		ok bool
	}{
		{KConfig{}, true},
		{KConfig{KMin: 2, KMax: 4, Fixed: 3, Alpha0: 0.7, Decay: 0.8}, true},
		{KConfig{KMin: 5, KMax: 3}, false},
		{KConfig{KMax: MaxK + 1}, false},
		{KConfig{Fixed: -1}, false},
		{KConfig{Alpha0: 1}, false},
		{KConfig{Decay: 1.5}, false},
		{KConfig{MinGain: -0.1}, false},
		{KConfig{MinGain: 0.2}, true},
	} {
		if err := c.c.Validate(); (err == nil) != c.ok {
			t.Errorf("%+v: Validate() = %v, want ok=%v", c.c, err, c.ok)
		}
	}
}

func TestDraftMayPay(t *testing.T) {
	cfg := KConfig{MinGain: 0.1}
	batch := func(n int, model bool) []BatchSeq {
		s := make([]BatchSeq, n)
		for i := range s {
			s[i] = BatchSeq{Alpha: 0.5, Limit: 8, Model: model, Slot: i}
		}
		return s
	}
	var ch BatchChooser
	for _, c := range []struct {
		name string
		cost fakeCosts
		seqs []BatchSeq
		want bool
	}{
		// Memory-bound verify, a draft step at 5 % of it: pays at 1 stream.
		{"cheap draft", fakeCosts{10e-3, 0.05e-3, 0.5e-3}, batch(1, true), true},
		// A draft step as dear as a verify: k+1 tokens cost at least k+1
		// verifies' worth, whatever the acceptance.
		{"draft as dear as the target", fakeCosts{10e-3, 0.05e-3, 10e-3}, batch(1, true), false},
		// Compute-bound verify (each row costs what a step costs alone):
		// more rows never come cheaper.
		{"compute-bound verify", fakeCosts{0, 1e-3, 0.1e-3}, batch(16, true), false},
		{"no sequence drafts with the model", fakeCosts{10e-3, 0.05e-3, 0.5e-3}, batch(4, false), false},
	} {
		for _, streams := range []bool{false, true} {
			cfg.Streams = streams
			if got := ch.DraftMayPay(cfg, c.seqs, c.cost); got != c.want {
				t.Errorf("%s (streams %v): DraftMayPay = %v, want %v", c.name, streams, got, c.want)
			}
		}
	}
	cfg.Streams = false
	if !ch.DraftMayPay(KConfig{Fixed: 4}, batch(1, true), fakeCosts{10e-3, 0.05e-3, 10e-3}) {
		t.Error("fixed k: the draft must be kept in step")
	}
	// A verify that is flat up to 4 rows and steep beyond: one drafting
	// sequence pays alone, but not next to a sequence whose own k or
	// prediction commits 4 rows.
	cliff := cliffCosts{flat: 4, step: 10e-3, extra: 100e-3, draft: 0.1e-3}
	one := batch(1, true)
	forced := append(batch(1, true), BatchSeq{Fixed: 3, Slot: 1})
	if !ch.DraftMayPay(cfg, one, cliff) || ch.DraftMayPay(cfg, forced, cliff) {
		t.Errorf("cliff: may pay alone %v (want true), next to a forced sequence %v (want false)",
			ch.DraftMayPay(cfg, one, cliff), ch.DraftMayPay(cfg, forced, cliff))
	}
	for i, s := range forced {
		if s.K != 0 {
			t.Errorf("DraftMayPay set K of sequence %d to %d", i, s.K)
		}
	}
}

// cliffCosts: a verify of up to flat rows costs step, each row beyond
// costs extra more.
type cliffCosts struct {
	flat               int
	step, extra, draft float64
}

func (c cliffCosts) VerifyCost(n int) float64 { return c.step + c.extra*float64(max(n-c.flat, 0)) }
func (c cliffCosts) DraftCost(int) float64    { return c.draft }

func TestUBatches(t *testing.T) {
	for _, c := range []struct {
		slots, rows []int
		nu          int
		want        []int
	}{
		{[]int{0, 1, 2, 3}, []int{1, 1, 1, 1}, 0, []int{4}},
		{[]int{0, 1, 2, 3}, []int{2, 2, 2, 2}, 0, []int{8}},
		// Unequal drafts: one ubatch of a row each, then each longer
		// sequence alone (its neighbours have nothing left).
		{[]int{0, 1, 2, 3}, []int{2, 1, 2, 1}, 0, []int{4, 1, 1}},
		{[]int{0, 1, 2, 3}, []int{3, 3, 1, 1}, 0, []int{4, 4}},
		// A gap in the ids breaks the run.
		{[]int{0, 1, 3}, []int{1, 1, 1}, 0, []int{2, 1}},
		// A prefill chunk beside two decodes.
		{[]int{0, 1, 2}, []int{1, 1, 128}, 0, []int{3, 127}},
		// n_ubatch caps rows (and sequences) per ubatch.
		{[]int{0, 1, 2, 3}, []int{3, 3, 3, 3}, 8, []int{8, 4}},
		{[]int{0}, []int{300}, 128, []int{128, 128, 44}},
		{nil, nil, 0, nil},
	} {
		rows := slices.Clone(c.rows)
		if got := UBatches(c.slots, rows, c.nu, nil); !slices.Equal(got, c.want) {
			t.Errorf("UBatches(%v, %v, %d) = %v, want %v", c.slots, c.rows, c.nu, got, c.want)
		}
	}
}

// With per-sequence streams a verify in which only some sequences draft is
// several ubatches, each a weight pass: on a memory-bound target the
// chooser lets the whole batch draft instead of the two sure sequences it
// picks when a decode is one ubatch, whatever order the slots are in.
func TestBatchChooserStreams(t *testing.T) {
	var b BatchChooser
	memBound := fakeCosts{10e-3, 0.05e-3, 0.5e-3}
	mk := func() []BatchSeq {
		return []BatchSeq{
			{Alpha: 0.9, Limit: 8, Model: true, Slot: 2},
			{Alpha: 0.1, Limit: 8, Model: true, Slot: 0},
			{Alpha: 0.9, Limit: 8, Model: true, Slot: 3},
			{Alpha: 0.1, Limit: 8, Model: true, Slot: 1},
		}
	}
	seqs := mk()
	b.Choose(KConfig{}, seqs, memBound)
	if got := ks(seqs); got != [5]int{8, 0, 8, 0, 0} {
		t.Errorf("one ubatch per decode: ks %v, want the two sure sequences at 8", got)
	}
	seqs = mk()
	b.Choose(KConfig{Streams: true}, seqs, memBound)
	if got := ks(seqs); got[0] == 0 || got[0] != got[1] || got[1] != got[2] || got[2] != got[3] {
		t.Errorf("streams: ks %v, want every sequence at one k", got)
	}
	var costs Costs = memBound
	seqs = mk()
	if n := testing.AllocsPerRun(10, func() { b.Choose(KConfig{Streams: true}, seqs, costs) }); n != 0 {
		t.Errorf("Choose with streams: %v allocs/op", n)
	}
}
