//go:build linux

package specdec

import (
	"syscall"
	"testing"
	"time"
)

// processCPU is the process's user+system CPU time. Benchmarks report it
// per op as cpu-ns/op next to wall ns/op: on a shared machine the wall time
// includes waiting for a core, the CPU time much less so.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportCPU(b *testing.B, start time.Duration) {
	if b.N > 0 && start > 0 {
		b.ReportMetric(float64(processCPU()-start)/float64(b.N), "cpu-ns/op")
	}
}
