package scheduler

import (
	"context"
	"slices"
	"testing"
	"time"
)

func TestCalibrationSizes(t *testing.T) {
	for _, c := range []struct {
		top  int
		want []int
	}{
		{0, nil},
		{1, []int{1}},
		{5, []int{1, 2, 3, 4, 5}},
		{144, []int{1, 2, 3, 4, 5, 6, 7, 8, 10, 13, 17, 22, 28, 32, 48, 72, 108, 144}},
		{16, []int{1, 2, 3, 4, 5, 6, 7, 8, 10, 13, 16}},
		{36, []int{1, 2, 3, 4, 5, 6, 7, 8, 10, 13, 17, 22, 28, 32, 36}},
	} {
		if got := calibrationSizes(c.top); !slices.Equal(got, c.want) {
			t.Errorf("calibrationSizes(%d) = %v, want %v", c.top, got, c.want)
		}
	}
}

// Calibrate measures every size on both models, twice, leaves no KV behind,
// and the cost model reads its measurements back: with a per-row cost,
// larger verifies cost more, including sizes never seen while serving.
// A calibrated scheduler then serves as an uncalibrated one does.
func TestCalibrate(t *testing.T) {
	cfg := Config{CtxSize: 2048, MaxRunning: 4, KMax: 3}
	target := newFake(fakeVocabN, cfg.CtxSize+64, 0)
	draft := newFake(fakeVocabN, cfg.CtxSize+64, 77)
	target.rowDelay, draft.rowDelay = 2*time.Millisecond, 50*time.Microsecond
	s, err := New(cfg, target, draft, fakeVocab{fakeVocabN}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c := s.Calibrate(0); len(c.VerifySizes) != 0 || target.decodes != 0 {
		t.Fatalf("budget 0 measured %v (%d decodes)", c.VerifySizes, target.decodes)
	}
	c := s.Calibrate(time.Minute)
	wantV, wantD := calibrationSizes(16), calibrationSizes(4)
	if !slices.Equal(c.VerifySizes, wantV) || !slices.Equal(c.DraftSizes, wantD) {
		t.Fatalf("measured target %v draft %v, want %v and %v", c.VerifySizes, c.DraftSizes, wantV, wantD)
	}
	if target.decodes != 2*len(wantV) || draft.decodes != 2*len(wantD) || target.most != 16 || draft.most != 4 {
		t.Fatalf("decodes: target %d (most %d rows), draft %d (most %d rows)", target.decodes, target.most, draft.decodes, draft.most)
	}
	if len(target.cells) != 0 || len(draft.cells) != 0 {
		t.Fatalf("calibration left %d target and %d draft cells", len(target.cells), len(draft.cells))
	}
	for i, n := range c.VerifySizes {
		if min := time.Duration(n) * target.rowDelay; c.Verify[i] < min {
			t.Errorf("verify of %d rows read %v, below its %v sleep", n, c.Verify[i], min)
		}
	}
	if v1, v16 := s.costs.VerifyCost(1), s.costs.VerifyCost(16); !(v16 > 4*v1) || v1 < 2e-3 {
		t.Errorf("cost model after calibration: verify(1) %.2g s, verify(16) %.2g s; want ~16x", v1, v16)
	}
	if d4, v4 := s.costs.DraftCost(4), s.costs.VerifyCost(4); !(d4 < v4/2) {
		t.Errorf("draft(4) %.2g s not below verify(4) %.2g s", d4, v4)
	}

	// Serving after calibration: same output as alone, no KV left.
	target.rowDelay, draft.rowDelay = 0, 0
	s.checkKV = true
	ctx, cancel := context.WithCancel(context.Background())
	go s.Run(ctx)
	defer func() { cancel(); <-s.Done() }()
	reqs := mkJobs(6, 3, 0)
	want := runAlone(t, cfg, reqs)
	if got := runAll(t, s, reqs); !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("calibrated scheduler's output differs:\n%v\nwant\n%v", got, want)
	}
	waitIdle(t, s)
	if err := s.kvMismatch(); err != nil {
		t.Fatal(err)
	}
}

// A decode that fails ends the calibration with the sizes measured before
// it, and no KV is left.
func TestCalibrateStopsOnFailure(t *testing.T) {
	cfg := Config{CtxSize: 2048, MaxRunning: 4, KMax: 3}
	target := newFake(fakeVocabN, cfg.CtxSize+64, 0)
	target.failAt = 4
	s, err := New(cfg, target, nil, fakeVocab{fakeVocabN}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := s.Calibrate(time.Minute)
	if !slices.Equal(c.VerifySizes, []int{1, 2, 3}) || len(target.cells) != 0 {
		t.Fatalf("measured %v, %d cells left", c.VerifySizes, len(target.cells))
	}
	fixed := cfg
	fixed.SpecK = 2
	s, err = New(fixed, newFake(fakeVocabN, cfg.CtxSize+64, 0), nil, fakeVocab{fakeVocabN}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c := s.Calibrate(time.Minute); len(c.VerifySizes) != 0 {
		t.Fatalf("fixed k measured %v", c.VerifySizes)
	}
}
