// Package loadgen is the load generator behind `specd bench`: it drives any
// OpenAI-compatible server (specd, llama-server, vLLM) with streaming
// completions and reports the figures `vllm bench serve` defines.
//
// It owns: the request loops (a closed loop of Concurrency workers, or a
// Poisson process of Rate requests/s with an optional in-flight cap), the
// streaming SSE reader that stamps every chunk as it arrives, the metrics
// (request and token throughput; TTFT, TPOT = (latency − TTFT)/(output
// tokens − 1), ITL = every gap between text chunks, end-to-end latency;
// mean, p50, p90, p99 from the sorted samples, numpy's linear
// interpolation), speculation figures when the server reports them
// (OpenAI usage.completion_tokens_details.accepted/rejected_prediction_tokens
// or llama.cpp timings.draft_n/draft_n_accepted), synthetic and JSONL
// prompts, the Leviathan model for k sweeps, and the plots (gonum).
//
// Callers, in order:
//
//  1. Build a Config (URL plus Requests and/or Duration; the rest has
//     documented defaults) and check it with Validate.
//  2. Get prompts: LoadDataset for a JSONL file, or Synthetic with a
//     TokensPerWord from Calibrate (which asks the server's /tokenize, or
//     reads usage.prompt_tokens of a one-token completion).
//  3. Run once per point (concurrency, rate, k); Run is bounded by the
//     stop condition and returns early, with partial results, when ctx is
//     cancelled. Every request goes to Config.URL and nowhere else: the
//     client ignores proxy settings.
//  4. Collect Points into a Report; WriteTable or encode it as JSON;
//     FitSweep a k sweep; PlotConcurrency or PlotSweep to draw.
//
// Requests are /v1/completions with stream: true, stream_options
// {include_usage: true}, max_tokens, temperature, ignore_eos (if set),
// cache_prompt (false unless the prefix-cache workload is chosen) and, for
// specd, the extension object "speculative": {"k": K} or
// {"proposer": "none"}.
package loadgen
