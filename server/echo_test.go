package server

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
)

type echoResponse struct {
	Choices []struct {
		Text     string `json:"text"`
		Logprobs struct {
			Tokens        []string             `json:"tokens"`
			TokenLogprobs []*float64           `json:"token_logprobs"`
			TopLogprobs   []map[string]float64 `json:"top_logprobs"`
			TextOffset    []int                `json:"text_offset"`
		} `json:"logprobs"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
}

func postEcho(t *testing.T, url, body string) echoResponse {
	t.Helper()
	res := do(t, "POST", url+"/v1/completions", body)
	if res.status != 200 {
		t.Fatalf("%s: status %d: %s", body, res.status, res.body)
	}
	var r echoResponse
	if err := json.Unmarshal(res.body, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRealEcho: echo returns the prompt before the completion; with
// logprobs every prompt token but the first (null) has its logprob and
// alternatives, and the completion's entries are those of a run without
// echo; max_tokens 0 scores the prompt alone (lm-eval-harness's
// loglikelihood requests); streamed, the same text.
func TestRealEcho(t *testing.T) {
	b := realBackend(t).(*realStories)
	_, url := startServer(t, Config{}, b)
	const prompt = "Once upon a time, there was a little dog"
	ptoks, err := b.Tokenize(prompt, true)
	if err != nil {
		t.Fatal(err)
	}

	score := postEcho(t, url, `{"prompt": "`+prompt+`", "echo": true, "logprobs": 2, "max_tokens": 0}`)
	c := score.Choices[0]
	lp := c.Logprobs
	if c.Text != prompt || c.FinishReason != "length" || score.Usage.CompletionTokens != 0 || score.Usage.PromptTokens != len(ptoks) {
		t.Fatalf("max_tokens 0: %q (%s), usage %+v", c.Text, c.FinishReason, score.Usage)
	}
	if len(lp.Tokens) != len(ptoks) || len(lp.TokenLogprobs) != len(ptoks) || len(lp.TopLogprobs) != len(ptoks) || len(lp.TextOffset) != len(ptoks) {
		t.Fatalf("%d tokens, %d logprobs for %d prompt tokens", len(lp.Tokens), len(lp.TokenLogprobs), len(ptoks))
	}
	if lp.TokenLogprobs[0] != nil || lp.TopLogprobs[0] != nil {
		t.Fatalf("first prompt token: %v %v, want null", lp.TokenLogprobs[0], lp.TopLogprobs[0])
	}
	for i := 1; i < len(ptoks); i++ {
		if v := lp.TokenLogprobs[i]; v == nil || *v > 0 || len(lp.TopLogprobs[i]) < 2 || lp.Tokens[i] != b.TokenPiece(ptoks[i]) {
			t.Fatalf("prompt token %d %q: %v %v", i, lp.Tokens[i], v, lp.TopLogprobs[i])
		}
	}

	// With a completion: the same completion and logprobs as without echo.
	plain := postEcho(t, url, `{"prompt": "`+prompt+`", "logprobs": 1, "max_tokens": 6, "temperature": 0, "ignore_eos": true}`)
	echo := postEcho(t, url, `{"prompt": "`+prompt+`", "echo": true, "logprobs": 1, "max_tokens": 6, "temperature": 0, "ignore_eos": true}`)
	pc, ec := plain.Choices[0], echo.Choices[0]
	if ec.Text != prompt+pc.Text || len(ec.Logprobs.Tokens) != len(ptoks)+len(pc.Logprobs.Tokens) {
		t.Fatalf("echo %q (%d entries), plain %q (%d)", ec.Text, len(ec.Logprobs.Tokens), pc.Text, len(pc.Logprobs.Tokens))
	}
	for i, v := range pc.Logprobs.TokenLogprobs {
		w := ec.Logprobs.TokenLogprobs[len(ptoks)+i]
		if w == nil || math.Abs(*w-*v) > 1e-3*max(1, math.Abs(*v)) {
			t.Fatalf("completion token %d: %v with echo, %v without", i, w, *v)
		}
	}
	for i := 1; i < len(ptoks); i++ {
		// The same rows, up to the batch's arithmetic (other requests may
		// share the decode).
		if x, y := *ec.Logprobs.TokenLogprobs[i], *lp.TokenLogprobs[i]; math.Abs(x-y) > 1e-3*max(1, math.Abs(y)) {
			t.Fatalf("prompt token %d: %v, then %v", i, *ec.Logprobs.TokenLogprobs[i], *lp.TokenLogprobs[i])
		}
	}

	// A token prompt, streamed: the same text as not streamed.
	toks, _ := json.Marshal(ptoks)
	res := do(t, "POST", url+"/v1/completions", `{"prompt": `+string(toks)+`, "echo": true, "max_tokens": 6, "temperature": 0, "ignore_eos": true, "stream": true}`)
	var streamed strings.Builder
	for _, line := range strings.Split(string(res.body), "\n") {
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		var ch struct {
			Choices []struct {
				Text string `json:"text"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(data), &ch); err != nil {
			t.Fatal(err)
		}
		if len(ch.Choices) > 0 {
			streamed.WriteString(ch.Choices[0].Text)
		}
	}
	var pieces strings.Builder
	for _, tok := range ptoks {
		pieces.WriteString(b.TokenPiece(tok))
	}
	if want := pieces.String() + pc.Text; streamed.String() != want {
		t.Fatalf("streamed %q, want %q", streamed.String(), want)
	}

	for _, body := range []string{
		`{"prompt": "a", "max_tokens": 0}`,
		`{"prompt": "a", "echo": true, "max_tokens": 0, "max_completion_tokens": 3}`,
	} {
		if r := do(t, "POST", url+"/v1/completions", body); r.status != 400 {
			t.Errorf("%s: status %d", body, r.status)
		}
	}
	if r := do(t, "POST", url+"/v1/chat/completions", `{"messages": [{"role": "user", "content": "a"}], "echo": true}`); r.status != 400 {
		t.Errorf("chat echo: status %d", r.status)
	}
}
