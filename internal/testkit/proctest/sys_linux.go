package proctest

import "syscall"

// sysProcAttr has the kernel kill the server if the test binary dies without running its
// cleanups (e.g. killed by go test's timeout), so no server outlives its test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
