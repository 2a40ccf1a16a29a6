package paging

import (
	"errors"
	"fmt"
)

// ErrInvariant wraps every violation CheckInvariants reports.
var ErrInvariant = errors.New("paging: invariant violated")

func (a *Allocator) checkAfter(op string) {
	if !invariantsOn {
		return
	}
	if err := a.CheckInvariants(); err != nil {
		panic(fmt.Sprintf("after %s: %v", op, err))
	}
}

// CheckInvariants verifies the whole state: every block is in exactly one of
// {referenced, free list, LRU}; reference counts equal table membership;
// counters match; cached blocks have a zombie holder whose table points at
// them, and number at most MaxCachedBlocks; prefix-table entries point at
// committed blocks with their own hash; slot states are consistent.
// O(blocks × slots); for tests and the `invariants` build tag.
func (a *Allocator) CheckInvariants() error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvariant, fmt.Sprintf(format, args...))
	}
	nb := a.cfg.NumBlocks
	bs := int(a.bs)
	refs := make([]int32, nb)
	running, zombies := 0, 0
	onStack := make([]int, len(a.slots))
	for i, s := range a.freeSlots {
		if s < 0 || int(s) >= len(a.slots) {
			return fail("free slot stack holds %d", s)
		}
		if i > 0 && a.freeSlots[i-1] < s {
			return fail("free slot stack not sorted: %d below %d", a.freeSlots[i-1], s)
		}
		onStack[s]++
	}
	heldBy := make([]int32, nb)
	for i := range heldBy {
		heldBy[i] = -1
	}
	for z := range a.slots {
		sl := &a.slots[z]
		switch sl.state {
		case slotFree:
			if onStack[z] != 1 || len(sl.table) != 0 || sl.held != 0 || sl.n != 0 {
				return fail("free slot %d: on stack %d times, table %d, held %d, n %d", z, onStack[z], len(sl.table), sl.held, sl.n)
			}
		case slotRunning:
			running++
			if onStack[z] != 0 || sl.held != 0 {
				return fail("running slot %d: on stack %d times, held %d", z, onStack[z], sl.held)
			}
			if len(sl.table) != a.ceilBlocks(int(sl.n)) {
				return fail("slot %d: %d positions but %d blocks", z, sl.n, len(sl.table))
			}
			if sl.nHashed < 0 || int(sl.nHashed)*bs > int(sl.n) {
				return fail("slot %d: %d committed blocks, %d positions", z, sl.nHashed, sl.n)
			}
			for i, b := range sl.table {
				if b < 0 || int(b) >= nb {
					return fail("slot %d table[%d] = %d", z, i, b)
				}
				if a.idx[b] != int32(i) {
					return fail("block %d at index %d of slot %d has idx %d", b, i, z, a.idx[b])
				}
				if a.indexed[b] && int32(i) >= sl.nHashed {
					return fail("block %d is in the prefix table but past slot %d's %d committed blocks", b, z, sl.nHashed)
				}
				if a.ref[b] > 1 && int32(i) >= sl.nHashed {
					return fail("shared block %d is past slot %d's %d committed blocks", b, z, sl.nHashed)
				}
				refs[b]++
			}
			var want uint64
			if sl.nHashed > 0 {
				want = a.hash[sl.table[sl.nHashed-1]]
			}
			if sl.lastHash != want {
				return fail("slot %d: lastHash %x, block %d's hash %x", z, sl.lastHash, sl.nHashed-1, want)
			}
		case slotZombie:
			zombies++
			if onStack[z] != 0 {
				return fail("zombie slot %d on the free stack", z)
			}
			held := int32(0)
			for i, b := range sl.table {
				if b < 0 {
					continue
				}
				held++
				if heldBy[b] >= 0 {
					return fail("block %d held by slots %d and %d", b, heldBy[b], z)
				}
				heldBy[b] = int32(z)
				if a.idx[b] != int32(i) || a.ref[b] != 0 || !a.indexed[b] || a.owner[b] != int32(z) || a.list[b] != inLRU {
					return fail("zombie %d table[%d] = block %d: idx %d ref %d indexed %v owner %d list %d",
						z, i, b, a.idx[b], a.ref[b], a.indexed[b], a.owner[b], a.list[b])
				}
			}
			if held != sl.held || held == 0 {
				return fail("zombie %d holds %d blocks, counts %d", z, held, sl.held)
			}
		default:
			return fail("slot %d state %d", z, sl.state)
		}
	}
	if running != a.running || zombies != a.zombies {
		return fail("counted %d running %d zombies, recorded %d %d", running, zombies, a.running, a.zombies)
	}
	if running+zombies+len(a.freeSlots) != len(a.slots) {
		return fail("%d running + %d zombies + %d free slots != %d", running, zombies, len(a.freeSlots), len(a.slots))
	}

	nFree := 0
	for b := a.freeHead; b >= 0; b = a.next[b] {
		if a.list[b] != inFree {
			return fail("block %d on the free list marked %d", b, a.list[b])
		}
		if nFree++; nFree > nb {
			return fail("free list cycles")
		}
	}
	nLRU := 0
	for b, p := a.lruHead, int32(-1); b >= 0; p, b = b, a.next[b] {
		if a.list[b] != inLRU || a.prev[b] != p {
			return fail("LRU block %d: list %d prev %d want %d", b, a.list[b], a.prev[b], p)
		}
		if heldBy[b] < 0 {
			return fail("cached block %d has no zombie holder", b)
		}
		if nLRU++; nLRU > nb {
			return fail("LRU cycles")
		}
		if a.next[b] < 0 && a.lruTail != b {
			return fail("LRU tail %d, last block %d", a.lruTail, b)
		}
	}
	if nFree != a.nFree || nLRU != a.nCached {
		return fail("lists hold %d free %d cached, counters %d %d", nFree, nLRU, a.nFree, a.nCached)
	}
	if a.nCached > a.cfg.MaxCachedBlocks {
		return fail("%d cached blocks, budget %d", a.nCached, a.cfg.MaxCachedBlocks)
	}
	nIndexed := 0
	for b := 0; b < nb; b++ {
		if a.cfg.SlotLocal && a.ref[b] > 1 {
			return fail("block %d shared by %d slots with SlotLocal", b, a.ref[b])
		}
		if refs[b] != a.ref[b] {
			return fail("block %d: ref %d, %d tables hold it", b, a.ref[b], refs[b])
		}
		switch a.list[b] {
		case inNone:
			if a.ref[b] == 0 {
				return fail("block %d unreferenced and on no list", b)
			}
			o := a.owner[b]
			if o < 0 || int(o) >= len(a.slots) || a.slots[o].state != slotRunning ||
				int(a.idx[b]) >= len(a.slots[o].table) || a.slots[o].table[a.idx[b]] != int32(b) {
				return fail("block %d: owner %d does not hold it", b, o)
			}
		case inFree:
			if a.ref[b] != 0 || a.indexed[b] {
				return fail("free block %d: ref %d indexed %v", b, a.ref[b], a.indexed[b])
			}
		case inLRU:
			if a.ref[b] != 0 || !a.indexed[b] {
				return fail("cached block %d: ref %d indexed %v", b, a.ref[b], a.indexed[b])
			}
		}
		if a.indexed[b] {
			nIndexed++
			if !a.cfg.PrefixCache {
				return fail("block %d indexed with the prefix cache off", b)
			}
			if a.cfg.SlotLocal {
				// No table; every committed block is indexed.
			} else if got := a.prefix.get(a.hash[b]); got != int32(b) {
				return fail("block %d: prefix table maps its hash to %d", b, got)
			}
			if h := a.hashFn(a.parent[b], a.toks[b*bs:(b+1)*bs]); h != a.hash[b] {
				return fail("block %d: hash %x, tokens hash to %x", b, a.hash[b], h)
			}
		}
	}
	if a.cfg.PrefixCache && !a.cfg.SlotLocal && nIndexed != a.prefix.n {
		return fail("%d indexed blocks, prefix table holds %d", nIndexed, a.prefix.n)
	}
	if nb-a.nFree-a.nCached < 0 {
		return fail("negative used count")
	}
	return nil
}
