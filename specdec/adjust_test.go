package specdec

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestAdjustPenaltiesMatchReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const nv = 40
	for trial := range 200 {
		pres, freq := float32(rng.IntN(5))*0.5-1, float32(rng.IntN(5))*0.5-1
		if pres == 0 && freq == 0 {
			pres = 0.5
		}
		p := NewAdjust(nil, pres, freq)
		gen := make([]int32, rng.IntN(30))
		for i := range gen {
			gen[i] = int32(rng.IntN(nv))
		}
		p.Accept(gen)
		draft := randomTokens(rng, rng.IntN(6), nv)
		rows, orig := randomRows(rng, len(draft)+1, nv, 1)
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
// logit bias and penalties, applied as the scheduler does (row j counting
// draft[:j], Verify, Restore): the seeded text is plain adjusted sampling's,
// and the rows come back intact.
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
	bias := map[int32]float32{3: -100, 4: 1.5}
	plain, adj := NewSampler(params, V), NewAdjust(bias, 0.4, 0.7)
	var want []int32
	for _, row := range rows {
		row = slices.Clone(row)
		adj.Add(row, nil)
		tok := plain.Sample(row)
		adj.Accept([]int32{tok})
		want = append(want, tok)
	}
	if slices.Contains(want, 3) {
		t.Fatal("token 3 sampled despite -100")
	}
	for _, k := range []int{1, 3, 8} {
		s, adj := NewSampler(params, V), NewAdjust(bias, 0.4, 0.7)
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
			adj.Apply(rs, draft)
			out, _ := s.Verify(draft, nil, rs, nil)
			adj.Restore(rs)
			adj.Accept(out)
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

func TestAdjustBias(t *testing.T) {
	if NewAdjust(nil, 0, 0) != nil || NewAdjust(map[int32]float32{}, 0, 0) != nil {
		t.Fatal("no adjustment is not nil")
	}
	var none *Adjust
	row := []float32{1, 2, 3}
	none.Add(row, nil)
	none.Apply([][]float32{row}, nil)
	none.Restore([][]float32{row})
	none.Accept([]int32{1})
	if row[0] != 1 || row[1] != 2 || row[2] != 3 {
		t.Fatalf("nil bias changed %v", row)
	}

	b := NewAdjust(map[int32]float32{2: -100, 0: 0.1, 7: 5}, 0, 0) // 7 is past the rows
	r0 := []float32{0.3, 1, 2}
	r1 := []float32{float32(math.Inf(-1)), 0.7, 1e-8}
	rows := [][]float32{r0, r1}
	b.Apply(rows, nil)
	if r0[0] != 0.3+0.1 || r0[2] != 2-100 || r1[2] != 1e-8-100 || r0[1] != 1 || r1[1] != 0.7 || !math.IsInf(float64(r1[0]), -1) {
		t.Fatalf("applied: %v %v", r0, r1)
	}
	if Argmax(r0) != 1 {
		t.Fatalf("argmax after -100 on token 2: %d", Argmax(r0))
	}
	b.Restore(rows)
	// Exact values back (1e-8 - 100 + 100 would not be 1e-8).
	if r0[0] != 0.3 || r0[2] != 2 || r1[2] != 1e-8 || r1[1] != 0.7 {
		t.Fatalf("restored: %v %v", r0, r1)
	}
	d := []float32{0, 0, 0}
	b.Add(d, nil)
	if d[0] != 0.1 || d[1] != 0 || d[2] != -100 {
		t.Fatalf("add: %v", d)
	}
	if a := testing.AllocsPerRun(10, func() { b.Apply(rows, nil); b.Restore(rows) }); a != 0 {
		t.Fatalf("%v allocations per apply+restore", a)
	}
}

// repeatRef is llama.cpp's repeat penalty, bias first, then the presence
// and frequency penalties over gen, on a copy of row: the reference.
func repeatRef(row []float32, bias map[int32]float32, hist []int32, lastN int, pen float32, gen []int32, pres, freq float32) []float32 {
	r := slices.Clone(row)
	for t, b := range bias {
		r[t] += b
	}
	in := map[int32]bool{}
	for _, t := range hist[max(0, len(hist)-lastN):] {
		in[t] = true
	}
	for t := range in {
		if r[t] <= 0 {
			r[t] *= pen
		} else {
			r[t] /= pen
		}
	}
	cnt := map[int32]int{}
	for _, t := range gen {
		cnt[t]++
	}
	for t, c := range cnt {
		r[t] -= pres + float32(c)*freq
	}
	return r
}

// TestAdjustRepeatMatchesReference: over a long generation (past the
// history's compaction), every verify row and every draft row gets exactly
// the reference's values for the window it continues, and Restore puts the
// rows back.
func TestAdjustRepeatMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	const nv = 24
	for _, lastN := range []int{1, 5, 64} {
		prompt := randomTokens(rng, 1+rng.IntN(3*lastN), nv)
		bias := map[int32]float32{3: 1.5, 4: -2}
		a := NewAdjust(bias, 0.3, 0.2).WithRepeat(1.3, lastN, prompt)
		hist, gen := slices.Clone(prompt), []int32(nil)
		for step := range 200 {
			draft := randomTokens(rng, rng.IntN(5), nv)
			rows, orig := randomRows(rng, len(draft)+1, nv, 2)
			a.Apply(rows, draft)
			for j := range rows {
				want := repeatRef(orig[j], bias, append(slices.Clone(hist), draft[:j]...), lastN, 1.3, append(slices.Clone(gen), draft[:j]...), 0.3, 0.2)
				if !slices.Equal(rows[j], want) {
					t.Fatalf("lastN %d step %d row %d:\n got %v\nwant %v", lastN, step, j, rows[j], want)
				}
			}
			a.Restore(rows)
			for j := range rows {
				if !slices.Equal(rows[j], orig[j]) {
					t.Fatalf("lastN %d step %d: row %d not restored", lastN, step, j)
				}
			}
			d := slices.Clone(orig[0])
			a.Add(d, draft)
			if want := repeatRef(orig[0], bias, append(slices.Clone(hist), draft...), lastN, 1.3, append(slices.Clone(gen), draft...), 0.3, 0.2); !slices.Equal(d, want) {
				t.Fatalf("lastN %d step %d: draft row %v, want %v", lastN, step, d, want)
			}
			acc := draft[:rng.IntN(len(draft)+1)]
			acc = append(slices.Clone(acc), int32(rng.IntN(nv)))
			a.Accept(acc)
			hist, gen = append(hist, acc...), append(gen, acc...)
		}
	}
	if NewAdjust(nil, 0, 0).WithRepeat(1, 64, []int32{1}) != nil || NewAdjust(nil, 0, 0).WithRepeat(1.2, 0, []int32{1}) != nil {
		t.Error("a neutral repeat penalty made an Adjust")
	}
}

// randomTokens is n tokens below nv.
func randomTokens(rng *rand.Rand, n, nv int) []int32 {
	toks := make([]int32, n)
	for i := range toks {
		toks[i] = int32(rng.IntN(nv))
	}
	return toks
}

// randomRows is n rows of nv normal logits times scale, and a copy.
func randomRows(rng *rand.Rand, n, nv int, scale float64) (rows, orig [][]float32) {
	rows, orig = make([][]float32, n), make([][]float32, n)
	for j := range rows {
		rows[j] = make([]float32, nv)
		for i := range rows[j] {
			rows[j][i] = float32(rng.NormFloat64() * scale)
		}
		orig[j] = slices.Clone(rows[j])
	}
	return rows, orig
}

func TestAdjustMinTokens(t *testing.T) {

	ban := []int32{2, 5, 2} // duplicates are fine
	inf := float32(math.Inf(-1))
	for gen := 0; gen < 6; gen++ {
		a := (*Adjust)(nil).WithMinTokens(4, ban)
		a.Accept(make([]int32, gen))
		draft := []int32{1, 3, 4, 0}
		rows := make([][]float32, 5)
		for j := range rows {
			rows[j] = []float32{0.5, 1, 2, 3, 4, 5}
		}
		a.Apply(rows, draft)
		for j, row := range rows {
			banned := gen+j < 4
			if (row[2] == inf) != banned || (row[5] == inf) != banned || row[0] != 0.5 || row[3] != 3 {
				t.Errorf("gen %d, row %d: %v (banned: %v)", gen, j, row, banned)
			}
		}
		a.Restore(rows)
		for j, row := range rows {
			if !slices.Equal(row, []float32{0.5, 1, 2, 3, 4, 5}) {
				t.Errorf("gen %d, row %d after Restore: %v", gen, j, row)
			}
		}
		// The draft model's row after d draft tokens.
		for d := 0; d <= len(draft); d++ {
			row := []float32{0.5, 1, 2, 3, 4, 5}
			a.Add(row, draft[:d])
			if (row[5] == inf) != (gen+d < 4) {
				t.Errorf("gen %d, draft row after %d: %v", gen, d, row)
			}
		}
	}
	if a := (*Adjust)(nil).WithMinTokens(0, ban); a != nil {
		t.Error("min_tokens 0 made an Adjust")
	}
	if a := NewAdjust(nil, 0, 0).WithMinTokens(3, nil); a != nil {
		t.Error("an empty ban list made an Adjust")
	}
}
