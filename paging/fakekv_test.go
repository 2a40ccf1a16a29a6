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
	cells  []fakeCell
	free   []int32
	owned  []map[int32]int32 // per slot: position → cell
	err    error             // first misuse seen
	local  bool              // per-slot streams: no cell is shared; Copy copies a whole stream
	size   int               // cells the cache has; a local Copy may briefly use more
	copies int               // Copy calls
	log    *strings.Builder  // if set, every call is written here
}

type fakeCell struct {
	pos     int32
	content uint64
	seqs    [MaxSlots / 64]uint64
	nSeqs   int
}

func newFakeKV(nCells, nSlots int) *fakeKV {
	f := &fakeKV{cells: make([]fakeCell, nCells), owned: make([]map[int32]int32, nSlots), size: nCells}
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
	f.copies++
	if p1 < 0 {
		p1 = math.MaxInt32
	}
	if src == dst {
		f.fail("copy from slot %d to itself", src)
		return
	}
	if f.local {
		// llama.cpp copies between streams only whole, into a reset
		// stream. Each copied cell is a new cell with the same content (a
		// real copy; the caller trims the tail at once, so the brief
		// excess over size is not counted as a full cache).
		if p0 != 0 || p1 != math.MaxInt32 {
			f.fail("copy %d->%d [%d,%d) with per-slot streams: only whole streams copy", src, dst, p0, p1)
			return
		}
		if len(f.owned[dst]) != 0 {
			f.fail("copy %d->%d: destination stream holds %d cells", src, dst, len(f.owned[dst]))
			return
		}
		for pos, c := range f.owned[src] {
			n := f.newCell()
			f.cells[n] = fakeCell{pos: pos, content: f.cells[c].content, nSeqs: 1}
			f.cells[n].seqs[dst/64] |= 1 << (dst % 64)
			f.owned[dst][pos] = n
		}
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
	if f.inUse() >= f.size {
		return fmt.Errorf("decode slot %d pos %d: KV cache full (%d cells)", slot, pos, f.size)
	}
	c := f.newCell()
	f.cells[c] = fakeCell{pos: pos, content: content, nSeqs: 1}
	f.cells[c].seqs[slot/64] |= 1 << (slot % 64)
	f.owned[slot][pos] = c
	return nil
}

func (f *fakeKV) inUse() int { return len(f.cells) - len(f.free) }

// newCell takes a free cell, or adds one (only a whole-stream copy goes
// past size, until its tail is removed).
func (f *fakeKV) newCell() int32 {
	if n := len(f.free); n > 0 {
		c := f.free[n-1]
		f.free = f.free[:n-1]
		return c
	}
	f.cells = append(f.cells, fakeCell{})
	return int32(len(f.cells) - 1)
}

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
