package specdec

// Verify decides how many draft tokens to keep and the token that follows.
//
// target has len(draft)+1 rows of the target's logits: row i is the target's
// prediction for the position of draft[i], the last row for the position
// after the whole draft. q holds the draft's distributions per position
// (each made by Dist with this sampler's parameters), or nil for a
// point-mass proposer (n-gram, prediction). Verify appends the accepted
// draft tokens and then exactly one more token to out, and returns out and
// the number accepted. It allocates nothing when out has room for
// len(draft)+1 more tokens.
//
// Greedy: draft tokens are kept while each equals the target's argmax, then
// the argmax at the first mismatch (or after the last row) follows, so the
// output is token for token the target's greedy output.
//
// Sampling with q: speculative (rejection) sampling; x = draft[i] is kept
// with probability min(1, p(x)/q(x)); on rejection the token is drawn from
// normalize(max(0, p-q)); if all are kept a bonus token is drawn from the
// last row's p. The rejection draw reuses the acceptance uniform rescaled to
// [0,1), so each emitted token costs exactly one uniform of the stream.
//
// Sampling without q: the token at each position is drawn from p by the same
// inverse CDF as Sample and kept as "accepted" when it equals the draft
// token. That is rejection sampling with a point-mass q (accept with
// probability p(x); otherwise a draw from p without x), and it consumes the
// emission stream exactly as plain Sample would: with a seed, n-gram and
// prediction speculation produce the same text as no speculation at all.
func (s *Sampler) Verify(draft []int32, q [][]float32, target [][]float32, out []int32) (tokens []int32, accepted int) {
	if len(target) != len(draft)+1 {
		panic("specdec: Verify needs len(draft)+1 target rows")
	}
	if q != nil && len(q) < len(draft) {
		panic("specdec: Verify needs a q row per draft token")
	}
	if s.greedy {
		for i, x := range draft {
			t := Argmax(target[i])
			out = append(out, t)
			if t != x {
				return out, i
			}
		}
		return append(out, Argmax(target[len(draft)])), len(draft)
	}
	for i, x := range draft {
		s.prepare(target[i])
		u := uniform(&s.rng)
		var qx float64
		if q != nil && int(x) >= 0 && int(x) < len(q[i]) {
			qx = float64(q[i][x])
		}
		if qx <= 0 {
			// Point mass (or a draft token its own q calls impossible, where
			// the point-mass rule is still lossless).
			t := s.pick(u)
			out = append(out, t)
			if t != x {
				return out, i
			}
			continue
		}
		r := s.prob(x) / qx
		if u < r {
			out = append(out, x)
			continue
		}
		// u is uniform on [r, 1) given the rejection.
		return append(out, s.residual(q[i], (u-r)/(1-r))), i
	}
	s.prepare(target[len(draft)])
	return append(out, s.pick(uniform(&s.rng))), len(draft)
}

// residual draws from normalize(max(0, p-q)) with uniform u. p-q > 0 only
// where p > 0, so the kept set is all it needs to scan.
func (s *Sampler) residual(q []float32, u float64) int32 {
	w := s.ws
	inv := 1 / w.z
	var sum float64
	for j, t := range w.cidx[:w.n] {
		if d := float64(w.cw[j])*inv - qAt(q, t); d > 0 {
			sum += d
		}
	}
	if !(sum > 0) {
		// p == q up to rounding: rejection had probability ~0; p is the
		// limit of the residual's shape.
		return s.pick(u)
	}
	target := u * sum
	var cum float64
	last := int32(-1)
	for j, t := range w.cidx[:w.n] {
		if d := float64(w.cw[j])*inv - qAt(q, t); d > 0 {
			cum += d
			last = t
			if target < cum {
				return t
			}
		}
	}
	return last
}

func qAt(q []float32, t int32) float64 {
	if int(t) < len(q) {
		return float64(q[t])
	}
	return 0
}
