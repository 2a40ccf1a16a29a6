package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"specd/internal/testenv"
)

// The binary tests build specd once (CGO_ENABLED=0, like `make build`) and
// run it as a user would, so exit codes and stderr are the real ones.
var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func specdBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "specd-bin-"); binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "specd")
		cmd := exec.Command("go", "build", "-o", binPath, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = errors.New("go build: " + err.Error() + "\n" + string(out))
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// specdEnv is the environment of a specd run: the backend folder and no
// backtraces from ggml.
func specdEnv(t *testing.T) []string {
	return append(os.Environ(), "SPECD_LIB_DIR="+testenv.LibDir(t), "GGML_NO_BACKTRACE=1")
}

// generate runs `specd generate args...` and returns stdout, stderr and the
// exit code. One thread: on a small shared machine ggml's polling threads
// slow each other down.
func generate(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return run(t, append([]string{"generate", "--threads", "1"}, args...)...)
}

type greedyRef struct {
	Prompt       string `json:"prompt"`
	NPredict     int    `json:"n_predict"`
	Continuation string `json:"continuation"`
}

func greedyRefs(t *testing.T) []greedyRef {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "engine", "testdata", "greedy_stories260K.json"))
	if err != nil {
		t.Fatal(err)
	}
	var refs []greedyRef
	if err := json.Unmarshal(data, &refs); err != nil {
		t.Fatal(err)
	}
	if len(refs) == 0 {
		t.Fatal("no references")
	}
	return refs
}

// TestGenerateGreedyMatchesLlamaCompletion: at temperature 0 the text is
// exactly what llama.cpp's llama-completion printed (engine/testdata).
func TestGenerateGreedyMatchesLlamaCompletion(t *testing.T) {
	model := testenv.StoriesModel(t)
	for _, ref := range greedyRefs(t) {
		out, stderr, code := generate(t, "--model", model, "--prompt", ref.Prompt, "-n", itoa(ref.NPredict), "--temperature", "0", "--flash-attn", "off")
		if code != 0 {
			t.Fatalf("%q: exit %d: %s", ref.Prompt, code, stderr)
		}
		if got := strings.TrimSuffix(out, "\n"); got != ref.Continuation {
			t.Errorf("%q:\n got  %q\n want %q", ref.Prompt, got, ref.Continuation)
		}
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func generateJSON(t *testing.T, args ...string) genResult {
	t.Helper()
	out, stderr, code := generate(t, append(args, "--json")...)
	if code != 0 {
		t.Fatalf("%v: exit %d: %s", args, code, stderr)
	}
	var r genResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("--json output %q: %v", out, err)
	}
	return r
}

// TestGenerateSpeculationKeepsText: greedy speculation is lossless, so the
// n-gram proposer, a draft model (fixed and adaptive k) and a prediction
// all give the text of plain decoding. The heavygen target shares
// stories260K's tokenizer and agrees with it imperfectly, so drafts are
// both accepted and rejected.
func TestGenerateSpeculationKeepsText(t *testing.T) {
	heavy, stories := testenv.HeavyModel(t), testenv.StoriesModel(t)
	rejected := false
	for _, prompt := range []string{"Once upon a time", "Lily and Tom went to the park"} {
		base := []string{"--model", heavy, "--prompt", prompt, "-n", "96", "--temperature", "0"}
		plain := generateJSON(t, base...)
		if plain.Tokens != 96 || plain.Proposed != 0 || plain.K != float64(0) {
			t.Fatalf("plain run: %+v", plain)
		}
		runs := []struct {
			name string
			args []string
			k    any
		}{
			{"ngram k=4", []string{"--proposer", "ngram", "--spec-k", "4"}, float64(4)},
			{"draft adaptive", []string{"--draft", stories}, "adaptive"},
			{"draft k=3", []string{"--draft", stories, "--spec-k", "3"}, float64(3)},
			{"prediction", []string{"--prediction", plain.Text[len(plain.Text)/2:]}, "adaptive"},
		}
		for _, r := range runs {
			got := generateJSON(t, append(base, r.args...)...)
			if got.Text != plain.Text {
				t.Errorf("%q %s:\n got  %q\n want %q", prompt, r.name, got.Text, plain.Text)
			}
			if got.K != r.k || got.Tokens != plain.Tokens {
				t.Errorf("%q %s: k %v tokens %d", prompt, r.name, got.K, got.Tokens)
			}
			if got.Accepted > got.Proposed || (r.k != "adaptive" && got.Proposed == 0) {
				t.Errorf("%q %s: proposed %d accepted %d", prompt, r.name, got.Proposed, got.Accepted)
			}
			if got.Accepted < got.Proposed {
				rejected = true
			}
		}
	}
	if !rejected {
		t.Error("no run rejected a draft token: the rollback path went untested")
	}
}

// TestGenerateSeed: at temperature > 0 the same seed gives the same text.
func TestGenerateSeed(t *testing.T) {
	model := testenv.StoriesModel(t)
	args := []string{"--model", model, "--prompt", "Once upon a time", "-n", "40", "--temperature", "1", "--seed", "7"}
	a, b := generateJSON(t, args...), generateJSON(t, args...)
	if a.Text != b.Text || a.Seed != 7 {
		t.Errorf("seed 7 twice:\n %q\n %q (seed %d)", a.Text, b.Text, a.Seed)
	}
}

// TestGenerateBadInput: every bad input is one line on stderr naming the
// problem and a non-zero exit (2 for a bad command line), never a crash.
func TestGenerateBadInput(t *testing.T) {
	model := testenv.StoriesModel(t)
	dir := t.TempDir()
	notGGUF := writeFile(t, dir, "notes.gguf", "these are not weights\n")
	data, err := os.ReadFile(model)
	if err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(dir, "truncated.gguf")
	if err := os.WriteFile(truncated, data[:len(data)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	schema := writeFile(t, dir, "bad-schema.json", `{"type": "string", "not": {}}`)
	emptyGrammar := writeFile(t, dir, "empty.gbnf", "\n")
	long := strings.Repeat("the little dog ran to the park and ", 400) // > 2048 tokens, the model's context
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"missing file", []string{"--model", filepath.Join(dir, "none.gguf"), "--prompt", "hi"}, 1, "none.gguf"},
		{"not gguf", []string{"--model", notGGUF, "--prompt", "hi"}, 1, "notes.gguf"},
		{"truncated gguf", []string{"--model", truncated, "--prompt", "hi"}, 1, "truncated"},
		{"no model", []string{"--prompt", "hi"}, 2, "--model is required"},
		{"empty prompt", []string{"--model", model, "--prompt", ""}, 2, "--prompt is required"},
		{"prompt too long", []string{"--model", model, "--prompt", long}, 1, "prompt does not fit the context"},
		{"prompt too long for ctx-size", []string{"--model", model, "--prompt", long[:300], "--ctx-size", "32"}, 1, "prompt does not fit the context"},
		{"n zero", []string{"--model", model, "--prompt", "hi", "-n", "0"}, 2, "-n 0: must be at least 1"},
		{"negative temperature", []string{"--model", model, "--prompt", "hi", "--temperature", "-1"}, 2, "temperature -1"},
		{"NaN temperature", []string{"--model", model, "--prompt", "hi", "--temperature", "NaN"}, 2, "temperature NaN"},
		{"top-p above 1", []string{"--model", model, "--prompt", "hi", "--top-p", "1.5"}, 2, "top_p 1.5"},
		{"draft proposer without draft", []string{"--model", model, "--prompt", "hi", "--proposer", "draft"}, 2, "needs --draft"},
		{"bad proposer", []string{"--model", model, "--prompt", "hi", "--proposer", "psychic"}, 2, `"psychic"`},
		{"bad draft file", []string{"--model", model, "--prompt", "hi", "--draft", notGGUF}, 1, "draft model"},
		{"bad flash-attn", []string{"--model", model, "--prompt", "hi", "--flash-attn", "sometimes"}, 1, `flash-attn "sometimes"`},
		{"positional prompt", []string{"--model", model, "hello"}, 2, `unexpected argument "hello"`},
		{"grammar and schema", []string{"--model", model, "--prompt", "hi", "--grammar", emptyGrammar, "--json-schema", schema}, 2, "one of --grammar, --json-schema and --regex"},
		{"regex and schema", []string{"--model", model, "--prompt", "hi", "--regex", "a+", "--json-schema", schema}, 2, "one of --grammar"},
		{"bad regex", []string{"--model", model, "--prompt", "hi", "--regex", `(\w+`}, 2, "--regex: regex: missing ')'"},
		{"unsupported schema", []string{"--model", model, "--prompt", "hi", "--json-schema", schema}, 2, `"not"`},
		{"empty grammar", []string{"--model", model, "--prompt", "hi", "--grammar", emptyGrammar}, 2, "empty"},
		{"missing grammar file", []string{"--model", model, "--prompt", "hi", "--grammar", filepath.Join(dir, "none.gbnf")}, 1, "none.gbnf"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, stderr, code := generate(t, tt.args...)
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			if code != tt.code || len(lines) != 1 || !strings.HasPrefix(lines[0], "specd generate: ") || !strings.Contains(lines[0], tt.want) {
				t.Errorf("exit %d (want %d), stderr %q (want one line with %q)", code, tt.code, stderr, tt.want)
			}
			if out != "" {
				t.Errorf("stdout %q", out)
			}
		})
	}
}

// TestGenerateJSONSchema: --json-schema makes the text a JSON document of
// the schema, with and without n-gram speculation (the same text).
func TestGenerateJSONSchema(t *testing.T) {
	model := testenv.StoriesModel(t)
	schema := writeFile(t, t.TempDir(), "s.json", `{"type": "object", "properties": {"title": {"type": "string", "maxLength": 20}, "happy": {"type": "boolean"}}, "required": ["title", "happy"]}`)
	args := []string{"--model", model, "--prompt", "Once upon a time", "-n", "80", "--temperature", "0", "--json-schema", schema}
	a := generateJSON(t, args...)
	var v struct {
		Title *string `json:"title"`
		Happy *bool   `json:"happy"`
	}
	if a.FinishReason != "stop" || json.Unmarshal([]byte(a.Text), &v) != nil || v.Title == nil || v.Happy == nil {
		t.Fatalf("%q (%s) is not a document of the schema", a.Text, a.FinishReason)
	}
	if b := generateJSON(t, append(args, "--proposer", "ngram", "--spec-k", "3")...); b.Text != a.Text {
		t.Fatalf("n-gram speculation: %q, plain %q", b.Text, a.Text)
	}
}

// TestGenerateRegex: --regex makes the whole text match, with and without
// n-gram speculation (the same text).
func TestGenerateRegex(t *testing.T) {
	model := testenv.StoriesModel(t)
	re := ` [A-Z][a-z]+( [a-z]+){2,6}\.`
	args := []string{"--model", model, "--prompt", "Once upon a time", "-n", "80", "--temperature", "0", "--regex", re}
	a := generateJSON(t, args...)
	if a.FinishReason != "stop" || !regexp.MustCompile(`^(?:`+re+`)$`).MatchString(a.Text) {
		t.Fatalf("%q (%s) does not match %s", a.Text, a.FinishReason, re)
	}
	if b := generateJSON(t, append(args, "--proposer", "ngram", "--spec-k", "3")...); b.Text != a.Text {
		t.Fatalf("n-gram speculation: %q, plain %q", b.Text, a.Text)
	}
}
