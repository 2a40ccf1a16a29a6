package specdec

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// benchLogits looks like an LM's output row: normal logits (sd 2) with a
// few clearly preferred tokens 18..11 above the bulk, so the top-p 0.9
// nucleus is a handful of tokens and the tail holds ~1% of the mass.
func benchLogits(V int, seed uint64) []float32 { return synthLogits(V, seed, 2, 18) }

// flatTailLogits is the hard case for top-p without top-k: the tail (sd
// 2.5, top tokens only 14..7) holds most of the mass, so the nucleus is
// tens of thousands of tokens at 152k.
func flatTailLogits(V int, seed uint64) []float32 { return synthLogits(V, seed, 2.5, 14) }

func synthLogits(V int, seed uint64, sd float64, top float32) []float32 {
	r := rand.New(rand.NewPCG(seed, 99))
	l := make([]float32, V)
	for i := range l {
		l[i] = float32(r.NormFloat64() * sd)
	}
	for i := 0; i < 8; i++ {
		l[r.IntN(V)] = top - float32(i)
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
				defer reportCPU(b, processCPU())
				for b.Loop() {
					s.Sample(logits)
				}
			})
		}
	}
}

func BenchmarkSampleFlatTail(b *testing.B) {
	for _, V := range benchVocabs {
		logits := flatTailLogits(V, 1)
		for _, bp := range benchParams[1:3] {
			b.Run(fmt.Sprintf("V=%d/%s", V, bp.name), func(b *testing.B) {
				s := NewSampler(bp.p, V)
				b.ReportAllocs()
				defer reportCPU(b, processCPU())
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
				defer reportCPU(b, processCPU())
				for b.Loop() {
					s.Dist(logits, dst)
				}
			})
		}
	}
}

// BenchmarkVerify: k=4 against 5 target rows, all draft tokens accepted
// (the target strongly prefers them), so all five rows are transformed:
// the most work a k=4 verify does. "q" is a draft-model proposer (its Dist
// rows), "point" an n-gram/prediction proposer.
func BenchmarkVerify(b *testing.B) {
	const k = 4
	for _, V := range benchVocabs {
		for _, bp := range benchParams[:3] {
			rows := make([][]float32, k+1)
			for i := range rows {
				rows[i] = benchLogits(V, uint64(i))
			}
			s := NewSampler(bp.p, V)
			q := make([][]float32, k)
			draft := make([]int32, k)
			for i := range q {
				q[i] = s.Dist(benchLogits(V, uint64(i+10)), nil)
				draft[i] = s.SampleDraft(q[i])
				rows[i][draft[i]] = 40
			}
			out := make([]int32, 0, k+1)
			for _, mode := range []string{"q", "point"} {
				qq := q
				if mode == "point" {
					qq = nil
				}
				b.Run(fmt.Sprintf("V=%d/%s/%s", V, bp.name, mode), func(b *testing.B) {
					b.ReportAllocs()
					defer reportCPU(b, processCPU())
					for b.Loop() {
						if _, acc := s.Verify(draft, qq, rows, out[:0]); acc != k {
							b.Fatalf("accepted %d of %d", acc, k)
						}
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
	defer reportCPU(b, processCPU())
	for b.Loop() {
		NGram{}.Propose(h, 8, dst)
	}
}

// BenchmarkBaselineSum is a yardstick for the machine: a plain float32 sum
// over a 152k row (one add per element, latency-bound), to read the other
// figures against when the machine is shared.
func BenchmarkBaselineSum(b *testing.B) {
	l := benchLogits(152064, 1)
	var sink float32
	defer reportCPU(b, processCPU())
	for b.Loop() {
		var z float32
		for _, v := range l {
			z += v
		}
		sink += z
	}
	_ = sink
}

// BenchmarkChoose is the batch-wide k choice of one step (planK's share of
// the Go-side step time), at B sequences that all may draft with the model
// and accept at spread rates, with decodes priced as one ubatch or per
// ubatch (KV streams).
func BenchmarkChoose(b *testing.B) {
	cost := fakeCosts{10e-3, 0.05e-3, 0.5e-3}
	for _, streams := range []bool{false, true} {
		for _, n := range []int{4, 32, 128} {
			b.Run(fmt.Sprintf("streams=%v/B=%d", streams, n), func(b *testing.B) {
				seqs := make([]BatchSeq, n)
				for i := range seqs {
					seqs[i] = BatchSeq{Alpha: float64(i%10) / 10, Limit: 8, Model: true, Slot: i}
				}
				var ch BatchChooser
				var costs Costs = cost
				cfg := KConfig{Streams: streams, UBatch: 512}
				for b.Loop() {
					ch.Choose(cfg, seqs, costs)
				}
			})
		}
	}
}
