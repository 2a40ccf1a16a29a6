package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Sample is one request's measurement.
type Sample struct {
	Index   int
	Start   time.Duration // send time, from the start of the run
	Err     error         // nil: the request succeeded
	ErrKind string        // on failure: "connect", "http 4xx"-style status, "timeout", "canceled", "stream", "server"

	TTFT    time.Duration   // send → first chunk with text
	Latency time.Duration   // send → end of stream
	ITL     []time.Duration // every gap between consecutive chunks with text

	PromptTokens  int  // from usage; 0 if the server sent none
	OutputTokens  int  // usage.completion_tokens, else the number of text chunks
	UsageReported bool // OutputTokens came from usage
	CachedTokens  int  // usage.prompt_tokens_details.cached_tokens
	DraftReported bool // the server reported speculation counts
	DraftProposed int
	DraftAccepted int
	ContentChunks int
}

// OK reports whether the request succeeded.
func (s *Sample) OK() bool { return s.Err == nil }

// requestBody is what one request sends (field order is the wire order).
type requestBody struct {
	Model           string          `json:"model"`
	Prompt          string          `json:"prompt,omitempty"`
	Messages        []chatMessage   `json:"messages,omitempty"`
	Input           string          `json:"input,omitempty"` // /v1/responses
	MaxTokens       int             `json:"max_tokens,omitempty"`
	MaxOutputTokens int             `json:"max_output_tokens,omitempty"` // /v1/responses
	Temperature     float64         `json:"temperature"`
	Stream          bool            `json:"stream"`
	StreamOptions   map[string]bool `json:"stream_options,omitempty"`
	IgnoreEOS       bool            `json:"ignore_eos,omitempty"`
	CachePrompt     bool            `json:"cache_prompt"`
	Speculative     *Speculative    `json:"speculative,omitempty"`
}

type chatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// streamChunk is the part of an SSE event that is measured. It covers
// /v1/completions (text), /v1/chat/completions (delta.content), OpenAI usage
// and llama.cpp timings, and /v1/responses' typed events (type, delta, and
// the response with its usage at the end).
type streamChunk struct {
	Type     string `json:"type"`
	Delta    string `json:"delta"`
	Response *struct {
		Usage *struct {
			InputTokens        int `json:"input_tokens"`
			OutputTokens       int `json:"output_tokens"`
			InputTokensDetails *struct {
				CachedTokens int `json:"cached_tokens"`
			} `json:"input_tokens_details"`
		} `json:"usage"`
		Timings *timingsJSON `json:"timings"`
	} `json:"response"`
	Choices []struct {
		Text  string `json:"text"`
		Delta struct {
			Content string `json:"content"`
		} `json:"delta"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens        int `json:"prompt_tokens"`
		CompletionTokens    int `json:"completion_tokens"`
		PromptTokensDetails *struct {
			CachedTokens int `json:"cached_tokens"`
		} `json:"prompt_tokens_details"`
		CompletionTokensDetails *struct {
			Accepted *int `json:"accepted_prediction_tokens"`
			Rejected *int `json:"rejected_prediction_tokens"`
		} `json:"completion_tokens_details"`
	} `json:"usage"`
	Timings *timingsJSON    `json:"timings"`
	Error   json.RawMessage `json:"error"`
}

// timingsJSON is the part of llama.cpp's timings that is read.
type timingsJSON struct {
	DraftN         *int `json:"draft_n"`
	DraftNAccepted *int `json:"draft_n_accepted"`
}

// buildBody encodes one request for the configured endpoint.
func buildBody(cfg *Config, p Prompt) ([]byte, error) {
	maxTok := p.MaxTokens
	if maxTok == 0 {
		maxTok = cfg.OutputTokens
	}
	b := requestBody{
		Model:         cfg.Model,
		MaxTokens:     maxTok,
		Temperature:   cfg.Temperature,
		Stream:        true,
		StreamOptions: map[string]bool{"include_usage": true},
		IgnoreEOS:     cfg.IgnoreEOS,
		CachePrompt:   cfg.PrefixCache,
		Speculative:   cfg.Speculative,
	}
	switch {
	case strings.HasSuffix(cfg.Endpoint, "/chat/completions"):
		b.Messages = []chatMessage{{Role: "user", Content: p.Text}}
	case strings.HasSuffix(cfg.Endpoint, "/responses"):
		// The Responses API names its fields its own way and always ends
		// its stream with the whole response (usage included).
		b.Input, b.MaxOutputTokens, b.MaxTokens, b.StreamOptions = p.Text, maxTok, 0, nil
	default:
		b.Prompt = p.Text
	}
	out, err := json.Marshal(b)
	if err != nil || len(cfg.Extra) == 0 {
		return out, err
	}
	extra := bytes.TrimSpace(cfg.Extra)
	if len(extra) <= 2 { // {}
		return out, nil
	}
	// {...base...} + {extra} = {...base..., extra}
	return append(append(out[:len(out)-1], ','), extra[1:]...), nil
}

// doRequest sends one streaming request and measures it. t0 is the run's
// start, for Sample.Start.
func doRequest(ctx context.Context, cfg *Config, body []byte, t0 time.Time) Sample {
	var s Sample
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(cfg.URL, "/")+cfg.Endpoint, bytes.NewReader(body))
	if err != nil {
		s.Err, s.ErrKind = err, "request"
		return s
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	// Marks the POST replayable, so net/http resends it on a fresh
	// connection when the server closed the pooled one just before reuse
	// (cpp-httplib caps requests per connection) instead of failing it.
	req.Header["X-Idempotency-Key"] = nil

	start := time.Now()
	s.Start = start.Sub(t0)
	resp, err := cfg.Client.Do(req)
	if err != nil {
		s.Err, s.ErrKind = err, classify(ctx, err)
		return s
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		s.Err = fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(msg))
		s.ErrKind = fmt.Sprintf("http %d", resp.StatusCode)
		return s
	}
	if err := readStream(resp.Body, start, &s); err != nil {
		s.Err = err
		if s.ErrKind == "" {
			s.ErrKind = classify(ctx, err)
		}
		return s
	}
	if s.ContentChunks == 0 && s.OutputTokens == 0 {
		s.Err, s.ErrKind = errors.New("stream ended without any output"), "stream"
	}
	return s
}

// readStream reads SSE events until [DONE] or EOF, stamping each line as it
// is read: several events in one TCP read get the same time, which is what
// a client sees.
func readStream(r io.Reader, start time.Time, s *Sample) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var line []byte
	var last time.Time
	var ch streamChunk
	sawDone := false
	for {
		var err error
		line, err = readLine(br, line[:0])
		now := time.Now()
		if err != nil && len(line) == 0 {
			if err == io.EOF {
				break
			}
			return err
		}
		payload, ok := bytes.CutPrefix(line, []byte("data:"))
		if !ok {
			continue // comments, event:, id:, blank separators
		}
		payload = bytes.TrimSpace(payload)
		if bytes.Equal(payload, []byte("[DONE]")) {
			sawDone = true
			break
		}
		ch = streamChunk{}
		if err := json.Unmarshal(payload, &ch); err != nil {
			s.ErrKind = "stream"
			return fmt.Errorf("bad SSE event %.80q: %w", payload, err)
		}
		if len(ch.Error) > 0 && string(ch.Error) != "null" {
			s.ErrKind = "server"
			return fmt.Errorf("server error in stream: %s", ch.Error)
		}
		if ch.Type == "error" || ch.Type == "response.failed" {
			s.ErrKind = "server"
			return fmt.Errorf("server error in stream: %.200s", payload)
		}
		hasText := ch.Type == "response.output_text.delta" && ch.Delta != ""
		for _, c := range ch.Choices {
			if c.Text != "" || c.Delta.Content != "" {
				hasText = true
			}
		}
		if hasText {
			if s.ContentChunks == 0 {
				s.TTFT = now.Sub(start)
			} else {
				s.ITL = append(s.ITL, now.Sub(last))
			}
			last = now
			s.ContentChunks++
		}
		if u := ch.Usage; u != nil {
			s.UsageReported = true
			s.PromptTokens = u.PromptTokens
			s.OutputTokens = u.CompletionTokens
			if u.PromptTokensDetails != nil {
				s.CachedTokens = u.PromptTokensDetails.CachedTokens
			}
			if d := u.CompletionTokensDetails; d != nil && (d.Accepted != nil || d.Rejected != nil) {
				s.DraftReported = true
				a, rj := deref(d.Accepted), deref(d.Rejected)
				s.DraftAccepted, s.DraftProposed = a, a+rj
			}
		}
		if r := ch.Response; r != nil && r.Usage != nil && (ch.Type == "response.completed" || ch.Type == "response.incomplete") {
			s.UsageReported = true
			s.PromptTokens, s.OutputTokens = r.Usage.InputTokens, r.Usage.OutputTokens
			if r.Usage.InputTokensDetails != nil {
				s.CachedTokens = r.Usage.InputTokensDetails.CachedTokens
			}
			ch.Timings = r.Timings
		}
		// llama.cpp puts timings on the last chunk; OpenAI-style usage wins
		// when both are present.
		if t := ch.Timings; t != nil && t.DraftN != nil && !s.DraftReported {
			s.DraftReported = true
			s.DraftProposed, s.DraftAccepted = *t.DraftN, deref(t.DraftNAccepted)
		}
		if err == io.EOF {
			break
		}
	}
	s.Latency = time.Since(start)
	if !s.UsageReported {
		s.OutputTokens = s.ContentChunks
	}
	if !sawDone && !s.UsageReported {
		s.ErrKind = "stream"
		return errors.New("stream ended before [DONE]")
	}
	return nil
}

func deref(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}

// readLine appends one line (without the line break) to buf.
func readLine(br *bufio.Reader, buf []byte) ([]byte, error) {
	for {
		part, err := br.ReadSlice('\n')
		buf = append(buf, part...)
		if err == bufio.ErrBufferFull {
			continue
		}
		buf = bytes.TrimRight(buf, "\r\n")
		return buf, err
	}
}

// classify names a transport failure for the error table.
func classify(ctx context.Context, err error) string {
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled) || errors.Is(ctx.Err(), context.Canceled):
		return "canceled"
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return "connect"
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return "stream"
	}
	return "transport"
}
