package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"

	"specd/internal/loadgen"
)

func init() {
	register(&command{
		name:    "bench",
		summary: "load-test an OpenAI-compatible server (specd, llama-server, vLLM)",
		run: func(args []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runBench(ctx, args, os.Stdout, os.Stderr)
		},
	})
}

// benchFlags are the command line of `specd bench`.
type benchFlags struct {
	url, endpoint, model     string
	concurrency              string
	rate                     float64
	requests                 int
	duration, timeout        time.Duration
	inputTokens, outputToks  int
	dataset                  string
	sharedPrefix             int
	prefixCache              bool
	temperature              float64
	sweepK, sweepProposer    string
	sweepTemp                string
	k                        int
	proposer                 string
	draftCost, tokensPerWord float64
	seed                     int64
	warmup, salt, rounds     int
	jsonOut, noProgress      bool
	ignoreEOS                bool
	body                     string
	plot, title              string
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f benchFlags
	fs := newFlagSet("bench")
	fs.SetOutput(stderr)
	fs.StringVar(&f.body, "body", "", `JSON object (or @FILE holding one) whose fields every request also sends, e.g. '{"response_format": {"type": "json_object"}}'`)
	fs.StringVar(&f.url, "url", "http://127.0.0.1:8080", "server base URL (the only host contacted)")
	fs.StringVar(&f.endpoint, "endpoint", "/v1/completions", "path of the streaming endpoint (/v1/completions, /v1/chat/completions or /v1/responses)")
	fs.StringVar(&f.model, "model", "", "model name sent in requests (default: first id of GET /v1/models)")
	fs.StringVar(&f.concurrency, "concurrency", "1", "requests in flight: N, or a list 1,4,16 to measure each (with --rate: in-flight cap, default none)")
	fs.Float64Var(&f.rate, "rate", 0, "Poisson arrival rate in requests/s (0: closed loop at --concurrency)")
	fs.IntVar(&f.requests, "requests", 0, "requests per point (default 4×concurrency, at least 16, unless --duration)")
	fs.DurationVar(&f.duration, "duration", 0, "stop issuing after this long per point (with --requests: whichever first)")
	fs.IntVar(&f.inputTokens, "input-tokens", 128, "synthetic prompt length in tokens (approximate; calibrated by the server's /tokenize)")
	fs.IntVar(&f.outputToks, "output-tokens", 128, "max_tokens per request (dataset lines may override)")
	fs.StringVar(&f.dataset, "dataset", "", `JSONL prompts, one {"prompt": "...", "max_tokens": N} per line, instead of synthetic ones`)
	fs.IntVar(&f.sharedPrefix, "shared-prefix", 0, "tokens of every synthetic prompt that are the same in all prompts")
	fs.BoolVar(&f.prefixCache, "prefix-cache", false, "send cache_prompt: true (default sends false, so no prompt cache helps)")
	fs.Float64Var(&f.temperature, "temperature", 0, "sampling temperature (0 = greedy)")
	fs.StringVar(&f.sweepK, "sweep-k", "", `measure each fixed k, e.g. 0..8 or 0,2,4 (specd extension "speculative": {"k": K}; k=0 sends {"proposer":"none"})`)
	fs.StringVar(&f.sweepTemp, "sweep-temperature", "", "measure each sampling temperature, e.g. 0,0.5,1 (acceptance falls as it rises)")
	fs.StringVar(&f.sweepProposer, "sweep-proposer", "", `measure each proposer, e.g. none,ngram,draft (specd extension "speculative": {"proposer": P}, with --k's k if given)`)
	fs.IntVar(&f.k, "k", -1, `send "speculative": {"k": K} with every request (-1: send nothing; 0: proposer none)`)
	fs.StringVar(&f.proposer, "proposer", "", `send "speculative": {"proposer": P} (none, draft, ngram)`)
	fs.Float64Var(&f.draftCost, "draft-cost", 0, "c in the Leviathan curve E/(k·c+1): time of one draft pass over one target pass")
	fs.Float64Var(&f.tokensPerWord, "tokens-per-word", 0, "skip calibration and assume this many tokens per word")
	fs.Int64Var(&f.seed, "seed", 1, "seed for prompts and Poisson arrivals")
	fs.IntVar(&f.rounds, "rounds", 1, "measure every point this many times, one round after another (odd rounds in reverse order), and report each point's ratio to the first (k sweep: to k=0) paired per round, with a 90% interval")
	fs.IntVar(&f.warmup, "warmup", 0, "requests sent one by one before each point, not measured")
	fs.IntVar(&f.salt, "salt", 0, "put N random words before every prompt (a new draw per point), so repeated prompts share no cacheable prefix")
	fs.DurationVar(&f.timeout, "timeout", 10*time.Minute, "per-request timeout")
	fs.BoolVar(&f.jsonOut, "json", false, "write the report as JSON on stdout instead of tables")
	fs.StringVar(&f.plot, "plot", "", "draw FILE (.svg, .png, .pdf): throughput and latency vs concurrency, or a k sweep vs Leviathan")
	fs.StringVar(&f.title, "title", "", "plot title (default: the URL and model)")
	fs.BoolVar(&f.noProgress, "no-progress", false, "no progress bar even on a terminal")
	fs.BoolVar(&f.ignoreEOS, "ignore-eos", true, "send ignore_eos: true so every request generates max_tokens")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })

	concs, err := loadgen.ParseInts(f.concurrency)
	if err != nil {
		return usageError{"--concurrency: " + err.Error()}
	}
	if f.rate > 0 && !set["concurrency"] {
		concs = []int{0}
	}
	for _, c := range concs {
		if c == 0 && f.rate <= 0 {
			return usageError{"--concurrency 0 needs --rate"}
		}
	}
	var ks []int
	if f.sweepK != "" {
		if ks, err = loadgen.ParseInts(f.sweepK); err != nil {
			return usageError{"--sweep-k: " + err.Error()}
		}
		if len(concs) > 1 {
			return usageError{"--sweep-k takes a single --concurrency"}
		}
		if set["k"] || set["proposer"] {
			return usageError{"--sweep-k sets k itself; drop --k/--proposer"}
		}
	}
	var props []string
	if f.sweepProposer != "" {
		for _, p := range strings.Split(f.sweepProposer, ",") {
			p = strings.TrimSpace(p)
			if p != "none" && p != "draft" && p != "ngram" {
				return usageError{fmt.Sprintf("--sweep-proposer: unknown proposer %q (want none, draft, ngram)", p)}
			}
			props = append(props, p)
		}
		switch {
		case len(ks) > 0:
			return usageError{"--sweep-proposer and --sweep-k: one sweep at a time"}
		case len(concs) > 1:
			return usageError{"--sweep-proposer takes a single --concurrency"}
		case set["proposer"]:
			return usageError{"--sweep-proposer sets the proposer itself; drop --proposer"}
		}
	}
	var temps []float64
	if f.sweepTemp != "" {
		if temps, err = loadgen.ParseFloats(f.sweepTemp); err != nil {
			return usageError{"--sweep-temperature: " + err.Error()}
		}
		switch {
		case len(ks) > 0 || len(props) > 0:
			return usageError{"--sweep-temperature with --sweep-k or --sweep-proposer: one sweep at a time"}
		case len(concs) > 1:
			return usageError{"--sweep-temperature takes a single --concurrency"}
		case set["temperature"]:
			return usageError{"--sweep-temperature sets the temperature itself; drop --temperature"}
		}
	}
	if f.plot != "" && len(ks) < 2 && len(concs) < 2 {
		return usageError{"--plot needs several --concurrency values or a --sweep-k range"}
	}
	if f.rounds < 1 {
		return usageError{"--rounds must be >= 1"}
	}
	if f.sharedPrefix > 0 && f.dataset != "" {
		return usageError{"--shared-prefix applies to synthetic prompts, not --dataset"}
	}
	if f.inputTokens < 1 || f.outputToks < 1 || f.sharedPrefix < 0 || f.draftCost < 0 {
		return usageError{"--input-tokens and --output-tokens must be >= 1, --shared-prefix and --draft-cost >= 0"}
	}

	maxConc := 1
	for _, c := range concs {
		maxConc = max(maxConc, c)
	}
	if f.rate > 0 && concs[0] == 0 {
		maxConc = 64
	}
	base := loadgen.Config{
		URL: f.url, Endpoint: f.endpoint, Model: f.model,
		Rate: f.rate, Requests: f.requests, Duration: f.duration,
		OutputTokens: f.outputToks, Temperature: f.temperature, IgnoreEOS: f.ignoreEOS,
		PrefixCache: f.prefixCache, Seed: f.seed, Warmup: f.warmup, Timeout: f.timeout,
		Client: loadgen.NewClient(maxConc),
	}
	if f.body != "" {
		base.Extra = json.RawMessage(f.body)
		if name, ok := strings.CutPrefix(f.body, "@"); ok {
			b, err := os.ReadFile(name)
			if err != nil {
				return fmt.Errorf("--body: %w", err)
			}
			base.Extra = b
		}
	}
	if f.k >= 0 || f.proposer != "" {
		base.Speculative = &loadgen.Speculative{Proposer: f.proposer}
		if f.k == 0 && f.proposer == "" {
			base.Speculative = loadgen.SpecForK(0)
		} else if f.k > 0 {
			base.Speculative.K = f.k
		}
	}
	if base.Requests == 0 && base.Duration == 0 {
		base.Requests = max(16, 4*maxConc)
	}
	base.Concurrency = concs[0]
	if err := base.Validate(); err != nil {
		return usageError{err.Error()}
	}
	if base.Model == "" {
		base.Model = loadgen.ModelID(ctx, base.Client, base.URL)
		if base.Model == "" {
			base.Model = "default"
		}
	}

	report := loadgen.Report{
		Date: time.Now().UTC().Format(time.RFC3339), URL: f.url, Model: base.Model, Endpoint: f.endpoint,
		Workload: loadgen.WorkInfo{
			OutputTokens: f.outputToks, PrefixCache: f.prefixCache, Temperature: f.temperature,
			Requests: base.Requests, DurationS: base.Duration.Seconds(), Rate: f.rate,
			Speculative: base.Speculative, Warmup: f.warmup,
		},
	}
	// makePrompts gives point i its prompts: synthetic ones are drawn anew
	// per point (seed + i) and --salt draws new salt per point, so a server
	// with an always-on prefix cache never sees a prompt twice across points.
	var makePrompts func(i int) []loadgen.Prompt
	if f.dataset != "" {
		fh, err := os.Open(f.dataset)
		if err != nil {
			return err
		}
		ds, err := loadgen.LoadDataset(fh)
		fh.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", f.dataset, err)
		}
		report.Workload.Dataset = f.dataset
		makePrompts = func(int) []loadgen.Prompt { return ds }
	} else {
		tpw, how := f.tokensPerWord, "flag"
		if tpw <= 0 {
			var cerr error
			tpw, how, cerr = loadgen.Calibrate(ctx, base)
			if cerr != nil {
				fmt.Fprintf(stderr, "specd bench: calibration: %v; assuming %.2f tokens/word\n", cerr, tpw)
			}
		}
		n := base.Requests + base.Warmup
		if base.Requests == 0 || base.Duration > 0 {
			n = max(n, 1024)
		}
		report.Workload.InputTokens, report.Workload.SharedPrefix = f.inputTokens, f.sharedPrefix
		report.Workload.TokensPerWord, report.Workload.Calibration = tpw, how
		makePrompts = func(i int) []loadgen.Prompt {
			return loadgen.Synthetic(loadgen.Workload{
				Count: n, InputTokens: f.inputTokens, OutputTokens: f.outputToks,
				SharedPrefix: f.sharedPrefix, TokensPerWord: tpw, Seed: f.seed + int64(i),
			})
		}
	}
	prompts0 := makePrompts(0)
	report.Workload.Prompts, report.Workload.Salt = len(prompts0), f.salt

	type job struct {
		conc     int
		k        *int
		proposer string   // of a proposer sweep
		temp     *float64 // of a temperature sweep
	}
	var jobs []job
	switch {
	case len(ks) > 0:
		for _, k := range ks {
			jobs = append(jobs, job{conc: concs[0], k: &k})
		}
	case len(props) > 0:
		for _, p := range props {
			jobs = append(jobs, job{conc: concs[0], proposer: p})
		}
	case len(temps) > 0:
		for _, t := range temps {
			jobs = append(jobs, job{conc: concs[0], temp: &t})
		}
	default:
		for _, c := range concs {
			jobs = append(jobs, job{conc: c})
		}
	}
	ref := 0 // the point the others are compared with in each round
	if i := slices.Index(ks, 0); i >= 0 {
		ref = i
	}
	tty := !f.noProgress && isTerminal(stderr)
	var runErr error
	// Round r measures every job once; odd rounds go backwards, so no job
	// always follows the same one. Every run draws its own prompts.
	all := make([]loadgen.Point, f.rounds*len(jobs))
run:
	for r := range f.rounds {
		for n := range jobs {
			i := n
			if r%2 == 1 {
				i = len(jobs) - 1 - n
			}
			j, run := jobs[i], r*len(jobs)+i
			prompts := prompts0
			if run > 0 {
				prompts = makePrompts(run)
			}
			prompts = loadgen.Salt(prompts, f.salt, f.seed+int64(run))
			cfg := base
			cfg.Concurrency = j.conc
			if j.k != nil {
				cfg.Speculative = loadgen.SpecForK(*j.k)
			}
			if j.proposer != "" {
				cfg.Speculative = &loadgen.Speculative{Proposer: j.proposer}
				if j.proposer != "none" {
					cfg.Speculative.K = max(f.k, 0)
				}
			}
			if j.temp != nil {
				cfg.Temperature = *j.temp
			}
			pt := loadgen.Point{Concurrency: j.conc, Rate: f.rate, K: j.k, Proposer: j.proposer, Temperature: j.temp}
			if f.rounds > 1 {
				pt.Round = r + 1
			}
			var bar *progressbar.ProgressBar
			if tty {
				bar = newBar(cfg, pt.Label(), stderr)
				cfg.OnDone = func(loadgen.Sample) { bar.Add(1) }
			}
			res, err := loadgen.Run(ctx, cfg, prompts)
			if bar != nil {
				bar.Finish()
				fmt.Fprintln(stderr)
			}
			pt.Summary = res.Summary
			all[run] = pt
			report.Points = append(report.Points, pt) // in the order run
			if err != nil {
				runErr = err
				break run
			}
		}
	}
	points := report.Points // for the fit and the plot: one run per point
	if f.rounds > 1 && runErr == nil {
		report.Points, report.Rounds = all, f.rounds
		report.RoundStats, points = loadgen.SummariseRounds(all, len(jobs), ref)
	}
	if len(ks) > 0 {
		fit := loadgen.FitSweep(points, f.draftCost)
		if report.RoundStats != nil && ks[ref] == 0 {
			for i := range fit.Curve {
				if iv := report.RoundStats[i].Ratio; iv != nil {
					fit.Curve[i].MeasuredSpeedup, fit.Curve[i].SpeedupCI = iv.Mean, iv
				}
			}
		}
		report.Sweep = &fit
	}

	if f.jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(report); err != nil {
			return err
		}
	} else if err := loadgen.WriteTable(stdout, report); err != nil {
		return err
	}
	if f.plot != "" && runErr == nil {
		title := f.title
		if title == "" {
			title = fmt.Sprintf("%s  %s", filepath.Base(base.Model), f.url)
		}
		var perr error
		if report.Sweep != nil {
			perr = loadgen.PlotSweep(f.plot, title, *report.Sweep)
		} else {
			perr = loadgen.PlotConcurrency(f.plot, title, points)
		}
		if perr != nil {
			return perr
		}
	}
	if runErr != nil {
		if errors.Is(runErr, context.Canceled) {
			return errors.New("interrupted; partial results above")
		}
		return runErr
	}
	var dead []string
	for _, p := range report.Points {
		if p.Summary.Completed == 0 {
			dead = append(dead, fmt.Sprintf("%s: all %d failed (%s)", p.Label(), p.Summary.Failed, p.Summary.FirstErr))
		}
	}
	if len(dead) > 0 {
		return errors.New(strings.Join(dead, "; "))
	}
	return nil
}

// isTerminal reports whether w is a character device (a terminal), without
// a terminal library: the progress bar is for people, never for pipes.
func isTerminal(w io.Writer) bool {
	fh, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := fh.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func newBar(cfg loadgen.Config, label string, w io.Writer) *progressbar.ProgressBar {
	total := cfg.Requests
	if total == 0 {
		total = -1 // duration only: a spinner with a count
	}
	return progressbar.NewOptions(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(label),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("req"),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetWidth(30),
	)
}
