package loadgen

import (
	"cmp"
	"math"
	"slices"
)

// Several rounds of the same points (specd bench --rounds) tell small
// differences from noise: each round measures every point once, one after
// the other, so a slow spell of the machine (other tenants, thermal state)
// hits the points of one round alike, and the ratio of two points within a
// round cancels it. On a shared 2-core machine the same point moved by 30 %
// between runs minutes apart, while paired ratios stayed within a few per
// cent (docs/BENCHMARKS.md).

// Interval is an estimate with a two-sided 90 % confidence interval.
type Interval struct {
	Mean float64 `json:"mean"`
	Lo   float64 `json:"lo"`
	Hi   float64 `json:"hi"`
}

// Spread is the median, least and greatest of a point's runs.
type Spread struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

// RoundStat summarises one point measured in every round.
type RoundStat struct {
	Concurrency int      `json:"concurrency"`
	Rate        float64  `json:"rate,omitempty"`
	K           *int     `json:"k,omitempty"`
	Proposer    string   `json:"proposer,omitempty"`
	Temperature *float64 `json:"temperature,omitempty"`
	Runs        int      `json:"runs"`
	// OutputTPS: output tokens/s over the runs.
	OutputTPS Spread `json:"output_throughput"`
	// Ratio: this point's output tokens/s over the reference point's in
	// the same round (the first point, or k = 0 in a k sweep), as the
	// geometric mean over rounds with its interval (PairedRatio); absent
	// for the reference itself.
	Ratio *Interval `json:"ratio,omitempty"`
}

// tQuantile95 is Student's t at 0.95 for 1..30 degrees of freedom: the
// half-width of a two-sided 90 % interval is tQuantile95[df-1] standard
// errors (beyond 30: the normal 1.645).
var tQuantile95 = [...]float64{6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812,
	1.796, 1.782, 1.771, 1.761, 1.753, 1.746, 1.740, 1.734, 1.729, 1.725,
	1.721, 1.717, 1.714, 1.711, 1.708, 1.706, 1.703, 1.701, 1.699, 1.697}

// PairedRatio estimates the ratio a/b from paired measurements (a[i] and
// b[i] taken in the same round): the geometric mean of a[i]/b[i] with a
// two-sided 90 % t-interval on the log ratios. Pairs with a value <= 0 or
// NaN (a failed run) are skipped. ok is false without any pair; with one
// pair the interval is the ratio itself.
func PairedRatio(a, b []float64) (iv Interval, ok bool) {
	var logs []float64
	for i := range min(len(a), len(b)) {
		if a[i] > 0 && b[i] > 0 { // false for NaN
			logs = append(logs, math.Log(a[i]/b[i]))
		}
	}
	n := len(logs)
	if n == 0 {
		return Interval{}, false
	}
	m := 0.0
	for _, l := range logs {
		m += l
	}
	m /= float64(n)
	if n == 1 {
		return Interval{math.Exp(m), math.Exp(m), math.Exp(m)}, true
	}
	v := 0.0
	for _, l := range logs {
		v += (l - m) * (l - m)
	}
	se := math.Sqrt(v / float64(n-1) / float64(n))
	q := 1.645
	if n-1 <= len(tQuantile95) {
		q = tQuantile95[n-2]
	}
	return Interval{math.Exp(m), math.Exp(m - q*se), math.Exp(m + q*se)}, true
}

// SummariseRounds condenses points measured in rounds: points holds
// rounds × perRound points, round by round, each round in the same point
// order; ref is the index (within a round) of the point the others are
// compared with. It returns one RoundStat per point and, per point, the
// run of median output throughput (the lower middle one of an even count:
// a real run, with all its figures, for tables, plots and fits).
func SummariseRounds(points []Point, perRound, ref int) ([]RoundStat, []Point) {
	if perRound <= 0 || len(points) < perRound {
		return nil, nil
	}
	rounds := len(points) / perRound
	stats := make([]RoundStat, perRound)
	median := make([]Point, perRound)
	tps := func(j int) []float64 {
		v := make([]float64, rounds)
		for r := range rounds {
			v[r] = points[r*perRound+j].Summary.OutputThroughput
		}
		return v
	}
	base := tps(ref)
	for j := range perRound {
		v := tps(j)
		p := points[j]
		st := RoundStat{Concurrency: p.Concurrency, Rate: p.Rate, K: p.K, Proposer: p.Proposer, Temperature: p.Temperature, Runs: rounds}
		order := make([]int, rounds)
		for r := range order {
			order[r] = r
		}
		slices.SortStableFunc(order, func(x, y int) int { return cmp.Compare(v[x], v[y]) })
		mid := order[(rounds-1)/2]
		median[j] = points[mid*perRound+j]
		sorted := make([]float64, rounds)
		for i, r := range order {
			sorted[i] = v[r]
		}
		st.OutputTPS = Spread{Percentile(sorted, 50), sorted[0], sorted[rounds-1]}
		if j != ref {
			if iv, ok := PairedRatio(v, base); ok {
				st.Ratio = &iv
			}
		}
		stats[j] = st
	}
	return stats, median
}

// Label names the point as Point.Label does.
func (s RoundStat) Label() string {
	return Point{Concurrency: s.Concurrency, Rate: s.Rate, K: s.K, Proposer: s.Proposer, Temperature: s.Temperature}.Label()
}
