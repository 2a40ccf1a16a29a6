package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"specd/engine"
	"specd/internal/gbnf"
	"specd/scheduler"
	"specd/specdec"
)

func init() {
	register(&command{
		name:    "generate",
		summary: "generate one completion from a prompt (the scheduler and speculation without HTTP)",
		run: func(args []string) error {
			return oneLine(runGenerate(args, os.Stdout, os.Stderr))
		},
	})
}

// genResult is --json's output.
type genResult struct {
	Text            string  `json:"text"`
	Tokens          int     `json:"tokens"`
	PromptTokens    int     `json:"prompt_tokens"`
	TokensPerSecond float64 `json:"tokens_per_second"`
	Proposed        int     `json:"proposed"`
	Accepted        int     `json:"accepted"`
	K               any     `json:"k"` // the fixed k, "adaptive", or 0 without a proposer
	Proposer        string  `json:"proposer"`
	FinishReason    string  `json:"finish_reason"`
	Seed            uint64  `json:"seed"`
}

// runGenerate is `specd generate`: one request through a scheduler with one
// running sequence, the same path a server request takes minus HTTP. Text
// goes to stdout as it arrives (only the continuation, then a newline);
// with --json one object at the end instead. Progress and the summary line
// go to stderr.
func runGenerate(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("generate")
	fs.SetOutput(stderr)
	model := fs.String("model", "", "target model GGUF file (required)")
	draft := fs.String("draft", "", "draft model GGUF file (same vocabulary as the target)")
	prompt := fs.String("prompt", "", "prompt text (BOS added when the model wants it; required)")
	n := fs.Int("n", 64, "tokens to generate (at most; EOS ends earlier unless --ignore-eos)")
	temp := fs.Float64("temperature", 0.8, "sampling temperature; 0 = greedy (llama.cpp's exact greedy output)")
	topK := fs.Int("top-k", 40, "keep the k most likely tokens (0 = off)")
	topP := fs.Float64("top-p", 0.95, "nucleus sampling mass (1 = off)")
	minP := fs.Float64("min-p", 0.05, "drop tokens below min-p × the top probability (0 = off)")
	seed := fs.Int64("seed", -1, "random seed; -1 = from the clock")
	asJSON := fs.Bool("json", false, `print one JSON object {"text","tokens","tokens_per_second","proposed","accepted","k","finish_reason",...} instead of streaming text`)
	proposer := fs.String("proposer", "", "draft, ngram or none (default: draft with --draft, else none)")
	specK := fs.Int("spec-k", 0, "draft length; 0 = adaptive")
	prediction := fs.String("prediction", "", "expected output text, used as the draft (OpenAI Predicted Outputs; overrides --proposer)")
	threads := fs.Int("threads", runtime.NumCPU(), "compute threads")
	libDir := fs.String("lib-dir", "", "folder of the llama.cpp shared libraries (default: $SPECD_LIB_DIR or .cache/backend/...)")
	ignoreEOS := fs.Bool("ignore-eos", false, "keep generating past end-of-sequence tokens")
	ctxSize := fs.Int("ctx-size", 0, "KV cache tokens (0 = the model's training context)")
	flashAttn := fs.String("flash-attn", "off", "flash attention: off, on or auto")
	verbose := fs.Bool("verbose", false, "forward llama.cpp's log to stderr")
	grammarFile := fs.String("grammar", "", "constrain the output to a GBNF grammar (llama.cpp's format, start rule root) read from this file")
	schemaFile := fs.String("json-schema", "", "constrain the output to JSON valid against the JSON Schema in this file (the subset the server's response_format takes)")
	regex := fs.String("regex", "", "constrain the whole output to match this regular expression (as the server's guided_regex)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: specd generate --model M.gguf --prompt TEXT [-n N] [flags]")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return usageError{fmt.Sprintf("unexpected argument %q (give the prompt with --prompt)", fs.Arg(0))}
	case *model == "":
		return usageError{"--model is required"}
	case *prompt == "":
		return usageError{"--prompt is required and must not be empty"}
	case *n < 1:
		return usageError{fmt.Sprintf("-n %d: must be at least 1", *n)}
	case *specK < 0 || *specK > 16:
		return usageError{fmt.Sprintf("--spec-k %d: must be in 0..16", *specK)}
	case *ctxSize < 0:
		return usageError{fmt.Sprintf("--ctx-size %d: must be positive (or 0 for the model's)", *ctxSize)}
	case *threads < 1:
		return usageError{fmt.Sprintf("--threads %d: must be positive", *threads)}
	}
	grammar, err := readGrammar(*grammarFile, *schemaFile, *regex)
	if err != nil {
		return err
	}
	samp := scheduler.Sampling{Temperature: float32(*temp), TopK: *topK, TopP: float32(*topP), MinP: float32(*minP)}
	if err := (specdec.SamplingParams{Temperature: samp.Temperature, TopK: samp.TopK, TopP: samp.TopP, MinP: samp.MinP}).Validate(); err != nil {
		return usageError{err.Error()}
	}
	samp.Seed = uint64(*seed)
	if *seed < 0 {
		samp.Seed = uint64(time.Now().UnixNano())
	}
	if *proposer == "" {
		*proposer = "none"
		if *draft != "" {
			*proposer = "draft"
		}
	}
	switch *proposer {
	case "none", "ngram":
	case "draft":
		if *draft == "" {
			return usageError{"--proposer draft needs --draft"}
		}
	default:
		return usageError{fmt.Sprintf("--proposer %q: must be draft, ngram or none", *proposer)}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// llama.cpp's own log stays quiet unless --verbose: its load warnings
	// would bury the one line of output or error a script reads. Failed
	// native calls still carry llama.cpp's last error line in their error.
	native := slog.LevelError + 4
	if *verbose {
		native = slog.LevelDebug
	}
	lib, err := engine.Open(engine.Options{LibDir: *libDir, Logger: log, LogLevel: native})
	if err != nil {
		return err
	}
	quiet := slog.New(slog.DiscardHandler) // load lines are noise here; errors still return
	target, err := loadModel(ctx, lib, *model, "target", quiet, stderr)
	if err != nil {
		return err
	}
	defer target.Close()
	var dm *engine.Model
	if *draft != "" {
		if dm, err = loadModel(ctx, lib, *draft, "draft", quiet, stderr); err != nil {
			return err
		}
		defer dm.Close()
	}

	cfg := scheduler.Config{
		CtxSize:    *ctxSize,
		MaxRunning: 1,
		Threads:    *threads,
		Proposer:   *proposer,
		SpecK:      *specK,
		KMax:       max(8, *specK),
		FlashAttn:  *flashAttn,
	}
	if cfg.CtxSize == 0 {
		cfg.CtxSize = target.Info().NCtxTrain
	}
	cfg.MaxBatchTokens = max(min(512, cfg.CtxSize), cfg.KMax+1)
	eng, err := scheduler.NewEngine(cfg, lib, target, dm, log)
	if err != nil {
		return err
	}
	defer eng.Close()
	runCtx, stopRun := context.WithCancel(context.Background())
	defer func() {
		eng.Scheduler.Close()
		stopRun()
		<-eng.Done()
	}()
	go eng.Run(runCtx)

	toks, err := target.Vocab().Tokenize(*prompt, true, true)
	if err != nil {
		return fmt.Errorf("tokenize prompt: %w", err)
	}
	req := scheduler.Request{Prompt: toks, MaxTokens: *n, Sampling: samp, IgnoreEOS: *ignoreEOS, Grammar: grammar}
	if *prediction != "" {
		if req.Prediction, err = target.Vocab().Tokenize(*prediction, false, true); err != nil {
			return fmt.Errorf("tokenize prediction: %w", err)
		}
	}
	events, err := eng.Submit(ctx, req)
	if err != nil {
		return err
	}
	var text strings.Builder
	var last scheduler.Event
	for ev := range events {
		if *asJSON {
			text.WriteString(ev.Text)
		} else if ev.Text != "" {
			if _, err := io.WriteString(stdout, ev.Text); err != nil {
				return err
			}
		}
		if ev.Done {
			last = ev
		}
	}
	if last.Err != nil {
		if ctx.Err() != nil {
			return errors.New("interrupted")
		}
		return last.Err
	}
	u := last.Usage
	res := genResult{
		Text: text.String(), Tokens: u.CompletionTokens, PromptTokens: u.PromptTokens,
		Proposed: u.DraftProposed, Accepted: u.DraftAccepted, FinishReason: last.FinishReason,
		Proposer: *proposer, Seed: samp.Seed, K: *specK,
	}
	if *prediction != "" {
		res.Proposer = "prediction"
	}
	if *specK == 0 && res.Proposer != "none" {
		res.K = "adaptive"
	}
	// Generation speed: tokens after the first over the time from the first
	// token to the last (prompt processing excluded).
	if u.CompletionTokens > 1 && u.GenTime > 0 {
		res.TokensPerSecond = float64(u.CompletionTokens-1) / u.GenTime.Seconds()
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetEscapeHTML(false)
		return enc.Encode(res)
	}
	fmt.Fprintln(stdout)
	accept := ""
	if res.Proposed > 0 {
		accept = fmt.Sprintf(", %s accepted %d/%d (%.0f%%)", res.Proposer, res.Accepted, res.Proposed, 100*float64(res.Accepted)/float64(res.Proposed))
	}
	fmt.Fprintf(stderr, "[%d prompt + %d tokens, %.1f tokens/s%s, finish %s]\n",
		res.PromptTokens, res.Tokens, res.TokensPerSecond, accept, res.FinishReason)
	return nil
}

// oneLine keeps main's error message on one line, whatever a wrapped native
// error carried.
func oneLine(err error) error {
	if err == nil || !strings.ContainsAny(err.Error(), "\r\n") {
		return err
	}
	msg := strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", " ")), " ")
	var ue usageError
	if errors.As(err, &ue) {
		return usageError{msg}
	}
	return errors.New(msg)
}

// readGrammar is --grammar's file, or the grammar of --json-schema's file
// or of --regex.
func readGrammar(grammarFile, schemaFile, regex string) (string, error) {
	switch n := btoi(grammarFile != "") + btoi(schemaFile != "") + btoi(regex != ""); {
	case n > 1:
		return "", usageError{"give one of --grammar, --json-schema and --regex"}
	case regex != "":
		g, err := gbnf.Regex(regex)
		if err != nil {
			return "", usageError{fmt.Sprintf("--regex: %v", err)}
		}
		return g, nil
	case grammarFile != "":
		b, err := os.ReadFile(grammarFile)
		if err != nil {
			return "", fmt.Errorf("--grammar: %w", err)
		}
		if len(bytes.TrimSpace(b)) == 0 {
			return "", usageError{fmt.Sprintf("--grammar %s: the file is empty", grammarFile)}
		}
		return string(b), nil
	case schemaFile != "":
		b, err := os.ReadFile(schemaFile)
		if err != nil {
			return "", fmt.Errorf("--json-schema: %w", err)
		}
		g, err := gbnf.FromSchema(b)
		if err != nil {
			return "", usageError{fmt.Sprintf("--json-schema %s: %v", schemaFile, err)}
		}
		return g, nil
	}
	return "", nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
