package paging

import (
	"fmt"
	"math"
	"strings"
)

// fakeKV models llama.cpp's unified KV cache at the level paging relies on:
// a pool of cells, each with a position, a content (the hash of the token
// prefix that produced it) and the set of seq ids owning it; a cell nobody
// owns is free. Decoding takes a free cell and fails when there is none,
// which is exactly what paging exists to prevent.
type fakeKV struct {
	cells []fakeCell
	free  []int32
	owned []map[int32]int32 // per slot: position → cell
	err   error             // first misuse seen
	local bool              // per-slot streams: no cell is shared, Copy is misuse
	log   *strings.Builder  // if set, every call is written here
}

type fakeCell struct {
	pos     int32
	content uint64
	seqs    [MaxSlots / 64]uint64
	nSeqs   int
}

func newFakeKV(nCells, nSlots int) *fakeKV {
	f := &fakeKV{cells: make([]fakeCell, nCells), owned: make([]map[int32]int32, nSlots)}
	for i := nCells - 1; i >= 0; i-- {
		f.free = append(f.free, int32(i))
	}
	for s := range f.owned {
		f.owned[s] = map[int32]int32{}
	}
	return f
}

func (f *fakeKV) fail(format string, args ...any) {
	if f.err == nil {
		f.err = fmt.Errorf(format, args...)
	}
}

func (f *fakeKV) checkSlot(s int32) bool {
	if s < 0 || int(s) >= len(f.owned) {
		f.fail("slot %d out of range", s)
		return false
	}
	return true
}

func (f *fakeKV) Remove(slot int32, p0, p1 int32) {
	if f.log != nil {
		end := fmt.Sprint(p1)
		if p1 < 0 {
			end = "end"
		}
		fmt.Fprintf(f.log, "remove slot=%d [%d,%s)\n", slot, p0, end)
	}
	if !f.checkSlot(slot) {
		return
	}
	if p1 < 0 {
		p1 = math.MaxInt32
	}
	for pos, c := range f.owned[slot] {
		if pos < p0 || pos >= p1 {
			continue
		}
		delete(f.owned[slot], pos)
		cell := &f.cells[c]
		cell.seqs[slot/64] &^= 1 << (slot % 64)
		if cell.nSeqs--; cell.nSeqs == 0 {
			f.free = append(f.free, c)
		}
	}
}

func (f *fakeKV) Copy(src, dst int32, p0, p1 int32) {
	if f.log != nil {
		fmt.Fprintf(f.log, "copy %d->%d [%d,%d)\n", src, dst, p0, p1)
	}
	if !f.checkSlot(src) || !f.checkSlot(dst) {
		return
	}
	if p1 < 0 {
		p1 = math.MaxInt32
	}
	if src == dst {
		f.fail("copy from slot %d to itself", src)
		return
	}
	if f.local {
		f.fail("copy %d->%d with per-slot streams", src, dst)
		return
	}
	for pos, c := range f.owned[src] {
		if pos < p0 || pos >= p1 {
			continue
		}
		if _, dup := f.owned[dst][pos]; dup {
			f.fail("copy %d->%d: destination already has a cell at position %d", src, dst, pos)
			return
		}
		f.owned[dst][pos] = c
		f.cells[c].seqs[dst/64] |= 1 << (dst % 64)
		f.cells[c].nSeqs++
	}
}

// decode stores one token's KV for slot at pos, like llama_decode would.
func (f *fakeKV) decode(slot, pos int32, content uint64) error {
	if _, dup := f.owned[slot][pos]; dup {
		return fmt.Errorf("decode slot %d pos %d: position already present", slot, pos)
	}
	if n := int32(len(f.owned[slot])); pos != n {
		// llama.cpp requires Y = pos_max+1; with positions [0, n) owned
		// (checked elsewhere) that is n.
		return fmt.Errorf("decode slot %d pos %d: slot holds %d positions", slot, pos, n)
	}
	if len(f.free) == 0 {
		return fmt.Errorf("decode slot %d pos %d: KV cache full (%d cells)", slot, pos, len(f.cells))
	}
	c := f.free[len(f.free)-1]
	f.free = f.free[:len(f.free)-1]
	f.cells[c] = fakeCell{pos: pos, content: content, nSeqs: 1}
	f.cells[c].seqs[slot/64] |= 1 << (slot % 64)
	f.owned[slot][pos] = c
	return nil
}

func (f *fakeKV) inUse() int { return len(f.cells) - len(f.free) }

// prefixContents returns, for each position i of toks, the content a cell at
// i holds when computed after toks[:i+1]: a hash of the whole prefix.
func prefixContents(toks []int32) []uint64 {
	out := make([]uint64, len(toks))
	h := uint64(14695981039346656037)
	for i, t := range toks {
		h ^= uint64(uint32(t))
		h *= 1099511628211
		out[i] = h
	}
	return out
}
