package loadgen

import (
	"context"
	"encoding/json"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"specd/internal/loadgen/fakeoai"
)

func msD(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func prompts(n int) []Prompt {
	return Synthetic(Workload{Count: n, InputTokens: 16, Seed: 1})
}

// The fake emits TTFT, then a chunk every ITL: the measured figures must
// match that schedule. Sleeps only lengthen on a loaded machine, so the
// lower bounds are tight and the upper ones generous.
func TestBenchTimingsMatchSchedule(t *testing.T) {
	const ttft, itl, tokens = 40 * time.Millisecond, 15 * time.Millisecond, 6
	srv := fakeoai.New(fakeoai.Options{TTFT: ttft, ITL: itl, Tokens: tokens})
	defer srv.Close()
	res, err := Run(context.Background(), Config{URL: srv.URL, Concurrency: 2, Requests: 6, OutputTokens: tokens}, prompts(6))
	if err != nil {
		t.Fatal(err)
	}
	s := res.Summary
	if s.Completed != 6 || s.Failed != 0 || srv.Requests() != 6 {
		t.Fatalf("completed %d failed %d server saw %d, want 6/0/6", s.Completed, s.Failed, srv.Requests())
	}
	slack := 60.0 // ms of scheduling noise allowed under -race on 2 shared cores
	within := func(name string, got, want float64) {
		t.Helper()
		if got < want-1 || got > want+slack {
			t.Errorf("%s = %.2f ms, want %.2f (+%.0f)", name, got, want, slack)
		}
	}
	within("TTFT p50", s.TTFT.P50, msD(ttft))
	within("TTFT min", s.TTFT.Min, msD(ttft))
	within("ITL p50", s.ITL.P50, msD(itl))
	within("TPOT p50", s.TPOT.P50, msD(itl))
	e2e := msD(ttft) + (tokens-1)*msD(itl)
	within("E2EL p50", s.E2EL.P50, e2e)
	if s.ITL.N != 6*(tokens-1) || s.TTFT.N != 6 || s.TPOT.N != 6 {
		t.Errorf("sample counts ITL %d TTFT %d TPOT %d, want 30/6/6", s.ITL.N, s.TTFT.N, s.TPOT.N)
	}
	if s.TotalOutputTokens != 6*tokens || s.TotalInputTokens == 0 {
		t.Errorf("tokens out %d in %d", s.TotalOutputTokens, s.TotalInputTokens)
	}
	// 6 requests, 2 at a time: three rounds of one request's latency.
	if s.Duration*1000 < 3*e2e-1 || s.Duration*1000 > 3*e2e+3*slack {
		t.Errorf("duration %.1f ms, want about %.1f", s.Duration*1000, 3*e2e)
	}
	if got, want := s.OutputThroughput, float64(6*tokens)/s.Duration; math.Abs(got-want) > 1e-9 {
		t.Errorf("output throughput %.3f, want %.3f", got, want)
	}
	if got, want := s.RequestThroughput, 6/s.Duration; math.Abs(got-want) > 1e-9 {
		t.Errorf("request throughput %.3f, want %.3f", got, want)
	}
	if got, want := s.TotalThroughput, float64(s.TotalInputTokens+s.TotalOutputTokens)/s.Duration; math.Abs(got-want) > 1e-9 {
		t.Errorf("total throughput %.3f, want %.3f", got, want)
	}
	// TPOT is derived per request from latency and TTFT.
	for _, x := range res.Samples {
		want := msD(x.Latency-x.TTFT) / float64(x.OutputTokens-1)
		var gaps time.Duration
		for _, g := range x.ITL {
			gaps += g
		}
		if d := math.Abs(msD(gaps)/float64(len(x.ITL)) - want); d > 5 {
			t.Errorf("request %d: mean ITL and TPOT differ by %.2f ms", x.Index, d)
		}
	}
}

func TestBenchPoissonIssuesExactCount(t *testing.T) {
	srv := fakeoai.New(fakeoai.Options{Tokens: 2})
	defer srv.Close()
	res, err := Run(context.Background(), Config{URL: srv.URL, Rate: 50, Requests: 15, Seed: 3}, prompts(4))
	if err != nil {
		t.Fatal(err)
	}
	if srv.Requests() != 15 || res.Summary.Completed != 15 {
		t.Fatalf("server saw %d, completed %d; want 15", srv.Requests(), res.Summary.Completed)
	}
	// The send times follow the seeded schedule: the last one is at least the
	// sum of the 14 gaps drawn.
	a := newArrivals(50, 3)
	var sum time.Duration
	for range 14 {
		sum += a.next()
	}
	var last time.Duration
	for _, s := range res.Samples {
		last = max(last, s.Start)
	}
	if last < sum-2*time.Millisecond {
		t.Errorf("last request sent at %v, before the schedule's %v", last, sum)
	}
}

func TestBenchPoissonGapsAreExponential(t *testing.T) {
	a := newArrivals(20, 9)
	const n = 20000
	var sum, sq float64
	for range n {
		g := a.next().Seconds()
		sum += g
		sq += g * g
	}
	mean := sum / n
	sd := math.Sqrt(sq/n - mean*mean)
	if math.Abs(mean-0.05) > 0.05*0.03 || math.Abs(sd-0.05) > 0.05*0.05 {
		t.Errorf("gap mean %.4f sd %.4f, want 0.05 and 0.05 (exponential)", mean, sd)
	}
}

func TestBenchDurationStopsIssuing(t *testing.T) {
	srv := fakeoai.New(fakeoai.Options{TTFT: 5 * time.Millisecond, ITL: 5 * time.Millisecond, Tokens: 3})
	defer srv.Close()
	const d = 200 * time.Millisecond
	res, err := Run(context.Background(), Config{URL: srv.URL, Concurrency: 2, Duration: d}, prompts(8))
	if err != nil {
		t.Fatal(err)
	}
	if res.Summary.Completed < 4 {
		t.Errorf("only %d requests in %v", res.Summary.Completed, d)
	}
	for _, s := range res.Samples {
		if s.Start > d+30*time.Millisecond { // decided before the deadline, sent just after
			t.Errorf("request %d sent at %v, after the %v deadline", s.Index, s.Start, d)
		}
	}
}

func TestBenchAcceptanceFromBothUsageStyles(t *testing.T) {
	for _, tc := range []struct {
		style      string
		reported   bool
		rate, mlen float64
	}{
		{fakeoai.UsageOpenAI, true, 0.6, 4},
		{fakeoai.UsageLlama, true, 0.6, 4},
		{fakeoai.UsagePlain, false, 0, 0},
		{"zeros", false, 0, 0}, // specd reports 0/0 when it did not speculate
	} {
		t.Run("style="+tc.style, func(t *testing.T) {
			// 16 tokens per response, 12 of them accepted drafts out of 20:
			// α = 0.6, and 16 tokens in 16−12 = 4 target passes.
			opt := fakeoai.Options{Tokens: 16, Usage: tc.style, Accepted: 12, Rejected: 8}
			if tc.style == "zeros" {
				opt = fakeoai.Options{Tokens: 16, Usage: fakeoai.UsageOpenAI}
			}
			srv := fakeoai.New(opt)
			defer srv.Close()
			res, err := Run(context.Background(), Config{URL: srv.URL, Concurrency: 2, Requests: 4, OutputTokens: 16}, prompts(4))
			if err != nil {
				t.Fatal(err)
			}
			s := res.Summary
			if s.DraftReported != tc.reported || math.Abs(s.AcceptanceRate-tc.rate) > 1e-9 || math.Abs(s.MeanAcceptedLength-tc.mlen) > 1e-9 {
				t.Fatalf("reported %v rate %v len %v, want %v %v %v", s.DraftReported, s.AcceptanceRate, s.MeanAcceptedLength, tc.reported, tc.rate, tc.mlen)
			}
			if tc.reported && (s.DraftProposed != 80 || s.DraftAccepted != 48) {
				t.Errorf("proposed %d accepted %d, want 80/48", s.DraftProposed, s.DraftAccepted)
			}
		})
	}
}

func TestBenchNoUsageCountsChunks(t *testing.T) {
	srv := fakeoai.New(fakeoai.Options{Tokens: 5, Usage: fakeoai.UsageNone})
	defer srv.Close()
	res, err := Run(context.Background(), Config{URL: srv.URL, Requests: 2}, prompts(2))
	if err != nil {
		t.Fatal(err)
	}
	if s := res.Summary; s.Completed != 2 || s.TotalOutputTokens != 10 || s.UsageMissing != 2 {
		t.Fatalf("completed %d out %d missing %d, want 2/10/2", s.Completed, s.TotalOutputTokens, s.UsageMissing)
	}
}

func TestBenchErrorsAreCounted(t *testing.T) {
	// A port with nothing listening: bind, note, close.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close()
	bad := fakeoai.New(fakeoai.Options{Status: http.StatusBadRequest})
	defer bad.Close()
	flaky := fakeoai.New(fakeoai.Options{FailEvery: 2})
	defer flaky.Close()

	for _, tc := range []struct {
		name, url string
		ok        int
		kinds     map[string]int
	}{
		{"server down", dead, 0, map[string]int{"connect": 4}},
		{"http 400", bad.URL, 0, map[string]int{"http 400": 4}},
		{"every 2nd 500", flaky.URL, 2, map[string]int{"http 500": 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Run(context.Background(), Config{URL: tc.url, Requests: 4}, prompts(4))
			if err != nil {
				t.Fatal(err)
			}
			s := res.Summary
			if s.Completed != tc.ok || s.Failed != 4-tc.ok {
				t.Fatalf("completed %d failed %d, want %d/%d", s.Completed, s.Failed, tc.ok, 4-tc.ok)
			}
			for k, n := range tc.kinds {
				if s.Errors[k] != n {
					t.Errorf("errors %v, want %s×%d", s.Errors, k, n)
				}
			}
			if s.FirstErr == "" {
				t.Error("no first error recorded")
			}
		})
	}
}

func TestBenchCancelStopsRun(t *testing.T) {
	srv := fakeoai.New(fakeoai.Options{TTFT: 20 * time.Millisecond, ITL: 20 * time.Millisecond, Tokens: 50})
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	res, err := Run(ctx, Config{URL: srv.URL, Concurrency: 2, Requests: 100}, prompts(2))
	if err == nil {
		t.Fatal("no error from a cancelled run")
	}
	if el := time.Since(t0); el > 2*time.Second {
		t.Errorf("cancelled run took %v", el)
	}
	if res.Summary.Failed != 0 {
		t.Errorf("cut-off requests counted as failures: %v", res.Summary.Errors)
	}
}

func TestBenchRequestBody(t *testing.T) {
	srv := fakeoai.New(fakeoai.Options{Tokens: 2})
	defer srv.Close()
	cases := []struct {
		name  string
		cfg   Config
		check func(map[string]any) string
	}{
		{"defaults", Config{IgnoreEOS: true, OutputTokens: 7, Temperature: 0.8}, func(b map[string]any) string {
			so, _ := b["stream_options"].(map[string]any)
			switch {
			case b["stream"] != true || so["include_usage"] != true:
				return "not streaming with usage"
			case b["max_tokens"] != 7.0 || b["temperature"] != 0.8 || b["ignore_eos"] != true:
				return "max_tokens/temperature/ignore_eos wrong"
			case b["cache_prompt"] != false:
				return "cache_prompt not false"
			case b["speculative"] != nil:
				return "speculative sent unasked"
			}
			return ""
		}},
		{"prefix cache, k=3", Config{PrefixCache: true, Speculative: SpecForK(3)}, func(b map[string]any) string {
			sp, _ := b["speculative"].(map[string]any)
			if b["cache_prompt"] != true || sp["k"] != 3.0 || sp["proposer"] != nil {
				return "cache_prompt or speculative.k wrong"
			}
			return ""
		}},
		{"k=0", Config{Speculative: SpecForK(0)}, func(b map[string]any) string {
			sp, _ := b["speculative"].(map[string]any)
			if sp["proposer"] != "none" || sp["k"] != nil {
				return `k=0 must send {"proposer":"none"}`
			}
			return ""
		}},
		{"extra fields", Config{Extra: []byte(` {"response_format": {"type": "json_object"}, "seed": 5} `)}, func(b map[string]any) string {
			rf, _ := b["response_format"].(map[string]any)
			if rf["type"] != "json_object" || b["seed"] != 5.0 || b["stream"] != true {
				return "extra fields not sent beside the base ones"
			}
			return ""
		}},
	}
	for i, tc := range cases {
		tc.cfg.URL, tc.cfg.Requests = srv.URL, 1
		if _, err := Run(context.Background(), tc.cfg, prompts(1)); err != nil {
			t.Fatal(err)
		}
		b := srv.Bodies()[i]
		if msg := tc.check(b); msg != "" {
			t.Errorf("%s: %s: %v", tc.name, msg, b)
		}
	}
}

func TestBenchStreamParsing(t *testing.T) {
	for _, tc := range []struct {
		name, in       string
		wantErr        bool
		chunks, output int
	}{
		{"completions with usage", "data: {\"choices\":[{\"text\":\"a\"}]}\n\n: keep-alive\n\ndata: {\"choices\":[{\"text\":\"\"}]}\n\ndata: {\"choices\":[{\"text\":\"b\"}]}\r\n\r\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":9}}\n\ndata: [DONE]\n\n", false, 2, 9},
		{"chat deltas", "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"y\"}}]}\n\ndata: [DONE]\n\n", false, 2, 2},
		{"usage then EOF", "data: {\"choices\":[{\"text\":\"a\"}]}\n\ndata: {\"usage\":{\"completion_tokens\":1}}\n\n", false, 1, 1},
		{"cut off", "data: {\"choices\":[{\"text\":\"a\"}]}\n\n", true, 1, 1},
		{"bad json", "data: {\"choices\":[\n\n", true, 0, 0},
		{"error event", "data: {\"error\":{\"message\":\"boom\"}}\n\n", true, 0, 0},
		{"responses", "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"status\":\"in_progress\",\"usage\":null}}\n\n" +
			"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"a\"}\n\n" +
			"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"b\"}\n\n" +
			"event: response.output_text.done\ndata: {\"type\":\"response.output_text.done\",\"text\":\"ab\"}\n\n" +
			"event: response.incomplete\ndata: {\"type\":\"response.incomplete\",\"response\":{\"status\":\"incomplete\",\"usage\":{\"input_tokens\":5,\"output_tokens\":7},\"timings\":{\"draft_n\":4,\"draft_n_accepted\":3}}}\n\n", false, 2, 7},
		{"responses cut off", "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"a\"}\n\n", true, 1, 1},
		{"responses failure", "event: error\ndata: {\"type\":\"error\",\"code\":\"timeout\",\"message\":\"late\"}\n\n", true, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s Sample
			err := readStream(strings.NewReader(tc.in), time.Now(), &s)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %v", err, tc.wantErr)
			}
			if !tc.wantErr && (s.ContentChunks != tc.chunks || s.OutputTokens != tc.output) {
				t.Errorf("chunks %d output %d, want %d/%d", s.ContentChunks, s.OutputTokens, tc.chunks, tc.output)
			}
		})
	}
}

func TestBenchPercentile(t *testing.T) {
	seq := make([]float64, 100)
	for i := range seq {
		seq[i] = float64(i + 1)
	}
	for _, tc := range []struct {
		xs     []float64
		p, out float64
	}{ // expectations are numpy.percentile's (linear interpolation)
		{[]float64{1, 2, 3, 4}, 50, 2.5},
		{[]float64{1, 2, 3, 4}, 90, 3.7},
		{[]float64{1, 2, 3, 4}, 99, 3.97},
		{[]float64{5}, 99, 5},
		{seq, 50, 50.5},
		{seq, 99, 99.01},
		{seq, 0, 1},
		{seq, 100, 100},
	} {
		if got := Percentile(tc.xs, tc.p); math.Abs(got-tc.out) > 1e-9 {
			t.Errorf("Percentile(%v…, %v) = %v, want %v", tc.xs[0], tc.p, got, tc.out)
		}
	}
	if !math.IsNaN(Percentile(nil, 50)) {
		t.Error("empty input must give NaN")
	}
	d := Distribute([]float64{4, 1, 3, 2})
	if d.Mean != 2.5 || d.Min != 1 || d.Max != 4 || d.P50 != 2.5 || d.N != 4 {
		t.Errorf("Distribute = %+v", d)
	}
}

func TestBenchLeviathanAndRanges(t *testing.T) {
	if e := ExpectedLength(0.5, 2); math.Abs(e-1.75) > 1e-12 {
		t.Errorf("E(0.5, 2) = %v, want 1.75", e)
	}
	if e := ExpectedLength(1, 4); e != 5 {
		t.Errorf("E(1, 4) = %v, want 5", e)
	}
	if s := LeviathanSpeedup(0.5, 2, 0.25); math.Abs(s-1.75/1.5) > 1e-12 {
		t.Errorf("speedup = %v", s)
	}
	for _, a := range []float64{0.1, 0.5, 0.8, 0.95} {
		for _, k := range []int{1, 3, 8} {
			if got := AlphaFromLength(ExpectedLength(a, k), k); math.Abs(got-a) > 1e-9 {
				t.Errorf("AlphaFromLength(E(%v,%d)) = %v", a, k, got)
			}
		}
	}
	for _, tc := range []struct {
		in   string
		want []int
		bad  bool
	}{
		{"0..3", []int{0, 1, 2, 3}, false},
		{"1,4,16", []int{1, 4, 16}, false},
		{"8", []int{8}, false},
		{"3..1", nil, true},
		{"a", nil, true},
		{"-1", nil, true},
	} {
		got, err := ParseInts(tc.in)
		if (err != nil) != tc.bad || (!tc.bad && !equalInts(got, tc.want)) {
			t.Errorf("ParseInts(%q) = %v, %v", tc.in, got, err)
		}
	}
	k := func(v int) *int { return &v }
	fit := FitSweep([]Point{
		{K: k(0), Summary: Summary{OutputThroughput: 100}},
		{K: k(2), Summary: Summary{OutputThroughput: 150, MeanAcceptedLength: ExpectedLength(0.7, 2), DraftReported: true}},
		{K: k(4), Summary: Summary{OutputThroughput: 170, MeanAcceptedLength: ExpectedLength(0.7, 4), DraftReported: true}},
	}, 0.1)
	if math.Abs(fit.Alpha-0.7) > 1e-6 || fit.BaseTPS != 100 || len(fit.Curve) != 3 || math.Abs(fit.Curve[1].MeasuredSpeedup-1.5) > 1e-12 || len(fit.Warnings) != 0 {
		t.Errorf("FitSweep = %+v", fit)
	}
	// A server that ignores the extension (llama-server): drafts at k=0,
	// more than k+1 tokens per pass at k=1.
	ignored := FitSweep([]Point{
		{K: k(0), Summary: Summary{OutputThroughput: 100, DraftReported: true, DraftProposed: 40, MeanAcceptedLength: 3}},
		{K: k(1), Summary: Summary{OutputThroughput: 150, DraftReported: true, DraftProposed: 40, MeanAcceptedLength: 3}},
	}, 0)
	if len(ignored.Warnings) != 2 {
		t.Errorf("warnings %q, want one for k=0 and one for k=1", ignored.Warnings)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestBenchSyntheticPrompts(t *testing.T) {
	ps := Synthetic(Workload{Count: 20, InputTokens: 100, SharedPrefix: 60, TokensPerWord: 2, OutputTokens: 9, Seed: 5})
	prefix := strings.Fields(ps[0].Text)[:30]
	seen := map[string]bool{}
	for _, p := range ps {
		w := strings.Fields(p.Text)
		if len(w) != 50 || p.MaxTokens != 9 {
			t.Fatalf("prompt has %d words, max_tokens %d; want 50 (100 tokens at 2/word), 9", len(w), p.MaxTokens)
		}
		if strings.Join(w[:30], " ") != strings.Join(prefix, " ") {
			t.Fatal("shared prefix differs between prompts")
		}
		seen[strings.Join(w[30:], " ")] = true
	}
	if len(seen) != 20 {
		t.Errorf("only %d distinct suffixes in 20 prompts", len(seen))
	}
	// Without a shared prefix, prompts differ from the first words on.
	first := map[string]bool{}
	for _, p := range Synthetic(Workload{Count: 20, InputTokens: 40, Seed: 5}) {
		first[strings.Join(strings.Fields(p.Text)[:3], " ")] = true
	}
	if len(first) < 18 {
		t.Errorf("only %d distinct 3-word openings in 20 prompts", len(first))
	}
}

func TestBenchCalibrate(t *testing.T) {
	for _, tc := range []struct {
		name string
		opt  fakeoai.Options
		how  string
	}{
		{"tokenize", fakeoai.Options{TokensPerWord: 2.5}, "tokenize"},
		{"usage", fakeoai.Options{TokensPerWord: 2.5, NoTokenize: true}, "usage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := fakeoai.New(tc.opt)
			defer srv.Close()
			tpw, how, err := Calibrate(context.Background(), Config{URL: srv.URL, Requests: 1})
			if err != nil || how != tc.how || math.Abs(tpw-2.5) > 0.01 {
				t.Fatalf("Calibrate = %v %q %v, want 2.5 %q", tpw, how, err, tc.how)
			}
		})
	}
}

func TestBenchLoadDataset(t *testing.T) {
	ps, err := LoadDataset(strings.NewReader("{\"prompt\": \"a b\", \"max_tokens\": 5}\n\n{\"prompt\": \"c\"}\n"))
	if err != nil || len(ps) != 2 || ps[0].MaxTokens != 5 || ps[1].Text != "c" || ps[1].MaxTokens != 0 {
		t.Fatalf("LoadDataset = %+v, %v", ps, err)
	}
	for _, bad := range []string{"", "{\"prompt\": \"\"}", "not json", "{\"prompt\":\"x\",\"max_tokens\":-1}"} {
		if _, err := LoadDataset(strings.NewReader(bad)); err == nil {
			t.Errorf("LoadDataset(%q) accepted", bad)
		}
	}
	// The copy-heavy dataset shipped for the comparison suite parses.
	f, err := os.Open(filepath.Join("..", "..", "bench", "copy.jsonl"))
	if err != nil {
		t.Skip("bench/copy.jsonl not present")
	}
	defer f.Close()
	if ps, err := LoadDataset(f); err != nil || len(ps) < 8 {
		t.Errorf("bench/copy.jsonl: %d prompts, %v", len(ps), err)
	}
}

func TestBenchPlots(t *testing.T) {
	dir := t.TempDir()
	pts := []Point{
		{Concurrency: 1, Summary: Summary{OutputThroughput: 50, E2EL: Distribution{P50: 100, P99: 120}, TTFT: Distribution{P50: 10, P99: 12}}},
		{Concurrency: 4, Summary: Summary{OutputThroughput: 150, E2EL: Distribution{P50: 130, P99: 200}, TTFT: Distribution{P50: 20, P99: 40}}},
		{Concurrency: 16, Summary: Summary{OutputThroughput: 300, E2EL: Distribution{P50: 300, P99: 500}, TTFT: Distribution{P50: 60, P99: 150}}},
	}
	k := func(v int) *int { return &v }
	fit := FitSweep([]Point{
		{K: k(0), Summary: Summary{OutputThroughput: 100}},
		{K: k(2), Summary: Summary{OutputThroughput: 140, AcceptanceRate: 0.6, MeanAcceptedLength: 2, DraftReported: true}},
		{K: k(4), Summary: Summary{OutputThroughput: 150, AcceptanceRate: 0.5, MeanAcceptedLength: 2.4, DraftReported: true}},
	}, 0.05)
	for _, name := range []string{"conc.svg", "conc.png", "sweep.svg"} {
		path := filepath.Join(dir, name)
		var err error
		if strings.HasPrefix(name, "conc") {
			err = PlotConcurrency(path, "test", pts)
		} else {
			err = PlotSweep(path, "test", fit)
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		b, err := os.ReadFile(path)
		if err != nil || len(b) < 1000 {
			t.Fatalf("%s: %d bytes, %v", name, len(b), err)
		}
		switch filepath.Ext(name) {
		case ".svg":
			if !strings.Contains(string(b[:200]), "<svg") {
				t.Errorf("%s is not SVG", name)
			}
		case ".png":
			if string(b[1:4]) != "PNG" {
				t.Errorf("%s is not PNG", name)
			}
		}
	}
	if err := PlotConcurrency(filepath.Join(dir, "x.gif"), "t", pts); err == nil {
		t.Error("unknown format accepted")
	}
}

func TestBenchSummaryJSON(t *testing.T) {
	s := Summarize(nil, time.Second)
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(b, &back); err != nil || back["completed"] != 0.0 {
		t.Fatalf("empty summary JSON %s: %v", b, err)
	}
}

func TestBenchValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg Config
		ok  bool
	}{
		{Config{URL: "http://127.0.0.1:1", Requests: 1}, true},
		{Config{URL: "http://127.0.0.1:1", Duration: time.Second}, true},
		{Config{URL: "http://127.0.0.1:1"}, false},
		{Config{URL: "127.0.0.1:1", Requests: 1}, false},
		{Config{URL: "http://127.0.0.1:1", Requests: 1, Rate: -1}, false},
		{Config{URL: "http://127.0.0.1:1", Requests: 1, Speculative: &Speculative{K: -2}}, false},
		{Config{URL: "http://127.0.0.1:1", Requests: 1, Extra: []byte(`{"grammar": "root ::= \"a\""}`)}, true},
		{Config{URL: "http://127.0.0.1:1", Requests: 1, Extra: []byte(`[1]`)}, false},
		{Config{URL: "http://127.0.0.1:1", Requests: 1, Extra: []byte(`{"max_tokens": 3}`)}, false},
	} {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("Validate(%+v) = %v", tc.cfg, err)
		}
	}
}

func TestBenchSalt(t *testing.T) {
	ps := []Prompt{{Text: "copy this", MaxTokens: 3}, {Text: "copy this", MaxTokens: 3}}
	a, b := Salt(ps, 4, 1), Salt(ps, 4, 2)
	for i := range ps {
		if !strings.HasSuffix(a[i].Text, ". copy this") || len(strings.Fields(a[i].Text)) != 6 || a[i].MaxTokens != 3 {
			t.Fatalf("salted prompt %q", a[i].Text)
		}
	}
	if a[0].Text == a[1].Text || a[0].Text == b[0].Text {
		t.Error("salt repeats across prompts or seeds")
	}
	if got := Salt(ps, 0, 1); got[0].Text != "copy this" {
		t.Error("Salt(0) changed the prompt")
	}
}
