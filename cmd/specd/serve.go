package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"

	"specd/engine"
	"specd/scheduler"
	"specd/server"
)

func init() {
	register(&command{
		name:    "serve",
		summary: "run the OpenAI-compatible HTTP daemon",
		run:     func(args []string) error { return oneLine(runServe(args, os.LookupEnv, os.Stdout, os.Stderr)) },
	})
}

// runServe is `specd serve`. Order: read the configuration; listen (a busy
// port fails before any loading, and /health answers 503 while the models
// load); load target and draft; build the scheduler; serve ready. On
// SIGINT/SIGTERM: server.Shutdown (in-flight requests get shutdown_grace),
// scheduler Close, wait for Run, free contexts and models; return nil.
func runServe(args []string, lookup func(string) (string, bool), stdout, stderr io.Writer) error {
	fs := newFlagSet("serve")
	fs.SetOutput(stderr)
	configPath, applyFlags := configFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: specd serve [--config FILE] [--model M.gguf] [flags]\n\nPrecedence: config file < flags < SPECD_* environment variables.")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q (flags only; see specd serve -h)", fs.Arg(0))}
	}
	cfg, err := loadConfig(*configPath, applyFlags, lookup)
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.LogFormat, cfg.LogLevel)
	if n := goProcs(lookup, cfg.Threads, runtime.GOMAXPROCS(0)); n > 0 {
		runtime.GOMAXPROCS(n)
	}

	b := &daemonBackend{id: cfg.ModelAlias, props: server.Props{Slots: cfg.Parallel, ModelPath: cfg.Model, DraftPath: cfg.Draft}}
	srv, err := server.New(cfg.ServerConfig(), b, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	sigCtx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()

	// shutdown ends the HTTP side; it is safe before the models are loaded.
	shutdown := func() {
		ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace+10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			log.Warn("shutdown did not finish cleanly", "err", err)
		}
	}

	m, err := loadServeModels(sigCtx, cfg, log, stderr)
	if err != nil {
		shutdown()
		if sigCtx.Err() != nil {
			log.Info("stopped while loading")
			return nil
		}
		return err
	}
	defer m.close()

	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	go m.eng.Run(runCtx)
	b.loaded.Store(m)
	addr := ln.Addr().String()
	log.Info("ready", "addr", addr, "model", cfg.ModelAlias, "draft", cfg.Draft != "",
		"proposer", cfg.Speculative.Proposer, "ctx_size", cfg.CtxSize, "parallel", cfg.Parallel,
		"max_seq_len", m.ctxSize, "threads", cfg.Threads, "go_procs", runtime.GOMAXPROCS(0), "chat_template", m.templateName,
		"kv_type", m.eng.TargetContext().KVType(), "draft_kv_type", draftKVType(m.eng))
	// The line goes out before /health turns 200, so a script that saw
	// ready has the line too (up to its own pipe's copying).
	fmt.Fprintf(stdout, "specd listening on http://%s\n", addr)
	srv.SetReady(true)

	var runErr error
	select {
	case <-sigCtx.Done():
		log.Info("shutting down", "grace", cfg.ShutdownGrace)
	case err := <-serveErr:
		runErr = fmt.Errorf("http server: %w", err)
	case <-m.eng.Done():
		runErr = errors.New("scheduler stopped unexpectedly")
	}
	stopSignals() // a second SIGINT now kills the process the default way
	shutdown()
	m.eng.Scheduler.Close()
	select {
	case <-m.eng.Done():
	case <-time.After(5 * time.Second):
		// Shutdown already ended every request; anything left is abandoned.
		stopRun()
		<-m.eng.Done()
	}
	b.loaded.Store(nil)
	log.Info("stopped")
	return runErr
}

// servedModels is what exists once loading is done, freed in reverse.
type servedModels struct {
	lib           *engine.Library
	target, draft *engine.Model
	eng           *scheduler.Engine
	template      string // the chat template in use
	templateName  string // for the log: "model", "chatml (fallback)", or the configured one
	ctxSize       int    // max tokens of one sequence
	nVocab        int
}

func (m *servedModels) close() {
	if m.eng != nil {
		m.eng.Close()
	}
	if m.draft != nil {
		m.draft.Close()
	}
	if m.target != nil {
		m.target.Close()
	}
}

// draftKVType is the draft context's KV type for the log ("" without one).
func draftKVType(e *scheduler.Engine) engine.KVType {
	if d := e.DraftContext(); d != nil {
		return d.KVType()
	}
	return ""
}

// fallbackChatTemplate is used when neither the configuration nor the model
// gives a template: llama.cpp's built-in chatml, the fallback llama-server
// uses too, so both render a chat to the same prompt.
const fallbackChatTemplate = "chatml"

func loadServeModels(ctx context.Context, cfg Config, log *slog.Logger, stderr io.Writer) (*servedModels, error) {
	lib, err := openLibrary(cfg.LibDir, cfg.LogLevel, log)
	if err != nil {
		return nil, err
	}
	m := &servedModels{lib: lib}
	ok := false
	defer func() {
		if !ok {
			m.close()
		}
	}()
	if m.target, err = loadModel(ctx, lib, cfg.Model, "target", log, stderr); err != nil {
		return nil, err
	}
	if cfg.Draft != "" {
		if m.draft, err = loadModel(ctx, lib, cfg.Draft, "draft", log, stderr); err != nil {
			return nil, err
		}
	}
	m.template, m.templateName = cfg.ChatTemplate, cfg.ChatTemplate
	if m.template == "" {
		m.template, m.templateName = m.target.Info().ChatTemplate, "model"
		if m.template == "" {
			m.template, m.templateName = fallbackChatTemplate, fallbackChatTemplate+" (fallback: the model has none)"
		}
	}
	// A template llama.cpp cannot apply is a startup error, not a 400 on
	// every chat request.
	if _, err := m.target.ApplyChatTemplate(m.template, []engine.ChatMessage{{Role: "user", Content: "hi"}}, true); err != nil {
		return nil, fmt.Errorf("chat_template: %w", err)
	}
	if m.eng, err = scheduler.NewEngine(cfg.SchedulerConfig(), lib, m.target, m.draft, log); err != nil {
		return nil, err
	}
	m.ctxSize = m.eng.Config().MaxSeqLen
	m.nVocab = m.target.Vocab().NTokens()
	ok = true
	return m, nil
}

// openLibrary opens llama.cpp with its log forwarded to log: warnings and
// errors, everything at log_level debug.
func openLibrary(dir, level string, log *slog.Logger) (*engine.Library, error) {
	lv := slog.LevelWarn
	if strings.EqualFold(level, "debug") {
		lv = slog.LevelDebug
	}
	return engine.Open(engine.Options{LibDir: dir, Logger: log, LogLevel: lv})
}

// loadModel loads one model, with a progress bar when stderr is a terminal
// and log lines otherwise.
func loadModel(ctx context.Context, lib *engine.Library, path, role string, log *slog.Logger, stderr io.Writer) (*engine.Model, error) {
	start := time.Now()
	// All layers go to a GPU when the loaded backend has one (a CUDA, Vulkan
	// or Metal build in --lib-dir); the CPU build ignores it.
	p := engine.ModelParams{Path: path, GPULayers: -1}
	var bar *progressbar.ProgressBar
	if isTerminal(stderr) {
		bar = progressbar.NewOptions(100,
			progressbar.OptionSetWriter(stderr),
			progressbar.OptionSetDescription("loading "+role),
			progressbar.OptionSetWidth(30),
			progressbar.OptionClearOnFinish(),
			progressbar.OptionThrottle(50*time.Millisecond),
		)
		p.Progress = func(f float32) { _ = bar.Set(int(f * 100)) }
	} else {
		log.Info("loading model", "role", role, "path", path)
	}
	m, err := lib.LoadModel(ctx, p)
	if bar != nil {
		_ = bar.Finish()
	}
	if err != nil {
		return nil, fmt.Errorf("%s model: %w", role, err)
	}
	info := m.Info()
	log.Info("model loaded", "role", role, "path", path, "desc", info.Desc, "type", info.FileType,
		"params", info.NParams, "vocab", info.NVocab, "ctx_train", info.NCtxTrain, "took", time.Since(start).Round(time.Millisecond))
	return m, nil
}

// daemonBackend is server.Backend over the loaded models and scheduler.
// Before loading finishes (and after shutdown) it has no models: the
// server answers 503 then, and Submit says ErrClosed to be sure.
type daemonBackend struct {
	id     string
	props  server.Props // without the chat template, known once loaded
	loaded atomic.Pointer[servedModels]
}

// Props: server.Propser, for /props.
func (b *daemonBackend) Props() server.Props {
	p := b.props
	if m := b.loaded.Load(); m != nil {
		p.ChatTemplate = m.template
	}
	return p
}

func (b *daemonBackend) Submit(ctx context.Context, r scheduler.Request) (<-chan scheduler.Event, error) {
	m := b.loaded.Load()
	if m == nil {
		return nil, scheduler.ErrClosed
	}
	return m.eng.Submit(ctx, r)
}

// Tokenize parses special-token text, as llama-server does for prompts:
// rendered chat templates depend on it.
func (b *daemonBackend) Tokenize(text string, addSpecial bool) ([]int32, error) {
	m := b.loaded.Load()
	if m == nil {
		return nil, scheduler.ErrClosed
	}
	return m.target.Vocab().Tokenize(text, addSpecial, true)
}

func (b *daemonBackend) ApplyChatTemplate(msgs []scheduler.ChatMessage) (string, error) {
	m := b.loaded.Load()
	if m == nil {
		return "", scheduler.ErrClosed
	}
	em := make([]engine.ChatMessage, len(msgs))
	for i, msg := range msgs {
		em[i] = engine.ChatMessage{Role: msg.Role, Content: msg.Content}
	}
	return m.target.ApplyChatTemplate(m.template, em, true)
}

func (b *daemonBackend) TokenPiece(t int32) string {
	m := b.loaded.Load()
	if m == nil {
		return ""
	}
	return string(m.target.Vocab().AppendPiece(nil, t, false))
}

func (b *daemonBackend) ModelID() string { return b.id }

func (b *daemonBackend) ContextSize() int {
	if m := b.loaded.Load(); m != nil {
		return m.ctxSize
	}
	return 0
}

func (b *daemonBackend) VocabSize() int {
	if m := b.loaded.Load(); m != nil {
		return m.nVocab
	}
	return 0
}

func (b *daemonBackend) Stats() scheduler.Stats {
	if m := b.loaded.Load(); m != nil {
		return m.eng.Stats()
	}
	return scheduler.Stats{}
}

// goProcs is the GOMAXPROCS that serve sets: the cores the compute threads
// leave to Go (the HTTP server, the scheduler's bookkeeping), at least 1
// (decision 0002). 0 when GOMAXPROCS is in the environment: Go's reading
// of it stands. cpus is Go's own default, which follows CPU affinity and
// cgroup limits.
func goProcs(lookup func(string) (string, bool), threads, cpus int) int {
	if _, ok := lookup("GOMAXPROCS"); ok {
		return 0
	}
	return max(1, cpus-threads)
}
