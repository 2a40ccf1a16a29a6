package loadgen

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
)

// Report is the whole output of one `specd bench` invocation: what was run
// and every point measured. It is the --json document.
type Report struct {
	Date     string    `json:"date"` // RFC 3339, when the run started
	URL      string    `json:"url"`
	Model    string    `json:"model"`
	Endpoint string    `json:"endpoint"`
	Workload WorkInfo  `json:"workload"`
	Points   []Point   `json:"points"`
	Sweep    *SweepFit `json:"sweep,omitempty"`
	// Rounds > 1: Points holds every run, round by round, and RoundStats
	// condenses them per point (SummariseRounds); a sweep is fitted on
	// each k's median run, its measured speed-ups paired per round.
	Rounds     int         `json:"rounds,omitempty"`
	RoundStats []RoundStat `json:"round_stats,omitempty"`
}

// WorkInfo records the workload, so a JSON file says what it measured.
type WorkInfo struct {
	Dataset       string       `json:"dataset,omitempty"`
	Prompts       int          `json:"prompts"`
	InputTokens   int          `json:"input_tokens,omitempty"`
	OutputTokens  int          `json:"output_tokens"`
	SharedPrefix  int          `json:"shared_prefix,omitempty"`
	PrefixCache   bool         `json:"prefix_cache"`
	TokensPerWord float64      `json:"tokens_per_word,omitempty"`
	Calibration   string       `json:"calibration,omitempty"` // tokenize, usage, default, flag
	Temperature   float64      `json:"temperature"`
	Requests      int          `json:"requests,omitempty"`
	DurationS     float64      `json:"duration_s,omitempty"`
	Rate          float64      `json:"rate,omitempty"`
	Speculative   *Speculative `json:"speculative,omitempty"`
	Warmup        int          `json:"warmup,omitempty"`
	Salt          int          `json:"salt,omitempty"` // random words put before each prompt
}

// Label names a point in tables: "c=4", "c=4 k=2", "c=4 ngram", "c=1 t=0.8",
// "rate=8/s c≤16", with " #2" for round 2.
func (p Point) Label() string {
	var b strings.Builder
	if p.Rate > 0 {
		fmt.Fprintf(&b, "rate=%g/s", p.Rate)
		if p.Concurrency > 0 {
			fmt.Fprintf(&b, " c<=%d", p.Concurrency)
		}
	} else {
		fmt.Fprintf(&b, "c=%d", p.Concurrency)
	}
	if p.K != nil {
		fmt.Fprintf(&b, " k=%d", *p.K)
	}
	if p.Proposer != "" {
		fmt.Fprintf(&b, " %s", p.Proposer)
	}
	if p.Temperature != nil {
		fmt.Fprintf(&b, " t=%g", *p.Temperature)
	}
	if p.Round > 0 {
		fmt.Fprintf(&b, " #%d", p.Round)
	}
	return b.String()
}

// WriteTable writes each point's full report, then (for several points) a
// one-line-per-point comparison, then the sweep fit if any.
// With rounds, the runs are listed one line each and then condensed.
func WriteTable(w io.Writer, r Report) error {
	if r.Rounds <= 1 {
		for _, p := range r.Points {
			writePoint(w, p)
		}
	}
	if len(r.Points) > 1 {
		fmt.Fprintln(w, "================ Summary ================")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "point\tok\tfail\treq/s\tout tok/s\tTTFT p50\tTPOT p50\tITL p50\tE2E p50\tE2E p99\taccept\tlen\t")
		for _, p := range r.Points {
			s := p.Summary
			fmt.Fprintf(tw, "%s\t%d\t%d\t%.2f\t%.1f\t%.1f\t%.2f\t%.2f\t%.1f\t%.1f\t%s\t%s\t\n",
				p.Label(), s.Completed, s.Failed, s.RequestThroughput, s.OutputThroughput,
				s.TTFT.P50, s.TPOT.P50, s.ITL.P50, s.E2EL.P50, s.E2EL.P99, accStr(s), lenStr(s))
		}
		tw.Flush()
		fmt.Fprintln(w, "(latencies in ms)")
	}
	if len(r.RoundStats) > 0 {
		fmt.Fprintf(w, "================ %d rounds: output tok/s, and the ratio to the reference point within each round (geometric mean, 90%% CI) ================\n", r.Rounds)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "point\truns\tmedian\tmin\tmax\tratio\t90% CI\t")
		for _, st := range r.RoundStats {
			ratio, ci := "ref", ""
			if st.Ratio != nil {
				ratio, ci = fmt.Sprintf("%.3f", st.Ratio.Mean), fmt.Sprintf("%.3f–%.3f", st.Ratio.Lo, st.Ratio.Hi)
			}
			fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.1f\t%.1f\t%s\t%s\t\n", st.Label(), st.Runs,
				st.OutputTPS.Median, st.OutputTPS.Min, st.OutputTPS.Max, ratio, ci)
		}
		tw.Flush()
	}
	if f := r.Sweep; f != nil {
		fmt.Fprintf(w, "================ k sweep vs Leviathan (α = %.3f fitted, c = %g) ================\n", f.Alpha, f.DraftCost)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "k\taccept\tlen\tE(k)\tout tok/s\tspeed-up\t90% CI\tpredicted\t")
		for _, c := range f.Curve {
			ci := "-"
			if c.SpeedupCI != nil {
				ci = fmt.Sprintf("%.3f–%.3f", c.SpeedupCI.Lo, c.SpeedupCI.Hi)
			}
			fmt.Fprintf(tw, "%d\t%.3f\t%.3f\t%.3f\t%.1f\t%.3f\t%s\t%.3f\t\n", c.K, c.AcceptanceRate, c.MeanLength,
				c.ExpectedLength, c.OutputTPS, c.MeasuredSpeedup, ci, c.PredictedSpeedup)
		}
		tw.Flush()
		for _, m := range f.Warnings {
			fmt.Fprintln(w, "warning:", m)
		}
	}
	return nil
}

func accStr(s Summary) string {
	if !s.DraftReported {
		return "-"
	}
	return fmt.Sprintf("%.3f", s.AcceptanceRate)
}

func lenStr(s Summary) string {
	if !s.DraftReported {
		return "-"
	}
	return fmt.Sprintf("%.2f", s.MeanAcceptedLength)
}

func writePoint(w io.Writer, p Point) {
	s := p.Summary
	fmt.Fprintf(w, "============ Serving Benchmark Result (%s) ============\n", p.Label())
	row := func(name string, v any) { fmt.Fprintf(w, "%-40s %v\n", name+":", v) }
	row("Successful requests", s.Completed)
	row("Failed requests", s.Failed)
	if s.Failed > 0 {
		kinds := make([]string, 0, len(s.Errors))
		for k, n := range s.Errors {
			kinds = append(kinds, fmt.Sprintf("%s×%d", k, n))
		}
		sort.Strings(kinds)
		row("Errors", strings.Join(kinds, ", "))
		row("First error", s.FirstErr)
	}
	row("Benchmark duration (s)", fmt.Sprintf("%.2f", s.Duration))
	row("Total input tokens", s.TotalInputTokens)
	row("Total generated tokens", s.TotalOutputTokens)
	if s.CachedTokens > 0 {
		row("Cached prompt tokens", s.CachedTokens)
	}
	row("Request throughput (req/s)", fmt.Sprintf("%.2f", s.RequestThroughput))
	row("Output token throughput (tok/s)", fmt.Sprintf("%.2f", s.OutputThroughput))
	row("Total token throughput (tok/s)", fmt.Sprintf("%.2f", s.TotalThroughput))
	if s.DraftReported {
		row("Draft acceptance rate", fmt.Sprintf("%.3f (%d/%d)", s.AcceptanceRate, s.DraftAccepted, s.DraftProposed))
		row("Mean accepted length (tok/pass)", fmt.Sprintf("%.3f", s.MeanAcceptedLength))
	}
	if s.UsageMissing > 0 {
		row("Responses without usage (chunks counted)", s.UsageMissing)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "(ms)\tmean\tp50\tp90\tp99\tmin\tmax\tn\t")
	for _, m := range []struct {
		name string
		d    Distribution
	}{{"TTFT", s.TTFT}, {"TPOT", s.TPOT}, {"ITL", s.ITL}, {"E2EL", s.E2EL}} {
		d := m.d
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%d\t\n", m.name, d.Mean, d.P50, d.P90, d.P99, d.Min, d.Max, d.N)
	}
	tw.Flush()
	fmt.Fprintln(w)
}
