package gbnf

import (
	"strings"
	"testing"
)

// TestToolCalls: a call of either tool with valid arguments is accepted
// (whitespace as JSON allows, a $ref inside a tool's own parameters), a
// call with a wrong name, wrong arguments or extra text is not; with text
// a plain answer is accepted too, unless it starts with "{".
func TestToolCalls(t *testing.T) {
	tools := []Tool{
		{Name: "get_weather", Parameters: []byte(`{"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}}, "required": ["city"], "additionalProperties": false}`)},
		{Name: "add-node", Parameters: []byte(`{"$defs": {"n": {"type": "object", "properties": {"v": {"type": "integer"}, "next": {"$ref": "#/$defs/n"}}, "required": ["v"]}}, "$ref": "#/$defs/n"}`)},
		{Name: "noop"},
	}
	forced, err := ToolCalls(tools, false, false)
	if err != nil {
		t.Fatal(err)
	}
	auto, err := ToolCalls(tools, true, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(forced, "root"); err != nil {
		t.Fatalf("Check: %v\n%s", err, forced)
	}
	calls := []string{
		`{"name": "get_weather", "arguments": {"city": "Paris"}}`,
		`{"name":"get_weather","arguments":{"city":"Oslo","unit":"c"}}`,
		`{ "name" : "add-node" , "arguments" : {"v": 1, "next": {"v": 2}} }`,
		`{"name": "noop", "arguments": {}}`,
	}
	bad := []string{
		`{"name": "get_time", "arguments": {}}`,
		`{"name": "get_weather", "arguments": {"unit": "c"}}`,
		`{"name": "get_weather", "arguments": {"city": "Paris", "x": 1}}`,
		`{"name": "add-node", "arguments": {"v": "one"}}`,
		`{"arguments": {}, "name": "noop"}`,
		`{"name": "noop", "arguments": {}} and more`,
	}
	for _, s := range calls {
		for _, g := range []string{forced, auto} {
			if ok, why := accepts(t, g, s); !ok {
				t.Errorf("%s refused: %s", s, why)
			}
		}
	}
	for _, s := range bad {
		for _, g := range []string{forced, auto} {
			if ok, _ := accepts(t, g, s); ok {
				t.Errorf("%s accepted", s)
			}
		}
	}
	if ok, _ := accepts(t, auto, "It is sunny."); !ok {
		t.Error("auto refused a plain answer")
	}
	if ok, _ := accepts(t, forced, "It is sunny."); ok {
		t.Error("a forced call accepted a plain answer")
	}
	// Parallel calls: one per line, up to MaxParallelCalls.
	par, err := ToolCalls(tools, true, true)
	if err != nil {
		t.Fatal(err)
	}
	two := calls[0] + "\n" + calls[3]
	if ok, why := accepts(t, par, two); !ok {
		t.Errorf("two calls refused: %s", why)
	}
	if ok, _ := accepts(t, forced, two); ok {
		t.Error("two calls accepted without parallel")
	}
	if ok, _ := accepts(t, par, strings.Repeat(calls[3]+"\n", MaxParallelCalls)+calls[3]); ok {
		t.Errorf("more than %d calls accepted", MaxParallelCalls)
	}
	if _, err := ToolCalls([]Tool{{Name: "f", Parameters: []byte(`{"type": "string", "not": {"type": "null"}}`)}}, false, false); err == nil || !strings.Contains(err.Error(), "tools[0].function.parameters") || !strings.Contains(err.Error(), `"not"`) {
		t.Errorf("unsupported keyword: %v", err)
	}
	if _, err := ToolCalls(nil, true, false); err == nil {
		t.Error("no tools accepted")
	}
}

func TestChoice(t *testing.T) {
	g, err := Choice([]string{"yes", "no", `say "hi"\n`, "été"})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"yes", "no", `say "hi"\n`, "été"} {
		if ok, why := accepts(t, g, s); !ok {
			t.Errorf("%q refused: %s", s, why)
		}
	}
	for _, s := range []string{"ye", "yes ", "maybe", "noyes"} {
		if ok, _ := accepts(t, g, s); ok {
			t.Errorf("%q accepted", s)
		}
	}
	for _, bad := range [][]string{nil, {"a", ""}} {
		if _, err := Choice(bad); err == nil {
			t.Errorf("Choice(%q) accepted", bad)
		}
	}
}
