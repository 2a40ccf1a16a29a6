package paging

import (
	"errors"
	"math/rand"
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string // "" = valid; else a substring of the error
	}{
		{"default", DefaultConfig(4096, 8), ""},
		{"zero block size takes the default", Config{NumBlocks: 1, NumSlots: 1}, ""},
		{"256 slots", Config{BlockSize: 16, NumBlocks: 4, NumSlots: 256}, ""},
		{"no blocks", Config{BlockSize: 16, NumBlocks: 0, NumSlots: 1}, "NumBlocks"},
		{"context below a block", DefaultConfig(15, 1), "NumBlocks"},
		{"negative block size", Config{BlockSize: -1, NumBlocks: 4, NumSlots: 1}, "BlockSize"},
		{"no slots", Config{BlockSize: 16, NumBlocks: 4}, "NumSlots"},
		{"257 slots", Config{BlockSize: 16, NumBlocks: 4, NumSlots: 257}, "NumSlots"},
		{"too many positions", Config{BlockSize: 1 << 16, NumBlocks: 1 << 15, NumSlots: 1}, "2^30"},
		{"cache budget of the whole pool", Config{NumBlocks: 4, NumSlots: 1, MaxCachedBlocks: 4}, ""},
		{"negative cache budget", Config{NumBlocks: 4, NumSlots: 1, MaxCachedBlocks: -1}, "MaxCachedBlocks"},
		{"cache budget above the pool", Config{NumBlocks: 4, NumSlots: 1, MaxCachedBlocks: 5}, "MaxCachedBlocks"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrConfig)):
				t.Fatalf("Validate() = %v, want an ErrConfig mentioning %q", err, tt.want)
			}
			_, err2 := New(tt.cfg, &fakeKV{})
			if (err == nil) != (err2 == nil) {
				t.Fatalf("Validate() = %v but New() = %v", err, err2)
			}
		})
	}
	if _, err := New(DefaultConfig(64, 1), nil); !errors.Is(err, ErrConfig) {
		t.Fatalf("New with nil ops: %v", err)
	}
	if got := DefaultConfig(4096, 8); got.BlockSize != 16 || got.NumBlocks != 256 || !got.PrefixCache {
		t.Fatalf("DefaultConfig(4096, 8) = %+v", got)
	}
	// The default cache budget: DefaultMaxCachedTokens, in [1, NumBlocks].
	for _, tt := range []struct {
		cfg  Config
		want int
	}{
		{DefaultConfig(4096, 8), 32},
		{DefaultConfig(65536, 8), 32},
		{DefaultConfig(256, 8), 16},
		{Config{BlockSize: 3, NumBlocks: 1000, NumSlots: 1}, 171},
		{Config{BlockSize: 1024, NumBlocks: 8, NumSlots: 1}, 1},
		{Config{NumBlocks: 1000, NumSlots: 1, MaxCachedBlocks: 7}, 7},
	} {
		if got := tt.cfg.WithDefaults().MaxCachedBlocks; got != tt.want {
			t.Errorf("%+v: MaxCachedBlocks %d, want %d", tt.cfg, got, tt.want)
		}
	}
}

// Many finished sequences: the cache never holds more than its budget, and
// what stays is the most recently freed, each sequence's prefix blocks
// outliving its deeper ones.
func TestCacheBudget(t *testing.T) {
	const budget, seqBlocks, bs = 5, 3, 4
	kv := newFakeKV(64*bs, 8)
	a, err := New(Config{BlockSize: bs, NumBlocks: 64, NumSlots: 8, PrefixCache: true, MaxCachedBlocks: budget}, kv)
	if err != nil {
		t.Fatal(err)
	}
	prompt := func(i int) []int32 {
		p := make([]int32, seqBlocks*bs+1) // 3 full blocks and one token
		for j := range p {
			p[j] = int32(100*i + j)
		}
		return p
	}
	const n = 20
	for i := 0; i < n; i++ {
		p := prompt(i)
		s, cached, ok := a.Admit(p)
		if !ok || cached != 0 {
			t.Fatalf("sequence %d: ok %v cached %d", i, ok, cached)
		}
		a.Grow(s, len(p))
		for pos, c := range prefixContents(p) {
			if err := kv.decode(int32(s), int32(pos), c); err != nil {
				t.Fatal(err)
			}
		}
		a.Commit(s, p)
		a.Free(s)
		st := a.Stats()
		if st.Cached != min(budget, seqBlocks*(i+1)) {
			t.Fatalf("after %d sequences: %d cached, budget %d", i+1, st.Cached, budget)
		}
		if got, want := kv.inUse(), st.Cached*bs; got != want {
			t.Fatalf("after %d sequences: %d KV cells in use, %d cached blocks", i+1, got, want)
		}
		if err := a.CheckInvariants(); err != nil {
			t.Fatal(err)
		}
	}
	// Freed deepest block first: the last 5 freed blocks are sequence n-1's
	// three and the first two of sequence n-2.
	for i, want := range map[int]int{n - 1: 3, n - 2: 2, n - 3: 0, 0: 0} {
		if got := a.Probe(prompt(i)).Cached / bs; got != want {
			t.Errorf("sequence %d: %d blocks still cached, want %d", i, got, want)
		}
	}
	st := a.Stats()
	if st.Evictions != uint64(n*seqBlocks-budget) || st.Zombies != 2 {
		t.Errorf("stats %+v: want %d evictions, 2 zombies", st, n*seqBlocks-budget)
	}
}

// The open-addressing table must agree with a Go map under random inserts and
// deletes, including keys that collide on their home bucket.
func TestHashTableMatchesMap(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for _, n := range []int{1, 5, 64} {
		tab := newHashTable(n)
		ref := map[uint64]int32{}
		var keys []uint64
		for i := 0; i < 20000; i++ {
			// Few distinct low bits: long probe runs and wrap-around.
			k := uint64(r.Intn(4))<<40 | uint64(r.Intn(int(tab.mask)+1))
			if _, ok := ref[k]; ok {
				tab.del(k)
				delete(ref, k)
			} else if len(ref) < n {
				v := int32(r.Intn(1000))
				tab.put(k, v)
				ref[k] = v
				keys = append(keys, k)
			}
			if tab.n != len(ref) {
				t.Fatalf("n=%d: table holds %d, map %d", n, tab.n, len(ref))
			}
			for _, k := range keys[max(0, len(keys)-50):] {
				want, ok := ref[k]
				if !ok {
					want = -1
				}
				if got := tab.get(k); got != want {
					t.Fatalf("n=%d step %d: get(%x) = %d, want %d", n, i, k, got, want)
				}
			}
		}
	}
}

func TestChainHash(t *testing.T) {
	a := chainHash(0, []int32{1, 2, 3, 4})
	tests := []struct {
		name string
		h    uint64
	}{
		{"other parent", chainHash(1, []int32{1, 2, 3, 4})},
		{"swapped tokens", chainHash(0, []int32{2, 1, 3, 4})},
		{"shorter", chainHash(0, []int32{1, 2, 3})},
		{"trailing zero", chainHash(0, []int32{1, 2, 3, 4, 0})},
		{"negative token", chainHash(0, []int32{1, 2, 3, -4})},
	}
	for _, tt := range tests {
		if tt.h == a {
			t.Errorf("%s: same hash %x", tt.name, a)
		}
	}
	if chainHash(0, []int32{1, 2, 3, 4}) != a {
		t.Error("not deterministic")
	}
}

// With a hash that collides on everything, lookups must still only return
// blocks whose tokens and parent match.
func TestHashCollisionsAreVerified(t *testing.T) {
	kv := newFakeKV(64, 4)
	a, err := New(Config{BlockSize: 4, NumBlocks: 16, NumSlots: 4, PrefixCache: true}, kv)
	if err != nil {
		t.Fatal(err)
	}
	a.hashFn = func(uint64, []int32) uint64 { return 42 }
	pa := []int32{1, 1, 1, 1, 2, 2, 2, 2, 9}
	s, _, _ := a.Admit(pa)
	a.Grow(s, len(pa))
	a.Commit(s, pa)
	tests := []struct {
		prompt []int32
		want   int
	}{
		{[]int32{1, 1, 1, 1, 5}, 4},                // block 0 matches
		{[]int32{3, 3, 3, 3, 5}, 0},                // same hash, other tokens
		{[]int32{1, 1, 1, 1, 2, 2, 2, 2, 5}, 4},    // block 1 was not indexed: its hash collided
		{[]int32{2, 2, 2, 2, 1, 1, 1, 1, 5}, 0},    // block-1 tokens at depth 0
		{[]int32{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 4}, // depth 1 finds block 0 by hash: parent differs
	}
	for _, tt := range tests {
		if got := a.Probe(tt.prompt).Cached; got != tt.want {
			t.Errorf("Probe(%v).Cached = %d, want %d", tt.prompt, got, tt.want)
		}
	}
	if err := a.CheckInvariants(); err != nil {
		t.Fatal(err)
	}
}

func TestMisusePanics(t *testing.T) {
	newA := func() (*Allocator, SeqID) {
		a, err := New(Config{BlockSize: 4, NumBlocks: 8, NumSlots: 2, PrefixCache: true}, newFakeKV(32, 2))
		if err != nil {
			t.Fatal(err)
		}
		s, _, _ := a.Admit([]int32{1, 2, 3})
		a.Grow(s, 3)
		return a, s
	}
	tests := []struct {
		name string
		f    func(a *Allocator, s SeqID)
	}{
		{"Grow after Free", func(a *Allocator, s SeqID) { a.Free(s); a.Grow(s, 1) }},
		{"double Free", func(a *Allocator, s SeqID) { a.Free(s); a.Free(s) }},
		{"Len of a never admitted slot", func(a *Allocator, s SeqID) { a.Len(1) }},
		{"out of range", func(a *Allocator, s SeqID) { a.Trim(7, 0) }},
		{"negative Grow", func(a *Allocator, s SeqID) { a.Grow(s, -1) }},
		{"negative Trim", func(a *Allocator, s SeqID) { a.Trim(s, -1) }},
		{"Commit past Len", func(a *Allocator, s SeqID) { a.Commit(s, []int32{1, 2, 3, 4}) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, s := newA()
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			tt.f(a, s)
		})
	}
}

// Once every slot's table has grown, the hot paths must not allocate.
func TestNoAllocations(t *testing.T) {
	if invariantsOn {
		t.Skip("CheckInvariants allocates; run without -race and the invariants tag")
	}
	for _, local := range []bool{false, true} {
		a, err := New(Config{BlockSize: 16, NumBlocks: 256, NumSlots: 4, PrefixCache: true, SlotLocal: local}, nopKV{})
		if err != nil {
			t.Fatal(err)
		}
		prompt := make([]int32, 300)
		for i := range prompt {
			prompt[i] = int32(i)
		}
		cycle := func() {
			s, cached, _ := a.Admit(prompt)
			a.Grow(s, len(prompt)-cached)
			for i := 0; i < 8; i++ {
				n := a.Len(s)
				a.Grow(s, 5)
				a.Trim(s, n+2)
			}
			a.Commit(s, prompt)
			a.Probe(prompt)
			a.Stats()
			a.Free(s)
		}
		cycle()
		if n := testing.AllocsPerRun(100, cycle); n != 0 {
			t.Fatalf("SlotLocal %v: %v allocations per admit/grow/trim/commit/free cycle", local, n)
		}
		if local && a.Stats().PrefixHits == 0 {
			t.Fatal("SlotLocal: the returning prompt never hit its zombie")
		}
	}

	prompt := make([]int32, 300)
	for i := range prompt {
		prompt[i] = int32(i)
	}

	// A small cache budget: every Free evicts the other prompt's blocks.
	a, err := New(Config{BlockSize: 16, NumBlocks: 256, NumSlots: 4, PrefixCache: true, MaxCachedBlocks: 8}, nopKV{})
	if err != nil {
		t.Fatal(err)
	}
	other := make([]int32, len(prompt))
	for i := range other {
		other[i] = int32(1000 + i)
	}
	turn := 0
	evicting := func() {
		p := prompt
		if turn++; turn%2 == 0 {
			p = other
		}
		s, cached, _ := a.Admit(p)
		a.Grow(s, len(p)-cached)
		a.Commit(s, p)
		a.Free(s)
	}
	evicting()
	evicting()
	before := a.Stats().Evictions
	if n := testing.AllocsPerRun(100, evicting); n != 0 {
		t.Fatalf("%v allocations per cycle that evicts to the cache budget", n)
	}
	if a.Stats().Evictions == before {
		t.Fatal("the budget cycle evicted nothing")
	}
}

type nopKV struct{}

func (nopKV) Remove(slot int32, p0, p1 int32)   {}
func (nopKV) Copy(src, dst int32, p0, p1 int32) {}

// CheckInvariants must notice corruption, or the invariant runs prove nothing.
func TestCheckInvariantsDetectsCorruption(t *testing.T) {
	setup := func() (*Allocator, SeqID, SeqID) {
		a, err := New(Config{BlockSize: 2, NumBlocks: 16, NumSlots: 4, PrefixCache: true}, newFakeKV(32, 4))
		if err != nil {
			t.Fatal(err)
		}
		p := []int32{1, 2, 3, 4, 5, 6, 7}
		x, _, _ := a.Admit(p)
		a.Grow(x, 7)
		a.Commit(x, p)
		y, _, _ := a.Admit(p) // shares 3 blocks with x
		a.Grow(y, 1)
		z, _, _ := a.Admit([]int32{9, 9, 9})
		a.Grow(z, 3)
		a.Commit(z, []int32{9, 9, 9})
		a.Free(z) // zombie holding one block
		if err := a.CheckInvariants(); err != nil {
			t.Fatal(err)
		}
		return a, x, y
	}
	tests := []struct {
		name    string
		corrupt func(a *Allocator, x, y SeqID)
	}{
		{"ref count off", func(a *Allocator, x, y SeqID) { a.ref[a.slots[x].table[0]]++ }},
		{"free block also in a table", func(a *Allocator, x, y SeqID) { a.slots[x].table[3] = a.freeHead }},
		{"free counter", func(a *Allocator, x, y SeqID) { a.nFree-- }},
		{"cached counter", func(a *Allocator, x, y SeqID) { a.nCached++ }},
		{"lost hash entry", func(a *Allocator, x, y SeqID) { a.prefix.del(a.hash[a.slots[x].table[0]]) }},
		{"stale token", func(a *Allocator, x, y SeqID) { a.toks[int(a.slots[x].table[1])*2]++ }},
		{"length vs table", func(a *Allocator, x, y SeqID) { a.slots[y].n += 3 }},
		{"zombie held count", func(a *Allocator, x, y SeqID) { a.slots[2].held++ }},
		{"owner not holding", func(a *Allocator, x, y SeqID) { a.owner[a.slots[x].table[3]] = int32(y) }},
		{"slot on the free stack twice", func(a *Allocator, x, y SeqID) { a.freeSlots = append(a.freeSlots, 3) }},
		{"LRU link", func(a *Allocator, x, y SeqID) { a.prev[a.lruHead] = 5 }},
		{"over the cache budget", func(a *Allocator, x, y SeqID) { a.cfg.MaxCachedBlocks = 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, x, y := setup()
			tt.corrupt(a, x, y)
			if err := a.CheckInvariants(); !errors.Is(err, ErrInvariant) {
				t.Fatalf("CheckInvariants() = %v, want ErrInvariant", err)
			}
		})
	}
}

// New sequences take the lowest free slot, whatever order slots were freed
// in: with per-sequence KV streams llama.cpp batches only consecutive
// sequence ids into one ubatch, so running slots must stay contiguous.
func TestLowestFreeSlotFirst(t *testing.T) {
	a, err := New(Config{BlockSize: 4, NumBlocks: 64, NumSlots: 8}, nopKV{})
	if err != nil {
		t.Fatal(err)
	}
	admit := func() SeqID {
		s, _, ok := a.Admit([]int32{1, 2, 3})
		if !ok {
			t.Fatal("no slot")
		}
		return s
	}
	for want := SeqID(0); want < 6; want++ {
		if s := admit(); s != want {
			t.Fatalf("admission %d got slot %d", want, s)
		}
	}
	for _, s := range []SeqID{4, 1, 5, 2} {
		a.Free(s)
	}
	for _, want := range []SeqID{1, 2, 4, 5, 6} {
		if s := admit(); s != want {
			t.Fatalf("got slot %d, want %d", s, want)
		}
		if err := a.CheckInvariants(); err != nil {
			t.Fatal(err)
		}
	}
}
