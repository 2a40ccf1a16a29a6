package specdec

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// fakeGrammar allows token t in state s when (t+s)%3 != 0, except that
// with deadEnds state deadState allows nothing; accepting t moves to
// (7s+t)%11.
type fakeGrammar struct {
	s        int
	deadEnds bool
	live     *int
}

const deadState = 10

func (g *fakeGrammar) Allowed(t int32) bool {
	return !(g.deadEnds && g.s == deadState) && (int(t)+g.s)%3 != 0
}

func (g *fakeGrammar) Mask(row []float32) int {
	n := 0
	for t := range row {
		if g.Allowed(int32(t)) {
			n++
		} else {
			row[t] = float32(math.Inf(-1))
		}
	}
	return n
}

func (g *fakeGrammar) Accept(t int32) error {
	if !g.Allowed(t) {
		return errors.New("refused")
	}
	g.s = (7*g.s + int(t)) % 11
	return nil
}

func (g *fakeGrammar) Clone() (Grammar, error) {
	*g.live++
	return &fakeGrammar{s: g.s, deadEnds: g.deadEnds, live: g.live}, nil
}

func (g *fakeGrammar) Free() { *g.live-- }

func (g *fakeGrammar) Err() error { return nil }

// Seeded sampling under a grammar: verifying random drafts (some of them
// refused by the grammar) over ConstrainRows' rows gives exactly plain
// constrained sampling, for point-mass proposals.
func TestGrammarPointMassEqualsPlain(t *testing.T) {
	const V = 30
	r := rand.New(rand.NewPCG(8, 9))
	rows := make([][]float32, 300)
	for i := range rows {
		rows[i] = make([]float32, V)
		for j := range rows[i] {
			rows[i][j] = float32(r.NormFloat64() * 2)
		}
	}
	params := SamplingParams{Temperature: 0.9, TopP: 0.95, Seed: 7}
	live := 0
	g := &fakeGrammar{live: &live}
	plain := NewSampler(params, V)
	var want []int32
	for _, row := range rows {
		row = slices.Clone(row)
		g.Mask(row)
		tok := plain.Sample(row)
		if err := g.Accept(tok); err != nil {
			t.Fatalf("plain sampling picked refused token %d", tok)
		}
		want = append(want, tok)
	}
	for _, k := range []int{1, 3, 8} {
		s, g := NewSampler(params, V), &fakeGrammar{live: &live}
		var got []int32
		short := 0
		for pos := 0; pos < len(rows)-k; {
			draft := make([]int32, k)
			for i := range draft {
				if pos+i < len(want) && r.IntN(4) != 0 {
					draft[i] = want[pos+i]
				} else {
					draft[i] = int32(r.IntN(V))
				}
			}
			rs := make([][]float32, k+1)
			for i := range rs {
				rs[i] = slices.Clone(rows[pos+i])
			}
			n, err := ConstrainRows(g, rs, draft, false)
			if err != nil {
				t.Fatal(err)
			}
			if n < k {
				short++
			}
			out, _ := s.Verify(draft[:n], nil, rs[:n+1], nil)
			for _, tok := range out {
				if err := g.Accept(tok); err != nil {
					t.Fatalf("k=%d: verification chose refused token %d", k, tok)
				}
			}
			got = append(got, out...)
			pos += len(out)
		}
		for i := range got {
			if i < len(want) && got[i] != want[i] {
				t.Fatalf("k=%d: token %d = %d, plain constrained sampling gave %d", k, i, got[i], want[i])
			}
		}
		if short == 0 {
			t.Fatalf("k=%d: no draft was cut short: the test does not test that", k)
		}
	}
	if live != 0 {
		t.Errorf("%d clones not freed", live)
	}
}

func TestConstrainRowsChain(t *testing.T) {
	const V = 6
	live := 0
	inf := float32(math.Inf(-1))
	rows := func(n int) [][]float32 {
		rs := make([][]float32, n)
		for i := range rs {
			rs[i] = []float32{1, 2, 3, 4, 5, 6}
		}
		return rs
	}
	masked := func(refused ...int) []float32 {
		r := []float32{1, 2, 3, 4, 5, 6}
		for _, t := range refused {
			r[t] = inf
		}
		return r
	}
	// States: 0 refuses 0 and 3; accepting t in state s gives (7s+t)%11;
	// state 1 refuses 2 and 5; state 2 refuses 1 and 4; 10 refuses all.
	for _, tc := range []struct {
		draft []int32
		n     int
		want  [][]float32 // the masked rows, then the untouched ones
	}{
		{[]int32{1, 4, 2}, 3, [][]float32{masked(0, 3), masked(2, 5), masked(0, 3), masked(1, 4)}},
		{[]int32{1, 4, 3}, 2, [][]float32{masked(0, 3), masked(2, 5), masked(0, 3), masked()}},
		{[]int32{3, 1}, 0, [][]float32{masked(0, 3), masked(), masked()}},
		{nil, 0, [][]float32{masked(0, 3)}},
		// 1 then 3 lead to state 10, where nothing may follow: 3 is not proposed.
		{[]int32{1, 3, 0}, 1, [][]float32{masked(0, 3), masked(2, 5), masked(0, 1, 2, 3, 4, 5), masked()}},
	} {
		g := &fakeGrammar{deadEnds: true, live: &live}
		rs := rows(len(tc.draft) + 1)
		n, err := ConstrainRows(g, rs, tc.draft, false)
		if err != nil || n != tc.n {
			t.Errorf("draft %v: %d, %v; want %d", tc.draft, n, err, tc.n)
		}
		for j := range rs {
			if !slices.Equal(rs[j], tc.want[j]) {
				t.Errorf("draft %v: row %d = %v, want %v", tc.draft, j, rs[j], tc.want[j])
			}
		}
		if live != 0 || g.s != 0 {
			t.Errorf("draft %v: %d clones left, grammar moved to state %d", tc.draft, live, g.s)
		}
	}
	// Greedy: a row whose argmax (5) the grammar allows is left as it is.
	// 5 in state 0 gives state 5, which allows 5, giving state 7, which
	// refuses 5 and 2.
	g := &fakeGrammar{deadEnds: true, live: &live}
	rs := rows(4)
	if n, err := ConstrainRows(g, rs, []int32{5, 5, 2}, true); err != nil || n != 2 {
		t.Errorf("greedy: %d, %v; want 2", n, err)
	}
	for j, want := range [][]float32{masked(), masked(), masked(2, 5), masked()} {
		if !slices.Equal(rs[j], want) {
			t.Errorf("greedy: row %d = %v, want %v", j, rs[j], want)
		}
	}
	for _, draft := range [][]int32{nil, {1}} {
		g := &fakeGrammar{s: deadState, deadEnds: true, live: &live}
		if _, err := ConstrainRows(g, rows(len(draft)+1), draft, false); !errors.Is(err, ErrGrammarDeadEnd) {
			t.Errorf("dead state, draft %v: %v", draft, err)
		}
	}
	if live != 0 {
		t.Errorf("%d clones left", live)
	}
}
