package engine

import (
	"fmt"
)

var (
	llamaVocabNTokens    func(v uintptr) int32
	llamaVocabBOS        func(v uintptr) int32
	llamaVocabEOS        func(v uintptr) int32
	llamaVocabGetAddBOS  func(v uintptr) bool
	llamaVocabIsEOG      func(v uintptr, t int32) bool
	llamaVocabGetText    func(v uintptr, t int32) *byte
	llamaTokenize        func(v uintptr, text *byte, textLen int32, toks *int32, nMax int32, addSpecial, parseSpecial bool) int32
	llamaTokenToPiece    func(v uintptr, t int32, buf *byte, length int32, lstrip int32, special bool) int32
	llamaDetokenize      func(v uintptr, toks *int32, n int32, text *byte, textMax int32, removeSpecial, unparseSpecial bool) int32
	llamaVocabIsControl  func(v uintptr, t int32) bool
	llamaVocabGetAddEOS  func(v uintptr) bool
	llamaVocabEOT        func(v uintptr) int32
	llamaVocabNL         func(v uintptr) int32
	llamaVocabTypeGetter func(v uintptr) int32
)

func bindVocab(b *binder) {
	b.fn(&llamaVocabNTokens, "llama_vocab_n_tokens")
	b.fn(&llamaVocabBOS, "llama_vocab_bos")
	b.fn(&llamaVocabEOS, "llama_vocab_eos")
	b.fn(&llamaVocabEOT, "llama_vocab_eot")
	b.fn(&llamaVocabNL, "llama_vocab_nl")
	b.fn(&llamaVocabGetAddBOS, "llama_vocab_get_add_bos")
	b.fn(&llamaVocabGetAddEOS, "llama_vocab_get_add_eos")
	b.fn(&llamaVocabIsEOG, "llama_vocab_is_eog")
	b.fn(&llamaVocabIsControl, "llama_vocab_is_control")
	b.fn(&llamaVocabGetText, "llama_vocab_get_text")
	b.fn(&llamaVocabTypeGetter, "llama_vocab_type")
	b.fn(&llamaTokenize, "llama_tokenize")
	b.fn(&llamaTokenToPiece, "llama_token_to_piece")
	b.fn(&llamaDetokenize, "llama_detokenize")
}

// Vocab is a model's vocabulary. Per-token facts (EOG, texts, pieces) are
// copied to Go once at load, so IsEOG, Text and AppendPiece never call C and
// never allocate. Safe for concurrent use.
type Vocab struct {
	ptr    uintptr
	n      int
	bos    int32
	eos    int32
	addBOS bool
	eog    []bool
	texts  []string
	// pieces[s] holds every token's piece (llama_token_to_piece with
	// special = s==1) back to back; off[s][t]..off[s][t+1] is token t's.
	pieces [2][]byte
	off    [2][]uint32
	// gs is the grammars' candidate array, made by the first NewGrammar.
	gs *grammarScratch
}

func newVocab(ptr uintptr) *Vocab {
	n := int(llamaVocabNTokens(ptr))
	v := &Vocab{
		ptr:    ptr,
		n:      n,
		bos:    llamaVocabBOS(ptr),
		eos:    llamaVocabEOS(ptr),
		addBOS: llamaVocabGetAddBOS(ptr),
		eog:    make([]bool, n),
		gs:     &grammarScratch{},
		texts:  make([]string, n),
	}
	buf := make([]byte, 256)
	for s := range 2 {
		v.off[s] = make([]uint32, n+1)
		v.pieces[s] = make([]byte, 0, n*4)
	}
	for t := range int32(n) {
		v.eog[t] = llamaVocabIsEOG(ptr, t)
		v.texts[t] = goStringPtr(llamaVocabGetText(ptr, t))
		for s := range 2 {
			for {
				k := llamaTokenToPiece(ptr, t, &buf[0], int32(len(buf)), 0, s == 1)
				if k < 0 {
					buf = make([]byte, -k)
					continue
				}
				v.pieces[s] = append(v.pieces[s], buf[:k]...)
				break
			}
			v.off[s][t+1] = uint32(len(v.pieces[s]))
		}
	}
	return v
}

// NTokens is the vocabulary size.
func (v *Vocab) NTokens() int { return v.n }

// BOS is the beginning-of-sequence token (-1 if none).
func (v *Vocab) BOS() int32 { return v.bos }

// EOS is the end-of-sequence token (-1 if none).
func (v *Vocab) EOS() int32 { return v.eos }

// AddBOS reports whether prompts should start with BOS.
func (v *Vocab) AddBOS() bool { return v.addBOS }

// IsEOG reports whether t ends generation (EOS, EOT, ...).
func (v *Vocab) IsEOG(t int32) bool {
	return t >= 0 && int(t) < v.n && v.eog[t]
}

// Text is the token's text as stored in the vocabulary ("▁the", "<s>").
func (v *Vocab) Text(t int32) string {
	if t < 0 || int(t) >= v.n {
		return ""
	}
	return v.texts[t]
}

// AppendPiece appends the bytes token t renders as. special renders control
// tokens such as "<s>" (otherwise they render as nothing). A piece can be a
// partial UTF-8 sequence (byte tokens); join pieces before decoding text.
func (v *Vocab) AppendPiece(dst []byte, t int32, special bool) []byte {
	if t < 0 || int(t) >= v.n {
		return dst
	}
	s := 0
	if special {
		s = 1
	}
	return append(dst, v.pieces[s][v.off[s][t]:v.off[s][t+1]]...)
}

// Tokenize turns text into tokens. addSpecial adds BOS/EOS as the model
// wants; parseSpecial turns texts like "<s>" into their control tokens.
func (v *Vocab) Tokenize(text string, addSpecial, parseSpecial bool) ([]int32, error) {
	if len(text) > 1<<30 {
		return nil, fmt.Errorf("engine: text of %d bytes is too long to tokenize", len(text))
	}
	cb := cString(text)
	toks := make([]int32, len(text)+3)
	for {
		n := llamaTokenize(v.ptr, &cb[0], int32(len(text)), &toks[0], int32(len(toks)), addSpecial, parseSpecial)
		if n >= 0 {
			return toks[:n], nil
		}
		if n == -1<<31 {
			return nil, fmt.Errorf("engine: tokenizing %d bytes overflowed", len(text))
		}
		toks = make([]int32, -n)
	}
}

// Detokenize turns tokens back into text. removeSpecial drops a leading BOS
// and trailing EOS the model adds; unparseSpecial renders control tokens.
func (v *Vocab) Detokenize(toks []int32, removeSpecial, unparseSpecial bool) (string, error) {
	for i, t := range toks {
		if t < 0 || int(t) >= v.n {
			return "", fmt.Errorf("engine: token %d at index %d is outside the vocabulary of %d", t, i, v.n)
		}
	}
	if len(toks) == 0 {
		return "", nil
	}
	buf := make([]byte, len(toks)*8+16)
	for {
		n := llamaDetokenize(v.ptr, &toks[0], int32(len(toks)), &buf[0], int32(len(buf)), removeSpecial, unparseSpecial)
		if n >= 0 {
			return string(buf[:n]), nil
		}
		if n == -1<<31 {
			return "", fmt.Errorf("engine: detokenizing %d tokens overflowed", len(toks))
		}
		buf = make([]byte, -n)
	}
}

// CompatibleWith reports whether o has the same tokens as v (same size, same
// texts), as speculative decoding needs of a draft and its target.
func (v *Vocab) CompatibleWith(o *Vocab) error {
	if v.n != o.n {
		return fmt.Errorf("engine: vocabularies differ in size: %d vs %d tokens", v.n, o.n)
	}
	for i := range v.texts {
		if v.texts[i] != o.texts[i] {
			return fmt.Errorf("engine: vocabularies differ at token %d: %q vs %q", i, v.texts[i], o.texts[i])
		}
	}
	return nil
}
