//go:build !linux

package state

import "os"

// readSmall: read-ahead is left as the system does it.
func readSmall(f *os.File) {}
