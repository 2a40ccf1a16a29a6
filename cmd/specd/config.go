package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"specd/engine"
	"specd/scheduler"
	"specd/server"
)

// Config is the daemon's whole configuration, read once by `specd serve`
// from three layers, each overriding the one before:
//
//  1. the YAML file given by --config (or SPECD_CONFIG); unknown keys are an
//     error; relative paths (model, draft, lib_dir) are relative to the
//     file's folder;
//  2. command-line flags (relative paths: the working folder);
//  3. environment variables: every key has one, SPECD_ followed by the key
//     upper-cased with dots as underscores (model → SPECD_MODEL,
//     speculative.k → SPECD_SPECULATIVE_K). Lists are comma-separated
//     (SPECD_API_KEYS=a,b; SPECD_API_KEY is accepted too). An empty variable
//     counts as unset.
//
// Zero values that mean "derive it" are filled by finish: threads (the
// CPUs), batch_size (512, or parallel × (k_max+1) if larger), model_alias
// (the model file's base name without .gguf) and speculative.proposer
// ("draft" when a draft is given, else "none"). configs/specd.yaml
// documents every key.
type Config struct {
	Model             string        `yaml:"model"`
	Draft             string        `yaml:"draft"`
	ModelAlias        string        `yaml:"model_alias"`
	LibDir            string        `yaml:"lib_dir"`
	ChatTemplate      string        `yaml:"chat_template"`
	Threads           int           `yaml:"threads"`
	DecodeThreads     string        `yaml:"decode_threads"`
	CtxSize           int           `yaml:"ctx_size"`
	Parallel          int           `yaml:"parallel"`
	BatchSize         int           `yaml:"batch_size"`
	BlockSize         int           `yaml:"block_size"`
	KVLayout          string        `yaml:"kv_layout"`
	PrefixCache       bool          `yaml:"prefix_cache"`
	PrefixCacheBlocks int           `yaml:"prefix_cache_blocks"`
	Preemption        string        `yaml:"preemption"`
	MaxWaiting        int           `yaml:"max_waiting"`
	Speculative       SpecConfig    `yaml:"speculative"`
	FlashAttn         string        `yaml:"flash_attn"`
	KVType            string        `yaml:"kv_type"`
	Host              string        `yaml:"host"`
	Port              int           `yaml:"port"`
	APIKeys           []string      `yaml:"api_keys"`
	MaxBodyBytes      int           `yaml:"max_body_bytes"`
	RequestTimeout    time.Duration `yaml:"request_timeout"`
	ShutdownGrace     time.Duration `yaml:"shutdown_grace"`
	DefaultMaxTokens  int           `yaml:"default_max_tokens"`
	StreamInterval    int           `yaml:"stream_interval"`
	LogFormat         string        `yaml:"log_format"`
	LogLevel          string        `yaml:"log_level"`
	file              string        // the config file read, for messages
}

// SpecConfig is the `speculative` section: the default proposer and k of
// requests that do not choose their own.
type SpecConfig struct {
	Proposer string  `yaml:"proposer"` // draft | ngram | none
	K        int     `yaml:"k"`        // 0 = adaptive in [k_min, k_max]
	KMin     int     `yaml:"k_min"`
	KMax     int     `yaml:"k_max"`
	PMin     float64 `yaml:"p_min"`    // stop drafting below this draft probability
	MinGain  float64 `yaml:"min_gain"` // adaptive k: least expected gain to speculate
}

// defaultConfig is every key's default; configs/specd.yaml repeats them in
// its comments (a test keeps the two in step).
func defaultConfig() Config {
	return Config{
		CtxSize:          4096,
		Parallel:         8,
		BlockSize:        16,
		KVLayout:         "streams",
		PrefixCache:      true,
		Preemption:       "recompute",
		MaxWaiting:       256,
		Speculative:      SpecConfig{KMin: 1, KMax: 8, MinGain: scheduler.DefaultSpecMinGain},
		DecodeThreads:    "auto",
		FlashAttn:        "off",
		KVType:           string(engine.KVAuto),
		Host:             server.DefaultHost,
		Port:             server.DefaultPort,
		MaxBodyBytes:     server.DefaultMaxBodyBytes,
		RequestTimeout:   server.DefaultRequestTimeout,
		ShutdownGrace:    server.DefaultShutdownGrace,
		DefaultMaxTokens: server.DefaultDefaultMaxTokens,
		StreamInterval:   server.DefaultStreamInterval,
		LogFormat:        "text",
		LogLevel:         "info",
	}
}

// configKeys lists every key with its flag (none for rarely changed ones,
// which the file and the environment still set) and its help text.
var configKeys = []struct{ key, flag, help string }{
	{"model", "model", "target model GGUF file (required)"},
	{"draft", "draft", "draft model GGUF file for speculative decoding (same vocabulary)"},
	{"model_alias", "model-alias", "model id reported by /v1/models (default: the model file's base name)"},
	{"lib_dir", "lib-dir", "folder of the llama.cpp shared libraries (default: $SPECD_LIB_DIR or .cache/backend/...)"},
	{"chat_template", "chat-template", "chat template: a llama.cpp built-in name (chatml, llama3, ...) or template text (default: the model's, else chatml)"},
	{"threads", "threads", "compute threads shared by target and draft (0 = the number of CPUs)"},
	{"decode_threads", "decode-threads", "how many of those threads each decode uses: auto (one or all, whichever measures faster for the model and batch size) or all"},
	{"ctx_size", "ctx-size", "total KV cache tokens shared by all sequences"},
	{"parallel", "parallel", "most sequences decoded together"},
	{"batch_size", "batch-size", "token budget of one step (0 = 512, or parallel × (k_max+1) if larger)"},
	{"block_size", "block-size", "KV paging block in tokens"},
	{"kv_layout", "kv-layout", "KV cache layout: streams (one per sequence, fastest) or unified (one pool shared by all sequences)"},
	{"prefix_cache", "prefix-cache", "reuse the KV of shared prompt prefixes (streams: a finished request's stream is reused by the prompt that shares its longest prefix; unified: shared blocks)"},
	{"prefix_cache_blocks", "prefix-cache-blocks", "most KV blocks the prefix cache keeps after their requests end (0 = streams: the whole pool, unified: 512 tokens' worth; at most ctx_size / block_size)"},
	{"preemption", "preemption", "when KV blocks run out: recompute or swap"},
	{"max_waiting", "max-waiting", "waiting queue bound; beyond it requests get 429"},
	{"speculative.proposer", "proposer", "default proposer: draft, ngram or none (default: draft with --draft, else none)"},
	{"speculative.k", "spec-k", "draft length; 0 = adaptive in [k-min, k-max]"},
	{"speculative.k_min", "k-min", "smallest adaptive draft length"},
	{"speculative.k_max", "k-max", "largest draft length (raised to spec-k if smaller)"},
	{"speculative.min_gain", "spec-min-gain", "adaptive k speculates only where the measured costs promise more than this fraction above plain decoding's tokens/s (0 = any gain)"},
	{"speculative.p_min", "draft-p-min", "stop a draft early where the draft model's top token has less than this probability (after the first; 0 = never)"},
	{"flash_attn", "flash-attn", "flash attention: off, on or auto"},
	{"kv_type", "kv-type", "KV cache element type: auto (f32 for a model stored in f32 or with heads of at most 16 dimensions, else f16), f16, f32, bf16, q8_0, q4_0, ..."},
	{"host", "host", "address to listen on"},
	{"port", "port", "TCP port to listen on"},
	{"api_keys", "api-key", "accepted bearer token for /v1/* (repeat or comma-separate for several; none = open)"},
	{"max_body_bytes", "max-body-bytes", "largest request body"},
	{"request_timeout", "request-timeout", "longest generation request"},
	{"shutdown_grace", "shutdown-grace", "on SIGINT/SIGTERM, how long in-flight requests may finish"},
	{"default_max_tokens", "default-max-tokens", "completion length when a request gives none"},
	{"stream_interval", "stream-interval", "tokens of text per streamed chunk after the first (1 = every token; more = fewer writes at many streams)"},
	{"log_format", "log-format", "log format: text or json"},
	{"log_level", "log-level", "log level: debug, info, warn or error"},
}

// field finds the struct field of c named by a dotted yaml key.
func (c *Config) field(key string) (reflect.Value, bool) {
	v := reflect.ValueOf(c).Elem()
	for _, part := range strings.Split(key, ".") {
		t := v.Type()
		found := false
		for i := 0; i < t.NumField(); i++ {
			if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); tag == part {
				v, found = v.Field(i), true
				break
			}
		}
		if !found {
			return reflect.Value{}, false
		}
	}
	return v, true
}

var durationType = reflect.TypeOf(time.Duration(0))

// set parses s into key's field: the one parser of flags and environment.
// Lists append comma-separated items.
func (c *Config) set(key, s string) error {
	f, ok := c.field(key)
	if !ok {
		return fmt.Errorf("unknown key %q", key)
	}
	switch {
	case f.Type() == durationType:
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("%s: %q is not a duration (like 30s or 10m)", key, s)
		}
		f.SetInt(int64(d))
	case f.Kind() == reflect.Int:
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%s: %q is not an integer", key, s)
		}
		f.SetInt(int64(n))
	case f.Kind() == reflect.Float64:
		x, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return fmt.Errorf("%s: %q is not a number", key, s)
		}
		f.SetFloat(x)
	case f.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%s: %q is not a boolean (true or false)", key, s)
		}
		f.SetBool(b)
	case f.Kind() == reflect.String:
		f.SetString(s)
	case f.Kind() == reflect.Slice:
		for _, item := range strings.Split(s, ",") {
			if item = strings.TrimSpace(item); item != "" {
				f.Set(reflect.Append(f, reflect.ValueOf(item)))
			}
		}
	default:
		return fmt.Errorf("%s: cannot be set from text", key)
	}
	return nil
}

// envName is key's environment variable.
func envName(key string) string {
	return "SPECD_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// configFlags registers the flags of every key that has one on fs; the
// returned function applies, in command-line order, the ones that were set.
func configFlags(fs *flag.FlagSet) (configPath *string, apply func(*Config) error) {
	type setting struct{ key, value string }
	var set []setting
	defaults, scratch := defaultConfig(), defaultConfig()
	for _, k := range configKeys {
		if k.flag == "" {
			continue
		}
		help := k.help
		if f, _ := defaults.field(k.key); !f.IsZero() {
			help += fmt.Sprintf(" (default %v)", f.Interface())
		}
		help += fmt.Sprintf(" [%s]", envName(k.key))
		key := k.key
		record := func(s string) error {
			// Parse now too, so a bad value is a usage error naming the flag.
			if err := scratch.set(key, s); err != nil {
				return err
			}
			set = append(set, setting{key, s})
			return nil
		}
		if f, _ := defaults.field(key); f.Kind() == reflect.Bool {
			fs.BoolFunc(k.flag, help, record)
		} else {
			fs.Func(k.flag, help, record)
		}
	}
	configPath = fs.String("config", "", "YAML config file (see configs/specd.yaml); flags override it, SPECD_* variables override both [SPECD_CONFIG]")
	return configPath, func(c *Config) error {
		for _, s := range set {
			if err := c.set(s.key, s.value); err != nil {
				return fmt.Errorf("flag: %w", err)
			}
		}
		return nil
	}
}

// loadConfig reads the three layers (file, flags already parsed into
// applyFlags, environment from lookup) and returns the finished, valid
// configuration, or one error naming what is wrong.
func loadConfig(configPath string, applyFlags func(*Config) error, lookup func(string) (string, bool)) (Config, error) {
	if v, ok := lookup("SPECD_CONFIG"); ok && v != "" {
		configPath = v
	}
	c := defaultConfig()
	if configPath != "" {
		if err := c.readFile(configPath); err != nil {
			return c, err
		}
	}
	if err := applyFlags(&c); err != nil {
		return c, err
	}
	// Flags add to the file's api_keys; the environment replaces them.
	var envKeys []string
	for _, k := range configKeys {
		v, ok := lookup(envName(k.key))
		if !ok || v == "" {
			continue
		}
		if k.key == "api_keys" {
			envKeys = append(envKeys, v)
			continue
		}
		if err := c.set(k.key, v); err != nil {
			return c, fmt.Errorf("%s: %w", envName(k.key), err)
		}
	}
	if v, ok := lookup("SPECD_API_KEY"); ok && v != "" {
		envKeys = append(envKeys, v)
	}
	if len(envKeys) > 0 {
		c.APIKeys = nil
		_ = c.set("api_keys", strings.Join(envKeys, ","))
	}
	c.finish()
	return c, c.Validate()
}

// yamlUnknown matches yaml's message for a key with no field.
var yamlUnknown = regexp.MustCompile(`^line (\d+): field (\S+) not found in type .*$`)

// readFile decodes path over c. Paths in the file are relative to its
// folder.
func (c *Config) readFile(path string) error {
	c.file = path
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			msgs := make([]string, len(te.Errors))
			for i, m := range te.Errors {
				m = strings.TrimSpace(m)
				if g := yamlUnknown.FindStringSubmatch(m); g != nil {
					m = fmt.Sprintf("line %s: unknown key %q", g[1], g[2])
				}
				msgs[i] = m
			}
			return fmt.Errorf("config %s: %s", path, strings.Join(msgs, "; "))
		}
		return fmt.Errorf("config %s: %s", path, strings.ReplaceAll(err.Error(), "\n", " "))
	}
	dir := filepath.Dir(path)
	for _, p := range []*string{&c.Model, &c.Draft, &c.LibDir} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	return nil
}

// finish fills the derived defaults.
func (c *Config) finish() {
	if c.Threads == 0 {
		c.Threads = runtime.NumCPU()
	}
	if c.Speculative.K > c.Speculative.KMax {
		c.Speculative.KMax = c.Speculative.K
	}
	if c.BatchSize == 0 {
		c.BatchSize = max(512, c.Parallel*(c.Speculative.KMax+1))
	}
	if c.Speculative.Proposer == "" {
		c.Speculative.Proposer = "none"
		if c.Draft != "" {
			c.Speculative.Proposer = "draft"
		}
	}
	if c.ModelAlias == "" && c.Model != "" {
		c.ModelAlias = strings.TrimSuffix(filepath.Base(c.Model), ".gguf")
	}
}

// Validate checks what the scheduler and the server check, and what only
// the daemon knows (files, logging). The first problem is the error.
func (c Config) Validate() error {
	where := ""
	if c.file != "" {
		where = " (config " + c.file + ")"
	}
	if c.Model == "" {
		return errors.New("no model: set model in the config file, --model or SPECD_MODEL")
	}
	for _, f := range []struct{ what, path string }{{"model", c.Model}, {"draft", c.Draft}} {
		if f.path == "" {
			continue
		}
		if err := engine.CheckGGUF(f.path); err != nil {
			return fmt.Errorf("%s%s: %w", f.what, where, err)
		}
	}
	if c.Speculative.Proposer == "draft" && c.Draft == "" {
		return errors.New("speculative.proposer draft needs a draft model (draft, --draft or SPECD_DRAFT)")
	}
	if _, err := engine.KVType(c.KVType).GGMLType(); err != nil && engine.KVType(c.KVType) != engine.KVAuto {
		return fmt.Errorf("kv_type: %w", err)
	}
	switch c.KVLayout {
	case "streams", "unified":
	default:
		return fmt.Errorf("kv_layout %q: must be streams or unified", c.KVLayout)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("log_format %q: must be text or json", c.LogFormat)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return err
	}
	if c.Port == 0 {
		return errors.New("port 0: give a port in 1..65535")
	}
	if !(c.Speculative.MinGain >= 0 && c.Speculative.MinGain <= 10) {
		return fmt.Errorf("speculative.min_gain %g: must be in [0, 10]", c.Speculative.MinGain)
	}
	if c.MaxBodyBytes < 1 || c.RequestTimeout <= 0 || c.ShutdownGrace < 0 || c.DefaultMaxTokens < 1 || c.StreamInterval < 1 {
		return errors.New("max_body_bytes, request_timeout, default_max_tokens and stream_interval must be positive, shutdown_grace not negative")
	}
	sc := c.SchedulerConfig()
	if err := sc.Validate(); err != nil {
		return fmt.Errorf("scheduler settings%s: %w", where, err)
	}
	if err := c.ServerConfig().Validate(); err != nil {
		return fmt.Errorf("server settings%s: %w", where, err)
	}
	return nil
}

// SchedulerConfig is the scheduler's part of c.
func (c Config) SchedulerConfig() scheduler.Config {
	return scheduler.Config{
		CtxSize:            c.CtxSize,
		MaxRunning:         c.Parallel,
		MaxBatchTokens:     c.BatchSize,
		MaxWaiting:         c.MaxWaiting,
		BlockSize:          c.BlockSize,
		DisablePrefixCache: !c.PrefixCache,
		PrefixCacheBlocks:  c.PrefixCacheBlocks,
		SplitKV:            c.KVLayout == "streams",
		Preemption:         c.Preemption,
		Proposer:           c.Speculative.Proposer,
		SpecK:              c.Speculative.K,
		KMin:               c.Speculative.KMin,
		KMax:               c.Speculative.KMax,
		DraftPMin:          c.Speculative.PMin,
		SpecMinGain:        specMinGain(c.Speculative.MinGain),
		Threads:            c.Threads,
		DecodeThreads:      c.DecodeThreads,
		FlashAttn:          c.FlashAttn,
		KVType:             c.KVType,
	}
}

// specMinGain maps the config's min_gain (0 = no margin) to the
// scheduler's field (0 = its default, negative = no margin).
func specMinGain(g float64) float64 {
	if g == 0 {
		return -1
	}
	return g
}

// ServerConfig is the HTTP server's part of c.
func (c Config) ServerConfig() server.Config {
	return server.Config{
		Host:             c.Host,
		Port:             c.Port,
		APIKeys:          c.APIKeys,
		MaxBodyBytes:     c.MaxBodyBytes,
		RequestTimeout:   c.RequestTimeout,
		ShutdownGrace:    c.ShutdownGrace,
		DefaultMaxTokens: c.DefaultMaxTokens,
		StreamInterval:   c.StreamInterval,
	}
}

func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("log_level %q: must be debug, info, warn or error", s)
}

// newLogger makes the daemon's logger on w.
func newLogger(w io.Writer, format, level string) *slog.Logger {
	lv, _ := parseLevel(level)
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
