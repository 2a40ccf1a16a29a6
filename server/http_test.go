package server

import (
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"specd/scheduler"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg Config
		ok  bool
	}{
		{Config{}, true},
		{Config{Port: 65536}, false},
		{Config{Port: -1}, false},
		{Config{MaxBodyBytes: -1}, false},
		{Config{RequestTimeout: -time.Second}, false},
		{Config{MaxN: -1}, false},
		{Config{APIKeys: []string{"a", ""}}, false},
		{Config{APIKeys: []string{"a"}, Port: 1, MaxN: 2}, true},
	} {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v: Validate() = %v, want ok=%v", tc.cfg, err, tc.ok)
		}
	}
	if _, err := New(Config{Port: -5}, newFake(), nil); err == nil {
		t.Error("New accepted an invalid config")
	}
}

// TestErrorStatuses checks every error status and the OpenAI error shape,
// with the field named in param.
func TestErrorStatuses(t *testing.T) {
	b := newTestBackend(t)
	_, url := startServer(t, Config{MaxBodyBytes: 64 << 10}, b)
	// A token prompt longer than the context, whatever the tokenizer.
	long := "[" + strings.Repeat("1,", b.ContextSize()) + "1]"
	var bias []string
	for i := range maxLogitBias + 1 {
		bias = append(bias, fmt.Sprintf(`"%d": 1`, i))
	}
	manyBias := strings.Join(bias, ",")
	cases := []struct {
		name, method, path, body string
		status                   int
		param, code              string
	}{
		{"malformed json", "POST", "/v1/completions", `{"prompt": "a",`, 400, "", ""},
		{"not an object", "POST", "/v1/completions", `[1,2]`, 400, "", ""},
		{"empty body", "POST", "/v1/chat/completions", ``, 400, "", ""},
		{"missing prompt", "POST", "/v1/completions", `{"max_tokens": 3}`, 400, "prompt", ""},
		{"prompt wrong type", "POST", "/v1/completions", `{"prompt": {"a":1}}`, 400, "prompt", "invalid_type"},
		{"prompt mixed array", "POST", "/v1/completions", `{"prompt": ["a", 3]}`, 400, "prompt", "invalid_type"},
		{"prompt empty array", "POST", "/v1/completions", `{"prompt": []}`, 400, "prompt", "invalid_value"},
		{"token out of range", "POST", "/v1/completions", `{"prompt": [1, 99999]}`, 400, "prompt", "invalid_token"},
		{"negative token", "POST", "/v1/completions", `{"prompt": [[1, -1]]}`, 400, "prompt", "invalid_token"},
		{"temperature string", "POST", "/v1/completions", `{"prompt": "a", "temperature": "hot"}`, 400, "temperature", "invalid_type"},
		{"temperature range", "POST", "/v1/completions", `{"prompt": "a", "temperature": 2.5}`, 400, "temperature", "invalid_value"},
		{"top_p zero", "POST", "/v1/completions", `{"prompt": "a", "top_p": 0}`, 400, "top_p", "invalid_value"},
		{"min_p range", "POST", "/v1/completions", `{"prompt": "a", "min_p": 1.5}`, 400, "min_p", "invalid_value"},
		{"top_k negative", "POST", "/v1/completions", `{"prompt": "a", "top_k": -1}`, 400, "top_k", "invalid_value"},
		{"top_k float", "POST", "/v1/completions", `{"prompt": "a", "top_k": 1.5}`, 400, "top_k", "invalid_type"},
		{"n zero", "POST", "/v1/completions", `{"prompt": "a", "n": 0}`, 400, "n", "invalid_value"},
		{"n over max", "POST", "/v1/completions", `{"prompt": "a", "n": 17}`, 400, "n", "invalid_value"},
		{"max_tokens zero", "POST", "/v1/completions", `{"prompt": "a", "max_tokens": 0}`, 400, "max_tokens", "invalid_value"},
		{"max_tokens conflict", "POST", "/v1/chat/completions", `{"messages": [{"role":"user","content":"a"}], "max_tokens": 3, "max_completion_tokens": 4}`, 400, "max_tokens", "invalid_value"},
		{"stop too many", "POST", "/v1/completions", `{"prompt": "a", "stop": ["a","b","c","d","e"]}`, 400, "stop", "invalid_value"},
		{"stop number", "POST", "/v1/completions", `{"prompt": "a", "stop": 3}`, 400, "stop", "invalid_type"},
		{"stop empty", "POST", "/v1/completions", `{"prompt": "a", "stop": [""]}`, 400, "stop", "invalid_value"},
		{"stream not bool", "POST", "/v1/completions", `{"prompt": "a", "stream": "yes"}`, 400, "stream", "invalid_type"},
		{"stream_options without stream", "POST", "/v1/completions", `{"prompt": "a", "stream_options": {"include_usage": true}}`, 400, "stream_options", ""},
		{"mirostat", "POST", "/v1/chat/completions", `{"messages": [{"role":"user","content":"a"}], "mirostat": 2}`, 400, "mirostat", "unsupported_parameter"},
		{"repeat_penalty 0", "POST", "/v1/chat/completions", `{"messages": [{"role":"user","content":"a"}], "repeat_penalty": 0}`, 400, "repeat_penalty", "invalid_value"},
		{"repeat_last_n", "POST", "/v1/completions", `{"prompt": "a", "repeat_penalty": 1.1, "repeat_last_n": -2}`, 400, "repeat_last_n", "invalid_value"},
		{"presence_penalty range", "POST", "/v1/chat/completions", `{"messages": [{"role":"user","content":"a"}], "presence_penalty": 2.5}`, 400, "presence_penalty", "invalid_value"},
		{"frequency_penalty type", "POST", "/v1/completions", `{"prompt": "a", "frequency_penalty": "x"}`, 400, "frequency_penalty", "invalid_type"},
		{"logit_bias token", "POST", "/v1/chat/completions", `{"messages": [{"role":"user","content":"a"}], "logit_bias": {"99999": 10}}`, 400, "logit_bias", "invalid_token"},
		{"logit_bias key", "POST", "/v1/completions", `{"prompt": "a", "logit_bias": {"a": 10}}`, 400, "logit_bias", "invalid_token"},
		{"logit_bias range", "POST", "/v1/completions", `{"prompt": "a", "logit_bias": {"5": 101}}`, 400, "logit_bias", "invalid_value"},
		{"logit_bias value", "POST", "/v1/completions", `{"prompt": "a", "logit_bias": {"5": "x"}}`, 400, "logit_bias", "invalid_type"},
		{"logit_bias array", "POST", "/v1/completions", `{"prompt": "a", "logit_bias": [5]}`, 400, "logit_bias", "invalid_type"},
		{"logit_bias size", "POST", "/v1/completions", `{"prompt": "a", "logit_bias": {` + manyBias + `}}`, 400, "logit_bias", "invalid_value"},
		{"top_logprobs range", "POST", "/v1/chat/completions", `{"messages": [{"role":"user","content":"a"}], "logprobs": true, "top_logprobs": 21}`, 400, "top_logprobs", "invalid_value"},
		{"top_logprobs alone", "POST", "/v1/chat/completions", `{"messages": [{"role":"user","content":"a"}], "top_logprobs": 2}`, 400, "top_logprobs", "invalid_value"},
		{"chat logprobs int", "POST", "/v1/chat/completions", `{"messages": [{"role":"user","content":"a"}], "logprobs": 2}`, 400, "logprobs", "invalid_type"},
		{"logprobs range", "POST", "/v1/completions", `{"prompt": "a", "logprobs": 21}`, 400, "logprobs", "invalid_value"},
		{"logprobs string", "POST", "/v1/completions", `{"prompt": "a", "logprobs": "5"}`, 400, "logprobs", "invalid_type"},
		{"completions top_logprobs", "POST", "/v1/completions", `{"prompt": "a", "logprobs": 2, "top_logprobs": 2}`, 400, "top_logprobs", "invalid_value"},
		{"tools without function", "POST", "/v1/chat/completions", `{"messages": [{"role":"user","content":"a"}], "tools": [{"type":"function"}]}`, 400, "tools[0]", "invalid_value"},
		{"tool name", "POST", "/v1/chat/completions", `{"messages": [{"role":"user","content":"a"}], "tools": [{"type":"function","function":{"name":"a b"}}]}`, 400, "tools[0].function.name", "invalid_value"},
		{"tool_choice unknown", "POST", "/v1/chat/completions", `{"messages": [{"role":"user","content":"a"}], "tools": [{"type":"function","function":{"name":"f"}}], "tool_choice": {"type":"function","function":{"name":"g"}}}`, 400, "tool_choice", "invalid_value"},
		{"tool parameters", "POST", "/v1/chat/completions", `{"messages": [{"role":"user","content":"a"}], "tools": [{"type":"function","function":{"name":"f","parameters":{"type":"string","pattern":"x(?=y)"}}}]}`, 400, "tools", "invalid_value"},
		{"tools on completions", "POST", "/v1/completions", `{"prompt": "a", "tools": [{"type":"function","function":{"name":"f"}}]}`, 400, "tools", ""},
		{"tools and response_format", "POST", "/v1/chat/completions", `{"messages": [{"role":"user","content":"a"}], "tools": [{"type":"function","function":{"name":"f"}}], "response_format": {"type":"json_object"}}`, 400, "tools", ""},
		{"tool_calls on a user message", "POST", "/v1/chat/completions", `{"messages": [{"role":"user","content":"a","tool_calls":[{"type":"function","function":{"name":"f","arguments":"{}"}}]}]}`, 400, "messages[0].tool_calls", ""},
		{"penalty", "POST", "/v1/completions", `{"prompt": "a", "mirostat": 2}`, 400, "mirostat", "unsupported_parameter"},
		{"response_format type", "POST", "/v1/chat/completions", `{"messages": [{"role":"user","content":"a"}], "response_format": {"type":"yaml"}}`, 400, "response_format", "invalid_value"},
		{"response_format schema", "POST", "/v1/chat/completions", `{"messages": [{"role":"user","content":"a"}], "response_format": {"type":"json_schema","json_schema":{"name":"n","schema":{"type":"string","pattern":"a+","format":"date"}}}}`, 400, "response_format", "invalid_value"},
		{"best_of", "POST", "/v1/completions", `{"prompt": "a", "best_of": 3}`, 400, "best_of", "unsupported_parameter"},
		{"guided_regex lookahead", "POST", "/v1/completions", `{"prompt": "a", "guided_regex": "a(?=b)"}`, 400, "guided_regex", "invalid_value"},
		{"structured_outputs regex unbalanced", "POST", "/v1/completions", `{"prompt": "a", "structured_outputs": {"regex": "(a"}}`, 400, "structured_outputs.regex", "invalid_value"},
		{"guided_regex type", "POST", "/v1/completions", `{"prompt": "a", "guided_regex": 5}`, 400, "guided_regex", "invalid_type"},
		{"structured_outputs structural_tag", "POST", "/v1/completions", `{"prompt": "a", "structured_outputs": {"structural_tag": "x"}}`, 400, "structured_outputs.structural_tag", "unsupported_parameter"},
		{"guided_choice empty", "POST", "/v1/completions", `{"prompt": "a", "guided_choice": []}`, 400, "guided_choice", "invalid_value"},
		{"guided_json and response_format", "POST", "/v1/chat/completions", `{"messages": [{"role":"user","content":"a"}], "guided_json": {"type": "string"}, "response_format": {"type": "json_object"}}`, 400, "guided_json", ""},
		{"structured_outputs type", "POST", "/v1/completions", `{"prompt": "a", "structured_outputs": [1]}`, 400, "structured_outputs", "invalid_type"},
		{"echo on chat", "POST", "/v1/chat/completions", `{"messages": [{"role":"user","content":"a"}], "echo": true}`, 400, "echo", "unsupported_parameter"},
		{"max_tokens 0 without echo", "POST", "/v1/completions", `{"prompt": "a", "max_tokens": 0}`, 400, "max_tokens", "invalid_value"},
		{"grammar and json_schema", "POST", "/v1/completions", `{"prompt": "a", "grammar": "root ::= \"a\"", "json_schema": {"type": "string"}}`, 400, "json_schema", ""},
		{"grammar type", "POST", "/v1/completions", `{"prompt": "a", "grammar": 7}`, 400, "grammar", "invalid_type"},
		{"messages missing", "POST", "/v1/chat/completions", `{"model": "x"}`, 400, "messages", ""},
		{"messages empty", "POST", "/v1/chat/completions", `{"messages": []}`, 400, "messages", "invalid_value"},
		{"bad role", "POST", "/v1/chat/completions", `{"messages": [{"role":"robot","content":"a"}]}`, 400, "messages[0].role", "invalid_value"},
		{"image part", "POST", "/v1/chat/completions", `{"messages": [{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}`, 400, "messages[0].content[0].type", "unsupported_content_type"},
		{"content number", "POST", "/v1/chat/completions", `{"messages": [{"role":"user","content":5}]}`, 400, "messages[0].content", "invalid_type"},
		{"prediction type", "POST", "/v1/chat/completions", `{"messages": [{"role":"user","content":"a"}], "prediction": {"type":"text","content":"x"}}`, 400, "prediction.type", "invalid_value"},
		{"speculative proposer", "POST", "/v1/completions", `{"prompt": "a", "speculative": {"proposer":"magic"}}`, 400, "speculative.proposer", "invalid_value"},
		{"speculative k", "POST", "/v1/completions", `{"prompt": "a", "speculative": {"k": -2}}`, 400, "speculative.k", "invalid_value"},
		{"unknown model", "POST", "/v1/completions", `{"model": "gpt-4", "prompt": "a"}`, 404, "model", "model_not_found"},
		{"prompt too long", "POST", "/v1/completions", `{"prompt": ` + long + `}`, 400, "prompt", "context_length_exceeded"},
		{"max_tokens too long", "POST", "/v1/completions", `{"prompt": "a", "max_tokens": 100000}`, 400, "max_tokens", "context_length_exceeded"},
		{"unknown path", "GET", "/v2/nothing", ``, 404, "", "unknown_url"},
		{"wrong method", "GET", "/v1/completions", ``, 405, "", "method_not_allowed"},
		{"wrong method models", "POST", "/v1/models", `{}`, 405, "", "method_not_allowed"},
		{"unknown model path", "GET", "/v1/models/nope", ``, 404, "model", "model_not_found"},
		{"body too large", "POST", "/v1/completions", fmt.Sprintf(`{"prompt": %q}`, strings.Repeat("y", 70<<10)), 413, "", "request_too_large"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var res httpResult
			if tc.status == 413 {
				// The server answers 413 and closes with body bytes
				// unread; the kernel may then reset the connection
				// before the client reads the answer. Retry that.
				var err error
				for range 5 {
					if res, err = tryDo(tc.method, url+tc.path, tc.body); err == nil {
						break
					}
				}
				if err != nil {
					t.Fatal(err)
				}
			} else {
				res = do(t, tc.method, url+tc.path, tc.body)
			}
			if res.status != tc.status {
				t.Fatalf("status %d, want %d: %s", res.status, tc.status, res.body)
			}
			e := parseError(t, res.body)
			if p := deref(e.Error.Param); p != tc.param {
				t.Errorf("param %q, want %q (%s)", p, tc.param, e.Error.Message)
			}
			if c := deref(e.Error.Code); tc.code != "" && c != tc.code {
				t.Errorf("code %q, want %q (%s)", c, tc.code, e.Error.Message)
			}
			if tc.status == 405 && res.header.Get("Allow") == "" {
				t.Error("405 without Allow")
			}
		})
	}
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// TestAcceptedParameters: neutral values of unsupported fields, unknown
// fields and llama.cpp aliases are accepted.
func TestAcceptedParameters(t *testing.T) {
	_, url := startServer(t, Config{}, newTestBackend(t))
	for _, body := range []string{
		`{"prompt": "a", "max_tokens": 2, "presence_penalty": 0, "frequency_penalty": 0, "logprobs": null, "echo": false, "best_of": 1, "suffix": null}`,
		`{"prompt": "a", "max_tokens": 2, "some_future_field": {"x": 1}, "user": "u", "cache_prompt": true}`,
		`{"prompt": "a", "n_predict": 2, "top_k": 40, "min_p": 0.05, "top_p": 0.9, "temperature": 0, "seed": 7}`,
		`{"prompt": [1, 5, 9], "max_tokens": 2.0}`,
		`{"prompt": "a", "max_tokens": 3, "presence_penalty": 1.5, "frequency_penalty": -0.5, "logit_bias": {"7": -100}, "logprobs": 0}`,
		`{"messages": [{"role":"user","content":"a"}], "max_tokens": 3, "logprobs": false, "top_logprobs": 0, "logit_bias": {}}`,
		`{"prompt": [[1, 5], [1, 6]], "max_tokens": 2}`,
		`{"prompt": "a", "model": "", "max_tokens": 2, "speculative": {"proposer": "ngram", "k": 3}}`,
		`{"messages": [{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},{"role":"assistant","content":null},{"role":"user","content":"c"}], "max_completion_tokens": 2, "tools": [], "tool_choice": "none", "response_format": {"type":"text"}}`,
		`{"messages": [{"role":"user","content":"a"}], "max_tokens": 2, "prediction": {"type":"content","content":[{"type":"text","text":"Once upon"}]}}`,
	} {
		path := "/v1/completions"
		if strings.Contains(body, "messages") {
			path = "/v1/chat/completions"
		}
		res := do(t, "POST", url+path, body)
		if res.status != 200 {
			t.Errorf("%s: status %d: %s", body, res.status, res.body)
		}
	}
}

func TestModelsHealthMetrics(t *testing.T) {
	b := newTestBackend(t)
	s, url := startServer(t, Config{}, b)
	res := do(t, "GET", url+"/v1/models", "")
	want := fmt.Sprintf(`"id":%q`, b.ModelID())
	if res.status != 200 || !strings.Contains(string(res.body), `"object":"list"`) || !strings.Contains(string(res.body), want) {
		t.Errorf("/v1/models: %d %s", res.status, res.body)
	}
	if res := do(t, "GET", url+"/v1/models/"+b.ModelID(), ""); res.status != 200 {
		t.Errorf("/v1/models/{id}: %d %s", res.status, res.body)
	}
	if res := do(t, "GET", url+"/health", ""); res.status != 200 || string(res.body) != `{"status":"ok"}` {
		t.Errorf("/health: %d %s", res.status, res.body)
	}
	do(t, "POST", url+"/v1/completions", `{"prompt":"a","max_tokens":3,"ignore_eos":true}`)
	res = do(t, "GET", url+"/metrics", "")
	for _, series := range []string{
		`specd_http_requests_total{endpoint="completions",status="200"} 1`,
		`specd_http_requests_total{endpoint="health",status="200"} 1`,
		`specd_generation_tokens_total 3`,
		`specd_http_requests_in_flight 0`,
		"specd_time_to_first_token_seconds_count 1",
		"specd_time_per_output_token_seconds_count 1",
		`specd_request_duration_seconds_count{endpoint="completions"} 1`,
		"specd_queue_waiting", "specd_sequences_running", `specd_kv_blocks{state="free"}`,
		"specd_prefix_cache_hits_total", "specd_prefix_cache_stream_copies_total", `specd_preemptions_total{mode="recompute"}`,
		"specd_draft_acceptance_rate", `specd_draft_tokens_accepted_by_position_total{position="0"}`,
		"specd_speculative_k", "specd_decode_seconds_total", "specd_draft_decode_seconds_total", "specd_draft_decoded_tokens_total", "specd_scheduler_steps_total",
		`specd_decodes_total{model="draft",threads="one"}`, "specd_grammar_seconds_total", "specd_grammars_live",
	} {
		if !strings.Contains(string(res.body), series) {
			t.Errorf("/metrics lacks %q", series)
		}
	}
	s.SetReady(false)
	if res := do(t, "GET", url+"/health", ""); res.status != 503 {
		t.Errorf("/health while loading: %d", res.status)
	}
	res = do(t, "POST", url+"/v1/completions", `{"prompt":"a"}`)
	if e := parseError(t, res.body); res.status != 503 || deref(e.Error.Code) != "loading" {
		t.Errorf("completion while loading: %d %s", res.status, res.body)
	}
}

func TestAuth(t *testing.T) {
	_, url := startServer(t, Config{APIKeys: []string{"k1", "secret-2"}}, newTestBackend(t))
	body := `{"prompt":"a","max_tokens":1}`
	for _, tc := range []struct {
		hdr    string
		status int
	}{
		{"", 401}, {"Bearer nope", 401}, {"Basic k1", 401}, {"Bearer k1x", 401},
		{"Bearer k1", 200}, {"bearer secret-2", 200},
	} {
		var res httpResult
		if tc.hdr == "" {
			res = do(t, "POST", url+"/v1/completions", body)
		} else {
			res = do(t, "POST", url+"/v1/completions", body, "Authorization", tc.hdr)
		}
		if res.status != tc.status {
			t.Errorf("Authorization %q: %d, want %d: %s", tc.hdr, res.status, tc.status, res.body)
		}
		if tc.status == 401 {
			parseError(t, res.body)
		}
	}
	if res := do(t, "GET", url+"/v1/models", ""); res.status != 401 {
		t.Errorf("/v1/models without key: %d", res.status)
	}
	if res := do(t, "GET", url+"/health", ""); res.status != 200 {
		t.Errorf("/health without key: %d", res.status)
	}
}

func TestBackendErrorsFake(t *testing.T) {
	f := newFake()
	_, url := startServer(t, Config{}, f)
	f.queueFull.Store(true)
	res := do(t, "POST", url+"/v1/completions", `{"prompt":"a"}`)
	if e := parseError(t, res.body); res.status != 429 || res.header.Get("Retry-After") == "" || e.Error.Type != "rate_limit_error" {
		t.Errorf("queue full: %d %v %s", res.status, res.header, res.body)
	}
	f.queueFull.Store(false)
	f.closed.Store(true)
	if res := do(t, "POST", url+"/v1/chat/completions", `{"messages":[{"role":"user","content":"a"}]}`); res.status != 503 {
		t.Errorf("closed: %d %s", res.status, res.body)
	}
	f.closed.Store(false)
	res = do(t, "POST", url+"/v1/chat/completions", `{"messages":[{"role":"user","content":"{% bad"}]}`)
	if e := parseError(t, res.body); res.status != 400 || deref(e.Error.Code) != "chat_template_error" || !strings.Contains(e.Error.Message, "template syntax") {
		t.Errorf("template error: %d %s", res.status, res.body)
	}
	f.failAfter = 2
	if res := do(t, "POST", url+"/v1/completions", `{"prompt":"a","max_tokens":5,"ignore_eos":true}`); res.status != 500 {
		t.Errorf("failing generation: %d %s", res.status, res.body)
	}
	res = do(t, "POST", url+"/v1/completions", `{"prompt":"a","max_tokens":5,"stream":true,"ignore_eos":true}`)
	if ev := sseEvents(t, strings.NewReader(string(res.body))); res.status != 200 || !strings.Contains(ev[len(ev)-1], `"error"`) {
		t.Errorf("failing stream: %d %s", res.status, res.body)
	}
	f.failAfter = 0
}

func TestPanicIsRecoveredFake(t *testing.T) {
	f := newFake()
	f.panicOn = "boom"
	_, url := startServer(t, Config{}, f)
	if res := do(t, "POST", url+"/v1/completions", `{"prompt":"boom"}`); res.status != 500 {
		t.Errorf("panic: %d %s", res.status, res.body)
	}
	if res := do(t, "POST", url+"/v1/completions", `{"prompt":"fine","max_tokens":2}`); res.status != 200 {
		t.Errorf("after panic: %d %s", res.status, res.body)
	}
}

func TestRequestTimeoutFake(t *testing.T) {
	f := newFake()
	f.tokenDelay = 20 * time.Millisecond
	_, url := startServer(t, Config{RequestTimeout: 100 * time.Millisecond}, f)
	res := do(t, "POST", url+"/v1/completions", `{"prompt":"a","max_tokens":100,"ignore_eos":true}`)
	if e := parseError(t, res.body); res.status != 504 || deref(e.Error.Code) != "timeout" {
		t.Errorf("timeout: %d %s", res.status, res.body)
	}
	res = do(t, "POST", url+"/v1/completions", `{"prompt":"a","max_tokens":100,"ignore_eos":true,"stream":true}`)
	ev := sseEvents(t, strings.NewReader(string(res.body)))
	if len(ev) == 0 || !strings.Contains(ev[len(ev)-1], `"code":"timeout"`) {
		t.Errorf("stream timeout: %s", res.body)
	}
	for _, r := range f.requests() {
		<-r.done
		if !r.cancelled.Load() {
			t.Error("a timed-out request was not cancelled in the backend")
		}
	}
}

// TestMalformedHTTP sends bytes that are not HTTP: the server answers 400
// (or closes) and keeps serving.
func TestMalformedHTTP(t *testing.T) {
	_, url := startServer(t, Config{}, newTestBackend(t))
	addr := strings.TrimPrefix(url, "http://")
	for _, raw := range []string{
		"GARBAGE\r\n\r\n",
		"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{\"a\"",
		"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -3\r\n\r\n",
		"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		_, _ = c.Write([]byte(raw))
		if cw, ok := c.(*net.TCPConn); ok {
			_ = cw.CloseWrite()
		}
		buf := make([]byte, 4096)
		n, _ := c.Read(buf)
		c.Close()
		if n > 0 && !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 4") {
			t.Errorf("%q: got %q", raw, buf[:n])
		}
	}
	if res := do(t, "GET", url+"/health", ""); res.status != 200 {
		t.Errorf("server down after malformed requests: %d", res.status)
	}
}

// POST /tokenize answers llama-server's shape with the backend's tokens.
func TestTokenize(t *testing.T) {
	b := newTestBackend(t)
	_, url := startServer(t, Config{}, b)
	for _, special := range []bool{false, true} {
		text := "Once upon a time there was a little girl."
		want, err := b.Tokenize(text, special)
		if err != nil {
			t.Fatal(err)
		}
		res := do(t, "POST", url+"/tokenize", fmt.Sprintf(`{"content": %q, "add_special": %v}`, text, special))
		var got struct{ Tokens []int32 }
		if res.status != 200 || json.Unmarshal(res.body, &got) != nil || !slices.Equal(got.Tokens, want) {
			t.Errorf("add_special %v: %d %s, want tokens %v", special, res.status, res.body, want)
		}
	}
	if res := do(t, "POST", url+"/tokenize", `{"content": ""}`); res.status != 200 || string(res.body) != `{"tokens":[]}` {
		t.Errorf("empty content: %d %s", res.status, res.body)
	}
	for _, body := range []string{`{}`, `{"content": 5}`, `not json`} {
		if res := do(t, "POST", url+"/tokenize", body); res.status != 400 || !strings.Contains(string(res.body), `"error"`) {
			t.Errorf("%s: %d %s", body, res.status, res.body)
		}
	}
	if res := do(t, "GET", url+"/tokenize", ""); res.status != 405 {
		t.Errorf("GET /tokenize: %d", res.status)
	}
	// /detokenize turns them back into the text (the pieces joined).
	text := "Once upon a time there was a little girl."
	toks, err := b.Tokenize(text, false)
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := json.Marshal(toks)
	res := do(t, "POST", url+"/detokenize", `{"tokens": `+string(ids)+`}`)
	var got struct{ Content string }
	var want strings.Builder
	for _, tok := range toks {
		want.WriteString(b.TokenPiece(tok))
	}
	if res.status != 200 || json.Unmarshal(res.body, &got) != nil || got.Content != want.String() {
		t.Errorf("detokenize: %d %s, want %q", res.status, res.body, want.String())
	}
	if _, real := b.(*realStories); real && strings.TrimPrefix(got.Content, " ") != text {
		t.Errorf("detokenize on the real backend: %q, want %q", got.Content, text)
	}
	for _, body := range []string{`{}`, `{"tokens": [1, -1]}`, `{"tokens": [99999999]}`, `{"tokens": "a"}`} {
		if res := do(t, "POST", url+"/detokenize", body); res.status != 400 || !strings.Contains(string(res.body), `"error"`) {
			t.Errorf("detokenize %s: %d %s", body, res.status, res.body)
		}
	}
}

// TestApplyTemplate: /apply-template returns the prompt a chat completion
// sends the model: the template over the messages, the tools' description
// included; its tokens are the chat completion's prompt_tokens.
func TestApplyTemplate(t *testing.T) {
	b := newTestBackend(t)
	_, url := startServer(t, Config{}, b)
	msgs := `[{"role":"system","content":"Be brief."},{"role":"user","content":"Once upon a time"}]`
	want, err := b.ApplyChatTemplate([]scheduler.ChatMessage{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Once upon a time"}})
	if err != nil {
		t.Fatal(err)
	}
	var got struct{ Prompt string }
	res := do(t, "POST", url+"/apply-template", `{"messages":`+msgs+`}`)
	if res.status != 200 || json.Unmarshal(res.body, &got) != nil || got.Prompt != want {
		t.Fatalf("%d %s, want prompt %q", res.status, res.body, want)
	}
	toks, err := b.Tokenize(got.Prompt, true)
	if err != nil {
		t.Fatal(err)
	}
	chat := parseResponse(t, do(t, "POST", url+"/v1/chat/completions", `{"max_tokens":1,"messages":`+msgs+`}`).body)
	if chat.Usage == nil || chat.Usage.PromptTokens != len(toks) {
		t.Errorf("chat prompt_tokens %v, the template's prompt has %d tokens", chat.Usage, len(toks))
	}
	res = do(t, "POST", url+"/apply-template", `{"messages":`+msgs+`,"tools":[{"type":"function","function":{"name":"get_weather"}}]}`)
	if json.Unmarshal(res.body, &got) != nil || res.status != 200 || !strings.Contains(got.Prompt, "get_weather") || got.Prompt == want {
		t.Errorf("with tools: %d %s", res.status, res.body)
	}
	for _, body := range []string{`{}`, `{"messages":[]}`, `not json`} {
		if res := do(t, "POST", url+"/apply-template", body); res.status != 400 || !strings.Contains(string(res.body), `"error"`) {
			t.Errorf("%s: %d %s", body, res.status, res.body)
		}
	}
}

// TestProps: llama-server's /props gives the per-sequence context, the
// model and the request defaults; a backend that describes itself adds
// its slots, paths and chat template (the daemon's: cmd/specd).
func TestProps(t *testing.T) {
	b := newTestBackend(t)
	_, url := startServer(t, Config{}, b)
	res := do(t, "GET", url+"/props", "")
	var p struct {
		Defaults struct {
			NCtx   int `json:"n_ctx"`
			Params struct {
				NPredict    int     `json:"n_predict"`
				Temperature float64 `json:"temperature"`
			} `json:"params"`
		} `json:"default_generation_settings"`
		ModelAlias string          `json:"model_alias"`
		Modalities map[string]bool `json:"modalities"`
	}
	if res.status != 200 || json.Unmarshal(res.body, &p) != nil || p.Defaults.NCtx != b.ContextSize() || p.ModelAlias != b.ModelID() ||
		p.Defaults.Params.NPredict != DefaultDefaultMaxTokens || p.Defaults.Params.Temperature != 1 || p.Modalities["vision"] {
		t.Fatalf("%d %s", res.status, res.body)
	}
	if res := do(t, "POST", url+"/props", "{}"); res.status != 405 {
		t.Errorf("POST /props: %d", res.status)
	}
}
