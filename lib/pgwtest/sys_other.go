//go:build !linux

package pgwtest

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }
