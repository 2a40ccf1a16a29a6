package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
)

// TestResponsesToChat: the Responses body becomes the chat body the chat
// path serves; what a stateless text server cannot honour is refused.
func TestResponsesToChat(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     map[string]any // chat body members to check
	}{
		{"string input, instructions, extensions pass",
			`{"model":"m","input":"hi","instructions":"be brief","max_output_tokens":5,"top_k":3,"store":true,"metadata":{"a":"b"}}`,
			map[string]any{"model": "m", "max_completion_tokens": 5.0, "top_k": 3.0,
				"messages": []any{map[string]any{"role": "system", "content": "be brief"}, map[string]any{"role": "user", "content": "hi"}}}},
		{"items",
			`{"input":[{"role":"user","content":[{"type":"input_text","text":"a"},{"type":"input_text","text":"b"}]},
			 {"type":"message","role":"assistant","content":[{"type":"output_text","text":"c"}]},
			 {"type":"function_call","call_id":"call_1","name":"f","arguments":"{}"},
			 {"type":"function_call_output","call_id":"call_1","output":"42"}]}`,
			map[string]any{"messages": []any{
				map[string]any{"role": "user", "content": "ab"},
				map[string]any{"role": "assistant", "content": "c"},
				map[string]any{"role": "assistant", "content": nil, "tool_calls": []any{map[string]any{"id": "call_1", "type": "function",
					"function": map[string]any{"name": "f", "arguments": "{}"}}}},
				map[string]any{"role": "tool", "tool_call_id": "call_1", "content": "42"}}}},
		{"tools and a named choice",
			`{"input":"x","tools":[{"type":"function","name":"f","description":"d","parameters":{"type":"object"},"strict":true}],
			 "tool_choice":{"type":"function","name":"f"},"parallel_tool_calls":false}`,
			map[string]any{"parallel_tool_calls": false,
				"tools":       []any{map[string]any{"type": "function", "function": map[string]any{"name": "f", "description": "d", "parameters": map[string]any{"type": "object"}}}},
				"tool_choice": map[string]any{"type": "function", "function": map[string]any{"name": "f"}}}},
		{"json schema",
			`{"input":"x","text":{"format":{"type":"json_schema","name":"p","schema":{"type":"object"},"strict":true}}}`,
			map[string]any{"response_format": map[string]any{"type": "json_schema",
				"json_schema": map[string]any{"name": "p", "schema": map[string]any{"type": "object"}, "strict": true}}}},
		{"json object", `{"input":"x","text":{"format":{"type":"json_object"}}}`,
			map[string]any{"response_format": map[string]any{"type": "json_object"}}},
		{"logprobs", `{"input":"x","include":["reasoning.encrypted_content","message.output_text.logprobs"],"top_logprobs":2}`,
			map[string]any{"logprobs": true, "top_logprobs": 2.0}},
		{"top_logprobs alone", `{"input":"x","top_logprobs":3}`, map[string]any{"logprobs": true, "top_logprobs": 3.0}},
		{"other includes", `{"input":"x","include":["reasoning.encrypted_content"]}`, map[string]any{"logprobs": nil}},
	} {
		body, _, e := responsesToChat([]byte(tc.in))
		if e != nil {
			t.Fatalf("%s: %v", tc.name, e)
		}
		var got map[string]any
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatal(err)
		}
		for k, v := range tc.want {
			if !reflect.DeepEqual(got[k], v) {
				t.Errorf("%s: %s = %#v, want %#v", tc.name, k, got[k], v)
			}
		}
		for _, k := range []string{"input", "instructions", "max_output_tokens", "text", "store", "metadata"} {
			if _, ok := got[k]; ok {
				t.Errorf("%s: %s passed to the chat body", tc.name, k)
			}
		}
	}
	for _, tc := range []struct{ in, param string }{
		{``, ""},
		{`[]`, ""},
		{`{"model":"m"}`, "input"},
		{`{"input":[]}`, "input"},
		{`{"input":7}`, "input"},
		{`{"input":"x","previous_response_id":"resp_1"}`, "previous_response_id"},
		{`{"input":"x","background":true}`, "background"},
		{`{"input":"x","include":"message.output_text.logprobs"}`, "include"},
		{`{"input":"x","truncation":"auto"}`, "truncation"},
		{`{"input":"x","reasoning":{"effort":"high"}}`, "reasoning"},
		{`{"input":"x","messages":[]}`, "messages"},
		{`{"input":"x","n":2}`, "n"},
		{`{"input":[{"role":"user","content":[{"type":"input_image","image_url":"u"}]}]}`, "input[0].content[0].type"},
		{`{"input":[{"role":"robot","content":"x"}]}`, "input[0].role"},
		{`{"input":[{"type":"reasoning","summary":[]}]}`, "input[0].type"},
		{`{"input":[{"type":"function_call","name":"f","arguments":"{}"}]}`, "input[0].call_id"},
		{`{"input":"x","tools":[{"type":"web_search"}]}`, "tools[0].type"},
		{`{"input":"x","tool_choice":{"type":"file_search"}}`, "tool_choice.type"},
		{`{"input":"x","text":{"format":{"type":"yaml"}}}`, "text.format.type"},
		{`{"input":"x","max_output_tokens":"many"}`, "max_output_tokens"},
		{`{"input":"x","metadata":[1]}`, "metadata"},
	} {
		_, _, e := responsesToChat([]byte(tc.in))
		if e == nil {
			t.Errorf("%s: accepted", tc.in)
			continue
		}
		if e.Status != http.StatusBadRequest || e.Param != tc.param {
			t.Errorf("%s: %d param %q (%s), want 400 param %q", tc.in, e.Status, e.Param, e.Message, tc.param)
		}
	}
}

// TestResponsesRenameErrors: the chat decoder's errors name the Responses
// fields.
func TestResponsesRenameErrors(t *testing.T) {
	for _, tc := range []struct{ in, param string }{
		{`{"input":"x","max_output_tokens":-1}`, "max_output_tokens"},
		{`{"input":"x","temperature":9}`, "temperature"},
		{`{"input":"x","text":{"format":{"type":"json_schema","name":"p","schema":{"type":"object","not":{}}}}}`, "text.format"},
		{`{"input":"x","tools":[{"type":"function","name":"bad name"}]}`, "tools[0].name"},
	} {
		body, meta, e := responsesToChat([]byte(tc.in))
		if e != nil {
			t.Fatalf("%s: translation refused: %v", tc.in, e)
		}
		_, e = decode(body, true, limits{maxN: 8, vocab: 512})
		if e == nil {
			t.Errorf("%s: the chat decoder accepted it", tc.in)
			continue
		}
		e = meta.rename(e)
		if !strings.HasPrefix(e.Param, tc.param) || strings.Contains(e.Message, "max_completion_tokens") {
			t.Errorf("%s: param %q (%s), want %q...", tc.in, e.Param, e.Message, tc.param)
		}
	}
}

// TestResponsesRenameMessages: messages[i] is input[i] after the
// instructions' system message.
func TestResponsesRenameMessages(t *testing.T) {
	meta := &respMeta{offset: 1}
	for _, tc := range [][2]string{{"messages[0].content", "instructions"}, {"messages[2].content", "input[1].content"}, {"messages", "messages"}} {
		if got := meta.rename(&apiError{Param: tc[0]}).Param; got != tc[1] {
			t.Errorf("%s: %s, want %s", tc[0], got, tc[1])
		}
	}
}

// TestRealSDKResponses: /v1/responses through the official SDK on the real
// scheduler: the greedy answer is the chat completion's for the same
// messages, with the same usage; streamed, the deltas add up to it and the
// last event carries the whole response; json_schema, tools and a
// conversation with a tool's result work; a refused field is a 400 naming
// it.
func TestRealSDKResponses(t *testing.T) {
	b, c := realServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	model := b.ModelID()

	p := responses.ResponseNewParams{Model: model, Instructions: openai.String("You tell stories."),
		Input:           responses.ResponseNewParamsInputUnion{OfString: openai.String("Once upon a time")},
		MaxOutputTokens: openai.Int(40), Temperature: openai.Float(0)}
	res, err := c.Responses.New(ctx, p, option.WithJSONSet("ignore_eos", true))
	if err != nil {
		t.Fatal(err)
	}
	chat, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: model, MaxTokens: openai.Int(40), Temperature: openai.Float(0),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("You tell stories."), openai.UserMessage("Once upon a time")}},
		option.WithJSONSet("ignore_eos", true))
	if err != nil {
		t.Fatal(err)
	}
	text := res.OutputText()
	if text == "" || text != chat.Choices[0].Message.Content {
		t.Fatalf("response %q, chat %q", text, chat.Choices[0].Message.Content)
	}
	if !strings.HasPrefix(res.ID, "resp_") || res.Status != responses.ResponseStatusIncomplete ||
		res.IncompleteDetails.Reason != "max_output_tokens" || res.Instructions.OfString != "You tell stories." {
		t.Fatalf("response %s: status %q, incomplete %+v, instructions %+v", res.ID, res.Status, res.IncompleteDetails, res.Instructions)
	}
	if u := res.Usage; u.OutputTokens != 40 || u.InputTokens != chat.Usage.PromptTokens || u.TotalTokens != u.InputTokens+40 {
		t.Fatalf("usage %+v, chat's %+v", u, chat.Usage)
	}

	// Streamed: the same text in deltas, events in order, the whole
	// response last.
	st := c.Responses.NewStreaming(ctx, p, option.WithJSONSet("ignore_eos", true))
	var deltas strings.Builder
	var types []string
	var last responses.ResponseStreamEventUnion
	seq := int64(-1)
	for st.Next() {
		ev := st.Current()
		if ev.SequenceNumber != seq+1 {
			t.Fatalf("event %s: sequence number %d after %d", ev.Type, ev.SequenceNumber, seq)
		}
		seq = ev.SequenceNumber
		if ev.Type == "response.output_text.delta" {
			deltas.WriteString(ev.Delta)
		}
		if len(types) == 0 || types[len(types)-1] != ev.Type {
			types = append(types, ev.Type)
		}
		last = ev
	}
	if err := st.Err(); err != nil {
		t.Fatal(err)
	}
	wantTypes := []string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
		"response.output_text.delta", "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.incomplete"}
	if !reflect.DeepEqual(types, wantTypes) {
		t.Fatalf("events %v, want %v", types, wantTypes)
	}
	if deltas.String() != text || last.Response.OutputText() != text || last.Response.Usage.OutputTokens != 40 {
		t.Fatalf("streamed %q, final %q (%d tokens), want %q", deltas.String(), last.Response.OutputText(), last.Response.Usage.OutputTokens, text)
	}

	// Logprobs: chat's entries for the same request, streamed alike.
	lp := p
	lp.Include = []responses.ResponseIncludable{responses.ResponseIncludableMessageOutputTextLogprobs}
	lp.TopLogprobs = openai.Int(3)
	res, err = c.Responses.New(ctx, lp, option.WithJSONSet("ignore_eos", true))
	if err != nil {
		t.Fatal(err)
	}
	chatLP, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: model, MaxTokens: openai.Int(40), Temperature: openai.Float(0),
		Logprobs: openai.Bool(true), TopLogprobs: openai.Int(3),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("You tell stories."), openai.UserMessage("Once upon a time")}},
		option.WithJSONSet("ignore_eos", true))
	if err != nil {
		t.Fatal(err)
	}
	got := res.Output[0].Content[0].Logprobs
	want := chatLP.Choices[0].Logprobs.Content
	if len(got) != 40 || len(got) != len(want) {
		t.Fatalf("%d logprobs, chat %d", len(got), len(want))
	}
	for i := range got {
		if got[i].Token != want[i].Token || got[i].Logprob != want[i].Logprob || len(got[i].TopLogprobs) != 3 {
			t.Fatalf("logprob %d: %+v, chat %+v", i, got[i], want[i])
		}
	}
	st = c.Responses.NewStreaming(ctx, lp, option.WithJSONSet("ignore_eos", true))
	n := 0
	for st.Next() {
		if ev := st.Current(); ev.Type == "response.output_text.delta" {
			for _, e := range ev.Logprobs.OfResponseTextDeltaEventLogprobs {
				if n >= len(want) || e.Token != want[n].Token || e.Logprob != want[n].Logprob {
					t.Fatalf("streamed logprob %d: %+v", n, e)
				}
				n++
			}
		}
	}
	if err := st.Err(); err != nil || n != len(want) {
		t.Fatalf("%d streamed logprobs, want %d (%v)", n, len(want), err)
	}

	// Structured output.
	res, err = c.Responses.New(ctx, responses.ResponseNewParams{Model: model, MaxOutputTokens: openai.Int(120), Temperature: openai.Float(0),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Tell me about a girl and her pets.")},
		Text: responses.ResponseTextConfigParam{Format: responses.ResponseFormatTextConfigUnionParam{
			OfJSONSchema: &responses.ResponseFormatTextJSONSchemaConfigParam{Name: "person", Schema: personSchema, Strict: openai.Bool(true)}}}})
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(res.OutputText()), &v); err != nil || res.Status != responses.ResponseStatusCompleted || len(v) != 3 {
		t.Fatalf("json_schema: %q (%s): %v", res.OutputText(), res.Status, err)
	}

	// A required tool call, then the conversation with its result.
	tools := []responses.ToolUnionParam{{OfFunction: &responses.FunctionToolParam{Name: "get_weather", Strict: openai.Bool(true),
		Parameters: weatherTool.OfFunction.Function.Parameters}}}
	input := responses.ResponseInputParam{responses.ResponseInputItemParamOfMessage("What is the weather in Paris?", responses.EasyInputMessageRoleUser)}
	tp := responses.ResponseNewParams{Model: model, MaxOutputTokens: openai.Int(200), Temperature: openai.Float(0), Tools: tools,
		Input:      responses.ResponseNewParamsInputUnion{OfInputItemList: input},
		ToolChoice: responses.ResponseNewParamsToolChoiceUnion{OfToolChoiceMode: openai.Opt(responses.ToolChoiceOptionsRequired)}}
	res, err = c.Responses.New(ctx, tp)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Output) == 0 || res.Output[0].Type != "function_call" {
		t.Fatalf("tool_choice required: output %s", res.RawJSON())
	}
	call := res.Output[0].AsFunctionCall()
	if err := json.Unmarshal([]byte(call.Arguments), &v); err != nil || call.Name != "get_weather" || !strings.HasPrefix(call.CallID, "call_") {
		t.Fatalf("call %+v: %v", call, err)
	}
	st = c.Responses.NewStreaming(ctx, tp)
	var args string
	for st.Next() {
		if ev := st.Current(); ev.Type == "response.function_call_arguments.done" {
			args = ev.Arguments
		}
	}
	if err := st.Err(); err != nil || args != call.Arguments {
		t.Fatalf("streamed call arguments %q, want %q (%v)", args, call.Arguments, err)
	}
	result := responses.ResponseInputItemParamOfFunctionCallOutput("sunny, 21 degrees")
	result.OfFunctionCallOutput.CallID = openai.String(call.CallID)
	input = append(input, responses.ResponseInputItemParamOfFunctionCall(call.Arguments, call.CallID, call.Name), result)
	tp.Input.OfInputItemList, tp.ToolChoice = input, responses.ResponseNewParamsToolChoiceUnion{OfToolChoiceMode: openai.Opt(responses.ToolChoiceOptionsNone)}
	if res, err = c.Responses.New(ctx, tp); err != nil || res.OutputText() == "" {
		t.Fatalf("after the tool's result: %v %s", err, res.RawJSON())
	}

	// Refused: stored state.
	_, err = c.Responses.New(ctx, responses.ResponseNewParams{Model: model, PreviousResponseID: openai.String("resp_x"),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hi")}})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Param != "previous_response_id" {
		t.Fatalf("previous_response_id: %v", err)
	}
}

// respEvents parses a Responses stream: each event's type line and data,
// checking that the data's own type is the event's.
func respEvents(t *testing.T, body string) ([]string, []map[string]any) {
	t.Helper()
	var types []string
	var data []map[string]any
	for _, block := range strings.Split(strings.TrimSpace(body), "\n\n") {
		lines := strings.Split(block, "\n")
		if len(lines) != 2 || !strings.HasPrefix(lines[0], "event: ") || !strings.HasPrefix(lines[1], "data: ") {
			t.Fatalf("bad event %q", block)
		}
		var d map[string]any
		if err := json.Unmarshal([]byte(strings.TrimPrefix(lines[1], "data: ")), &d); err != nil {
			t.Fatal(err)
		}
		typ := strings.TrimPrefix(lines[0], "event: ")
		if d["type"] != typ {
			t.Fatalf("event %s carries type %v", typ, d["type"])
		}
		types, data = append(types, typ), append(data, d)
	}
	return types, data
}

// TestResponsesFake: failures, timeouts and hang-ups of /v1/responses, on
// the fake backend: a failed generation is a 500, or in a stream an error
// event and response.failed; a timeout's and a gone client's requests are
// cancelled in the backend.
func TestResponsesFake(t *testing.T) {
	f := newFake()
	_, url := startServer(t, Config{}, f)
	res := do(t, "POST", url+"/v1/responses", `{"input":"a","max_output_tokens":5,"ignore_eos":true}`)
	var obj struct {
		Object, Status string
		Output         []struct {
			Type    string
			Content []struct{ Text string }
		}
		Usage struct {
			OutputTokens int `json:"output_tokens"`
		}
	}
	if err := json.Unmarshal(res.body, &obj); err != nil || res.status != 200 || obj.Object != "response" || obj.Status != "incomplete" ||
		len(obj.Output) != 1 || obj.Output[0].Content[0].Text == "" || obj.Usage.OutputTokens != 5 {
		t.Fatalf("%d %s", res.status, res.body)
	}
	f.failAfter = 2
	if res := do(t, "POST", url+"/v1/responses", `{"input":"a","max_output_tokens":5,"ignore_eos":true}`); res.status != 500 {
		t.Errorf("failing generation: %d %s", res.status, res.body)
	}
	res = do(t, "POST", url+"/v1/responses", `{"input":"a","max_output_tokens":5,"ignore_eos":true,"stream":true}`)
	types, data := respEvents(t, string(res.body))
	n := len(types)
	if res.status != 200 || n < 4 || types[n-2] != "error" || types[n-1] != "response.failed" ||
		data[n-1]["response"].(map[string]any)["status"] != "failed" || data[n-2]["message"] == "" {
		t.Errorf("failing stream: %d %v", res.status, types)
	}
	f.failAfter = 0

	// stream_interval groups the deltas; they add up to the text.
	_, grouped := startServer(t, Config{StreamInterval: 4}, f)
	types, data = respEvents(t, string(do(t, "POST", grouped+"/v1/responses", `{"input":"c","max_output_tokens":20,"ignore_eos":true,"stream":true}`).body))
	var deltas []string
	for i, typ := range types {
		if typ == "response.output_text.delta" {
			deltas = append(deltas, data[i]["delta"].(string))
		}
	}
	final := data[len(data)-1]["response"].(map[string]any)["output"].([]any)[0].(map[string]any)["content"].([]any)[0].(map[string]any)["text"]
	if len(deltas) < 2 || len(deltas) > 6 || strings.Join(deltas, "") != final {
		t.Errorf("stream_interval 4: deltas %q, want at most 6 making %q", deltas, final)
	}

	f.tokenDelay = 20 * time.Millisecond
	_, slow := startServer(t, Config{RequestTimeout: 100 * time.Millisecond}, f)
	res = do(t, "POST", slow+"/v1/responses", `{"input":"a","max_output_tokens":100,"ignore_eos":true,"stream":true}`)
	types, data = respEvents(t, string(res.body))
	if n := len(types); n < 2 || types[n-2] != "error" || data[n-2]["code"] != "timeout" {
		t.Errorf("stream timeout: %v", types)
	}

	// A client that hangs up after the first delta.
	resp, err := http.Post(url+"/v1/responses", "application/json", strings.NewReader(`{"input":"b","max_output_tokens":100,"ignore_eos":true,"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	var got strings.Builder
	for !strings.Contains(got.String(), "response.output_text.delta") {
		if _, err := resp.Body.Read(buf); err != nil {
			t.Fatal(err)
		}
		got.Write(buf)
	}
	resp.Body.Close()
	for _, r := range f.requests() {
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Fatal("a request still runs 10 s after its client left")
		}
		if r.req.MaxTokens == 100 && !r.cancelled.Load() {
			t.Errorf("request %q was not cancelled", r.req.Prompt)
		}
	}
}
