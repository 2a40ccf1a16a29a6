package server

import (
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// These tests always run the real scheduler over llama.cpp on stories260K
// (whatever SPECD_SERVER_BACKEND says): what they check is what the model
// and the scheduler do, seen through the official SDK.

func realServer(t *testing.T) (*realStories, openai.Client) {
	t.Helper()
	b := realBackend(t).(*realStories)
	_, url := startServer(t, Config{}, b)
	return b, sdkClient(url)
}

func complete(t *testing.T, c openai.Client, p openai.CompletionNewParams, opts ...option.RequestOption) *openai.Completion {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if p.Model == "" {
		p.Model = "stories260K"
	}
	res, err := c.Completions.New(ctx, p, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func prompt(s string) openai.CompletionNewParamsPromptUnion {
	return openai.CompletionNewParamsPromptUnion{OfString: openai.String(s)}
}

func TestRealSDKSeedStopPrediction(t *testing.T) {
	b, c := realServer(t)
	p := openai.CompletionNewParams{Prompt: prompt("Once upon a time"), MaxTokens: openai.Int(40), Temperature: openai.Float(0)}
	p.Model = openai.CompletionNewParamsModel(b.ModelID())
	greedy := complete(t, c, p, option.WithJSONSet("ignore_eos", true)).Choices[0].Text
	if len(greedy) < 20 {
		t.Fatalf("greedy text too short: %q", greedy)
	}

	// Seed reproducibility at temperature 0.9, and n > 1 gets n choices.
	sp := p
	sp.Temperature, sp.Seed, sp.N = openai.Float(0.9), openai.Int(42), openai.Int(3)
	a := complete(t, c, sp)
	b2 := complete(t, c, sp)
	if len(a.Choices) != 3 || len(b2.Choices) != 3 {
		t.Fatalf("n=3 gave %d and %d choices", len(a.Choices), len(b2.Choices))
	}
	for i := range a.Choices {
		if a.Choices[i].Text != b2.Choices[i].Text {
			t.Fatalf("seed 42 choice %d differs: %q vs %q", i, a.Choices[i].Text, b2.Choices[i].Text)
		}
	}
	if a.Choices[0].Text == a.Choices[1].Text && a.Choices[1].Text == a.Choices[2].Text {
		t.Errorf("three sampled choices are all the same: %q", a.Choices[0].Text)
	}

	// Stop strings: cut at the first occurrence, not included, finish "stop".
	words := strings.Fields(greedy)
	stop := " " + words[len(words)/2]
	want := greedy[:strings.Index(greedy, stop)]
	sp = p
	sp.Stop = openai.CompletionNewParamsStopUnion{OfStringArray: []string{stop, "zzzz"}}
	got := complete(t, c, sp, option.WithJSONSet("ignore_eos", true)).Choices[0]
	if got.Text != want || got.FinishReason != openai.CompletionChoiceFinishReasonStop {
		t.Fatalf("stop %q: got %q (%s), want %q", stop, got.Text, got.FinishReason, want)
	}

	// vLLM's include_stop_str_in_output keeps the stop string.
	got = complete(t, c, sp, option.WithJSONSet("ignore_eos", true), option.WithJSONSet("include_stop_str_in_output", true)).Choices[0]
	if got.Text != want+stop || got.FinishReason != openai.CompletionChoiceFinishReasonStop {
		t.Fatalf("include_stop_str_in_output: got %q (%s), want %q", got.Text, got.FinishReason, want+stop)
	}
	// vLLM's skip_special_tokens: false renders control tokens (stories260K's
	// BOS is token 1, "<s>"; a large logit_bias makes the model repeat it).
	bos := []option.RequestOption{option.WithJSONSet("logit_bias", map[string]int{"1": 100}), option.WithJSONSet("max_tokens", 3)}
	if tx := complete(t, c, p, bos...).Choices[0].Text; tx != "" {
		t.Fatalf("control tokens rendered by default: %q", tx)
	}
	if tx := complete(t, c, p, append(bos, option.WithJSONSet("skip_special_tokens", false))...).Choices[0].Text; tx != "<s><s><s>" {
		t.Fatalf("skip_special_tokens false: %q, want <s><s><s>", tx)
	}

	// vLLM's stop_token_ids: the text ends with the first occurrence of
	// the token, which it keeps; finish "stop", also with ignore_eos.
	all, err := b.Tokenize(greedy, false)
	if err != nil || len(all) < 12 {
		t.Fatalf("tokenize %q: %v %v", greedy, all, err)
	}
	stopTok := all[10]
	cut := slices.Index(all, stopTok) + 1
	got = complete(t, c, p, option.WithJSONSet("ignore_eos", true), option.WithJSONSet("stop_token_ids", []int32{stopTok})).Choices[0]
	if want, _ := b.Tokenize(got.Text, false); !slices.Equal(want, all[:cut]) || got.FinishReason != openai.CompletionChoiceFinishReasonStop {
		t.Fatalf("stop token %d: got %q (%s), want the first %d tokens of %q", stopTok, got.Text, got.FinishReason, cut, greedy)
	}

	// Predicted Outputs: the same text, with drafts accepted when the
	// prediction is right and rejected where it is not.
	for _, pred := range []string{greedy, strings.ReplaceAll(greedy, " the ", " a ")} {
		res := complete(t, c, p, option.WithJSONSet("ignore_eos", true),
			option.WithJSONSet("prediction", map[string]any{"type": "content", "content": pred}))
		if res.Choices[0].Text != greedy {
			t.Fatalf("prediction changed the output: %q, want %q", res.Choices[0].Text, greedy)
		}
		d := res.Usage.CompletionTokensDetails
		if d.AcceptedPredictionTokens == 0 {
			t.Errorf("prediction %q: no draft token accepted (%s)", pred, res.Usage.RawJSON())
		}
		if pred == greedy && d.RejectedPredictionTokens > d.AcceptedPredictionTokens {
			t.Errorf("an exact prediction was mostly rejected: %s", res.Usage.RawJSON())
		}
	}
}

// 64 concurrent streaming clients on the real scheduler, a third of them
// hanging up at random points: every stream that completes carries exactly
// the greedy text of its prompt, and afterwards no KV block is in use.
func TestRealConcurrentStreamsCorrect(t *testing.T) {
	b, c := realServer(t)
	prompts := []string{"Once upon a time", "The little dog", "Lily wanted to", "Tom and his mom", "The sun was", "A bird flew", "The cat sat on", "Max was sad because"}
	want := map[string]string{}
	for _, pr := range prompts {
		want[pr] = complete(t, c, openai.CompletionNewParams{Prompt: prompt(pr), MaxTokens: openai.Int(24), Temperature: openai.Float(0)},
			option.WithJSONSet("ignore_eos", true)).Choices[0].Text
	}
	rng := rand.New(rand.NewPCG(5, 5))
	var wg sync.WaitGroup
	var mu sync.Mutex
	completed, dropped := 0, 0
	for i := 0; i < 64; i++ {
		pr := prompts[i%len(prompts)]
		hangAt := -1
		if i%3 == 0 {
			hangAt = rng.IntN(12)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			st := c.Completions.NewStreaming(ctx, openai.CompletionNewParams{Model: "stories260K", Prompt: prompt(pr), MaxTokens: openai.Int(24), Temperature: openai.Float(0)},
				option.WithJSONSet("ignore_eos", true))
			var text strings.Builder
			n := 0
			for st.Next() {
				ch := st.Current()
				if len(ch.Choices) > 0 {
					text.WriteString(ch.Choices[0].Text)
				}
				if n++; n == hangAt {
					cancel()
					break
				}
			}
			st.Close()
			mu.Lock()
			defer mu.Unlock()
			if hangAt >= 0 && n == hangAt {
				dropped++
				return
			}
			if err := st.Err(); err != nil {
				t.Errorf("stream %q: %v", pr, err)
				return
			}
			completed++
			if text.String() != want[pr] {
				t.Errorf("stream %q: %q, want %q", pr, text.String(), want[pr])
			}
		}()
	}
	wg.Wait()
	if completed < 40 || dropped == 0 {
		t.Fatalf("completed %d, dropped %d", completed, dropped)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := b.Stats()
		if st.Running == 0 && st.Waiting == 0 && st.KVBlocksUsed == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after all clients left: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
