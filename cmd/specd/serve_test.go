package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"specd/internal/testenv"
)

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// lockedBuffer collects a child's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func postJSON(t *testing.T, url, key string, body any) (int, map[string]any) {
	t.Helper()
	data, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s: %d %q: %v", url, resp.StatusCode, raw, err)
	}
	return resp.StatusCode, out
}

// TestServeEndToEnd starts the real binary on stories260K (n-gram
// proposer), waits for /health, checks completions (greedy text as
// llama-completion's), chat (the fallback template), /v1/models and auth,
// starts a stream and sends SIGTERM in its middle: the stream finishes
// within the grace and the process exits 0.
func TestServeEndToEnd(t *testing.T) {
	model := testenv.StoriesModel(t)
	refs := greedyRefs(t)
	port := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	cmd := exec.Command(specdBinary(t), "serve", "--model", model, "--proposer", "ngram",
		"--port", fmt.Sprint(port), "--threads", "1", "--parallel", "2", "--ctx-size", "2048",
		"--api-key", "sekret", "--shutdown-grace", "20s", "--log-format", "json")
	cmd.Env = specdEnv(t)
	var stdout, stderr lockedBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-exited
		}
	}()

	statuses := map[int]int{}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(base + "/health")
		if err == nil {
			resp.Body.Close()
			statuses[resp.StatusCode]++
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("specd exited before ready: %v\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 20s; health statuses %v\n%s", statuses, stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("health statuses while starting: %v (503 = loading, seen only if a poll hit the load)", statuses)
	for code := range statuses {
		if code != http.StatusOK && code != http.StatusServiceUnavailable {
			t.Errorf("/health answered %d while starting", code)
		}
	}
	// The line is written before /health turns 200, but os/exec copies the
	// pipe into the buffer on its own goroutine: give it a moment.
	want := "specd listening on " + base + "\n"
	for wait := time.Now().Add(5 * time.Second); stdout.String() != want && time.Now().Before(wait); {
		time.Sleep(5 * time.Millisecond)
	}
	if stdout.String() != want {
		t.Errorf("stdout %q, want %q", stdout.String(), want)
	}

	// Greedy completion: the same text llama-completion printed.
	ref := refs[0]
	code, out := postJSON(t, base+"/v1/completions", "sekret", map[string]any{
		"model": "stories260K", "prompt": ref.Prompt, "max_tokens": ref.NPredict, "temperature": 0})
	if code != http.StatusOK {
		t.Fatalf("completion: %d %v", code, out)
	}
	choices, _ := out["choices"].([]any)
	if len(choices) != 1 {
		t.Fatalf("completion: %v", out)
	}
	if text, _ := choices[0].(map[string]any)["text"].(string); text != ref.Continuation {
		t.Errorf("completion text:\n got  %q\n want %q", text, ref.Continuation)
	}

	// Chat through the fallback template (stories260K has none).
	code, out = postJSON(t, base+"/v1/chat/completions", "sekret", map[string]any{
		"messages": []map[string]string{{"role": "user", "content": "Tell me a story."}}, "max_tokens": 8})
	if code != http.StatusOK {
		t.Errorf("chat: %d %v", code, out)
	}
	if code, _ = postJSON(t, base+"/v1/completions", "wrong", map[string]any{"prompt": "hi"}); code != http.StatusUnauthorized {
		t.Errorf("wrong key: %d, want 401", code)
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/v1/models", nil)
	req.Header.Set("Authorization", "Bearer sekret")
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Error(err)
	} else {
		var models struct{ Data []struct{ ID string } }
		json.NewDecoder(resp.Body).Decode(&models)
		resp.Body.Close()
		if len(models.Data) != 1 || models.Data[0].ID != "stories260K" {
			t.Errorf("/v1/models: %+v", models)
		}
	}
	// /props: the daemon's slots, model and chat template (chatml: the
	// model has none).
	req, _ = http.NewRequest(http.MethodGet, base+"/props", nil)
	req.Header.Set("Authorization", "Bearer sekret")
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Error(err)
	} else {
		var props struct {
			TotalSlots   int    `json:"total_slots"`
			ModelPath    string `json:"model_path"`
			ChatTemplate string `json:"chat_template"`
			Defaults     struct {
				NCtx int `json:"n_ctx"`
			} `json:"default_generation_settings"`
		}
		json.NewDecoder(resp.Body).Decode(&props)
		resp.Body.Close()
		if props.TotalSlots != 2 || props.ModelPath != model || props.ChatTemplate != "chatml" || props.Defaults.NCtx < 512 {
			t.Errorf("/props: %+v", props)
		}
	}

	// A long stream in flight when SIGTERM arrives still finishes.
	body := `{"prompt":"Once upon a time","max_tokens":1000,"temperature":0,"stream":true,"ignore_eos":true}`
	req, _ = http.NewRequest(http.MethodPost, base+"/v1/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer sekret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stream: %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	if !sc.Scan() {
		t.Fatal("stream sent nothing")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var chunks int
	var sawDone bool
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "data: ") {
			chunks++
		}
		if line == "data: [DONE]" {
			sawDone = true
		}
		if strings.Contains(line, `"error"`) {
			t.Errorf("stream ended with an error during shutdown: %s", line)
		}
	}
	if !sawDone {
		t.Errorf("stream cut by shutdown after %d chunks (want it to finish within the grace)", chunks)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit: %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("still running 30s after SIGTERM\n%s", stderr.String())
	}
	for _, want := range []string{`"msg":"shutting down"`, `"msg":"stopped"`} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, stderr.String())
		}
	}
}

// TestServeStartupErrors: a bad configuration or a busy port is one line
// on stderr and exit 1 (2 for a bad command line), before any serving.
func TestServeStartupErrors(t *testing.T) {
	model := testenv.StoriesModel(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := fmt.Sprint(busy.Addr().(*net.TCPAddr).Port)
	dir := t.TempDir()
	bad := writeFile(t, dir, "bad.yaml", "model: "+model+"\nspeculative:\n  propser: ngram\n")
	tests := []struct {
		name string
		args []string
		env  []string
		code int
		want string
	}{
		{"unknown config key", []string{"--config", bad}, nil, 1, `line 3: unknown key "propser"`},
		{"no model", []string{"--port", "1"}, nil, 1, "no model"},
		{"busy port", []string{"--model", model, "--port", busyPort}, nil, 1, "listen: "},
		{"bad env", []string{"--model", model}, []string{"SPECD_PARALLEL=lots"}, 1, `SPECD_PARALLEL: parallel: "lots" is not an integer`},
		// The environment overrides flags, so the bad folder goes there.
		{"bad lib dir", []string{"--model", model, "--port", fmt.Sprint(freePort(t))}, []string{"SPECD_LIB_DIR=" + dir}, 1, "libggml-base"},
		{"bad chat template", []string{"--model", model, "--port", fmt.Sprint(freePort(t)), "--chat-template", "{{ no such template }}"}, nil, 1, "chat_template: "},
		{"stray argument", []string{"--model", model, "extra"}, nil, 2, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(specdBinary(t), append([]string{"serve", "--log-level", "error"}, tt.args...)...)
			cmd.Env = append(specdEnv(t), tt.env...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			done := make(chan error, 1)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			go func() { done <- cmd.Wait() }()
			select {
			case err = <-done:
			case <-time.After(20 * time.Second):
				cmd.Process.Kill()
				t.Fatalf("still running after 20s\n%s", stderr.String())
			}
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			}
			lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
			if code != tt.code || len(lines) != 1 || !strings.HasPrefix(lines[0], "specd serve: ") || !strings.Contains(lines[0], tt.want) {
				t.Errorf("exit %d (want %d), stderr %q (want one line with %q)", code, tt.code, stderr.String(), tt.want)
			}
		})
	}
}

func TestGoProcs(t *testing.T) {
	env := func(m map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	for _, c := range []struct {
		name                string
		env                 map[string]string
		threads, cpus, want int
	}{
		{"threads take every core", nil, 2, 2, 1},
		{"threads take more than every core", nil, 8, 2, 1},
		{"cores left over", nil, 4, 16, 12},
		{"one thread on two cores", nil, 1, 2, 1},
		{"GOMAXPROCS set", map[string]string{"GOMAXPROCS": "8"}, 2, 2, 0},
	} {
		if got := goProcs(env(c.env), c.threads, c.cpus); got != c.want {
			t.Errorf("%s: goProcs(threads %d, cpus %d) = %d, want %d", c.name, c.threads, c.cpus, got, c.want)
		}
	}
}
