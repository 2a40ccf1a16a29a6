package engine

import (
	"fmt"
	"structs"
	"unsafe"
)

// cBatch mirrors struct llama_batch (llama.h): 56 bytes. The arrays are C
// memory from llama_batch_init: Go pointers inside a struct passed by value
// would not be kept alive or pinned.
type cBatch struct {
	_       structs.HostLayout
	NTokens int32
	_       [4]byte
	Token   *int32
	Embd    *float32
	Pos     *int32
	NSeqID  *int32
	SeqID   **int32
	Logits  *int8
}

var (
	llamaBatchInit func(nTokens, embd, nSeqMax int32) cBatch
	llamaBatchFree func(b cBatch)
)

func bindBatch(b *binder) {
	b.fn(&llamaBatchInit, "llama_batch_init")
	b.fn(&llamaBatchFree, "llama_batch_free")
}

// Batch is a reusable set of tokens for one Decode: any mix of sequences,
// each token with its position, its sequence and whether its logits are
// wanted. Add writes straight into C memory and never allocates. A Batch is
// not safe for concurrent use.
type Batch struct {
	c      cBatch
	cap    int
	token  []int32
	pos    []int32
	nSeqID []int32
	seqID  []*int32
	logits []int8
	// out[i] is row i's index among the rows that asked for logits, or -1.
	out  []int32
	nOut int32
}

// NewBatch allocates a batch of capacity tokens (one sequence id each).
func (l *Library) NewBatch(capacity int) (*Batch, error) {
	if capacity < 1 || capacity > 1<<24 {
		return nil, fmt.Errorf("engine: batch capacity %d out of range", capacity)
	}
	c := llamaBatchInit(int32(capacity), 0, 1)
	if c.Token == nil || c.SeqID == nil {
		return nil, fmt.Errorf("engine: llama_batch_init(%d) returned no memory", capacity)
	}
	b := &Batch{
		c:      c,
		cap:    capacity,
		token:  unsafe.Slice(c.Token, capacity),
		pos:    unsafe.Slice(c.Pos, capacity),
		nSeqID: unsafe.Slice(c.NSeqID, capacity),
		seqID:  unsafe.Slice(c.SeqID, capacity),
		logits: unsafe.Slice(c.Logits, capacity),
		out:    make([]int32, capacity),
	}
	for i := range b.nSeqID {
		b.nSeqID[i] = 1
	}
	return b, nil
}

// Close frees the batch's C memory.
func (b *Batch) Close() {
	if b == nil || b.c.Token == nil {
		return
	}
	b.c.NTokens = 0
	llamaBatchFree(b.c)
	b.c = cBatch{}
	b.token, b.pos, b.nSeqID, b.seqID, b.logits = nil, nil, nil, nil, nil
}

// Reset empties the batch.
func (b *Batch) Reset() {
	b.c.NTokens = 0
	b.nOut = 0
}

// Len is the number of tokens in the batch.
func (b *Batch) Len() int { return int(b.c.NTokens) }

// Cap is the batch's capacity.
func (b *Batch) Cap() int { return b.cap }

// NOutputs is the number of rows that asked for logits.
func (b *Batch) NOutputs() int { return int(b.nOut) }

// Add appends token tok at position pos of sequence seq and returns its row
// index (what Context.Logits takes). It panics when the batch is full: the
// caller sized it.
func (b *Batch) Add(tok, pos, seq int32, logits bool) int {
	i := b.c.NTokens
	if int(i) >= b.cap {
		panic(fmt.Sprintf("engine: batch full (%d tokens)", b.cap))
	}
	b.token[i] = tok
	b.pos[i] = pos
	*b.seqID[i] = seq
	if logits {
		b.logits[i] = 1
		b.out[i] = b.nOut
		b.nOut++
	} else {
		b.logits[i] = 0
		b.out[i] = -1
	}
	b.c.NTokens = i + 1
	return int(i)
}
