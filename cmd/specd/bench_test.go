package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"specd/internal/loadgen"
	"specd/internal/loadgen/fakeoai"
)

func bench(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := runBench(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), err
}

func TestBenchCommandJSON(t *testing.T) {
	srv := fakeoai.New(fakeoai.Options{Tokens: 4, Usage: fakeoai.UsageLlama, Accepted: 2, Rejected: 2, TokensPerWord: 2})
	defer srv.Close()
	out, _, err := bench(t, "--url", srv.URL, "--concurrency", "1,2", "--requests", "4",
		"--input-tokens", "40", "--output-tokens", "4", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var r loadgen.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("--json output does not parse: %v\n%s", err, out)
	}
	if len(r.Points) != 2 || r.Points[1].Concurrency != 2 || r.Points[0].Summary.Completed != 4 {
		t.Fatalf("points %+v", r.Points)
	}
	if r.Model != "fake-model" || r.Workload.Calibration != "tokenize" || r.Workload.TokensPerWord != 2 {
		t.Errorf("model %q calibration %q %v", r.Model, r.Workload.Calibration, r.Workload.TokensPerWord)
	}
	if s := r.Points[0].Summary; !s.DraftReported || s.AcceptanceRate != 0.5 || s.OutputThroughput <= 0 {
		t.Errorf("summary %+v", s)
	}
	// 40 tokens at 2 tokens/word: 20-word prompts; the second point draws
	// new prompts, so an always-on prefix cache cannot serve it.
	bodies := srv.Bodies()
	p, _ := bodies[0]["prompt"].(string)
	if n := len(strings.Fields(p)); n != 20 {
		t.Errorf("prompt has %d words, want 20", n)
	}
	if len(bodies) != 8 || bodies[0]["prompt"] == bodies[4]["prompt"] { // 2 points × 4 (calibrated by /tokenize)
		t.Errorf("%d requests; point 2 reuses point 1's prompts", len(bodies))
	}
}

func TestBenchCommandTableAndPlot(t *testing.T) {
	srv := fakeoai.New(fakeoai.Options{Tokens: 3})
	defer srv.Close()
	plot := filepath.Join(t.TempDir(), "c.svg")
	out, _, err := bench(t, "--url", srv.URL, "--concurrency", "1,2", "--requests", "2", "--plot", plot, "--tokens-per-word", "1")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Serving Benchmark Result (c=1)", "Output token throughput", "TTFT", "Summary"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if st, err := os.Stat(plot); err != nil || st.Size() == 0 {
		t.Fatalf("plot not written: %v", err)
	}
}

func TestBenchCommandSweepK(t *testing.T) {
	srv := fakeoai.New(fakeoai.Options{Tokens: 8, Usage: fakeoai.UsageOpenAI, Accepted: 4, Rejected: 2})
	defer srv.Close()
	out, _, err := bench(t, "--url", srv.URL, "--sweep-k", "0..2", "--requests", "1", "--json", "--tokens-per-word", "1", "--draft-cost", "0.1", "--dataset", writeDataset(t))
	if err != nil {
		t.Fatal(err)
	}
	var r loadgen.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if r.Sweep == nil || len(r.Sweep.Curve) != 3 || r.Sweep.DraftCost != 0.1 {
		t.Fatalf("sweep %+v", r.Sweep)
	}
	var specs []string
	for _, b := range srv.Bodies() {
		j, _ := json.Marshal(b["speculative"])
		specs = append(specs, string(j))
	}
	if got := strings.Join(specs, " "); got != `{"proposer":"none"} {"k":1} {"k":2}` {
		t.Errorf("speculative objects sent: %s", got)
	}
	if got := srv.Bodies()[0]["max_tokens"]; got != 3.0 {
		t.Errorf("dataset max_tokens not sent: %v", got)
	}
}

func writeDataset(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "d.jsonl")
	if err := os.WriteFile(p, []byte(`{"prompt": "once upon a time", "max_tokens": 3}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBenchCommandFailures(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close()
	bad := fakeoai.New(fakeoai.Options{Status: 404})
	defer bad.Close()

	for _, tc := range []struct {
		name  string
		args  []string
		usage bool
	}{
		{"server down", []string{"--url", dead, "--requests", "2", "--tokens-per-word", "1"}, false},
		{"all 4xx", []string{"--url", bad.URL, "--requests", "2", "--tokens-per-word", "1"}, false},
		{"plot without series", []string{"--url", bad.URL, "--plot", "x.svg"}, true},
		{"bad concurrency", []string{"--concurrency", "x"}, true},
		{"sweep with list", []string{"--sweep-k", "0..2", "--concurrency", "1,2"}, true},
		{"no rounds", []string{"--rounds", "0"}, true},
		{"unknown proposer in sweep", []string{"--sweep-proposer", "none,eagle"}, true},
		{"two sweeps", []string{"--sweep-proposer", "none,ngram", "--sweep-k", "0..2"}, true},
		{"proposer sweep and --proposer", []string{"--sweep-proposer", "none,ngram", "--proposer", "draft"}, true},
		{"proposer sweep with list", []string{"--sweep-proposer", "none,ngram", "--concurrency", "1,2"}, true},
		{"bad temperature sweep", []string{"--sweep-temperature", "0,hot"}, true},
		{"negative temperature in sweep", []string{"--sweep-temperature", "0,-1"}, true},
		{"temperature sweep and --temperature", []string{"--sweep-temperature", "0,1", "--temperature", "0.5"}, true},
		{"temperature and k sweeps", []string{"--sweep-temperature", "0,1", "--sweep-k", "0..2"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := bench(t, tc.args...)
			if err == nil {
				t.Fatalf("no error; output:\n%s", out)
			}
			var ue usageError
			if errors.As(err, &ue) != tc.usage {
				t.Errorf("usage error %v, want %v: %v", errors.As(err, &ue), tc.usage, err)
			}
			if !tc.usage && !strings.Contains(out, "Failed requests:") {
				t.Errorf("failures not reported:\n%s", out)
			}
		})
	}
}

func TestBenchCommandRounds(t *testing.T) {
	srv := fakeoai.New(fakeoai.Options{Tokens: 4, Usage: fakeoai.UsageOpenAI, Accepted: 2, Rejected: 1})
	defer srv.Close()
	out, _, err := bench(t, "--url", srv.URL, "--sweep-k", "0..1", "--rounds", "3", "--requests", "2",
		"--json", "--tokens-per-word", "1", "--input-tokens", "8")
	if err != nil {
		t.Fatal(err)
	}
	var r loadgen.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if r.Rounds != 3 || len(r.Points) != 6 || len(r.RoundStats) != 2 {
		t.Fatalf("rounds %d, %d points, %d stats", r.Rounds, len(r.Points), len(r.RoundStats))
	}
	for i, p := range r.Points { // round by round, each in the sweep's order
		if p.Round != i/2+1 || *p.K != i%2 || p.Summary.Completed != 2 {
			t.Errorf("point %d: round %d k %d completed %d", i, p.Round, *p.K, p.Summary.Completed)
		}
	}
	st := r.RoundStats[1]
	if st.Ratio == nil || st.Runs != 3 || !(st.Ratio.Lo <= st.Ratio.Mean && st.Ratio.Mean <= st.Ratio.Hi) {
		t.Fatalf("k=1 stats %+v", st)
	}
	if c := r.Sweep.Curve[1]; c.SpeedupCI == nil || c.MeasuredSpeedup != st.Ratio.Mean {
		t.Errorf("sweep curve k=1 %+v, want the paired ratio %v", c, st.Ratio.Mean)
	}
	// Odd rounds run backwards: requests go k=0, k=1 | k=1, k=0 | k=0, k=1.
	var specs []string
	for _, b := range srv.Bodies() {
		j, _ := json.Marshal(b["speculative"])
		specs = append(specs, string(j))
	}
	want := `{"proposer":"none"} {"proposer":"none"} {"k":1} {"k":1} {"k":1} {"k":1} {"proposer":"none"} {"proposer":"none"} {"proposer":"none"} {"proposer":"none"} {"k":1} {"k":1}`
	if got := strings.Join(specs, " "); got != want {
		t.Errorf("order of requests:\n got %s\nwant %s", got, want)
	}
	// Every run draws its own prompts.
	seen := map[any]bool{}
	for _, b := range srv.Bodies() {
		if seen[b["prompt"]] {
			t.Fatalf("prompt sent twice: %v", b["prompt"])
		}
		seen[b["prompt"]] = true
	}
	// The table condenses the rounds.
	tab, _, err := bench(t, "--url", srv.URL, "--concurrency", "1,2", "--rounds", "2", "--requests", "2", "--tokens-per-word", "1")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"2 rounds", "c=2 #2", "ref"} {
		if !strings.Contains(tab, w) {
			t.Errorf("table lacks %q:\n%s", w, tab)
		}
	}
	if strings.Contains(tab, "Serving Benchmark Result") {
		t.Errorf("with rounds the table lists runs one line each:\n%s", tab)
	}
}

// sweepReport runs a sweep of two rounds, one request a point, against url
// and returns its JSON report.
func sweepReport(t *testing.T, url string, sweep ...string) loadgen.Report {
	t.Helper()
	args := append([]string{"--url", url, "--rounds", "2", "--requests", "1", "--json", "--tokens-per-word", "1", "--input-tokens", "8"}, sweep...)
	out, _, err := bench(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	var r loadgen.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestBenchCommandSweepProposer(t *testing.T) {
	srv := fakeoai.New(fakeoai.Options{Tokens: 4})
	defer srv.Close()
	r := sweepReport(t, srv.URL, "--sweep-proposer", "none, ngram,draft", "--k", "3")
	if len(r.RoundStats) != 3 || r.RoundStats[1].Proposer != "ngram" || r.RoundStats[0].Ratio != nil || r.RoundStats[2].Ratio == nil {
		t.Fatalf("round stats %+v", r.RoundStats)
	}
	if got := r.RoundStats[2].Label(); got != "c=1 draft" {
		t.Errorf("label %q", got)
	}
	var specs []string
	for _, b := range srv.Bodies() {
		j, _ := json.Marshal(b["speculative"])
		specs = append(specs, string(j))
	}
	want := `{"proposer":"none"} {"k":3,"proposer":"ngram"} {"k":3,"proposer":"draft"} ` +
		`{"k":3,"proposer":"draft"} {"k":3,"proposer":"ngram"} {"proposer":"none"}`
	if got := strings.Join(specs, " "); got != want {
		t.Errorf("speculative objects sent:\n got %s\nwant %s", got, want)
	}
}

func TestBenchCommandSweepTemperature(t *testing.T) {
	srv := fakeoai.New(fakeoai.Options{Tokens: 4})
	defer srv.Close()
	r := sweepReport(t, srv.URL, "--sweep-temperature", "0, 0.5,1")
	if len(r.RoundStats) != 3 || r.RoundStats[0].Ratio != nil || r.RoundStats[2].Ratio == nil {
		t.Fatalf("round stats %+v", r.RoundStats)
	}
	if got := r.RoundStats[1].Label(); got != "c=1 t=0.5" {
		t.Errorf("label %q", got)
	}
	var temps []string
	for _, b := range srv.Bodies() {
		temps = append(temps, fmt.Sprint(b["temperature"]))
	}
	if got := strings.Join(temps, " "); got != "0 0.5 1 1 0.5 0" {
		t.Errorf("temperatures sent: %s", got)
	}
}
