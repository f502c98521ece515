//go:build !linux

package state

import (
	"errors"
	"time"
)

// startLowThread: commits run at the process's priority where threads'
// priorities and run-queue waits are not at hand.
func startLowThread(nice int) (lowThread, error) {
	return nil, errors.New("no per-thread priority on this system")
}

// spinCPU keeps the caller busy for about d (tests).
func spinCPU(d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end); {
	}
}
