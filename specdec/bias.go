package specdec

import "slices"

// MaxLogitBias bounds each bias, as OpenAI does: -100 in effect bans a
// token, +100 all but forces it.
const MaxLogitBias = 100

// LogitBias is OpenAI's logit_bias: values added to the logits of given
// tokens before anything reads them. Verify over biased target rows gives
// the biased target's output (the proposals' q is whatever they were drawn
// from); biasing the draft's rows alike keeps its proposals acceptable.
// Apply and Restore bias rows in place and put back the exact values, so
// that logprobs (decision 0015) still see the model's own logits. A nil
// *LogitBias biases nothing.
type LogitBias struct {
	tok   []int32
	bias  []float32
	saved []float32
}

// NewLogitBias makes a bias from token → value (tokens in [0, vocab),
// values within ±MaxLogitBias, as the caller validated). Nil for none.
func NewLogitBias(m map[int32]float32) *LogitBias {
	if len(m) == 0 {
		return nil
	}
	b := &LogitBias{}
	for t := range m {
		b.tok = append(b.tok, t)
	}
	slices.Sort(b.tok)
	for _, t := range b.tok {
		b.bias = append(b.bias, m[t])
	}
	return b
}

// Add biases one row in place (rows nobody reads unbiased afterwards: the
// draft's).
func (b *LogitBias) Add(row []float32) {
	if b == nil {
		return
	}
	for i, t := range b.tok {
		if int(t) < len(row) {
			row[t] += b.bias[i]
		}
	}
}

// Apply biases rows in place, keeping the values it overwrote for Restore.
func (b *LogitBias) Apply(rows [][]float32) {
	if b == nil {
		return
	}
	b.saved = b.saved[:0]
	for _, row := range rows {
		for i, t := range b.tok {
			if int(t) < len(row) {
				b.saved = append(b.saved, row[t])
				row[t] += b.bias[i]
			}
		}
	}
}

// Restore puts back the values the last Apply over the same rows changed.
func (b *LogitBias) Restore(rows [][]float32) {
	if b == nil {
		return
	}
	n := 0
	for _, row := range rows {
		for _, t := range b.tok {
			if int(t) < len(row) {
				row[t] = b.saved[n]
				n++
			}
		}
	}
}
