// Package testenv finds the native backend and the test models for tests
// that run the real llama.cpp. Under `make test` (SPECD_REQUIRE_MODELS=1) a
// missing file fails the test; elsewhere it skips, so `go test` on a bare
// checkout still runs the pure-logic tests.
package testenv

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// RepoRoot is the module's root folder (found from this file's location).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

func required() bool { return os.Getenv("SPECD_REQUIRE_MODELS") == "1" }

func need(t testing.TB, path, what string) string {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		if required() {
			t.Fatalf("%s not found at %s (run `make test`, which installs it)", what, path)
		}
		t.Skipf("%s not found at %s (run `make backend models`)", what, path)
	}
	return path
}

// LibDir is the folder of the llama.cpp shared libraries: $SPECD_LIB_DIR,
// else the one `make backend` installs.
func LibDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("SPECD_LIB_DIR")
	if dir == "" {
		dir = filepath.Join(RepoRoot(), ".cache", "backend", "linux-x64-3.22.1")
	}
	return need(t, dir, "llama.cpp backend")
}

// StoriesModel is ../shared/models/stories260K.gguf (or $SPECD_TEST_MODEL).
func StoriesModel(t testing.TB) string {
	t.Helper()
	p := os.Getenv("SPECD_TEST_MODEL")
	if p == "" {
		p = filepath.Join(RepoRoot(), "..", "shared", "models", "stories260K.gguf")
	}
	return need(t, p, "stories260K model")
}

// HeavyModel is the small heavygen target `make models` writes (or
// $SPECD_TEST_HEAVY): stories260K's tokenizer, imperfect agreement with it.
func HeavyModel(t testing.TB) string {
	t.Helper()
	return cacheModel(t, "SPECD_TEST_HEAVY", "heavy-test-f32.gguf", "heavygen test target")
}

// CostlyModel is a heavygen target about 15x costlier per token than
// stories260K (19 extra layers, q8_0) that agrees with it often;
// CostlyLowModel is the same shape agreeing rarely. For tests of decisions
// that depend on the draft being much cheaper than the target.
func CostlyModel(t testing.TB) string {
	t.Helper()
	return cacheModel(t, "SPECD_TEST_COSTLY", "heavy-test-costly-q8.gguf", "costly heavygen test target")
}

func CostlyLowModel(t testing.TB) string {
	t.Helper()
	return cacheModel(t, "SPECD_TEST_COSTLY_LO", "heavy-test-costly-lo-q8.gguf", "low-agreement costly heavygen test target")
}

// QuickDraft is the quick start's draft, .cache/models/stories260K-q8.gguf
// (make models / make run), which configs/specd.yaml names.
func QuickDraft(t testing.TB) string {
	t.Helper()
	return cacheModel(t, "SPECD_TEST_QUICK_DRAFT", "stories260K-q8.gguf", "quick-start draft (a Q8_0 copy of stories260K)")
}

func cacheModel(t testing.TB, env, name, what string) string {
	t.Helper()
	p := os.Getenv(env)
	if p == "" {
		p = filepath.Join(RepoRoot(), ".cache", "models", name)
	}
	return need(t, p, what)
}
