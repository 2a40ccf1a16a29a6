package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
)

func TestCompletion(t *testing.T) {
	b := newTestBackend(t)
	_, url := startServer(t, Config{}, b)
	res := do(t, "POST", url+"/v1/completions", `{"prompt":"Once","max_tokens":5,"ignore_eos":true,"temperature":0}`)
	if res.status != 200 {
		t.Fatalf("%d %s", res.status, res.body)
	}
	r := parseResponse(t, res.body)
	if !strings.HasPrefix(r.ID, "cmpl-") || r.Object != "text_completion" || r.Model != b.ModelID() || r.Created == 0 {
		t.Errorf("envelope: %+v", r)
	}
	if len(r.Choices) != 1 || r.Choices[0].Text == nil || *r.Choices[0].Text == "" || deref(r.Choices[0].FinishReason) != "length" {
		t.Fatalf("choices: %s", res.body)
	}
	u := r.Usage
	if u == nil || u.CompletionTokens != 5 || u.PromptTokens < 1 || u.TotalTokens != u.PromptTokens+u.CompletionTokens ||
		u.PromptTokensDetails.CachedTokens == nil || u.CompletionTokensDetails.Accepted == nil || u.CompletionTokensDetails.Rejected == nil {
		t.Errorf("usage: %s", res.body)
	}
	for _, k := range []string{"prompt_n", "prompt_ms", "prompt_per_second", "predicted_n", "predicted_ms",
		"predicted_per_token_ms", "predicted_per_second", "draft_n", "draft_n_accepted"} {
		if _, ok := r.Timings[k]; !ok {
			t.Errorf("timings lacks %s: %s", k, res.body)
		}
	}
	if r.Timings["predicted_n"] != float64(5) {
		t.Errorf("timings.predicted_n = %v, want 5", r.Timings["predicted_n"])
	}
}

func TestChatCompletion(t *testing.T) {
	_, url := startServer(t, Config{}, newTestBackend(t))
	res := do(t, "POST", url+"/v1/chat/completions", `{"messages":[{"role":"user","content":"Hi"}],"max_completion_tokens":4,"ignore_eos":true,"temperature":0}`)
	if res.status != 200 {
		t.Fatalf("%d %s", res.status, res.body)
	}
	r := parseResponse(t, res.body)
	if !strings.HasPrefix(r.ID, "chatcmpl-") || r.Object != "chat.completion" {
		t.Errorf("envelope: %s", res.body)
	}
	if len(r.Choices) != 1 || r.Choices[0].Message == nil || r.Choices[0].Message.Role != "assistant" ||
		r.Choices[0].Message.Content == "" || deref(r.Choices[0].FinishReason) != "length" || r.Usage.CompletionTokens != 4 {
		t.Errorf("choice: %s", res.body)
	}
}

// TestDefaultMaxTokensFake: without max_tokens a request gets
// min(DefaultMaxTokens, room left); n_predict -1 gets the room left.
func TestDefaultMaxTokensFake(t *testing.T) {
	f := newFake()
	_, url := startServer(t, Config{DefaultMaxTokens: 7}, f)
	for _, tc := range []struct {
		body string
		want int
	}{
		{`{"prompt":"abc","ignore_eos":true}`, 7},
		{fmt.Sprintf(`{"prompt":%q,"ignore_eos":true}`, strings.Repeat("a", 507)), 4}, // 508 tokens with BOS
		{`{"prompt":"abc","ignore_eos":true,"n_predict":-1}`, fakeCtx - 4},
		{`{"prompt":"abc","ignore_eos":true,"n_predict":3}`, 3},
	} {
		res := do(t, "POST", url+"/v1/completions", tc.body)
		if res.status != 200 {
			t.Fatalf("%d %s", res.status, res.body)
		}
		reqs := f.requests()
		if got := reqs[len(reqs)-1].req.MaxTokens; got != tc.want {
			t.Errorf("%.40s: MaxTokens %d, want %d", tc.body, got, tc.want)
		}
	}
}

// TestVLLMSamplingFake: vLLM's repetition_penalty is repeat_penalty over
// the whole context, its other sampling parameters pass at their neutral
// values and are refused at any other.
func TestVLLMSamplingFake(t *testing.T) {
	f := newFake()
	_, url := startServer(t, Config{}, f)
	for _, tc := range []struct {
		body    string
		penalty float32
		lastN   int
	}{
		{`{"prompt":"x","max_tokens":2,"repetition_penalty":1.3}`, 1.3, -1},
		{`{"prompt":"x","max_tokens":2,"repetition_penalty":1.3,"repeat_last_n":32}`, 1.3, 32},
		{`{"prompt":"x","max_tokens":2,"repeat_penalty":1.2}`, 1.2, 64},
		{`{"prompt":"x","max_tokens":2,"min_tokens":0,"stop_token_ids":[],"skip_special_tokens":true,"include_stop_str_in_output":false,
			"spaces_between_special_tokens":true,"use_beam_search":false,"length_penalty":1,"prompt_logprobs":null,"bad_words":[],
			"allowed_token_ids":null,"guided_decoding_backend":"xgrammar"}`, 1, 64},
	} {
		before := len(f.requests())
		if res := do(t, "POST", url+"/v1/completions", tc.body); res.status != 200 {
			t.Fatalf("%s: %d %s", tc.body, res.status, res.body)
		}
		reqs := f.requests()
		if len(reqs) != before+1 {
			t.Fatalf("%s: %d requests reached the backend", tc.body, len(reqs)-before)
		}
		if q := reqs[len(reqs)-1].req.Sampling; q.RepeatPenalty != tc.penalty || q.RepeatLastN != tc.lastN {
			t.Errorf("%s: repeat penalty %v over %d, want %v over %d", tc.body, q.RepeatPenalty, q.RepeatLastN, tc.penalty, tc.lastN)
		}
	}
	// min_tokens reaches the scheduler; without max_tokens the default
	// maximum does not undercut it.
	for _, tc := range []struct {
		body     string
		min, max int
	}{
		{`{"prompt":"x","max_tokens":5,"min_tokens":3}`, 3, 5},
		{`{"prompt":"x","min_tokens":300}`, 300, 300},
	} {
		if res := do(t, "POST", url+"/v1/completions", tc.body); res.status != 200 {
			t.Fatalf("%s: %d %s", tc.body, res.status, res.body)
		}
		reqs := f.requests()
		if q := reqs[len(reqs)-1].req; q.MinTokens != tc.min || q.MaxTokens != tc.max {
			t.Errorf("%s: min %d max %d, want %d and %d", tc.body, q.MinTokens, q.MaxTokens, tc.min, tc.max)
		}
	}
	// include_stop_str_in_output and skip_special_tokens reach it.
	for _, tc := range []struct {
		body                  string
		keepStop, specialText bool
	}{
		{`{"prompt":"x","max_tokens":2}`, false, false},
		{`{"prompt":"x","max_tokens":2,"include_stop_str_in_output":true,"skip_special_tokens":false}`, true, true},
		{`{"prompt":"x","max_tokens":2,"include_stop_str_in_output":false,"skip_special_tokens":true}`, false, false},
	} {
		if res := do(t, "POST", url+"/v1/completions", tc.body); res.status != 200 {
			t.Fatalf("%s: %d %s", tc.body, res.status, res.body)
		}
		reqs := f.requests()
		if q := reqs[len(reqs)-1].req; q.KeepStop != tc.keepStop || q.SpecialText != tc.specialText {
			t.Errorf("%s: keep stop %v, special text %v", tc.body, q.KeepStop, q.SpecialText)
		}
	}
	// stop_token_ids reach the scheduler.
	if res := do(t, "POST", url+"/v1/completions", `{"prompt":"x","max_tokens":2,"stop_token_ids":[7,2]}`); res.status != 200 {
		t.Fatalf("stop_token_ids: %d %s", res.status, res.body)
	}
	if reqs := f.requests(); !slices.Equal(reqs[len(reqs)-1].req.StopTokens, []int32{7, 2}) {
		t.Errorf("stop tokens %v, want [7 2]", reqs[len(reqs)-1].req.StopTokens)
	}
	for _, tc := range []struct{ body, param, code string }{
		{`{"prompt":"x","repetition_penalty":0}`, "repetition_penalty", "invalid_value"},
		{`{"prompt":"x","repetition_penalty":11}`, "repetition_penalty", "invalid_value"},
		{`{"prompt":"x","repetition_penalty":"high"}`, "repetition_penalty", "invalid_type"},
		{`{"prompt":"x","repetition_penalty":1.1,"repeat_penalty":1.1}`, "repetition_penalty", ""},
		{`{"prompt":"x","min_tokens":-1}`, "min_tokens", "invalid_value"},
		{`{"prompt":"x","max_tokens":5,"min_tokens":6}`, "min_tokens", "invalid_value"},
		{`{"prompt":"x","min_tokens":2,"grammar":"root ::= \"a\""}`, "min_tokens", "unsupported_parameter"},
		{`{"prompt":"x","min_tokens":2,"guided_regex":"a+"}`, "min_tokens", "unsupported_parameter"},
		{`{"prompt":"x","stop_token_ids":[-1]}`, "stop_token_ids", "invalid_value"},
		{`{"prompt":"x","stop_token_ids":[1000000]}`, "stop_token_ids", "invalid_value"},
		{`{"prompt":"x","stop_token_ids":"2"}`, "stop_token_ids", "invalid_type"},
		{`{"prompt":"x","stop_token_ids":[` + strings.Repeat("2,", 256) + `2]}`, "stop_token_ids", "invalid_value"},
		{`{"prompt":"x","include_stop_str_in_output":1}`, "include_stop_str_in_output", "invalid_type"},
		{`{"prompt":"x","skip_special_tokens":"no"}`, "skip_special_tokens", "invalid_type"},
		{`{"prompt":"x","use_beam_search":true}`, "use_beam_search", "unsupported_parameter"},
		{`{"prompt":"x","prompt_logprobs":1}`, "prompt_logprobs", "unsupported_parameter"},
		{`{"prompt":"x","allowed_token_ids":[5,6]}`, "allowed_token_ids", "unsupported_parameter"},
	} {
		res := do(t, "POST", url+"/v1/completions", tc.body)
		e := parseError(t, res.body).Error
		if res.status != 400 || e.Param == nil || *e.Param != tc.param || (tc.code != "" && (e.Code == nil || *e.Code != tc.code)) {
			t.Errorf("%s: %d %s, want a 400 for %s (%s)", tc.body, res.status, res.body, tc.param, tc.code)
		}
	}
}

// TestRequestMappingFake checks what reaches the scheduler: sampling,
// stop, seeds of n choices, prediction without BOS, speculative.
func TestRequestMappingFake(t *testing.T) {
	f := newFake()
	_, url := startServer(t, Config{}, f)
	res := do(t, "POST", url+"/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}],"max_tokens":3,
		"temperature":0.7,"top_p":0.9,"top_k":40,"min_p":0.05,"seed":42,"n":3,"stop":"end","ignore_eos":true,
		"prediction":{"type":"content","content":"ab"},"speculative":{"proposer":"draft","k":4},"cache_prompt":false}`)
	if res.status != 200 {
		t.Fatalf("%d %s", res.status, res.body)
	}
	reqs := f.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3", len(reqs))
	}
	for j, r := range reqs {
		q := r.req
		if q.Sampling.Temperature != 0.7 || q.Sampling.TopP != 0.9 || q.Sampling.TopK != 40 || q.Sampling.MinP != 0.05 ||
			q.Sampling.Seed != uint64(42+j) || q.MaxTokens != 3 || !q.IgnoreEOS || len(q.Stop) != 1 || q.Stop[0] != "end" ||
			q.Speculative.Proposer != "draft" || q.Speculative.K != 4 || !q.NoPrefixCache {
			t.Errorf("request %d: %+v", j, q)
		}
		if len(q.Prediction) != 2 || q.Prediction[0] == fakeBOS {
			t.Errorf("prediction %v: want 2 tokens without BOS", q.Prediction)
		}
		if q.Prompt[0] != fakeBOS {
			t.Errorf("prompt %v: want BOS first", q.Prompt)
		}
	}
	r := parseResponse(t, res.body)
	if u := r.Usage; *u.CompletionTokensDetails.Accepted != 3 || *u.CompletionTokensDetails.Rejected != 3 {
		t.Errorf("prediction usage (fake accepts half of 2, three times): %s", res.body)
	}
	if u := r.Usage; u.PromptTokens != len(reqs[0].req.Prompt) {
		t.Errorf("prompt_tokens %d, want the prompt once (%d)", u.PromptTokens, len(reqs[0].req.Prompt))
	}
}

// TestNChoicesFake: n per prompt, in OpenAI's order, different but
// reproducible with a seed.
func TestNChoicesFake(t *testing.T) {
	_, url := startServer(t, Config{}, newFake())
	body := `{"prompt":["a","b"],"n":3,"max_tokens":4,"seed":5,"temperature":1,"ignore_eos":true}`
	r1 := parseResponse(t, do(t, "POST", url+"/v1/completions", body).body)
	r2 := parseResponse(t, do(t, "POST", url+"/v1/completions", body).body)
	if len(r1.Choices) != 6 {
		t.Fatalf("%d choices, want 6", len(r1.Choices))
	}
	for i, c := range r1.Choices {
		if c.Index != i || *c.Text != *r2.Choices[i].Text {
			t.Errorf("choice %d: index %d, %q vs %q", i, c.Index, *c.Text, *r2.Choices[i].Text)
		}
	}
	if *r1.Choices[0].Text == *r1.Choices[1].Text {
		t.Errorf("choices 0 and 1 are equal: %q", *r1.Choices[0].Text)
	}
	if r1.Usage.CompletionTokens != 24 {
		t.Errorf("completion_tokens %d, want 24", r1.Usage.CompletionTokens)
	}
}

func TestStopFinishReasonFake(t *testing.T) {
	_, url := startServer(t, Config{}, newFake())
	for _, tc := range []struct {
		body, text, finish string
	}{
		{`{"prompt":"a","max_tokens":50,"temperature":0,"stop":["time"]}`, "Once upon a ", "stop"},
		{`{"prompt":"a","max_tokens":50,"temperature":0}`, strings.Join(fakeStory, " "), "stop"},
		{`{"prompt":"a","max_tokens":3,"temperature":0}`, "Once upon a", "length"},
	} {
		r := parseResponse(t, do(t, "POST", url+"/v1/completions", tc.body).body)
		if *r.Choices[0].Text != tc.text || deref(r.Choices[0].FinishReason) != tc.finish {
			t.Errorf("%s: %q %q, want %q %q", tc.body, *r.Choices[0].Text, deref(r.Choices[0].FinishReason), tc.text, tc.finish)
		}
	}
}

// streamChunks posts a streaming request and returns the parsed chunks; the
// last event must be [DONE].
func streamChunks(t *testing.T, url, body string) []testResponse {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	ev := sseEvents(t, resp.Body)
	if len(ev) == 0 || ev[len(ev)-1] != "[DONE]" {
		t.Fatalf("stream does not end with [DONE]: %q", ev)
	}
	var out []testResponse
	for _, e := range ev[:len(ev)-1] {
		if !json.Valid([]byte(e)) {
			t.Fatalf("chunk is not JSON: %s", e)
		}
		out = append(out, parseResponse(t, []byte(e)))
	}
	return out
}

func TestStreamChat(t *testing.T) {
	_, url := startServer(t, Config{}, newTestBackend(t))
	body := `{"messages":[{"role":"user","content":"Hi"}],"max_tokens":6,"ignore_eos":true,"temperature":0,"n":2,
		"stream":true,"stream_options":{"include_usage":true}}`
	chunks := streamChunks(t, url+"/v1/chat/completions", body)
	last := chunks[len(chunks)-1]
	if len(last.Choices) != 0 || last.Usage == nil || last.Usage.CompletionTokens != 12 || last.Timings == nil {
		t.Errorf("usage chunk: %+v", last)
	}
	sawRole := map[int]bool{}
	text := map[int]string{}
	finish := map[int]string{}
	for i, c := range chunks[:len(chunks)-1] {
		if c.Object != "chat.completion.chunk" || c.ID != chunks[0].ID || c.Usage != nil || len(c.Choices) != 1 {
			t.Fatalf("chunk %d: %+v", i, c)
		}
		ch := c.Choices[0]
		if ch.Delta == nil {
			t.Fatalf("chunk %d without delta", i)
		}
		if ch.Delta.Role != nil {
			if sawRole[ch.Index] || *ch.Delta.Role != "assistant" {
				t.Errorf("chunk %d: second or wrong role %q", i, *ch.Delta.Role)
			}
			sawRole[ch.Index] = true
		} else if !sawRole[ch.Index] {
			t.Errorf("chunk %d: content before the role chunk of choice %d", i, ch.Index)
		}
		if ch.Delta.Content != nil {
			text[ch.Index] += *ch.Delta.Content
		}
		if ch.FinishReason != nil {
			if finish[ch.Index] != "" {
				t.Errorf("choice %d finished twice", ch.Index)
			}
			finish[ch.Index] = *ch.FinishReason
		}
	}
	for i := range 2 {
		if finish[i] != "length" || text[i] == "" {
			t.Errorf("choice %d: finish %q text %q", i, finish[i], text[i])
		}
	}
	// Greedy: the streamed text equals the non-streamed one.
	res := do(t, "POST", url+"/v1/chat/completions", `{"messages":[{"role":"user","content":"Hi"}],"max_tokens":6,"ignore_eos":true,"temperature":0}`)
	if r := parseResponse(t, res.body); r.Choices[0].Message.Content != text[0] {
		t.Errorf("streamed %q, non-streamed %q", text[0], r.Choices[0].Message.Content)
	}
}

func TestStreamCompletion(t *testing.T) {
	_, url := startServer(t, Config{}, newTestBackend(t))
	chunks := streamChunks(t, url+"/v1/completions", `{"prompt":"Once","max_tokens":4,"ignore_eos":true,"stream":true}`)
	var text string
	for i, c := range chunks {
		if c.Object != "text_completion" || len(c.Choices) != 1 || c.Choices[0].Text == nil || c.Usage != nil {
			t.Fatalf("chunk %d: %+v", i, c)
		}
		text += *c.Choices[0].Text
		if fr := c.Choices[0].FinishReason; (fr != nil) != (i == len(chunks)-1) {
			t.Errorf("chunk %d: finish_reason %v", i, fr)
		}
	}
	if text == "" || deref(chunks[len(chunks)-1].Choices[0].FinishReason) != "length" {
		t.Errorf("text %q", text)
	}
}

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"", "plain", "quote\" back\\slash", "ctl\x00\x01\x1f\n\r\t", "<a>&b", "é 世界 🙂",
		"bad\xff\xfeutf8", "line\u2028sep\u2029", "\x7f"} {
		b := appendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q: invalid JSON %s: %v", s, b, err)
		}
		var want string
		std, _ := json.Marshal(s)
		_ = json.Unmarshal(std, &want)
		if got != want {
			t.Errorf("%q: round trip %q", s, got)
		}
	}
	if n := testing.AllocsPerRun(100, func() { appendJSONString(make([]byte, 0, 64), "hello \"world\"") }); n > 1 {
		t.Errorf("%v allocations", n)
	}
}

// stream_interval: after the first chunk, which goes out at once, a choice's
// text comes in chunks of StreamInterval tokens, the rest with the finish;
// the text is the same as with every token streamed, and a failure mid-way
// still delivers the text made before it.
func TestStreamInterval(t *testing.T) {
	const body = `{"prompt":"Once","max_tokens":10,"temperature":0,"ignore_eos":true,"stream":true}`
	collect := func(cfg Config, b Backend) (texts []string, final testResponse) {
		_, url := startServer(t, cfg, b)
		chunks := streamChunks(t, url+"/v1/completions", body)
		for _, c := range chunks[:len(chunks)-1] {
			texts = append(texts, *c.Choices[0].Text)
		}
		return texts, chunks[len(chunks)-1]
	}
	every, _ := collect(Config{}, newFake())
	if len(every) != 10 {
		t.Fatalf("interval 1: %d text chunks for 10 tokens: %q", len(every), every)
	}
	held, final := collect(Config{StreamInterval: 3}, newFake())
	// Tokens 1 | 2-4 | 5-7 | 8-10.
	if len(held) != 4 || held[0] != every[0] || strings.Join(held, "") != strings.Join(every, "") {
		t.Errorf("interval 3: chunks %q, want 4 holding %q", held, strings.Join(every, ""))
	}
	if deref(final.Choices[0].FinishReason) != "length" {
		t.Errorf("final chunk %+v", final)
	}

	// A failure after 5 tokens: tokens 2-4 went out, 5 was held.
	f := newFake()
	f.failAfter = 5
	_, url := startServer(t, Config{StreamInterval: 3}, f)
	resp, err := http.Post(url+"/v1/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var text string
	sawError := false
	for _, e := range sseEvents(t, resp.Body) {
		var c struct {
			Choices []struct{ Text string }
			Error   *struct{ Message string }
		}
		if e == "[DONE]" || json.Unmarshal([]byte(e), &c) != nil {
			continue
		}
		if c.Error != nil {
			sawError = true
		} else if len(c.Choices) > 0 {
			text += c.Choices[0].Text
		}
	}
	if want := strings.Join(every[:5], ""); !sawError || text != want {
		t.Errorf("failure after 5 tokens: error event %v, text %q, want %q", sawError, text, want)
	}
}
