// Package engine is specd's only door to llama.cpp: it loads the prebuilt
// shared libraries at run time with purego (no cgo) and offers models,
// contexts, batches, KV memory operations, vocabularies and quantization as
// plain Go types. No other package sees a C type or an unsafe pointer.
//
// # What it owns
//
//   - library.go: finding and opening libggml-base, libggml and libllama
//     (npm names such as libllama.v0.5.0.so, or a CMake build's
//     libllama.so[.0]), binding every symbol with a "could not load %q"
//     error, the one log callback, backend loading.
//   - threadpool.go: ggml compute thread pools (see "Threads" below).
//   - model.go: loading with progress and cancellation, metadata, chat
//     templates (llama_chat_apply_template: built-in templates, no Jinja).
//   - vocab.go: tokenize, detokenize, pieces; per-token facts cached in Go.
//   - context.go: contexts, Decode, logits.
//   - batch.go: reusable batches in C memory.
//   - memory.go: KV cache operations and per-sequence state save/restore.
//   - quantize.go: llama_model_quantize.
//   - gguf.go: a pure-Go GGUF reader (CheckGGUF, InspectGGUF) that needs no
//     native library, so bad files fail with a clear error before llama.cpp
//     sees them and `specd info` works without loading weights.
//
// # What callers do, in order
//
//  1. Open(Options{...}) once per process (a second Open with the same
//     folder returns the same *Library). It sets GGML_NO_BACKTRACE=1,
//     installs the logger, loads the backends and finds the CPU variant's
//     thread pool functions.
//  2. lib.LoadModel(ctx, ModelParams{Path: ...}): CheckGGUF, then load.
//  3. model.NewContext(ContextParams{...}): a KV cache of NCtx cells shared
//     by NSeqMax sequence ids. Without UnifiedKV each sequence gets its own
//     stream of NCtx/NSeqMax cells, and llama.cpp rounds that up to a
//     multiple of 256 (n_ctx_seq), so NCtx() may exceed what was asked.
//     With UnifiedKV all sequences draw from one pool and SeqCopy shares
//     cells (prefix caching).
//  4. lib.NewBatch(n) once; per step: Reset, Add(token, pos, seq, logits)
//     per token, ctx.Decode(batch), ctx.Logits(row) for the rows that asked.
//     Logits views are valid until the next Decode. Add, Decode, Logits,
//     SeqRemove, SeqCopy and SeqPosMax do not allocate.
//  5. Roll back rejected tokens with SeqRemove(seq, firstBadPos, -1).
//  6. Close contexts, then models, then thread pools you made; batches any
//     time after their last Decode.
//
// A Context and a Batch belong to one goroutine. Model and Vocab are safe
// for concurrent reads.
//
// # Errors
//
// Decode maps llama_decode's codes: 1 → ErrNoKVSlot (the cache is as it was:
// free cells or send fewer tokens), 2 → ErrDecodeAborted, -1 → an error for
// an invalid batch (token id outside the vocabulary, sequence id ≥ NSeqMax,
// positions that do not follow the cache; llama.cpp validates these and the
// cache is unchanged), < -1 → a fatal error. Errors of native calls carry the
// last error line llama.cpp logged.
//
// # Threads
//
// The npm build has no OpenMP: without a thread pool attached, ggml creates
// and joins threads on every llama_decode and a one-token decode is about a
// hundred times slower. Every Context therefore has a pool attached: its own
// (ContextParams.Threads threads) or a shared one from Library.NewThreadPool.
// ggml's pool threads poll for work after each decode; on a small machine
// keep the total number of threads at or below the cores, and share one pool
// between a target and a draft context, which never decode at the same time.
//
// # Native memory rules this package follows
//
// purego callbacks are never freed, so the log and progress callbacks are
// made once and dispatch through a Go-side registry. Go pointers inside a
// struct passed by value are not kept alive, so batch arrays live in C
// memory from llama_batch_init. Hot calls go through purego.SyscallN with a
// preallocated argument slice (the 56-byte llama_batch is passed in memory,
// after five padding register words) instead of reflection.
package engine
