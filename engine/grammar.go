package engine

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"structs"
	"sync"
	"sync/atomic"
	"time"
)

// cTokenData mirrors struct llama_token_data (llama.h): 12 bytes.
type cTokenData struct {
	_     structs.HostLayout
	ID    int32
	Logit float32
	P     float32
}

// cTokenDataArray mirrors struct llama_token_data_array (llama.h): 32 bytes.
type cTokenDataArray struct {
	_        structs.HostLayout
	Data     *cTokenData
	Size     uintptr
	Selected int64
	Sorted   bool
	_        [7]byte
}

var (
	llamaSamplerInitGrammar func(vocab uintptr, grammar, root *byte) uintptr
	llamaSamplerApply       func(s uintptr, cur *cTokenDataArray)
	llamaSamplerAccept      func(s uintptr, t int32)
	llamaSamplerClone       func(s uintptr) uintptr
	llamaSamplerFree        func(s uintptr)
)

func bindGrammar(b *binder) {
	b.fn(&llamaSamplerInitGrammar, "llama_sampler_init_grammar")
	b.fn(&llamaSamplerApply, "llama_sampler_apply")
	b.fn(&llamaSamplerAccept, "llama_sampler_accept")
	b.fn(&llamaSamplerClone, "llama_sampler_clone")
	b.fn(&llamaSamplerFree, "llama_sampler_free")
}

// grammarScratch is the candidate array llama_sampler_apply reads and
// writes: one per vocabulary, made by its first grammar and pinned for the
// vocabulary's life (the array struct holds a pointer to the data, so both
// stay put), used under mu.
type grammarScratch struct {
	once sync.Once
	mu   sync.Mutex
	data []cTokenData
	arr  *cTokenDataArray
	pin  runtime.Pinner
}

func (s *grammarScratch) init(n int) {
	s.once.Do(func() {
		s.data = make([]cTokenData, max(n, 1))
		s.arr = new(cTokenDataArray)
		s.pin.Pin(&s.data[0])
		s.pin.Pin(s.arr)
		s.arr.Data = &s.data[0]
	})
}

// Grammar is a llama.cpp grammar (GBNF) and its parse state: which tokens
// may come next, advanced one accepted token at a time. llama.cpp aborts
// the process if a grammar is made to accept a token it does not allow, so
// Accept checks first and returns an error instead. A Grammar is not safe
// for concurrent use (different Grammars are); Free it when done.
type Grammar struct {
	ptr   uintptr
	vocab *Vocab
}

var (
	liveGrammars atomic.Int64
	grammarNanos atomic.Int64
)

// GrammarTime is the wall time spent in grammar operations (masks, checks,
// accepts, clones) since start, for metrics.
func GrammarTime() time.Duration { return time.Duration(grammarNanos.Load()) }

func since(t0 time.Time) { grammarNanos.Add(int64(time.Since(t0))) }

// LiveGrammars is how many grammars (and clones) exist, not yet freed:
// for leak checks.
func LiveGrammars() int64 { return liveGrammars.Load() }

// ErrGrammarRejects is returned by Accept for a token the grammar does not
// allow next.
var ErrGrammarRejects = errors.New("engine: the grammar does not allow this token")

// NewGrammar parses a GBNF grammar whose start rule is root. The error of a
// grammar llama.cpp cannot use (syntax, an undefined rule, left recursion,
// no root rule) says so; llama.cpp writes the parser's detail to stderr.
func (v *Vocab) NewGrammar(text, root string) (*Grammar, error) {
	if text == "" {
		return nil, errors.New("engine: empty grammar")
	}
	if root == "" {
		root = "root"
	}
	ct, cr := cString(text), cString(root)
	ptr := llamaSamplerInitGrammar(v.ptr, &ct[0], &cr[0])
	runtime.KeepAlive(ct)
	runtime.KeepAlive(cr)
	if ptr == 0 {
		return nil, withLastError("engine: invalid grammar")
	}
	v.gs.init(v.n)
	liveGrammars.Add(1)
	return &Grammar{ptr: ptr, vocab: v}, nil
}

// Clone is an independent copy of g in its current state.
func (g *Grammar) Clone() (*Grammar, error) {
	defer since(time.Now())
	ptr := llamaSamplerClone(g.ptr)
	if ptr == 0 {
		return nil, fmt.Errorf("engine: llama_sampler_clone failed")
	}
	liveGrammars.Add(1)
	return &Grammar{ptr: ptr, vocab: g.vocab}, nil
}

// Free releases the grammar; g must not be used after.
func (g *Grammar) Free() {
	if g != nil && g.ptr != 0 {
		llamaSamplerFree(g.ptr)
		g.ptr = 0
		liveGrammars.Add(-1)
	}
}

// Mask sets to -Inf every entry of logits (one per token of the
// vocabulary) whose token the grammar does not allow next, and returns how
// many it left alone. The entries it leaves keep their values exactly.
func (g *Grammar) Mask(logits []float32) int {
	defer since(time.Now())
	s := g.vocab.gs
	n := min(len(logits), len(s.data))
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range n {
		s.data[i] = cTokenData{ID: int32(i), Logit: 0}
	}
	g.applyLocked(s, n)
	kept := 0
	inf := float32(math.Inf(-1))
	for i := range n {
		if s.data[i].Logit == inf {
			logits[i] = inf
		} else {
			kept++
		}
	}
	return kept
}

// applyLocked runs the grammar over the first n entries of the scratch.
func (g *Grammar) applyLocked(s *grammarScratch, n int) {
	s.arr.Data = &s.data[0]
	s.arr.Size = uintptr(n)
	s.arr.Selected = -1
	s.arr.Sorted = false
	llamaSamplerApply(g.ptr, s.arr)
}

// Allowed reports whether the grammar allows token t next. An
// end-of-generation token is allowed where the text may end.
func (g *Grammar) Allowed(t int32) bool {
	if t < 0 || int(t) >= g.vocab.n {
		return false
	}
	defer since(time.Now())
	s := g.vocab.gs
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data[0] = cTokenData{ID: t, Logit: 0}
	g.applyLocked(s, 1)
	return !math.IsInf(float64(s.data[0].Logit), -1)
}

// Done reports whether the text may end here (the grammar allows an
// end-of-generation token).
func (g *Grammar) Done() bool {
	eos := g.vocab.eos
	if eos < 0 {
		for t := range int32(g.vocab.n) {
			if g.vocab.eog[t] {
				eos = t
				break
			}
		}
	}
	return eos >= 0 && g.Allowed(eos)
}

// Accept advances the grammar past token t, or returns ErrGrammarRejects
// and leaves it unchanged if t is not allowed. Accepting an
// end-of-generation token where the text may end changes nothing.
func (g *Grammar) Accept(t int32) error {
	if !g.Allowed(t) {
		return ErrGrammarRejects
	}
	if g.vocab.IsEOG(t) {
		return nil
	}
	defer since(time.Now())
	llamaSamplerAccept(g.ptr, t)
	return nil
}
