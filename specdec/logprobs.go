package specdec

import (
	"math"
	"slices"
)

// MaxTopLogprobs is the most alternatives Logprobs reports per token
// (OpenAI's top_logprobs limit).
const MaxTopLogprobs = 20

// TokenLogprob is a token and its log-probability.
type TokenLogprob struct {
	Token   int32
	Logprob float32
}

// Logprobs returns log p(tok) under the model's own distribution over the
// row of logits (log-softmax at temperature 1, no truncation: what OpenAI,
// vLLM and llama-server report, whatever the request's sampling settings)
// and appends to top the n most likely tokens, most likely first, ties to
// the lower id. NaN logits count as -Inf and are never among the top. It
// allocates only when top lacks capacity for n.
func Logprobs(logits []float32, tok int32, n int, top []TokenLogprob) (float32, []TokenLogprob) {
	m := maxOf(logits)
	if len(logits) == 0 || math.IsInf(float64(m), -1) || tok < 0 || int(tok) >= len(logits) {
		return float32(math.Inf(-1)), top
	}
	// Sum in four partial sums (expAll's reasoning) of exp(l - m) <= 1.
	var z0, z1, z2, z3 float64
	i := 0
	for ; i+4 <= len(logits); i += 4 {
		v := logits[i : i+4 : i+4]
		z0 += float64(expLow(v[0] - m))
		z1 += float64(expLow(v[1] - m))
		z2 += float64(expLow(v[2] - m))
		z3 += float64(expLow(v[3] - m))
	}
	for ; i < len(logits); i++ {
		z0 += float64(expLow(logits[i] - m))
	}
	lse := float64(m) + math.Log((z0+z1)+(z2+z3))
	lp := func(l float32) float32 {
		if l != l { // NaN
			return float32(math.Inf(-1))
		}
		return float32(min(float64(l)-lse, 0))
	}

	n = min(n, len(logits))
	if n > 0 {
		base := len(top)
		top = slices.Grow(top, n)
		h := top[base : base : base+n] // sorted, most likely first
		for j, l := range logits {
			k := len(h)
			if l != l || (k == n && !(l > h[k-1].Logprob)) {
				continue
			}
			if k < n {
				h = h[:k+1]
			} else {
				k--
			}
			for ; k > 0 && l > h[k-1].Logprob; k-- {
				h[k] = h[k-1]
			}
			h[k] = TokenLogprob{Token: int32(j), Logprob: l}
		}
		for j := range h {
			h[j].Logprob = lp(h[j].Logprob)
		}
		top = top[:base+len(h)]
	}
	return lp(logits[tok]), top
}
