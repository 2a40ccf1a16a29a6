package paging

import (
	"fmt"
	"strings"
	"testing"
)

// newLocal is an Allocator over per-slot KV streams (SlotLocal) with a
// fakeKV that fails on any Copy and logs every call.
func newLocal(t *testing.T, slots int) (*Allocator, *fakeKV) {
	t.Helper()
	const bs = 4
	kv := newFakeKV(64*bs, slots)
	kv.local = true
	kv.log = &strings.Builder{}
	a, err := New(Config{BlockSize: bs, NumBlocks: 64, NumSlots: slots, PrefixCache: true, SlotLocal: true, MaxCachedBlocks: 64}, kv)
	if err != nil {
		t.Fatal(err)
	}
	return a, kv
}

// run admits prompt, decodes it and n more tokens, commits all and frees it.
func run(t *testing.T, a *Allocator, kv *fakeKV, prompt []int32) (SeqID, int) {
	t.Helper()
	id, cached := start(t, a, kv, prompt)
	a.Commit(id, prompt)
	a.Free(id)
	if kv.err != nil {
		t.Fatal(kv.err)
	}
	return id, cached
}

func start(t *testing.T, a *Allocator, kv *fakeKV, prompt []int32) (SeqID, int) {
	t.Helper()
	id, cached, ok := a.Admit(prompt)
	if !ok {
		t.Fatalf("Admit(%v): no slot", prompt)
	}
	if a.Grow(id, len(prompt)-cached) != 0 {
		t.Fatal("Grow failed")
	}
	pc := prefixContents(prompt)
	for p := cached; p < len(prompt); p++ {
		if err := kv.decode(int32(id), int32(p), pc[p]); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.CheckInvariants(); err != nil {
		t.Fatal(err)
	}
	return id, cached
}

func seqToks(base int32, n int) []int32 {
	p := make([]int32, n)
	for i := range p {
		p[i] = base + int32(i)
	}
	return p
}

// A prompt that continues a finished one adopts that sequence's own slot:
// its cells are reused where they are, with no Copy.
func TestSlotLocalReturningPromptAdoptsItsSlot(t *testing.T) {
	a, kv := newLocal(t, 4)
	first := seqToks(100, 10)      // 2 full blocks + 2 tokens
	other := seqToks(500, 9)       // unrelated
	id0, _ := run(t, a, kv, first) // slot 0, zombie holding 2 blocks
	id1, _ := run(t, a, kv, other) // a free slot, not zombie 0
	if id1 == id0 {
		t.Fatalf("unrelated prompt took the zombie slot %d while slots were free", id0)
	}
	next := append(append([]int32(nil), first...), seqToks(900, 7)...)
	id2, cached := start(t, a, kv, next)
	if id2 != id0 || cached != 8 {
		t.Fatalf("continuation: slot %d cached %d, want slot %d cached 8", id2, cached, id0)
	}
	if strings.Contains(kv.log.String(), "copy") {
		t.Fatalf("Copy called with SlotLocal:\n%s", kv.log)
	}
	if st := a.Stats(); st.PrefixHits != 2 {
		t.Fatalf("stats %+v: want 2 hit blocks", st)
	}
}

// Among zombies the longest own match is adopted; a running sequence whose
// committed blocks match longer than any zombie is copied from (its whole
// stream, then the tail dropped), leaving the zombies as they were.
func TestSlotLocalLongestMatch(t *testing.T) {
	a, kv := newLocal(t, 4)
	base := seqToks(1, 20)
	short := append(append([]int32(nil), base[:8]...), seqToks(300, 5)...) // shares 2 blocks
	long := append(append([]int32(nil), base[:16]...), seqToks(400, 5)...) // shares 4 blocks
	// Both run at once, so neither adopts the other's slot.
	idShort, _ := start(t, a, kv, short)
	idLong, _ := start(t, a, kv, long)
	for _, x := range []struct {
		id SeqID
		p  []int32
	}{{idShort, short}, {idLong, long}} {
		a.Commit(x.id, x.p)
		a.Free(x.id)
	}
	running, cached := start(t, a, kv, base) // adopts the longest: the long one's slot
	if running != idLong || cached != 16 {
		t.Fatalf("base adopted slot %d (cached %d), want %d (longest match, 16)", running, cached, idLong)
	}
	if strings.Contains(kv.log.String(), "copy") {
		t.Fatalf("adopting copied:\n%s", kv.log)
	}
	// base runs with 4 committed (adopted) blocks; the short zombie holds
	// 2. A prompt sharing 3 blocks with base copies base's stream, into
	// the slot next to base's (the zombie's: contiguity first).
	kv.log.Reset()
	id, cached := start(t, a, kv, append(append([]int32(nil), base[:12]...), 7))
	if cached != 12 || id != idShort {
		t.Fatalf("second prompt: slot %d cached %d, want 12 copied from running %d into slot %d", id, cached, running, idShort)
	}
	if want := fmt.Sprintf("copy %d->%d [0,-1)\nremove slot=%d [12,end)\n", running, id, id); !strings.HasSuffix(kv.log.String(), want) {
		t.Fatalf("KV calls:\n%s\nwant them to end with:\n%s", kv.log, want)
	}
	if st := a.Stats(); st.Zombies != 0 || st.Running != 2 {
		t.Fatalf("stats %+v", st)
	}
	// Copied blocks are the new sequence's own: it grows, commits and is
	// freed like any other, and base is unaffected.
	if a.Grow(id, 3) != 0 {
		t.Fatal("Grow after copy failed")
	}
	a.Free(id)
	a.Free(running)
	if err := a.CheckInvariants(); err != nil {
		t.Fatal(err)
	}
	if kv.err != nil {
		t.Fatal(kv.err)
	}
}

// Unmatched prompts keep the running ids in consecutive runs: a gap between
// two running slots is filled first, even by a zombie.
func TestSlotLocalSlotChoiceKeepsRunsContiguous(t *testing.T) {
	a, kv := newLocal(t, 6)
	var ids []SeqID
	for i := 0; i < 3; i++ {
		id, _ := start(t, a, kv, seqToks(int32(10*i+1), 9))
		ids = append(ids, id)
	}
	if ids[0] != 0 || ids[1] != 1 || ids[2] != 2 {
		t.Fatalf("first slots %v, want 0 1 2", ids)
	}
	a.Commit(1, seqToks(11, 9))
	a.Free(1) // zombie 1 between running 0 and 2
	id, cached := start(t, a, kv, seqToks(700, 9))
	if id != 1 || cached != 0 {
		t.Fatalf("unmatched prompt took slot %d (cached %d); want the gap, slot 1", id, cached)
	}
	// No gap: extend the run at its lowest end, even with a zombie (0).
	a.Commit(0, seqToks(1, 9))
	a.Free(0) // zombie 0; running 1, 2
	id, _ = start(t, a, kv, seqToks(800, 9))
	if id != 0 {
		t.Fatalf("took slot %d, want 0 (extends the run 1-2 at its lowest end)", id)
	}
	if kv.err != nil {
		t.Fatal(kv.err)
	}
}
