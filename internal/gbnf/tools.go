package gbnf

import (
	"fmt"
	"strings"
)

// MaxParallelCalls bounds the calls of one answer with parallel calls.
const MaxParallelCalls = 8

// Tool is one function a chat request offers the model: its name and the
// JSON Schema of its arguments (empty: no arguments, as OpenAI reads an
// omitted parameters).
type Tool struct {
	Name       string
	Parameters []byte
}

// ToolCalls is a grammar (root rule "root") for a tool call written as
// one JSON object, {"name": NAME, "arguments": {...}}, with the arguments
// valid against that tool's parameters (the subset FromSchema takes, each
// tool's $refs resolved within its own parameters). With text, the
// grammar also allows a plain answer instead: any text that does not start
// with "{" (tool_choice "auto"); without, a call is the only answer
// ("required", or one named tool). With parallel, up to MaxParallelCalls
// calls may follow one another, one per line.
func ToolCalls(tools []Tool, text, parallel bool) (string, error) {
	if len(tools) == 0 {
		return "", fmt.Errorf("tools: no tool to call")
	}
	g := newGrammar()
	space := g.prim("space")
	var calls []string
	for i, t := range tools {
		params := t.Parameters
		if len(strings.TrimSpace(string(params))) == 0 {
			params = []byte(`{"type": "object", "properties": {}, "additionalProperties": false}`)
		}
		args := g.fresh("tool-" + t.Name + "-arguments")
		if err := g.addSchema(params, args); err != nil {
			return "", fmt.Errorf("tools[%d].function.parameters: %v", i, strings.TrimPrefix(err.Error(), "json_schema: "))
		}
		call := g.fresh("tool-" + t.Name)
		g.define(call, fmt.Sprintf(`"{" %s "\"name\"" %s ":" %s %s %s "," %s "\"arguments\"" %s ":" %s %s %s "}"`,
			space, space, space, literal(quote(t.Name)), space, space, space, space, args, space))
		calls = append(calls, call)
	}
	body := strings.Join(calls, " | ")
	if parallel {
		call := g.fresh("call")
		g.define(call, body)
		body = call + ` ("\n" ` + call + `){0,` + fmt.Sprint(MaxParallelCalls-1) + `}`
	}
	if text {
		plain := g.fresh("plain")
		g.define(plain, `[^{] .*`)
		body = "(" + body + ") | " + plain
	}
	g.define("root", body)
	return g.finish("tools")
}
