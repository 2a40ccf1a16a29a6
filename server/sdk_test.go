package server

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// sdkClient is the official SDK pointed at an in-process server, without
// retries so that error statuses surface as they are.
func sdkClient(url string, opts ...option.RequestOption) openai.Client {
	return openai.NewClient(append([]option.RequestOption{option.WithBaseURL(url + "/v1/"),
		option.WithAPIKey("test-key"), option.WithMaxRetries(0)}, opts...)...)
}

func TestSDKCompletion(t *testing.T) {
	b := newTestBackend(t)
	_, url := startServer(t, Config{APIKeys: []string{"test-key"}}, b)
	c := sdkClient(url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.Completions.New(ctx, openai.CompletionNewParams{
		Model:     openai.CompletionNewParamsModel(b.ModelID()),
		Prompt:    openai.CompletionNewParamsPromptUnion{OfArrayOfStrings: []string{"Once", "upon"}},
		MaxTokens: openai.Int(3), N: openai.Int(2), Temperature: openai.Float(0),
	}, option.WithJSONSet("ignore_eos", true))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Choices) != 4 || res.Usage.CompletionTokens != 12 || res.Choices[3].Index != 3 ||
		res.Choices[0].FinishReason != openai.CompletionChoiceFinishReasonLength || res.Choices[0].Text == "" {
		t.Errorf("%+v", res)
	}
	if !res.Usage.PromptTokensDetails.JSON.CachedTokens.Valid() || !res.Usage.CompletionTokensDetails.JSON.RejectedPredictionTokens.Valid() {
		t.Errorf("usage details missing: %s", res.Usage.RawJSON())
	}
}

func TestSDKChatAndStream(t *testing.T) {
	b := newTestBackend(t)
	_, url := startServer(t, Config{}, b)
	c := sdkClient(url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	params := openai.ChatCompletionNewParams{
		Model:       b.ModelID(),
		Messages:    []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("be brief"), openai.UserMessage("Hi")},
		MaxTokens:   openai.Int(5),
		Temperature: openai.Float(0),
		Seed:        openai.Int(3),
	}
	res, err := c.Chat.Completions.New(ctx, params, option.WithJSONSet("ignore_eos", true))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Choices) != 1 || res.Choices[0].Message.Content == "" || res.Choices[0].FinishReason != "length" ||
		res.Usage.CompletionTokens != 5 || res.Object != "chat.completion" {
		t.Errorf("%+v", res)
	}

	params.StreamOptions.IncludeUsage = openai.Bool(true)
	stream := c.Chat.Completions.NewStreaming(ctx, params, option.WithJSONSet("ignore_eos", true))
	var acc openai.ChatCompletionAccumulator
	chunks := 0
	for stream.Next() {
		acc.AddChunk(stream.Current())
		chunks++
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if acc.Choices[0].Message.Content != res.Choices[0].Message.Content || acc.Usage.CompletionTokens != 5 ||
		acc.Usage.TotalTokens != res.Usage.TotalTokens || chunks < 3 {
		t.Errorf("stream %q (usage %+v, %d chunks), non-stream %q", acc.Choices[0].Message.Content, acc.Usage, chunks, res.Choices[0].Message.Content)
	}
}

func TestSDKErrors(t *testing.T) {
	f := newFake()
	_, url := startServer(t, Config{APIKeys: []string{"test-key"}}, f)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	chat := func(c openai.Client, p openai.ChatCompletionNewParams) error {
		_, err := c.Chat.Completions.New(ctx, p)
		return err
	}
	msgs := []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hi")}
	for _, tc := range []struct {
		name   string
		setup  func()
		err    func() error
		status int
		param  string
	}{
		{"bad key", nil, func() error {
			return chat(sdkClient(url, option.WithAPIKey("wrong")), openai.ChatCompletionNewParams{Model: fakeModel, Messages: msgs})
		}, http.StatusUnauthorized, ""},
		{"unknown model", nil, func() error {
			return chat(sdkClient(url), openai.ChatCompletionNewParams{Model: "gpt-4o", Messages: msgs})
		}, http.StatusNotFound, "model"},
		{"temperature", nil, func() error {
			return chat(sdkClient(url), openai.ChatCompletionNewParams{Model: fakeModel, Messages: msgs, Temperature: openai.Float(9)})
		}, http.StatusBadRequest, "temperature"},
		{"top_logprobs", nil, func() error {
			return chat(sdkClient(url), openai.ChatCompletionNewParams{Model: fakeModel, Messages: msgs, Logprobs: openai.Bool(true), TopLogprobs: openai.Int(30)})
		}, http.StatusBadRequest, "top_logprobs"},
		{"context", nil, func() error {
			return chat(sdkClient(url), openai.ChatCompletionNewParams{Model: fakeModel, Messages: msgs, MaxTokens: openai.Int(10000)})
		}, http.StatusBadRequest, "max_tokens"},
		{"queue full", func() { f.queueFull.Store(true) }, func() error {
			defer f.queueFull.Store(false)
			return chat(sdkClient(url), openai.ChatCompletionNewParams{Model: fakeModel, Messages: msgs})
		}, http.StatusTooManyRequests, ""},
		{"closed", func() { f.closed.Store(true) }, func() error {
			defer f.closed.Store(false)
			c := sdkClient(url)
			_, err := c.Completions.New(ctx, openai.CompletionNewParams{Model: fakeModel,
				Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("a")}})
			return err
		}, http.StatusServiceUnavailable, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup()
			}
			err := tc.err()
			var ae *openai.Error
			if !errors.As(err, &ae) {
				t.Fatalf("error %v (%T) is not *openai.Error", err, err)
			}
			if ae.StatusCode != tc.status || ae.Param != tc.param || ae.Message == "" {
				t.Errorf("status %d param %q message %q; want %d %q", ae.StatusCode, ae.Param, ae.Message, tc.status, tc.param)
			}
		})
	}
}
