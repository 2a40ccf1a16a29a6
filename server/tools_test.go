package server

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/shared"

	"specd/internal/gbnf"
)

var weatherTool = openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{
	Name:        "get_weather",
	Description: openai.String("The weather in a city"),
	Parameters: shared.FunctionParameters{
		"type": "object",
		"properties": map[string]any{
			"city": map[string]any{"type": "string", "maxLength": 20},
			"unit": map[string]any{"enum": []string{"c", "f"}},
		},
		"required":             []string{"city", "unit"},
		"additionalProperties": false,
	},
})

var timeTool = openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{Name: "get_time"})

// TestRealSDKToolCalls: with tool_choice required or a named function the
// answer is a call the SDK reads (tool_calls, finish_reason tool_calls)
// whose arguments fit the tool's parameters; streamed, the accumulated
// call is the same; auto gives a call or plain text; a conversation with
// the call and the tool's result goes on.
func TestRealSDKToolCalls(t *testing.T) {
	b, c := realServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	msgs := []openai.ChatCompletionMessageParamUnion{openai.UserMessage("What is the weather in Paris?")}
	tools := []openai.ChatCompletionToolUnionParam{weatherTool, timeTool}
	for _, tc := range []struct {
		name     string
		choice   openai.ChatCompletionToolChoiceOptionUnionParam
		parallel bool
		want     string // the tool that must be called; "" any
	}{
		{"required", openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("required")}, false, ""},
		{"required, parallel", openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("required")}, true, ""},
		{"named", openai.ToolChoiceOptionFunctionToolChoice(openai.ChatCompletionNamedToolChoiceFunctionParam{Name: "get_weather"}), true, "get_weather"},
		{"named without parameters", openai.ToolChoiceOptionFunctionToolChoice(openai.ChatCompletionNamedToolChoiceFunctionParam{Name: "get_time"}), true, "get_time"},
	} {
		p := openai.ChatCompletionNewParams{Model: openai.ChatModel(b.ModelID()), Messages: msgs, Tools: tools, ToolChoice: tc.choice,
			ParallelToolCalls: openai.Bool(tc.parallel), MaxTokens: openai.Int(400), Temperature: openai.Float(0)}
		res, err := c.Chat.Completions.New(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		ch := res.Choices[0]
		n := len(ch.Message.ToolCalls)
		if ch.FinishReason != "tool_calls" || n == 0 || (!tc.parallel || tc.want != "") && n != 1 || n > gbnf.MaxParallelCalls || ch.Message.Content != "" {
			t.Fatalf("%s: finish %q, %d calls, content %q", tc.name, ch.FinishReason, n, ch.Message.Content)
		}
		var call openai.ChatCompletionMessageToolCallUnion
		for _, call = range ch.Message.ToolCalls {
			fn := call.Function
			if !strings.HasPrefix(call.ID, "call_") || (tc.want != "" && fn.Name != tc.want) {
				t.Fatalf("%s: call %+v", tc.name, call)
			}
			var args map[string]any
			if err := json.Unmarshal([]byte(fn.Arguments), &args); err != nil {
				t.Fatalf("%s: arguments %q: %v", tc.name, fn.Arguments, err)
			}
			switch fn.Name {
			case "get_weather":
				city, ok := args["city"].(string)
				if unit := args["unit"]; !ok || len(city) > 20 || (unit != "c" && unit != "f") || len(args) != 2 {
					t.Fatalf("%s: arguments %s do not fit the parameters", tc.name, fn.Arguments)
				}
			case "get_time":
				if len(args) != 0 {
					t.Fatalf("%s: get_time takes no arguments, got %s", tc.name, fn.Arguments)
				}
			}
			t.Logf("%s: %s(%s)", tc.name, fn.Name, fn.Arguments)
		}
		call = ch.Message.ToolCalls[0]
		fn := call.Function

		// Streamed: the accumulated call is the same.
		st := c.Chat.Completions.NewStreaming(ctx, p)
		var acc openai.ChatCompletionAccumulator
		for st.Next() {
			acc.AddChunk(st.Current())
		}
		if err := st.Err(); err != nil {
			t.Fatal(err)
		}
		sc := acc.Choices[0]
		if sc.FinishReason != "tool_calls" || len(sc.Message.ToolCalls) != n || sc.Message.ToolCalls[0].Function.Name != fn.Name ||
			sc.Message.ToolCalls[0].Function.Arguments != fn.Arguments || sc.Message.Content != "" {
			t.Fatalf("%s: streamed %+v, plain %d calls, the first %s(%s)", tc.name, sc, n, fn.Name, fn.Arguments)
		}

		if tc.name == "named" {
			// The conversation goes on with the call and its result.
			next := append(append([]openai.ChatCompletionMessageParamUnion(nil), msgs...), ch.Message.ToParam(),
				openai.ToolMessage(`{"temperature": 21}`, call.ID))
			res, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: openai.ChatModel(b.ModelID()),
				Messages: next, Tools: tools, MaxTokens: openai.Int(20), Temperature: openai.Float(0)})
			if err != nil {
				t.Fatal(err)
			}
			if m := res.Choices[0].Message; m.Content == "" && len(m.ToolCalls) == 0 {
				t.Fatal("nothing after the tool's result")
			}
		}
	}

	// auto: a call, or a plain answer that does not start like one.
	res, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: openai.ChatModel(b.ModelID()), Messages: msgs,
		Tools: tools, MaxTokens: openai.Int(30), Temperature: openai.Float(0)})
	if err != nil {
		t.Fatal(err)
	}
	if m := res.Choices[0].Message; len(m.ToolCalls) == 0 && (m.Content == "" || strings.HasPrefix(m.Content, "{")) {
		t.Fatalf("auto: content %q and no call", m.Content)
	}
	// none: tools are not offered, the answer is text.
	res, err = c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: openai.ChatModel(b.ModelID()), Messages: msgs,
		Tools: tools, ToolChoice: openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("none")}, MaxTokens: openai.Int(10), Temperature: openai.Float(0)})
	if err != nil {
		t.Fatal(err)
	}
	if m := res.Choices[0].Message; len(m.ToolCalls) != 0 || m.Content == "" {
		t.Fatalf("none: %+v", m)
	}
	noGrammarsLeft(t)
}

// TestParseCalls: answers as the tool-call grammar writes them, one call
// or several (one per line), and what is not a call.
func TestParseCalls(t *testing.T) {
	tools := []chatTool{{Name: "a"}, {Name: "b_2"}}
	calls, ok := parseCalls("{\"name\": \"a\", \"arguments\": {\"x\": [1, 2]}}\n{ \"name\":\"b_2\",\n \"arguments\":{} }", tools, "stop")
	if !ok || len(calls) != 2 || calls[0].Function.Name != "a" || calls[0].Function.Arguments != `{"x":[1,2]}` ||
		calls[1].Function.Name != "b_2" || calls[1].Function.Arguments != "{}" || calls[0].ID == calls[1].ID || calls[0].Type != "function" {
		t.Fatalf("%+v, %v", calls, ok)
	}
	for _, s := range []string{"", "plain", `{"name": "c", "arguments": {}}`, `{"name": "a"}`, `{"name": "a", "arguments": {}} tail`, `{"name": "a", "arguments": {`} {
		if calls, ok := parseCalls(s, tools, "stop"); ok {
			t.Errorf("%q parsed as %+v", s, calls)
		}
	}
	// Cut short: the complete calls before the cut.
	if calls, ok := parseCalls(`{"name": "a", "arguments": {}}`+"\n"+`{"name": "b_2", "argu`, tools, "length"); !ok || len(calls) != 1 || calls[0].Function.Name != "a" {
		t.Errorf("cut short: %+v, %v", calls, ok)
	}
	if _, ok := parseCalls(`{"name": "a", "argu`, tools, "length"); ok {
		t.Error("a call cut short parsed")
	}
}
