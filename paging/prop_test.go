package paging

import (
	"fmt"
	"math/rand"
	"testing"
)

// The property test drives an Allocator and a fakeKV through random
// admit / grow (prefill, decode, verify) / trim (rollback) / commit / free
// (finish, preempt) / re-admit sequences and checks after every operation
// that paging's view and the modelled llama.cpp cells agree.

type chooser interface {
	Intn(n int) int
}

type tseq struct {
	id        SeqID
	toks      []int32 // token at each position (prompt, then generated)
	promptLen int
	committed int
}

type harness struct {
	tb      testing.TB
	a       *Allocator
	kv      *fakeKV
	r       chooser
	run     []*tseq
	waiting [][]int32       // histories of preempted sequences
	zombie  map[int][]int32 // slot → history when it was freed
	bases   [][]int32
	vocab   int
	nOps    int
}

func newHarness(tb testing.TB, cfg Config, r chooser) *harness {
	cfg = cfg.WithDefaults()
	kv := newFakeKV(cfg.NumBlocks*cfg.BlockSize, cfg.NumSlots)
	kv.local = cfg.SlotLocal
	a, err := New(cfg, kv)
	if err != nil {
		tb.Fatal(err)
	}
	h := &harness{tb: tb, a: a, kv: kv, r: r, zombie: map[int][]int32{}, vocab: 3}
	// A few shared "system prompts"; small vocabularies make equal blocks
	// (and thus duplicate commits and hits on generated text) common.
	for i := 0; r != nil && i < 3; i++ {
		base := make([]int32, cfg.NumBlocks*cfg.BlockSize/2+1)
		for j := range base {
			base[j] = int32(r.Intn(h.vocab))
		}
		h.bases = append(h.bases, base)
	}
	return h
}

func (h *harness) fatalf(format string, args ...any) {
	h.tb.Helper()
	h.tb.Fatalf("op %d: %s", h.nOps, fmt.Sprintf(format, args...))
}

func (h *harness) pick() (int, *tseq) {
	if len(h.run) == 0 {
		return -1, nil
	}
	i := h.r.Intn(len(h.run))
	return i, h.run[i]
}

func (h *harness) step() {
	h.nOps++
	switch op := h.r.Intn(100); {
	case op < 18:
		h.admit()
	case op < 50:
		h.grow()
	case op < 65:
		h.trim()
	case op < 82:
		h.commit()
	default:
		h.free()
	}
	h.check()
}

func (h *harness) admit() {
	var prompt []int32
	fromWaiting := len(h.waiting) > 0 && h.r.Intn(3) == 0
	if fromWaiting {
		prompt = h.waiting[0]
	} else {
		base := h.bases[h.r.Intn(len(h.bases))]
		prompt = append([]int32(nil), base[:h.r.Intn(len(base)+1)]...)
		for n := h.r.Intn(2*h.a.BlockSize() + 1); n > 0; n-- {
			prompt = append(prompt, int32(h.r.Intn(h.vocab)))
		}
	}
	p := h.a.Probe(prompt)
	st := h.a.Stats()
	id, cached, ok := h.a.Admit(prompt)
	if ok != p.Slot {
		h.fatalf("Admit ok=%v, Probe said slot=%v", ok, p.Slot)
	}
	if !ok {
		if got := h.a.Stats(); got != st {
			h.fatalf("failed Admit changed stats: %+v → %+v", st, got)
		}
		return
	}
	if fromWaiting {
		h.waiting = h.waiting[1:]
	}
	bs := h.a.BlockSize()
	switch {
	case cached != p.Cached:
		h.fatalf("Admit cached %d, Probe %d", cached, p.Cached)
	case cached%bs != 0:
		h.fatalf("cached %d not a multiple of %d", cached, bs)
	case len(prompt) > 0 && cached >= len(prompt):
		h.fatalf("cached %d of a %d-token prompt", cached, len(prompt))
	case h.a.Len(id) != cached:
		h.fatalf("Len %d after Admit with cached %d", h.a.Len(id), cached)
	case h.a.FreeBlocks() != p.FreeBlocks:
		h.fatalf("FreeBlocks %d after Admit, Probe said %d", h.a.FreeBlocks(), p.FreeBlocks)
	}
	for _, q := range h.run {
		if q.id == id {
			h.fatalf("Admit returned running seq %d", id)
		}
	}
	delete(h.zombie, int(id))
	h.run = append(h.run, &tseq{id: id, toks: prompt, promptLen: len(prompt), committed: cached})
}

func (h *harness) grow() {
	_, q := h.pick()
	if q == nil {
		return
	}
	bs := h.a.BlockSize()
	l := h.a.Len(q.id)
	var n int
	if l < q.promptLen && h.r.Intn(4) != 0 {
		n = 1 + h.r.Intn(q.promptLen-l) // a prefill chunk
	} else {
		n = 1 + h.r.Intn(bs+2) // a decode or a verify of k+1
	}
	need, avail := h.a.BlocksFor(l, n), h.a.FreeBlocks()
	missing := h.a.Grow(q.id, n)
	if need > avail {
		if missing != need-avail || h.a.Len(q.id) != l {
			h.fatalf("Grow(%d) with %d needed, %d available: missing %d, Len %d→%d", n, need, avail, missing, l, h.a.Len(q.id))
		}
		return
	}
	if missing != 0 || h.a.Len(q.id) != l+n {
		h.fatalf("Grow(%d) with %d needed, %d available: missing %d, Len %d→%d", n, need, avail, missing, l, h.a.Len(q.id))
	}
	for len(q.toks) < l+n {
		q.toks = append(q.toks, int32(h.r.Intn(h.vocab)))
	}
	pc := prefixContents(q.toks[:l+n])
	for pos := l; pos < l+n; pos++ {
		if err := h.kv.decode(int32(q.id), int32(pos), pc[pos]); err != nil {
			h.fatalf("%v", err)
		}
	}
}

func (h *harness) trim() {
	_, q := h.pick()
	if q == nil {
		return
	}
	l := h.a.Len(q.id)
	var n int
	if h.r.Intn(8) == 0 {
		n = h.r.Intn(l + 1) // below what was committed: rare but allowed
	} else {
		n = q.committed + h.r.Intn(l-q.committed+1)
	}
	kept := h.a.Trim(q.id, n)
	bs := h.a.BlockSize()
	if kept != n && (n >= q.committed || kept > n || kept%bs != 0 || n-kept >= bs) {
		h.fatalf("Trim(%d) with %d committed kept %d", n, q.committed, kept)
	}
	if got := h.a.Len(q.id); got != min(kept, l) {
		h.fatalf("Len %d after Trim kept %d", got, kept)
	}
	// Rejected tokens are replaced by whatever comes next; the prompt stays.
	q.toks = q.toks[:max(kept, q.promptLen)]
	q.committed = min(q.committed, kept)
}

func (h *harness) commit() {
	_, q := h.pick()
	if q == nil {
		return
	}
	l := h.a.Len(q.id)
	c := q.committed + h.r.Intn(l-q.committed+1)
	h.a.Commit(q.id, q.toks[:c])
	q.committed = c
}

func (h *harness) free() {
	i, q := h.pick()
	if q == nil {
		return
	}
	hist := append([]int32(nil), q.toks[:h.a.Len(q.id)]...)
	h.a.Free(q.id)
	h.run = append(h.run[:i], h.run[i+1:]...)
	h.zombie[int(q.id)] = hist
	if len(hist) > 0 && h.r.Intn(2) == 0 {
		h.waiting = append(h.waiting, hist) // preempted: comes back later
	}
}

// check compares the allocator with the modelled KV cells.
func (h *harness) check() {
	h.tb.Helper()
	a, kv := h.a, h.kv
	if err := a.CheckInvariants(); err != nil {
		h.fatalf("%v", err)
	}
	if kv.err != nil {
		h.fatalf("KV misuse: %v", kv.err)
	}
	st := a.Stats()
	bs := a.BlockSize()
	if st.Used+st.Cached+st.Free != st.Total || st.Running != len(h.run) {
		h.fatalf("stats %+v with %d running", st, len(h.run))
	}
	if kv.inUse() > (st.Used+st.Cached)*bs {
		h.fatalf("%d cells in use, only %d blocks used or cached", kv.inUse(), st.Used+st.Cached)
	}
	bySlot := map[int]*tseq{}
	for _, q := range h.run {
		bySlot[int(q.id)] = q
	}
	for z := range a.slots {
		owned := kv.owned[z]
		switch a.slots[z].state {
		case slotRunning:
			q := bySlot[z]
			if q == nil {
				h.fatalf("slot %d running in paging, not in the test", z)
			}
			l := a.Len(q.id)
			if len(owned) != l {
				h.fatalf("slot %d owns %d positions, Len %d", z, len(owned), l)
			}
			pc := prefixContents(q.toks[:l])
			for pos := 0; pos < l; pos++ {
				c, ok := owned[int32(pos)]
				if !ok {
					h.fatalf("slot %d lacks position %d of %d", z, pos, l)
				}
				if kv.cells[c].content != pc[pos] || kv.cells[c].pos != int32(pos) {
					h.fatalf("slot %d position %d: cell holds the KV of another prefix", z, pos)
				}
			}
		case slotZombie:
			hist := h.zombie[z]
			pc := prefixContents(hist)
			want := 0
			for i, b := range a.slots[z].table {
				if b < 0 {
					continue
				}
				for pos := i * bs; pos < (i+1)*bs; pos++ {
					want++
					c, ok := owned[int32(pos)]
					if !ok || kv.cells[c].content != pc[pos] {
						h.fatalf("zombie %d: held block %d, position %d missing or wrong", z, b, pos)
					}
				}
			}
			if len(owned) != want {
				h.fatalf("zombie %d owns %d positions, holds %d blocks' worth", z, len(owned), want)
			}
		case slotFree:
			if len(owned) != 0 {
				h.fatalf("free slot %d owns %d positions", z, len(owned))
			}
		}
	}
}

// drain frees every running sequence and checks the pool comes back.
func (h *harness) drain() {
	for len(h.run) > 0 {
		q := h.run[0]
		h.zombie[int(q.id)] = append([]int32(nil), q.toks[:h.a.Len(q.id)]...)
		h.a.Free(q.id)
		h.run = h.run[1:]
		h.check()
	}
	st := h.a.Stats()
	if st.Used != 0 || st.Running != 0 {
		h.fatalf("after draining: %+v", st)
	}
	if got, want := h.kv.inUse(), st.Cached*h.a.BlockSize(); got != want {
		h.fatalf("after draining: %d cells in use, %d cached blocks", got, want)
	}
	if !h.a.cfg.PrefixCache && (st.Cached != 0 || st.Zombies != 0) {
		h.fatalf("prefix cache off, yet %+v", st)
	}
}

func TestRandomOperations(t *testing.T) {
	configs := []Config{
		{BlockSize: 4, NumBlocks: 16, NumSlots: 4, PrefixCache: true},
		{BlockSize: 4, NumBlocks: 64, NumSlots: 8, PrefixCache: true},
		{BlockSize: 2, NumBlocks: 8, NumSlots: 2, PrefixCache: true},
		{BlockSize: 1, NumBlocks: 24, NumSlots: 3, PrefixCache: true},
		{BlockSize: 3, NumBlocks: 20, NumSlots: 6, PrefixCache: true},
		{BlockSize: 16, NumBlocks: 12, NumSlots: 4, PrefixCache: true},
		{BlockSize: 4, NumBlocks: 16, NumSlots: 1, PrefixCache: true},
		{BlockSize: 4, NumBlocks: 16, NumSlots: 4, PrefixCache: false},
		{BlockSize: 4, NumBlocks: 16, NumSlots: 4, PrefixCache: true, SlotLocal: true},
		{BlockSize: 2, NumBlocks: 40, NumSlots: 8, PrefixCache: true, SlotLocal: true},
		{BlockSize: 1, NumBlocks: 12, NumSlots: 3, PrefixCache: true, SlotLocal: true},
		{BlockSize: 4, NumBlocks: 16, NumSlots: 4, PrefixCache: false, SlotLocal: true},
	}
	steps := 3000
	if invariantsOn {
		steps = 1200 // every mutation already runs CheckInvariants: slow, thorough
	}
	if testing.Short() {
		steps = 500
	}
	for ci, cfg := range configs {
		for seed := int64(1); seed <= 6; seed++ {
			cfg := cfg
			if seed%2 == 0 {
				// A small cache budget, so Free evicts at once.
				cfg.MaxCachedBlocks = 1 + rand.New(rand.NewSource(seed*100+int64(ci))).Intn(min(cfg.NumBlocks, 6))
			}
			t.Run(fmt.Sprintf("cfg%d/seed%d/cached%d", ci, seed, cfg.WithDefaults().MaxCachedBlocks), func(t *testing.T) {
				h := newHarness(t, cfg, rand.New(rand.NewSource(seed)))
				for i := 0; i < steps; i++ {
					h.step()
				}
				h.drain()
				st := h.a.Stats()
				if cfg.PrefixCache && cfg.NumSlots > 1 && st.PrefixHits == 0 {
					t.Errorf("no prefix hit in %d steps: the test exercises too little (%+v)", steps, st)
				}
				if cfg.SlotLocal && cfg.PrefixCache && cfg.NumSlots > 1 && h.kv.copies == 0 {
					t.Errorf("SlotLocal: no stream copied from a running sequence in %d steps", steps)
				}
			})
		}
	}
}

// byteChooser turns fuzz input into choices; exhausted input chooses 0.
type byteChooser struct {
	data []byte
	i    int
}

func (b *byteChooser) Intn(n int) int {
	if b.i >= len(b.data) {
		return 0
	}
	v := int(b.data[b.i])
	b.i++
	return v % n
}

func FuzzOperations(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 20, 30, 40, 50, 60, 70, 80, 90})
	f.Add([]byte("admit grow trim commit free admit admit grow grow commit free free"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 {
			return
		}
		cfg := Config{
			BlockSize:   1 + int(data[0]%5),
			NumBlocks:   4 + int(data[1]%24),
			NumSlots:    1 + int(data[0]/5%4),
			PrefixCache: data[1] < 224,
			SlotLocal:   data[0]%7 == 3,
		}
		if data[0] >= 128 {
			cfg.MaxCachedBlocks = 1 + int(data[1]/24%4) // a small cache budget
		}
		r := &byteChooser{data: data, i: 2}
		h := newHarness(t, cfg, r)
		for r.i < len(data) {
			h.step()
		}
		h.drain()
	})
}
