package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Server is the HTTP API. See doc.go for the order of calls.
type Server struct {
	cfg     Config
	b       Backend
	log     *slog.Logger
	srv     *fasthttp.Server
	metrics *metrics
	keys    [][sha256.Size]byte // hashes of cfg.APIKeys: compared in constant time

	ready    atomic.Bool
	draining atomic.Bool
	inFlight atomic.Int64 // generation requests not yet finished (streams included)

	// baseCtx is the parent of every request's context; cancelAll ends them
	// when Shutdown's grace runs out.
	baseCtx   context.Context
	cancelAll context.CancelFunc

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{} // open connections, closed at the end of Shutdown

	started int64 // unix seconds, the model's "created"
}

// New checks cfg (zero fields take defaults) and builds a server that is not
// ready: call SetReady(true) once the model is loaded.
func New(cfg Config, b Backend, logger *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if b == nil {
		return nil, errors.New("server: nil Backend")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	s := &Server{cfg: cfg, b: b, log: logger, started: time.Now().Unix(), conns: map[net.Conn]struct{}{}}
	for _, k := range cfg.APIKeys {
		s.keys = append(s.keys, sha256.Sum256([]byte(k)))
	}
	s.baseCtx, s.cancelAll = context.WithCancel(context.Background())
	s.metrics = newMetrics(b)
	s.srv = &fasthttp.Server{
		Handler:            s.handle,
		ErrorHandler:       s.handleReadError,
		Name:               "specd",
		MaxRequestBodySize: cfg.MaxBodyBytes,
		ReadTimeout:        readTimeout,
		IdleTimeout:        idleTimeout,
		CloseOnShutdown:    true,
		Logger:             fasthttpLogger{logger},
		ConnState:          s.connState,
	}
	return s, nil
}

// Timeouts of the connection, not of generation (that is RequestTimeout):
// a slow client may take readTimeout to send its request; a keep-alive
// connection may sit idle for idleTimeout.
const (
	readTimeout = time.Minute
	idleTimeout = 2 * time.Minute
)

type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	f.l.Warn("fasthttp", "msg", fmt.Sprintf(format, args...))
}

// Serve answers on ln until Shutdown; it returns nil after Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	err := s.srv.Serve(ln)
	if s.draining.Load() {
		return nil
	}
	return err
}

// ListenAndServe listens on Config.Host:Port and serves.
func (s *Server) ListenAndServe() error {
	ln, err := net.Listen("tcp", net.JoinHostPort(s.cfg.Host, strconv.Itoa(s.cfg.Port)))
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	return s.Serve(ln)
}

// Addr is the address served on (the listener's once Serve has started).
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return s.ln.Addr().String()
	}
	return net.JoinHostPort(s.cfg.Host, strconv.Itoa(s.cfg.Port))
}

// SetReady switches /health and the generation endpoints between 503
// (loading) and serving.
func (s *Server) SetReady(ready bool) { s.ready.Store(ready) }

// Shutdown stops accepting connections, answers new requests on open ones
// with 503, lets in-flight requests finish for up to Config.ShutdownGrace
// (or until ctx ends), then cancels them: streams end with an error event,
// waiting non-streamed requests get a 503. It returns once every request
// has ended, or ctx's error if ctx ends first.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	grace, cancel := context.WithTimeout(ctx, s.cfg.ShutdownGrace)
	defer cancel()
	err := s.srv.ShutdownWithContext(grace)
	defer s.closeConns()
	if err == nil && s.inFlight.Load() == 0 {
		return nil
	}
	if ctx.Err() == nil {
		// Let in-flight requests run out the grace on connections fasthttp
		// no longer waits for, then end them.
		for s.inFlight.Load() > 0 && grace.Err() == nil {
			sleep(grace, 10*time.Millisecond)
		}
	}
	s.cancelAll()
	for s.inFlight.Load() > 0 {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		sleep(ctx, 5*time.Millisecond)
	}
	return nil
}

// connState tracks open connections. fasthttp's Shutdown stops waiting at
// its deadline and then lets surviving keep-alive connections serve again;
// Shutdown closes them so that nothing is served after it returns.
func (s *Server) connState(c net.Conn, st fasthttp.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch st {
	case fasthttp.StateNew:
		s.conns[c] = struct{}{}
	case fasthttp.StateClosed, fasthttp.StateHijacked:
		delete(s.conns, c)
	}
}

func (s *Server) closeConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		_ = c.Close()
		delete(s.conns, c)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Endpoint labels of the requests counter; unknown paths share "other" so
// that scanners cannot grow the label set.
const (
	epCompletions   = "completions"
	epChat          = "chat_completions"
	epResponses     = "responses"
	epModels        = "models"
	epHealth        = "health"
	epMetrics       = "metrics"
	epTokenize      = "tokenize"
	epDetokenize    = "detokenize"
	epApplyTemplate = "apply_template"
	epProps         = "props"
	epOther         = "other"
)

type route struct {
	endpoint string
	method   string
	auth     bool
	h        fasthttp.RequestHandler
}

func (s *Server) lookup(path string) (route, bool) {
	switch path {
	case "/v1/completions":
		return route{epCompletions, fasthttp.MethodPost, true, s.handleCompletions}, true
	case "/v1/chat/completions":
		return route{epChat, fasthttp.MethodPost, true, s.handleChat}, true
	case "/v1/responses":
		return route{epResponses, fasthttp.MethodPost, true, s.handleResponses}, true
	case "/v1/models":
		return route{epModels, fasthttp.MethodGet, true, s.handleModels}, true
	case "/health":
		return route{epHealth, fasthttp.MethodGet, false, s.handleHealth}, true
	case "/metrics":
		return route{epMetrics, fasthttp.MethodGet, false, s.metrics.handler}, true
	case "/tokenize":
		return route{epTokenize, fasthttp.MethodPost, true, s.handleTokenize}, true
	case "/detokenize":
		return route{epDetokenize, fasthttp.MethodPost, true, s.handleDetokenize}, true
	case "/apply-template":
		return route{epApplyTemplate, fasthttp.MethodPost, true, s.handleApplyTemplate}, true
	case "/props":
		return route{epProps, fasthttp.MethodGet, true, s.handleProps}, true
	}
	if strings.HasPrefix(path, "/v1/models/") {
		return route{epModels, fasthttp.MethodGet, true, s.handleModel}, true
	}
	return route{}, false
}

func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	endpoint := epOther
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("panic serving request", "path", string(ctx.Path()), "panic", r, "stack", string(debug.Stack()))
			writeError(ctx, &apiError{Status: fasthttp.StatusInternalServerError, Type: typeServer,
				Message: "internal server error"})
		}
		s.metrics.requests.WithLabelValues(endpoint, strconv.Itoa(ctx.Response.StatusCode())).Inc()
	}()
	if s.draining.Load() {
		ctx.SetConnectionClose()
	}
	rt, ok := s.lookup(string(ctx.Path()))
	if !ok {
		e := &apiError{Status: fasthttp.StatusNotFound, Type: typeInvalidRequest, Code: "unknown_url",
			Message: fmt.Sprintf("unknown path %s %q", ctx.Method(), ctx.Path())}
		writeError(ctx, e)
		return
	}
	endpoint = rt.endpoint
	method := string(ctx.Method())
	if method != rt.method && !(rt.method == fasthttp.MethodGet && method == fasthttp.MethodHead) {
		writeError(ctx, &apiError{Status: fasthttp.StatusMethodNotAllowed, Type: typeInvalidRequest,
			Code: "method_not_allowed", Message: fmt.Sprintf("%s is not allowed on %s; use %s", method, ctx.Path(), rt.method)})
		ctx.Response.Header.Set("Allow", rt.method)
		return
	}
	if rt.auth && !s.authorized(ctx) {
		writeError(ctx, &apiError{Status: fasthttp.StatusUnauthorized, Type: typeAuth, Code: "invalid_api_key",
			Message: "missing or invalid API key: send 'Authorization: Bearer <key>'"})
		return
	}
	rt.h(ctx)
}

// authorized checks the bearer token against every key, in constant time
// per key (hashes make lengths equal) and without stopping at a match.
func (s *Server) authorized(ctx *fasthttp.RequestCtx) bool {
	if len(s.keys) == 0 {
		return true
	}
	h := ctx.Request.Header.Peek("Authorization")
	const prefix = "bearer "
	if len(h) < len(prefix) || !strings.EqualFold(string(h[:len(prefix)]), prefix) {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(string(h[len(prefix):]))))
	ok := 0
	for i := range s.keys {
		ok |= subtle.ConstantTimeCompare(got[:], s.keys[i][:])
	}
	return ok == 1
}

// handleReadError answers requests fasthttp could not read.
func (s *Server) handleReadError(ctx *fasthttp.RequestCtx, err error) {
	e := &apiError{Status: fasthttp.StatusBadRequest, Type: typeInvalidRequest, Message: "malformed HTTP request: " + err.Error()}
	var te interface{ Timeout() bool }
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		e = &apiError{Status: fasthttp.StatusRequestEntityTooLarge, Type: typeInvalidRequest, Code: "request_too_large",
			Message: fmt.Sprintf("request body exceeds %d bytes", s.cfg.MaxBodyBytes)}
	case errors.As(err, &te) && te.Timeout():
		e = &apiError{Status: fasthttp.StatusRequestTimeout, Type: typeInvalidRequest, Message: "timed out reading the request"}
	}
	writeError(ctx, e)
	ctx.SetConnectionClose()
	s.metrics.requests.WithLabelValues(epOther, strconv.Itoa(e.Status)).Inc()
}

func (s *Server) unavailable() *apiError {
	switch {
	case s.draining.Load():
		return &apiError{Status: fasthttp.StatusServiceUnavailable, Type: typeUnavailable, Code: "shutting_down",
			Message: "the server is shutting down"}
	case !s.ready.Load():
		return &apiError{Status: fasthttp.StatusServiceUnavailable, Type: typeUnavailable, Code: "loading",
			Message: "the model is loading"}
	}
	return nil
}

func (s *Server) handleHealth(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType("application/json")
	if e := s.unavailable(); e != nil {
		ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
		status := "loading"
		if e.Code == "shutting_down" {
			status = "shutting_down"
		}
		ctx.SetBodyString(`{"status":"` + status + `"}`)
		return
	}
	ctx.SetBodyString(`{"status":"ok"}`)
}

type modelJSON struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

func (s *Server) model() modelJSON {
	return modelJSON{ID: s.b.ModelID(), Object: "model", Created: s.started, OwnedBy: "specd"}
}

func (s *Server) handleModels(ctx *fasthttp.RequestCtx) {
	writeJSON(ctx, struct {
		Object string      `json:"object"`
		Data   []modelJSON `json:"data"`
	}{"list", []modelJSON{s.model()}})
}

func (s *Server) handleModel(ctx *fasthttp.RequestCtx) {
	id := strings.TrimPrefix(string(ctx.Path()), "/v1/models/")
	if id != s.b.ModelID() {
		writeError(ctx, modelNotFound(id))
		return
	}
	writeJSON(ctx, s.model())
}

// handleTokenize is llama-server's POST /tokenize: {"content": text,
// "add_special": bool (default false)} → {"tokens": [ids]}. Special-token
// text in content is parsed, as in prompts. Load generators use it to size
// prompts in tokens (specd bench's calibration).
func (s *Server) handleTokenize(ctx *fasthttp.RequestCtx) {
	var req struct {
		Content    *string `json:"content"`
		AddSpecial bool    `json:"add_special"`
	}
	if err := json.Unmarshal(ctx.PostBody(), &req); err != nil {
		writeError(ctx, badRequest("", "invalid JSON body: %v", err))
		return
	}
	if req.Content == nil {
		writeError(ctx, badRequest("content", "missing required field content (the text to tokenize)"))
		return
	}
	toks, err := s.b.Tokenize(*req.Content, req.AddSpecial)
	if err != nil {
		writeError(ctx, badRequest("content", "could not tokenize: %v", err))
		return
	}
	if toks == nil {
		toks = []int32{}
	}
	writeJSON(ctx, struct {
		Tokens []int32 `json:"tokens"`
	}{toks})
}

// handleApplyTemplate is llama-server's POST /apply-template: a chat
// request's messages (and tools, which add their description) →
// {"prompt": text}, the prompt a chat completion would send the model.
func (s *Server) handleApplyTemplate(ctx *fasthttp.RequestCtx) {
	g, e := decode(ctx.PostBody(), true, limits{maxN: s.cfg.MaxN, vocab: s.b.VocabSize()})
	if e != nil {
		writeError(ctx, e)
		return
	}
	text, e := s.chatPrompt(g)
	if e != nil {
		writeError(ctx, e)
		return
	}
	writeJSON(ctx, struct {
		Prompt string `json:"prompt"`
	}{text})
}

// handleProps is llama-server's GET /props, which llama.cpp's web UI and
// other clients read for the context size and the model: the per-sequence
// context, the slots, the chat template and the request defaults (OpenAI's,
// not llama.cpp's).
func (s *Server) handleProps(ctx *fasthttp.RequestCtx) {
	var p Props
	if pr, ok := s.b.(Propser); ok {
		p = pr.Props()
	}
	type params struct {
		NPredict    int     `json:"n_predict"`
		Temperature float64 `json:"temperature"`
		TopK        int     `json:"top_k"`
		TopP        float64 `json:"top_p"`
		MinP        float64 `json:"min_p"`
		Seed        int     `json:"seed"`
		Stream      bool    `json:"stream"`
	}
	writeJSON(ctx, struct {
		Defaults struct {
			NCtx   int    `json:"n_ctx"`
			Params params `json:"params"`
		} `json:"default_generation_settings"`
		TotalSlots   int             `json:"total_slots"`
		ModelAlias   string          `json:"model_alias"`
		ModelPath    string          `json:"model_path"`
		DraftPath    string          `json:"draft_path,omitempty"`
		ChatTemplate string          `json:"chat_template"`
		Modalities   map[string]bool `json:"modalities"`
		BuildInfo    string          `json:"build_info"`
	}{
		Defaults: struct {
			NCtx   int    `json:"n_ctx"`
			Params params `json:"params"`
		}{s.b.ContextSize(), params{NPredict: s.cfg.DefaultMaxTokens, Temperature: defaultTemperature, TopP: defaultTopP, Seed: -1}},
		TotalSlots: p.Slots, ModelAlias: s.b.ModelID(), ModelPath: p.ModelPath, DraftPath: p.DraftPath,
		ChatTemplate: p.ChatTemplate, Modalities: map[string]bool{"vision": false, "audio": false}, BuildInfo: "specd",
	})
}

// handleDetokenize is llama-server's POST /detokenize: {"tokens": [ids]}
// → {"content": text}, the tokens' pieces joined (control tokens render as
// nothing).
func (s *Server) handleDetokenize(ctx *fasthttp.RequestCtx) {
	var req struct {
		Tokens *[]int64 `json:"tokens"`
	}
	if err := json.Unmarshal(ctx.PostBody(), &req); err != nil {
		writeError(ctx, badRequest("", "invalid JSON body: %v", err))
		return
	}
	if req.Tokens == nil {
		writeError(ctx, badRequest("tokens", "missing required field tokens (an array of token ids)"))
		return
	}
	var b strings.Builder
	for i, t := range *req.Tokens {
		if t < 0 || t >= int64(s.b.VocabSize()) {
			writeError(ctx, invalidValue("tokens", "token %d at index %d is outside the vocabulary (0..%d)", t, i, s.b.VocabSize()-1))
			return
		}
		b.WriteString(s.b.TokenPiece(int32(t)))
	}
	writeJSON(ctx, struct {
		Content string `json:"content"`
	}{b.String()})
}

func modelNotFound(id string) *apiError {
	return &apiError{Status: fasthttp.StatusNotFound, Type: typeInvalidRequest, Param: "model", Code: "model_not_found",
		Message: fmt.Sprintf("the model %q does not exist; this server serves one model (see GET /v1/models)", id)}
}

func writeJSON(ctx *fasthttp.RequestCtx, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // our own types: a bug
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}
