package inventory

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
)

// Host is what the inventory is checked against on the machine that will
// run it: the system users it names must exist there, with ids the
// programs accept. The daemons and tests load inventories without it;
// `config check` and `render-config` load with it (see LoadOptions).
type Host struct {
	// LookupUser returns a system user's uid; an error wrapping
	// ErrNoSuchUser when there is none.
	LookupUser func(name string) (uid int, err error)
	// ReadFile reads a file the inventory names for render-config (the
	// relayhost password); nil: os.ReadFile.
	ReadFile func(name string) ([]byte, error)
	// PostfixParameters returns the names Postfix knows (postconf -d), to
	// catch a misspelt postfix.main_cf name, which Postfix would ignore;
	// nil or an error: not checked.
	PostfixParameters func() (map[string]bool, error)
	// HasProgram reports whether a program is installed: a name looked up
	// in PATH, or an absolute path; nil: not checked.
	HasProgram func(name string) bool
	// ResolvConf reads the resolv.conf Postfix resolves with, checked
	// with postfix.outbound_tls: dane; nil: not checked.
	ResolvConf func() ([]byte, error)
}

// ErrNoSuchUser is what Host.LookupUser returns for a missing user.
var ErrNoSuchUser = errors.New("no such user")

// ThisHost checks against the machine's own user database.
func ThisHost() *Host {
	return &Host{PostfixParameters: postconfDefaults, HasProgram: hasProgram, ResolvConf: readResolvConf, LookupUser: func(name string) (int, error) {
		u, err := user.Lookup(name)
		if err != nil {
			var unknown user.UnknownUserError
			if errors.As(err, &unknown) {
				return 0, fmt.Errorf("%w: %s", ErrNoSuchUser, name)
			}
			return 0, err
		}
		return strconv.Atoi(u.Uid)
	}}
}

// dovecotFirstValidUID is first_valid_uid in the rendered dovecot.conf:
// Dovecot refuses to deliver as any uid below it.
const dovecotFirstValidUID = 100

// checkHost runs the checks that need the machine.
func (inv *Inventory) checkHost(v *validator, h *Host) {
	mu := inv.Dovecot.MailUser
	if unixUserRe.MatchString(mu) && !inv.NullClient() { // a null client runs no Dovecot
		uid, err := h.LookupUser(mu)
		switch {
		case errors.Is(err, ErrNoSuchUser):
			v.add([]any{"dovecot", "mail_user"}, "system user %q does not exist on this host: create it (useradd --system --home-dir /var/vmail --shell /usr/sbin/nologin %s) or name an existing one", mu, mu)
		case err != nil:
			v.add([]any{"dovecot", "mail_user"}, "cannot look up system user %q: %v", mu, err)
		case uid == 0:
			v.add([]any{"dovecot", "mail_user"}, "%q is root: Dovecot never delivers mail as root; use a dedicated system user such as vmail", mu)
		case uid < dovecotFirstValidUID:
			v.add([]any{"dovecot", "mail_user"}, "%q has uid %d, below Dovecot's first_valid_uid (%d): Dovecot would answer every delivery 451 4.3.0 and mail would wait in the queue for days; use a dedicated system user such as vmail (useradd --system gives a uid of 100 or more)", mu, uid, dovecotFirstValidUID)
		}
	}
	if a := inv.Postfix.RelayhostAuth; a != nil && strings.HasPrefix(a.PasswordFile, "/") {
		read := h.ReadFile
		if read == nil {
			read = os.ReadFile
		}
		path := []any{"postfix", "relayhost_auth", "password_file"}
		if b, err := read(a.PasswordFile); err != nil {
			v.add(path, "cannot read the relayhost password file: %v", err)
		} else if _, err := parseRelayhostPassword(a.PasswordFile, b); err != nil {
			v.add(path, "%v", err)
		}
	}
	if len(inv.Postfix.MainCF) > 0 && h.PostfixParameters != nil {
		if known, err := h.PostfixParameters(); err == nil {
			for _, k := range inv.Postfix.MainCFKeys() {
				if mainCFNameRe.MatchString(k) && ownedMainCF(k) == "" && !known[k] {
					v.add([]any{"postfix", "main_cf", k}, "%s is not a parameter this host's Postfix knows (postconf -d): misspelt, Postfix would ignore it", k)
				}
			}
		}
	}
	if inv.Dovecot.Sieve != nil && h.HasProgram != nil {
		// Pigeonhole: Sieve for LMTP and sievec (dovecot-sieve), ManageSieve
		// (dovecot-managesieved). Without them Dovecot refuses the
		// rendered configuration and delivers nothing.
		for _, p := range []struct{ program, pkg string }{{"sievec", "dovecot-sieve"}, {dovecotLibexec + "managesieve", "dovecot-managesieved"}} {
			if !h.HasProgram(p.program) {
				v.add([]any{"dovecot", "sieve"}, "needs Pigeonhole, which is not installed on this host (no %s): apt-get install %s", p.program, p.pkg)
			}
		}
	}
	inv.checkResolvConf(v, h.ResolvConf)
	inv.checkSecurityHost(v, h)
	for i, u := range inv.UnixUsers {
		if !unixUserRe.MatchString(u) {
			continue
		}
		if _, err := h.LookupUser(u); errors.Is(err, ErrNoSuchUser) {
			v.add([]any{"unix_users", i}, "system user %q does not exist on this host: local(8) would bounce its mail", u)
		} else if err != nil {
			v.add([]any{"unix_users", i}, "cannot look up system user %q: %v", u, err)
		}
	}
}

// dovecotLibexec is where Debian's Dovecot keeps its service programs.
const dovecotLibexec = "/usr/lib/dovecot/"

// hasProgram finds a program in PATH, or an absolute path that exists.
func hasProgram(name string) bool {
	if strings.HasPrefix(name, "/") {
		_, err := os.Stat(name)
		return err == nil
	}
	_, err := exec.LookPath(name)
	return err == nil
}

// postconfDefaults reads the parameter names of `postconf -d`; without
// postconf on the machine there is nothing to check against.
func postconfDefaults() (map[string]bool, error) {
	out, err := exec.Command("postconf", "-d").Output()
	if err != nil {
		return nil, err
	}
	known := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		if name, _, ok := strings.Cut(l, " = "); ok {
			known[name] = true
		} else if name, ok := strings.CutSuffix(l, " ="); ok {
			known[name] = true
		}
	}
	return known, nil
}
