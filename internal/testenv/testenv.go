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
	p := os.Getenv("SPECD_TEST_HEAVY")
	if p == "" {
		p = filepath.Join(RepoRoot(), ".cache", "models", "heavy-test-f32.gguf")
	}
	return need(t, p, "heavygen test target")
}

// HeavyLowModel is a heavygen target like HeavyModel with a much larger
// perturbation: it agrees with stories260K far less often.
func HeavyLowModel(t testing.TB) string {
	t.Helper()
	p := os.Getenv("SPECD_TEST_HEAVY_LO")
	if p == "" {
		p = filepath.Join(RepoRoot(), ".cache", "models", "heavy-test-lo-f32.gguf")
	}
	return need(t, p, "low-agreement heavygen test target")
}
