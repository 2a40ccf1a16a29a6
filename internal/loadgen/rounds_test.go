package loadgen

import (
	"math"
	"testing"
)

func TestPairedRatio(t *testing.T) {
	// Ratios 1.1, 1.0, 1.21 (a drift of the base does not matter): log
	// mean = ln 1.1, logs ln1.1 ± ln1.1 → sd = ln 1.1, se = ln1.1/√3, t(2)
	// = 2.920.
	a := []float64{110, 50, 242}
	b := []float64{100, 50, 200}
	iv, ok := PairedRatio(a, b)
	if !ok {
		t.Fatal("no pairs")
	}
	l := math.Log(1.1)
	want := Interval{1.1, math.Exp(l - 2.920*l/math.Sqrt(3)), math.Exp(l + 2.920*l/math.Sqrt(3))}
	for _, c := range [][2]float64{{iv.Mean, want.Mean}, {iv.Lo, want.Lo}, {iv.Hi, want.Hi}} {
		if math.Abs(c[0]-c[1]) > 1e-9 {
			t.Fatalf("PairedRatio = %+v, want %+v", iv, want)
		}
	}
	// A failed run (0 or NaN) drops its pair; one pair is its own interval.
	if iv, ok := PairedRatio([]float64{0, 120, math.NaN()}, []float64{100, 100, 100}); !ok || iv != (Interval{1.2, 1.2, 1.2}) {
		t.Errorf("one valid pair: %+v %v", iv, ok)
	}
	if _, ok := PairedRatio([]float64{0}, []float64{1}); ok {
		t.Error("no valid pair reported ok")
	}
	// Identical ratios: a zero-width interval at the ratio.
	if iv, _ := PairedRatio([]float64{2, 4, 8}, []float64{1, 2, 4}); math.Abs(iv.Lo-2) > 1e-12 || math.Abs(iv.Hi-2) > 1e-12 {
		t.Errorf("constant ratio 2: %+v", iv)
	}
}

func TestSummariseRounds(t *testing.T) {
	k := func(v int) *int { return &v }
	pt := func(kk int, tps float64) Point {
		return Point{Concurrency: 1, K: k(kk), Summary: Summary{OutputThroughput: tps}}
	}
	// Three rounds of k = 1, 0, 2 (reference: k = 0 at index 1). The machine
	// is slow in round 2; k = 2 is 1.5x k = 0 in every round.
	points := []Point{
		pt(1, 120), pt(0, 100), pt(2, 150),
		pt(1, 60), pt(0, 50), pt(2, 75),
		pt(1, 110), pt(0, 90), pt(2, 135),
	}
	stats, median := SummariseRounds(points, 3, 1)
	if len(stats) != 3 || len(median) != 3 {
		t.Fatalf("%d stats, %d medians", len(stats), len(median))
	}
	if stats[1].Ratio != nil || stats[1].Runs != 3 {
		t.Errorf("reference: %+v", stats[1])
	}
	if r := stats[2].Ratio; r == nil || math.Abs(r.Mean-1.5) > 1e-9 || math.Abs(r.Lo-1.5) > 1e-9 || math.Abs(r.Hi-1.5) > 1e-9 {
		t.Errorf("k=2 ratio %+v, want exactly 1.5", r)
	}
	if r := stats[0].Ratio; r == nil || !(r.Lo < r.Mean && r.Mean < r.Hi) || r.Mean < 1.19 || r.Mean > 1.23 {
		t.Errorf("k=1 ratio %+v", r)
	}
	if s := stats[2].OutputTPS; s != (Spread{135, 75, 150}) {
		t.Errorf("k=2 spread %+v", s)
	}
	// The median run is a real run: round 3's for k = 2 (135).
	if median[2].Summary.OutputThroughput != 135 || *median[0].K != 1 {
		t.Errorf("median runs %+v", median)
	}
	if got := stats[2].Label(); got != "c=1 k=2" {
		t.Errorf("label %q", got)
	}
}
