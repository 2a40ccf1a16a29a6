package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"specd/configs"
	"specd/internal/testenv"
)

// load runs the serve flag parsing and loadConfig the way runServe does.
func load(t *testing.T, args []string, env map[string]string) (Config, error) {
	t.Helper()
	fs := newFlagSet("serve")
	fs.SetOutput(new(bytes.Buffer))
	path, apply := configFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return Config{}, err
	}
	return loadConfig(*path, apply, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
}

func writeFile(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// modelDir is a folder holding m.gguf (a link to stories260K), so config
// files can name it relatively.
func modelDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Symlink(testenv.StoriesModel(t), filepath.Join(dir, "m.gguf")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestConfigLayers(t *testing.T) {
	dir := modelDir(t)
	file := writeFile(t, dir, "c.yaml", "model: m.gguf\nport: 9000\nparallel: 3\nspeculative:\n  proposer: ngram\n  k: 2\napi_keys: [f1]\n")
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want func(c Config) string // "" when right
	}{
		{"file", []string{"--config", file}, nil, func(c Config) string {
			if c.Port != 9000 || c.Parallel != 3 || c.Speculative.Proposer != "ngram" || c.Speculative.K != 2 {
				return "file values not applied"
			}
			if c.Model != filepath.Join(dir, "m.gguf") {
				return "model not resolved against the file's folder: " + c.Model
			}
			if c.CtxSize != 4096 || c.Host != "127.0.0.1" || !c.PrefixCache || c.PrefixCacheBlocks != 0 || c.KVLayout != "streams" || c.ShutdownGrace != 10*time.Second {
				return "defaults lost"
			}
			if c.ModelAlias != "m" || c.BatchSize != 512 || c.Threads < 1 || c.SchedulerConfig().SpecMinGain != 0.1 {
				return "derived defaults wrong"
			}
			return ""
		}},
		{"flags over file", []string{"--config", file, "--port", "9001", "--spec-k", "0", "--prefix-cache=false", "--prefix-cache-blocks", "64", "--api-key", "x", "--api-key", "y,z"}, nil, func(c Config) string {
			if c.Port != 9001 || c.Speculative.K != 0 || c.PrefixCache || c.Parallel != 3 || c.PrefixCacheBlocks != 64 {
				return "flags not applied over the file"
			}
			if c.SchedulerConfig().PrefixCacheBlocks != 64 {
				return "prefix_cache_blocks not passed to the scheduler"
			}
			if !reflect.DeepEqual(c.APIKeys, []string{"f1", "x", "y", "z"}) {
				return "flag api keys should add to the file's"
			}
			return ""
		}},
		{"env over flags", []string{"--config", file, "--port", "9001", "--prefix-cache-blocks", "64"}, map[string]string{
			"SPECD_PORT": "9002", "SPECD_SPECULATIVE_K": "5", "SPECD_API_KEYS": "a,b", "SPECD_API_KEY": "c",
			"SPECD_REQUEST_TIMEOUT": "90s", "SPECD_PREFIX_CACHE": "false", "SPECD_THREADS": "",
			"SPECD_PREFIX_CACHE_BLOCKS": "48",
		}, func(c Config) string {
			if c.Port != 9002 || c.Speculative.K != 5 || c.RequestTimeout != 90*time.Second || c.PrefixCache || c.PrefixCacheBlocks != 48 {
				return "env not applied over flags"
			}
			if !reflect.DeepEqual(c.APIKeys, []string{"a", "b", "c"}) {
				return "env api keys should replace the others"
			}
			return ""
		}},
		{"env names the file", nil, map[string]string{"SPECD_CONFIG": file}, func(c Config) string {
			if c.Port != 9000 {
				return "SPECD_CONFIG not read"
			}
			return ""
		}},
		{"no file", []string{"--model", filepath.Join(dir, "m.gguf"), "--draft", filepath.Join(dir, "m.gguf"), "--parallel", "64"}, nil, func(c Config) string {
			if c.Speculative.Proposer != "draft" {
				return "proposer should default to draft with a draft model"
			}
			if c.BatchSize != 64*9 {
				return "batch_size should grow to parallel × (k_max+1)"
			}
			return ""
		}},
		{"min_gain", []string{"--model", filepath.Join(dir, "m.gguf"), "--spec-min-gain", "0"}, nil, func(c Config) string {
			if c.Speculative.MinGain != 0 || c.SchedulerConfig().SpecMinGain >= 0 {
				return "min_gain 0 should reach the scheduler as no margin"
			}
			sc := c.SchedulerConfig()
			sc.EnsureDefaults()
			if sc.SpecMinGain >= 0 {
				return "min_gain 0 became the scheduler's default margin"
			}
			return ""
		}},
		{"k raises k_max", []string{"--model", filepath.Join(dir, "m.gguf"), "--spec-k", "12", "--proposer", "ngram"}, nil, func(c Config) string {
			if c.Speculative.KMax != 12 {
				return "k_max not raised to k"
			}
			return ""
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := load(t, tt.args, tt.env)
			if err != nil {
				t.Fatal(err)
			}
			if msg := tt.want(c); msg != "" {
				t.Errorf("%s: %+v", msg, c)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	dir := modelDir(t)
	m := filepath.Join(dir, "m.gguf")
	writeFile(t, dir, "text.gguf", "hello, not a model\n")
	tests := []struct {
		name, file string
		args       []string
		env        map[string]string
		want       string // regexp the error must match
	}{
		{"unknown key", "model: m.gguf\nprot: 1\n", nil, nil, `line 2: unknown key "prot"`},
		{"unknown nested key", "model: m.gguf\nspeculative:\n  kk: 3\n", nil, nil, `line 3: unknown key "kk"`},
		{"bad yaml type", "model: m.gguf\nport: eighty\n", nil, nil, `line 2: cannot unmarshal`},
		{"bad duration in file", "model: m.gguf\nshutdown_grace: 10\n", nil, nil, `line 2: cannot unmarshal .* into time.Duration`},
		{"no model", "", nil, nil, `no model`},
		{"missing model", "model: nope.gguf\n", nil, nil, `model \(config .*\): .*nope.gguf`},
		{"not a model", "model: text.gguf\n", nil, nil, `model \(config .*\): .*text.gguf`},
		{"missing draft", "", []string{"--model", m, "--draft", filepath.Join(dir, "d.gguf")}, nil, `draft: .*d.gguf`},
		{"draft proposer without draft", "", []string{"--model", m, "--proposer", "draft"}, nil, `needs a draft model`},
		{"bad proposer", "", []string{"--model", m, "--proposer", "magic"}, nil, `proposer "magic"`},
		{"bad preemption", "model: m.gguf\npreemption: later\n", nil, nil, `preemption "later"`},
		{"bad flash attn", "", []string{"--model", m, "--flash-attn", "maybe"}, nil, `flash-attn "maybe"`},
		{"bad kv type", "", []string{"--model", m, "--kv-type", "f12"}, nil, `kv_type: .*"f12"`},
		{"zero parallel", "", []string{"--model", m, "--parallel", "0"}, nil, `parallel 0`},
		{"zero stream interval", "", []string{"--model", m, "--stream-interval", "0"}, nil, `stream_interval must be positive`},
		{"bad port", "", []string{"--model", m}, map[string]string{"SPECD_PORT": "70000"}, `Port 70000`},
		{"port text in env", "", []string{"--model", m}, map[string]string{"SPECD_PORT": "http"}, `SPECD_PORT: port: "http" is not an integer`},
		{"bad duration in env", "", []string{"--model", m}, map[string]string{"SPECD_SHUTDOWN_GRACE": "soon"}, `SPECD_SHUTDOWN_GRACE: .*not a duration`},
		{"bad int flag", "", []string{"--model", m, "--ctx-size", "big"}, nil, `invalid value "big" for flag -ctx-size`},
		{"bad bool flag", "", []string{"--model", m, "--prefix-cache=perhaps"}, nil, `invalid boolean value "perhaps" for -prefix-cache: prefix_cache: "perhaps" is not a boolean`},
		{"bad log format", "", []string{"--model", m, "--log-format", "xml"}, nil, `log_format "xml"`},
		{"bad log level", "model: m.gguf\nlog_level: loud\n", nil, nil, `log_level "loud"`},
		{"batch too small", "", []string{"--model", m, "--parallel", "8", "--batch-size", "16"}, nil, `batch budget 16`},
		{"negative prefix cache blocks", "", []string{"--model", m, "--prefix-cache-blocks", "-1"}, nil, `prefix-cache-blocks -1`},
		{"p_min not a number", "", []string{"--model", m, "--draft-p-min", "half"}, nil, `speculative.p_min: "half" is not a number`},
		{"p_min out of range", "", []string{"--model", m, "--draft-p-min", "1.5"}, nil, `draft p-min 1.5: must be in \[0, 1\)`},
		{"bad decode threads", "", []string{"--model", m, "--decode-threads", "some"}, nil, `decode threads "some": must be auto or all`},
		{"min_gain negative", "", []string{"--model", m, "--spec-min-gain", "-0.1"}, nil, `speculative.min_gain -0.1: must be in \[0, 10\]`},
		{"prefix cache blocks above the pool", "model: m.gguf\nctx_size: 1024\nkv_layout: unified\nprefix_cache: true\nprefix_cache_blocks: 65\n", nil, nil, `prefix-cache-blocks 65: must be in 0\.\.64`},
		{"missing config file", "", []string{"--config", filepath.Join(dir, "none.yaml")}, nil, `config: open .*none.yaml`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.file != "" || tt.args == nil {
				args = append([]string{"--config", writeFile(t, dir, "c.yaml", tt.file)}, args...)
			}
			_, err := load(t, args, tt.env)
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			if !regexp.MustCompile(tt.want).MatchString(err.Error()) {
				t.Errorf("error %q does not match %q", err, tt.want)
			}
		})
	}
}

// TestConfigKeysComplete: every field has a key entry (so a flag or an
// environment variable and help), and every key names a field.
func TestConfigKeysComplete(t *testing.T) {
	var c Config
	listed := map[string]bool{}
	for _, k := range configKeys {
		if _, ok := c.field(k.key); !ok {
			t.Errorf("configKeys has %q, which is no field", k.key)
		}
		listed[k.key] = true
	}
	for _, k := range yamlKeys(reflect.TypeOf(c), "") {
		if !listed[k] {
			t.Errorf("field %q is missing from configKeys", k)
		}
	}
}

func yamlKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		if f.Type.Kind() == reflect.Struct && f.Type != durationType {
			keys = append(keys, yamlKeys(f.Type, prefix+tag+".")...)
			continue
		}
		keys = append(keys, prefix+tag)
	}
	return keys
}

// TestDefaultConfigFile: configs/specd.yaml mentions every key, its values
// are the defaults (except the quick start's model and proposer), and it
// loads as is.
func TestDefaultConfigFile(t *testing.T) {
	text := string(configs.Default)
	for _, k := range yamlKeys(reflect.TypeOf(Config{}), "") {
		last := k[strings.LastIndex(k, ".")+1:]
		if !regexp.MustCompile(`(?m)^[ #]*` + regexp.QuoteMeta(last) + `:`).MatchString(text) {
			t.Errorf("configs/specd.yaml does not document %q", k)
		}
	}
	c := defaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(configs.Default))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	if c.Model != "../../shared/models/stories260K.gguf" || c.Draft != "../.cache/models/stories260K-q8.gguf" || c.Speculative.Proposer != "draft" {
		t.Errorf("quick start: model %q draft %q proposer %q", c.Model, c.Draft, c.Speculative.Proposer)
	}
	c.Model, c.Draft, c.Speculative.Proposer = "", "", ""
	if c.APIKeys != nil && len(c.APIKeys) == 0 {
		c.APIKeys = nil
	}
	if want := defaultConfig(); !reflect.DeepEqual(c, want) {
		t.Errorf("configs/specd.yaml values differ from defaultConfig:\n file %+v\n code %+v", c, want)
	}

	testenv.StoriesModel(t) // the file names ../../shared/models/stories260K.gguf
	testenv.QuickDraft(t)   // and ../.cache/models/stories260K-q8.gguf
	got, err := load(t, []string{"--config", filepath.Join(testenv.RepoRoot(), "configs", "specd.yaml")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.ModelAlias != "stories260K" {
		t.Errorf("model alias %q", got.ModelAlias)
	}
	if _, err := os.Stat(got.Model); err != nil {
		t.Errorf("model path %s: %v", got.Model, err)
	}
}
