package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"
)

// words are common English words of children's stories: every tokenizer
// has them (stories260K's 512-token vocabulary included), so a prompt of n
// words is close to n·TokensPerWord tokens everywhere.
var words = strings.Fields(`the a and was to he she they it his her in on with
little big day one time there girl boy mom dad dog cat bird tree park ball
friend happy sad play saw said went wanted very good fun toy home sun sky
water red blue run jump look find help share smile lily tom ben sue box car
cake book flower garden house door window bed night morning walk talk laugh
new old small tall kind nice best all not but so then when what you we me
my is had can like love see go get make up down out into from of for at`)

// DefaultTokensPerWord is used when the server can tell nothing: typical of
// 32k-vocabulary BPE tokenizers on plain English.
const DefaultTokensPerWord = 1.3

// Workload describes synthetic prompts.
type Workload struct {
	Count         int     // number of distinct prompts
	InputTokens   int     // target prompt length in tokens (approximate)
	OutputTokens  int     // max_tokens of every prompt; 0 = Config.OutputTokens
	SharedPrefix  int     // tokens common to all prompts (<= InputTokens)
	TokensPerWord float64 // calibration; 0 = DefaultTokensPerWord
	Seed          int64
}

// Synthetic builds w.Count prompts of about w.InputTokens tokens from
// common words. The first w.SharedPrefix tokens' worth of words are the
// same in every prompt; the rest is drawn per prompt, so prompts differ
// from their first unshared word and no cache can serve them.
func Synthetic(w Workload) []Prompt {
	tpw := w.TokensPerWord
	if tpw <= 0 {
		tpw = DefaultTokensPerWord
	}
	nWords := func(tokens int) int {
		if tokens <= 0 {
			return 0
		}
		return max(1, int(float64(tokens)/tpw+0.5))
	}
	shared := min(w.SharedPrefix, w.InputTokens)
	prefixWords := nWords(shared)
	restWords := max(1, nWords(w.InputTokens)-prefixWords)
	prefix := wordText(rand.New(rand.NewPCG(uint64(w.Seed), 1)), prefixWords, nil)
	rng := rand.New(rand.NewPCG(uint64(w.Seed), 2))
	out := make([]Prompt, w.Count)
	for i := range out {
		var b []byte
		if prefixWords > 0 {
			b = append(b, prefix...)
			b = append(b, ' ')
		}
		b = wordText(rng, restWords, b)
		out[i] = Prompt{Text: string(b), MaxTokens: w.OutputTokens}
	}
	return out
}

func wordText(rng *rand.Rand, n int, b []byte) []byte {
	for i := 0; i < n; i++ {
		if i > 0 {
			b = append(b, ' ')
		}
		b = append(b, words[rng.IntN(len(words))]...)
	}
	return b
}

// Calibrate measures the server's tokens per word on a sample of the
// synthetic vocabulary: POST {url}/tokenize (llama-server, specd) if it
// answers, else a one-token completion whose usage.prompt_tokens counts the
// prompt. It returns the ratio and how it was found ("tokenize", "usage"),
// or DefaultTokensPerWord and "default" with the reason.
func Calibrate(ctx context.Context, cfg Config) (float64, string, error) {
	c := cfg.withDefaults()
	const n = 400
	text := string(wordText(rand.New(rand.NewPCG(7, 7)), n, nil))
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	base := strings.TrimRight(c.URL, "/")

	var tok struct {
		Tokens []json.RawMessage `json:"tokens"`
	}
	err1 := postJSON(ctx, c.Client, base+"/tokenize", map[string]any{"content": text, "add_special": false}, &tok)
	if err1 == nil && len(tok.Tokens) > 0 {
		return float64(len(tok.Tokens)) / n, "tokenize", nil
	}
	var comp struct {
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
		} `json:"usage"`
	}
	// A shorter sample here: it must fit the server's context per
	// sequence, which a benchmark may set small (e.g. 384 tokens).
	const nUsage = 100
	short := string(wordText(rand.New(rand.NewPCG(7, 7)), nUsage, nil))
	body := map[string]any{"model": c.Model, "prompt": short, "max_tokens": 1, "temperature": 0, "cache_prompt": false}
	err2 := postJSON(ctx, c.Client, base+c.Endpoint, body, &comp)
	if err2 == nil && comp.Usage.PromptTokens > 1 {
		// One token may be BOS; the ratio is only approximate anyway.
		return float64(comp.Usage.PromptTokens-1) / nUsage, "usage", nil
	}
	return DefaultTokensPerWord, "default", fmt.Errorf("no /tokenize (%v) and no usage (%v)", err1, err2)
}

func postJSON(ctx context.Context, client *http.Client, url string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// LoadDataset reads JSONL prompts: one {"prompt": "...", "max_tokens": N}
// per line (max_tokens optional); blank lines are skipped.
func LoadDataset(r io.Reader) ([]Prompt, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var out []Prompt
	for ln := 1; sc.Scan(); ln++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var p Prompt
		if err := json.Unmarshal(line, &p); err != nil {
			return nil, fmt.Errorf("dataset line %d: %w", ln, err)
		}
		if p.Text == "" {
			return nil, fmt.Errorf("dataset line %d: empty \"prompt\"", ln)
		}
		if p.MaxTokens < 0 {
			return nil, fmt.Errorf("dataset line %d: max_tokens < 0", ln)
		}
		out = append(out, p)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("dataset has no prompts")
	}
	return out, nil
}

// ModelID asks GET {url}/v1/models for the first model's id ("" if none).
func ModelID(ctx context.Context, client *http.Client, url string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(url, "/")+"/v1/models", nil)
	if err != nil {
		return ""
	}
	resp, err := client.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var m struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&m) != nil || len(m.Data) == 0 {
		return ""
	}
	return m.Data[0].ID
}

// Salt returns prompts with n random words put before each (a different
// draw per prompt, from seed), so that repeated dataset prompts share no
// prefix with each other or with an earlier run: a server whose prefix
// cache cannot be turned off then gains nothing from repetition.
func Salt(ps []Prompt, n int, seed int64) []Prompt {
	if n <= 0 {
		return ps
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 3))
	out := make([]Prompt, len(ps))
	for i, p := range ps {
		b := wordText(rng, n, nil)
		b = append(b, ". "...)
		b = append(b, p.Text...)
		out[i] = Prompt{Text: string(b), MaxTokens: p.MaxTokens}
	}
	return out
}
