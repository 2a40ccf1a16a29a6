package scheduler

import (
	"context"
	"testing"

	"specd/engine"
	"specd/internal/testenv"
)

// meanK runs long greedy requests with adaptive k and returns the mean
// draft length over the steps that speculated, the share of verify steps
// that speculated at all, and the acceptance rate.
func meanK(t *testing.T, target, draft *engine.Model) (k, specShare, alpha float64, draftRows, promptRows int) {
	t.Helper()
	e, stop := startEngine(t, Config{CtxSize: 2048, MaxRunning: 2, MaxBatchTokens: 512, Proposer: "draft"}, target, draft)
	defer stop()
	reqs := realRequests(t, target.Vocab(), 2)
	for i := range reqs {
		reqs[i].MaxTokens, reqs[i].IgnoreEOS = 300, true
	}
	runAll(t, e.Scheduler, reqs)
	st := waitIdle(t, e.Scheduler)
	for _, r := range reqs {
		promptRows += len(r.Prompt)
	}
	draftRows = int(st.DraftDecoded)
	specSteps := float64(st.ProposedByPosition[0])
	if specSteps > 0 {
		k = float64(st.DraftProposed) / specSteps
		alpha = float64(st.DraftAccepted) / float64(st.DraftProposed)
	}
	t.Logf("%d steps (%d tries): target decode %.2f ms, draft decodes %.2f ms per step; the draft decoded %d tokens (prompts %d)", st.Steps, st.DraftTries,
		st.DecodeTime.Seconds()*1e3/float64(st.Steps), st.DraftDecodeTime.Seconds()*1e3/float64(st.Steps), draftRows, promptRows)
	// Each decode step of the two sequences is one verify each.
	return k, specSteps / float64(2*st.Steps), alpha, draftRows, promptRows
}

func TestRealAdaptiveK(t *testing.T) {
	lib, st, _ := realModels(t)
	load := func(path string) *engine.Model {
		m, err := lib.LoadModel(context.Background(), engine.ModelParams{Path: path})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(m.Close)
		return m
	}
	// Targets about 15x costlier per token than the stories260K draft, one
	// agreeing with it often, one rarely: the choice must not hang on noise.
	hv, lo := load(testenv.CostlyModel(t)), load(testenv.CostlyLowModel(t))
	kHi, shareHi, aHi, _, _ := meanK(t, hv, st)
	kLo, shareLo, aLo, _, _ := meanK(t, lo, st)
	kSame, shareSame, _, sameRows, samePrompt := meanK(t, hv, hv)
	t.Logf("high agreement: alpha %.2f mean k %.2f speculating %.0f%%", aHi, kHi, 100*shareHi)
	t.Logf("low agreement:  alpha %.2f mean k %.2f speculating %.0f%%", aLo, kLo, 100*shareLo)
	t.Logf("draft = target: mean k %.2f speculating %.0f%%", kSame, 100*shareSame)
	if !(aHi > aLo) {
		t.Fatalf("the test pairs do not differ in acceptance: %.2f vs %.2f", aHi, aLo)
	}
	if !(kHi*shareHi > kLo*shareLo) {
		t.Fatalf("adaptive k: high-acceptance pair drafts %.2f per step, low-acceptance %.2f", kHi*shareHi, kLo*shareLo)
	}
	if shareSame > 0.2 {
		t.Fatalf("a draft as costly as the target still speculated in %.0f%% of steps", 100*shareSame)
	}
	// Nor does it keep that draft's KV in step with the 600 generated
	// tokens: past the prompts, at most the few steps before the costs
	// were measured.
	if sameRows > samePrompt+64 {
		t.Fatalf("a draft that cannot pay decoded %d tokens for %d prompt tokens", sameRows, samePrompt)
	}
}
