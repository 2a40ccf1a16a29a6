package server

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// newTestBackend builds the backend of the behavioural tests: those that
// check only what any correct backend must give (shapes, counts, finish
// reasons, errors). It is a variable so that the integrator can run the same
// tests against the real scheduler on stories260K: a file such as
// real_backend_test.go sets it in an init function. Tests that need the
// fake's knobs (failures, delays, exact text) call newFake directly.
var newTestBackend = func(t testing.TB) Backend { return newFake() }

func testLogger() *slog.Logger {
	if os.Getenv("SPECD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startServer serves b on 127.0.0.1:0 (a real socket, so that disconnects
// look as they do in production) and returns the base URL.
func startServer(t testing.TB, cfg Config, b Backend) (*Server, string) {
	t.Helper()
	s, err := New(cfg, b, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	s.SetReady(true)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, "http://" + ln.Addr().String()
}

type httpResult struct {
	status int
	header http.Header
	body   []byte
}

func do(t testing.TB, method, url, body string, hdr ...string) httpResult {
	t.Helper()
	res, err := tryDo(method, url, body, hdr...)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func tryDo(method, url, body string, hdr ...string) (httpResult, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return httpResult{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return httpResult{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return httpResult{}, err
	}
	return httpResult{resp.StatusCode, resp.Header, b}, nil
}

type errorBody struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

func parseError(t testing.TB, b []byte) errorBody {
	t.Helper()
	var e errorBody
	if err := json.Unmarshal(b, &e); err != nil || e.Error.Message == "" || e.Error.Type == "" {
		t.Fatalf("not an OpenAI error body (%v): %s", err, b)
	}
	return e
}

// sseEvents reads an SSE body: the data of each event, in order. It fails on
// lines that are neither "data: ..." nor blank.
func sseEvents(t testing.TB, r io.Reader) []string {
	t.Helper()
	var out []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	blank := true
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			blank = true
		case strings.HasPrefix(line, "data: "):
			if !blank {
				t.Fatalf("two data lines in one event: %q", line)
			}
			blank = false
			out = append(out, strings.TrimPrefix(line, "data: "))
		default:
			t.Fatalf("unexpected SSE line %q", line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// The response shapes the tests read.
type testUsage struct {
	PromptTokens        int `json:"prompt_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	TotalTokens         int `json:"total_tokens"`
	PromptTokensDetails struct {
		CachedTokens *int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
	CompletionTokensDetails struct {
		Accepted *int `json:"accepted_prediction_tokens"`
		Rejected *int `json:"rejected_prediction_tokens"`
	} `json:"completion_tokens_details"`
}

type testResponse struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []struct {
		Index   int     `json:"index"`
		Text    *string `json:"text"`
		Message *struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"message"`
		Delta *struct {
			Role    *string `json:"role"`
			Content *string `json:"content"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage   *testUsage      `json:"usage"`
	Timings map[string]any  `json:"timings"`
	Error   json.RawMessage `json:"error"`
}

func parseResponse(t testing.TB, b []byte) testResponse {
	t.Helper()
	var r testResponse
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("bad JSON %v: %s", err, b)
	}
	return r
}
