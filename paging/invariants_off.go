//go:build !invariants && !race

package paging

const invariantsOn = false
