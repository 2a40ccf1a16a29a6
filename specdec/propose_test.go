package specdec

import (
	"fmt"
	"testing"
)

func TestNGramPropose(t *testing.T) {
	for _, c := range []struct {
		name    string
		g       NGram
		history []int32
		k       int
		want    []int32
	}{
		{"no recurrence", NGram{}, []int32{1, 2, 3, 4}, 3, []int32{}},
		{"unigram match", NGram{}, []int32{5, 6, 7, 5}, 2, []int32{6, 7}},
		{"longest wins over more recent", NGram{}, []int32{1, 2, 3, 9, 9, 3, 7, 7, 1, 2, 3}, 2, []int32{9, 9}},
		{"most recent among equal length", NGram{}, []int32{1, 2, 8, 1, 2, 9, 1, 2}, 1, []int32{9}},
		{"min n rejects short matches", NGram{MinN: 2, MaxN: 3}, []int32{5, 6, 7, 1, 5}, 2, []int32{}},
		{"max n caps the match", NGram{MinN: 1, MaxN: 2}, []int32{1, 2, 3, 4, 0, 2, 3, 5, 1, 2, 3}, 1, []int32{5}},
		{"continuation truncated by k", NGram{}, []int32{1, 2, 3, 4, 5, 6, 1, 2}, 3, []int32{3, 4, 5}},
		{"repeating pattern extends itself", NGram{}, []int32{4, 5, 4, 5}, 5, []int32{4, 5, 4, 5, 4}},
		{"single token repeat", NGram{}, []int32{7, 7}, 3, []int32{7, 7, 7}},
		{"k zero", NGram{}, []int32{5, 6, 5}, 0, []int32{}},
		{"too short", NGram{MinN: 2}, []int32{5, 5}, 2, []int32{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := c.g.Propose(c.history, c.k, make([]int32, 0, 8))
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Fatalf("Propose(%v, %d) = %v, want %v", c.history, c.k, got, c.want)
			}
		})
	}
	if (NGram{MinN: 3, MaxN: 2}).Validate() == nil || (NGram{}).Validate() != nil {
		t.Fatal("NGram.Validate")
	}
}

func TestPredictionPropose(t *testing.T) {
	pred := []int32{10, 11, 12, 13, 14, 15, 16, 17, 18, 19}
	type step struct {
		emit []int32 // tokens appended to the output before Propose
		k    int
		want []int32
	}
	for _, c := range []struct {
		name   string
		window int
		steps  []step
	}{
		{"follows the prediction", 0, []step{
			{nil, 3, []int32{10, 11, 12}},
			{[]int32{10, 11, 12, 13}, 2, []int32{14, 15}},
			{[]int32{14, 15, 16, 17, 18, 19}, 4, []int32{}}, // exhausted
		}},
		{"substitution resyncs on one token near the departure", 0, []step{
			{[]int32{10, 11}, 3, []int32{12, 13, 14}},
			{[]int32{99}, 3, []int32{}},           // 99 replaced 12: nowhere in the prediction
			{[]int32{13}, 3, []int32{14, 15, 16}}, // 13 is just after the departure
			{[]int32{14, 15}, 2, []int32{16, 17}}, // aligned again
		}},
		{"deletion: output skips ahead", 0, []step{
			{[]int32{10, 11}, 2, []int32{12, 13}},
			{[]int32{15, 16}, 2, []int32{17, 18}}, // 12..14 deleted
		}},
		{"insertion: extra tokens then the prediction resumes", 0, []step{
			{[]int32{10, 11}, 2, []int32{12, 13}},
			{[]int32{50, 51}, 2, []int32{}},
			{[]int32{12}, 3, []int32{13, 14, 15}},
		}},
		{"far match needs MinMatch tokens", 3, []step{
			{[]int32{10, 11}, 1, []int32{12}},
			{[]int32{77, 18}, 2, []int32{}}, // 18 alone is outside the window 12..14
			{[]int32{19}, 2, []int32{}},     // matches (18,19) but nothing follows
		}},
		{"far match with two tokens", 3, []step{
			{[]int32{10}, 1, []int32{11}},
			{[]int32{77, 16, 17}, 2, []int32{18, 19}},
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := NewPrediction(pred)
			if c.window > 0 {
				p.Window = c.window
			}
			var out []int32
			for i, s := range c.steps {
				out = append(out, s.emit...)
				got := p.Propose(out, s.k, nil)
				if fmt.Sprint(got) != fmt.Sprint(s.want) {
					t.Fatalf("step %d: output %v: Propose = %v, want %v", i, out, got, s.want)
				}
			}
		})
	}
}
