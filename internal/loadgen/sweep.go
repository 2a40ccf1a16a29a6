package loadgen

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// ParseInts reads "4", "1,4,16" or "0..8" (inclusive) into a list of
// non-negative integers, in the order written.
func ParseInts(s string) ([]int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, fmt.Errorf("empty list")
	}
	if a, b, ok := strings.Cut(s, ".."); ok {
		lo, err1 := strconv.Atoi(strings.TrimSpace(a))
		hi, err2 := strconv.Atoi(strings.TrimSpace(b))
		if err1 != nil || err2 != nil || lo < 0 || hi < lo || hi-lo > 1024 {
			return nil, fmt.Errorf("bad range %q (want A..B with 0 <= A <= B)", s)
		}
		out := make([]int, 0, hi-lo+1)
		for i := lo; i <= hi; i++ {
			out = append(out, i)
		}
		return out, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v < 0 {
			return nil, fmt.Errorf("bad list %q (want N, N,M,... or A..B)", s)
		}
		out = append(out, v)
	}
	return out, nil
}

// ParseFloats reads "0,0.5,1" into a list of non-negative numbers, in the
// order written.
func ParseFloats(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || v < 0 || math.IsInf(v, 0) {
			return nil, fmt.Errorf("bad list %q (want X,Y,... of numbers >= 0)", s)
		}
		out = append(out, v)
	}
	return out, nil
}

// ExpectedLength is the expected tokens per target pass with k drafts each
// accepted with probability alpha, independently (Leviathan et al. 2023):
// E = (1 − α^(k+1)) / (1 − α).
func ExpectedLength(alpha float64, k int) float64 {
	if alpha >= 1 {
		return float64(k + 1)
	}
	return (1 - math.Pow(alpha, float64(k+1))) / (1 - alpha)
}

// LeviathanSpeedup is the expected wall-time speed-up of speculation over
// plain decoding: E / (k·c + 1), with c the cost of one draft pass relative
// to one target pass.
func LeviathanSpeedup(alpha float64, k int, c float64) float64 {
	return ExpectedLength(alpha, k) / (float64(k)*c + 1)
}

// AlphaFromLength inverts ExpectedLength: the per-token acceptance α at
// which k drafts give mean accepted length e (bisection; E is increasing in
// α). e <= 1 gives 0, e >= k+1 gives 1.
func AlphaFromLength(e float64, k int) float64 {
	if k <= 0 || e <= 1 {
		return 0
	}
	if e >= float64(k+1) {
		return 1
	}
	lo, hi := 0.0, 1.0
	for range 60 {
		mid := (lo + hi) / 2
		if ExpectedLength(mid, k) < e {
			lo = mid
		} else {
			hi = mid
		}
	}
	return (lo + hi) / 2
}

// Point is one measured configuration of a benchmark.
type Point struct {
	Concurrency int      `json:"concurrency"`           // 0 with Rate: uncapped
	Rate        float64  `json:"rate,omitempty"`        // requests/s, 0 = closed loop
	K           *int     `json:"k,omitempty"`           // k of a k sweep
	Proposer    string   `json:"proposer,omitempty"`    // of a proposer sweep
	Temperature *float64 `json:"temperature,omitempty"` // of a temperature sweep
	Round       int      `json:"round,omitempty"`       // 1, 2, ... with --rounds > 1
	Summary     Summary  `json:"summary"`
}

// SweepFit compares a k sweep with the Leviathan model.
type SweepFit struct {
	// Alpha is the median over k > 0 of the α that explains each k's mean
	// accepted length (AlphaFromLength): the server's accepted/rejected
	// counts cannot give α directly, since drafts after a rejection are
	// proposed but never judged.
	Alpha     float64      `json:"alpha"`
	DraftCost float64      `json:"draft_cost"`
	BaseTPS   float64      `json:"base_output_throughput"` // k = 0 output tok/s (0 if not measured)
	Curve     []CurvePoint `json:"curve"`
	// Warnings say when the measurements contradict the k that was sent:
	// a server that ignores the `speculative` extension (llama-server)
	// drafts at k = 0 or accepts more than k tokens per pass.
	Warnings []string `json:"warnings,omitempty"`
}

// CurvePoint is one k of a sweep: measured against predicted.
type CurvePoint struct {
	K               int     `json:"k"`
	AcceptanceRate  float64 `json:"acceptance_rate"`
	MeanLength      float64 `json:"mean_accepted_length"`
	ExpectedLength  float64 `json:"expected_length"`
	OutputTPS       float64 `json:"output_throughput"`
	MeasuredSpeedup float64 `json:"measured_speedup"` // OutputTPS / BaseTPS; with rounds, paired per round
	// SpeedupCI: with rounds, the 90 % interval of MeasuredSpeedup
	// (PairedRatio of this k's runs over k = 0's).
	SpeedupCI        *Interval `json:"speedup_ci,omitempty"`
	PredictedSpeedup float64   `json:"predicted_speedup"` // LeviathanSpeedup(Alpha, K, DraftCost)
}

// FitSweep builds the comparison from the points of a k sweep (points
// without K are ignored).
func FitSweep(points []Point, draftCost float64) SweepFit {
	f := SweepFit{DraftCost: draftCost}
	var alphas []float64
	for _, p := range points {
		if p.K == nil {
			continue
		}
		if *p.K == 0 {
			f.BaseTPS = p.Summary.OutputThroughput
		} else if p.Summary.MeanAcceptedLength > 0 {
			alphas = append(alphas, AlphaFromLength(p.Summary.MeanAcceptedLength, *p.K))
		}
	}
	if len(alphas) > 0 {
		slices.Sort(alphas)
		f.Alpha = Percentile(alphas, 50)
	}
	for _, p := range points {
		if p.K == nil {
			continue
		}
		k := *p.K
		cp := CurvePoint{
			K: k, AcceptanceRate: p.Summary.AcceptanceRate, MeanLength: p.Summary.MeanAcceptedLength,
			ExpectedLength: ExpectedLength(f.Alpha, k), OutputTPS: p.Summary.OutputThroughput,
			PredictedSpeedup: LeviathanSpeedup(f.Alpha, k, draftCost),
		}
		switch {
		case k == 0 && p.Summary.DraftProposed > 0:
			f.Warnings = append(f.Warnings, fmt.Sprintf("k=0: the server still proposed %d draft tokens; it ignores \"speculative\"", p.Summary.DraftProposed))
		case k > 0 && p.Summary.MeanAcceptedLength > float64(k+1)+1e-9:
			f.Warnings = append(f.Warnings, fmt.Sprintf("k=%d: %.2f tokens per pass exceeds k+1; the server does not honor the k sent", k, p.Summary.MeanAcceptedLength))
		}
		if k == 0 {
			cp.MeanLength = 1
		}
		if f.BaseTPS > 0 {
			cp.MeasuredSpeedup = cp.OutputTPS / f.BaseTPS
		}
		f.Curve = append(f.Curve, cp)
	}
	return f
}
