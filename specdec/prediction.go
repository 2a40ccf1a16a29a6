package specdec

// Prediction proposes from a predicted output (the OpenAI request field
// `prediction`, tokenized): while the output follows the prediction it
// proposes the prediction's next tokens; after the output departs from it
// (a rejected proposal), it re-aligns by finding where the output's newest
// tokens occur in the prediction and continues from there. It keeps state
// between calls, so one Prediction serves one request, and the output it is
// shown must only grow by appending.
type Prediction struct {
	tokens  []int32
	pos     int  // index in tokens of the next expected output token
	aligned bool // the output's end corresponds to tokens[:pos]
	seen    int  // output tokens consumed

	// MinMatch is how many of the output's newest tokens must match to
	// re-align anywhere in the prediction (default 2); Window is how far
	// after the point of departure a single matching token suffices, which
	// resynchronises after a one-token substitution (default 8). MaxMatch
	// caps the match length compared (default 8).
	MinMatch, Window, MaxMatch int
}

// NewPrediction returns a proposer for the predicted tokens (not copied).
func NewPrediction(tokens []int32) *Prediction {
	return &Prediction{tokens: tokens, aligned: true, MinMatch: 2, Window: 8, MaxMatch: 8}
}

// Propose appends up to k predicted tokens to dst[:0] and returns it.
// output is every token generated so far for the request.
func (p *Prediction) Propose(output []int32, k int, dst []int32) []int32 {
	dst = dst[:0]
	if len(output) < p.seen { // not append-only: start over
		p.pos, p.seen, p.aligned = 0, 0, true
	}
	departed := -1
	for _, t := range output[p.seen:] {
		if p.aligned {
			if p.pos < len(p.tokens) && p.tokens[p.pos] == t {
				p.pos++
				continue
			}
			p.aligned = false
			departed = p.pos
		}
	}
	p.seen = len(output)
	if !p.aligned {
		if departed < 0 {
			departed = p.pos
		}
		p.realign(output, departed)
	}
	if !p.aligned || k <= 0 {
		return dst
	}
	end := min(p.pos+k, len(p.tokens))
	return append(dst, p.tokens[p.pos:end]...)
}

// realign looks for the end e of the longest match between the output's
// suffix and tokens[:e+1]; ties go to the match nearest after the point of
// departure, then nearest before it.
func (p *Prediction) realign(output []int32, departed int) {
	L := len(output)
	if L == 0 {
		return
	}
	last := output[L-1]
	bestE, bestN, bestDist := -1, 0, 0
	for e, t := range p.tokens {
		if t != last {
			continue
		}
		n := 1
		for n < p.MaxMatch && n < L && e-n >= 0 && p.tokens[e-n] == output[L-1-n] {
			n++
		}
		if n < p.MinMatch && !(e >= departed && e < departed+p.Window) {
			continue
		}
		dist := e - departed
		if dist < 0 {
			dist = len(p.tokens) - dist // before the departure: after all forward ones
		}
		if n > bestN || (n == bestN && dist < bestDist) {
			bestE, bestN, bestDist = e, n, dist
		}
	}
	if bestE >= 0 {
		p.pos, p.aligned = bestE+1, true
	}
}
