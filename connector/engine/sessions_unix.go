//go:build unix

package engine

import "syscall"

// OpenFileLimit is the process's limit of open files (the soft RLIMIT_NOFILE, which the Go
// runtime raised to the hard one at start); 0 when unknown or unlimited (RLIM_INFINITY is
// above any real limit too).
func OpenFileLimit() int {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil || l.Cur > 1<<30 {
		return 0
	}
	return int(l.Cur)
}
