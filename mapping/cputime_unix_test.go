//go:build unix

package mapping_test

import (
	"syscall"
	"time"
)

// processCPU is the CPU time the process has used so far (user and system, every thread:
// the garbage collector's work too). On a machine shared with other work a benchmark's
// wall time per operation says little; its CPU time per operation is steadier.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
