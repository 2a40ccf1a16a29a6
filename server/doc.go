// Package server is specd's OpenAI-compatible HTTP API, on fasthttp. It owns
// everything between a client's bytes and scheduler.Request / Event: routing,
// API keys, decoding and validating requests, chat templates and
// tokenization (through Backend), fan-out of n choices, SSE streaming,
// usage and timings, error mapping, cancellation on disconnect, timeouts,
// graceful shutdown and the Prometheus /metrics. It never decides anything
// about generation itself; the scheduler does, behind Backend.
//
// # Use, in order
//
//  1. s, err := server.New(cfg, backend, logger) — cfg zero fields take
//     their defaults (Config); the server starts not ready.
//  2. go s.ListenAndServe() (or s.Serve(ln)); /health answers 503 "loading".
//  3. s.SetReady(true) once the model is loaded.
//  4. s.Shutdown(ctx) on SIGTERM: /health turns 503, no new connections,
//     in-flight requests get Config.ShutdownGrace to finish, then are
//     cancelled (streams end with an error event, others get 503). Then
//     close the scheduler.
//
// # Endpoints
//
// POST /v1/completions, POST /v1/chat/completions (streamed or not),
// GET /v1/models, GET /v1/models/{id}, GET /health, GET /metrics, and
// llama-server's POST /tokenize. With Config.APIKeys set, /v1/* and
// /tokenize need "Authorization: Bearer <key>";
// /health and /metrics stay open for probes and scrapers.
//
// # Decisions where OpenAI and llama.cpp differ
//
//   - model: absent or "" means the served model (llama.cpp clients omit it);
//     any other name than Backend.ModelID is 404 model_not_found, as OpenAI.
//   - Unknown fields are ignored (as OpenAI). Known fields this server cannot
//     honour (legacy functions, best_of > 1, suffix, audio, llama.cpp's
//     mirostat and typical_p, vLLM's use_beam_search,
//     prompt_logprobs, ...; the list is unsupported in
//     decode.go) are refused with a 400 naming them (code
//     unsupported_parameter) unless set to their neutral value (null,
//     false, 0, 1, [], {}): never silently ignored.
//   - Ignored on purpose: user, metadata, store, service_tier,
//     prompt_cache_key, safety_identifier, parallel_tool_calls,
//     stream_options.include_obfuscation.
//   - llama.cpp's cache_prompt (default true): false makes the prompt skip
//     the prefix cache (it is prefilled whole; the output is the same).
//   - Streaming sends every token as it comes, unless Config.StreamInterval
//     N > 1 (vLLM's --stream-interval): then each chunk after the first
//     carries the text of up to N tokens (docs/decisions/0014).
//   - Length: max_completion_tokens, max_tokens and llama.cpp's n_predict
//     are aliases (contradicting values are a 400; n_predict -1 means "as
//     many as fit"). Default: min(Config.DefaultMaxTokens, room left).
//     prompt + max_tokens over Backend.ContextSize is a 400
//     context_length_exceeded, as is a prompt that leaves no room.
//   - Sampling defaults are OpenAI's: temperature 1, top_p 1, top_k and
//     min_p off. seed -1 (llama.cpp) or absent means a random seed. With
//     n > 1 choice j gets seed+j, so choices differ and are reproducible.
//   - prompt arrays: one choice set per prompt (choice index = prompt*n+j);
//     token arrays are taken as-is (no BOS added), ids must be < VocabSize.
//   - prediction: its text is tokenized without BOS into Request.Prediction.
//     usage.completion_tokens_details.accepted_prediction_tokens and
//     rejected_prediction_tokens count all draft tokens of the request
//     (accepted, proposed − accepted), whatever proposed them.
//   - speculative (extension): {"proposer": "draft"|"ngram"|"none", "k": N}.
//   - usage.prompt_tokens counts each prompt once, whatever n is; timings
//     (llama.cpp's object) sum over all choices.
//   - Statuses: 400 bad input, 401 key, 404 path or model, 405 method
//     (with Allow), 413 body over Config.MaxBodyBytes, 429 queue full (with
//     Retry-After), 503 loading or shutting down, 504 RequestTimeout, 500
//     generation failure. Errors use OpenAI's {"error": {message, type,
//     param, code}}; mid-stream failures are one `data: {"error": ...}`
//     event, which the official SDKs surface as an error.
//
// # Cancellation
//
// Each request's context derives from the server's (cancelled when the
// shutdown grace runs out) with Config.RequestTimeout. A client that goes
// away cancels it at once: a failed stream write notices, and because
// fasthttp has no close notification, every waiting request (streamed or
// not) also peeks at its socket every 100 ms (MSG_PEEK, on unix; other
// platforms rely on writes). The scheduler must end a cancelled request
// with a Done event and close its channel; the server keeps draining it.
package server
