package server

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"specd/scheduler"
)

// metrics are the server's Prometheus series, on a registry of its own so
// that tests and several servers in one process never collide. Series that
// mirror scheduler state are read from Backend.Stats at scrape time
// (statsCollector); latencies are measured here from the event stream.
type metrics struct {
	reg          *prometheus.Registry
	requests     *prometheus.CounterVec // endpoint, status
	inFlight     prometheus.Gauge
	ttft         prometheus.Histogram
	tpot         prometheus.Histogram
	e2e          *prometheus.HistogramVec // endpoint
	promptTokens prometheus.Counter
	cachedTokens prometheus.Counter
	genTokens    prometheus.Counter
	cancelled    *prometheus.CounterVec // reason
	handler      fasthttp.RequestHandler
}

func newMetrics(b Backend) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	f := func(c prometheus.Collector) { m.reg.MustRegister(c) }
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "specd_http_requests_total", Help: "HTTP requests by endpoint and status code.",
	}, []string{"endpoint", "status"})
	m.inFlight = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "specd_http_requests_in_flight", Help: "Generation requests being served (including streams).",
	})
	m.ttft = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "specd_time_to_first_token_seconds", Help: "Arrival of the request to its first generated token, per choice.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
	})
	m.tpot = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "specd_time_per_output_token_seconds", Help: "(last token - first token) / (tokens - 1), per choice.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
	})
	m.e2e = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "specd_request_duration_seconds", Help: "Arrival to last byte of successful generation requests.",
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 16),
	}, []string{"endpoint"})
	m.promptTokens = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "specd_prompt_tokens_total", Help: "Prompt tokens of finished sequences.",
	})
	m.cachedTokens = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "specd_prompt_cached_tokens_total", Help: "Prompt tokens served from the prefix cache.",
	})
	m.genTokens = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "specd_generation_tokens_total", Help: "Generated tokens of finished sequences.",
	})
	m.cancelled = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "specd_requests_cancelled_total", Help: "Generation requests ended early, by reason (disconnect, timeout, shutdown).",
	}, []string{"reason"})
	for _, c := range []prometheus.Collector{m.requests, m.inFlight, m.ttft, m.tpot, m.e2e,
		m.promptTokens, m.cachedTokens, m.genTokens, m.cancelled, statsCollector{b}} {
		f(c)
	}
	m.handler = fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	return m
}

func (m *metrics) finished(u scheduler.Usage) {
	m.promptTokens.Add(float64(u.PromptTokens))
	m.cachedTokens.Add(float64(u.CachedTokens))
	m.genTokens.Add(float64(u.CompletionTokens))
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	dWaiting        = desc("specd_queue_waiting", "Requests waiting for admission.")
	dRunning        = desc("specd_sequences_running", "Sequences being generated.")
	dKVBlocks       = desc("specd_kv_blocks", "KV cache blocks by state (used: held by running sequences; free: total - used; cached: unreferenced blocks kept for the prefix cache).", "state")
	dKVTotal        = desc("specd_kv_blocks_total_capacity", "KV cache blocks in all.")
	dPrefixQueries  = desc("specd_prefix_cache_queries_total", "Prompt blocks looked up in the prefix cache.")
	dPrefixHits     = desc("specd_prefix_cache_hits_total", "Prompt blocks found in the prefix cache.")
	dPrefixCopies   = desc("specd_prefix_cache_stream_copies_total", "Prefix-cache hits served by copying a running sequence's KV stream (kv_layout streams).")
	dPreemptions    = desc("specd_preemptions_total", "Sequences preempted, by mode.", "mode")
	dSteps          = desc("specd_scheduler_steps_total", "Scheduler steps.")
	dStepSeconds    = desc("specd_scheduler_step_seconds_total", "Wall time in scheduler steps.")
	dDecodeSeconds  = desc("specd_decode_seconds_total", "Wall time in the target's llama_decode within steps.")
	dDraftSeconds   = desc("specd_draft_decode_seconds_total", "Wall time in the draft model's llama_decode within steps.")
	dDraftRows      = desc("specd_draft_decoded_tokens_total", "Tokens the draft model decoded: prompts, catch-ups of its KV and draft positions.")
	dDraftProposed  = desc("specd_draft_tokens_proposed_total", "Draft tokens proposed.")
	dDraftTries     = desc("specd_draft_tries_total", "Steps in which one sequence drafted as a try while adaptive k let none draft with the model.")
	dDraftAccepted  = desc("specd_draft_tokens_accepted_total", "Draft tokens accepted.")
	dProposedByPos  = desc("specd_draft_tokens_proposed_by_position_total", "Draft tokens proposed at each draft position.", "position")
	dAcceptedByPos  = desc("specd_draft_tokens_accepted_by_position_total", "Draft tokens accepted at each draft position.", "position")
	dAcceptanceRate = desc("specd_draft_acceptance_rate", "Accepted / proposed draft tokens since start (0 before any).")
	dLastK          = desc("specd_speculative_k", "Draft length k chosen at the last speculative step.")
	dGrammarSeconds = desc("specd_grammar_seconds_total", "Wall time in grammar operations (structured outputs, tools): masks, checks, accepts, clones.")
	dGrammarsLive   = desc("specd_grammars_live", "Grammars alive: one per constrained request, and its clones during a step.")
	dDecodeCalls    = desc("specd_decode_calls_total", "llama_decode calls, by model.", "model")
	dGraphsReused   = desc("specd_graphs_reused_total", "Micro-batches that reused the previous compute graph of their context (same shape), by model; the others built one.", "model")
	dDecodeThreads  = desc("specd_decodes_total", "llama_decode calls under decode_threads auto, by model and by whether they ran on one of the pool's threads or on all.", "model", "threads")
)

// statsCollector turns a Backend.Stats snapshot into series at scrape time.
type statsCollector struct{ b Backend }

func (statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dWaiting, dRunning, dKVBlocks, dKVTotal, dPrefixQueries,
		dPrefixHits, dPrefixCopies, dPreemptions, dSteps, dStepSeconds, dDecodeSeconds, dDraftSeconds, dDraftRows, dDraftProposed, dDraftTries,
		dDraftAccepted, dProposedByPos, dAcceptedByPos, dAcceptanceRate, dLastK, dDecodeThreads, dGrammarSeconds, dGrammarsLive, dDecodeCalls, dGraphsReused} {
		ch <- d
	}
}

func (c statsCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.b.Stats()
	g := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	ctr := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, l...)
	}
	g(dWaiting, float64(st.Waiting))
	g(dRunning, float64(st.Running))
	g(dKVBlocks, float64(st.KVBlocksUsed), "used")
	g(dKVBlocks, float64(st.KVBlocksTotal-st.KVBlocksUsed), "free")
	g(dKVBlocks, float64(st.KVBlocksCached), "cached")
	g(dKVTotal, float64(st.KVBlocksTotal))
	ctr(dPrefixQueries, float64(st.PrefixQueries))
	ctr(dPrefixHits, float64(st.PrefixHits))
	ctr(dPrefixCopies, float64(st.PrefixStreamCopies))
	ctr(dPreemptions, float64(st.PreemptionsRecomp), "recompute")
	ctr(dPreemptions, float64(st.PreemptionsSwap), "swap")
	ctr(dSteps, float64(st.Steps))
	ctr(dStepSeconds, st.StepTime.Seconds())
	ctr(dDecodeSeconds, st.DecodeTime.Seconds())
	ctr(dDraftSeconds, st.DraftDecodeTime.Seconds())
	ctr(dDraftRows, float64(st.DraftDecoded))
	ctr(dDraftProposed, float64(st.DraftProposed))
	ctr(dDraftTries, float64(st.DraftTries))
	ctr(dDraftAccepted, float64(st.DraftAccepted))
	for i, v := range st.ProposedByPosition {
		ctr(dProposedByPos, float64(v), strconv.Itoa(i))
	}
	for i, v := range st.AcceptedByPosition {
		ctr(dAcceptedByPos, float64(v), strconv.Itoa(i))
	}
	rate := 0.0
	if st.DraftProposed > 0 {
		rate = float64(st.DraftAccepted) / float64(st.DraftProposed)
	}
	g(dAcceptanceRate, rate)
	g(dLastK, float64(st.LastK))
	ctr(dGrammarSeconds, st.GrammarTime.Seconds())
	g(dGrammarsLive, float64(st.LiveGrammars))
	for i, model := range []string{"target", "draft"} {
		ctr(dDecodeThreads, float64(st.DecodeThreads[i][0]), model, "one")
		ctr(dDecodeThreads, float64(st.DecodeThreads[i][1]), model, "all")
		ctr(dDecodeCalls, float64(st.Decodes[i]), model)
		ctr(dGraphsReused, float64(st.GraphsReused[i]), model)
	}
}
