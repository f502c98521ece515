// Package sdnotify tells systemd a service's state (sd_notify(3)): one
// datagram of newline-separated VAR=value lines to the unix socket named
// by $NOTIFY_SOCKET. It is what a Type=notify unit waits for: READY=1
// once the daemon listens, RELOADING=1 and READY=1 around a reload,
// STOPPING=1 when it drains. Without $NOTIFY_SOCKET (started by hand,
// by Ansible's direct mode, by the tests) every call does nothing.
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// The states a daemon reports.
const (
	Ready     = "READY=1"
	Reloading = "RELOADING=1"
	Stopping  = "STOPPING=1"
)

// Notify sends state to $NOTIFY_SOCKET. It returns false, nil when the
// variable is unset (nobody is listening) and an error only when the
// socket is named but the datagram cannot be sent.
func Notify(state string) (bool, error) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return false, nil
	}
	// A leading '@' names a socket in the abstract namespace; Go's
	// net package reads the name that way too.
	if addr[0] != '@' && !strings.HasPrefix(addr, "/") {
		return false, fmt.Errorf("sdnotify: NOTIFY_SOCKET %q: neither a path nor an abstract name", addr)
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return false, fmt.Errorf("sdnotify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("sdnotify: %w", err)
	}
	return true, nil
}
