package policy

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/mailnode/mailnode/inventory"
)

// SocketMode is the mode of policyd's unix socket. Postfix's smtpd runs as
// the unprivileged user postfix and must be able to connect; the socket lives
// in Postfix's private/ directory (owned by postfix, mode 0700), which is
// what keeps other users out, exactly as for Postfix's own sockets there.
const SocketMode fs.FileMode = 0o666

// Listen opens "unix:/path" or "inet:host:port". A unix socket left behind by
// a dead policyd is removed first; one that still answers is an error (another
// policyd is running).
func Listen(spec string) (net.Listener, error) {
	network, addr, err := inventory.ParseListen(spec)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if network == "unix" {
		if fi, err := os.Lstat(addr); err == nil {
			if fi.Mode()&fs.ModeSocket == 0 {
				return nil, fmt.Errorf("policy: %s exists and is not a socket", addr)
			}
			if c, err := net.DialTimeout("unix", addr, time.Second); err == nil {
				c.Close()
				return nil, fmt.Errorf("policy: %s: another process is listening there", addr)
			}
			if err := os.Remove(addr); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("policy: removing stale socket: %w", err)
			}
		}
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if network == "unix" {
		if err := os.Chmod(addr, SocketMode); err != nil {
			ln.Close()
			return nil, fmt.Errorf("policy: %w", err)
		}
	}
	return ln, nil
}

// RaiseNoFile lifts this process's soft open-file limit to its hard one and
// returns the limit: every smtpd process holds a policy connection, and the
// load tools and tests open thousands.
func RaiseNoFile() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return 0, err
		}
	}
	return l.Cur, nil
}
