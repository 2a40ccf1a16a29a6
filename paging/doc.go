// Package paging owns the KV-cache memory accounting of the target and the
// draft model: which sequence may use how many cache cells, which prompts
// share cells, and which cached cells to give up under pressure. It is pure
// Go and never touches llama.cpp itself: every change to the KV cache is
// requested through KVOps, which the scheduler implements over both
// contexts, so the two caches always hold the same positions for the same
// slots.
//
// # Model
//
// llama.cpp keeps the physical cells: with kv_unified = true, one pool of
// n_ctx cells; a cell has a position and belongs to a set of sequence ids
// (slots, 0 ≤ slot < n_seq_max ≤ 256). llama_memory_seq_cp adds a slot to the
// cells another slot owns in a position range (sharing, no copy);
// llama_memory_seq_rm drops a slot from them; a cell nobody owns is free.
//
// paging divides n_ctx into NumBlocks blocks of BlockSize (B, default 16)
// cells and hands out the slots. Block i of a sequence holds positions
// [i*B, (i+1)*B). A running sequence owns its slot and a block table; the
// cells it owns in llama.cpp are exactly positions [0, Len). Since every
// block in use is counted, the cells llama.cpp needs never exceed what the
// pool has: a decode never fails for lack of KV if the caller reserved its
// positions with Grow first.
//
// Prefix cache (Config.PrefixCache): a full block of verified tokens
// (Commit) gets a chain hash (its parent block's hash and its own tokens) and
// is entered in a table. A new prompt that starts with cached blocks reuses
// them (Admit): their cells are shared into the new slot, and only the rest
// of the prompt is prefilled, never the last prompt token (its logits are
// needed). A block nobody references any more must keep its cells owned by
// some slot to stay cached: its holder is the sequence that released it last.
// A finished sequence whose slot holds cached blocks is a zombie: its slot
// stays reserved, owning exactly the held blocks' positions, until those are
// evicted (least recently used first: lazily when Grow finds the free list
// empty, and at once when a Free leaves more than Config.MaxCachedBlocks
// cached) or reused. A zombie whose last block goes frees its slot. Under
// slot pressure Admit takes over a zombie slot, preferring the one holding
// the prompt's own blocks (a returning conversation then needs no copy at
// all).
//
// Per-sequence streams (Config.SlotLocal; llama.cpp kv_unified = false): a
// slot is a stream and cells are never shared, since llama.cpp copies
// between streams only whole. A prompt reuses cached blocks by taking over
// the zombie whose own leading blocks match it longest (no Copy), or, when
// a running sequence's committed blocks match longer, by a copy of that
// sequence's whole stream (Copy(src, dst, 0, -1)) trimmed to the matched
// blocks, which become the new sequence's own. Every committed block is
// cached when its sequence ends, and a prompt that takes no zombie gets the
// slot that keeps the running ids in the fewest runs of consecutive ids
// (docs/decisions/0007).
//
// The budget exists because cached cells are not free in a unified KV: every
// decode attends over the pool's whole used cell range, cached cells
// included (masked), so a pool full of cached blocks slows every decode (see
// docs/decisions/0005-prefix-cache-budget.md).
//
// Rollback is subtraction: Trim drops the tail of rejected draft positions.
// Only committed full blocks are hashed, so draft tokens never enter the
// cache.
//
// # What callers do, in order
//
// At startup: New(cfg, ops) with NumBlocks = n_ctx / BlockSize of the
// contexts (both with the same n_ctx and n_seq_max ≥ NumSlots, and
// kv_unified = !SlotLocal). Use SeqID values as llama seq ids.
//
// Admission (scheduler, each step, for the head of the waiting queue):
//
//  1. p := Probe(prompt): cached tokens, whether a slot is available, and
//     how many blocks Grow could take afterwards. Plan the first chunk:
//     BlocksFor(p.Cached, chunk) ≤ p.FreeBlocks. Probe has no side effects.
//  2. seq, cached, ok := Admit(prompt). ok == false: no slot; try later.
//     Admit has already made KVOps calls (copies of the cached prefix into
//     seq, removals from zombie slots) and Len(seq) == cached. Report cached
//     as the request's cached prompt tokens.
//  3. Grow(seq, chunk), then decode prompt[cached:cached+chunk] at those
//     positions with seq as the llama seq id.
//
// Every step, for each running sequence, before building the batch:
// Grow(seq, n) for the positions the batch will write (a prefill chunk; a
// plain decode: 1; a verify of k drafts: k+1, and the draft model's own k
// decodes fall within those positions). missing > 0 is backpressure, a value:
// nothing changed; reserve less (k = 0) or preempt another sequence (Free it)
// and retry. Eviction of cached blocks happens inside Grow; only then does it
// report missing blocks.
//
// After the decode and verification:
//
//  1. Trim(seq, n) with n = the positions whose KV is now valid (accepted
//     tokens); positions past n leave both caches (KVOps.Remove). A Trim with
//     n ≥ Len(seq) does nothing.
//  2. Commit(seq, tokens) with the sequence's whole token history whose KV
//     is computed in every cache KVOps covers (min of target and draft
//     progress). Newly full blocks become prefix-cache entries.
//
// Finish, cancel or preempt: Free(seq). Committed blocks stay cached (seq's
// slot may live on as a zombie); do not use seq afterwards. A preempted
// request comes back through Admit with its prompt plus generated tokens and
// usually finds most of them cached (often in its own former slot). For
// swap-style preemption, restore the saved state into the new slot after
// Admit(nil) and Grow(seq, saved positions).
//
// # Guarantees and costs
//
// Grow, Trim, Commit, Free, Admit and Probe do not allocate once each slot's
// block table has grown to its longest sequence (tables keep their capacity).
// Grow and Trim are O(blocks taken or released); Admit is O(prompt length +
// NumSlots); Free is O(blocks released or evicted). An Allocator is not safe
// for concurrent use: the scheduler goroutine owns it. Misuse (an unknown or
// freed SeqID, a negative count, committing more tokens than reserved)
// panics; errors are only for configuration (ErrConfig). CheckInvariants
// verifies the whole state; the `invariants` build tag (and -race) runs it
// after every mutation.
//
// Stats reports blocks Total = Used + Cached + Free, slots and the
// prefix-cache counters (queries and hits, in blocks) for /metrics;
// preemptions are counted by the scheduler.
package paging
