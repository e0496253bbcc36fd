//go:build unix && !linux

package dovecottest

import "syscall"

// sysProcAttr puts dovecot in its own process group, so that Stop can signal the master
// and every child at once.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
