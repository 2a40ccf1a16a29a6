package paging

// chainHash is the identity of a full block: a hash of its parent block's
// chain hash and its own tokens, so equal hashes mean equal prefixes (up to
// collisions, which lookups rule out by comparing the stored tokens and the
// parent hash). A multiply-xorshift round per two tokens, then a murmur3
// finalizer: no allocation, stable across processes and runs.
func chainHash(parent uint64, toks []int32) uint64 {
	h := parent ^ 0x9e3779b97f4a7c15
	i := 0
	for ; i+1 < len(toks); i += 2 { // two tokens per round: half the dependency chain
		h ^= uint64(uint32(toks[i])) | uint64(uint32(toks[i+1]))<<32
		h *= 0xbf58476d1ce4e5b9
		h ^= h >> 29
	}
	if i < len(toks) {
		h ^= uint64(uint32(toks[i]))
		h *= 0xbf58476d1ce4e5b9
		h ^= h >> 29
	}
	h ^= uint64(len(toks))
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// hashTable maps chain hashes to block ids: open addressing with linear
// probing and backward-shift deletion, sized once (at most one entry per
// block, load ≤ 1/2), so inserts and deletes never allocate. The Go map would
// do, but its growth and tombstone rehashing allocate at unpredictable times.
type hashTable struct {
	keys []uint64
	vals []int32 // -1: empty
	mask uint64
	n    int
}

func newHashTable(maxEntries int) hashTable {
	size := 8
	for size < 2*maxEntries {
		size <<= 1
	}
	t := hashTable{keys: make([]uint64, size), vals: make([]int32, size), mask: uint64(size - 1)}
	for i := range t.vals {
		t.vals[i] = -1
	}
	return t
}

func (t *hashTable) get(k uint64) int32 {
	for i := k & t.mask; ; i = (i + 1) & t.mask {
		v := t.vals[i]
		if v < 0 || t.keys[i] == k {
			return v
		}
	}
}

// put inserts k → v; k must be absent.
func (t *hashTable) put(k uint64, v int32) {
	i := k & t.mask
	for t.vals[i] >= 0 {
		i = (i + 1) & t.mask
	}
	t.keys[i], t.vals[i] = k, v
	t.n++
}

// del removes k, which must be present, and shifts back the entries of its
// probe run so lookups never need tombstones.
func (t *hashTable) del(k uint64) {
	i := k & t.mask
	for t.keys[i] != k {
		if t.vals[i] < 0 {
			panic("paging: hashTable.del of an absent key")
		}
		i = (i + 1) & t.mask
	}
	if t.vals[i] < 0 {
		panic("paging: hashTable.del of an absent key")
	}
	for j := (i + 1) & t.mask; t.vals[j] >= 0; j = (j + 1) & t.mask {
		// The entry at j may fill the hole at i unless its home lies
		// cyclically in (i, j].
		home := t.keys[j] & t.mask
		if (j-home)&t.mask >= (j-i)&t.mask {
			t.keys[i], t.vals[i] = t.keys[j], t.vals[j]
			i = j
		}
	}
	t.vals[i] = -1
	t.n--
}
