//go:build invariants || race

package paging

// invariantsOn makes every mutating method run CheckInvariants and panic on
// a violation. Enabled by the `invariants` build tag (make test) and by -race.
const invariantsOn = true
