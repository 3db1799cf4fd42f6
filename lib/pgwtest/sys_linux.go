package pgwtest

import "syscall"

// sysProcAttr has the kernel kill the gateway if the test binary dies without
// running its cleanups (e.g. killed by go test's timeout), so no gateway outlives
// its test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
