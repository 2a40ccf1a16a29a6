package specdec

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// SamplingParams are a request's sampling settings; the fields match
// scheduler.Sampling.
type SamplingParams struct {
	Temperature float32 // 0 = greedy (argmax)
	TopK        int     // 0 = off; 1 = greedy
	TopP        float32 // 0 or 1 = off
	MinP        float32 // 0 = off
	Seed        uint64  // the request's random stream; same seed, same output
}

// ErrBadParams wraps every SamplingParams.Validate failure.
var ErrBadParams = errors.New("specdec: invalid sampling parameters")

// Validate reports parameters no sampler can honour.
func (p SamplingParams) Validate() error {
	t := float64(p.Temperature)
	switch {
	case math.IsNaN(t) || math.IsInf(t, 0) || t < 0:
		return fmt.Errorf("%w: temperature %v (want finite, >= 0)", ErrBadParams, p.Temperature)
	case p.TopK < 0:
		return fmt.Errorf("%w: top_k %d (want >= 0)", ErrBadParams, p.TopK)
	case !(p.TopP >= 0 && p.TopP <= 1):
		return fmt.Errorf("%w: top_p %v (want 0..1)", ErrBadParams, p.TopP)
	case !(p.MinP >= 0 && p.MinP <= 1):
		return fmt.Errorf("%w: min_p %v (want 0..1)", ErrBadParams, p.MinP)
	}
	return nil
}

// Greedy reports whether p picks the argmax: temperature 0, or top-k 1
// (which keeps only the argmax whatever the temperature).
func (p SamplingParams) Greedy() bool { return p.Temperature == 0 || p.TopK == 1 }

// Argmax returns the index of the largest logit; ties go to the lowest
// index, the same order the truncations use. -1 for an empty row.
func Argmax(logits []float32) int32 {
	if len(logits) == 0 {
		return -1
	}
	m := maxOf(logits)
	for i, v := range logits {
		if v == m {
			return int32(i)
		}
	}
	return 0 // all NaN
}

// maxOf is the largest value (NaN ignored; -Inf if none). Four running
// maxima break the loop-carried dependency of a single one (~4x faster on a
// 150k row); the find-first pass in Argmax is a compare-only scan.
func maxOf(l []float32) float32 {
	inf := float32(math.Inf(-1))
	m0, m1, m2, m3 := inf, inf, inf, inf
	i := 0
	for ; i+4 <= len(l); i += 4 {
		v := l[i : i+4 : i+4]
		if v[0] > m0 {
			m0 = v[0]
		}
		if v[1] > m1 {
			m1 = v[1]
		}
		if v[2] > m2 {
			m2 = v[2]
		}
		if v[3] > m3 {
			m3 = v[3]
		}
	}
	for ; i < len(l); i++ {
		if l[i] > m0 {
			m0 = l[i]
		}
	}
	return max(m0, m1, m2, m3)
}

// Workspace is the per-vocabulary scratch a Sampler works in. Samplers that
// share one must not run concurrently; the scheduler, one goroutine, can
// give every request's Sampler the same Workspace and save ~12 bytes per
// vocabulary entry per request (1.8 MB per request at 152k tokens).
type Workspace struct {
	cidx []int32   // kept token ids, ascending
	cw   []float32 // their weights at the final temperature (unnormalized)
	e    []float32 // exp(l-m) at temperature 1 over the whole vocabulary (top-p without top-k)
	cand []cand    // top-k heap / boundary bucket of the top-p search
	n    int       // kept count after prepare
	z    float64   // sum of cw[:n]
}

// NewWorkspace returns scratch for vocabularies up to nVocab tokens (larger
// logit rows make it grow once).
func NewWorkspace(nVocab int) *Workspace {
	w := &Workspace{}
	w.grow(nVocab)
	return w
}

func (w *Workspace) grow(n int) {
	if cap(w.cidx) >= n {
		return
	}
	w.cidx = make([]int32, n)
	w.cw = make([]float32, n)
	w.e = make([]float32, n)
	w.cand = make([]cand, 0, n)
}

// cand is a (logit, token) pair. The truncations order tokens by logit
// descending, then token id ascending, so ties resolve the same way
// everywhere (Argmax, top-k, top-p) and top-k keeps exactly k tokens.
type cand struct {
	l float32
	i int32
}

// better reports whether a ranks before b.
func better(a, b cand) bool { return a.l > b.l || (a.l == b.l && a.i < b.i) }

func cmpCand(a, b cand) int {
	if better(a, b) {
		return -1
	}
	if better(b, a) {
		return 1
	}
	return 0
}

// Sampler samples one request's tokens. It owns the request's two random
// streams: the emission stream (Sample, SampleDist, Verify: exactly one
// uniform per emitted token) and the proposal stream (SampleDraft), so how
// many draft tokens were sampled never shifts the emission stream. Not safe
// for concurrent use.
type Sampler struct {
	p       SamplingParams
	greedy  bool
	invT    float32
	logMinP float32 // -Inf when min-p is off
	topP    float64 // 1 when off
	rng     rand.PCG
	draft   rand.PCG
	ws      *Workspace
}

// NewSampler returns a sampler with its own Workspace for nVocab tokens.
// p should have passed Validate. Seed is used as given: the caller picks a
// random one for requests that did not ask for reproducibility.
func NewSampler(p SamplingParams, nVocab int) *Sampler {
	return NewSamplerIn(p, NewWorkspace(nVocab))
}

// NewSamplerIn returns a sampler working in ws (shared, see Workspace).
func NewSamplerIn(p SamplingParams, ws *Workspace) *Sampler {
	s := &Sampler{p: p, greedy: p.Greedy(), ws: ws, topP: 1, logMinP: float32(math.Inf(-1))}
	if !s.greedy {
		s.invT = 1 / p.Temperature
	}
	if p.TopP > 0 && p.TopP < 1 {
		s.topP = float64(p.TopP)
	}
	if p.MinP > 0 {
		s.logMinP = float32(math.Log(float64(p.MinP)))
	}
	// Two PCG streams from one seed; the constants only make them differ.
	s.rng.Seed(p.Seed, 0x9e3779b97f4a7c15)
	s.draft.Seed(p.Seed^0xd1b54a32d192ed03, 0xbf58476d1ce4e5b9)
	return s
}

// Params returns the sampler's parameters.
func (s *Sampler) Params() SamplingParams { return s.p }

// Greedy reports whether the sampler picks the argmax (no randomness used).
func (s *Sampler) Greedy() bool { return s.greedy }

func uniform(r *rand.PCG) float64 { return float64(r.Uint64()>>11) * 0x1p-53 }

// Dist writes the transformed distribution over the whole vocabulary into
// dst (grown if short) and returns it: 0 outside the kept set, sums to 1;
// for a greedy sampler a one-hot at the argmax. It uses no randomness.
func (s *Sampler) Dist(logits []float32, dst []float32) []float32 {
	dst, _ = s.DistTop(logits, dst)
	return dst
}

// DistTop is Dist that also returns the distribution's largest
// probability, found on the kept set (no second pass over the vocabulary).
func (s *Sampler) DistTop(logits []float32, dst []float32) ([]float32, float32) {
	n := len(logits)
	if cap(dst) < n {
		dst = make([]float32, n)
	}
	dst = dst[:n]
	clear(dst)
	if s.greedy {
		dst[Argmax(logits)] = 1
		return dst, 1
	}
	s.prepare(logits)
	w := s.ws
	inv := 1 / w.z
	top := float32(0)
	for j, t := range w.cidx[:w.n] {
		p := float32(float64(w.cw[j]) * inv)
		dst[t] = p
		top = max(top, p)
	}
	return dst, top
}

// Sample draws the next token from logits (one uniform of the emission
// stream; none if greedy).
func (s *Sampler) Sample(logits []float32) int32 {
	if s.greedy {
		return Argmax(logits)
	}
	s.prepare(logits)
	return s.pick(uniform(&s.rng))
}

// SampleDist draws from a prepared distribution p (e.g. from Dist) by
// inverse CDF in token order, with one uniform of the emission stream.
func (s *Sampler) SampleDist(p []float32) int32 { return sampleDist(p, uniform(&s.rng)) }

// SampleDraft draws a draft token from q (the draft model's Dist row) with
// the proposal stream. The draft-model proposer calls it once per draft
// position; Verify then needs the same q rows.
func (s *Sampler) SampleDraft(q []float32) int32 { return sampleDist(q, uniform(&s.draft)) }

func sampleDist(p []float32, u float64) int32 {
	var z float64
	for _, v := range p {
		z += float64(v)
	}
	target := u * z
	var cum float64
	last := int32(-1)
	for i, v := range p {
		if v <= 0 {
			continue
		}
		cum += float64(v)
		last = int32(i)
		if target < cum {
			return last
		}
	}
	return last // rounding: the last token with mass
}

// prepare computes the kept set of logits into the workspace: cidx[:n] in
// ascending token order with their unnormalized final weights cw and their
// sum z. Order of the transforms is llama.cpp's default chain (top-k, top-p,
// min-p, then temperature), so top-p and min-p see the temperature-1
// distribution; the same choice llama-server makes, which keeps quality
// comparisons against it like for like.
func (s *Sampler) prepare(logits []float32) {
	w := s.ws
	w.grow(len(logits))
	if k := s.p.TopK; k > 0 && k < len(logits) {
		s.prepareTopK(logits, k)
		return
	}
	s.prepareFull(logits)
}

func (s *Sampler) single(t int32) {
	w := s.ws
	w.cidx[0], w.cw[0], w.n, w.z = t, 1, 1, 1
}

// prepareTopK: heap-select the k best, then everything else on k entries.
func (s *Sampler) prepareTopK(logits []float32, k int) {
	w := s.ws
	h := w.cand[:k]
	for i := range h {
		h[i] = cand{logits[i], int32(i)}
	}
	// Min-heap on "better": h[0] is the worst of the k kept so far.
	for i := k/2 - 1; i >= 0; i-- {
		siftDown(h, i)
	}
	root := h[0].l
	for i := k; i < len(logits); i++ {
		// A later token with an equal logit ranks worse, so only strictly
		// larger logits can enter: one compare per token on the hot path.
		if l := logits[i]; l > root {
			h[0] = cand{l, int32(i)}
			siftDown(h, 0)
			root = h[0].l
		}
	}
	slices.SortFunc(h, cmpCand)
	m := h[0].l
	if math.IsInf(float64(m), -1) || m != m {
		s.single(h[0].i)
		return
	}
	n := k
	e := w.e[:k]
	if s.topP < 1 {
		var z1 float64
		for j := range h {
			e[j] = expLow(h[j].l - m)
			z1 += float64(e[j])
		}
		target, cum := s.topP*z1, 0.0
		for j := range h {
			cum += float64(e[j])
			if cum >= target {
				n = j + 1
				break
			}
		}
	}
	if thr := m + s.logMinP; s.logMinP > float32(math.Inf(-1)) {
		for j := 1; j < n; j++ {
			if h[j].l < thr {
				n = j
				break
			}
		}
	}
	kept := h[:n]
	slices.SortFunc(kept, func(a, b cand) int { return int(a.i - b.i) })
	var z float64
	for j, c := range kept {
		x := expLow((c.l - m) * s.invT)
		w.cidx[j], w.cw[j] = c.i, x
		z += float64(x)
	}
	w.n, w.z = n, z
}

func siftDown(h []cand, i int) {
	n := len(h)
	for {
		c := 2*i + 1
		if c >= n {
			return
		}
		// pick the worse child
		if c+1 < n && better(h[c], h[c+1]) {
			c++
		}
		if !better(h[i], h[c]) {
			return
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
}

// prepareFull: no top-k. Top-p needs the temperature-1 normalizer over the
// whole vocabulary; instead of sorting it, a histogram of the float32
// exponents of exp(l-m) (mass per power-of-two band) finds the band where
// the cumulative mass crosses top_p, and only that band is sorted.
func (s *Sampler) prepareFull(logits []float32) {
	w := s.ws
	V := len(logits)
	m := maxOf(logits)
	if math.IsInf(float64(m), -1) || m != m {
		s.single(Argmax(logits))
		return
	}
	thr := m + s.logMinP                         // -Inf when min-p is off
	cut := cand{float32(math.Inf(-1)), int32(V)} // keep keys ranking at or before cut
	e := w.e[:V]
	if s.topP < 1 {
		cut = s.nucleusCut(logits, m, e)
	}
	if math.IsInf(float64(thr), -1) && math.IsInf(float64(cut.l), -1) {
		// Nothing truncated: the whole vocabulary, one exp per token.
		w.n, w.z = V, expAll(w.cidx[:V], w.cw[:V], logits, m, s.invT)
		return
	}
	var z float64
	n := 0
	reuse := s.invT == 1 && s.topP < 1
	invT := s.invT
	cidx, cw := w.cidx[:V], w.cw[:V]
	for i, l := range logits {
		if l < thr || l < cut.l || (l == cut.l && int32(i) > cut.i) {
			continue
		}
		var x float32
		if reuse {
			x = e[i]
		} else {
			x = expLow((l - m) * invT)
		}
		cidx[n], cw[n] = int32(i), x
		z += float64(x)
		n++
	}
	w.n, w.z = n, z
}

// expAll sets idx[i] = i and w[i] = exp((l[i]-m)·invT) and returns the sum,
// in four partial sums so the additions do not serialise the loop.
func expAll(idx []int32, w, l []float32, m, invT float32) float64 {
	var z0, z1, z2, z3 float64
	i := 0
	for ; i+4 <= len(l); i += 4 {
		v := l[i : i+4 : i+4]
		o := w[i : i+4 : i+4]
		x := idx[i : i+4 : i+4]
		o[0] = expLow((v[0] - m) * invT)
		o[1] = expLow((v[1] - m) * invT)
		o[2] = expLow((v[2] - m) * invT)
		o[3] = expLow((v[3] - m) * invT)
		x[0], x[1], x[2], x[3] = int32(i), int32(i+1), int32(i+2), int32(i+3)
		z0 += float64(o[0])
		z1 += float64(o[1])
		z2 += float64(o[2])
		z3 += float64(o[3])
	}
	for ; i < len(l); i++ {
		w[i] = expLow((l[i] - m) * invT)
		idx[i] = int32(i)
		z0 += float64(w[i])
	}
	return (z0 + z1) + (z2 + z3)
}

// nucleusCut finds the last key of the top-p nucleus over the whole
// vocabulary, filling e with exp(l-m). A histogram of the float32 exponents
// of e (mass per power-of-two band; four copies so consecutive tokens in
// the same band do not wait on each other's store) finds the band where the
// cumulative mass crosses top_p; only that band is sorted.
func (s *Sampler) nucleusCut(logits []float32, m float32, e []float32) cand {
	var hist [4][256]float64
	i := 0
	for ; i+4 <= len(logits); i += 4 {
		v := logits[i : i+4 : i+4]
		o := e[i : i+4 : i+4]
		o[0] = expLow(v[0] - m)
		o[1] = expLow(v[1] - m)
		o[2] = expLow(v[2] - m)
		o[3] = expLow(v[3] - m)
		hist[0][math.Float32bits(o[0])>>23&0xff] += float64(o[0])
		hist[1][math.Float32bits(o[1])>>23&0xff] += float64(o[1])
		hist[2][math.Float32bits(o[2])>>23&0xff] += float64(o[2])
		hist[3][math.Float32bits(o[3])>>23&0xff] += float64(o[3])
	}
	for ; i < len(logits); i++ {
		e[i] = expLow(logits[i] - m)
		hist[0][math.Float32bits(e[i])>>23&0xff] += float64(e[i])
	}
	var band [256]float64
	var z1 float64
	for b := range band {
		band[b] = (hist[0][b] + hist[1][b]) + (hist[2][b] + hist[3][b])
		z1 += band[b]
	}
	target, cum := s.topP*z1, 0.0
	bi := -1
	for b := 255; b >= 0; b-- {
		if cum+band[b] >= target {
			bi = b
			break
		}
		cum += band[b]
	}
	cut := cand{float32(math.Inf(-1)), int32(len(logits))}
	if bi < 0 { // rounding: keep everything
		return cut
	}
	c := s.ws.cand[:0]
	for i, x := range e {
		if int(math.Float32bits(x)>>23&0xff) == bi {
			c = append(c, cand{logits[i], int32(i)})
		}
	}
	if len(c) > 1024 {
		// A wide band (a flat tail holding much of the mass): narrow it by
		// the top 8 mantissa bits, which order values within one exponent.
		c, cum = narrowBand(c, e, cum, target)
	}
	slices.SortFunc(c, cmpCand)
	cut = c[len(c)-1]
	for _, cd := range c {
		cum += float64(e[cd.i])
		if cum >= target {
			return cd
		}
	}
	return cut
}

// narrowBand keeps the sub-band of c (one float32 exponent band of e)
// where the cumulative mass, starting at cum, crosses target, and returns
// it with the mass of the sub-bands above it added to cum.
func narrowBand(c []cand, e []float32, cum, target float64) ([]cand, float64) {
	var sub [256]float64
	for _, cd := range c {
		sub[math.Float32bits(e[cd.i])>>15&0xff] += float64(e[cd.i])
	}
	sb, above := -1, cum
	for b := 255; b >= 0; b-- {
		if above+sub[b] >= target {
			sb = b
			break
		}
		above += sub[b]
	}
	if sb < 0 { // rounding: no crossing, keep the band whole
		return c, cum
	}
	cum = above
	n := 0
	for _, cd := range c {
		if int(math.Float32bits(e[cd.i])>>15&0xff) == sb {
			c[n] = cd
			n++
		}
	}
	return c[:n], cum
}

// pick is the inverse CDF over the kept set in token order.
func (s *Sampler) pick(u float64) int32 {
	w := s.ws
	target := u * w.z
	var cum float64
	last := w.cidx[0]
	for j, x := range w.cw[:w.n] {
		if x <= 0 {
			continue
		}
		cum += float64(x)
		last = w.cidx[j]
		if target < cum {
			return last
		}
	}
	return last
}

// prob returns the kept probability of token t (0 if not kept).
func (s *Sampler) prob(t int32) float64 {
	w := s.ws
	if j, ok := slices.BinarySearch(w.cidx[:w.n], t); ok {
		return float64(w.cw[j]) / w.z
	}
	return 0
}

// ProbOf is softmax(logits)[t] at temperature 1: for a draft model's greedy
// proposal t (the argmax), its top probability, which llama.cpp's
// --draft-p-min compares. One fast exp per vocabulary entry, no allocation.
func ProbOf(logits []float32, t int32) float64 {
	m := maxOf(logits)
	var sum float64
	for _, l := range logits {
		sum += float64(expLow(l - m))
	}
	return float64(expLow(logits[t]-m)) / sum
}
