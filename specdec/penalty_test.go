package specdec

import (
	"math/rand/v2"
	"slices"
	"testing"
)

func TestPenaltiesMatchReference(t *testing.T) {
	if NewPenalties(0, 0) != nil {
		t.Fatal("no penalties is not nil")
	}
	var none *Penalties
	none.Accept([]int32{1})
	none.Apply(nil, nil)
	none.Restore(nil)
	none.Add(nil, nil)

	rng := rand.New(rand.NewPCG(3, 4))
	const nv = 40
	for trial := range 200 {
		pres, freq := float32(rng.IntN(5))*0.5-1, float32(rng.IntN(5))*0.5-1
		if pres == 0 && freq == 0 {
			pres = 0.5
		}
		p := NewPenalties(pres, freq)
		gen := make([]int32, rng.IntN(30))
		for i := range gen {
			gen[i] = int32(rng.IntN(nv))
		}
		p.Accept(gen)
		draft := make([]int32, rng.IntN(6))
		for i := range draft {
			draft[i] = int32(rng.IntN(nv))
		}
		rows := make([][]float32, len(draft)+1)
		orig := make([][]float32, len(rows))
		for j := range rows {
			rows[j] = make([]float32, nv)
			for i := range rows[j] {
				rows[j][i] = float32(rng.NormFloat64())
			}
			orig[j] = slices.Clone(rows[j])
		}
		toks, cnt := slices.Clone(p.toks), slices.Clone(p.cnt)
		p.Apply(rows, draft)
		for j := range rows {
			seen := append(slices.Clone(gen), draft[:j]...)
			for tok := range int32(nv) {
				c := float32(0)
				for _, s := range seen {
					if s == tok {
						c++
					}
				}
				want := orig[j][tok]
				if c > 0 {
					want -= pres + c*freq
				}
				if rows[j][tok] != want {
					t.Fatalf("trial %d row %d token %d: %v, want %v (count %v)", trial, j, tok, rows[j][tok], want, c)
				}
			}
		}
		if !slices.Equal(p.toks, toks) || !slices.Equal(p.cnt, cnt) || len(p.index) != len(toks) {
			t.Fatalf("trial %d: Apply changed the counts", trial)
		}
		p.Restore(rows)
		for j := range rows {
			if !slices.Equal(rows[j], orig[j]) {
				t.Fatalf("trial %d row %d not restored", trial, j)
			}
		}
		// Add: one row, the last position's penalties.
		row := slices.Clone(orig[len(orig)-1])
		ref := slices.Clone(row)
		p.Add(row, draft)
		full := [][]float32{}
		for range len(draft) + 1 {
			full = append(full, slices.Clone(ref))
		}
		p.Apply(full, draft)
		if !slices.Equal(row, full[len(draft)]) {
			t.Fatalf("trial %d: Add %v, Apply's last row %v", trial, row, full[len(draft)])
		}
		if !slices.Equal(p.toks, toks) || !slices.Equal(p.cnt, cnt) {
			t.Fatalf("trial %d: Add changed the counts", trial)
		}
	}
}

// TestPenalisedPointMassEqualsPlain: TestSeededPointMassEqualsPlain with a
// logit bias and penalties, applied as the scheduler does (bias, then
// penalties counting draft[:j] in row j, Verify, restore in reverse): the
// seeded text is plain penalised sampling's, and the rows come back intact.
func TestPenalisedPointMassEqualsPlain(t *testing.T) {
	const V = 30
	r := rand.New(rand.NewPCG(5, 6))
	rows := make([][]float32, 300)
	for i := range rows {
		rows[i] = make([]float32, V)
		for j := range rows[i] {
			rows[i][j] = float32(r.NormFloat64() * 2)
		}
	}
	orig := make([][]float32, len(rows))
	for i := range rows {
		orig[i] = slices.Clone(rows[i])
	}
	params := SamplingParams{Temperature: 0.9, TopP: 0.95, Seed: 7}
	bias := NewLogitBias(map[int32]float32{3: -100, 4: 1.5})
	plain, pen := NewSampler(params, V), NewPenalties(0.4, 0.7)
	var want []int32
	for _, row := range rows {
		row = slices.Clone(row)
		bias.Add(row)
		pen.Add(row, nil)
		tok := plain.Sample(row)
		pen.Accept([]int32{tok})
		want = append(want, tok)
	}
	if slices.Contains(want, 3) {
		t.Fatal("token 3 sampled despite -100")
	}
	for _, k := range []int{1, 3, 8} {
		s, pen := NewSampler(params, V), NewPenalties(0.4, 0.7)
		var got []int32
		for pos := 0; pos < len(rows)-k; {
			draft := make([]int32, k)
			for i := range draft {
				if pos+i < len(want) && r.IntN(3) != 0 {
					draft[i] = want[pos+i]
				} else {
					draft[i] = int32(r.IntN(V))
				}
			}
			rs := rows[pos : pos+k+1]
			bias.Apply(rs)
			pen.Apply(rs, draft)
			out, _ := s.Verify(draft, nil, rs, nil)
			pen.Restore(rs)
			bias.Restore(rs)
			pen.Accept(out)
			got = append(got, out...)
			pos += len(out)
		}
		for i := range got {
			if i < len(want) && got[i] != want[i] {
				t.Fatalf("k=%d: token %d = %d, plain penalised sampling gave %d", k, i, got[i], want[i])
			}
		}
		for i := range rows {
			if !slices.Equal(rows[i], orig[i]) {
				t.Fatalf("k=%d: row %d not restored", k, i)
			}
		}
	}
}
