package specdec

import (
	"math"
	"testing"
)

func TestLogitBias(t *testing.T) {
	if NewLogitBias(nil) != nil {
		t.Fatal("empty bias is not nil")
	}
	var none *LogitBias
	row := []float32{1, 2, 3}
	none.Add(row)
	none.Apply([][]float32{row})
	none.Restore([][]float32{row})
	if row[0] != 1 || row[1] != 2 || row[2] != 3 {
		t.Fatalf("nil bias changed %v", row)
	}

	b := NewLogitBias(map[int32]float32{2: -100, 0: 0.1, 7: 5}) // 7 is past the rows
	r0 := []float32{0.3, 1, 2}
	r1 := []float32{float32(math.Inf(-1)), 0.7, 1e-8}
	rows := [][]float32{r0, r1}
	b.Apply(rows)
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
	b.Add(d)
	if d[0] != 0.1 || d[1] != 0 || d[2] != -100 {
		t.Fatalf("add: %v", d)
	}
	if a := testing.AllocsPerRun(10, func() { b.Apply(rows); b.Restore(rows) }); a != 0 {
		t.Fatalf("%v allocations per apply+restore", a)
	}
}
