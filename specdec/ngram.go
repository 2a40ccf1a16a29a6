package specdec

import "fmt"

// NGram proposes by prompt lookup: it finds the most recent earlier
// occurrence of the longest suffix of the sequence (MaxN down to MinN
// tokens) in the sequence's own prompt and output and proposes the tokens
// that followed it. It is a pure function of the history. Zero fields take
// the defaults (MinN 1, MaxN 4: llama.cpp's LLAMA_NGRAM_MIN/MAX and vLLM's
// prompt_lookup_min default).
type NGram struct {
	MinN, MaxN int
}

// NGram defaults.
const (
	DefaultNGramMin = 1
	DefaultNGramMax = 4
)

func (g NGram) withDefaults() NGram {
	if g.MinN == 0 {
		g.MinN = DefaultNGramMin
	}
	if g.MaxN == 0 {
		g.MaxN = max(DefaultNGramMax, g.MinN)
	}
	return g
}

// Validate checks 1 <= MinN <= MaxN after defaults.
func (g NGram) Validate() error {
	d := g.withDefaults()
	if d.MinN < 1 || d.MaxN < d.MinN {
		return fmt.Errorf("specdec: ngram sizes %d..%d (want 1 <= min <= max)", g.MinN, g.MaxN)
	}
	return nil
}

// Propose appends up to k proposed tokens to dst[:0] and returns it (empty
// when no n-gram of at least MinN tokens recurs). history is the prompt
// followed by the output so far, ending with the newest token. When the
// continuation runs into the end of history it continues with the tokens
// it has just proposed, so a repeating pattern is proposed in full.
// O(len(history)) per call, no allocation when dst has room for k.
func (g NGram) Propose(history []int32, k int, dst []int32) []int32 {
	g = g.withDefaults()
	dst = dst[:0]
	L := len(history)
	if k <= 0 || L < g.MinN+1 {
		return dst
	}
	last := history[L-1]
	bestEnd, bestN := -1, 0
	// e is the last token of a candidate match; scanning backwards makes the
	// first match of each length the most recent one.
	for e := L - 2; e >= 0; e-- {
		if history[e] != last {
			continue
		}
		n := 1
		for n < g.MaxN && e-n >= 0 && history[e-n] == history[L-1-n] {
			n++
		}
		if n > bestN {
			bestEnd, bestN = e, n
			if n == g.MaxN {
				break
			}
		}
	}
	if bestN < g.MinN {
		return dst
	}
	for i := 0; i < k; i++ {
		src := bestEnd + 1 + i
		if src < L {
			dst = append(dst, history[src])
		} else {
			dst = append(dst, dst[src-L])
		}
	}
	return dst
}
