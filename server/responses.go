package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/valyala/fasthttp"

	"specd/scheduler"
)

// /v1/responses, OpenAI's Responses API, stateless: the body is translated
// to a chat completions body (input items to messages, instructions to a
// system message, flat function tools to chat tools, text.format to
// response_format, max_output_tokens to max_completion_tokens; extension
// fields such as top_k, seed or speculative pass through), served by the
// chat path, and the result rendered as a response object, or streamed as
// the Responses API's typed events. Nothing is stored: previous_response_id,
// conversation, background and prompt templates get a 400, as do non-
// function tools and non-text content. One output per request (no n).

// respMeta is what the response object echoes of the request.
type respMeta struct {
	instructions    *string
	maxOutputTokens *int
	temperature     float64
	topP            float64
	text            json.RawMessage // {"format": ...}
	toolChoice      json.RawMessage
	tools           json.RawMessage // as given (flat function tools)
	parallel        bool
	metadata        json.RawMessage
	user            *string
	offset          int // messages before input[0] (the instructions)
}

// respConsumed are the Responses fields the translation reads (or refuses);
// all others pass to the chat body as they are.
var respConsumed = map[string]bool{
	"input": true, "instructions": true, "max_output_tokens": true, "text": true, "tools": true,
	"tool_choice": true, "previous_response_id": true, "conversation": true, "include": true,
	"reasoning": true, "background": true, "store": true, "truncation": true, "metadata": true,
	"user": true, "service_tier": true, "prompt_cache_key": true, "safety_identifier": true,
	"max_tool_calls": true, "stream_options": true, "top_logprobs": true, "prompt": true,
	"messages": true, "n": true, "logprobs": true, "response_format": true, "max_tokens": true,
	"max_completion_tokens": true,
}

// respRefused are Responses fields this stateless server cannot honour
// unless neutral.
var respRefused = []struct {
	name    string
	neutral neutral
}{
	{"previous_response_id", isNull},
	{"conversation", isNull},
	{"background", rawIs("false")},
	{"prompt", isNull},
	{"max_tool_calls", isNull},
	{"truncation", rawIs(`"disabled"`)},
	{"reasoning", allNull},
}

// allNull: null, or an object whose members are all null.
func allNull(r json.RawMessage) bool {
	if isNull(r) {
		return true
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(r, &m) != nil || m == nil {
		return false
	}
	for _, v := range m {
		if !isNull(v) {
			return false
		}
	}
	return true
}

func (s *Server) handleResponses(ctx *fasthttp.RequestCtx) {
	body, meta, e := responsesToChat(ctx.PostBody())
	if e != nil {
		writeError(ctx, e)
		return
	}
	s.generate(ctx, body, true, meta)
}

// responsesToChat translates a Responses API body to a chat completions
// body.
func responsesToChat(body []byte) ([]byte, *respMeta, *apiError) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, nil, badRequest("", "the request body is empty; it must be a JSON object")
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) != nil || m == nil {
		return nil, nil, badRequest("", "the request body must be a JSON object")
	}
	for _, f := range respRefused {
		if v, ok := m[f.name]; ok && !f.neutral(v) {
			return nil, nil, unsupportedParam(f.name, "'%s' is not supported by this server (it stores nothing and serves text)", f.name)
		}
	}
	for _, f := range []string{"messages", "n", "response_format", "max_tokens", "max_completion_tokens"} {
		if v, ok := m[f]; ok && !isNull(v) && (f != "n" || string(v) != "1") {
			return nil, nil, badRequest(f, "'%s' is a chat completions parameter; see /v1/responses' own fields", f)
		}
	}
	meta := &respMeta{temperature: defaultTemperature, topP: defaultTopP, parallel: true}
	out := map[string]json.RawMessage{}
	for k, v := range m {
		if !respConsumed[k] {
			out[k] = v
		}
	}
	var msgs []any
	if s, ok, e := optString(m, "instructions"); e != nil {
		return nil, nil, e
	} else if ok {
		meta.instructions = &s
		msgs = append(msgs, map[string]any{"role": "system", "content": s})
		meta.offset = 1
	}
	in, e := respInput(m["input"])
	if e != nil {
		return nil, nil, e
	}
	msgs = append(msgs, in...)
	out["messages"] = mustJSON(msgs)

	if r, ok := m["max_output_tokens"]; ok && !isNull(r) {
		n, err := strconv.Atoi(string(r))
		if err != nil {
			return nil, nil, wrongType("max_output_tokens", "an integer")
		}
		meta.maxOutputTokens = &n
		out["max_completion_tokens"] = r
	}
	for _, f := range []struct {
		name string
		dst  *float64
	}{{"temperature", &meta.temperature}, {"top_p", &meta.topP}} {
		if r, ok := m[f.name]; ok && !isNull(r) {
			if v, err := strconv.ParseFloat(string(r), 64); err == nil {
				*f.dst = v // the chat decoder validates it
			}
		}
	}
	if v, ok, e := optBool(m, "parallel_tool_calls"); e != nil {
		return nil, nil, e
	} else if ok {
		meta.parallel = v
	}
	if s, ok, e := optString(m, "user"); e != nil {
		return nil, nil, e
	} else if ok {
		meta.user = &s
	}
	if r, ok := m["metadata"]; ok && !isNull(r) {
		var md map[string]string
		if r[0] != '{' || json.Unmarshal(r, &md) != nil {
			return nil, nil, wrongType("metadata", "an object of strings")
		}
		meta.metadata = r
	}
	if e := respLogprobs(m, out); e != nil {
		return nil, nil, e
	}
	if e := respTextFormat(m["text"], out, meta); e != nil {
		return nil, nil, e
	}
	if e := respTools(m, out, meta); e != nil {
		return nil, nil, e
	}
	return mustJSON(out), meta, nil
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// respLogprobs: include "message.output_text.logprobs" asks the answer's
// logprobs, top_logprobs (0..20) their alternatives (and the logprobs).
// Other include values name outputs this server never makes (tool
// results, reasoning, images): nothing to add.
func respLogprobs(m map[string]json.RawMessage, out map[string]json.RawMessage) *apiError {
	want := false
	if r, ok := m["include"]; ok && !isNull(r) {
		var inc []string
		if r[0] != '[' || json.Unmarshal(r, &inc) != nil {
			return wrongType("include", "an array of strings")
		}
		want = slices.Contains(inc, "message.output_text.logprobs")
	}
	if r, ok := m["top_logprobs"]; ok && !isNull(r) {
		out["top_logprobs"] = r // the chat decoder checks the range
		want = want || !numIs(0)(r)
	}
	if want {
		out["logprobs"] = json.RawMessage("true")
	}
	return nil
}

var respRoles = map[string]bool{"system": true, "developer": true, "user": true, "assistant": true}

// respInput turns input (a string, or an array of message, function_call
// and function_call_output items) into chat messages.
func respInput(r json.RawMessage) ([]any, *apiError) {
	if len(r) == 0 || isNull(r) {
		return nil, badRequest("input", "'input' is required")
	}
	if r[0] == '"' {
		var s string
		if json.Unmarshal(r, &s) != nil {
			return nil, wrongType("input", "a string or an array of input items")
		}
		return []any{map[string]any{"role": "user", "content": s}}, nil
	}
	var items []map[string]json.RawMessage
	if r[0] != '[' || json.Unmarshal(r, &items) != nil {
		return nil, wrongType("input", "a string or an array of input items")
	}
	if len(items) == 0 {
		return nil, invalidValue("input", "'input' must contain at least one item")
	}
	var msgs []any
	for i, it := range items {
		p := "input[" + strconv.Itoa(i) + "]"
		if it == nil {
			return nil, wrongType(p, "an input item object")
		}
		typ, _, e := optString(it, "type")
		if e != nil {
			e.Param = p + ".type"
			return nil, e
		}
		// required reads a string member of the item.
		required := func(name string) (string, *apiError) {
			v, ok, e := optString(it, name)
			if e != nil {
				e.Param = p + "." + name
				return "", e
			}
			if !ok {
				return "", badRequest(p+"."+name, "'%s.%s' is required", p, name)
			}
			return v, nil
		}
		switch typ {
		case "", "message":
			role, e := required("role")
			if e != nil {
				return nil, e
			}
			if !respRoles[role] {
				return nil, invalidValue(p+".role", "role %q is not supported (use user, system, developer or assistant)", role)
			}
			text, e := respContent(it["content"], p+".content")
			if e != nil {
				return nil, e
			}
			msgs = append(msgs, map[string]any{"role": role, "content": text})
		case "function_call":
			var f [3]string
			for j, name := range []string{"call_id", "name", "arguments"} {
				if f[j], e = required(name); e != nil {
					return nil, e
				}
			}
			msgs = append(msgs, map[string]any{"role": "assistant", "content": nil, "tool_calls": []any{
				map[string]any{"id": f[0], "type": "function", "function": map[string]any{"name": f[1], "arguments": f[2]}}}})
		case "function_call_output":
			id, e := required("call_id")
			if e != nil {
				return nil, e
			}
			text, e := respContent(it["output"], p+".output")
			if e != nil {
				return nil, e
			}
			msgs = append(msgs, map[string]any{"role": "tool", "tool_call_id": id, "content": text})
		default:
			return nil, unsupportedParam(p+".type", "input item type %q is not supported (use message, function_call or function_call_output)", typ)
		}
	}
	return msgs, nil
}

// respContent reads a string or an array of input_text / output_text parts.
func respContent(r json.RawMessage, p string) (string, *apiError) {
	if len(r) == 0 || isNull(r) {
		return "", badRequest(p, "'%s' is required", p)
	}
	switch r[0] {
	case '"':
		var s string
		if json.Unmarshal(r, &s) == nil {
			return s, nil
		}
	case '[':
		var parts []map[string]json.RawMessage
		if json.Unmarshal(r, &parts) != nil {
			break
		}
		return joinTextParts(parts, p, "input_text", "output_text")
	}
	return "", wrongType(p, "a string or an array of input_text parts")
}

// respTextFormat turns text.format into response_format.
func respTextFormat(r json.RawMessage, out map[string]json.RawMessage, meta *respMeta) *apiError {
	meta.text = json.RawMessage(`{"format":{"type":"text"}}`)
	if len(r) == 0 || isNull(r) {
		return nil
	}
	var t map[string]json.RawMessage
	if r[0] != '{' || json.Unmarshal(r, &t) != nil {
		return wrongType("text", `an object like {"format": {"type": "json_schema", ...}}`)
	}
	if v, ok := t["verbosity"]; ok && !isNull(v) {
		return unsupportedParam("text.verbosity", "'text.verbosity' is not supported by this server")
	}
	f, ok := t["format"]
	if !ok || isNull(f) {
		return nil
	}
	var format map[string]json.RawMessage
	if f[0] != '{' || json.Unmarshal(f, &format) != nil {
		return wrongType("text.format", "an object")
	}
	typ, _, e := optString(format, "type")
	if e != nil {
		e.Param = "text.format.type"
		return e
	}
	switch typ {
	case "text":
	case "json_object":
		out["response_format"] = json.RawMessage(`{"type":"json_object"}`)
	case "json_schema":
		js := map[string]json.RawMessage{}
		for k, v := range format {
			if k != "type" {
				js[k] = v
			}
		}
		out["response_format"] = mustJSON(map[string]any{"type": "json_schema", "json_schema": js})
	default:
		return invalidValue("text.format.type", "'text.format.type' must be text, json_object or json_schema, not %q", typ)
	}
	meta.text = mustJSON(map[string]json.RawMessage{"format": f})
	return nil
}

// respTools turns the flat function tools and tool_choice into chat's.
func respTools(m map[string]json.RawMessage, out map[string]json.RawMessage, meta *respMeta) *apiError {
	meta.tools, meta.toolChoice = json.RawMessage(`[]`), json.RawMessage(`"auto"`)
	if r, ok := m["tools"]; ok && !isNull(r) {
		var list []map[string]json.RawMessage
		if r[0] != '[' || json.Unmarshal(r, &list) != nil {
			return wrongType("tools", `an array of {"type": "function", "name", "description", "parameters"}`)
		}
		chat := make([]any, len(list))
		for i, t := range list {
			p := "tools[" + strconv.Itoa(i) + "]"
			typ, _, e := optString(t, "type")
			if e != nil {
				e.Param = p + ".type"
				return e
			}
			if typ != "function" {
				return unsupportedParam(p+".type", "tool type %q is not supported (only function)", typ)
			}
			fn := map[string]json.RawMessage{}
			for _, k := range []string{"name", "description", "parameters"} {
				if v, ok := t[k]; ok {
					fn[k] = v
				}
			}
			chat[i] = map[string]any{"type": "function", "function": fn}
		}
		out["tools"] = mustJSON(chat)
		meta.tools = r
	}
	if r, ok := m["tool_choice"]; ok && !isNull(r) {
		meta.toolChoice = r
		if r[0] != '{' {
			out["tool_choice"] = r // "auto", "none", "required": the chat decoder checks
			return nil
		}
		var c map[string]json.RawMessage
		if json.Unmarshal(r, &c) != nil {
			return wrongType("tool_choice", `"auto", "none", "required" or {"type": "function", "name": ...}`)
		}
		typ, _, e := optString(c, "type")
		if e != nil {
			e.Param = "tool_choice.type"
			return e
		}
		if typ != "function" {
			return unsupportedParam("tool_choice.type", "tool_choice type %q is not supported (only function)", typ)
		}
		name, _, e := optString(c, "name")
		if e != nil {
			e.Param = "tool_choice.name"
			return e
		}
		out["tool_choice"] = mustJSON(map[string]any{"type": "function", "function": map[string]string{"name": name}})
	}
	return nil
}

var chatMessageParam = regexp.MustCompile(`^messages\[(\d+)\]`)

// rename gives an error of the chat decoder the Responses field names.
func (meta *respMeta) rename(e *apiError) *apiError {
	p := e.Param
	if sm := chatMessageParam.FindStringSubmatch(p); sm != nil {
		i, _ := strconv.Atoi(sm[1])
		if i < meta.offset {
			p = "instructions"
		} else {
			p = "input[" + strconv.Itoa(i-meta.offset) + "]" + p[len(sm[0]):]
		}
	}
	for _, r := range [][2]string{
		{"max_completion_tokens", "max_output_tokens"},
		{"response_format.json_schema", "text.format"},
		{"response_format", "text.format"},
		{".function.", "."},
		{"tool_choice.function.name", "tool_choice.name"},
	} {
		if strings.HasPrefix(p, r[0]) {
			p = r[1] + p[len(r[0]):]
		} else if r[0] == ".function." && strings.HasPrefix(p, "tools[") {
			p = strings.Replace(p, r[0], r[1], 1)
		}
	}
	e.Param = p
	e.Message = strings.NewReplacer("max_completion_tokens", "max_output_tokens", "'messages'", "'input'",
		"response_format", "text.format").Replace(e.Message)
	return e
}

// Response objects.

type respUsage struct {
	InputTokens        int `json:"input_tokens"`
	InputTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"input_tokens_details"`
	OutputTokens        int `json:"output_tokens"`
	OutputTokensDetails struct {
		ReasoningTokens int `json:"reasoning_tokens"`
	} `json:"output_tokens_details"`
	TotalTokens int `json:"total_tokens"`
}

type respObject struct {
	ID                string          `json:"id"`
	Object            string          `json:"object"`
	CreatedAt         int64           `json:"created_at"`
	Status            string          `json:"status"`
	Error             *respError      `json:"error"`
	IncompleteDetails *respIncomplete `json:"incomplete_details"`
	Instructions      *string         `json:"instructions"`
	MaxOutputTokens   *int            `json:"max_output_tokens"`
	Model             string          `json:"model"`
	Output            []any           `json:"output"`
	ParallelToolCalls bool            `json:"parallel_tool_calls"`
	PreviousResponse  *string         `json:"previous_response_id"`
	Reasoning         struct {
		Effort  *string `json:"effort"`
		Summary *string `json:"summary"`
	} `json:"reasoning"`
	Store       bool            `json:"store"`
	Temperature float64         `json:"temperature"`
	Text        json.RawMessage `json:"text"`
	ToolChoice  json.RawMessage `json:"tool_choice"`
	Tools       json.RawMessage `json:"tools"`
	TopP        float64         `json:"top_p"`
	Truncation  string          `json:"truncation"`
	Usage       *respUsage      `json:"usage"`
	User        *string         `json:"user"`
	Metadata    json.RawMessage `json:"metadata"`
	Timings     *timingsJSON    `json:"timings,omitempty"`
}

type respError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

type respIncomplete struct {
	Reason string `json:"reason"`
}

type respText struct {
	Type        string          `json:"type"`
	Text        string          `json:"text"`
	Annotations []any           `json:"annotations"`
	Logprobs    json.RawMessage `json:"logprobs"`
}

var noLogprobs = json.RawMessage(`[]`)

// logprobEntries renders lps as the Responses API's output_text logprobs
// (chat's logprobs.content entries: token, logprob, bytes, top_logprobs);
// [] unless the request asked for them.
func (r *run) logprobEntries(lps []scheduler.Logprob) json.RawMessage {
	return r.appendLogprobEntries(nil, lps)
}

// appendLogprobEntries appends what logprobEntries returns.
func (r *run) appendLogprobEntries(dst []byte, lps []scheduler.Logprob) []byte {
	if !r.g.logprobs || len(lps) == 0 {
		return append(dst, noLogprobs...)
	}
	return r.appendChatContent(dst, lps)
}

type respMessage struct {
	ID      string     `json:"id"`
	Type    string     `json:"type"`
	Status  string     `json:"status"`
	Role    string     `json:"role"`
	Content []respText `json:"content"`
}

type respCall struct {
	ID        string `json:"id"`
	Type      string `json:"type"`
	Status    string `json:"status"`
	CallID    string `json:"call_id"`
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

func newItemID(prefix string) string { return prefix + strings.ReplaceAll(uuid.NewString(), "-", "") }

// respObj is the response with status and output; usage and timings once done.
func (r *run) respObj(status string, output []any, done bool) respObject {
	meta := r.resp
	o := respObject{ID: r.id, Object: "response", CreatedAt: r.created, Status: status, Instructions: meta.instructions,
		MaxOutputTokens: meta.maxOutputTokens, Model: r.model, Output: output, ParallelToolCalls: meta.parallel,
		Temperature: meta.temperature, Text: meta.text, ToolChoice: meta.toolChoice, Tools: meta.tools,
		TopP: meta.topP, Truncation: "disabled", User: meta.user, Metadata: meta.metadata}
	if o.Output == nil {
		o.Output = []any{}
	}
	if o.Metadata == nil {
		o.Metadata = json.RawMessage(`{}`)
	}
	if status == "incomplete" {
		o.IncompleteDetails = &respIncomplete{Reason: "max_output_tokens"}
	}
	if done {
		u, t := r.usage()
		var ru respUsage
		ru.InputTokens, ru.OutputTokens, ru.TotalTokens = u.PromptTokens, u.CompletionTokens, u.TotalTokens
		ru.InputTokensDetails.CachedTokens = u.PromptTokensDetails.CachedTokens
		o.Usage, o.Timings = &ru, &t
	}
	return o
}

// outcome is the finished choice's status and output items: its function
// calls when the answer is calls of the offered tools, else one message.
func (r *run) outcome(text, msgID string) (string, []any, []toolCallJSON) {
	c := &r.choices[0]
	status := "completed"
	if c.finish == "length" {
		status = "incomplete"
	}
	if len(r.g.tools) > 0 {
		if calls, ok := parseCalls(text, r.g.tools, c.finish); ok {
			out := make([]any, len(calls))
			for i, call := range calls {
				out[i] = respCall{ID: newItemID("fc_"), Type: "function_call", Status: "completed",
					CallID: call.ID, Name: call.Function.Name, Arguments: call.Function.Arguments}
			}
			return status, out, calls
		}
	}
	return status, []any{respMessage{ID: msgID, Type: "message", Status: status, Role: "assistant",
		Content: []respText{{Type: "output_text", Text: text, Annotations: []any{}, Logprobs: r.logprobEntries(c.lps)}}}}, nil
}

// collectResponse waits for the answer and renders the response object.
func (r *run) collectResponse() ([]byte, *apiError) {
	if e := r.gather(); e != nil {
		return nil, e
	}
	status, output, _ := r.outcome(r.choices[0].text.String(), newItemID("msg_"))
	return mustJSON(r.respObj(status, output, true)), nil
}

// streamResponse streams the Responses API's events: response.created and
// .in_progress, then the message item (output_item.added,
// content_part.added, output_text.delta..., output_text.done,
// content_part.done, output_item.done) or, for calls of the offered tools,
// one function_call item per call, and response.completed (or .incomplete
// when max_output_tokens cut it). A failure sends error and
// response.failed. With tools, an answer that starts with "{" is held back
// until it is known to be calls or text, and StreamInterval groups the
// deltas, as in chat streams.
func (r *run) streamResponse(w *bufio.Writer) {
	seq := 0
	emit := func(typ string, fields map[string]any) {
		fields["type"] = typ
		fields["sequence_number"] = seq
		seq++
		_, _ = w.WriteString("event: " + typ + "\ndata: ")
		_, _ = w.Write(mustJSON(fields))
		_, _ = w.WriteString("\n\n")
	}
	flush := func() bool {
		if w.Flush() != nil {
			r.disconnected()
			return false
		}
		return true
	}
	fail := func(e *apiError) {
		r.cancel()
		code := e.Code
		if code == "" {
			code = e.Type
		}
		emit("error", map[string]any{"code": code, "message": e.Message, "param": nil})
		o := r.respObj("failed", nil, false)
		o.Error = &respError{Code: code, Message: e.Message}
		emit("response.failed", map[string]any{"response": o})
		_ = w.Flush()
	}
	emit("response.created", map[string]any{"response": r.respObj("in_progress", nil, false)})
	emit("response.in_progress", map[string]any{"response": r.respObj("in_progress", nil, false)})
	if !flush() {
		return
	}
	msgID := newItemID("msg_")
	var delta []byte
	var full, hold strings.Builder
	var holdLP []scheduler.Logprob
	opened, plain := false, len(r.g.tools) == 0
	send := func(text string, lps []scheduler.Logprob) {
		if text == "" && len(lps) == 0 {
			return
		}
		if !opened {
			opened = true
			emit("response.output_item.added", map[string]any{"output_index": 0,
				"item": respMessage{ID: msgID, Type: "message", Status: "in_progress", Role: "assistant", Content: []respText{}}})
			emit("response.content_part.added", map[string]any{"item_id": msgID, "output_index": 0, "content_index": 0,
				"part": respText{Type: "output_text", Annotations: []any{}, Logprobs: noLogprobs}})
		}
		full.WriteString(text)
		r.choices[0].lps = append(r.choices[0].lps, lps...)
		// The one event per delta, written by hand into a reused buffer
		// (the others go through emit).
		delta = append(delta[:0], `{"type":"response.output_text.delta","sequence_number":`...)
		delta = strconv.AppendInt(delta, int64(seq), 10)
		seq++
		delta = append(delta, `,"item_id":`...)
		delta = appendJSONString(delta, msgID)
		delta = append(delta, `,"output_index":0,"content_index":0,"delta":`...)
		delta = appendJSONString(delta, text)
		delta = append(delta, `,"logprobs":`...)
		delta = r.appendLogprobEntries(delta, lps)
		delta = append(delta, "}\n\n"...)
		_, _ = w.WriteString("event: response.output_text.delta\ndata: ")
		_, _ = w.Write(delta)
	}
	// deliver sends text as it comes or, with StreamInterval N > 1, once it
	// spans N tokens (the first delta and the last go out at once).
	c := &r.choices[0]
	deliver := func(text string, lps []scheduler.Logprob, n int, last bool) {
		if r.s.cfg.StreamInterval <= 1 {
			send(text, lps)
			return
		}
		c.pend = append(c.pend, text...)
		c.pendLP = append(c.pendLP, lps...)
		c.pendN += n
		if (len(c.pend) > 0 || len(c.pendLP) > 0) && (!c.sent || c.pendN >= r.s.cfg.StreamInterval || last) {
			c.sent = true
			send(string(c.pend), c.pendLP)
			c.pend, c.pendN, c.pendLP = c.pend[:0], 0, nil
		}
	}
	sendHeld := func() { deliver("", nil, 0, true) }
	for {
		ce, how, e := r.advance()
		if e != nil {
			sendHeld()
			fail(e)
			return
		}
		if how == endDisconnected {
			return
		}
		if how == endDone {
			sendHeld()
			held := hold.String()
			if _, _, calls := r.outcome(full.String()+held, msgID); calls == nil {
				send(held, holdLP) // not calls after all: text
				held = ""
			}
			r.streamResponseEnd(w, emit, msgID, full.String()+held, opened)
			return
		}
		if plain {
			deliver(ce.ev.Text, ce.ev.Logprobs, len(ce.ev.Tokens), ce.ev.Done)
		} else {
			hold.WriteString(ce.ev.Text)
			holdLP = append(holdLP, ce.ev.Logprobs...)
			if h := hold.String(); h != "" && h[0] != '{' {
				plain = true
				hold.Reset()
				deliver(h, holdLP, len(holdLP), ce.ev.Done)
				holdLP = nil
			}
		}
		if len(r.events) == 0 && w.Buffered() > 0 && !flush() {
			return
		}
	}
}

// streamResponseEnd sends the output items' closing events (or, for calls,
// the whole function_call items) and response.completed / .incomplete.
func (r *run) streamResponseEnd(w *bufio.Writer, emit func(string, map[string]any), msgID, text string, opened bool) {
	status, output, calls := r.outcome(text, msgID)
	if calls != nil {
		for i, item := range output {
			call := item.(respCall)
			added := call
			added.Status, added.Arguments = "in_progress", ""
			emit("response.output_item.added", map[string]any{"output_index": i, "item": added})
			emit("response.function_call_arguments.delta", map[string]any{"item_id": call.ID, "output_index": i, "delta": call.Arguments})
			emit("response.function_call_arguments.done", map[string]any{"item_id": call.ID, "output_index": i,
				"name": call.Name, "arguments": call.Arguments})
			emit("response.output_item.done", map[string]any{"output_index": i, "item": call})
		}
	} else {
		msg := output[0].(respMessage)
		if !opened {
			emit("response.output_item.added", map[string]any{"output_index": 0,
				"item": respMessage{ID: msgID, Type: "message", Status: "in_progress", Role: "assistant", Content: []respText{}}})
			emit("response.content_part.added", map[string]any{"item_id": msgID, "output_index": 0, "content_index": 0,
				"part": respText{Type: "output_text", Annotations: []any{}, Logprobs: noLogprobs}})
		}
		emit("response.output_text.done", map[string]any{"item_id": msgID, "output_index": 0, "content_index": 0,
			"text": text, "logprobs": msg.Content[0].Logprobs})
		emit("response.content_part.done", map[string]any{"item_id": msgID, "output_index": 0, "content_index": 0,
			"part": msg.Content[0]})
		emit("response.output_item.done", map[string]any{"output_index": 0, "item": msg})
	}
	typ := "response.completed"
	if status == "incomplete" {
		typ = "response.incomplete"
	}
	emit(typ, map[string]any{"response": r.respObj(status, output, true)})
	if w.Flush() != nil {
		r.disconnected()
		return
	}
	r.s.metrics.e2e.WithLabelValues(r.endpoint).Observe(time.Since(r.arrived).Seconds())
}
