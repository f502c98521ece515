package harness

import (
	"os"
	"path/filepath"
)

// RunInNetns is Main for a program rather than a test binary (the
// end-to-end benchmark, test/e2ebench): outside a namespace it checks the
// prerequisites, builds the mailnode binary, creates a fresh namespace
// (only loopback up, resolv.conf = 127.0.0.1), re-runs os.Args inside it
// with EnvNetns and EnvBin set, deletes the namespace and returns the exit
// code; the caller exits with it. Inside (EnvNetns set) it returns
// inside = true and the program does its work.
func RunInNetns() (inside bool, code int, err error) {
	if os.Getenv(EnvNetns) != "" {
		return true, 0, nil
	}
	if err := CheckPrerequisites(); err != nil {
		return false, 1, err
	}
	code, err = runInFreshNetns()
	return false, code, err
}

// DaemonPid is the process id of a sidecar the node started ("policyd",
// "milterd"), 0 when it is not running.
func (n *Node) DaemonPid(name string) int {
	return readPid(filepath.Join(n.Dir, "pids", name+".pid"))
}
