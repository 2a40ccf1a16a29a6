package specdec

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// naiveLogprobs is the float64 reference: log-softmax, and every token
// sorted by logit (higher first, ties to the lower id).
func naiveLogprobs(l []float32) ([]float64, []int32) {
	m := math.Inf(-1)
	for _, v := range l {
		m = max(m, float64(v))
	}
	var z float64
	for _, v := range l {
		z += math.Exp(float64(v) - m)
	}
	lp := make([]float64, len(l))
	order := make([]int32, len(l))
	for i, v := range l {
		lp[i] = float64(v) - m - math.Log(z)
		order[i] = int32(i)
	}
	slices.SortStableFunc(order, func(a, b int32) int {
		switch {
		case l[a] > l[b]:
			return -1
		case l[a] < l[b]:
			return 1
		}
		return 0
	})
	return lp, order
}

func TestLogprobsMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for trial := range 50 {
		nv := 1 + rng.IntN(3000)
		l := make([]float32, nv)
		for i := range l {
			l[i] = float32(rng.NormFloat64() * 4)
			if trial%5 == 0 {
				l[i] = float32(rng.IntN(3)) // many ties
			}
		}
		ref, order := naiveLogprobs(l)
		n := rng.IntN(MaxTopLogprobs + 1)
		tok := int32(rng.IntN(nv))
		lp, top := Logprobs(l, tok, n, nil)
		if d := math.Abs(float64(lp) - ref[tok]); d > 1e-4*(1+math.Abs(ref[tok])) {
			t.Fatalf("trial %d: logprob of %d = %v, want %v", trial, tok, lp, ref[tok])
		}
		if want := min(n, nv); len(top) != want {
			t.Fatalf("trial %d: %d top entries, want %d", trial, len(top), want)
		}
		for j, e := range top {
			if e.Token != order[j] {
				t.Fatalf("trial %d: top[%d] = token %d, want %d (logits %v vs %v)", trial, j, e.Token, order[j], l[e.Token], l[order[j]])
			}
			if d := math.Abs(float64(e.Logprob) - ref[e.Token]); d > 1e-4*(1+math.Abs(ref[e.Token])) {
				t.Fatalf("trial %d: top[%d] logprob %v, want %v", trial, j, e.Logprob, ref[e.Token])
			}
			if e.Logprob > 0 {
				t.Fatalf("trial %d: positive logprob %v", trial, e.Logprob)
			}
		}
	}
}

func TestLogprobsEdges(t *testing.T) {
	inf := float32(math.Inf(-1))
	nan := float32(math.NaN())
	// A point mass: log 1 = 0 exactly; masked tokens -Inf.
	lp, top := Logprobs([]float32{inf, 3, inf}, 1, 3, nil)
	if lp != 0 || len(top) != 3 || top[0] != (TokenLogprob{1, 0}) || !math.IsInf(float64(top[1].Logprob), -1) {
		t.Fatalf("point mass: %v %v", lp, top)
	}
	if lp, _ := Logprobs([]float32{inf, 3, inf}, 0, 0, nil); !math.IsInf(float64(lp), -1) {
		t.Fatalf("masked token: %v, want -Inf", lp)
	}
	// NaN is never in the top and has logprob -Inf.
	lp, top = Logprobs([]float32{nan, 1, 2}, 0, 3, nil)
	if !math.IsInf(float64(lp), -1) || len(top) != 2 || top[0].Token != 2 || top[1].Token != 1 {
		t.Fatalf("NaN: %v %v", lp, top)
	}
	// Appends after what top holds; out-of-range token and empty rows.
	top = []TokenLogprob{{9, -1}}
	_, top = Logprobs([]float32{0, 1}, 1, 1, top)
	if len(top) != 2 || top[0] != (TokenLogprob{9, -1}) || top[1].Token != 1 {
		t.Fatalf("append: %v", top)
	}
	if lp, top := Logprobs([]float32{0, 1}, 2, 1, nil); !math.IsInf(float64(lp), -1) || len(top) != 0 {
		t.Fatalf("token out of range: %v %v", lp, top)
	}
	if lp, top := Logprobs(nil, 0, 5, nil); !math.IsInf(float64(lp), -1) || len(top) != 0 {
		t.Fatalf("empty row: %v %v", lp, top)
	}
}

func TestLogprobsDoesNotAllocate(t *testing.T) {
	l := make([]float32, 32000)
	for i := range l {
		l[i] = float32(i%97) * 0.1
	}
	top := make([]TokenLogprob, 0, MaxTopLogprobs)
	if a := testing.AllocsPerRun(20, func() { _, top = Logprobs(l, 5, MaxTopLogprobs, top[:0]) }); a != 0 {
		t.Fatalf("%v allocations per call, want 0", a)
	}
}

// BenchmarkLogprobs: one token's logprob and top 20 (the per-token price
// of a request asking for logprobs), for stories260K's vocabulary, a 32k
// and a 150k one.
func BenchmarkLogprobs(b *testing.B) {
	for _, nv := range []int{512, 32000, 150000} {
		b.Run(fmt.Sprintf("V=%d", nv), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 2))
			l := make([]float32, nv)
			for i := range l {
				l[i] = float32(rng.NormFloat64() * 3)
			}
			top := make([]TokenLogprob, 0, MaxTopLogprobs)
			for i := 0; b.Loop(); i++ {
				_, top = Logprobs(l, int32(i%len(l)), MaxTopLogprobs, top[:0])
			}
		})
	}
}
