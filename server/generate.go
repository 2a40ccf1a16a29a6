package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/valyala/fasthttp"

	"specd/scheduler"
)

// livenessEvery is how often a waiting request peeks at its client's socket.
// A disconnected client's request is cancelled within about this long even
// when no token is due to be written.
const livenessEvery = 100 * time.Millisecond

func (s *Server) handleCompletions(ctx *fasthttp.RequestCtx) {
	s.generate(ctx, ctx.PostBody(), false, nil)
}
func (s *Server) handleChat(ctx *fasthttp.RequestCtx) { s.generate(ctx, ctx.PostBody(), true, nil) }

// generate serves the generation endpoints: decode and validate, tokenize,
// submit every choice, then stream or collect the events. resp is set for
// /v1/responses, whose body was translated to a chat body.
func (s *Server) generate(ctx *fasthttp.RequestCtx, body []byte, chat bool, resp *respMeta) {
	arrived := time.Now()
	if e := s.unavailable(); e != nil {
		writeError(ctx, e)
		return
	}
	g, e := decode(body, chat, limits{maxN: s.cfg.MaxN, vocab: s.b.VocabSize()})
	if e != nil {
		if resp != nil {
			e = resp.rename(e)
		}
		writeError(ctx, e)
		return
	}
	if g.model != "" && g.model != s.b.ModelID() {
		writeError(ctx, modelNotFound(g.model))
		return
	}
	reqs, promptLens, e := s.buildRequests(g)
	if e != nil {
		writeError(ctx, e)
		return
	}

	rctx, cancel := context.WithTimeout(s.baseCtx, s.cfg.RequestTimeout)
	chans := make([]<-chan scheduler.Event, 0, len(reqs))
	for _, r := range reqs {
		ch, err := s.b.Submit(rctx, r)
		if err != nil {
			cancel() // the choices already queued end; their events are drained below
			for _, c := range chans {
				go drain(c)
			}
			writeError(ctx, submitError(err))
			return
		}
		chans = append(chans, ch)
	}

	prefix, object := "cmpl-", "text_completion"
	if chat {
		prefix, object = "chatcmpl-", "chat.completion"
	}
	r := &run{
		s: s, g: g, ctx: rctx, cancel: cancel, arrived: arrived,
		id: prefix + uuid.NewString(), object: object, created: arrived.Unix(), model: s.b.ModelID(),
		choices: make([]choiceState, len(reqs)), promptLens: promptLens,
		alive: peerAlive(ctx.Conn()),
	}
	r.endpoint = epCompletions
	if chat {
		r.endpoint = epChat
	}
	if resp != nil {
		r.endpoint, r.resp, r.id, r.object = epResponses, resp, "resp_"+strings.ReplaceAll(uuid.NewString(), "-", ""), "response"
	}
	if g.echo {
		for i := range r.choices {
			r.choices[i].echo = s.promptText(g, i/g.n, reqs[i].Prompt)
			r.choices[i].echoTok = reqs[i].Prompt[0]
		}
	}
	r.events = fanIn(rctx, chans)
	if r.alive != nil {
		// fasthttp's read deadline would make the liveness peek fail after
		// readTimeout; fasthttp re-arms it before reading the next request.
		_ = ctx.SetReadDeadline(time.Time{})
	}
	s.inFlight.Add(1)
	s.metrics.inFlight.Inc()

	if !g.stream {
		defer r.finish()
		collect := r.collect
		if resp != nil {
			collect = r.collectResponse
		}
		body, e := collect()
		if e != nil {
			writeError(ctx, e)
			return
		}
		ctx.SetContentType("application/json")
		ctx.SetBody(body)
		s.metrics.e2e.WithLabelValues(r.endpoint).Observe(time.Since(arrived).Seconds())
		return
	}
	ctx.SetContentType("text/event-stream")
	ctx.Response.Header.Set("Cache-Control", "no-cache")
	ctx.Response.Header.Set("X-Accel-Buffering", "no")
	// fasthttp runs the writer in a goroutine of its own, at once: from here
	// on only r is used, never ctx.
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		defer r.finish()
		defer func() {
			if p := recover(); p != nil {
				s.log.Error("panic streaming response", "id", r.id, "panic", p, "stack", string(debug.Stack()))
			}
		}()
		if resp != nil {
			r.streamResponse(w)
			return
		}
		r.stream(w)
	})
}

func drain(ch <-chan scheduler.Event) {
	for range ch {
	}
}

func submitError(err error) *apiError {
	switch {
	case errors.Is(err, scheduler.ErrQueueFull):
		return &apiError{Status: fasthttp.StatusTooManyRequests, Type: typeRateLimit, Code: "queue_full",
			Message: "the server is busy (waiting queue full); retry later"}
	case errors.Is(err, scheduler.ErrClosed):
		return &apiError{Status: fasthttp.StatusServiceUnavailable, Type: typeUnavailable, Code: "shutting_down",
			Message: "the server is shutting down"}
	case errors.Is(err, scheduler.ErrPromptTooLong):
		e := badRequest("prompt", "%v", err)
		e.Code = "context_length_exceeded"
		return e
	case errors.Is(err, scheduler.ErrEmptyPrompt):
		e := badRequest("prompt", "%v", err)
		e.Code = "empty_prompt"
		return e
	case errors.Is(err, scheduler.ErrBadRequest):
		return badRequest("", "%v", err)
	}
	return &apiError{Status: fasthttp.StatusInternalServerError, Type: typeServer, Message: "could not queue the request: " + err.Error()}
}

// buildRequests tokenizes the prompts and makes n scheduler requests per
// prompt, in choice order (choice index = prompt index * n + j).
// chatPrompt renders a chat request's messages (the tools' description
// included) with the model's chat template.
func (s *Server) chatPrompt(g *genRequest) (string, *apiError) {
	text, err := s.b.ApplyChatTemplate(g.messages)
	if err != nil {
		e := badRequest("messages", "could not apply the model's chat template: %v", err)
		e.Code = "chat_template_error"
		return "", e
	}
	return text, nil
}

func (s *Server) buildRequests(g *genRequest) ([]scheduler.Request, []int, *apiError) {
	var prompts [][]int32
	if g.chat {
		text, e := s.chatPrompt(g)
		if e != nil {
			return nil, nil, e
		}
		toks, err := s.b.Tokenize(text, true)
		if err != nil {
			return nil, nil, badRequest("messages", "could not tokenize the chat prompt: %v", err)
		}
		prompts = [][]int32{toks}
	} else {
		for _, p := range g.prompts {
			if p.isTokens {
				prompts = append(prompts, p.tokens)
				continue
			}
			toks, err := s.b.Tokenize(p.text, true)
			if err != nil {
				return nil, nil, badRequest("prompt", "could not tokenize the prompt: %v", err)
			}
			prompts = append(prompts, toks)
		}
	}
	var pred []int32
	if g.hasPrediction {
		var err error
		if pred, err = s.b.Tokenize(g.prediction, false); err != nil {
			return nil, nil, badRequest("prediction", "could not tokenize the prediction: %v", err)
		}
	}

	ctxSize := s.b.ContextSize()
	param := "prompt"
	if g.chat {
		param = "messages"
	}
	reqs := make([]scheduler.Request, 0, len(prompts)*g.n)
	lens := make([]int, len(prompts))
	for i, p := range prompts {
		lens[i] = len(p)
		if len(p) == 0 {
			e := badRequest(param, "the prompt is empty after tokenization")
			e.Code = "empty_prompt"
			return nil, nil, e
		}
		room := ctxSize - len(p)
		maxTok := g.maxTokens
		switch {
		case g.zeroMax: // echo, scoring the prompt only
			if room < 0 {
				return nil, nil, contextExceeded(param, ctxSize, len(p), 0)
			}
		case maxTok == 0 && room <= 0:
			return nil, nil, contextExceeded(param, ctxSize, len(p), 1)
		case maxTok == 0:
			maxTok = room
			if !g.untilFull {
				maxTok = min(room, s.cfg.DefaultMaxTokens)
			}
		case len(p)+maxTok > ctxSize:
			return nil, nil, contextExceeded(g.maxTokensParam, ctxSize, len(p), maxTok)
		}
		if g.maxTokens == 0 && !g.zeroMax && g.minTokens > maxTok {
			maxTok = min(room, g.minTokens) // the default must not undercut min_tokens
		}
		for j := range g.n {
			r := scheduler.Request{
				// Each choice gets its own copies: the scheduler may append
				// to a sequence's tokens.
				Prompt:        append([]int32(nil), p...),
				MaxTokens:     maxTok,
				Sampling:      g.sampling,
				Stop:          g.stop,
				StopTokens:    g.stopTokens,
				MinTokens:     min(g.minTokens, maxTok),
				KeepStop:      g.keepStop,
				SpecialText:   g.specialText,
				IgnoreEOS:     g.ignoreEOS,
				NoPrefixCache: g.noCache,
				Speculative:   g.speculative,
				Logprobs:      g.logprobs,
				TopLogprobs:   g.topLogprobs,
				LogitBias:     g.logitBias,
				Grammar:       g.grammar,
				// echo with logprobs scores the prompt too (max_tokens 0:
				// only the prompt)
				PromptLogprobs: g.echo && (g.logprobs || g.zeroMax),
			}
			if pred != nil {
				r.Prediction = append([]int32(nil), pred...)
			}
			if g.seedGiven {
				r.Sampling.Seed += uint64(j) // choices differ, reproducibly
			} else {
				r.Sampling.Seed = rand.Uint64()
			}
			reqs = append(reqs, r)
		}
	}
	return reqs, lens, nil
}

func contextExceeded(param string, ctxSize, prompt, completion int) *apiError {
	e := badRequest(param, "this model's maximum context length is %d tokens; you requested %d tokens (%d in the prompt, %d for the completion)",
		ctxSize, prompt+completion, prompt, completion)
	e.Code = "context_length_exceeded"
	return e
}

// errNoResult is a backend that closed a channel without a Done event.
var errNoResult = errors.New("the scheduler ended a sequence without a result")

// choiceEvent is an event of choice idx.
type choiceEvent struct {
	idx int
	ev  scheduler.Event
}

// fanIn merges the choices' channels. When ctx ends the forwarders stop
// forwarding and drain their channels (the scheduler closes each after its
// Done event), so no scheduler send ever blocks on a gone reader.
func fanIn(ctx context.Context, chans []<-chan scheduler.Event) <-chan choiceEvent {
	out := make(chan choiceEvent, 4*len(chans))
	var wg sync.WaitGroup
	for i, ch := range chans {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ev := range ch {
				select {
				case out <- choiceEvent{i, ev}:
				case <-ctx.Done():
					drain(ch)
					return
				}
			}
		}()
	}
	go func() {
		wg.Wait()
		close(out)
	}()
	return out
}

// run is one generation request being served.
type run struct {
	s        *Server
	g        *genRequest
	ctx      context.Context
	cancel   context.CancelFunc
	arrived  time.Time
	endpoint string

	id, object, model string
	created           int64

	events     <-chan choiceEvent
	alive      func() bool
	tick       *time.Ticker
	choices    []choiceState
	promptLens []int
	finished   bool
	resp       *respMeta // /v1/responses
}

type choiceState struct {
	text   strings.Builder // non-streamed only
	first  time.Time       // first token
	done   bool
	finish string
	usage  scheduler.Usage
	// Streamed with StreamInterval > 1: text not sent yet, the tokens
	// behind it, and whether the first chunk has gone out.
	pend   []byte
	pendN  int
	pendLP []scheduler.Logprob
	sent   bool
	// Logprobs: every token's (non-streamed), and completions' text_offset
	// of the next token.
	lps    []scheduler.Logprob
	offset int
	// Streamed with tools: an answer that starts with "{" (a call) is held
	// back whole; plain once it is known not to be one.
	hold   []byte
	holdLP []scheduler.Logprob
	plain  bool
	// echo: the prompt's text and first token, its logprobs as they come
	// (plp), and whether the streamed prompt went out.
	echo    string
	echoTok int32
	plp     []scheduler.Logprob
	echoed  bool
}

// end says why waiting for the next event stopped.
type end int

const (
	endNone         end = iota // an event arrived
	endDone                    // every choice is done
	endDisconnected            // the client went away
	endTimeout                 // RequestTimeout
	endShutdown                // Shutdown's grace ran out
)

func (r *run) next() (choiceEvent, end) {
	var tick <-chan time.Time
	if r.alive != nil {
		if r.tick == nil {
			r.tick = time.NewTicker(livenessEvery)
		}
		tick = r.tick.C
	}
	for {
		select {
		case ce, ok := <-r.events:
			if !ok {
				// fanIn also closes when ctx ends (dropping Done events):
				// that is not a normal end.
				if r.ctx.Err() != nil && !r.allDone() {
					return ce, r.ctxEnd()
				}
				return ce, endDone
			}
			return ce, endNone
		case <-r.ctx.Done():
			return choiceEvent{}, r.ctxEnd()
		case <-tick:
			if !r.alive() {
				return choiceEvent{}, endDisconnected
			}
		}
	}
}

// advance waits for the next event of a stream and records it (apply).
// how is endNone with an event, endDone when every choice is done, and
// endDisconnected when the client left (handled: nothing more to send); e,
// when not nil, is the failure that ends the stream.
func (r *run) advance() (choiceEvent, end, *apiError) {
	ce, how := r.next()
	switch how {
	case endDone:
		if !r.allDone() {
			return ce, how, r.failure(endNone, errNoResult)
		}
		return ce, how, nil
	case endDisconnected:
		r.disconnected()
		return ce, how, nil
	case endNone:
		if err := r.apply(ce); err != nil {
			return ce, how, r.failure(endNone, err)
		}
		return ce, how, nil
	}
	return ce, how, r.failure(how, nil)
}

func (r *run) allDone() bool {
	for i := range r.choices {
		if !r.choices[i].done {
			return false
		}
	}
	return true
}

func (r *run) ctxEnd() end {
	if r.s.baseCtx.Err() != nil {
		return endShutdown
	}
	return endTimeout
}

// apply records an event; it returns the choice's error, if it failed.
func (r *run) apply(ce choiceEvent) error {
	c := &r.choices[ce.idx]
	ev := &ce.ev
	now := time.Now()
	if c.first.IsZero() && (len(ev.Tokens) > 0 || ev.Text != "") {
		c.first = now
		r.s.metrics.ttft.Observe(now.Sub(r.arrived).Seconds())
	}
	if !ev.Done {
		return nil
	}
	c.done, c.finish, c.usage = true, ev.FinishReason, ev.Usage
	if ev.Err != nil {
		return ev.Err
	}
	r.s.metrics.finished(ev.Usage)
	if n := ev.Usage.CompletionTokens; n > 1 && !c.first.IsZero() {
		r.s.metrics.tpot.Observe(now.Sub(c.first).Seconds() / float64(n-1))
	}
	return nil
}

// failure turns the way a request ended into its error.
func (r *run) failure(how end, err error) *apiError {
	switch how {
	case endDisconnected:
		r.s.metrics.cancelled.WithLabelValues("disconnect").Inc()
		return &apiError{Status: 499, Type: typeInvalidRequest, Message: "client closed the connection"}
	case endTimeout:
		r.s.metrics.cancelled.WithLabelValues("timeout").Inc()
		return &apiError{Status: fasthttp.StatusGatewayTimeout, Type: typeTimeout, Code: "timeout",
			Message: fmt.Sprintf("the request did not finish within %v", r.s.cfg.RequestTimeout)}
	case endShutdown:
		r.s.metrics.cancelled.WithLabelValues("shutdown").Inc()
		return &apiError{Status: fasthttp.StatusServiceUnavailable, Type: typeUnavailable, Code: "shutting_down",
			Message: "the server shut down before the request finished"}
	}
	if r.ctx.Err() != nil { // the scheduler reported our own cancellation
		return r.failure(r.ctxEnd(), nil)
	}
	if errors.Is(err, scheduler.ErrClosed) {
		return &apiError{Status: fasthttp.StatusServiceUnavailable, Type: typeUnavailable, Code: "shutting_down",
			Message: "the server is shutting down"}
	}
	return &apiError{Status: fasthttp.StatusInternalServerError, Type: typeServer, Message: "generation failed: " + err.Error()}
}

func (r *run) finish() {
	if r.finished {
		return
	}
	r.finished = true
	r.cancel()
	if r.tick != nil {
		r.tick.Stop()
	}
	r.s.metrics.inFlight.Dec()
	r.s.inFlight.Add(-1)
}

// gather waits for every choice, keeping its text and logprobs.
func (r *run) gather() *apiError {
	for {
		ce, how := r.next()
		if how == endDone {
			break
		}
		if how != endNone {
			return r.failure(how, nil)
		}
		c := &r.choices[ce.idx]
		c.text.WriteString(ce.ev.Text)
		c.lps = append(c.lps, ce.ev.Logprobs...)
		c.plp = append(c.plp, ce.ev.PromptLogprobs...)
		if err := r.apply(ce); err != nil {
			return r.failure(endNone, err)
		}
	}
	if !r.allDone() {
		return r.failure(endNone, errNoResult)
	}
	return nil
}

// collect waits for every choice and renders the non-streamed response.
func (r *run) collect() ([]byte, *apiError) {
	if e := r.gather(); e != nil {
		return nil, e
	}
	resp := response{ID: r.id, Object: r.object, Created: r.created, Model: r.model}
	resp.Choices = make([]choiceJSON, len(r.choices))
	for i := range r.choices {
		c := &r.choices[i]
		text := c.echo + c.text.String()
		resp.Choices[i] = choiceJSON{Index: i, FinishReason: c.finish}
		if r.g.logprobs {
			lps := c.lps
			if r.g.echo {
				lps = c.echoLogprobs(lps)
			}
			resp.Choices[i].Logprobs = r.appendLogprobs(nil, lps, &c.offset)
		}
		if r.g.chat {
			msg := &messageJSON{Role: "assistant", Content: &text}
			if len(r.g.tools) > 0 {
				if calls, ok := parseCalls(text, r.g.tools, c.finish); ok {
					msg.Content, msg.ToolCalls = nil, calls
					if c.finish == "stop" {
						resp.Choices[i].FinishReason = "tool_calls"
					}
				}
			}
			resp.Choices[i].Message = msg
		} else {
			resp.Choices[i].Text = &text
		}
	}
	u, t := r.usage()
	resp.Usage, resp.Timings = &u, &t
	b, err := json.Marshal(resp)
	if err != nil {
		panic(err)
	}
	return b, nil
}

type response struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []choiceJSON `json:"choices"`
	Usage   *usageJSON   `json:"usage"`
	Timings *timingsJSON `json:"timings,omitempty"`
}

type choiceJSON struct {
	Index        int             `json:"index"`
	Text         *string         `json:"text,omitempty"`
	Message      *messageJSON    `json:"message,omitempty"`
	Logprobs     json.RawMessage `json:"logprobs"` // null unless asked for
	FinishReason string          `json:"finish_reason"`
}

type messageJSON struct {
	Role      string         `json:"role"`
	Content   *string        `json:"content"`
	ToolCalls []toolCallJSON `json:"tool_calls,omitempty"`
}

type usageJSON struct {
	PromptTokens        int `json:"prompt_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	TotalTokens         int `json:"total_tokens"`
	PromptTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
	CompletionTokensDetails struct {
		AcceptedPredictionTokens int `json:"accepted_prediction_tokens"`
		RejectedPredictionTokens int `json:"rejected_prediction_tokens"`
	} `json:"completion_tokens_details"`
}

// timingsJSON is llama.cpp's `timings` object, summed over the choices.
type timingsJSON struct {
	PromptN             int     `json:"prompt_n"`
	PromptMS            float64 `json:"prompt_ms"`
	PromptPerTokenMS    float64 `json:"prompt_per_token_ms"`
	PromptPerSecond     float64 `json:"prompt_per_second"`
	PredictedN          int     `json:"predicted_n"`
	PredictedMS         float64 `json:"predicted_ms"`
	PredictedPerTokenMS float64 `json:"predicted_per_token_ms"`
	PredictedPerSecond  float64 `json:"predicted_per_second"`
	DraftN              int     `json:"draft_n"`
	DraftNAccepted      int     `json:"draft_n_accepted"`
}

// usage sums the choices' accounting. Like OpenAI, prompt_tokens counts each
// prompt once however many choices it has (with its first choice's cached
// tokens); completion and draft counts add up over all choices.
func (r *run) usage() (usageJSON, timingsJSON) {
	var u usageJSON
	var t timingsJSON
	var promptT, genT time.Duration
	for i := range r.choices {
		cu := &r.choices[i].usage
		if i%r.g.n == 0 {
			u.PromptTokens += r.promptLens[i/r.g.n]
			u.PromptTokensDetails.CachedTokens += cu.CachedTokens
		}
		u.CompletionTokens += cu.CompletionTokens
		u.CompletionTokensDetails.AcceptedPredictionTokens += cu.DraftAccepted
		u.CompletionTokensDetails.RejectedPredictionTokens += cu.DraftProposed - cu.DraftAccepted
		t.PromptN += cu.PromptTokens - cu.CachedTokens
		t.PredictedN += cu.CompletionTokens
		t.DraftN += cu.DraftProposed
		t.DraftNAccepted += cu.DraftAccepted
		promptT += cu.PromptTime
		genT += cu.GenTime
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	t.PromptMS = ms(promptT)
	t.PredictedMS = ms(genT)
	t.PromptPerTokenMS, t.PromptPerSecond = rates(t.PromptN, t.PromptMS)
	t.PredictedPerTokenMS, t.PredictedPerSecond = rates(t.PredictedN, t.PredictedMS)
	return u, t
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func rates(n int, msec float64) (perTokenMS, perSecond float64) {
	if n > 0 {
		perTokenMS = msec / float64(n)
	}
	if msec > 0 {
		perSecond = float64(n) * 1000 / msec
	}
	return
}

// stream writes the SSE response: a role chunk per chat choice, a chunk per
// event with text, a finish chunk per choice, the usage chunk when asked,
// then [DONE]. A failure after the headers is an error event instead.
func (r *run) stream(w *bufio.Writer) {
	buf := make([]byte, 0, 1024)
	// head is every chunk's opening, up to the choice index.
	head := fmt.Appendf(nil, `data: {"id":%q,"object":"%s","created":%d,"model":`, r.id, r.chunkObject(), r.created)
	head = appendJSONString(head, r.model)
	head = append(head, `,"choices":[{"index":`...)
	tail := []byte(`}]}` + "\n\n")
	if r.g.includeUsage {
		tail = []byte(`}],"usage":null}` + "\n\n")
	}

	if r.g.chat {
		for i := range r.choices {
			buf = strconv.AppendInt(append(buf[:0], head...), int64(i), 10)
			buf = append(buf, `,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null`...)
			buf = append(buf, tail...)
			_, _ = w.Write(buf)
		}
		if w.Flush() != nil {
			r.disconnected()
			return
		}
	}
	writeText := func(idx int, text string, lps []scheduler.Logprob) {
		buf = strconv.AppendInt(append(buf[:0], head...), int64(idx), 10)
		if r.g.chat {
			buf = append(buf, `,"delta":{"content":`...)
			buf = appendJSONString(buf, text)
			buf = append(buf, '}')
		} else {
			buf = append(buf, `,"text":`...)
			buf = appendJSONString(buf, text)
		}
		buf = append(buf, `,"logprobs":`...)
		if r.g.logprobs {
			buf = r.appendLogprobs(buf, lps, &r.choices[idx].offset)
		} else {
			buf = append(buf, "null"...)
		}
		buf = append(buf, `,"finish_reason":null`...)
		buf = append(buf, tail...)
		_, _ = w.Write(buf)
	}
	// Before an error event: the text a StreamInterval held back.
	sendHeld := func() {
		for i := range r.choices {
			if c := &r.choices[i]; len(c.pend) > 0 || len(c.pendLP) > 0 {
				writeText(i, string(c.pend), c.pendLP)
				c.pend, c.pendN, c.pendLP = c.pend[:0], 0, c.pendLP[:0]
			}
		}
	}
	for {
		ce, how, e := r.advance()
		if e != nil {
			sendHeld()
			r.streamError(w, e)
			return
		}
		if how == endDisconnected {
			return
		}
		if how == endDone {
			r.streamEnd(w)
			return
		}
		text, lps := ce.ev.Text, ce.ev.Logprobs
		finish := ce.ev.FinishReason
		if c := &r.choices[ce.idx]; r.g.echo && !c.echoed {
			// The prompt goes out with the first chunk (its logprobs come
			// in the first event, before any token's).
			c.echoed = true
			c.plp = ce.ev.PromptLogprobs
			text = c.echo + text
			if r.g.logprobs {
				lps = c.echoLogprobs(lps)
			}
		}
		if c := &r.choices[ce.idx]; len(r.g.tools) > 0 && !c.plain {
			c.hold = append(c.hold, text...)
			c.holdLP = append(c.holdLP, lps...)
			text, lps = "", nil
			if calls, ok := parseCalls(string(c.hold), r.g.tools, finish); ok && ce.ev.Done {
				for i := range calls {
					calls[i].Index = &i
				}
				buf = strconv.AppendInt(append(buf[:0], head...), int64(ce.idx), 10)
				buf = append(buf, `,"delta":{"tool_calls":`...)
				tc, _ := json.Marshal(calls)
				buf = append(buf, tc...)
				buf = append(buf, `},"logprobs":null,"finish_reason":null`...)
				buf = append(buf, tail...)
				_, _ = w.Write(buf)
				c.hold, c.holdLP = nil, nil
				if finish == "stop" {
					finish = "tool_calls"
				}
			} else if ce.ev.Done || (len(c.hold) > 0 && c.hold[0] != '{') {
				c.plain = true
				text, lps = string(c.hold), c.holdLP
				c.hold, c.holdLP = nil, nil
			}
		}
		if every := r.s.cfg.StreamInterval; every > 1 {
			// Hold the text back until it spans every tokens (the first
			// chunk and the last go out at once; an error event sends
			// what is held first).
			c := &r.choices[ce.idx]
			c.pend = append(c.pend, text...)
			c.pendLP = append(c.pendLP, lps...)
			c.pendN += len(ce.ev.Tokens)
			text, lps = "", nil
			if (len(c.pend) > 0 || len(c.pendLP) > 0) && (!c.sent || c.pendN >= every || ce.ev.Done) {
				text, lps, c.sent = string(c.pend), c.pendLP, true
				c.pend, c.pendN, c.pendLP = c.pend[:0], 0, c.pendLP[:0]
			}
		}
		if text != "" || len(lps) > 0 {
			writeText(ce.idx, text, lps)
		}
		if ce.ev.Done {
			buf = strconv.AppendInt(append(buf[:0], head...), int64(ce.idx), 10)
			if r.g.chat {
				buf = append(buf, `,"delta":{},"logprobs":null,"finish_reason":`...)
			} else {
				buf = append(buf, `,"text":"","logprobs":null,"finish_reason":`...)
			}
			buf = appendJSONString(buf, finish)
			buf = append(buf, tail...)
			_, _ = w.Write(buf)
		}
		// Flush when nothing else is queued: one write per burst of events.
		if len(r.events) == 0 && w.Buffered() > 0 && w.Flush() != nil {
			r.disconnected()
			return
		}
	}
}

func (r *run) chunkObject() string {
	if r.g.chat {
		return "chat.completion.chunk"
	}
	return "text_completion"
}

func (r *run) disconnected() {
	r.cancel() // at once: the scheduler frees the sequences
	r.failure(endDisconnected, nil)
	r.s.log.Debug("client disconnected", "id", r.id)
}

func (r *run) streamEnd(w *bufio.Writer) {
	if r.g.includeUsage {
		u, t := r.usage()
		b, err := json.Marshal(struct {
			ID      string       `json:"id"`
			Object  string       `json:"object"`
			Created int64        `json:"created"`
			Model   string       `json:"model"`
			Choices []choiceJSON `json:"choices"`
			Usage   usageJSON    `json:"usage"`
			Timings timingsJSON  `json:"timings"`
		}{r.id, r.chunkObject(), r.created, r.model, []choiceJSON{}, u, t})
		if err != nil {
			panic(err)
		}
		_, _ = w.WriteString("data: ")
		_, _ = w.Write(b)
		_, _ = w.WriteString("\n\n")
	}
	_, _ = w.WriteString("data: [DONE]\n\n")
	if w.Flush() != nil {
		r.disconnected()
		return
	}
	r.s.metrics.e2e.WithLabelValues(r.endpoint).Observe(time.Since(r.arrived).Seconds())
}

func (r *run) streamError(w *bufio.Writer, e *apiError) {
	r.cancel()
	_, _ = w.WriteString("data: ")
	_, _ = w.Write(e.body())
	_, _ = w.WriteString("\n\n")
	_ = w.Flush()
}

// echoLogprobs puts the prompt's entries before lps: the first prompt token
// with no logprob (nothing predicts it; rendered null), then the others'.
func (c *choiceState) echoLogprobs(lps []scheduler.Logprob) []scheduler.Logprob {
	out := make([]scheduler.Logprob, 0, 1+len(c.plp)+len(lps))
	out = append(out, scheduler.Logprob{Token: c.echoTok, Logprob: noLogprob})
	out = append(out, c.plp...)
	return append(out, lps...)
}

// promptText is prompt i as echo returns it: the text sent, or the pieces
// of the tokens sent.
func (s *Server) promptText(g *genRequest, i int, toks []int32) string {
	if p := g.prompts[i]; !p.isTokens {
		return p.text
	}
	var b strings.Builder
	for _, t := range toks {
		b.WriteString(s.b.TokenPiece(t))
	}
	return b.String()
}
