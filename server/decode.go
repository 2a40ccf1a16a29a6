package server

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"specd/scheduler"
	"specd/specdec"
)

// genRequest is a decoded, validated /v1/completions or /v1/chat/completions
// body, before tokenization. decode builds it from bytes alone (no backend),
// so it can be fuzzed.
type genRequest struct {
	chat     bool
	model    string
	prompts  []promptInput           // completions: one choice set per prompt
	messages []scheduler.ChatMessage // chat

	maxTokens      int    // 0: not given (default applies)
	zeroMax        bool   // max_tokens: 0 given (completions with echo: score the prompt only)
	echo           bool   // completions: the prompt comes back before the completion
	maxTokensParam string // the field that set maxTokens, for errors
	untilFull      bool   // n_predict: -1 (llama.cpp): as many as fit

	sampling  scheduler.Sampling
	seedGiven bool
	stop      []string
	// stopTokens: vLLM's stop_token_ids; minTokens its min_tokens.
	stopTokens []int32
	minTokens  int
	// keepStop: include_stop_str_in_output; specialText: skip_special_tokens false.
	keepStop, specialText bool
	n                     int
	ignoreEOS             bool
	noCache               bool // cache_prompt: false

	stream       bool
	includeUsage bool

	logprobs    bool // report logprobs; topLogprobs alternatives per token
	topLogprobs int
	logitBias   map[int32]float32

	prediction    string
	hasPrediction bool
	speculative   scheduler.Speculative

	grammar string     // GBNF: response_format, grammar, json_schema or the tools'
	tools   []chatTool // chat: the tools the answer may call (tools.go)
}

// promptInput is one completions prompt: text or tokens.
type promptInput struct {
	text     string
	tokens   []int32
	isTokens bool
}

// limits are what decode validates against.
type limits struct {
	maxN  int
	vocab int // token ids in array prompts must be below it
}

// Sampling defaults are OpenAI's (temperature 1, top_p 1), not llama.cpp's.
const (
	defaultTemperature = 1
	defaultTopP        = 1
	maxStops           = 4
	maxSpeculativeK    = 64
	// maxLogitBias bounds logit_bias's entries: the loop adds each to every
	// verify row of the request, every step.
	maxLogitBias = 1024
)

// neutral tells whether a known-but-unsupported field has a value that asks
// for nothing (null, false, 0, the default), so it can be accepted.
type neutral func(json.RawMessage) bool

func isNull(r json.RawMessage) bool { return string(r) == "null" }

func rawIs(vals ...string) neutral {
	return func(r json.RawMessage) bool {
		if isNull(r) {
			return true
		}
		for _, v := range vals {
			if string(r) == v {
				return true
			}
		}
		return false
	}
}

func numIs(want float64) neutral {
	return func(r json.RawMessage) bool {
		if isNull(r) {
			return true
		}
		f, err := strconv.ParseFloat(string(r), 64)
		return err == nil && f == want
	}
}

func emptyArray(r json.RawMessage) bool {
	var a []json.RawMessage
	return isNull(r) || (json.Unmarshal(r, &a) == nil && a != nil && len(a) == 0)
}

func emptyObject(r json.RawMessage) bool {
	var m map[string]json.RawMessage
	return isNull(r) || (json.Unmarshal(r, &m) == nil && m != nil && len(m) == 0)
}

func textModalities(r json.RawMessage) bool {
	var m []string
	return isNull(r) || (json.Unmarshal(r, &m) == nil && (len(m) == 0 || (len(m) == 1 && m[0] == "text")))
}

// unsupported are fields this server knows and cannot honour. A request that
// sets one to anything but its neutral value gets a 400 naming it: a client
// asking for logprobs or tools must not get an answer that silently lacks
// them. Order is the order of the names in the message.
var unsupported = []struct {
	name    string
	neutral neutral
}{
	{"functions", emptyArray},
	{"function_call", rawIs(`"none"`, `"auto"`)},
	{"best_of", numIs(1)},
	{"suffix", rawIs(`""`)},
	{"audio", isNull},
	{"modalities", textModalities},
	{"web_search_options", isNull},
	{"reasoning_effort", isNull},
	{"verbosity", isNull},
	// llama.cpp extensions with an effect we do not implement.
	{"mirostat", numIs(0)},
	{"typical_p", numIs(1)},
	{"n_probs", numIs(0)},
	{"dry_multiplier", numIs(0)},
	{"xtc_probability", numIs(0)},
	// vLLM's sampling parameters with an effect we do not implement
	// (repetition_penalty is implemented: decodeSampling).
	{"spaces_between_special_tokens", rawIs(`true`)},
	{"use_beam_search", rawIs(`false`)},
	{"length_penalty", numIs(1)},
	{"prompt_logprobs", isNull},
	{"truncate_prompt_tokens", isNull},
	{"bad_words", emptyArray},
	{"allowed_token_ids", emptyArray},
	{"logits_processors", emptyArray},
	{"guided_whitespace_pattern", isNull},
}

// decode parses and validates a request body. Fields it does not know are
// ignored, as OpenAI does; see unsupported for known ones it refuses.
func decode(body []byte, chat bool, lim limits) (*genRequest, *apiError) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, badRequest("", "the request body is empty; it must be a JSON object")
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		if _, ok := err.(*json.UnmarshalTypeError); ok {
			return nil, badRequest("", "the request body must be a JSON object")
		}
		return nil, badRequest("", "could not parse the JSON body of the request: %v", err)
	}
	if m == nil {
		return nil, badRequest("", "the request body must be a JSON object")
	}

	var bad []string
	for _, u := range unsupported {
		if r, ok := m[u.name]; ok && !u.neutral(r) {
			bad = append(bad, u.name)
		}
	}
	if len(bad) > 0 {
		return nil, unsupportedParam(bad[0], "unsupported parameter(s): %s (this server does not implement them)",
			strings.Join(bad, ", "))
	}

	g := &genRequest{chat: chat, n: 1}
	g.sampling.Temperature = defaultTemperature
	g.sampling.TopP = defaultTopP
	var e *apiError

	if g.model, _, e = optString(m, "model"); e != nil {
		return nil, e
	}
	if chat {
		if e = g.decodeMessages(m); e != nil {
			return nil, e
		}
	} else if e = g.decodePrompt(m, lim); e != nil {
		return nil, e
	}
	if e = g.decodeMaxTokens(m); e != nil {
		return nil, e
	}
	if e = g.decodeSampling(m); e != nil {
		return nil, e
	}
	if e = g.decodeStopTokens(m, lim); e != nil {
		return nil, e
	}
	if e = g.decodeStop(m); e != nil {
		return nil, e
	}
	if n, ok, e := optInt(m, "n"); e != nil {
		return nil, e
	} else if ok {
		if n < 1 || n > int64(lim.maxN) {
			return nil, invalidValue("n", "'n' must be between 1 and %d, got %d", lim.maxN, n)
		}
		g.n = int(n)
	}
	if g.ignoreEOS, _, e = optBool(m, "ignore_eos"); e != nil {
		return nil, e
	}
	if g.stream, _, e = optBool(m, "stream"); e != nil {
		return nil, e
	}
	if e = g.decodeStreamOptions(m); e != nil {
		return nil, e
	}
	if e = g.decodeLogprobs(m); e != nil {
		return nil, e
	}
	if e = g.decodeLogitBias(m, lim); e != nil {
		return nil, e
	}
	if e = g.decodePrediction(m); e != nil {
		return nil, e
	}
	if e = g.decodeSpeculative(m); e != nil {
		return nil, e
	}
	if e = g.decodeFormat(m); e != nil {
		return nil, e
	}
	if e = g.decodeTools(m); e != nil {
		return nil, e
	}
	if g.echo, _, e = optBool(m, "echo"); e != nil {
		return nil, e
	}
	if g.echo && chat {
		return nil, unsupportedParam("echo", "'echo' is a completions parameter")
	}
	if n, ok, e := optInt(m, "min_tokens"); e != nil {
		return nil, e
	} else if ok {
		switch {
		case n < 0 || (g.maxTokens > 0 && n > int64(g.maxTokens)):
			return nil, invalidValue("min_tokens", "'min_tokens' must be in 0..%s, got %d", cmp.Or(g.maxTokensParam, "max_tokens"), n)
		case n > 0 && g.grammar != "":
			return nil, unsupportedParam("min_tokens", "'min_tokens' cannot be combined with structured outputs or tools (a finished document may allow only its end)")
		}
		g.minTokens = int(n)
	}
	if g.keepStop, _, e = optBool(m, "include_stop_str_in_output"); e != nil {
		return nil, e
	}
	skip, set, e := optBool(m, "skip_special_tokens")
	if e != nil {
		return nil, e
	}
	g.specialText = set && !skip
	if g.zeroMax && (!g.echo || g.maxTokens > 0) {
		return nil, invalidValue(g.maxTokensParam, "'%s' must be at least 1 (0 only with echo, to score the prompt)", g.maxTokensParam)
	}
	// llama.cpp's cache_prompt (default true): false skips the prefix
	// cache for this prompt, as llama-server does (the output is the same
	// either way; only the prompt's time differs).
	cachePrompt, set, e := optBool(m, "cache_prompt")
	if e != nil {
		return nil, e
	}
	g.noCache = set && !cachePrompt
	// Accepted and ignored: user, metadata, store, service_tier,
	// prompt_cache_key, safety_identifier, parallel_tool_calls (one call
	// per choice is made either way).
	// Type-checked so that garbage there is still a 400.
	if _, _, e = optString(m, "user"); e != nil {
		return nil, e
	}
	return g, nil
}

func (g *genRequest) decodePrompt(m map[string]json.RawMessage, lim limits) *apiError {
	const want = "a string, an array of strings, an array of tokens or an array of token arrays"
	r, ok := m["prompt"]
	if !ok || isNull(r) {
		return badRequest("prompt", "'prompt' is required")
	}
	switch r[0] {
	case '"':
		var s string
		if json.Unmarshal(r, &s) != nil {
			return wrongType("prompt", want)
		}
		g.prompts = []promptInput{{text: s}}
		return nil
	case '[':
	default:
		return wrongType("prompt", want)
	}
	var items []json.RawMessage
	if json.Unmarshal(r, &items) != nil {
		return wrongType("prompt", want)
	}
	if len(items) == 0 {
		return invalidValue("prompt", "'prompt' is an empty array")
	}
	switch items[0][0] {
	case '"': // array of strings
		if len(items) > maxPrompts {
			return invalidValue("prompt", "at most %d prompts per request, got %d", maxPrompts, len(items))
		}
		g.prompts = make([]promptInput, len(items))
		for i, it := range items {
			if it[0] != '"' || json.Unmarshal(it, &g.prompts[i].text) != nil {
				return wrongType("prompt", want+" (not a mix)")
			}
		}
	case '[': // array of token arrays
		if len(items) > maxPrompts {
			return invalidValue("prompt", "at most %d prompts per request, got %d", maxPrompts, len(items))
		}
		g.prompts = make([]promptInput, len(items))
		for i, it := range items {
			toks, e := tokenArray(it, lim.vocab, want)
			if e != nil {
				return e
			}
			g.prompts[i] = promptInput{tokens: toks, isTokens: true}
		}
	default: // one token array
		toks, e := tokenArray(r, lim.vocab, want)
		if e != nil {
			return e
		}
		g.prompts = []promptInput{{tokens: toks, isTokens: true}}
	}
	return nil
}

func tokenArray(r json.RawMessage, vocab int, want string) ([]int32, *apiError) {
	var ids []int64
	if r[0] != '[' || json.Unmarshal(r, &ids) != nil {
		return nil, wrongType("prompt", want+" (not a mix)")
	}
	if len(ids) == 0 {
		return nil, invalidValue("prompt", "'prompt' contains an empty token array")
	}
	toks := make([]int32, len(ids))
	for i, id := range ids {
		if id < 0 || id >= int64(vocab) {
			e := invalidValue("prompt", "token id %d is out of range [0, %d)", id, vocab)
			e.Code = "invalid_token"
			return nil, e
		}
		toks[i] = int32(id)
	}
	return toks, nil
}

var chatRoles = map[string]bool{"system": true, "developer": true, "user": true, "assistant": true, "tool": true}

func (g *genRequest) decodeMessages(m map[string]json.RawMessage) *apiError {
	r, ok := m["messages"]
	if !ok || isNull(r) {
		return badRequest("messages", "'messages' is required")
	}
	var msgs []map[string]json.RawMessage
	if r[0] != '[' || json.Unmarshal(r, &msgs) != nil {
		return wrongType("messages", "an array of message objects")
	}
	if len(msgs) == 0 {
		return invalidValue("messages", "'messages' must contain at least one message")
	}
	g.messages = make([]scheduler.ChatMessage, len(msgs))
	for i, msg := range msgs {
		p := "messages[" + strconv.Itoa(i) + "]"
		if msg == nil {
			return wrongType(p, "a message object")
		}
		role, ok, e := optString(msg, "role")
		if e != nil {
			e.Param = p + ".role"
			return e
		}
		if !ok {
			return badRequest(p+".role", "'%s.role' is required", p)
		}
		if !chatRoles[role] {
			return invalidValue(p+".role", "role %q is not supported (use system, developer, user, assistant or tool)", role)
		}
		for _, f := range []string{"function_call", "audio"} {
			if v, ok := msg[f]; ok && !isNull(v) && !emptyArray(v) {
				return unsupportedParam(p+"."+f, "'%s.%s' is not supported by this server", p, f)
			}
		}
		content, e := messageContent(msg["content"], p+".content")
		if e != nil {
			return e
		}
		if tc, ok := msg["tool_calls"]; ok && !isNull(tc) && !emptyArray(tc) {
			if role != "assistant" {
				return badRequest(p+".tool_calls", "only assistant messages have tool_calls")
			}
			calls, e := assistantCalls(tc, p+".tool_calls")
			if e != nil {
				return e
			}
			content = strings.TrimSpace(content + "\n" + calls)
		}
		g.messages[i] = scheduler.ChatMessage{Role: role, Content: content}
	}
	return nil
}

// messageContent accepts a string, null (empty) or an array of text parts.
func messageContent(r json.RawMessage, p string) (string, *apiError) {
	if len(r) == 0 || isNull(r) {
		return "", nil
	}
	switch r[0] {
	case '"':
		var s string
		if json.Unmarshal(r, &s) != nil {
			return "", wrongType(p, "a string or an array of text parts")
		}
		return s, nil
	case '[':
		var parts []map[string]json.RawMessage
		if json.Unmarshal(r, &parts) != nil {
			return "", wrongType(p, "a string or an array of text parts")
		}
		return joinTextParts(parts, p, "text")
	}
	return "", wrongType(p, "a string or an array of text parts")
}

// quoteJoin is "a", "b", ...
func quoteJoin(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = strconv.Quote(w)
	}
	return strings.Join(q, ", ")
}

// joinTextParts joins the text of content parts p[0], p[1], ..., each of
// which must have one of the types given (its text in "text").
func joinTextParts(parts []map[string]json.RawMessage, p string, types ...string) (string, *apiError) {
	var sb strings.Builder
	for j, part := range parts {
		pp := p + "[" + strconv.Itoa(j) + "]"
		typ, _, e := optString(part, "type")
		if e != nil {
			e.Param = pp + ".type"
			return "", e
		}
		if !slices.Contains(types, typ) {
			e := badRequest(pp+".type", "content part type %q is not supported (only %s)", typ, quoteJoin(types))
			e.Code = "unsupported_content_type"
			return "", e
		}
		text, ok, e := optString(part, "text")
		if e != nil {
			e.Param = pp + ".text"
			return "", e
		}
		if !ok {
			return "", badRequest(pp+".text", "'%s.text' is required", pp)
		}
		sb.WriteString(text)
	}
	return sb.String(), nil
}

func (g *genRequest) decodeMaxTokens(m map[string]json.RawMessage) *apiError {
	for _, f := range []string{"max_completion_tokens", "max_tokens", "n_predict"} {
		v, ok, e := optInt(m, f)
		if e != nil {
			return e
		}
		if !ok {
			continue
		}
		if f == "n_predict" && v == -1 {
			if g.maxTokensParam == "" {
				g.untilFull = true
			}
			continue
		}
		if v == 0 && f != "n_predict" {
			g.zeroMax, g.maxTokensParam = true, f
			continue
		}
		if v < 1 || v > math.MaxInt32 {
			return invalidValue(f, "'%s' must be at least 1, got %d", f, v)
		}
		if g.maxTokensParam != "" && int64(g.maxTokens) != v {
			return invalidValue(f, "'%s' (%d) contradicts '%s' (%d)", f, v, g.maxTokensParam, g.maxTokens)
		}
		if g.maxTokensParam == "" {
			g.maxTokens, g.maxTokensParam = int(v), f
			g.untilFull = false
		}
	}
	return nil
}

func (g *genRequest) decodeSampling(m map[string]json.RawMessage) *apiError {
	ranges := []struct {
		name   string
		lo, hi float64
		loOpen bool
		dst    *float32
	}{
		{"temperature", 0, 2, false, &g.sampling.Temperature},
		{"top_p", 0, 1, true, &g.sampling.TopP},
		{"min_p", 0, 1, false, &g.sampling.MinP},
		{"presence_penalty", -specdec.MaxPenalty, specdec.MaxPenalty, false, &g.sampling.PresencePenalty},
		{"frequency_penalty", -specdec.MaxPenalty, specdec.MaxPenalty, false, &g.sampling.FrequencyPenalty},
		{"repeat_penalty", 0, specdec.MaxRepeatPenalty, true, &g.sampling.RepeatPenalty},
	}
	g.sampling.RepeatPenalty, g.sampling.RepeatLastN = 1, 64 // llama.cpp's defaults
	for _, rg := range ranges {
		v, ok, e := optFloat(m, rg.name)
		if e != nil {
			return e
		}
		if !ok {
			continue
		}
		if v < rg.lo || v > rg.hi || (rg.loOpen && v == rg.lo) {
			lb := "["
			if rg.loOpen {
				lb = "("
			}
			return invalidValue(rg.name, "'%s' must be in %s%g, %g], got %g", rg.name, lb, rg.lo, rg.hi, v)
		}
		*rg.dst = float32(v)
	}
	// vLLM's repetition_penalty is llama.cpp's repeat_penalty over the whole
	// prompt and output (unless repeat_last_n says otherwise).
	if v, ok, e := optFloat(m, "repetition_penalty"); e != nil {
		return e
	} else if ok {
		if r, both := m["repeat_penalty"]; both && !isNull(r) {
			return badRequest("repetition_penalty", "set repeat_penalty (llama.cpp's) or repetition_penalty (vLLM's), not both")
		}
		if v <= 0 || v > specdec.MaxRepeatPenalty {
			return invalidValue("repetition_penalty", "'repetition_penalty' must be in (0, %d], got %g", specdec.MaxRepeatPenalty, v)
		}
		g.sampling.RepeatPenalty, g.sampling.RepeatLastN = float32(v), -1
	}
	if n, ok, e := optInt(m, "repeat_last_n"); e != nil {
		return e
	} else if ok {
		if n < -1 || n > math.MaxInt32 {
			return invalidValue("repeat_last_n", "'repeat_last_n' must be >= -1 (-1: the whole context), got %d", n)
		}
		g.sampling.RepeatLastN = int(n)
	}
	if k, ok, e := optInt(m, "top_k"); e != nil {
		return e
	} else if ok {
		if k < 0 || k > math.MaxInt32 {
			return invalidValue("top_k", "'top_k' must be >= 0, got %d", k)
		}
		g.sampling.TopK = int(k)
	}
	if s, ok, e := optInt(m, "seed"); e != nil {
		return e
	} else if ok && s != -1 { // -1: random, as in llama.cpp
		g.sampling.Seed, g.seedGiven = uint64(s), true
	}
	return nil
}

func (g *genRequest) decodeStop(m map[string]json.RawMessage) *apiError {
	const want = "a string or an array of up to 4 strings"
	r, ok := m["stop"]
	if !ok || isNull(r) {
		return nil
	}
	switch r[0] {
	case '"':
		var s string
		if json.Unmarshal(r, &s) != nil {
			return wrongType("stop", want)
		}
		g.stop = []string{s}
	case '[':
		if json.Unmarshal(r, &g.stop) != nil {
			return wrongType("stop", want)
		}
	default:
		return wrongType("stop", want)
	}
	if len(g.stop) > maxStops {
		return invalidValue("stop", "at most %d stop sequences, got %d", maxStops, len(g.stop))
	}
	for _, s := range g.stop {
		if s == "" {
			return invalidValue("stop", "stop sequences must not be empty")
		}
	}
	return nil
}

// decodeStopTokens reads vLLM's stop_token_ids: token ids that end the
// choice when generated.
func (g *genRequest) decodeStopTokens(m map[string]json.RawMessage, lim limits) *apiError {
	r, ok := m["stop_token_ids"]
	if !ok || isNull(r) {
		return nil
	}
	if json.Unmarshal(r, &g.stopTokens) != nil {
		return wrongType("stop_token_ids", "an array of token ids")
	}
	if len(g.stopTokens) > scheduler.MaxStopTokens {
		return invalidValue("stop_token_ids", "at most %d stop tokens, got %d", scheduler.MaxStopTokens, len(g.stopTokens))
	}
	for _, t := range g.stopTokens {
		if t < 0 || int(t) >= lim.vocab {
			return invalidValue("stop_token_ids", "stop token %d is not a token id in [0, %d)", t, lim.vocab)
		}
	}
	return nil
}

// decodeLogprobs reads OpenAI's logprobs: on chat a boolean plus
// top_logprobs (0..20 alternatives, only with logprobs true); on
// completions an integer N (0..20; the sampled token's logprob and N
// alternatives), where false, like null, asks for none.
func (g *genRequest) decodeLogprobs(m map[string]json.RawMessage) *apiError {
	const most = specdec.MaxTopLogprobs
	if g.chat {
		var e *apiError
		if g.logprobs, _, e = optBool(m, "logprobs"); e != nil {
			return e
		}
		n, ok, e := optInt(m, "top_logprobs")
		if e != nil {
			return e
		}
		if ok && (n < 0 || n > most) {
			return invalidValue("top_logprobs", "'top_logprobs' must be between 0 and %d, got %d", most, n)
		}
		if n > 0 && !g.logprobs {
			return invalidValue("top_logprobs", "'top_logprobs' needs 'logprobs': true")
		}
		g.topLogprobs = int(n)
		return nil
	}
	if r, ok := m["top_logprobs"]; ok && !numIs(0)(r) {
		return invalidValue("top_logprobs", "completions take 'logprobs': N (the number of alternatives), not 'top_logprobs'")
	}
	if r, ok := m["logprobs"]; ok && string(r) == "false" {
		return nil
	}
	n, ok, e := optInt(m, "logprobs")
	if e != nil {
		return wrongType("logprobs", fmt.Sprintf("an integer between 0 and %d (the number of alternatives per token)", most))
	}
	if ok && (n < 0 || n > most) {
		return invalidValue("logprobs", "'logprobs' must be between 0 and %d, got %d", most, n)
	}
	g.logprobs, g.topLogprobs = ok, int(n)
	return nil
}

// decodeLogitBias reads OpenAI's logit_bias: {"token id": bias}, ids in
// the vocabulary, biases in -100..100.
func (g *genRequest) decodeLogitBias(m map[string]json.RawMessage, lim limits) *apiError {
	r, ok := m["logit_bias"]
	if !ok || isNull(r) {
		return nil
	}
	var raw map[string]json.RawMessage
	if r[0] != '{' || json.Unmarshal(r, &raw) != nil {
		return wrongType("logit_bias", "an object mapping token ids to biases")
	}
	if len(raw) > maxLogitBias {
		return invalidValue("logit_bias", "logit_bias has %d entries; at most %d", len(raw), maxLogitBias)
	}
	for k, v := range raw {
		id, err := strconv.ParseInt(k, 10, 32)
		if err != nil || id < 0 || id >= int64(lim.vocab) {
			e := invalidValue("logit_bias", "logit_bias key %q is not a token id in [0, %d)", k, lim.vocab)
			e.Code = "invalid_token"
			return e
		}
		b, err := strconv.ParseFloat(string(v), 64)
		if err != nil || !isNumberStart(v[0]) {
			return wrongType("logit_bias", "an object mapping token ids to numbers")
		}
		if !(b >= -specdec.MaxLogitBias && b <= specdec.MaxLogitBias) {
			return invalidValue("logit_bias", "logit_bias for token %d is %v; biases must be between -%d and %d", id, b, specdec.MaxLogitBias, specdec.MaxLogitBias)
		}
		if g.logitBias == nil {
			g.logitBias = make(map[int32]float32, len(raw))
		}
		g.logitBias[int32(id)] = float32(b)
	}
	return nil
}

func (g *genRequest) decodeStreamOptions(m map[string]json.RawMessage) *apiError {
	r, ok := m["stream_options"]
	if !ok || isNull(r) {
		return nil
	}
	if !g.stream {
		return badRequest("stream_options", "'stream_options' is only allowed when 'stream' is true")
	}
	var so map[string]json.RawMessage
	if r[0] != '{' || json.Unmarshal(r, &so) != nil {
		return wrongType("stream_options", "an object")
	}
	// include_obfuscation is accepted and ignored: nothing is obfuscated.
	if _, _, e := optBool(so, "include_obfuscation"); e != nil {
		e.Param = "stream_options.include_obfuscation"
		return e
	}
	var e *apiError
	if g.includeUsage, _, e = optBool(so, "include_usage"); e != nil {
		e.Param = "stream_options.include_usage"
		return e
	}
	return nil
}

func (g *genRequest) decodePrediction(m map[string]json.RawMessage) *apiError {
	r, ok := m["prediction"]
	if !ok || isNull(r) {
		return nil
	}
	var p map[string]json.RawMessage
	if r[0] != '{' || json.Unmarshal(r, &p) != nil {
		return wrongType("prediction", `an object {"type": "content", "content": ...}`)
	}
	typ, _, e := optString(p, "type")
	if e != nil {
		e.Param = "prediction.type"
		return e
	}
	if typ != "content" {
		return invalidValue("prediction.type", "'prediction.type' must be \"content\", got %q", typ)
	}
	c, ok := p["content"]
	if !ok || isNull(c) {
		return badRequest("prediction.content", "'prediction.content' is required")
	}
	if g.prediction, e = messageContent(c, "prediction.content"); e != nil {
		return e
	}
	g.hasPrediction = true
	return nil
}

func (g *genRequest) decodeSpeculative(m map[string]json.RawMessage) *apiError {
	r, ok := m["speculative"]
	if !ok || isNull(r) {
		return nil
	}
	var sp map[string]json.RawMessage
	if r[0] != '{' || json.Unmarshal(r, &sp) != nil {
		return wrongType("speculative", `an object {"proposer": "draft"|"ngram"|"none", "k": N}`)
	}
	prop, _, e := optString(sp, "proposer")
	if e != nil {
		e.Param = "speculative.proposer"
		return e
	}
	switch prop {
	case "", "draft", "ngram", "none":
	default:
		return invalidValue("speculative.proposer", "'speculative.proposer' must be \"draft\", \"ngram\" or \"none\", got %q", prop)
	}
	k, _, e := optInt(sp, "k")
	if e != nil {
		e.Param = "speculative.k"
		return e
	}
	if k < 0 || k > maxSpeculativeK {
		return invalidValue("speculative.k", "'speculative.k' must be in [0, %d], got %d", maxSpeculativeK, k)
	}
	g.speculative = scheduler.Speculative{Proposer: prop, K: int(k)}
	return nil
}

// optString returns m[name] as a string; null and absence are "not given".
func optString(m map[string]json.RawMessage, name string) (string, bool, *apiError) {
	r, ok := m[name]
	if !ok || isNull(r) {
		return "", false, nil
	}
	var s string
	if r[0] != '"' || json.Unmarshal(r, &s) != nil {
		return "", false, wrongType(name, "a string")
	}
	return s, true, nil
}

func optBool(m map[string]json.RawMessage, name string) (bool, bool, *apiError) {
	r, ok := m[name]
	if !ok || isNull(r) {
		return false, false, nil
	}
	switch string(r) {
	case "true":
		return true, true, nil
	case "false":
		return false, true, nil
	}
	return false, false, wrongType(name, "a boolean")
}

func isNumberStart(c byte) bool { return c == '-' || (c >= '0' && c <= '9') }

// optInt accepts integers and integral floats (256.0), within int64.
func optInt(m map[string]json.RawMessage, name string) (int64, bool, *apiError) {
	r, ok := m[name]
	if !ok || isNull(r) {
		return 0, false, nil
	}
	if !isNumberStart(r[0]) {
		return 0, false, wrongType(name, "an integer")
	}
	if v, err := strconv.ParseInt(string(r), 10, 64); err == nil {
		return v, true, nil
	}
	f, err := strconv.ParseFloat(string(r), 64)
	if err != nil || f != math.Trunc(f) || f < math.MinInt64 || f >= math.MaxInt64 {
		return 0, false, wrongType(name, "an integer")
	}
	return int64(f), true, nil
}

func optFloat(m map[string]json.RawMessage, name string) (float64, bool, *apiError) {
	r, ok := m[name]
	if !ok || isNull(r) {
		return 0, false, nil
	}
	if !isNumberStart(r[0]) {
		return 0, false, wrongType(name, "a number")
	}
	f, err := strconv.ParseFloat(string(r), 64)
	if err != nil {
		return 0, false, wrongType(name, "a number")
	}
	return f, true, nil
}
