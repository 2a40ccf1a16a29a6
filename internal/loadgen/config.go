package loadgen

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// Prompt is one request's input: the text sent as `prompt` and its
// `max_tokens`. A dataset JSONL line has the same shape:
// {"prompt": "...", "max_tokens": N}.
type Prompt struct {
	Text      string `json:"prompt"`
	MaxTokens int    `json:"max_tokens,omitempty"` // 0 = Config.OutputTokens
}

// Speculative is specd's per-request `speculative` extension object. A nil
// *Speculative sends nothing (the server's defaults).
type Speculative struct {
	Proposer string `json:"proposer,omitempty"` // "none", "draft", "ngram"; "" = server default
	K        int    `json:"k,omitempty"`        // > 0: fixed k
}

// SpecForK is the extension object a k sweep sends: k = 0 turns
// speculation off ({"proposer":"none"}), k > 0 fixes k.
func SpecForK(k int) *Speculative {
	if k <= 0 {
		return &Speculative{Proposer: "none"}
	}
	return &Speculative{K: k}
}

// Config is one benchmark run: one workload at one concurrency (or rate)
// against one server. The zero value is not runnable: URL and a stop
// condition (Requests or Duration) are required; everything else has the
// default written next to it.
type Config struct {
	URL      string // base URL, e.g. http://127.0.0.1:8080; the only host ever contacted
	Endpoint string // default "/v1/completions"
	Model    string // sent as `model`; "" sends "default"

	// Concurrency caps requests in flight. Without Rate it is a closed loop:
	// Concurrency workers each send the next request as soon as theirs ends.
	// With Rate it is the cap on in-flight requests (0 = no cap). Default 1.
	Concurrency int
	// Rate > 0 issues requests as a Poisson process of Rate requests per
	// second (exponential gaps, seeded by Seed), like `vllm bench serve
	// --request-rate`. 0 = closed loop.
	Rate float64

	// Stop conditions: stop issuing after Requests requests or after
	// Duration, whichever comes first; at least one must be set. Requests
	// already in flight at the deadline are awaited.
	Requests int
	Duration time.Duration

	OutputTokens int     // max_tokens for prompts with MaxTokens 0; default 128
	Temperature  float64 // default 0 (greedy)
	IgnoreEOS    bool    // send ignore_eos: true so every request makes max_tokens (the CLI sets it)
	PrefixCache  bool    // send cache_prompt: true; false sends cache_prompt: false
	Speculative  *Speculative
	// Extra is a JSON object whose fields every request also sends (a
	// response_format, a grammar, ...); it must not repeat the fields
	// above.
	Extra json.RawMessage
	Seed  int64 // arrival-time stream; default 0 is a valid seed

	Warmup  int           // requests sent one at a time before timing starts, not counted; default 0
	Timeout time.Duration // per request; default 10m

	Client *http.Client // default: NewClient(Concurrency)
	// OnDone, if set, is called after each measured request ends (from the
	// request's goroutine, so it must be safe for concurrent use).
	OnDone func(Sample)
}

func (c *Config) withDefaults() Config {
	d := *c
	if d.Endpoint == "" {
		d.Endpoint = "/v1/completions"
	}
	if d.Model == "" {
		d.Model = "default"
	}
	if d.Concurrency == 0 && d.Rate == 0 {
		d.Concurrency = 1
	}
	if d.OutputTokens == 0 {
		d.OutputTokens = 128
	}
	if d.Timeout == 0 {
		d.Timeout = 10 * time.Minute
	}
	if d.Client == nil {
		conns := d.Concurrency
		if d.Rate > 0 && conns == 0 {
			conns = 64 // uncapped open loop: keep a pool anyway
		}
		d.Client = NewClient(conns)
	}
	return d
}

// Validate reports a configuration Run cannot use.
func (c *Config) Validate() error {
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("loadgen: URL %q is not an http(s) URL with a host", c.URL)
	}
	switch {
	case c.Concurrency < 0:
		return errors.New("loadgen: Concurrency < 0")
	case c.Rate < 0:
		return errors.New("loadgen: Rate < 0")
	case c.Requests < 0 || c.Duration < 0:
		return errors.New("loadgen: Requests and Duration must be >= 0")
	case c.Requests == 0 && c.Duration == 0:
		return errors.New("loadgen: set Requests or Duration")
	case c.OutputTokens < 0:
		return errors.New("loadgen: OutputTokens < 0")
	case c.Temperature < 0:
		return errors.New("loadgen: Temperature < 0")
	case c.Warmup < 0:
		return errors.New("loadgen: Warmup < 0")
	case c.Speculative != nil && c.Speculative.K < 0:
		return errors.New("loadgen: Speculative.K < 0")
	}
	if len(c.Extra) > 0 {
		var m map[string]json.RawMessage
		if json.Unmarshal(c.Extra, &m) != nil || m == nil {
			return errors.New("loadgen: Extra must be a JSON object")
		}
		for _, k := range []string{"model", "prompt", "messages", "max_tokens", "temperature", "stream", "stream_options", "ignore_eos", "cache_prompt", "speculative"} {
			if _, ok := m[k]; ok {
				return fmt.Errorf("loadgen: Extra repeats %q, which the load generator sets", k)
			}
		}
	}
	return nil
}

// NewClient is a keep-alive HTTP client sized for conc connections. It
// ignores proxy environment variables (traffic goes only to the URL given)
// and asks for no compression, so chunks are seen when they arrive.
func NewClient(conc int) *http.Client {
	if conc < 1 {
		conc = 1
	}
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		MaxIdleConns:        conc + 4,
		MaxIdleConnsPerHost: conc + 4,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}}
}
