package dovecottest

import "syscall"

// sysProcAttr puts dovecot in its own process group, so that Stop can signal the master
// and every child at once, and asks the kernel to stop the master if the test binary
// dies without running its cleanups (its children exit when the master is gone).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
