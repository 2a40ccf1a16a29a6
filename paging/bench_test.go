package paging

import "testing"

// A 32k-token context in 16-token blocks, 64 slot ids: the sizes the daemon
// runs with. KVOps is a no-op, so these measure paging alone.
func benchAlloc(b *testing.B, prefixCache bool) *Allocator {
	a, err := New(Config{BlockSize: 16, NumBlocks: 2048, NumSlots: 64, PrefixCache: prefixCache}, nopKV{})
	if err != nil {
		b.Fatal(err)
	}
	return a
}

func benchPrompt(n int, salt int32) []int32 {
	p := make([]int32, n)
	for i := range p {
		p[i] = salt*100003 + int32(i)
	}
	return p
}

// One draft round trip: reserve k+1 = 5 positions for a verify, reject them
// all. Each Grow crosses a block boundary, so a block is taken and returned
// every time (the worst case).
func BenchmarkGrowTrim(b *testing.B) {
	a := benchAlloc(b, true)
	s, _, _ := a.Admit(nil)
	a.Grow(s, 1020)
	b.ReportAllocs()
	for b.Loop() {
		a.Grow(s, 5)
		a.Trim(s, 1020)
	}
}

// Admission of a 512-token prompt, its prefill reservation, and Free.
func BenchmarkAdmitFree(b *testing.B) {
	const n = 512
	b.Run("nocache", func(b *testing.B) {
		a := benchAlloc(b, false)
		p := benchPrompt(n, 1)
		b.ReportAllocs()
		for b.Loop() {
			s, _, _ := a.Admit(p)
			a.Grow(s, n)
			a.Free(s)
		}
	})
	// Prefix cache on, prompt never seen: 31 blocks hashed and missed.
	b.Run("miss", func(b *testing.B) {
		a := benchAlloc(b, true)
		p := benchPrompt(n, 1)
		b.ReportAllocs()
		for b.Loop() {
			s, _, _ := a.Admit(p)
			a.Grow(s, n)
			a.Free(s)
		}
	})
	// The prompt's 31 full blocks belong to a running sequence: the new one
	// copies them (one Copy) and prefills 16 tokens.
	b.Run("hit-running", func(b *testing.B) {
		a := benchAlloc(b, true)
		p := benchPrompt(n, 1)
		owner, _, _ := a.Admit(p)
		a.Grow(owner, n)
		a.Commit(owner, p)
		b.ReportAllocs()
		for b.Loop() {
			s, cached, _ := a.Admit(p)
			a.Grow(s, n-cached)
			a.Free(s)
		}
	})
	// The prompt's blocks are held by a finished sequence's zombie slot: the
	// new sequence adopts the slot (no Copy) and gives it back on Free.
	b.Run("hit-zombie", func(b *testing.B) {
		a := benchAlloc(b, true)
		p := benchPrompt(n, 1)
		s, _, _ := a.Admit(p)
		a.Grow(s, n)
		a.Commit(s, p)
		a.Free(s)
		b.ReportAllocs()
		for b.Loop() {
			s, cached, _ := a.Admit(p)
			a.Grow(s, n-cached)
			a.Free(s)
		}
	})
}

// A whole request life with a new prompt each time: admit (miss), reserve,
// commit 512 tokens, free (blocks cached). The pool is soon full of cached
// blocks, so every Grow evicts: the steady state of a busy prefix cache.
func BenchmarkLifecycleEvicting(b *testing.B) {
	const n = 512
	a := benchAlloc(b, true)
	p := benchPrompt(n, 1)
	b.ReportAllocs()
	i := int32(0)
	for b.Loop() {
		i++
		p[0] = i // a new prompt, without allocating one
		s, cached, _ := a.Admit(p)
		a.Grow(s, n-cached)
		a.Commit(s, p)
		a.Free(s)
	}
}

func BenchmarkChainHash(b *testing.B) {
	t := benchPrompt(16, 1)
	var h uint64
	b.ReportAllocs()
	for b.Loop() {
		h = chainHash(h, t)
	}
}
