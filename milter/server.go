package milter

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/user"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	gomilter "github.com/d--j/go-milter"
	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/inventory"
)

// LoadKeys loads the private key of every DKIM selector of every local
// domain. It returns every problem at once, each naming its file, so that
// milterd refuses to start until all keys are in place.
//
// prev are the keys loaded before (a reload; nil at start): a key whose
// file still holds the same key pair is kept as it was loaded, and a domain
// whose keys all stay keeps its slice, so that a reload holds only the keys
// that changed twice, not all of them (RSA keys handed to OpenSSL are not
// handed again). Each key's names are its own copies: a kept key does not
// hold the inventory it was first loaded with.
func LoadKeys(inv *inventory.Inventory, prev map[string][]dkim.Key) (map[string][]dkim.Key, error) {
	keys := map[string][]dkim.Key{}
	var errs []error
	for _, d := range inv.LocalDomains() {
		was := prev[d.Name]
		kept := len(was) == len(d.DKIM)
		for i, s := range d.DKIM {
			path := dkim.KeyPath(inv.DKIM.KeyDir, d.Name, s.Selector)
			signer, err := dkim.LoadKey(path, s.Algorithm)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if old, ok := sameKey(was, s, signer); ok {
				kept = kept && i < len(was) && was[i].Selector == s.Selector
				keys[d.Name] = append(keys[d.Name], old)
				continue
			}
			kept = false
			k, err := dkim.NewKey(strings.Clone(d.Name), strings.Clone(s.Selector), strings.Clone(s.Algorithm), signer)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", path, err))
				continue
			}
			keys[d.Name] = append(keys[d.Name], k)
		}
		if kept && len(keys[d.Name]) == len(was) {
			keys[d.Name] = was
		}
	}
	return keys, errors.Join(errs...)
}

// sameKey finds, among a domain's keys loaded before, the one of selector
// s with the key pair signer holds (the same public key).
func sameKey(was []dkim.Key, s inventory.Selector, signer crypto.Signer) (dkim.Key, bool) {
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok {
		return dkim.Key{}, false
	}
	for _, k := range was {
		if k.Selector == s.Selector && k.Algorithm == s.Algorithm && pub.Equal(k.Signer.Public()) {
			return k, true
		}
	}
	return dkim.Key{}, false
}

// Server serves a Filter over the milter protocol. SetFilter swaps it
// (SIGHUP): connections opened afterwards use the new one, open ones finish
// with the filter they started with. The server holds no other: the filter
// it started with (its inventory and keys) is let go at the first swap.
type Server struct {
	Limits  GuardLimits
	Log     *slog.Logger
	srv     *gomilter.Server
	current atomic.Pointer[Filter] // the filter a new connection gets
}

// SetFilter makes f the filter of every connection accepted from now on.
func (s *Server) SetFilter(f *Filter) { s.current.Store(f) }

// NewServer returns a Server of f with the default guard limits.
func NewServer(f *Filter) *Server {
	s := &Server{Limits: DefaultGuardLimits, Log: f.log()}
	s.current.Store(f)
	return s
}

// Serve accepts MTA connections on ln until Close.
func (s *Server) Serve(ln net.Listener) error {
	return s.ServeMilter(ln, func() gomilter.Milter {
		_ = growSessionStack()
		return &backend{f: s.current.Load()}
	})
}

// ServeMilter is Serve with each connection served by a milter newMilter
// makes instead of the filter: milterd's negotiation and connection guard
// around another milter. It is for stand-ins measured against milterd
// (`mailnode-bench null-milter --sign`); s needs Limits and Log set.
func (s *Server) ServeMilter(ln net.Listener, newMilter func() gomilter.Milter) error {
	s.srv = gomilter.NewServer(ServerOptions(newMilter)...)
	return served(s.srv.Serve(newGuardListener(ln, s.Limits, s.Log)))
}

// ServerOptions are what milterd negotiates with the MTA: its actions, the
// protocol steps it skips or does not answer, and the macros it asks for,
// with newMilter serving each connection. They are exported so that a
// stand-in milter (`mailnode-bench null-milter`, the floor of the
// end-to-end benchmark) negotiates exactly what milterd does.
func ServerOptions(newMilter func() gomilter.Milter) []gomilter.Option {
	return []gomilter.Option{
		gomilter.WithMilter(newMilter),
		gomilter.WithActions(milterActions),
		gomilter.WithProtocols(milterProtocol),
		gomilter.WithMacroRequest(gomilter.StageMail, []gomilter.MacroName{gomilter.MacroAuthAuthen, gomilter.MacroQueueId}),
		gomilter.WithMacroRequest(gomilter.StageEOH, []gomilter.MacroName{gomilter.MacroQueueId}),
		gomilter.WithMacroRequest(gomilter.StageEOM, []gomilter.MacroName{gomilter.MacroQueueId}),
	}
}

// served is Serve's error, nil when the listener was closed on purpose.
func served(err error) error {
	if errors.Is(err, gomilter.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Close stops accepting and closes every connection.
func (s *Server) Close() error {
	if s.srv == nil {
		return nil
	}
	return s.srv.Close()
}

// Shutdown stops accepting and waits for connections to end.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.srv == nil {
		return nil
	}
	return s.srv.Shutdown(ctx)
}

// Listen opens the milter socket named like the inventory's milter.listen:
// "unix:/path" or "inet:host:port".
//
// A unix socket is created with mode 0660 (never briefly wider: the umask
// is tightened around its creation) and, when the system has a "postfix"
// group, group postfix: Postfix's smtpd and cleanup run as user postfix and
// can connect, other local users cannot. That matters: whoever can connect
// can ask for anything to be signed with the node's keys. A stale socket
// left by a previous run is replaced; any other file in the way is an error.
//
// TCP is accepted on loopback addresses only.
func Listen(spec string) (net.Listener, error) {
	network, addr, err := inventory.ParseListen(spec)
	if err != nil {
		return nil, fmt.Errorf("milter: listen: %w", err)
	}
	if network == "tcp" {
		host, _, _ := net.SplitHostPort(addr)
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("milter: listen %s: TCP only on a loopback address (127.0.0.1, ::1); use a unix socket otherwise", spec)
		}
		return net.Listen("tcp", addr)
	}
	if st, err := os.Lstat(addr); err == nil {
		if st.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("milter: listen %s: %s exists and is not a socket", spec, addr)
		}
		if c, err := net.Dial("unix", addr); err == nil {
			c.Close()
			return nil, fmt.Errorf("milter: listen %s: another milterd is serving %s", spec, addr)
		}
		os.Remove(addr)
	}
	old := syscall.Umask(0o117)
	ln, err := net.Listen("unix", addr)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("milter: %w", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(true)
	if g, err := user.LookupGroup("postfix"); err == nil {
		gid, _ := strconv.Atoi(g.Gid)
		if err := os.Chown(addr, -1, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("milter: %s: %w", addr, err)
		}
	}
	if err := os.Chmod(addr, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("milter: %s: %w", addr, err)
	}
	return ln, nil
}
