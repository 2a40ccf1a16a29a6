package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"specd/internal/testenv"
)

// run runs the specd binary with args and returns stdout, stderr and the
// exit code.
func run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(specdBinary(t), args...)
	cmd.Env = specdEnv(t)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatal(err)
		}
		code = ee.ExitCode()
	}
	return out.String(), errb.String(), code
}

func TestInfo(t *testing.T) {
	model := testenv.StoriesModel(t)
	out, errs, code := run(t, "info", model, "--ctx", "4096", "--parallel", "4", "--bandwidth", "10")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{"5 layers", "embedding 64", "8 heads (4 KV heads)", "vocabulary 512", "4096 total KV tokens", "tok/s"} {
		if !strings.Contains(out, want) {
			t.Errorf("info output lacks %q:\n%s", want, out)
		}
	}
	// stories260K is stored in f32, so auto means an f32 cache:
	// KV = 5 layers × 4 KV heads × (8+8) × 4096 cells × 4 bytes = 5 MiB.
	if !strings.Contains(out, "KV type f32 (auto)") || !strings.Contains(out, "5.00 MiB") {
		t.Errorf("KV for 4096 auto (f32) cells should be 5.00 MiB:\n%s", out)
	}
	out, errs, code = run(t, "info", model, "--ctx", "4096", "--parallel", "4", "--bandwidth", "10", "--kv-type", "f16")
	if code != 0 || !strings.Contains(out, "KV type f16:") || !strings.Contains(out, "2.50 MiB") {
		t.Errorf("--kv-type f16: exit %d, KV for 4096 f16 cells should be 2.50 MiB:\n%s%s", code, out, errs)
	}
	bad := filepath.Join(t.TempDir(), "bad.gguf")
	os.WriteFile(bad, []byte("not a model"), 0o644)
	for _, args := range [][]string{{"info", bad}, {"info", filepath.Join(t.TempDir(), "missing.gguf")}} {
		_, errs, code := run(t, args...)
		if code == 0 || strings.Count(strings.TrimSpace(errs), "\n") != 0 || !strings.HasPrefix(errs, "specd info: ") {
			t.Errorf("%v: exit %d, stderr %q: want one line and a non-zero exit", args, code, errs)
		}
	}
}

func TestQuantizeThenGenerate(t *testing.T) {
	model := testenv.StoriesModel(t)
	q8 := filepath.Join(t.TempDir(), "stories-q8.gguf")
	if _, errs, code := run(t, "quantize", model, q8, "--type", "Q8_0", "--threads", "1"); code != 0 {
		t.Fatalf("quantize: exit %d: %s", code, errs)
	}
	out, _, _ := run(t, "info", q8)
	if !strings.Contains(out, "q8_0") && !strings.Contains(out, "Q8_0") {
		t.Errorf("info of the quantized copy does not say Q8_0:\n%s", out)
	}
	text, errs, code := generate(t, "--model", q8, "--prompt", "Once upon a time", "-n", "16", "--temperature", "0")
	if code != 0 || len(strings.TrimSpace(text)) == 0 {
		t.Fatalf("generate with the Q8_0 copy: exit %d, text %q, stderr %s", code, text, errs)
	}
	if _, errs, code := run(t, "quantize", model, filepath.Join(t.TempDir(), "x.gguf"), "--type", "Q9_9"); code == 0 || !strings.Contains(errs, "Q9_9") {
		t.Errorf("unknown type: exit %d, stderr %q", code, errs)
	}
}
