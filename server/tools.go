package server

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"specd/internal/gbnf"
	"specd/scheduler"
)

// Tool calling (chat): the tools are described to the model in a system
// message, and a grammar makes the answer either a well-formed call,
// {"name": NAME, "arguments": {...}} with arguments valid against the
// tool's parameters, or (tool_choice "auto") a plain answer that does not
// start with "{". A call is returned as OpenAI's message.tool_calls with
// finish_reason "tool_calls". With parallel_tool_calls (the default) an
// answer may hold up to gbnf.MaxParallelCalls calls, one per line. See
// decision 0016.

// maxTools bounds a request's tools (each is a grammar of its own).
const maxTools = 128

var toolName = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// chatTool is one offered function.
type chatTool struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
}

// decodeTools reads tools and tool_choice. With tools and a tool_choice
// other than "none" it sets g.tools (the tools the answer may call) and
// g.grammar, and adds the tools' description to the messages.
func (g *genRequest) decodeTools(m map[string]json.RawMessage) *apiError {
	r, ok := m["tools"]
	if !ok || isNull(r) || emptyArray(r) {
		if c, ok := m["tool_choice"]; ok && !isNull(c) && string(c) != `"none"` && string(c) != `"auto"` {
			return badRequest("tool_choice", "'tool_choice' needs 'tools'")
		}
		return nil
	}
	if !g.chat {
		return badRequest("tools", "'tools' is a chat completions parameter")
	}
	var list []struct {
		Type     string    `json:"type"`
		Function *chatTool `json:"function"`
	}
	if r[0] != '[' || json.Unmarshal(r, &list) != nil {
		return wrongType("tools", `an array of {"type": "function", "function": {"name", "description", "parameters"}}`)
	}
	if len(list) > maxTools {
		return invalidValue("tools", "at most %d tools, got %d", maxTools, len(list))
	}
	var tools []chatTool
	for i, t := range list {
		p := "tools[" + strconv.Itoa(i) + "]"
		if t.Type != "function" || t.Function == nil {
			return invalidValue(p, "'%s' must be {\"type\": \"function\", \"function\": {...}}", p)
		}
		if !toolName.MatchString(t.Function.Name) {
			return invalidValue(p+".function.name", "tool names are 1 to 64 letters, digits, '_' or '-', got %q", t.Function.Name)
		}
		for _, u := range tools {
			if u.Name == t.Function.Name {
				return invalidValue(p+".function.name", "tool %q is listed twice", u.Name)
			}
		}
		tools = append(tools, *t.Function)
	}

	choice, named := "auto", ""
	if c, ok := m["tool_choice"]; ok && !isNull(c) {
		var s string
		var obj struct {
			Type     string `json:"type"`
			Function struct {
				Name string `json:"name"`
			} `json:"function"`
		}
		switch {
		case json.Unmarshal(c, &s) == nil && (s == "none" || s == "auto" || s == "required"):
			choice = s
		case json.Unmarshal(c, &obj) == nil && obj.Type == "function":
			choice, named = "named", obj.Function.Name
		default:
			return invalidValue("tool_choice", `'tool_choice' must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}`)
		}
	}
	if choice == "none" {
		return nil
	}
	if named != "" {
		i := -1
		for j, t := range tools {
			if t.Name == named {
				i = j
			}
		}
		if i < 0 {
			return invalidValue("tool_choice", "tool_choice names %q, which is not in 'tools'", named)
		}
		tools = tools[i : i+1]
	}
	if g.grammar != "" {
		return badRequest("tools", "tools cannot be combined with response_format, grammar or json_schema")
	}
	gt := make([]gbnf.Tool, len(tools))
	for i, t := range tools {
		gt[i] = gbnf.Tool{Name: t.Name, Parameters: t.Parameters}
	}
	// parallel_tool_calls (OpenAI's default true): several calls, one per
	// line; a named tool_choice is one call of that tool.
	parallel, set, e := optBool(m, "parallel_tool_calls")
	if e != nil {
		return e
	}
	parallel = (parallel || !set) && choice != "named"
	text, err := gbnf.ToolCalls(gt, choice == "auto", parallel)
	if err != nil {
		return invalidValue("tools", "%v", err)
	}
	g.grammar, g.tools = text, tools
	g.messages = withToolPrompt(g.messages, tools, choice)
	return nil
}

// withToolPrompt puts the tools' description into the system message (a
// new one first if there is none).
func withToolPrompt(msgs []scheduler.ChatMessage, tools []chatTool, choice string) []scheduler.ChatMessage {
	var b strings.Builder
	b.WriteString("You can call these tools:\n")
	for _, t := range tools {
		line, _ := json.Marshal(t)
		b.Write(line)
		b.WriteByte('\n')
	}
	b.WriteString(`To call a tool, answer with only a JSON object {"name": <the tool's name>, "arguments": <its arguments>} (to call several, one per line).`)
	switch choice {
	case "auto":
		b.WriteString(" Otherwise answer in plain text.")
	case "required":
		b.WriteString(" You must call one of them.")
	case "named":
		b.WriteString(" You must call " + tools[0].Name + ".")
	}
	if len(msgs) > 0 && (msgs[0].Role == "system" || msgs[0].Role == "developer") {
		out := append([]scheduler.ChatMessage(nil), msgs...)
		out[0].Content = strings.TrimRight(out[0].Content, "\n") + "\n\n" + b.String()
		return out
	}
	return append([]scheduler.ChatMessage{{Role: "system", Content: b.String()}}, msgs...)
}

// toolCallJSON is one entry of message.tool_calls.
type toolCallJSON struct {
	Index    *int   `json:"index,omitempty"` // streamed deltas only
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

// parseCalls reads an answer as calls of the tools (what the grammar lets
// the model write: JSON objects one after another): ok false for a plain
// answer. An answer cut short (finish "length") gives the calls complete
// before the cut, if any.
func parseCalls(text string, tools []chatTool, finish string) ([]toolCallJSON, bool) {
	if !strings.HasPrefix(text, "{") {
		return nil, false
	}
	var calls []toolCallJSON
	dec := json.NewDecoder(strings.NewReader(text))
	for dec.More() {
		var v struct {
			Name      string          `json:"name"`
			Arguments json.RawMessage `json:"arguments"`
		}
		if dec.Decode(&v) != nil || len(v.Arguments) == 0 {
			if finish == "length" {
				break
			}
			return nil, false
		}
		known := false
		for _, t := range tools {
			known = known || t.Name == v.Name
		}
		var args bytes.Buffer
		if !known || json.Compact(&args, v.Arguments) != nil {
			return nil, false
		}
		var c toolCallJSON
		c.ID, c.Type = "call_"+strings.ReplaceAll(uuid.NewString(), "-", ""), "function"
		c.Function.Name, c.Function.Arguments = v.Name, args.String()
		calls = append(calls, c)
	}
	return calls, len(calls) > 0
}

// assistantCalls renders an assistant message's tool_calls (conversation
// history) as the text a call is written as, so the model sees its own
// earlier calls.
func assistantCalls(r json.RawMessage, p string) (string, *apiError) {
	var calls []struct {
		Function struct {
			Name      string `json:"name"`
			Arguments string `json:"arguments"`
		} `json:"function"`
	}
	if json.Unmarshal(r, &calls) != nil {
		return "", wrongType(p, "an array of tool calls")
	}
	var b strings.Builder
	for _, c := range calls {
		args := json.RawMessage(c.Function.Arguments)
		if !json.Valid(args) {
			args, _ = json.Marshal(c.Function.Arguments)
		}
		line, _ := json.Marshal(struct {
			Name      string          `json:"name"`
			Arguments json.RawMessage `json:"arguments"`
		}{c.Function.Name, args})
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		b.Write(line)
	}
	return b.String(), nil
}
