package scheduler

import (
	"context"
	"time"

	"specd/paging"
	"specd/specdec"
)

type proposerKind uint8

const (
	propNone proposerKind = iota
	propDraft
	propNGram
	propPrediction
)

func (p proposerKind) String() string {
	return [...]string{"none", "draft", "ngram", "prediction"}[p]
}

type seqState uint8

const (
	stWaiting seqState = iota // in the waiting queue (new, or preempted by recompute)
	stSwapped                 // preempted by swap: KV saved on the host
	stRunning
	stDone
)

// seq is one request's state. Only the loop goroutine touches it after
// Submit hands it over.
type seq struct {
	id     uint64
	ctx    context.Context
	req    Request
	events chan Event

	state   seqState
	slot    paging.SeqID
	tokens  []int32 // prompt + generated; the last one is pending (not in the KV yet) once generating
	nPrompt int
	// computed: target KV holds positions [0, computed). dcomputed: the
	// draft's KV, [0, dcomputed).
	computed, dcomputed int
	admitted            uint64 // admission order, for LIFO preemption
	cachedTokens        int    // prompt tokens reused from the prefix cache (first admission)

	sampler *specdec.Sampler // sampling, verification and the draft's own stream
	adjust  *specdec.Adjust  // logit_bias and penalties; counts the generated tokens
	// grammar (Request.Grammar) follows the accepted tokens; gdraft is its
	// clone that follows the draft model's proposals during one draft
	// phase. Both are freed with the Done event (deliver).
	grammar, gdraft specdec.Grammar
	// plp are the prompt's logprobs so far (Request.PromptLogprobs): of
	// tokens 1..len(plp); plpSent once delivered.
	plp      []Logprob
	plpSent  bool
	proposer proposerKind
	fixedK   int // > 0: the request fixed k
	kWant    int // this step's k from planK
	acc      specdec.Acceptance
	pred     *specdec.Prediction

	// Draft proposals of this step and (temperature > 0, draft model) their
	// distributions.
	drafts []int32
	q      [][]float32
	qbuf   []float32

	out      textOut
	pending  Event // coalesced output not yet delivered
	hasPend  bool
	finished bool // Done is decided; may still be waiting to deliver
	swapT    []byte
	swapD    []byte

	usage      Usage
	submitted  time.Time
	admittedAt time.Time
	firstTok   time.Time
}

func (s *seq) generated() int { return len(s.tokens) - s.nPrompt }

func freeGrammar(g specdec.Grammar) {
	if g != nil {
		g.Free()
	}
}
