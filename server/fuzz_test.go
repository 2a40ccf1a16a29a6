package server

import (
	"encoding/json"
	"strings"
	"testing"

	"specd/specdec"
)

// FuzzDecode feeds arbitrary bodies to request decoding, validation and
// request building: none may panic, every refusal is a well-formed 4xx
// OpenAI error, every acceptance is a request the scheduler can take.
// Seed corpus: testdata/fuzz/FuzzDecode. Run: go test -fuzz=FuzzDecode ./server/
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"prompt":"hello","max_tokens":5}`,
		`{"prompt":[1,2,3],"n":2,"seed":-1,"stop":["a","b"]}`,
		`{"prompt":[[1,2],[3]],"stream":true,"stream_options":{"include_usage":true}}`,
		`{"prompt":["a","b"],"temperature":0.5,"top_p":1,"top_k":0,"min_p":0.1,"logprobs":null}`,
		`{"prompt":"a","logprobs":3,"logit_bias":{"5":-100,"7":2.5},"presence_penalty":1,"frequency_penalty":-2}`,
		`{"prompt":"a","grammar":"root ::= [a-z]+","json_schema":{}}`,
		`{"prompt":[[1,2,3]],"echo":true,"logprobs":1,"max_tokens":0,"temperature":0}`,
		`{"prompt":"a","guided_choice":["x","y"],"structured_outputs":{"json":"{\"type\":\"string\"}"}}`,
		`{"prompt":"a","structured_outputs":{"choice":["a"],"grammar":"root ::= \"a\"","json_object":true}}`,
		`{"prompt":"a","json_schema":{"type":"object","properties":{"a":{"enum":[1,"x"]}},"required":["a"]}}`,
		`{"prompt":"a","response_format":{"type":"json_object","schema":{"type":"array","items":{"$ref":"#"}}}}`,
		`{"prompt":"a","repetition_penalty":1.2,"min_tokens":0,"stop_token_ids":[],"skip_special_tokens":true}`,
		`{"prompt":"a","guided_regex":"^[A-Z][a-z]+( [a-z]+){1,4}\\.$"}`,
		`{"prompt":"a","structured_outputs":{"regex":"(yes|no|\\d{3})"},"json_schema":{"type":"string","pattern":"x+"}}`,
	} {
		f.Add(false, []byte(s))
	}
	for _, s := range []string{
		`{"messages":[{"role":"user","content":"hi"}],"max_completion_tokens":3}`,
		`{"messages":[{"role":"user","content":[{"type":"text","text":"a"}]}],"prediction":{"type":"content","content":"x"},"speculative":{"proposer":"ngram","k":2}}`,
		`{"messages":[{"role":"system","content":null}],"n_predict":-1,"max_tokens":1e400}`,
		`{"messages":[{"role":"user","content":"hi"}],"logprobs":true,"top_logprobs":20,"logit_bias":{"0":100}}`,
		`{"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema","json_schema":{"name":"n","strict":true,"schema":{"type":"string","maxLength":3}}}}`,
		`{"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"text"},"grammar":""}`,
		`{"messages":[{"role":"system","content":"s"},{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"integer"}}}}}],"tool_choice":"required"}`,
		`{"messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},{"role":"tool","tool_call_id":"c","content":"2"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"f"}}}`,
	} {
		f.Add(true, []byte(s))
	}
	fb := newFake()
	s, err := New(Config{}, fb, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, chat bool, body []byte) {
		g, e := decode(body, chat, limits{maxN: DefaultMaxN, vocab: fakeVocab})
		if e == nil {
			var reqs []any
			rs, lens, e2 := s.buildRequests(g)
			e = e2
			for _, r := range rs {
				if (r.MaxTokens < 1 && !(r.MaxTokens == 0 && r.PromptLogprobs)) || len(r.Prompt) == 0 || len(r.Prompt)+r.MaxTokens > fakeCtx {
					t.Fatalf("bad request built: prompt %d max %d", len(r.Prompt), r.MaxTokens)
				}
				if r.TopLogprobs < 0 || r.TopLogprobs > specdec.MaxTopLogprobs || (r.TopLogprobs > 0 && !r.Logprobs) {
					t.Fatalf("bad logprobs built: %v %d", r.Logprobs, r.TopLogprobs)
				}
				for tok, b := range r.LogitBias {
					if tok < 0 || tok >= fakeVocab || !(b >= -specdec.MaxLogitBias && b <= specdec.MaxLogitBias) {
						t.Fatalf("bad logit_bias built: %d: %v", tok, b)
					}
				}
				if p, f := r.Sampling.PresencePenalty, r.Sampling.FrequencyPenalty; !(p >= -specdec.MaxPenalty && p <= specdec.MaxPenalty && f >= -specdec.MaxPenalty && f <= specdec.MaxPenalty) {
					t.Fatalf("bad penalties built: %v %v", p, f)
				}
				if len(r.Grammar) > maxGrammar || (r.Grammar != "" && !strings.Contains(r.Grammar, "root")) {
					t.Fatalf("bad grammar built: %d bytes", len(r.Grammar))
				}
				reqs = append(reqs, r)
			}
			if e == nil && (len(rs) == 0 || len(rs) != len(lens)*g.n || g.n < 1 || g.n > DefaultMaxN) {
				t.Fatalf("%d requests for %d prompts × n=%d", len(rs), len(lens), g.n)
			}
		}
		if e != nil {
			if e.Status < 400 || e.Status > 499 || e.Message == "" || e.Type == "" {
				t.Fatalf("bad error %+v", e)
			}
			if !json.Valid(e.body()) {
				t.Fatalf("error body is not JSON: %s", e.body())
			}
		}
	})
}

// FuzzResponsesToChat: any body either is refused with a 400 naming a
// field or becomes a chat body the chat decoder reads (or refuses, with the
// error renamed), without a panic; an accepted one asks for one output.
func FuzzResponsesToChat(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","input":"hi","instructions":"be brief","max_output_tokens":5,"top_k":3,"metadata":{"a":"b"}}`,
		`{"input":[{"role":"user","content":[{"type":"input_text","text":"a"}]},{"type":"function_call","call_id":"c","name":"f","arguments":"{}"},{"type":"function_call_output","call_id":"c","output":"42"}]}`,
		`{"input":"x","tools":[{"type":"function","name":"f","parameters":{"type":"object"}}],"tool_choice":{"type":"function","name":"f"}}`,
		`{"input":"x","text":{"format":{"type":"json_schema","name":"p","schema":{"type":"object"}}},"stream":true}`,
		`{"input":"x","reasoning":{"effort":null},"truncation":"disabled","include":[],"store":false}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		chat, meta, e := responsesToChat(body)
		if e != nil {
			if e.Status != 400 {
				t.Fatalf("status %d: %s", e.Status, e.Message)
			}
			return
		}
		g, e := decode(chat, true, limits{maxN: DefaultMaxN, vocab: fakeVocab})
		if e != nil {
			meta.rename(e)
			return
		}
		if g.n != 1 {
			t.Fatalf("n = %d", g.n)
		}
	})
}
