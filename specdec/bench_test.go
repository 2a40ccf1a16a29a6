package specdec

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// benchLogits looks like an LM's output row: normal logits (sd 2.5) with a
// few clearly preferred tokens, so the nucleus is tens to hundreds of
// tokens rather than the whole vocabulary.
func benchLogits(V int, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 99))
	l := make([]float32, V)
	for i := range l {
		l[i] = float32(r.NormFloat64() * 2.5)
	}
	for i := 0; i < 8; i++ {
		l[r.IntN(V)] = 14 - float32(i)
	}
	return l
}

var benchVocabs = []int{512, 32000, 152064}

var benchParams = []struct {
	name string
	p    SamplingParams
}{
	{"greedy", SamplingParams{}},
	{"topk40-topp0.9", SamplingParams{Temperature: 0.8, TopK: 40, TopP: 0.9, Seed: 1}},
	{"topp0.9", SamplingParams{Temperature: 0.8, TopP: 0.9, Seed: 1}},
	{"minp0.05", SamplingParams{Temperature: 0.8, MinP: 0.05, Seed: 1}},
	{"temp-only", SamplingParams{Temperature: 0.8, Seed: 1}},
}

func BenchmarkSample(b *testing.B) {
	for _, V := range benchVocabs {
		logits := benchLogits(V, 1)
		for _, bp := range benchParams {
			b.Run(fmt.Sprintf("V=%d/%s", V, bp.name), func(b *testing.B) {
				s := NewSampler(bp.p, V)
				b.ReportAllocs()
				for b.Loop() {
					s.Sample(logits)
				}
			})
		}
	}
}

func BenchmarkDist(b *testing.B) {
	for _, V := range benchVocabs {
		logits := benchLogits(V, 1)
		for _, bp := range benchParams[1:3] {
			b.Run(fmt.Sprintf("V=%d/%s", V, bp.name), func(b *testing.B) {
				s := NewSampler(bp.p, V)
				dst := make([]float32, V)
				b.ReportAllocs()
				for b.Loop() {
					s.Dist(logits, dst)
				}
			})
		}
	}
}

// BenchmarkVerify: k=4 against 5 target rows; "q" is a draft-model
// proposer (its Dist rows), "point" an n-gram/prediction proposer.
func BenchmarkVerify(b *testing.B) {
	const k = 4
	for _, V := range benchVocabs {
		rows := make([][]float32, k+1)
		for i := range rows {
			rows[i] = benchLogits(V, uint64(i))
		}
		for _, bp := range benchParams[:3] {
			s := NewSampler(bp.p, V)
			q := make([][]float32, k)
			draft := make([]int32, k)
			for i := range q {
				q[i] = s.Dist(benchLogits(V, uint64(i+10)), nil)
				draft[i] = s.SampleDraft(q[i])
			}
			out := make([]int32, 0, k+1)
			for _, mode := range []string{"q", "point"} {
				qq := q
				if mode == "point" {
					qq = nil
				}
				b.Run(fmt.Sprintf("V=%d/%s/%s", V, bp.name, mode), func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						s.Verify(draft, qq, rows, out[:0])
					}
				})
			}
		}
	}
}

func BenchmarkNGramPropose(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	h := make([]int32, 32768)
	for i := range h {
		h[i] = int32(r.IntN(32000))
	}
	dst := make([]int32, 0, 8)
	b.ReportAllocs()
	for b.Loop() {
		NGram{}.Propose(h, 8, dst)
	}
}
