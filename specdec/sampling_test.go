package specdec

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
)

// refDist is the brute-force reference: full sort by (logit desc, id asc),
// top-k prefix, top-p prefix of the temperature-1 softmax, min-p relative
// to the max, then softmax at the temperature. fragile is set when a
// cutoff lies within rounding of its threshold (float32 vs float64 may
// legitimately differ there).
func refDist(logits []float32, p SamplingParams) (dist []float64, fragile bool) {
	V := len(logits)
	dist = make([]float64, V)
	if p.Greedy() {
		dist[Argmax(logits)] = 1
		return dist, false
	}
	idx := make([]int, V)
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool {
		la, lb := logits[idx[a]], logits[idx[b]]
		return la > lb || (la == lb && idx[a] < idx[b])
	})
	keep := idx
	if p.TopK > 0 && p.TopK < V {
		keep = keep[:p.TopK]
	}
	m := float64(logits[keep[0]])
	if p.TopP > 0 && p.TopP < 1 {
		var z float64
		for _, i := range keep {
			z += math.Exp(float64(logits[i]) - m)
		}
		target, cum := float64(p.TopP)*z, 0.0
		for j, i := range keep {
			cum += math.Exp(float64(logits[i]) - m)
			if math.Abs(cum-target) < 1e-5*z {
				fragile = true
			}
			if cum >= target {
				keep = keep[:j+1]
				break
			}
		}
	}
	if p.MinP > 0 {
		lm := math.Log(float64(p.MinP))
		var k2 []int
		for _, i := range keep {
			d := float64(logits[i]) - m
			if math.Abs(d-lm) < 1e-5 {
				fragile = true
			}
			if d >= lm {
				k2 = append(k2, i)
			}
		}
		keep = k2
	}
	var z float64
	for _, i := range keep {
		dist[i] = math.Exp((float64(logits[i]) - m) / float64(p.Temperature))
		z += dist[i]
	}
	for i := range dist {
		dist[i] /= z
	}
	return dist, fragile
}

func randLogits(r *rand.Rand, V int, scale float64, quant bool, ninf int) []float32 {
	l := make([]float32, V)
	for i := range l {
		x := r.NormFloat64() * scale
		if quant { // ties
			x = math.Round(x*2) / 2
		}
		l[i] = float32(x)
	}
	for i := 0; i < ninf; i++ {
		l[r.IntN(V)] = float32(math.Inf(-1))
	}
	return l
}

func TestDistMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	checked, skipped := 0, 0
	for _, V := range []int{7, 100, 3000} {
		for _, scale := range []float64{0.5, 3, 10} {
			for _, quant := range []bool{false, true} {
				for _, temp := range []float32{0.4, 1, 1.7} {
					for _, topK := range []int{0, 1, 5, 50} {
						for _, topP := range []float32{0, 0.5, 0.9, 1} {
							for _, minP := range []float32{0, 0.05, 0.3} {
								p := SamplingParams{Temperature: temp, TopK: topK, TopP: topP, MinP: minP}
								logits := randLogits(r, V, scale, quant, V/10)
								want, fragile := refDist(logits, p)
								if fragile {
									skipped++
									continue
								}
								s := NewSampler(p, V)
								got := s.Dist(logits, nil)
								var sum float64
								for i := range got {
									sum += float64(got[i])
									if (got[i] > 0) != (want[i] > 0) && math.Abs(float64(got[i])-want[i]) > 1e-12 {
										t.Fatalf("%+v V=%d scale=%v quant=%v: token %d kept=%v, reference kept=%v", p, V, scale, quant, i, got[i] > 0, want[i] > 0)
									}
									if math.Abs(float64(got[i])-want[i]) > 2e-6 {
										t.Fatalf("%+v V=%d: p[%d]=%v, reference %v", p, V, i, got[i], want[i])
									}
								}
								if math.Abs(sum-1) > 1e-5 {
									t.Fatalf("%+v: Dist sums to %v", p, sum)
								}
								checked++
							}
						}
					}
				}
			}
		}
	}
	if skipped > checked/20 {
		t.Fatalf("too many fragile cases skipped: %d of %d", skipped, checked+skipped)
	}
	t.Logf("%d cases checked, %d fragile skipped", checked, skipped)
}

// TestTopPWideBand: a flat vocabulary puts thousands of tokens in the
// crossing band, which the top-p search narrows by mantissa.
func TestTopPWideBand(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	for _, scale := range []float64{0.05, 0.3, 1} {
		for _, topP := range []float32{0.3, 0.9, 0.99} {
			logits := randLogits(r, 60000, scale, false, 0)
			p := SamplingParams{Temperature: 0.9, TopP: topP}
			want, fragile := refDist(logits, p)
			if fragile {
				continue
			}
			got := NewSampler(p, len(logits)).Dist(logits, nil)
			for i := range got {
				if (got[i] > 0) != (want[i] > 0) || math.Abs(float64(got[i])-want[i]) > 1e-7 {
					t.Fatalf("scale %v top-p %v: token %d: %v, reference %v", scale, topP, i, got[i], want[i])
				}
			}
		}
	}
}

func TestTransformsTable(t *testing.T) {
	// logits chosen so probabilities at temperature 1 are 0.5, 0.25, 0.125, ...
	l := []float32{0, -0.6931472, -1.3862944, -2.0794415, -2.7725887, -3.4657359}
	for _, c := range []struct {
		name string
		p    SamplingParams
		kept []int32
	}{
		{"none", SamplingParams{Temperature: 1}, []int32{0, 1, 2, 3, 4, 5}},
		{"top-k 2", SamplingParams{Temperature: 1, TopK: 2}, []int32{0, 1}},
		{"top-p 0.7 needs two", SamplingParams{Temperature: 1, TopP: 0.7}, []int32{0, 1}},
		{"top-p 0.5 the first reaches it", SamplingParams{Temperature: 1, TopP: 0.49}, []int32{0}},
		{"top-p 0.9", SamplingParams{Temperature: 1, TopP: 0.9}, []int32{0, 1, 2, 3}},
		{"min-p 0.2 (p >= 0.1)", SamplingParams{Temperature: 1, MinP: 0.2}, []int32{0, 1, 2}},
		{"top-p before temperature", SamplingParams{Temperature: 5, TopP: 0.7}, []int32{0, 1}},
		{"top-k then top-p renormalised", SamplingParams{Temperature: 1, TopK: 3, TopP: 0.8}, []int32{0, 1}},
		{"greedy", SamplingParams{}, []int32{0}},
		{"top-k 1 is greedy", SamplingParams{Temperature: 2, TopK: 1}, []int32{0}},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := NewSampler(c.p, len(l)).Dist(l, nil)
			var kept []int32
			for i, x := range d {
				if x > 0 {
					kept = append(kept, int32(i))
				}
			}
			if fmt.Sprint(kept) != fmt.Sprint(c.kept) {
				t.Fatalf("kept %v, want %v (dist %v)", kept, c.kept, d)
			}
		})
	}
	// Temperature: ratio of the first two is 2^(1/T).
	for _, T := range []float32{0.5, 1, 2} {
		d := NewSampler(SamplingParams{Temperature: T}, len(l)).Dist(l, nil)
		if got, want := float64(d[0]/d[1]), math.Pow(2, 1/float64(T)); math.Abs(got-want) > 1e-5*want {
			t.Errorf("T=%v: p0/p1 = %v, want %v", T, got, want)
		}
	}
}

func TestSampleFollowsDist(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	V := 40
	for _, p := range []SamplingParams{
		{Temperature: 0.7, Seed: 1},
		{Temperature: 1.3, TopK: 10, TopP: 0.9, Seed: 2},
		{Temperature: 1, TopP: 0.8, MinP: 0.02, Seed: 3},
	} {
		logits := randLogits(r, V, 1.5, false, 0)
		s := NewSampler(p, V)
		dist := s.Dist(logits, nil)
		want := make([]float64, V)
		for i, x := range dist {
			want[i] = float64(x)
		}
		counts := make([]float64, V)
		for range 100_000 {
			counts[s.Sample(logits)]++
		}
		if stat, df, pv := chiSquare(counts, want); pv < 1e-4 {
			t.Errorf("%+v: Sample does not follow Dist: chi2=%.1f df=%d p=%.3g", p, stat, df, pv)
		}
		counts = make([]float64, V)
		for range 100_000 {
			counts[s.SampleDist(dist)]++
		}
		if stat, df, pv := chiSquare(counts, want); pv < 1e-4 {
			t.Errorf("%+v: SampleDist does not follow its input: chi2=%.1f df=%d p=%.3g", p, stat, df, pv)
		}
	}
}

func TestSeededReproducible(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	V := 1000
	rows := make([][]float32, 50)
	for i := range rows {
		rows[i] = randLogits(r, V, 2, false, 0)
	}
	run := func(seed uint64, ws *Workspace) []int32 {
		s := NewSamplerIn(SamplingParams{Temperature: 1, TopP: 0.95, Seed: seed}, ws)
		var out []int32
		for _, row := range rows {
			out = append(out, s.Sample(row))
		}
		return out
	}
	ws := NewWorkspace(V)
	a, b, c := run(9, ws), run(9, NewWorkspace(V)), run(10, ws)
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatal("same seed, different tokens")
	}
	if fmt.Sprint(a) == fmt.Sprint(c) {
		t.Fatal("different seeds, same 50 tokens")
	}
	// Interleaving another request on the same workspace changes nothing.
	s1 := NewSamplerIn(SamplingParams{Temperature: 1, TopP: 0.95, Seed: 9}, ws)
	s2 := NewSamplerIn(SamplingParams{Temperature: 0.5, TopK: 3, Seed: 1}, ws)
	for i, row := range rows {
		s2.Sample(rows[len(rows)-1-i])
		if got := s1.Sample(row); got != a[i] {
			t.Fatalf("token %d: %d with another request interleaved, %d alone", i, got, a[i])
		}
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []struct {
		p  SamplingParams
		ok bool
	}{
		{SamplingParams{}, true},
		{SamplingParams{Temperature: 0.7, TopK: 40, TopP: 0.95, MinP: 0.05}, true},
		{SamplingParams{Temperature: -1}, false},
		{SamplingParams{Temperature: float32(math.NaN())}, false},
		{SamplingParams{Temperature: float32(math.Inf(1))}, false},
		{SamplingParams{TopK: -1}, false},
		{SamplingParams{TopP: 1.5}, false},
		{SamplingParams{MinP: -0.1}, false},
	} {
		if err := c.p.Validate(); (err == nil) != c.ok {
			t.Errorf("%+v: Validate() = %v, want ok=%v", c.p, err, c.ok)
		}
	}
}

func TestFexp(t *testing.T) {
	for x := float32(-87); x <= 87; x += 0.01 {
		got, want := float64(fexp(x)), math.Exp(float64(x))
		tol := 2e-7 + 1e-7*math.Abs(float64(x)) // documented: about 1e-7·(1+|x|)
		if math.Abs(got-want) > tol*want {
			t.Fatalf("fexp(%v) = %v, want %v", x, got, want)
		}
	}
	if fexp(float32(math.Inf(-1))) != 0 || fexp(-100) != 0 {
		t.Fatal("fexp of very negative arguments must be 0")
	}
}

func oneHotRow(V int, best int32) []float32 {
	row := make([]float32, V)
	for i := range row {
		row[i] = float32(-i) * 0.1
	}
	row[best] = 5
	return row
}

func TestVerifyGreedy(t *testing.T) {
	V := 10
	rows := func(best ...int32) [][]float32 {
		var out [][]float32
		for _, b := range best {
			out = append(out, oneHotRow(V, b))
		}
		return out
	}
	for _, c := range []struct {
		name   string
		draft  []int32
		target [][]float32
		want   []int32
		acc    int
	}{
		{"all accepted + bonus", []int32{3, 4, 5}, rows(3, 4, 5, 9), []int32{3, 4, 5, 9}, 3},
		{"first rejected", []int32{3, 4, 5}, rows(7, 4, 5, 9), []int32{7}, 0},
		{"middle rejected", []int32{3, 4, 5}, rows(3, 8, 5, 9), []int32{3, 8}, 1},
		{"last rejected", []int32{3, 4, 5}, rows(3, 4, 1, 9), []int32{3, 4, 1}, 2},
		{"empty draft is plain decode", nil, rows(6), []int32{6}, 0},
		{"tie goes to the lowest id", []int32{2}, [][]float32{{0, 1, 1, 0}, {1, 0, 0, 0}}, []int32{1}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, p := range []SamplingParams{{}, {Temperature: 1, TopK: 1}} {
				s := NewSampler(p, V)
				var q [][]float32
				if c.draft != nil {
					q = make([][]float32, len(c.draft)) // ignored when greedy
				}
				out, acc := s.Verify(c.draft, q, c.target, nil)
				if fmt.Sprint(out) != fmt.Sprint(c.want) || acc != c.acc {
					t.Fatalf("%+v: got %v acc=%d, want %v acc=%d", p, out, acc, c.want, c.acc)
				}
			}
		})
	}
}

func TestZeroAlloc(t *testing.T) {
	V := 5000
	r := rand.New(rand.NewPCG(1, 1))
	logits := randLogits(r, V, 3, false, 0)
	rows := [][]float32{logits, logits, logits, logits, logits}
	draft := []int32{1, 2, 3, 4}
	for _, p := range []SamplingParams{
		{Temperature: 0.8, TopK: 40, TopP: 0.9, Seed: 1},
		{Temperature: 0.8, TopP: 0.9, Seed: 1},
		{Temperature: 0.8, MinP: 0.05, Seed: 1},
		{},
	} {
		s := NewSampler(p, V)
		dst := make([]float32, V)
		q := [][]float32{s.Dist(logits, nil), s.Dist(logits, nil), s.Dist(logits, nil), s.Dist(logits, nil)}
		out := make([]int32, 0, 8)
		for name, f := range map[string]func(){
			"Sample":      func() { s.Sample(logits) },
			"Dist":        func() { s.Dist(logits, dst) },
			"SampleDist":  func() { s.SampleDist(dst) },
			"Verify":      func() { s.Verify(draft, q, rows, out[:0]) },
			"VerifyPoint": func() { s.Verify(draft, nil, rows, out[:0]) },
		} {
			if n := testing.AllocsPerRun(20, f); n != 0 {
				t.Errorf("%+v %s: %v allocs/op", p, name, n)
			}
		}
	}
}

func TestProbOf(t *testing.T) {
	logits := []float32{1, 3, 2, -50}
	var z float64
	for _, l := range logits {
		z += math.Exp(float64(l))
	}
	for i, l := range logits {
		want := math.Exp(float64(l)) / z
		if got := ProbOf(logits, int32(i)); math.Abs(got-want) > 1e-6*max(want, 1e-30) && math.Abs(got-want) > 1e-12 {
			t.Errorf("ProbOf(%d) = %g, want %g", i, got, want)
		}
	}
}

// DistTop's top is the distribution's largest probability (what the draft
// proposer's p_min reads: the proposal itself may be a less likely token).
func TestDistTop(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	logits := make([]float32, 300)
	for i := range logits {
		logits[i] = float32(rng.NormFloat64() * 3)
	}
	for _, p := range []SamplingParams{
		{Temperature: 0},
		{Temperature: 0.7},
		{Temperature: 1.3, TopK: 20},
		{Temperature: 1, TopP: 0.9},
		{Temperature: 0.9, MinP: 0.05},
	} {
		dist, top := NewSampler(p, len(logits)).DistTop(logits, nil)
		if want := slices.Max(dist); top != want || top <= 0 {
			t.Errorf("%+v: top %g, largest probability %g", p, top, want)
		}
	}
}
