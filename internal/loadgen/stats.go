package loadgen

import (
	"math"
	"slices"
	"time"
)

// Percentile is the p-th percentile (0..100) of sorted, by linear
// interpolation between the two nearest ranks (numpy's default, which
// `vllm bench serve` uses). It is exact: no sketch, no binning. NaN for an
// empty slice.
func Percentile(sorted []float64, p float64) float64 {
	n := len(sorted)
	if n == 0 {
		return math.NaN()
	}
	if p <= 0 {
		return sorted[0]
	}
	if p >= 100 {
		return sorted[n-1]
	}
	rank := p / 100 * float64(n-1)
	lo := int(math.Floor(rank))
	frac := rank - float64(lo)
	if lo+1 >= n {
		return sorted[n-1]
	}
	return sorted[lo] + frac*(sorted[lo+1]-sorted[lo])
}

// Distribution summarizes one metric in milliseconds.
type Distribution struct {
	N    int     `json:"n"`
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Min  float64 `json:"min"`
	Max  float64 `json:"max"`
}

// Distribute sorts xs in place and summarizes it. Empty input gives N = 0
// and zeros (not NaN, so JSON stays valid).
func Distribute(xs []float64) Distribution {
	if len(xs) == 0 {
		return Distribution{}
	}
	slices.Sort(xs)
	sum := 0.0
	for _, x := range xs {
		sum += x
	}
	return Distribution{
		N: len(xs), Mean: sum / float64(len(xs)),
		P50: Percentile(xs, 50), P90: Percentile(xs, 90), P99: Percentile(xs, 99),
		Min: xs[0], Max: xs[len(xs)-1],
	}
}

// Summary is one run's report, with the metrics `vllm bench serve` defines.
// Latencies are in milliseconds. Only successful requests enter the
// latency and token figures; Duration spans the whole run.
type Summary struct {
	Completed int            `json:"completed"`
	Failed    int            `json:"failed"`
	Errors    map[string]int `json:"errors,omitempty"` // ErrKind → count
	FirstErr  string         `json:"first_error,omitempty"`
	Duration  float64        `json:"duration_s"`

	TotalInputTokens  int `json:"total_input_tokens"`
	TotalOutputTokens int `json:"total_output_tokens"`
	CachedTokens      int `json:"cached_tokens"`

	RequestThroughput float64 `json:"request_throughput"`     // completed requests / s
	OutputThroughput  float64 `json:"output_throughput"`      // output tokens / s
	TotalThroughput   float64 `json:"total_token_throughput"` // (input + output) tokens / s

	TTFT Distribution `json:"ttft_ms"` // send → first text chunk
	TPOT Distribution `json:"tpot_ms"` // (latency − TTFT) / (output tokens − 1), requests with > 1 token
	ITL  Distribution `json:"itl_ms"`  // every gap between text chunks, all requests pooled
	E2EL Distribution `json:"e2el_ms"` // send → end of stream

	// Speculation, when the server reports it (OpenAI accepted/rejected
	// prediction tokens or llama.cpp timings.draft_n/draft_n_accepted) and
	// proposed at least one draft token; sums over those requests only.
	DraftReported  bool    `json:"draft_reported"`
	DraftProposed  int     `json:"draft_proposed"`
	DraftAccepted  int     `json:"draft_accepted"`
	AcceptanceRate float64 `json:"acceptance_rate"` // accepted / proposed; 0 when not reported
	// MeanAcceptedLength is output tokens per target forward pass:
	// Σ out / Σ (out − accepted). Every target step yields one token of its
	// own plus the drafts it accepted, so this needs no step count from the
	// server; 1 = no gain.
	MeanAcceptedLength float64 `json:"mean_accepted_length"`

	UsageMissing int `json:"usage_missing,omitempty"` // successes whose token counts are chunk counts
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Summarize turns samples into a Summary; dur is the run's wall time.
func Summarize(samples []Sample, dur time.Duration) Summary {
	var s Summary
	var ttft, tpot, itl, e2el []float64
	var draftOut, draftAcc int
	for i := range samples {
		x := &samples[i]
		if !x.OK() {
			s.Failed++
			if s.Errors == nil {
				s.Errors = map[string]int{}
			}
			s.Errors[x.ErrKind]++
			if s.FirstErr == "" {
				s.FirstErr = x.Err.Error()
			}
			continue
		}
		s.Completed++
		s.TotalInputTokens += x.PromptTokens
		s.TotalOutputTokens += x.OutputTokens
		s.CachedTokens += x.CachedTokens
		if !x.UsageReported {
			s.UsageMissing++
		}
		ttft = append(ttft, ms(x.TTFT))
		e2el = append(e2el, ms(x.Latency))
		if x.OutputTokens > 1 {
			tpot = append(tpot, ms(x.Latency-x.TTFT)/float64(x.OutputTokens-1))
		}
		for _, g := range x.ITL {
			itl = append(itl, ms(g))
		}
		// A server that always reports counts (specd sends zeros without
		// speculation) has speculated only if it proposed something.
		if x.DraftReported && x.DraftProposed > 0 {
			s.DraftReported = true
			s.DraftProposed += x.DraftProposed
			s.DraftAccepted += x.DraftAccepted
			draftOut += x.OutputTokens
			draftAcc += x.DraftAccepted
		}
	}
	s.Duration = dur.Seconds()
	if s.Duration > 0 {
		s.RequestThroughput = float64(s.Completed) / s.Duration
		s.OutputThroughput = float64(s.TotalOutputTokens) / s.Duration
		s.TotalThroughput = float64(s.TotalInputTokens+s.TotalOutputTokens) / s.Duration
	}
	s.TTFT, s.TPOT, s.ITL, s.E2EL = Distribute(ttft), Distribute(tpot), Distribute(itl), Distribute(e2el)
	if s.DraftProposed > 0 {
		s.AcceptanceRate = float64(s.DraftAccepted) / float64(s.DraftProposed)
	}
	if s.DraftReported && draftOut > draftAcc {
		s.MeanAcceptedLength = float64(draftOut) / float64(draftOut-draftAcc)
	}
	return s
}
