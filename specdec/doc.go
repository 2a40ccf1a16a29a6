// Package specdec decides what to propose and what to keep: per-request
// sampling, lossless verification of draft tokens, the model-free
// proposers, and the choice of the draft length k. It is pure Go and knows
// nothing of llama.cpp; the scheduler feeds it logit rows and token
// histories and applies its answers (the draft-model proposer, which needs
// batched draft decodes, lives in the scheduler on top of this API).
//
// # Sampling
//
// A Sampler belongs to one request. It owns the request's random streams
// (PCG seeded from SamplingParams.Seed; the caller picks a random seed when
// the request gave none) and works in a Workspace of vocabulary-sized
// scratch that samplers may share when they run on one goroutine, as in the
// scheduler: NewWorkspace(nVocab) once, NewSamplerIn(params, ws) per
// request. Per token nothing is allocated.
//
// The transforms follow llama.cpp's default chain: top-k, then top-p on the
// temperature-1 softmax of what is left, then min-p (p >= min_p·p_max),
// then temperature on the kept set. Tokens are ranked by logit, ties by
// lower token id, so Argmax, top-k and top-p agree on ties and top-k keeps
// exactly k tokens. Temperature 0 or top-k 1 is greedy. Dist returns the
// resulting distribution over the whole vocabulary; Sample draws from it
// by inverse CDF in token order with one uniform of the emission stream.
//
// # Verification
//
// For a decoding sequence with pending token t and draft d[0..k), the
// target decodes t, d[0..k) and returns k+1 logit rows; Verify(d, q, rows,
// out) appends the accepted draft prefix and exactly one more token:
//
//   - greedy: drafts kept while equal to the target's argmax, then the
//     argmax; the output is token for token the target's greedy output;
//   - with q (a draft model's Dist rows): rejection sampling, keep x with
//     probability min(1, p(x)/q(x)), else draw from normalize(max(0, p-q)),
//     and a bonus token from the last row when all are kept;
//   - q == nil (n-gram, prediction, any proposer without a distribution):
//     the point-mass case, which draws each token from p exactly as Sample
//     would and counts it accepted when it equals the draft.
//
// Each emitted token consumes exactly one uniform of the emission stream
// and draft sampling (SampleDraft) has its own stream, so a seeded request
// gives the same output whatever else is in the batch. With the point-mass
// proposers (and greedy) it even gives the same output as with no
// speculation at all. With a draft model the output depends on the k chosen
// at each step (the coupling differs), so a seeded request is reproducible
// only under the same k sequence: fixed k, or adaptive k on the same
// measured costs; the distribution is the target's either way.
//
// The draft-model proposer does, per draft position i and sequence:
// q[i] = s.Dist(draftLogits, qbuf[i]); d[i] = s.SampleDraft(q[i]) (for a
// greedy sampler, d[i] = Argmax(draftLogits) and q may be nil). Draft and
// target must share the tokenizer; a draft row shorter than the target's
// means zero probability for the missing ids.
//
// # Proposers without a model
//
// NGram.Propose(history, k, dst) continues the most recent earlier
// occurrence of the longest suffix n-gram (MaxN..MinN tokens) of the
// sequence's own prompt and output; it is a pure function of the history.
// NewPrediction(tokens) proposes from a predicted output (OpenAI's
// `prediction`) and re-aligns after the output departs from it; it keeps
// state, one per request, and must be shown the output as it grows.
//
// # Draft length
//
// Per sequence, an Acceptance (NewAcceptance(cfg)) is told after each
// verify Observe(proposed, accepted) and estimates the per-token
// acceptance rate α (decayed maximum likelihood under the geometric model),
// keeping totals and PositionCounters for reporting. One CostModel per
// scheduler is told the measured wall time of every draft decode
// (ObserveDraft(rows, d)) and target decode (ObserveVerify(tokens, d)).
// Each step, before drafting, the scheduler picks k: BatchChooser.Choose
// for the whole batch (per-sequence k in {0} ∪ [KMin, KMax], including 0
// for sequences or the whole batch when speculation does not pay), or
// ChooseK for one sequence; both maximise ExpectedTokens(α, k) =
// (1-α^(k+1))/(1-α) per second of measured cost. KConfig.Fixed > 0 turns
// adaptation off.
//
// Order per step: Propose / choose k → draft (q rows, SampleDraft) → target
// decode → Verify → Acceptance.Observe and CostModel.Observe*.
package specdec
