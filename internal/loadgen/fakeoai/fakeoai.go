// Package fakeoai is an in-process OpenAI-style streaming server for the
// load generator's tests: it answers /v1/completions with SSE chunks on a
// known schedule (TTFT, then one chunk every ITL) and known usage, so the
// measured figures can be checked against the schedule. It listens on
// 127.0.0.1 only. Tests only: it models timing, not a language model.
package fakeoai

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Usage styles for speculation counts.
const (
	UsageOpenAI = "openai" // usage.completion_tokens_details.{accepted,rejected}_prediction_tokens
	UsageLlama  = "llama"  // timings.draft_n / draft_n_accepted (llama-server)
	UsagePlain  = ""       // usage without speculation counts
	UsageNone   = "none"   // no usage chunk at all
)

// Options is the server's behaviour. Zero values: no delays, 4 tokens.
type Options struct {
	TTFT, ITL     time.Duration
	Tokens        int    // chunks per response when the request asks for more (max_tokens caps it)
	Usage         string // one of the Usage* styles
	Accepted      int    // per response, with UsageOpenAI/UsageLlama
	Rejected      int
	Status        int     // non-200: every request fails with it
	FailEvery     int     // > 0: every FailEvery-th request gets HTTP 500
	TokensPerWord float64 // /tokenize and usage.prompt_tokens; 0 = 1
	NoTokenize    bool    // /tokenize answers 404
}

// Server is a running fake.
type Server struct {
	*httptest.Server
	opt      Options
	requests atomic.Int64
	mu       sync.Mutex
	bodies   []map[string]any
}

// New starts a fake on 127.0.0.1; Close it when done.
func New(opt Options) *Server {
	if opt.Tokens == 0 {
		opt.Tokens = 4
	}
	if opt.TokensPerWord == 0 {
		opt.TokensPerWord = 1
	}
	s := &Server{opt: opt}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/completions", s.completions)
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `{"object":"list","data":[{"id":"fake-model","object":"model"}]}`)
	})
	mux.HandleFunc("POST /tokenize", func(w http.ResponseWriter, r *http.Request) {
		if opt.NoTokenize {
			http.NotFound(w, r)
			return
		}
		var in struct {
			Content string `json:"content"`
		}
		json.NewDecoder(r.Body).Decode(&in)
		n := int(float64(len(strings.Fields(in.Content)))*opt.TokensPerWord + 0.5)
		toks := make([]int, n)
		json.NewEncoder(w).Encode(map[string]any{"tokens": toks})
	})
	s.Server = httptest.NewServer(mux) // httptest listens on 127.0.0.1
	return s
}

// Requests is the number of completion requests received.
func (s *Server) Requests() int { return int(s.requests.Load()) }

// Bodies are the decoded request bodies received, in arrival order.
func (s *Server) Bodies() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any(nil), s.bodies...)
}

func (s *Server) completions(w http.ResponseWriter, r *http.Request) {
	n := s.requests.Add(1)
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, `{"error":{"message":"bad json"}}`, http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.bodies = append(s.bodies, body)
	s.mu.Unlock()
	o := s.opt
	if o.Status != 0 && o.Status != http.StatusOK {
		http.Error(w, `{"error":{"message":"fake failure"}}`, o.Status)
		return
	}
	if o.FailEvery > 0 && n%int64(o.FailEvery) == 0 {
		http.Error(w, `{"error":{"message":"fake 500"}}`, http.StatusInternalServerError)
		return
	}
	prompt, _ := body["prompt"].(string)
	promptTokens := int(float64(len(strings.Fields(prompt)))*o.TokensPerWord+0.5) + 1 // + BOS
	tokens := o.Tokens
	if mt, ok := body["max_tokens"].(float64); ok && int(mt) < tokens {
		tokens = int(mt)
	}
	stream, _ := body["stream"].(bool)
	if !stream {
		json.NewEncoder(w).Encode(map[string]any{
			"choices": []any{map[string]any{"text": "x", "index": 0, "finish_reason": "length"}},
			"usage":   map[string]any{"prompt_tokens": promptTokens, "completion_tokens": 1},
		})
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	fl := w.(http.Flusher)
	w.WriteHeader(http.StatusOK)
	fl.Flush()
	ctx := r.Context()
	wait := func(d time.Duration) bool {
		if d <= 0 {
			return true
		}
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for i := 0; i < tokens; i++ {
		d := o.ITL
		if i == 0 {
			d = o.TTFT
		}
		if !wait(d) {
			return
		}
		fmt.Fprintf(w, "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"choices\":[{\"text\":\" tok%d\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}]}\n\n", i)
		fl.Flush()
	}
	usage := map[string]any{"prompt_tokens": promptTokens, "completion_tokens": tokens, "total_tokens": promptTokens + tokens}
	final := map[string]any{"id": "cmpl-1", "object": "text_completion", "choices": []any{}}
	switch o.Usage {
	case UsageOpenAI:
		usage["completion_tokens_details"] = map[string]any{"accepted_prediction_tokens": o.Accepted, "rejected_prediction_tokens": o.Rejected}
	case UsageLlama:
		final["timings"] = map[string]any{"predicted_n": tokens, "draft_n": o.Accepted + o.Rejected, "draft_n_accepted": o.Accepted}
	}
	if o.Usage != UsageNone {
		final["usage"] = usage
		b, _ := json.Marshal(final)
		fmt.Fprintf(w, "data: %s\n\n", b)
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
	fl.Flush()
}
