package specdec

import (
	"math"
	"slices"
)

// Bounds OpenAI puts on logit_bias values and on presence_penalty and
// frequency_penalty.
const (
	MaxLogitBias = 100 // -100 in effect bans a token, +100 all but forces it
	MaxPenalty   = 2
	// MaxRepeatPenalty bounds llama.cpp's repeat_penalty (1 = off).
	MaxRepeatPenalty = 10
)

// Adjust is what a request adds to the model's logits before anything
// reads them: OpenAI's logit_bias (a value per token) and its
// presence_penalty and frequency_penalty over the sequence's generated
// tokens (not its prompt, as vLLM): the logit of a token generated c > 0
// times so far drops by presence + c·frequency.
//
// In a verify pass, row j predicts the token after draft[:j], so its
// penalties count those draft tokens too: a draft token is only kept when
// every token before it was, so each row is adjusted for exactly the text
// it continues, and Verify over the adjusted rows gives the adjusted
// target's output token for token (the proposals' q is whatever they were
// drawn from; adjusting the draft model's rows alike keeps its proposals
// acceptable). Apply and Restore adjust rows in place and put back the
// exact values, so that logprobs (decision 0015) still see the model's own
// logits. A nil *Adjust does nothing.
type Adjust struct {
	biasTok []int32 // sorted
	biasVal []float32

	presence, frequency float32
	penalise            bool
	// The generated tokens (penalise only): distinct ones in order of
	// first appearance, their counts, and where each is in toks.
	toks  []int32
	cnt   []int32
	index map[int32]int

	// llama.cpp's repeat_penalty over the last lastN tokens of prompt and
	// output (WithRepeat): hist holds them (and the draft tokens of the
	// row being adjusted), win counts each token's occurrences among the
	// last lastN of hist.
	repeat float32
	lastN  int
	hist   []int32
	win    map[int32]int32

	// vLLM's min_tokens (WithMinTokens): while fewer than minTokens tokens
	// are generated (gen, plus extra draft tokens before the row being
	// adjusted), the tokens in ban cannot be chosen.
	minTokens  int
	ban        []int32
	gen, extra int

	saved []saved
}

type saved struct {
	row, tok int32
	v        float32
}

// NewAdjust makes a request's adjustment from its logit_bias (tokens in
// [0, vocab), values within ±MaxLogitBias) and penalties (within
// ±MaxPenalty), as the caller validated. Nil when there is none.
func NewAdjust(bias map[int32]float32, presence, frequency float32) *Adjust {
	if len(bias) == 0 && presence == 0 && frequency == 0 {
		return nil
	}
	a := &Adjust{presence: presence, frequency: frequency, penalise: presence != 0 || frequency != 0}
	for t := range bias {
		a.biasTok = append(a.biasTok, t)
	}
	slices.Sort(a.biasTok)
	for _, t := range a.biasTok {
		a.biasVal = append(a.biasVal, bias[t])
	}
	if a.penalise {
		a.index = map[int32]int{}
	}
	return a
}

// WithRepeat adds llama.cpp's repeat_penalty to a (nil: a new Adjust):
// each distinct token among the last lastN tokens of prompt and output has
// its logit divided by penalty if positive, multiplied if not, before the
// presence and frequency penalties, as llama.cpp's penalties sampler does
// (llama-server feeds it the prompt too). penalty 1 or lastN 0 is off.
func (a *Adjust) WithRepeat(penalty float32, lastN int, prompt []int32) *Adjust {
	if penalty == 1 || lastN == 0 {
		return a
	}
	if a == nil {
		a = &Adjust{}
	}
	a.repeat, a.lastN, a.win = penalty, lastN, map[int32]int32{}
	a.hist = make([]int32, 0, min(lastN, len(prompt))+64)
	for _, t := range prompt[max(0, len(prompt)-lastN):] {
		a.push(t)
	}
	return a
}

// WithMinTokens adds vLLM's min_tokens to a (nil: a new Adjust): rows
// predicting one of the first n generated tokens get -Inf for the tokens in
// ban (end-of-generation and stop tokens). n <= 0 or no ban is off.
func (a *Adjust) WithMinTokens(n int, ban []int32) *Adjust {
	if n <= 0 || len(ban) == 0 {
		return a
	}
	if a == nil {
		a = &Adjust{}
	}
	a.minTokens, a.ban = n, slices.Compact(slices.Sorted(slices.Values(ban)))
	return a
}

// push appends t to the repeat window's history, sliding out the token
// that leaves the last lastN; pop undoes the newest push.
func (a *Adjust) push(t int32) {
	a.hist = append(a.hist, t)
	a.win[t]++
	if n := len(a.hist); n > a.lastN {
		out := a.hist[n-1-a.lastN]
		if a.win[out]--; a.win[out] == 0 {
			delete(a.win, out)
		}
	}
}

func (a *Adjust) pop() {
	n := len(a.hist)
	t := a.hist[n-1]
	if a.win[t]--; a.win[t] == 0 {
		delete(a.win, t)
	}
	if n > a.lastN {
		a.win[a.hist[n-1-a.lastN]]++
	}
	a.hist = a.hist[:n-1]
}

// Accept counts generated tokens (for the penalties).
func (a *Adjust) Accept(toks []int32) {
	if a == nil {
		return
	}
	a.gen += len(toks)
	for _, t := range toks {
		if a.penalise {
			a.add(t)
		}
		if a.win != nil {
			a.push(t)
			if len(a.hist) >= 2*a.lastN+256 { // keep the history short
				a.hist = append(a.hist[:0], a.hist[len(a.hist)-a.lastN:]...)
			}
		}
	}
}

// draftPush and draftPop count (uncount) a draft token for the penalties
// of the rows after it.
func (a *Adjust) draftPush(t int32) {
	a.extra++
	if a.penalise {
		a.add(t)
	}
	if a.win != nil {
		a.push(t)
	}
}

func (a *Adjust) draftPop(t int32) {
	a.extra--
	if a.penalise {
		a.remove(t)
	}
	if a.win != nil {
		a.pop()
	}
}

func (a *Adjust) add(t int32) {
	if i, ok := a.index[t]; ok {
		a.cnt[i]++
		return
	}
	a.index[t] = len(a.toks)
	a.toks = append(a.toks, t)
	a.cnt = append(a.cnt, 1)
}

// remove undoes the last add of t (adds are undone newest first).
func (a *Adjust) remove(t int32) {
	i := a.index[t]
	if a.cnt[i]--; a.cnt[i] == 0 {
		delete(a.index, t)
		a.toks, a.cnt = a.toks[:i], a.cnt[:i] // t was the newest distinct token
	}
}

// row adjusts one row for the tokens counted now, saving what it
// overwrites as row j when save.
func (a *Adjust) row(j int, row []float32, save bool) {
	for i, t := range a.biasTok {
		if int(t) < len(row) {
			if save {
				a.saved = append(a.saved, saved{int32(j), t, row[t]})
			}
			row[t] += a.biasVal[i]
		}
	}
	for t := range a.win {
		if int(t) < len(row) {
			if save {
				a.saved = append(a.saved, saved{int32(j), t, row[t]})
			}
			if row[t] <= 0 {
				row[t] *= a.repeat
			} else {
				row[t] /= a.repeat
			}
		}
	}
	for i, t := range a.toks {
		if int(t) < len(row) {
			if save {
				a.saved = append(a.saved, saved{int32(j), t, row[t]})
			}
			row[t] -= a.presence + float32(a.cnt[i])*a.frequency
		}
	}
	if a.gen+a.extra < a.minTokens {
		for _, t := range a.ban {
			if int(t) < len(row) {
				if save {
					a.saved = append(a.saved, saved{int32(j), t, row[t]})
				}
				row[t] = float32(math.Inf(-1))
			}
		}
	}
}

// Apply adjusts rows in place, rows[j] for the generated tokens plus
// draft[:j] (len(draft) >= len(rows)-1 when there are penalties or
// min_tokens), and keeps the values it overwrote for Restore (the draft
// tokens are read only with penalties or min_tokens).
func (a *Adjust) Apply(rows [][]float32, draft []int32) {
	if a == nil {
		return
	}
	a.saved = a.saved[:0]
	counts := a.penalise || a.win != nil || a.minTokens > 0
	for j, row := range rows {
		if j > 0 && counts {
			a.draftPush(draft[j-1])
		}
		a.row(j, row, true)
	}
	for j := len(rows) - 1; j > 0 && counts; j-- {
		a.draftPop(draft[j-1])
	}
}

// Restore puts back the values the last Apply over the same rows changed,
// newest first (a token both biased and penalised gets its first value).
func (a *Adjust) Restore(rows [][]float32) {
	if a == nil {
		return
	}
	for i := len(a.saved) - 1; i >= 0; i-- {
		s := a.saved[i]
		rows[s.row][s.tok] = s.v
	}
}

// Add adjusts one row in place for the generated tokens plus draft (a row
// nobody reads unadjusted afterwards: the draft model's).
func (a *Adjust) Add(row []float32, draft []int32) {
	if a == nil {
		return
	}
	for _, d := range draft {
		a.draftPush(d)
	}
	a.row(0, row, false)
	for j := len(draft) - 1; j >= 0; j-- {
		a.draftPop(draft[j])
	}
}
