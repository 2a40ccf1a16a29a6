package engine

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"specd/internal/testenv"
)

// Shared fixtures: the library is process-wide and the model is read-only,
// so every test uses one of each.
var (
	fixtureOnce  sync.Once
	fixtureLib   *Library
	fixtureModel *Model
	fixtureErr   error
)

func stories(t testing.TB) (*Library, *Model) {
	t.Helper()
	dir := testenv.LibDir(t)
	path := testenv.StoriesModel(t)
	fixtureOnce.Do(func() {
		fixtureLib, fixtureErr = Open(Options{LibDir: dir})
		if fixtureErr != nil {
			return
		}
		fixtureModel, fixtureErr = fixtureLib.LoadModel(context.Background(), ModelParams{Path: path})
	})
	if fixtureErr != nil {
		t.Fatal(fixtureErr)
	}
	return fixtureLib, fixtureModel
}

func newCtx(t testing.TB, m *Model, p ContextParams) *Context {
	t.Helper()
	if p.Threads == 0 {
		p.Threads = 2
	}
	c, err := m.NewContext(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func newBatch(t testing.TB, l *Library, n int) *Batch {
	t.Helper()
	b, err := l.NewBatch(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

func argmax(row []float32) int32 {
	best := 0
	for i, v := range row {
		if v > row[best] {
			best = i
		}
	}
	return int32(best)
}

// greedy decodes prompt into seq starting at position pos0 and then n
// tokens greedily, one decode per token; it stops early at an EOG token.
func greedy(t testing.TB, c *Context, b *Batch, seq, pos0 int32, prompt []int32, n int) []int32 {
	t.Helper()
	v := c.Model().Vocab()
	b.Reset()
	for i, tok := range prompt {
		b.Add(tok, pos0+int32(i), seq, i == len(prompt)-1)
	}
	if err := c.Decode(b); err != nil {
		t.Fatal(err)
	}
	pos := pos0 + int32(len(prompt))
	next := argmax(c.Logits(len(prompt) - 1))
	var out []int32
	for len(out) < n {
		out = append(out, next)
		if v.IsEOG(next) || len(out) == n {
			break
		}
		b.Reset()
		b.Add(next, pos, seq, true)
		pos++
		if err := c.Decode(b); err != nil {
			t.Fatal(err)
		}
		next = argmax(c.Logits(0))
	}
	return out
}

func pieces(v *Vocab, toks []int32) string {
	var b []byte
	for _, t := range toks {
		b = v.AppendPiece(b, t, false)
	}
	return string(b)
}

type reference struct {
	Prompt       string `json:"prompt"`
	NPredict     int    `json:"n_predict"`
	Continuation string `json:"continuation"`
}

func references(t testing.TB) []reference {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "greedy_stories260K.json"))
	if err != nil {
		t.Fatal(err)
	}
	var refs []reference
	if err := json.Unmarshal(data, &refs); err != nil {
		t.Fatal(err)
	}
	if len(refs) < 3 {
		t.Fatalf("want at least 3 reference prompts, have %d", len(refs))
	}
	return refs
}

func tokenize(t testing.TB, v *Vocab, s string) []int32 {
	t.Helper()
	toks, err := v.Tokenize(s, true, false)
	if err != nil {
		t.Fatal(err)
	}
	return toks
}

func TestModelInfo(t *testing.T) {
	_, m := stories(t)
	info := m.Info()
	want := map[string][2]int{
		"NVocab": {info.NVocab, 512}, "NLayer": {info.NLayer, 5}, "NEmbd": {info.NEmbd, 64},
		"NHead": {info.NHead, 8}, "NHeadKV": {info.NHeadKV, 4},
		// The file says llama.context_length = 2048 (not 512, the size of
		// the training sequences of the original stories260K).
		"NCtxTrain": {info.NCtxTrain, 2048},
	}
	for k, v := range want {
		if v[0] != v[1] {
			t.Errorf("%s = %d, want %d", k, v[0], v[1])
		}
	}
	if info.Arch != "llama" {
		t.Errorf("Arch = %q, want llama", info.Arch)
	}
	if info.NParams == 0 || info.SizeBytes == 0 || info.FileType == "" {
		t.Errorf("empty facts in %+v", info)
	}
	v := m.Vocab()
	if v.BOS() != 1 || v.EOS() != 2 || !v.AddBOS() {
		t.Errorf("BOS %d EOS %d AddBOS %v, want 1 2 true", v.BOS(), v.EOS(), v.AddBOS())
	}
	if !v.IsEOG(2) || v.IsEOG(100) || v.IsEOG(-1) || v.IsEOG(512) {
		t.Error("IsEOG wrong")
	}
	if v.Text(1) != "<s>" {
		t.Errorf("Text(1) = %q", v.Text(1))
	}
	if got := string(v.AppendPiece(nil, 1, true)); got != "<s>" {
		t.Errorf("special piece of BOS = %q", got)
	}
	if got := string(v.AppendPiece(nil, 1, false)); got != "" {
		t.Errorf("plain piece of BOS = %q, want empty", got)
	}
	if testing.AllocsPerRun(100, func() {
		var buf [64]byte
		_ = v.AppendPiece(buf[:0], 300, false)
		_ = v.IsEOG(300)
	}) != 0 {
		t.Error("AppendPiece/IsEOG allocate")
	}
}

func TestTokenizeRoundTrip(t *testing.T) {
	_, m := stories(t)
	v := m.Vocab()
	for _, s := range []string{"Once upon a time, there was a little girl.", "Tom said: \"Hi!\" 123", "ünïcode ✓ text"} {
		toks := tokenize(t, v, s)
		if toks[0] != v.BOS() {
			t.Errorf("%q: first token %d, want BOS", s, toks[0])
		}
		got, err := v.Detokenize(toks, true, false)
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimPrefix(got, " ") != s {
			t.Errorf("round trip %q -> %v -> %q", s, toks, got)
		}
		if p := strings.TrimPrefix(pieces(v, toks), " "); p != s {
			t.Errorf("pieces of %q = %q", s, p)
		}
	}
	if toks, _ := v.Tokenize("", false, false); len(toks) != 0 {
		t.Errorf("empty text gave %v", toks)
	}
	if _, err := v.Detokenize([]int32{5, 9999}, false, false); err == nil {
		t.Error("Detokenize accepted token 9999")
	}
}

func TestGreedyMatchesLlamaCompletion(t *testing.T) {
	l, m := stories(t)
	c := newCtx(t, m, ContextParams{FlashAttn: FlashAttnOff})
	b := newBatch(t, l, 64)
	for _, ref := range references(t) {
		c.ClearKV()
		out := greedy(t, c, b, 0, 0, tokenize(t, m.Vocab(), ref.Prompt), ref.NPredict)
		if got := pieces(m.Vocab(), out); got != ref.Continuation {
			t.Errorf("prompt %q:\n got %q\nwant %q", ref.Prompt, got, ref.Continuation)
		}
	}
}

func TestBatchedSequencesMatchSingle(t *testing.T) {
	l, m := stories(t)
	refs := references(t)[:4]
	const n = 24
	single := newCtx(t, m, ContextParams{FlashAttn: FlashAttnOff})
	b := newBatch(t, l, 128)
	want := make([][]int32, len(refs))
	prompts := make([][]int32, len(refs))
	for i, r := range refs {
		prompts[i] = tokenize(t, m.Vocab(), r.Prompt)
		single.ClearKV()
		want[i] = greedy(t, single, b, 0, 0, prompts[i], n)
	}

	for _, unified := range []bool{false, true} {
		c := newCtx(t, m, ContextParams{NCtx: 4 * 256, NSeqMax: 4, UnifiedKV: unified, FlashAttn: FlashAttnOff})
		// One decode carries all four prompts; then one decode per step
		// carries one token of each sequence.
		b.Reset()
		last := make([]int, len(prompts))
		for s, p := range prompts {
			for i, tok := range p {
				last[s] = b.Add(tok, int32(i), int32(s), i == len(p)-1)
			}
		}
		if err := c.Decode(b); err != nil {
			t.Fatal(err)
		}
		got := make([][]int32, len(prompts))
		pos := make([]int32, len(prompts))
		for s := range prompts {
			got[s] = append(got[s], argmax(c.Logits(last[s])))
			pos[s] = int32(len(prompts[s]))
		}
		for step := 1; step < n; step++ {
			b.Reset()
			for s := range prompts {
				last[s] = b.Add(got[s][step-1], pos[s], int32(s), true)
				pos[s]++
			}
			if err := c.Decode(b); err != nil {
				t.Fatal(err)
			}
			for s := range prompts {
				got[s] = append(got[s], argmax(c.Logits(last[s])))
			}
		}
		for s := range prompts {
			if pieces(m.Vocab(), got[s]) != pieces(m.Vocab(), want[s]) {
				t.Errorf("unified=%v seq %d batched %q, single %q", unified, s, pieces(m.Vocab(), got[s]), pieces(m.Vocab(), want[s]))
			}
		}
	}
}

func TestRemoveAndRedecode(t *testing.T) {
	l, m := stories(t)
	c := newCtx(t, m, ContextParams{FlashAttn: FlashAttnOff})
	b := newBatch(t, l, 64)
	prompt := tokenize(t, m.Vocab(), references(t)[0].Prompt)
	want := greedy(t, c, b, 0, 0, prompt, 24)
	// KV holds prompt + want[:23]; drop everything from position keep on.
	keep := int32(len(prompt) + 8)
	if got := c.SeqPosMax(0); got != int32(len(prompt)+len(want)-2) {
		t.Fatalf("SeqPosMax = %d, want %d", got, len(prompt)+len(want)-2)
	}
	if !c.SeqRemove(0, keep, -1) {
		t.Fatal("SeqRemove failed")
	}
	if got := c.SeqPosMax(0); got != keep-1 {
		t.Fatalf("after SeqRemove SeqPosMax = %d, want %d", got, keep-1)
	}
	if c.SeqPosMin(0) != 0 {
		t.Fatalf("SeqPosMin = %d", c.SeqPosMin(0))
	}
	// Re-decode the token at position keep (want[8]) and continue.
	redo := greedy(t, c, b, 0, keep, []int32{want[8]}, len(want)-9)
	if pieces(m.Vocab(), redo) != pieces(m.Vocab(), want[9:]) {
		t.Errorf("after rollback %q, want %q", pieces(m.Vocab(), redo), pieces(m.Vocab(), want[9:]))
	}
	if !c.SeqRemove(0, -1, -1) || c.SeqPosMax(0) != -1 {
		t.Error("removing the whole sequence left cells")
	}
}

func TestSeqCopyThenContinue(t *testing.T) {
	l, m := stories(t)
	c := newCtx(t, m, ContextParams{NCtx: 512, NSeqMax: 2, UnifiedKV: true, FlashAttn: FlashAttnOff})
	b := newBatch(t, l, 64)
	prompt := tokenize(t, m.Vocab(), references(t)[1].Prompt)
	want := greedy(t, c, b, 0, 0, prompt, 20)
	c.ClearKV()
	// Prefill all but the last prompt token on seq 0, share it with seq 1,
	// drop seq 0 and continue on seq 1 alone.
	head := prompt[:len(prompt)-1]
	b.Reset()
	for i, tok := range head {
		b.Add(tok, int32(i), 0, false)
	}
	if err := c.Decode(b); err != nil {
		t.Fatal(err)
	}
	c.SeqCopy(0, 1, 0, -1)
	c.SeqKeep(1)
	if c.SeqPosMax(0) != -1 || c.SeqPosMax(1) != int32(len(head)-1) {
		t.Fatalf("after copy+keep: seq0 max %d, seq1 max %d", c.SeqPosMax(0), c.SeqPosMax(1))
	}
	got := greedy(t, c, b, 1, int32(len(head)), prompt[len(head):], 20)
	if pieces(m.Vocab(), got) != pieces(m.Vocab(), want) {
		t.Errorf("on the copy %q, want %q", pieces(m.Vocab(), got), pieces(m.Vocab(), want))
	}
}

func TestSaveRestoreSeqState(t *testing.T) {
	l, m := stories(t)
	c := newCtx(t, m, ContextParams{NCtx: 512, NSeqMax: 2, FlashAttn: FlashAttnOff})
	b := newBatch(t, l, 64)
	prompt := tokenize(t, m.Vocab(), references(t)[2].Prompt)
	want := greedy(t, c, b, 0, 0, prompt, 20)
	c.ClearKV()

	head := prompt[:len(prompt)-1]
	b.Reset()
	for i, tok := range head {
		b.Add(tok, int32(i), 0, false)
	}
	if err := c.Decode(b); err != nil {
		t.Fatal(err)
	}
	size := c.SeqStateSize(0)
	if size <= 0 {
		t.Fatalf("SeqStateSize = %d", size)
	}
	state, err := c.SaveSeqState(0, make([]byte, 3, 8))
	if err != nil {
		t.Fatal(err)
	}
	if len(state) != 3+size {
		t.Fatalf("saved %d bytes after a 3-byte prefix, want %d", len(state), 3+size)
	}
	state = state[3:]
	c.SeqRemove(0, -1, -1)
	if c.SeqPosMax(0) != -1 {
		t.Fatal("sequence not removed")
	}
	// Restore into the other sequence id: the state carries no id.
	if err := c.RestoreSeqState(1, state); err != nil {
		t.Fatal(err)
	}
	if c.SeqPosMax(1) != int32(len(head)-1) {
		t.Fatalf("restored SeqPosMax = %d, want %d", c.SeqPosMax(1), len(head)-1)
	}
	got := greedy(t, c, b, 1, int32(len(head)), prompt[len(head):], 20)
	if pieces(m.Vocab(), got) != pieces(m.Vocab(), want) {
		t.Errorf("after restore %q, want %q", pieces(m.Vocab(), got), pieces(m.Vocab(), want))
	}
	if err := c.RestoreSeqState(0, []byte("garbage state")); err == nil {
		t.Error("restoring garbage succeeded")
	}
}

func TestDecodeErrors(t *testing.T) {
	l, m := stories(t)
	c := newCtx(t, m, ContextParams{NCtx: 256, NBatch: 64, FlashAttn: FlashAttnOff})
	b := newBatch(t, l, 128)

	if err := c.Decode(b); err == nil {
		t.Error("empty batch decoded")
	}
	b.Add(1, 0, 0, false)
	b.Add(100000, 1, 0, true)
	if err := c.Decode(b); err == nil || errors.Is(err, ErrNoKVSlot) {
		t.Errorf("token out of range: err = %v", err)
	} else if !strings.Contains(err.Error(), "-1") {
		t.Errorf("error does not say -1: %v", err)
	}
	if c.SeqPosMax(0) != -1 {
		t.Error("rejected batch left cells behind")
	}
	b.Reset()
	b.Add(1, 0, 7, true) // sequence id beyond NSeqMax
	if err := c.Decode(b); err == nil {
		t.Error("bad sequence id accepted")
	}
	b.Reset()
	for i := range 65 {
		b.Add(5, int32(i), 0, false)
	}
	if err := c.Decode(b); err == nil {
		t.Error("batch larger than n_batch accepted")
	}
	// Rows that asked no logits have none.
	b.Reset()
	b.Add(1, 0, 0, false)
	b.Add(5, 1, 0, true)
	if err := c.Decode(b); err != nil {
		t.Fatal(err)
	}
	if c.Logits(0) != nil || len(c.Logits(1)) != c.NVocab() || c.Logits(2) != nil || c.Logits(-1) != nil {
		t.Error("Logits rows wrong")
	}
	// More logits rows than NOutputsMax would trip a GGML_ASSERT (abort).
	small := newCtx(t, m, ContextParams{NOutputsMax: 2, FlashAttn: FlashAttnOff})
	b.Reset()
	for i := range 3 {
		b.Add(5, int32(i), 0, true)
	}
	if err := small.Decode(b); err == nil || !strings.Contains(err.Error(), "NOutputsMax") {
		t.Errorf("3 logits rows with NOutputsMax 2: err = %v", err)
	}
	// NOutputsMax below NSeqMax would abort at the first decode: raised.
	multi := newCtx(t, m, ContextParams{NCtx: 1024, NSeqMax: 4, NOutputsMax: 1, FlashAttn: FlashAttnOff})
	if multi.NOutputsMax() != 4 {
		t.Errorf("NOutputsMax = %d, want raised to 4", multi.NOutputsMax())
	}
	b.Reset()
	b.Add(5, 0, 3, true)
	if err := multi.Decode(b); err != nil {
		t.Error(err)
	}
	// Out-of-range sequence ids would abort inside llama.cpp.
	if multi.SeqRemove(4, 0, -1) || multi.SeqRemove(-2, 0, -1) || multi.SeqStateSize(9) != 0 {
		t.Error("out-of-range sequence accepted")
	}
	if err := multi.RestoreSeqState(4, []byte{1}); err == nil {
		t.Error("restore into sequence 4 of 4 accepted")
	}
	for name, f := range map[string]func(){
		"SeqCopy dst":     func() { multi.SeqCopy(0, 4, 0, -1) },
		"SeqCopy partial": func() { multi.SeqCopy(0, 1, 2, -1) }, // not unified
		"SeqKeep":         func() { multi.SeqKeep(-1) },
		"SeqPosMax":       func() { multi.SeqPosMax(4) },
		"SeqPosMin":       func() { multi.SeqPosMin(4) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
	multi.SeqCopy(3, 1, 0, -1) // a whole sequence across streams is fine
	if multi.SeqPosMax(1) != 0 {
		t.Errorf("whole copy across streams: SeqPosMax(1) = %d", multi.SeqPosMax(1))
	}
	// Fill the cache until llama.cpp has no slot.
	c.ClearKV()
	var err error
	pos := int32(0)
	for range 10 {
		b.Reset()
		for range 64 {
			b.Add(5, pos, 0, false)
			pos++
		}
		if err = c.Decode(b); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrNoKVSlot) {
		t.Errorf("overfilled cache (n_ctx %d, %d positions): err = %v, want ErrNoKVSlot", c.NCtx(), pos, err)
	}
}

func TestHotPathDoesNotAllocate(t *testing.T) {
	l, m := stories(t)
	c := newCtx(t, m, ContextParams{Threads: 2, FlashAttn: FlashAttnOff})
	b := newBatch(t, l, 8)
	pos := int32(0)
	// The best of up to ten rounds, 20 ms apart: a per-token allocation
	// shows in every round, while AllocsPerRun also counts what other
	// goroutines of the process allocate meanwhile (seen in -race suites:
	// one allocation per run through three back-to-back rounds, once in a
	// clean-clone CI run), which passes.
	allocs := 1e9
	for round := 0; round < 10 && allocs != 0; round++ {
		if round > 0 {
			time.Sleep(20 * time.Millisecond)
		}
		allocs = min(allocs, testing.AllocsPerRun(50, func() {
			b.Reset()
			b.Add(5, pos, 0, true)
			pos++
			if err := c.Decode(b); err != nil {
				t.Fatal(err)
			}
			_ = argmax(c.Logits(0))
			c.SeqPosMax(0)
			c.GraphsReused()
		}))
	}
	if allocs != 0 {
		t.Errorf("Add+Decode+Logits+GraphsReused allocates %.1f times per token", allocs)
	}
	if !c.SeqRemove(0, 10, -1) {
		t.Error("SeqRemove failed")
	}
	// Switching threads (decode_threads auto, when the choice changes):
	// llama_attach_threadpool and llama_set_n_threads each log at debug
	// level, and the log callback into Go costs one allocation even when
	// the line is dropped unread.
	n := 0
	if a := testing.AllocsPerRun(50, func() { n++; c.SetThreads(1 + n%2) }); a > 2 {
		t.Errorf("SetThreads allocates %.1f times per call", a)
	}
}

func TestDecodeRawMatchesRegisteredCall(t *testing.T) {
	l, m := stories(t)
	prompt := tokenize(t, m.Vocab(), "Once upon a time")
	run := func(raw bool) []float32 {
		c := newCtx(t, m, ContextParams{FlashAttn: FlashAttnOff})
		b := newBatch(t, l, 32)
		for i, tok := range prompt {
			b.Add(tok, int32(i), 0, i == len(prompt)-1)
		}
		if raw {
			if err := c.Decode(b); err != nil {
				t.Fatal(err)
			}
		} else {
			c.rowOut = append(c.rowOut[:0], b.out[:b.Len()]...)
			c.logitsFresh = false
			if rc := llamaDecodeReg(c.ptr, b.c); rc != 0 {
				t.Fatalf("llama_decode = %d", rc)
			}
		}
		return append([]float32(nil), c.Logits(len(prompt)-1)...)
	}
	a, r := run(true), run(false)
	for i := range a {
		if a[i] != r[i] {
			t.Fatalf("logit %d: raw %v, registered %v", i, a[i], r[i])
		}
	}
}

func TestSharedThreadPool(t *testing.T) {
	l, m := stories(t)
	pool, err := l.NewThreadPool(2)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	a := newCtx(t, m, ContextParams{ThreadPool: pool, FlashAttn: FlashAttnOff})
	bctx := newCtx(t, m, ContextParams{ThreadPool: pool, FlashAttn: FlashAttnOff})
	b := newBatch(t, l, 32)
	p := tokenize(t, m.Vocab(), "The little dog")
	x := greedy(t, a, b, 0, 0, p, 10)
	y := greedy(t, bctx, b, 0, 0, p, 10)
	if pieces(m.Vocab(), x) != pieces(m.Vocab(), y) {
		t.Errorf("two contexts on one pool differ: %q vs %q", pieces(m.Vocab(), x), pieces(m.Vocab(), y))
	}
	if _, err := l.NewThreadPool(0); err == nil {
		t.Error("pool of 0 threads accepted")
	}
}

// A decode on one of the pool's threads computes what one on all of them
// does: the same logits, bit for bit (each output element is one thread's).
func TestSetThreads(t *testing.T) {
	l, m := stories(t)
	c := newCtx(t, m, ContextParams{Threads: 2, ComputeThreads: 1, FlashAttn: FlashAttnOff})
	if c.Threads() != 1 || c.PoolThreads() != 2 {
		t.Fatalf("ComputeThreads 1 on a pool of 2: Threads %d, PoolThreads %d", c.Threads(), c.PoolThreads())
	}
	b := newBatch(t, l, 64)
	p := tokenize(t, m.Vocab(), "Once upon a time, there was a little girl")
	logits := func() []float32 {
		c.ClearKV()
		b.Reset()
		for i, tok := range p {
			b.Add(tok, int32(i), 0, true)
		}
		if err := c.Decode(b); err != nil {
			t.Fatal(err)
		}
		var out []float32
		for i := range p {
			out = append(out, c.Logits(i)...)
		}
		return out
	}
	// One thread runs on the pool's one-thread companion, so that the
	// large pool's worker is not kicked (and left spinning) by the decode.
	attached := func(want uintptr, what string) {
		t.Helper()
		if want == 0 || c.tp != want {
			t.Fatalf("on %s: attached pool %#x, want %#x (pool %#x, solo %#x)", what, c.tp, want, c.pool.ptr, c.pool.solo)
		}
	}
	attached(c.pool.solo, "ComputeThreads 1")
	one := logits()
	if got := c.SetThreads(5); got != 2 || c.Threads() != 2 {
		t.Fatalf("SetThreads(5) on a pool of 2 = %d, Threads %d; want 2", got, c.Threads())
	}
	attached(c.pool.ptr, "SetThreads(5)")
	two := logits()
	for i := range one {
		if one[i] != two[i] {
			t.Fatalf("logit %d: %g on 1 thread, %g on 2", i, one[i], two[i])
		}
	}
	if got := c.SetThreads(0); got != 1 {
		t.Errorf("SetThreads(0) = %d, want 1", got)
	}
	attached(c.pool.solo, "SetThreads(0)")
	// OneThreadOnPool (a target with a draft) keeps one-thread decodes on
	// the shared pool.
	d := newCtx(t, m, ContextParams{ThreadPool: c.pool, ComputeThreads: 1, OneThreadOnPool: true, FlashAttn: FlashAttnOff})
	if d.tp != c.pool.ptr || d.SetThreads(2) != 2 || d.tp != c.pool.ptr || d.SetThreads(1) != 1 || d.tp != c.pool.ptr {
		t.Fatalf("OneThreadOnPool: attached %#x, want the pool %#x throughout", d.tp, c.pool.ptr)
	}
	again := logits()
	for i := range one {
		if one[i] != again[i] {
			t.Fatalf("logit %d: %g on 1 thread, %g back on 1 thread after 2", i, one[i], again[i])
		}
	}
}

func TestContextParamsValidate(t *testing.T) {
	_, m := stories(t)
	for _, p := range []ContextParams{
		{NCtx: -1},
		{TypeK: "q3_weird"},
		{FlashAttn: 7},
		{NSeqMax: 1000},
	} {
		if c, err := m.NewContext(p); err == nil {
			c.Close()
			t.Errorf("%+v accepted", p)
		}
	}
	// A quantized V cache without flash attention is refused by llama.cpp.
	if c, err := m.NewContext(ContextParams{TypeV: "q8_0", FlashAttn: FlashAttnOff}); err == nil {
		c.Close()
		t.Error("q8_0 V cache without flash attention accepted")
	}
	// stories260K's head size of 8 is too small for q8_0 blocks of 32.
	c := newCtx(t, m, ContextParams{TypeK: "f32", TypeV: "f32", FlashAttn: FlashAttnOn})
	if c.NCtx() != 512 {
		t.Errorf("NCtx = %d", c.NCtx())
	}
}

func TestVocabCompatibleWith(t *testing.T) {
	_, m := stories(t)
	v := m.Vocab()
	if err := v.CompatibleWith(v); err != nil {
		t.Errorf("same vocab: %v", err)
	}
	fake := *v
	fake.texts = append([]string(nil), v.texts...)
	fake.texts[300] = "▁different"
	err := v.CompatibleWith(&fake)
	if err == nil || !strings.Contains(err.Error(), "token 300") || !strings.Contains(err.Error(), "▁different") || !strings.Contains(err.Error(), v.texts[300]) {
		t.Errorf("mismatch error = %v", err)
	}
	short := fake
	short.n = 500
	if err := v.CompatibleWith(&short); err == nil || !strings.Contains(err.Error(), "512") {
		t.Errorf("size mismatch error = %v", err)
	}
}

func TestChatTemplate(t *testing.T) {
	_, m := stories(t)
	msgs := []ChatMessage{{"system", "Be brief."}, {"user", "Hi"}}
	if _, err := m.ApplyChatTemplate("", msgs, true); m.Info().ChatTemplate == "" && !errors.Is(err, ErrNoChatTemplate) {
		t.Errorf("model without template: err = %v", err)
	}
	got, err := m.ApplyChatTemplate("chatml", msgs, true)
	if err != nil {
		t.Fatal(err)
	}
	want := "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
	if got != want {
		t.Errorf("chatml = %q, want %q", got, want)
	}
	if _, err := m.ApplyChatTemplate("no-such-template", msgs, true); err == nil || !strings.Contains(err.Error(), "chatml") {
		t.Errorf("unknown template: err = %v", err)
	}
}

func TestLoadModelCancel(t *testing.T) {
	l, _ := stories(t)
	path := testenv.StoriesModel(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.LoadModel(ctx, ModelParams{Path: path}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled before load: err = %v", err)
	}
	// Cancel from inside the load: the progress callback returns false.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	calls := 0
	m, err := l.LoadModel(ctx, ModelParams{Path: path, Progress: func(float32) { calls++; cancel() }})
	if err == nil {
		m.Close()
		t.Fatalf("load finished despite cancel (%d progress calls)", calls)
	}
	if !errors.Is(err, context.Canceled) || calls == 0 {
		t.Errorf("cancel during load: err = %v after %d progress calls", err, calls)
	}
	// And a normal load reports progress up to 1.
	var lastFrac float32
	m, err = l.LoadModel(context.Background(), ModelParams{Path: path, Progress: func(f float32) { lastFrac = f }})
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	if lastFrac != 1 {
		t.Errorf("last progress %v, want 1", lastFrac)
	}
}

func TestQuantizeQ8(t *testing.T) {
	l, m := stories(t)
	out := filepath.Join(t.TempDir(), "stories-q8_0.gguf")
	if err := l.Quantize(testenv.StoriesModel(t), out, "q8_0", 2); err != nil {
		t.Fatal(err)
	}
	g, err := InspectGGUF(out)
	if err != nil {
		t.Fatal(err)
	}
	if ft, _ := g.Uint("general.file_type"); ft != 7 {
		t.Errorf("general.file_type = %d, want 7 (Q8_0)", ft)
	}
	q, err := l.LoadModel(context.Background(), ModelParams{Path: out})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if !strings.Contains(q.Info().FileType, "Q8_0") {
		t.Errorf("FileType = %q", q.Info().FileType)
	}
	if err := q.Vocab().CompatibleWith(m.Vocab()); err != nil {
		t.Error(err)
	}
	// KVAuto: stories260K's heads have 8 dimensions, so both files get an
	// f32 cache; by its weights alone the Q8_0 file would get f16. An
	// explicit type stays.
	if q.Info().HeadDim != 8 || m.Info().HeadDim != 8 {
		t.Errorf("head dimensions %d and %d, want 8", q.Info().HeadDim, m.Info().HeadDim)
	}
	qi := q.Info()
	if got := AutoKVType(float64(qi.SizeBytes)/float64(qi.NParams), 64); got != "f16" {
		t.Errorf("Q8_0 weights with 64-dimension heads: auto KV type %q, want f16", got)
	}
	c := newCtx(t, q, ContextParams{FlashAttn: FlashAttnOff, TypeK: KVAuto, TypeV: KVAuto})
	if c.KVType() != "f32" {
		t.Errorf("Q8_0 model with 8-dimension heads: auto KV type %q, want f32", c.KVType())
	}
	for _, tc := range []struct{ in, want KVType }{{KVAuto, "f32"}, {"f16", "f16"}, {"bf16", "bf16"}} {
		if got := newCtx(t, m, ContextParams{FlashAttn: FlashAttnOn, TypeK: tc.in, TypeV: tc.in}).KVType(); got != tc.want {
			t.Errorf("f32 model, KV type %q: context has %q, want %q", tc.in, got, tc.want)
		}
	}
	b := newBatch(t, l, 32)
	got := pieces(q.Vocab(), greedy(t, c, b, 0, 0, tokenize(t, q.Vocab(), "Once upon a time"), 16))
	if len(strings.Fields(got)) < 5 {
		t.Errorf("Q8_0 model generated %q", got)
	}
	if err := l.Quantize(testenv.StoriesModel(t), out+"2", "Q9_X", 2); err == nil || !strings.Contains(err.Error(), "Q8_0") {
		t.Errorf("bad type: err = %v", err)
	}
	if err := l.Quantize(filepath.Join(t.TempDir(), "missing.gguf"), out+"3", "Q8_0", 2); err == nil {
		t.Error("quantizing a missing file succeeded")
	}
	if _, err := os.Stat(out + "3"); err == nil {
		t.Error("failed quantize left an output file")
	}
}

func TestParseFileType(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int32
		ok   bool
	}{
		{"Q8_0", 7, true}, {"q8_0", 7, true}, {"Q4_K_M", 15, true}, {"q4_k", 15, true},
		{"F16", 1, true}, {"Q6_K", 18, true}, {"Q5_K_M", 17, true}, {"Q4_0", 2, true}, {"bogus", 0, false},
	} {
		got, err := ParseFileType(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseFileType(%q) = %d, %v", tc.in, got, err)
		}
	}
}

// TestGraphsReused: a decode of the previous decode's shape reuses its
// compute graph, one of another shape does not (llama_perf_context).
func TestGraphsReused(t *testing.T) {
	l, m := stories(t)
	c := newCtx(t, m, ContextParams{NCtx: 256, NSeqMax: 1, NBatch: 64, NUBatch: 64, Threads: 1, FlashAttn: FlashAttnOff})
	b := newBatch(t, l, 64)
	pos := int32(0)
	decode := func(n int) int {
		b.Reset()
		for j := range n {
			b.Add(int32(1+j), pos, 0, true)
			pos++
		}
		if err := c.Decode(b); err != nil {
			t.Fatal(err)
		}
		return c.GraphsReused()
	}
	base := decode(1)
	if got := decode(1); got != base+1 {
		t.Errorf("a second one-token decode: reused %d, want %d", got, base+1)
	}
	if got := decode(2); got != base+1 {
		t.Errorf("a two-token decode after one-token ones: reused %d, want %d", got, base+1)
	}
	if got := decode(2); got != base+2 {
		t.Errorf("a second two-token decode: reused %d, want %d", got, base+2)
	}
}
