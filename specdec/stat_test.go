package specdec

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// The lossless property, tested statistically: drafts x_i ~ q, verified
// against a target whose transformed distribution is p at every position,
// must emit tokens that are i.i.d. p. Logits are log p at temperature 1
// with no truncation, so Dist(logits) == p.

type shape struct {
	name string
	p, q []float64
}

var shapes = []shape{
	{"peaked-p/flat-q", []float64{0.70, 0.10, 0.08, 0.06, 0.04, 0.02}, []float64{1, 1, 1, 1, 1, 1}},
	{"flat-p/peaked-q", []float64{1, 1, 1, 1, 1, 1}, []float64{0.02, 0.04, 0.06, 0.08, 0.10, 0.70}},
	{"q-mass-where-p-has-none", []float64{0.5, 0.3, 0.2, 0, 0, 0}, []float64{0.1, 0.1, 0.2, 0.2, 0.2, 0.2}},
	{"p-zeros/q-zeros", []float64{0, 0.4, 0.3, 0, 0.2, 0.1}, []float64{0.3, 0.4, 0, 0.2, 0.1, 0}},
	{"p-equals-q", []float64{0.3, 0.25, 0.2, 0.15, 0.1, 0.0}, []float64{0.3, 0.25, 0.2, 0.15, 0.1, 0.0}},
}

func normalize(v []float64) []float64 {
	var z float64
	for _, x := range v {
		z += x
	}
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = x / z
	}
	return out
}

func logitsOf(p []float64) []float32 {
	l := make([]float32, len(p))
	for i, x := range p {
		l[i] = float32(math.Log(x)) // log 0 = -Inf: never kept
	}
	return l
}

// verifyFunc is Verify or a deliberately wrong variant (negative controls).
type verifyFunc func(s *Sampler, draft []int32, q [][]float32, target [][]float32, out []int32) ([]int32, int)

func realVerify(s *Sampler, d []int32, q [][]float32, t [][]float32, out []int32) ([]int32, int) {
	return s.Verify(d, q, t, out)
}

// acceptAlways keeps every draft token: output follows q at draft positions.
func acceptAlways(s *Sampler, d []int32, q [][]float32, t [][]float32, out []int32) ([]int32, int) {
	out = append(out, d...)
	return append(out, s.Sample(t[len(d)])), len(d)
}

// rejectToP accepts with min(1, p/q) but on rejection samples from p, not
// from the residual: over-represents tokens q already proposes.
func rejectToP(s *Sampler, d []int32, q [][]float32, t [][]float32, out []int32) ([]int32, int) {
	for i, x := range d {
		s.prepare(t[i])
		u := uniform(&s.rng)
		qx := 1.0
		if q != nil {
			qx = float64(q[i][x])
		}
		if u < s.prob(x)/qx {
			out = append(out, x)
			continue
		}
		return append(out, s.pick(uniform(&s.rng))), i
	}
	return append(out, s.Sample(t[len(d)])), len(d)
}

type tally struct {
	all, second []float64 // counts per token
	pairs       []float64 // consecutive emitted pairs, V*V
	n           int
}

// runSpec emits n tokens through the speculative loop with draft length k.
func runSpec(t *testing.T, sh shape, k int, pointMass bool, verify verifyFunc, n int, seed uint64) tally {
	t.Helper()
	p, qd := normalize(sh.p), normalize(sh.q)
	V := len(p)
	s := NewSampler(SamplingParams{Temperature: 1, Seed: seed}, V)
	target := make([][]float32, k+1)
	lp := logitsOf(p)
	for i := range target {
		target[i] = lp
	}
	qrow := s.Dist(logitsOf(qd), nil)
	var q [][]float32
	if !pointMass {
		q = make([][]float32, k)
		for i := range q {
			q[i] = qrow
		}
	}
	tl := tally{all: make([]float64, V), second: make([]float64, V), pairs: make([]float64, V*V)}
	draft := make([]int32, k)
	out := make([]int32, 0, k+1)
	prev := int32(-1)
	for tl.n < n {
		for i := range draft {
			draft[i] = s.SampleDraft(qrow) // point-mass proposers: any token independent of the verify stream
		}
		var acc int
		out, acc = verify(s, draft, q, target, out[:0])
		if len(out) != acc+1 {
			t.Fatalf("Verify emitted %d tokens with %d accepted", len(out), acc)
		}
		for j, tok := range out {
			tl.all[tok]++
			if j == 1 {
				tl.second[tok]++
			}
			if prev >= 0 {
				tl.pairs[int(prev)*V+int(tok)]++
			}
			prev = tok
			tl.n++
		}
	}
	return tl
}

// chiSquare returns the statistic, degrees of freedom and p-value of counts
// against probabilities want; a count in a zero-probability cell is an
// outright failure, reported as p-value 0.
func chiSquare(counts, want []float64) (stat float64, df int, pval float64) {
	var n float64
	for _, c := range counts {
		n += c
	}
	for i, c := range counts {
		e := want[i] * n
		if e == 0 {
			if c != 0 {
				return math.Inf(1), df, 0
			}
			continue
		}
		stat += (c - e) * (c - e) / e
		df++
	}
	df--
	return stat, df, gammaQ(float64(df)/2, stat/2)
}

// gammaQ is the regularized upper incomplete gamma function Q(a, x)
// (Numerical Recipes: series for x < a+1, continued fraction otherwise).
func gammaQ(a, x float64) float64 {
	if x <= 0 {
		return 1
	}
	lg, _ := math.Lgamma(a)
	if x < a+1 {
		sum, del, ap := 1/a, 1/a, a
		for i := 0; i < 1000; i++ {
			ap++
			del *= x / ap
			sum += del
			if math.Abs(del) < math.Abs(sum)*1e-15 {
				break
			}
		}
		return 1 - sum*math.Exp(-x+a*math.Log(x)-lg)
	}
	const tiny = 1e-300
	b := x + 1 - a
	c, d := 1/tiny, 1/b
	h := d
	for i := 1; i < 1000; i++ {
		an := -float64(i) * (float64(i) - a)
		b += 2
		d = an*d + b
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = b + an/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		del := d * c
		h *= del
		if math.Abs(del-1) < 1e-15 {
			break
		}
	}
	return math.Exp(-x+a*math.Log(x)-lg) * h
}

func TestGammaQ(t *testing.T) {
	// Chi-square upper quantiles from the standard table.
	for _, c := range []struct{ df, x, p float64 }{
		{1, 10.828, 1e-3}, {5, 20.515, 1e-3}, {35, 66.619, 1e-3}, {5, 11.070, 0.05}, {35, 49.802, 0.05},
	} {
		if got := gammaQ(c.df/2, c.x/2); math.Abs(got-c.p)/c.p > 2e-3 {
			t.Errorf("Q(df=%v, x=%v) = %v, want %v", c.df, c.x, got, c.p)
		}
	}
}

// statTokens is how many tokens each configuration emits (200k: a 1%
// deviation in a 10% cell is ~7 standard deviations).
const statTokens = 200_000

// familyAlpha is the false-failure rate of the whole test; each check
// gets a Bonferroni share of it.
const familyAlpha = 1e-3

func TestVerifyLossless(t *testing.T) {
	type cfg struct {
		sh        shape
		k         int
		pointMass bool
	}
	var cfgs []cfg
	for _, sh := range shapes {
		for k := 1; k <= 8; k++ {
			if raceEnabled && k != 1 && k != 8 {
				continue
			}
			cfgs = append(cfgs, cfg{sh, k, false}, cfg{sh, k, true})
		}
	}
	alpha := familyAlpha / float64(3*len(cfgs))
	for ci, c := range cfgs {
		name := fmt.Sprintf("%s/k=%d/pointmass=%v", c.sh.name, c.k, c.pointMass)
		t.Run(name, func(t *testing.T) {
			p := normalize(c.sh.p)
			tl := runSpec(t, c.sh, c.k, c.pointMass, realVerify, statTokens, uint64(1000+ci))
			pp := make([]float64, len(p)*len(p))
			for a := range p {
				for b := range p {
					pp[a*len(p)+b] = p[a] * p[b]
				}
			}
			for _, chk := range []struct {
				what         string
				counts, want []float64
			}{{"all tokens", tl.all, p}, {"second position", tl.second, p}, {"consecutive pairs", tl.pairs, pp}} {
				stat, df, pv := chiSquare(chk.counts, chk.want)
				if pv < alpha {
					t.Errorf("%s: chi2=%.1f df=%d p=%.3g < %.3g; counts %v", chk.what, stat, df, pv, alpha, chk.counts)
				}
			}
		})
	}
}

// TestVerifyNegativeControls: the same test must reject wrong verifiers,
// or it proves nothing.
func TestVerifyNegativeControls(t *testing.T) {
	for _, c := range []struct {
		name      string
		v         verifyFunc
		sh        shape
		k         int
		pointMass bool
	}{
		{"accept-always", acceptAlways, shapes[0], 4, false},
		{"accept-always/pointmass", acceptAlways, shapes[1], 1, true},
		{"reject-to-p", rejectToP, shapes[0], 4, false},
		{"reject-to-p/q-mass-where-p-none", rejectToP, shapes[2], 2, false},
		{"reject-to-p/pointmass", rejectToP, shapes[1], 3, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			tl := runSpec(t, c.sh, c.k, c.pointMass, c.v, statTokens, 7)
			stat, df, pv := chiSquare(tl.all, normalize(c.sh.p))
			if pv >= 1e-9 {
				t.Errorf("wrong verifier passed: chi2=%.1f df=%d p=%.3g; counts %v", stat, df, pv, tl.all)
			}
		})
	}
}

// TestSeededPointMassEqualsPlain: with a seed, point-mass speculation
// consumes the stream as plain sampling does, so the text is the same
// whatever the proposals were.
func TestSeededPointMassEqualsPlain(t *testing.T) {
	V := 50
	r := rand.New(rand.NewPCG(1, 2))
	rows := make([][]float32, 400)
	for i := range rows {
		rows[i] = make([]float32, V)
		for j := range rows[i] {
			rows[i][j] = float32(r.NormFloat64() * 2)
		}
	}
	params := SamplingParams{Temperature: 0.8, TopK: 20, TopP: 0.9, Seed: 42}
	plain := NewSampler(params, V)
	var want []int32
	for _, row := range rows {
		want = append(want, plain.Sample(row))
	}
	for _, k := range []int{1, 3, 8} {
		s := NewSampler(params, V)
		var got []int32
		for pos := 0; pos < len(rows)-k; {
			// Proposals: half the time the true continuation, else noise.
			draft := make([]int32, k)
			for i := range draft {
				if pos+i < len(want) && r.IntN(2) == 0 {
					draft[i] = want[pos+i]
				} else {
					draft[i] = int32(r.IntN(V))
				}
			}
			out, acc := s.Verify(draft, nil, rows[pos:pos+k+1], nil)
			for i := 0; i < acc; i++ {
				if out[i] != draft[i] {
					t.Fatalf("accepted token %d differs from draft", i)
				}
			}
			got = append(got, out...)
			pos += len(out)
		}
		for i := range got {
			if i < len(want) && got[i] != want[i] {
				t.Fatalf("k=%d: token %d = %d, plain sampling gave %d", k, i, got[i], want[i])
			}
		}
	}
}
