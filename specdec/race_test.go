//go:build race

package specdec

// raceEnabled: the race detector slows the statistical sweep ~10x; under
// it TestVerifyLossless checks draft lengths 1 and 8 only (the full 1..8
// sweep runs in every test run without -race).
const raceEnabled = true
