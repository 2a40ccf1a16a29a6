package paging

import "fmt"

// KVOps is how paging changes llama.cpp's KV cache. The scheduler implements
// it over both the target and the draft context (same slot ids, same
// positions) so the two caches stay in step. Calls are synchronous, made from
// inside Allocator methods, and must be applied before the next decode.
type KVOps interface {
	// Remove is llama_memory_seq_rm(slot, p0, p1): slot stops owning the
	// cells at positions [p0, p1); p1 < 0 means to the end. A cell no slot
	// owns is free.
	Remove(slot int32, p0, p1 int32)
	// Copy is llama_memory_seq_cp(src, dst, p0, p1): the cells src owns in
	// [p0, p1) become owned by dst too (shared, not copied, in a unified KV).
	// With Config.SlotLocal it is only called as Copy(src, dst, 0, -1), a
	// copy of src's whole stream into dst's empty one.
	Copy(src, dst int32, p0, p1 int32)
}

// SeqID identifies a running sequence. It is the llama.cpp seq_id (slot) the
// sequence's tokens must be decoded with.
type SeqID int32

// Stats is a snapshot for /metrics. Block counts satisfy
// Used + Cached + Free == Total.
type Stats struct {
	BlockSize int
	Total     int // blocks in the pool
	Used      int // blocks referenced by running sequences
	Cached    int // unreferenced blocks kept for the prefix cache (evictable)
	Free      int // blocks on the free list

	Slots   int // slot ids in use: Running + Zombies
	Running int // running sequences
	Zombies int // finished sequences' slots kept to hold cached blocks

	PrefixQueries uint64 // prompt blocks looked up by Admit
	PrefixHits    uint64 // of which found in the cache
	Evictions     uint64 // cached blocks evicted (LRU)
	StreamCopies  uint64 // SlotLocal: hits copied from a running sequence's stream
}

// Probe is what Admit would do now, computed without side effects.
type Probe struct {
	Cached     int  // prompt tokens Admit would reuse from the prefix cache
	Slot       bool // Admit would find a slot (ok == true)
	FreeBlocks int  // blocks Grow could take after that admission
}

const (
	slotFree uint8 = iota
	slotRunning
	slotZombie
)

const (
	inNone uint8 = iota // referenced by running sequences
	inFree              // on the free list
	inLRU               // cached, unreferenced, evictable
)

type slot struct {
	state    uint8
	held     int32  // zombie: cached blocks this slot's cells keep alive
	n        int32  // running: positions reserved
	nHashed  int32  // running: leading blocks committed (their hash is known)
	lastHash uint64 // running: chain hash of block nHashed-1 (0 if none)
	freedAt  uint64 // zombie: when it became one, for LRU choice of victim
	// table[i] is the block holding positions [i*B, (i+1)*B). Running: every
	// entry valid, len == ceil(n/B). Zombie: a held block or -1. The slice
	// keeps its capacity across sequences, so steady state never allocates.
	table []int32
}

// Allocator is the block pool, the per-sequence block tables and the prefix
// cache. It is not safe for concurrent use: the scheduler goroutine owns it.
type Allocator struct {
	cfg Config
	ops KVOps
	bs  int32

	// Per block (struct of arrays, indexed by block id).
	ref     []int32 // running tables holding the block
	owner   []int32 // ref > 0: a running slot holding it; cached: the holder slot
	idx     []int32 // its index in the tables that hold it (position / B)
	next    []int32 // free-list / LRU links
	prev    []int32
	list    []uint8
	indexed []bool   // present in the prefix table (hash → block)
	hash    []uint64 // chain hash, valid once committed
	parent  []uint64 // parent's chain hash
	toks    []int32  // block b's tokens at [b*B, (b+1)*B), valid once committed

	freeHead         int32
	lruHead, lruTail int32
	nFree, nCached   int

	prefix    hashTable
	slots     []slot
	freeSlots []int32 // stack of free slot ids
	running   int
	zombies   int
	clock     uint64

	hit    []int32 // scratch: blocks matched by the last lookup
	hitCnt []int32 // scratch: per slot, matched blocks it holds
	// SlotLocal: the zombie slot holding a.hit (-1: none), or the running
	// slot whose stream a.hit's blocks are to be copied from (copySrc, -1:
	// none), and the prompt's chain hashes (scratch, computed as far as
	// some slot matches).
	matchSlot int32
	copySrc   int32
	ph        []uint64

	queries, hits, evictions, copies uint64

	hashFn func(parent uint64, toks []int32) uint64 // chainHash; tests swap it
}

// New builds an Allocator for cfg (defaults filled). ops receives every KV
// change; it must not call back into the Allocator.
func New(cfg Config, ops KVOps) (*Allocator, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if ops == nil {
		return nil, fmt.Errorf("%w: nil KVOps", ErrConfig)
	}
	nb := cfg.NumBlocks
	a := &Allocator{
		cfg:     cfg,
		ops:     ops,
		bs:      int32(cfg.BlockSize),
		ref:     make([]int32, nb),
		owner:   make([]int32, nb),
		idx:     make([]int32, nb),
		next:    make([]int32, nb),
		prev:    make([]int32, nb),
		list:    make([]uint8, nb),
		indexed: make([]bool, nb),
		hash:    make([]uint64, nb),
		parent:  make([]uint64, nb),
		toks:    make([]int32, nb*cfg.BlockSize),
		lruHead: -1,
		lruTail: -1,
		slots:   make([]slot, cfg.NumSlots),
		hit:     make([]int32, 0, nb),
		hitCnt:  make([]int32, cfg.NumSlots),
		hashFn:  chainHash,
	}
	if cfg.SlotLocal {
		a.ph = make([]uint64, 0, nb)
	}
	if cfg.PrefixCache && !cfg.SlotLocal {
		a.prefix = newHashTable(nb)
	}
	// Free list in id order: block 0 is handed out first.
	a.freeHead = -1
	for b := int32(nb) - 1; b >= 0; b-- {
		a.owner[b] = -1
		a.pushFree(b)
	}
	// Slot stack: slot 0 on top.
	a.freeSlots = make([]int32, 0, cfg.NumSlots)
	for s := int32(cfg.NumSlots) - 1; s >= 0; s-- {
		a.freeSlots = append(a.freeSlots, s)
	}
	return a, nil
}

// Config returns the effective configuration (defaults filled).
func (a *Allocator) Config() Config { return a.cfg }

// BlockSize is B, the tokens per block.
func (a *Allocator) BlockSize() int { return int(a.bs) }

// Admit reserves a slot for a new sequence and reuses the longest cached
// prefix of prompt: cached tokens (a multiple of B, less than len(prompt), so
// at least the last prompt token is decoded again for its logits) are already
// in the new slot's KV, and Len(seq) == cached. The caller prefills
// prompt[cached:] with Grow and decodes. ok == false means no slot can be had
// now (every slot runs a sequence): backpressure, nothing changed.
//
// To get a slot when none is free, Admit takes over a zombie slot (the one
// holding most of the matched blocks, else the least recently freed) and
// evicts the cached blocks it holds that the prompt does not reuse.
func (a *Allocator) Admit(prompt []int32) (seq SeqID, cached int, ok bool) {
	m, lastHash := a.match(prompt)
	if a.copySrc >= 0 {
		return a.admitCopy(m, lastHash)
	}
	s, adopt := a.pickSlot(m)
	if s < 0 {
		return -1, 0, false
	}
	if a.cfg.PrefixCache && len(prompt) > 0 {
		a.queries += uint64((len(prompt) - 1) / int(a.bs))
		a.hits += uint64(m)
	}
	sl := a.claimSlot(s, adopt, m)
	if cap(sl.table) < m {
		sl.table = make([]int32, m, max(m, 16))
	}
	sl.table = sl.table[:m]

	// Reference the matched blocks; merge contiguous ranges of one source
	// into one Copy (and one Remove when the source was a zombie holder).
	var run struct {
		src    int32
		p0, p1 int32
		rm     bool
	}
	run.src = -1
	flush := func() {
		if run.src < 0 {
			return
		}
		a.ops.Copy(run.src, s, run.p0, run.p1)
		if run.rm {
			a.ops.Remove(run.src, run.p0, run.p1)
		}
		run.src = -1
	}
	for i := 0; i < m; i++ {
		b := a.hit[i]
		p0, p1 := int32(i)*a.bs, int32(i+1)*a.bs
		src, rm := a.owner[b], false
		if a.ref[b] == 0 {
			// Revive a cached block: it leaves the LRU and its holder.
			a.lruUnlink(b)
			a.nCached--
			h := &a.slots[src]
			h.held--
			if src == s {
				src = -1 // adopted: the cells are already ours
			} else {
				h.table[i] = -1
				rm = true
				if h.held == 0 {
					a.releaseSlot(src)
				}
			}
			a.owner[b] = s
		}
		a.ref[b]++
		sl.table[i] = b
		if src < 0 {
			flush()
			continue
		}
		if run.src == src && run.rm == rm && run.p1 == p0 {
			run.p1 = p1
			continue
		}
		flush()
		run.src, run.p0, run.p1, run.rm = src, p0, p1, rm
	}
	flush()
	sl.held = 0
	sl.n = int32(m) * a.bs
	sl.nHashed = int32(m)
	sl.lastHash = lastHash
	a.checkAfter("Admit")
	return SeqID(s), m * int(a.bs), true
}

// admitCopy is Admit for SlotLocal when a running sequence's stream holds a
// longer prefix of the prompt (m blocks, in a.hit) than any zombie: the new
// sequence takes a slot as an unmatched prompt would, gets a copy of the
// source's whole stream (llama.cpp copies between streams only whole) and
// drops it past the m blocks, which become its own new blocks with the
// source's tokens and hashes. With fewer than m blocks available it takes
// no prefix.
func (a *Allocator) admitCopy(m int, lastHash uint64) (SeqID, int, bool) {
	src := a.copySrc
	if a.nFree+a.nCached < m {
		m = 0
	}
	s, adopt := a.pickLocal(0)
	if s < 0 {
		return -1, 0, false
	}
	a.queries += uint64(len(a.ph)) // (len(prompt)-1)/B: matchLocal hashed them all
	a.hits += uint64(m)
	if m > 0 {
		a.copies++
	}
	sl := a.claimSlot(s, adopt, 0)
	sl.table = sl.table[:0]
	if m > 0 {
		a.ops.Copy(src, s, 0, -1)
		a.ops.Remove(s, int32(m)*a.bs, -1)
	}
	bs := int(a.bs)
	for i := 0; i < m; i++ {
		from := a.hit[i]
		b := a.take()
		a.ref[b] = 1
		a.owner[b] = s
		a.idx[b] = int32(i)
		a.list[b] = inNone
		copy(a.toks[int(b)*bs:int(b+1)*bs], a.toks[int(from)*bs:int(from+1)*bs])
		a.hash[b], a.parent[b] = a.hash[from], a.parent[from]
		a.indexed[b] = true
		sl.table = append(sl.table, b)
	}
	sl.held = 0
	sl.n = int32(m) * a.bs
	sl.nHashed = int32(m)
	sl.lastHash = 0
	if m > 0 {
		sl.lastHash = lastHash
	}
	a.checkAfter("Admit")
	return SeqID(s), m * bs, true
}

// claimSlot makes slot s (from pickSlot) run a new sequence. A free slot
// leaves the free stack. An adopted zombie keeps, of the blocks it holds,
// those at positions i < keep that are the matched a.hit[i]; the rest would
// collide with the new sequence's cells and are evicted (the slot is
// running first, so evicting its last held block does not free it).
func (a *Allocator) claimSlot(s int32, adopt bool, keep int) *slot {
	sl := &a.slots[s]
	if adopt {
		sl.state = slotRunning
		a.zombies--
		for i, b := range sl.table {
			if b >= 0 && (i >= keep || a.hit[i] != b) {
				a.evict(b)
			}
		}
	} else {
		a.takeFreeSlot(s)
		sl.state = slotRunning
	}
	a.running++
	return sl
}

// Probe reports what Admit(prompt) would do now, without side effects, so
// the scheduler can plan an admission (slot, cached tokens, blocks left for
// the first chunk) before committing to it. The prefix-cache counters are not
// touched.
func (a *Allocator) Probe(prompt []int32) Probe {
	m, _ := a.match(prompt)
	if a.copySrc >= 0 {
		if a.nFree+a.nCached < m {
			m = 0
		}
		return Probe{
			Cached:     m * int(a.bs),
			Slot:       len(a.freeSlots) > 0 || a.zombies > 0,
			FreeBlocks: a.nFree + a.nCached - m,
		}
	}
	revive := 0
	for _, b := range a.hit[:m] {
		if a.ref[b] == 0 {
			revive++
		}
	}
	return Probe{
		Cached:     m * int(a.bs),
		Slot:       len(a.freeSlots) > 0 || a.zombies > 0,
		FreeBlocks: a.nFree + a.nCached - revive,
	}
}

// Grow reserves n more positions for seq: Len(seq) becomes Len(seq)+n, with
// the blocks to hold them. Use it before every decode that appends to the
// sequence (a prefill chunk, a decode step, a verify of k+1 tokens). It is all
// or nothing: missing > 0 is how many blocks are short even after evicting
// every cached block, and then nothing changed (backpressure: shrink the
// request or preempt someone). Cached blocks are evicted LRU first, lazily,
// only when the free list is empty.
func (a *Allocator) Grow(seq SeqID, n int) (missing int) {
	sl := a.seq(seq)
	if n < 0 {
		panic(fmt.Sprintf("paging: Grow(%d, %d): negative n", seq, n))
	}
	need := a.ceilBlocks(int(sl.n)+n) - len(sl.table)
	if need > 0 {
		if avail := a.nFree + a.nCached; need > avail {
			return need - avail
		}
		for ; need > 0; need-- {
			b := a.take()
			a.ref[b] = 1
			a.owner[b] = int32(seq)
			a.idx[b] = int32(len(sl.table))
			a.list[b] = inNone
			sl.table = append(sl.table, b)
		}
	}
	sl.n += int32(n)
	a.checkAfter("Grow")
	return 0
}

// Trim keeps the first n positions of seq and drops the rest (rollback of
// rejected draft tokens): blocks past them return to the pool and
// ops.Remove(seq, kept, -1) drops the cells. n >= Len(seq) changes nothing.
// kept == n, except when n cuts into a committed block that another sequence
// shares (only possible when trimming below what was committed): such a block
// cannot take new tokens, so kept rounds down to its start.
func (a *Allocator) Trim(seq SeqID, n int) (kept int) {
	sl := a.seq(seq)
	if n < 0 {
		panic(fmt.Sprintf("paging: Trim(%d, %d): negative n", seq, n))
	}
	if n >= int(sl.n) {
		return int(sl.n)
	}
	keep := a.ceilBlocks(n)
	if n%int(a.bs) != 0 && int32(keep) <= sl.nHashed {
		// The last kept block is committed and will be overwritten from n on.
		b := sl.table[keep-1]
		if a.ref[b] > 1 {
			keep--
			n = keep * int(a.bs)
		} else if a.indexed[b] {
			a.unindex(b)
		}
	}
	for i := len(sl.table) - 1; i >= keep; i-- {
		b := sl.table[i]
		if a.unref(b, int32(seq)) {
			// Its cells go with the Remove below, so it cannot stay cached.
			if a.indexed[b] {
				a.unindex(b)
			}
			a.pushFree(b)
		}
	}
	sl.table = sl.table[:keep]
	if full := int32(n) / a.bs; sl.nHashed > full {
		sl.nHashed = full
		sl.lastHash = 0
		if full > 0 {
			sl.lastHash = a.hash[sl.table[full-1]]
		}
	}
	sl.n = int32(n)
	a.ops.Remove(int32(seq), int32(n), -1)
	a.checkAfter("Trim")
	return n
}

// Commit records seq's verified token history: tokens[i] is the token at
// position i, and the KV of every position < len(tokens) is computed in every
// cache KVOps covers (target and draft). Full blocks not yet committed get
// their chain hash and become prefix-cache hits for later prompts. Pass the
// whole history each time; blocks already committed are skipped, so the cost
// is per new full block. len(tokens) must not exceed Len(seq). Without
// PrefixCache, Commit does nothing.
func (a *Allocator) Commit(seq SeqID, tokens []int32) {
	sl := a.seq(seq)
	if len(tokens) > int(sl.n) {
		panic(fmt.Sprintf("paging: Commit(%d): %d tokens, only %d positions reserved", seq, len(tokens), sl.n))
	}
	if !a.cfg.PrefixCache {
		return
	}
	bs := int(a.bs)
	full := int32(len(tokens) / bs)
	for i := sl.nHashed; i < full; i++ {
		b := sl.table[i]
		t := tokens[int(i)*bs : int(i+1)*bs]
		h := a.hashFn(sl.lastHash, t)
		copy(a.toks[int(b)*bs:], t)
		a.hash[b], a.parent[b] = h, sl.lastHash
		if a.cfg.SlotLocal {
			// No table: prompts are matched against zombies' own blocks,
			// and every committed block is worth keeping for its slot.
			a.indexed[b] = true
		} else if a.prefix.get(h) < 0 {
			// An equal block already cached (two sequences computed the same
			// prefix) stays the cached one; this one is freed at release.
			a.prefix.put(h, b)
			a.indexed[b] = true
		}
		sl.lastHash = h
		sl.nHashed = i + 1
	}
	a.checkAfter("Commit")
}

// Free ends seq (finished, cancelled or preempted). Its blocks are released:
// those still referenced by other sequences stay with them; committed ones
// nobody references become cached, held by seq's slot, which then stays
// reserved (a zombie) until they are evicted or reused; the rest return to
// the free list. ops.Remove drops seq's cells at every other position. If
// more than MaxCachedBlocks are then cached, the least recently used are
// evicted: other zombies' blocks first, then seq's own deepest ones (Free is
// the only way a block becomes cached). seq must not be used afterwards; its
// SeqID may come back from a later Admit.
func (a *Allocator) Free(seq SeqID) {
	sl := a.seq(seq)
	s := int32(seq)
	// Deepest blocks first, so they are evicted before the prefix blocks
	// that more prompts share.
	for i := len(sl.table) - 1; i >= 0; i-- {
		b := sl.table[i]
		if !a.unref(b, s) {
			sl.table[i] = -1
			continue
		}
		if a.indexed[b] {
			a.owner[b] = s
			a.lruPush(b)
			a.nCached++
			sl.held++
		} else {
			a.pushFree(b)
			sl.table[i] = -1
		}
	}
	a.running--
	if sl.held == 0 {
		a.releaseSlot(s)
		a.ops.Remove(s, 0, -1)
		a.checkAfter("Free")
		return
	}
	sl.state = slotZombie
	a.zombies++
	sl.freedAt = a.clock
	a.clock++
	a.shrinkCache(s)
	start := -1
	for i, b := range sl.table {
		if b < 0 {
			if start < 0 {
				start = i
			}
		} else if start >= 0 {
			a.ops.Remove(s, int32(start)*a.bs, int32(i)*a.bs)
			start = -1
		}
	}
	if start >= 0 {
		a.ops.Remove(s, int32(start)*a.bs, -1)
		sl.table = sl.table[:start]
	}
	sl.n, sl.nHashed, sl.lastHash = 0, 0, 0
	a.checkAfter("Free")
}

// Len is the number of positions reserved for seq (by Admit's cached prefix
// and every Grow, minus every Trim).
func (a *Allocator) Len(seq SeqID) int { return int(a.seq(seq).n) }

// FreeBlocks is how many blocks Grow can still take: free plus evictable
// cached blocks.
func (a *Allocator) FreeBlocks() int { return a.nFree + a.nCached }

// BlocksFor is how many blocks Grow(seq, n) would take for a sequence
// holding have positions.
func (a *Allocator) BlocksFor(have, n int) int {
	return a.ceilBlocks(have+n) - a.ceilBlocks(have)
}

// Stats is a snapshot of the pool and the prefix-cache counters.
func (a *Allocator) Stats() Stats {
	nb := a.cfg.NumBlocks
	return Stats{
		BlockSize:     int(a.bs),
		Total:         nb,
		Used:          nb - a.nFree - a.nCached,
		Cached:        a.nCached,
		Free:          a.nFree,
		Slots:         a.running + a.zombies,
		Running:       a.running,
		Zombies:       a.zombies,
		PrefixQueries: a.queries,
		PrefixHits:    a.hits,
		Evictions:     a.evictions,
		StreamCopies:  a.copies,
	}
}

// --- internals ---

func (a *Allocator) seq(s SeqID) *slot {
	if s < 0 || int(s) >= len(a.slots) || a.slots[s].state != slotRunning {
		panic(fmt.Sprintf("paging: sequence %d is not running", s))
	}
	return &a.slots[s]
}

func (a *Allocator) ceilBlocks(n int) int { return (n + int(a.bs) - 1) / int(a.bs) }

// match walks the prefix cache along prompt's full blocks, leaving the hits
// in a.hit. At most (len(prompt)-1)/B blocks: the last token is always
// decoded again, for its logits.
func (a *Allocator) match(prompt []int32) (m int, lastHash uint64) {
	a.hit = a.hit[:0]
	a.matchSlot, a.copySrc = -1, -1
	if !a.cfg.PrefixCache || len(prompt) == 0 {
		return 0, 0
	}
	if a.cfg.SlotLocal {
		return a.matchLocal(prompt)
	}
	bs := int(a.bs)
	limit := (len(prompt) - 1) / bs
	var h uint64
	for i := 0; i < limit; i++ {
		t := prompt[i*bs : (i+1)*bs]
		nh := a.hashFn(h, t)
		b := a.prefix.get(nh)
		if b < 0 || a.parent[b] != h || a.idx[b] != int32(i) || !equal(a.toks[int(b)*bs:int(b+1)*bs], t) {
			break
		}
		a.hit = append(a.hit, b)
		h = nh
	}
	return len(a.hit), h
}

func equal(x, y []int32) bool {
	if len(x) != len(y) {
		return false
	}
	for i := range x {
		if x[i] != y[i] {
			return false
		}
	}
	return true
}

// matchLocal is match for SlotLocal: the zombie slot whose own leading
// blocks equal the prompt's longest (ties: the lowest slot id), left in
// a.hit and a.matchSlot; or, if a running sequence's committed blocks match
// longer still, those, with the running slot in a.copySrc (Admit copies its
// stream). The prompt's blocks are all hashed into a.ph.
// O(prompt blocks + slots × matched blocks).
func (a *Allocator) matchLocal(prompt []int32) (m int, lastHash uint64) {
	bs := int(a.bs)
	limit := (len(prompt) - 1) / bs
	a.ph = a.ph[:0]
	var parent uint64
	for n := 0; n < limit; n++ {
		parent = a.hashFn(parent, prompt[n*bs:(n+1)*bs])
		a.ph = append(a.ph, parent)
	}
	bestZ, nZ, bestR, nR := int32(-1), 0, int32(-1), 0
	for z := range a.slots {
		zs := &a.slots[z]
		var avail int // the slot's leading blocks that may match
		switch zs.state {
		case slotZombie:
			avail = len(zs.table)
		case slotRunning:
			avail = int(zs.nHashed)
		default:
			continue
		}
		n := 0
		for n < limit && n < avail {
			b := zs.table[n]
			if b < 0 || a.hash[b] != a.ph[n] || !equal(a.toks[int(b)*bs:int(b+1)*bs], prompt[n*bs:(n+1)*bs]) {
				break
			}
			n++
		}
		if zs.state == slotZombie && n > nZ {
			bestZ, nZ = int32(z), n
		} else if zs.state == slotRunning && n > nR {
			bestR, nR = int32(z), n
		}
	}
	switch {
	case nR > nZ:
		a.hit = append(a.hit, a.slots[bestR].table[:nR]...)
		a.copySrc = bestR
		return nR, a.ph[nR-1]
	case nZ > 0:
		a.hit = append(a.hit, a.slots[bestZ].table[:nZ]...)
		a.matchSlot = bestZ
		return nZ, a.ph[nZ-1]
	}
	return 0, 0
}

// pickSlot chooses the new sequence's slot given the m blocks in a.hit.
// A free slot, unless some zombie holds only matched blocks (adopting it
// costs no copy and loses no cache); with no free slot, the zombie holding
// most matched blocks, ties to the least recently freed. -1: none.
// SlotLocal: pickLocal.
func (a *Allocator) pickSlot(m int) (s int32, adopt bool) {
	if a.cfg.SlotLocal {
		return a.pickLocal(m)
	}
	if a.zombies == 0 {
		if len(a.freeSlots) == 0 {
			return -1, false
		}
		return a.freeSlots[len(a.freeSlots)-1], false
	}
	for _, b := range a.hit[:m] {
		if a.ref[b] == 0 {
			a.hitCnt[a.owner[b]]++
		}
	}
	best := int32(-1)
	if len(a.freeSlots) > 0 {
		for z := range a.slots {
			zs := &a.slots[z]
			if zs.state == slotZombie && a.hitCnt[z] == zs.held && (best < 0 || a.hitCnt[z] > a.hitCnt[best]) {
				best = int32(z)
			}
		}
	} else {
		for z := range a.slots {
			zs := &a.slots[z]
			if zs.state != slotZombie {
				continue
			}
			if best < 0 || a.hitCnt[z] > a.hitCnt[best] ||
				(a.hitCnt[z] == a.hitCnt[best] && zs.freedAt < a.slots[best].freedAt) {
				best = int32(z)
			}
		}
	}
	for _, b := range a.hit[:m] {
		if a.ref[b] == 0 {
			a.hitCnt[a.owner[b]] = 0
		}
	}
	if best >= 0 {
		return best, true
	}
	return a.freeSlots[len(a.freeSlots)-1], false
}

// pickLocal is pickSlot for SlotLocal: the zombie whose own blocks matched
// (m > 0). Otherwise, with sequences running, the free or zombie slot that
// leaves the running sequence ids in the fewest runs of consecutive ids
// (filling a gap between two running slots, then extending a run, then
// anywhere), the lowest id among equals: with per-sequence streams
// llama.cpp decodes each run as its own ubatch, another pass over the
// weights (decisions/0006), which costs more than a lost cache entry.
// With nothing running no choice splits a batch: the lowest free slot, else
// the least recently freed zombie, so caches live longest. -1: every slot
// runs a sequence.
func (a *Allocator) pickLocal(m int) (s int32, adopt bool) {
	if m > 0 {
		return a.matchSlot, true
	}
	best, bestScore := int32(-1), 0
	for z := range a.slots {
		zs := &a.slots[z]
		if zs.state == slotRunning {
			continue
		}
		score := 2 // runs added: 0 (fills a gap), 1 (extends a run) or 2
		if z > 0 && a.slots[z-1].state == slotRunning {
			score--
		}
		if z+1 < len(a.slots) && a.slots[z+1].state == slotRunning {
			score--
		}
		if a.running == 0 {
			score = 0
			if zs.state == slotZombie {
				score = 1
			}
		}
		if best < 0 || score < bestScore ||
			(a.running == 0 && score == 1 && bestScore == 1 && zs.freedAt < a.slots[best].freedAt) {
			best, bestScore = int32(z), score
		}
	}
	return best, best >= 0 && a.slots[best].state == slotZombie
}

// takeFreeSlot removes free slot s from the (sorted) free stack.
func (a *Allocator) takeFreeSlot(s int32) {
	n := len(a.freeSlots)
	if a.freeSlots[n-1] == s {
		a.freeSlots = a.freeSlots[:n-1]
		return
	}
	for i, f := range a.freeSlots {
		if f == s {
			copy(a.freeSlots[i:], a.freeSlots[i+1:])
			a.freeSlots = a.freeSlots[:n-1]
			return
		}
	}
	panic(fmt.Sprintf("paging: slot %d is not free", s))
}

// releaseSlot returns an empty slot to the free stack.
func (a *Allocator) releaseSlot(s int32) {
	sl := &a.slots[s]
	if sl.state == slotZombie {
		a.zombies--
	}
	sl.state = slotFree
	sl.table = sl.table[:0]
	sl.held, sl.n, sl.nHashed, sl.lastHash = 0, 0, 0, 0
	// Keep the stack sorted, lowest id on top: new sequences take the
	// lowest free slot, so running slots stay contiguous. With per-sequence
	// KV streams llama.cpp puts only consecutive sequence ids into one
	// ubatch (split_equal, sequential): every gap costs a graph compute.
	i := len(a.freeSlots)
	a.freeSlots = append(a.freeSlots, s)
	for i > 0 && a.freeSlots[i-1] < s {
		a.freeSlots[i] = a.freeSlots[i-1]
		i--
	}
	a.freeSlots[i] = s
}

// unref drops one reference of b held by running slot s; true if none is
// left. If s was the owner a Copy would read from, another holder takes over.
func (a *Allocator) unref(b, s int32) bool {
	a.ref[b]--
	if a.ref[b] > 0 {
		if a.owner[b] == s {
			a.owner[b] = a.findOwner(b, s)
		}
		return false
	}
	return true
}

func (a *Allocator) findOwner(b, except int32) int32 {
	i := int(a.idx[b])
	for z := range a.slots {
		zs := &a.slots[z]
		if int32(z) != except && zs.state == slotRunning && i < len(zs.table) && zs.table[i] == b {
			return int32(z)
		}
	}
	panic(fmt.Sprintf("paging: block %d has %d references but no running owner", b, a.ref[b]))
}

// take hands out a free block, evicting the least recently used cached
// block if the free list is empty. The caller has checked availability.
func (a *Allocator) take() int32 {
	if a.freeHead < 0 {
		a.evict(a.lruHead)
	}
	b := a.freeHead
	a.freeHead = a.next[b]
	a.nFree--
	a.list[b] = inNone
	return b
}

// shrinkCache evicts least recently used cached blocks until at most
// MaxCachedBlocks are cached. Called by Free once freeing's blocks are on
// the LRU (the most recent): a block freeing holds only leaves its table,
// since Free then removes freeing's cells at every position it does not
// hold. freeing keeps at least one block (MaxCachedBlocks >= 1), so it stays
// a zombie.
func (a *Allocator) shrinkCache(freeing int32) {
	for a.nCached > a.cfg.MaxCachedBlocks {
		b := a.lruHead
		if a.owner[b] != freeing {
			a.evict(b)
			continue
		}
		a.drop(b)
	}
}

// evict drops cached block b: its holder stops owning its cells, which frees
// them, and a holder left with nothing is a free slot again.
func (a *Allocator) evict(b int32) {
	i := a.idx[b]
	a.ops.Remove(a.owner[b], i*a.bs, (i+1)*a.bs)
	a.drop(b)
}

// drop is evict without the KV removal, which the caller makes.
func (a *Allocator) drop(b int32) {
	h := a.owner[b]
	i := a.idx[b]
	a.lruUnlink(b)
	a.nCached--
	a.unindex(b)
	a.evictions++
	hs := &a.slots[h]
	hs.table[i] = -1
	hs.held--
	if hs.held == 0 && hs.state == slotZombie {
		a.releaseSlot(h)
	}
	a.pushFree(b)
}

func (a *Allocator) unindex(b int32) {
	if !a.cfg.SlotLocal {
		a.prefix.del(a.hash[b])
	}
	a.indexed[b] = false
}

func (a *Allocator) pushFree(b int32) {
	a.owner[b] = -1
	a.next[b] = a.freeHead
	a.freeHead = b
	a.list[b] = inFree
	a.nFree++
}

func (a *Allocator) lruPush(b int32) {
	a.prev[b], a.next[b] = a.lruTail, -1
	if a.lruTail >= 0 {
		a.next[a.lruTail] = b
	} else {
		a.lruHead = b
	}
	a.lruTail = b
	a.list[b] = inLRU
}

func (a *Allocator) lruUnlink(b int32) {
	p, n := a.prev[b], a.next[b]
	if p >= 0 {
		a.next[p] = n
	} else {
		a.lruHead = n
	}
	if n >= 0 {
		a.prev[n] = p
	} else {
		a.lruTail = p
	}
	a.list[b] = inNone
}
