//go:build !race

package specdec

const raceEnabled = false
