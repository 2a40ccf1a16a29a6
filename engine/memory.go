package engine

import (
	"fmt"
)

var (
	llamaGetMemory        func(ctx uintptr) uintptr
	llamaMemoryClear      func(mem uintptr, data bool)
	llamaMemorySeqKeep    func(mem uintptr, seq int32)
	llamaMemorySeqPosMin  func(mem uintptr, seq int32) int32
	llamaStateSeqGetSize  func(ctx uintptr, seq int32) uintptr
	llamaStateSeqGetData  func(ctx uintptr, dst *byte, size uintptr, seq int32) uintptr
	llamaStateSeqSetData  func(ctx uintptr, src *byte, size uintptr, seq int32) uintptr
	llamaMemorySeqRmSym   uintptr
	llamaMemorySeqCpSym   uintptr
	llamaMemorySeqPosMaxS uintptr
)

func bindMemory(b *binder) {
	b.fn(&llamaGetMemory, "llama_get_memory")
	b.fn(&llamaMemoryClear, "llama_memory_clear")
	b.fn(&llamaMemorySeqKeep, "llama_memory_seq_keep")
	b.fn(&llamaMemorySeqPosMin, "llama_memory_seq_pos_min")
	b.fn(&llamaStateSeqGetSize, "llama_state_seq_get_size")
	b.fn(&llamaStateSeqGetData, "llama_state_seq_get_data")
	b.fn(&llamaStateSeqSetData, "llama_state_seq_set_data")
	// Called once per sequence per step by the scheduler: no reflection.
	llamaMemorySeqRmSym = b.sym("llama_memory_seq_rm")
	llamaMemorySeqCpSym = b.sym("llama_memory_seq_cp")
	llamaMemorySeqPosMaxS = b.sym("llama_memory_seq_pos_max")
}

// i32 passes a signed 32-bit C argument through SyscallN (sign-extended;
// the callee reads the low half).
func i32(v int32) uintptr { return uintptr(int64(v)) }

// llama.cpp aborts the process (GGML_ASSERT) on a sequence id outside
// 0..n_seq_max-1, so every memory call checks ids first: a bad id is a
// caller bug and panics with a message instead.
func (c *Context) checkSeq(op string, seq int32) {
	if seq < 0 || int(seq) >= c.nSeqMax {
		panic(fmt.Sprintf("engine: %s: sequence id %d outside 0..%d", op, seq, c.nSeqMax-1))
	}
}

// SeqRemove removes positions [p0, p1) of sequence seq from the KV cache
// (p1 < 0: to the end; seq == -1: every sequence). It returns false when a
// partial range cannot be removed or seq is out of range; removing a whole
// sequence never fails.
func (c *Context) SeqRemove(seq, p0, p1 int32) bool {
	if seq < -1 || int(seq) >= c.nSeqMax {
		return false
	}
	a := c.args[:4]
	a[0], a[1], a[2], a[3] = c.mem, i32(seq), i32(p0), i32(p1)
	return c.call(llamaMemorySeqRmSym, a)&0xff != 0
}

// SeqCopy makes positions [p0, p1) of src also belong to dst (p1 < 0: to the
// end). With UnifiedKV the cells are shared, not copied. Without it each
// sequence has its own stream and llama.cpp can only copy a whole sequence
// (p0 <= 0, p1 < 0), replacing all of dst; a partial range panics, since
// llama.cpp would abort.
func (c *Context) SeqCopy(src, dst, p0, p1 int32) {
	c.checkSeq("SeqCopy", src)
	c.checkSeq("SeqCopy", dst)
	if !c.unified && c.nSeqMax > 1 && src != dst && (p0 > 0 || p1 >= 0) {
		panic(fmt.Sprintf("engine: SeqCopy(%d, %d, %d, %d): partial copies need UnifiedKV", src, dst, p0, p1))
	}
	a := c.args[:5]
	a[0], a[1], a[2], a[3], a[4] = c.mem, i32(src), i32(dst), i32(p0), i32(p1)
	c.call(llamaMemorySeqCpSym, a)
}

// SeqKeep removes every sequence but seq.
func (c *Context) SeqKeep(seq int32) {
	c.checkSeq("SeqKeep", seq)
	llamaMemorySeqKeep(c.mem, seq)
}

// SeqPosMin is the smallest position of seq in the cache, -1 if empty.
func (c *Context) SeqPosMin(seq int32) int32 {
	c.checkSeq("SeqPosMin", seq)
	return llamaMemorySeqPosMin(c.mem, seq)
}

// SeqPosMax is the largest position of seq in the cache, -1 if empty.
func (c *Context) SeqPosMax(seq int32) int32 {
	c.checkSeq("SeqPosMax", seq)
	a := c.args[:2]
	a[0], a[1] = c.mem, i32(seq)
	return int32(c.call(llamaMemorySeqPosMaxS, a))
}

// ClearKV empties the whole cache.
func (c *Context) ClearKV() { llamaMemoryClear(c.mem, true) }

// SeqStateSize is the number of bytes SaveSeqState needs for seq.
// It is 0 for a sequence id out of range.
func (c *Context) SeqStateSize(seq int32) int {
	if seq < 0 || int(seq) >= c.nSeqMax {
		return 0
	}
	return int(llamaStateSeqGetSize(c.ptr, seq))
}

// SaveSeqState appends seq's KV state to dst (reusing its capacity) so the
// sequence can be dropped from the cache and restored later.
func (c *Context) SaveSeqState(seq int32, dst []byte) ([]byte, error) {
	n := c.SeqStateSize(seq)
	if n == 0 {
		return dst, fmt.Errorf("engine: sequence %d has no state to save", seq)
	}
	start := len(dst)
	if cap(dst)-start < n {
		nd := make([]byte, start, start+n)
		copy(nd, dst)
		dst = nd
	}
	dst = dst[:start+n]
	got := llamaStateSeqGetData(c.ptr, &dst[start], uintptr(n), seq)
	if got == 0 {
		return dst[:start], withLastError("engine: llama_state_seq_get_data failed for sequence %d", seq)
	}
	return dst[:start+int(got)], nil
}

// RestoreSeqState loads data saved by SaveSeqState into sequence seq, which
// should be empty. It fails when the cache has no room.
func (c *Context) RestoreSeqState(seq int32, data []byte) error {
	if len(data) == 0 {
		return fmt.Errorf("engine: empty state for sequence %d", seq)
	}
	if seq < 0 || int(seq) >= c.nSeqMax {
		return fmt.Errorf("engine: sequence id %d outside 0..%d", seq, c.nSeqMax-1)
	}
	takeLastError()
	if llamaStateSeqSetData(c.ptr, &data[0], uintptr(len(data)), seq) == 0 {
		return withLastError("engine: llama_state_seq_set_data failed for sequence %d", seq)
	}
	return nil
}
