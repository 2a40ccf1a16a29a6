package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"

	"specd/engine"
)

// personSchema: what a structured-output client sends.
var personSchema = map[string]any{
	"type": "object",
	"properties": map[string]any{
		"name": map[string]any{"type": "string", "maxLength": 12},
		"age":  map[string]any{"type": "integer"},
		"pets": map[string]any{"type": "array", "items": map[string]any{"enum": []any{"cat", "dog", "bird"}}, "maxItems": 3},
	},
	"required":             []string{"name", "age", "pets"},
	"additionalProperties": false,
}

// TestRealSDKStructuredOutputs: response_format json_schema and
// json_object, and llama-server's grammar field, through the official SDK
// on the real backend: every answer that ends parses and fits its format,
// streamed text equals the plain answer, and speculation (n-gram, a
// prediction) changes nothing. No grammar is left behind.
func TestRealSDKStructuredOutputs(t *testing.T) {
	b, c := realServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	msgs := []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Tell me about a girl and her pets.")}

	// json_schema, greedy and sampled.
	for _, temp := range []float64{0, 0.8} {
		p := openai.ChatCompletionNewParams{Model: openai.ChatModel(b.ModelID()), Messages: msgs,
			MaxTokens: openai.Int(120), Temperature: openai.Float(temp), Seed: openai.Int(3),
			ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONSchema: &shared.ResponseFormatJSONSchemaParam{
				JSONSchema: shared.ResponseFormatJSONSchemaJSONSchemaParam{Name: "person", Schema: personSchema, Strict: openai.Bool(true)}}}}
		res, err := c.Chat.Completions.New(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		text := res.Choices[0].Message.Content
		if res.Choices[0].FinishReason != "stop" {
			t.Fatalf("temperature %v: %q did not end (%s)", temp, text, res.Choices[0].FinishReason)
		}
		var v map[string]any
		if err := json.Unmarshal([]byte(text), &v); err != nil {
			t.Fatalf("temperature %v: %q is not JSON: %v", temp, text, err)
		}
		name, ok1 := v["name"].(string)
		age, ok2 := v["age"].(float64)
		pets, ok3 := v["pets"].([]any)
		if !ok1 || !ok2 || !ok3 || len(v) != 3 || len([]rune(name)) > 12 || age != math.Trunc(age) || len(pets) > 3 {
			t.Fatalf("temperature %v: %q does not fit the schema", temp, text)
		}
		for _, pet := range pets {
			if pet != "cat" && pet != "dog" && pet != "bird" {
				t.Fatalf("temperature %v: pet %v not in the enum", temp, pet)
			}
		}
		t.Logf("temperature %v: %s", temp, text)

		// Streamed: the same text.
		st := c.Chat.Completions.NewStreaming(ctx, p)
		var streamed strings.Builder
		for st.Next() {
			if ch := st.Current().Choices; len(ch) > 0 {
				streamed.WriteString(ch[0].Delta.Content)
			}
		}
		if err := st.Err(); err != nil {
			t.Fatal(err)
		}
		if streamed.String() != text {
			t.Fatalf("streamed %q, plain %q", streamed.String(), text)
		}
		if temp == 0 {
			// n-gram speculation and a prediction give the same answer.
			for _, opt := range []option.RequestOption{
				option.WithJSONSet("speculative", map[string]any{"proposer": "ngram", "k": 4}),
				option.WithJSONSet("prediction", map[string]string{"type": "content", "content": text}),
			} {
				sres, err := c.Chat.Completions.New(ctx, p, opt)
				if err != nil {
					t.Fatal(err)
				}
				if got := sres.Choices[0].Message.Content; got != text {
					t.Fatalf("speculative %q, plain %q", got, text)
				}
				if d := sres.Usage.CompletionTokensDetails; d.AcceptedPredictionTokens+d.RejectedPredictionTokens == 0 {
					t.Fatal("nothing proposed: not a speculative run")
				}
			}
		}
	}

	// json_object on completions: an object when it ends.
	cp := openai.CompletionNewParams{Model: openai.CompletionNewParamsModel(b.ModelID()), Prompt: prompt("Once upon a time"),
		MaxTokens: openai.Int(200), Temperature: openai.Float(0)}
	res := complete(t, c, cp, option.WithJSONSet("response_format", map[string]string{"type": "json_object"}))
	text := res.Choices[0].Text
	t.Logf("json_object (%s): %s", res.Choices[0].FinishReason, text)
	if res.Choices[0].FinishReason == "stop" {
		var v map[string]any
		if err := json.Unmarshal([]byte(text), &v); err != nil {
			t.Fatalf("json_object: %q is not a JSON object: %v", text, err)
		}
	} else if !strings.HasPrefix(text, "{") || !jsonPrefix(text) {
		t.Fatalf("json_object: %q is not the start of a JSON object", text)
	}
	if jsonPrefix(`{"a": 1]`) || !jsonPrefix(`{"a": [1, "x`) {
		t.Fatal("jsonPrefix is wrong")
	}

	// llama-server's grammar field.
	res = complete(t, c, cp, option.WithJSONSet("grammar", `root ::= " " [A-Z] [a-z]* (" " [a-z]+){2,8} "."`))
	if !regexp.MustCompile(`^ [A-Z][a-z]*( [a-z]+){2,8}\.$`).MatchString(res.Choices[0].Text) {
		t.Fatalf("grammar: %q", res.Choices[0].Text)
	}

	// vLLM's fields.
	res = complete(t, c, cp, option.WithJSONSet("guided_choice", []string{" yes", " no", " maybe"}))
	if tx := res.Choices[0].Text; tx != " yes" && tx != " no" && tx != " maybe" {
		t.Fatalf("guided_choice: %q", tx)
	}
	res = complete(t, c, cp, option.WithJSONSet("structured_outputs", map[string]any{"json": map[string]any{"enum": []int{1, 2, 3}}}))
	if tx := res.Choices[0].Text; tx != "1" && tx != "2" && tx != "3" {
		t.Fatalf("structured_outputs.json: %q", tx)
	}
	res = complete(t, c, cp, option.WithJSONSet("guided_json", `{"type": "boolean"}`))
	if tx := res.Choices[0].Text; tx != "true" && tx != "false" {
		t.Fatalf("guided_json as a string: %q", tx)
	}
	// Regular expressions: vLLM's guided_regex and structured_outputs.regex
	// (the whole output matches) and JSON Schema's pattern (the string
	// contains a match).
	for _, tc := range []struct{ field, re string }{
		{"guided_regex", ` [A-Z][a-z]+( [a-z]+){1,4}\.`},
		{"guided_regex", `(yes|no|[0-9]{3}-[0-9]{4})`},
	} {
		res = complete(t, c, cp, option.WithJSONSet(tc.field, tc.re))
		if tx := res.Choices[0].Text; !regexp.MustCompile(`^(?:`+tc.re+`)$`).MatchString(tx) || res.Choices[0].FinishReason != "stop" {
			t.Fatalf("%s %q: %q (%s)", tc.field, tc.re, tx, res.Choices[0].FinishReason)
		}
	}
	res = complete(t, c, cp, option.WithJSONSet("structured_outputs", map[string]any{"regex": `Once upon a [a-z]+`}))
	if tx := res.Choices[0].Text; !regexp.MustCompile(`^Once upon a [a-z]+$`).MatchString(tx) {
		t.Fatalf("structured_outputs.regex: %q", tx)
	}
	res = complete(t, c, cp, option.WithJSONSet("guided_json", map[string]any{"type": "object", "required": []string{"code"},
		"properties": map[string]any{"code": map[string]any{"type": "string", "pattern": `^[A-Z]{2}-[0-9]{2,3}$`}}}))
	var coded struct{ Code string }
	if err := json.Unmarshal([]byte(res.Choices[0].Text), &coded); err != nil || !regexp.MustCompile(`^[A-Z]{2}-[0-9]{2,3}$`).MatchString(coded.Code) {
		t.Fatalf("pattern: %q (%v)", res.Choices[0].Text, err)
	}

	noGrammarsLeft(t)
	if st := b.Stats(); st.GrammarTime <= 0 || st.LiveGrammars != 0 {
		t.Errorf("stats: grammar time %v, %d live", st.GrammarTime, st.LiveGrammars)
	}
}

// TestRealFormatErrors: what cannot be honoured is a 400 naming the field.
func TestRealFormatErrors(t *testing.T) {
	b, c := realServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cp := openai.CompletionNewParams{Model: openai.CompletionNewParamsModel(b.ModelID()), Prompt: prompt("Once"), MaxTokens: openai.Int(4)}
	for _, tc := range []struct {
		name, value any
		param, msg  string
	}{
		{"grammar", `root ::= "unterminated`, "grammar", "line 1, column"},
		{"grammar", `start ::= "a"`, "grammar", "root"},
		{"grammar", `root ::= "a"{3,2}`, "grammar", "grammar"},
		{"response_format", map[string]any{"type": "json_schema"}, "response_format", "json_schema.schema"},
		{"response_format", map[string]any{"type": "xml"}, "response_format", "xml"},
		{"response_format", "json", "response_format", "must be"},
		{"response_format", map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "x", "schema": map[string]any{
			"type": "object", "properties": map[string]any{"zip": map[string]any{"type": "string", "pattern": "^[0-9]{5}(?=x)"}}}}},
			"response_format", `lookaround is not supported`},
		{"guided_regex", `(\d+`, "guided_regex", "missing ')'"},
		{"json_schema", map[string]any{"type": "nope"}, "json_schema", "nope"},
	} {
		_, err := c.Completions.New(ctx, cp, option.WithJSONSet(tc.name.(string), tc.value))
		var ae *openai.Error
		if !errors.As(err, &ae) || ae.StatusCode != 400 || ae.Param != tc.param || !strings.Contains(ae.Message, tc.msg) {
			t.Errorf("%s = %v: %v, want a 400 for param %q saying %q", tc.name, tc.value, err, tc.param, tc.msg)
		}
	}
	// Two formats at once.
	_, err := c.Completions.New(ctx, cp, option.WithJSONSet("grammar", `root ::= "a"`),
		option.WithJSONSet("response_format", map[string]string{"type": "json_object"}))
	var ae *openai.Error
	if !errors.As(err, &ae) || ae.StatusCode != 400 || !strings.Contains(ae.Message, "only one") {
		t.Errorf("grammar and response_format together: %v", err)
	}
	// The server carries on.
	if res := complete(t, c, cp); res.Choices[0].Text == "" {
		t.Error("empty completion after the errors")
	}
	if n := engine.LiveGrammars(); n != 0 {
		t.Errorf("%d grammars left unfreed", n)
	}
}

// jsonPrefix reports whether s can be continued into valid JSON.
func jsonPrefix(s string) bool {
	dec := json.NewDecoder(strings.NewReader(s))
	for {
		_, err := dec.Token()
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return true
		}
		if err != nil {
			return false
		}
	}
}

// noGrammarsLeft fails t if a grammar is still alive once the requests'
// Done events are all delivered (the scheduler frees them with it).
func noGrammarsLeft(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for engine.LiveGrammars() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := engine.LiveGrammars(); n != 0 {
		t.Errorf("%d grammars left unfreed", n)
	}
}
