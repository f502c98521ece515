package state

import (
	"os"

	"golang.org/x/sys/unix"
)

// readSmall makes reads through f bring the file into the page cache a
// page at a time (no read-ahead), so that the cache holds it in folios of
// one page; boltwarm.go says why that matters to the commits. The advice
// belongs to f's open file only: bbolt's own handle is not touched.
func readSmall(f *os.File) {
	unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_RANDOM)
}
