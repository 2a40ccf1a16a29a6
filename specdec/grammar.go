package specdec

import (
	"errors"
	"math"
)

// Grammar limits which tokens may come next (a compiled grammar: GBNF,
// JSON, a JSON schema) and follows the text token by token. The engine's
// llama.cpp grammar implements it.
type Grammar interface {
	// Mask sets to -Inf the entries of a row of logits whose tokens may
	// not come next and returns how many it left (unchanged).
	Mask(row []float32) int
	// Allowed reports whether t may come next (an end-of-generation token
	// where the text may end).
	Allowed(t int32) bool
	// Accept advances past t; an error, and no change, if t is not
	// allowed. An end-of-generation token changes nothing.
	Accept(t int32) error
	// Clone is an independent copy in the current state.
	Clone() (Grammar, error)
	// Err is a failure that made the grammar unusable (Mask then allows
	// nothing), or nil.
	Err() error
	Free()
}

// ErrGrammarDeadEnd: the grammar allows no token of the vocabulary next.
var ErrGrammarDeadEnd = errors.New("the grammar allows no token of the model's vocabulary here")

// ConstrainRows masks verify rows under a grammar: rows[j], which predicts
// the token after draft[:j], gets the grammar's state after those draft
// tokens. It returns how many leading draft tokens to verify: up to the
// first one the grammar refuses, which the masked target gives probability
// 0 (greedy verification would not pick it; rejection sampling would
// reject it and resample from the target, as for a proposal that is a
// point mass, or from a draft model whose rows were masked alike, which
// never proposes it). Rows past the returned count are left as they were.
//
// A row the grammar leaves empty ends the chain one token earlier (that
// draft token leads nowhere); an empty first row is ErrGrammarDeadEnd.
// g itself is not advanced.
//
// greedy (verification by argmax) skips masking a row whose argmax the
// grammar allows: the masked row's argmax is the same token. Masking a
// whole row asks the grammar about every token of the vocabulary (55-73 µs
// for 512 tokens, BenchmarkGrammar); one token costs about 4 µs.
func ConstrainRows(g Grammar, rows [][]float32, draft []int32, greedy bool) (int, error) {
	if len(draft) == 0 {
		if greedy && g.Allowed(Argmax(rows[0])) {
			return 0, nil
		}
		if g.Mask(rows[0]) == 0 {
			return 0, deadEnd(g)
		}
		return 0, nil
	}
	c, err := g.Clone()
	if err != nil {
		return 0, err
	}
	defer c.Free()
	for j := 0; ; j++ {
		if greedy {
			if a := Argmax(rows[j]); c.Allowed(a) {
				// Verification keeps draft[j] only if it is a.
				if j == len(draft) || draft[j] != a || c.Accept(a) != nil {
					return j, nil
				}
				continue
			}
		}
		if c.Mask(rows[j]) == 0 {
			if err := c.Err(); err != nil || j == 0 {
				return 0, deadEnd(c)
			}
			return j - 1, nil
		}
		if j == len(draft) || math.IsInf(float64(rows[j][draft[j]]), -1) || c.Accept(draft[j]) != nil {
			return j, nil
		}
	}
}

// deadEnd is why g allowed nothing: its failure, else ErrGrammarDeadEnd.
func deadEnd(g Grammar) error {
	if err := g.Err(); err != nil {
		return err
	}
	return ErrGrammarDeadEnd
}
