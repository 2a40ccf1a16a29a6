package specdec

// MaxPenalty bounds presence_penalty and frequency_penalty, as OpenAI does.
const MaxPenalty = 2

// Penalties are OpenAI's presence_penalty and frequency_penalty over a
// sequence's generated tokens (not its prompt, as vLLM): the logit of a
// token generated c > 0 times so far drops by presence + c·frequency.
//
// In a verify pass, row j predicts the token after draft[:j], so its
// penalties count those draft tokens too: a draft token is only kept when
// every token before it was, so each row is penalised for exactly the
// text it continues, and Verify over the adjusted rows gives the penalised
// target's output token for token. Apply and Restore adjust rows in place
// and put back the exact values (logprobs read the model's own logits,
// decision 0015). A nil *Penalties does nothing.
type Penalties struct {
	presence, frequency float32
	// The generated tokens: distinct ones in order of first appearance,
	// their counts, and where each is in toks.
	toks  []int32
	cnt   []int32
	index map[int32]int
	saved []saved
}

type saved struct {
	row, tok int32
	v        float32
}

// NewPenalties returns nil when both are 0.
func NewPenalties(presence, frequency float32) *Penalties {
	if presence == 0 && frequency == 0 {
		return nil
	}
	return &Penalties{presence: presence, frequency: frequency, index: map[int32]int{}}
}

// Accept counts generated tokens.
func (p *Penalties) Accept(toks []int32) {
	if p == nil {
		return
	}
	for _, t := range toks {
		p.add(t)
	}
}

func (p *Penalties) add(t int32) {
	if i, ok := p.index[t]; ok {
		p.cnt[i]++
		return
	}
	p.index[t] = len(p.toks)
	p.toks = append(p.toks, t)
	p.cnt = append(p.cnt, 1)
}

// remove undoes the last add of t (adds are undone newest first).
func (p *Penalties) remove(t int32) {
	i := p.index[t]
	if p.cnt[i]--; p.cnt[i] == 0 {
		delete(p.index, t)
		p.toks, p.cnt = p.toks[:i], p.cnt[:i] // t was the newest distinct token
	}
}

// Apply penalises rows in place: rows[j] with the generated tokens plus
// draft[:j]. It keeps the values it overwrote for Restore.
func (p *Penalties) Apply(rows [][]float32, draft []int32) {
	if p == nil {
		return
	}
	p.saved = p.saved[:0]
	for j, row := range rows {
		if j > 0 {
			p.add(draft[j-1])
		}
		for i, t := range p.toks {
			if int(t) < len(row) {
				p.saved = append(p.saved, saved{int32(j), t, row[t]})
				row[t] -= p.presence + float32(p.cnt[i])*p.frequency
			}
		}
	}
	for j := len(rows) - 1; j > 0; j-- {
		p.remove(draft[j-1])
	}
}

// Restore puts back the values the last Apply over the same rows changed.
func (p *Penalties) Restore(rows [][]float32) {
	if p == nil {
		return
	}
	for i := len(p.saved) - 1; i >= 0; i-- {
		s := p.saved[i]
		rows[s.row][s.tok] = s.v
	}
}

// Add penalises one row in place for the generated tokens plus draft
// (rows nobody reads unpenalised afterwards: the draft model's).
func (p *Penalties) Add(row []float32, draft []int32) {
	if p == nil {
		return
	}
	for _, d := range draft {
		p.add(d)
	}
	for i, t := range p.toks {
		if int(t) < len(row) {
			row[t] -= p.presence + float32(p.cnt[i])*p.frequency
		}
	}
	for j := len(draft) - 1; j >= 0; j-- {
		p.remove(draft[j])
	}
}
