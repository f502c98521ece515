package inventory

import (
	"bytes"
	"fmt"
	"os"
	"strings"
)

// The smarthost login (postfix.relayhost_auth) and the TLS level towards
// the smarthost (postfix.relayhost_tls).

// RelayhostTLSLevels are the values of postfix.relayhost_tls: Postfix's
// TLS policy levels that make sense for one known host.
var RelayhostTLSLevels = []string{"may", "encrypt", "verify", "secure"}

func (inv *Inventory) checkRelayhostAuth(v *validator) {
	p := &inv.Postfix
	if lv := p.RelayhostTLS; lv != "" {
		switch {
		case !contains(RelayhostTLSLevels, lv):
			v.add([]any{"postfix", "relayhost_tls"}, "%q is not one of: %s", lv, strings.Join(RelayhostTLSLevels, ", "))
		case p.Relayhost == "":
			v.add([]any{"postfix", "relayhost_tls"}, "there is no postfix.relayhost to apply it to")
		case lv == "may" && p.RelayhostAuth != nil:
			v.add([]any{"postfix", "relayhost_tls"}, "\"may\" would send the relayhost password in clear to a smarthost that offers no STARTTLS: use encrypt, verify or secure")
		}
	}
	a := p.RelayhostAuth
	if a == nil {
		return
	}
	if p.Relayhost == "" {
		v.add([]any{"postfix", "relayhost_auth"}, "there is no postfix.relayhost to log in to")
	}
	switch {
	case a.Username == "":
		v.add([]any{"postfix", "relayhost_auth", "username"}, "missing username")
	case strings.ContainsAny(a.Username, ": \t#,\"\\") || hasControl(a.Username):
		v.add([]any{"postfix", "relayhost_auth", "username"}, "%q: a login here must not hold spaces, ':', '#', ',', quotes, backslashes or control characters (it is written into Postfix's password map as user:password)", a.Username)
	}
	if a.PasswordFile == "" {
		v.add([]any{"postfix", "relayhost_auth", "password_file"}, "missing password_file: the file that holds the smarthost password (mode 0600, root)")
	} else if !strings.HasPrefix(a.PasswordFile, "/") {
		v.add([]any{"postfix", "relayhost_auth", "password_file"}, "%q must be an absolute path", a.PasswordFile)
	}
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] == 0x7f {
			return true
		}
	}
	return false
}

// ReadRelayhostPassword reads the smarthost password from path: the file's
// one line, without its line end. Errors name the file, never its content.
func ReadRelayhostPassword(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cannot read the relayhost password file: %w", err)
	}
	return parseRelayhostPassword(path, b)
}

func parseRelayhostPassword(path string, b []byte) (string, error) {
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	s := string(b)
	switch {
	case s == "":
		return "", fmt.Errorf("the relayhost password file %s is empty", path)
	case strings.ContainsAny(s, "\r\n"):
		return "", fmt.Errorf("the relayhost password file %s holds more than one line: write the password alone", path)
	case hasControl(s):
		return "", fmt.Errorf("the relayhost password file %s holds control characters", path)
	case strings.TrimSpace(s) != s:
		return "", fmt.Errorf("the relayhost password file %s: the password starts or ends with white space, which Postfix's map would drop", path)
	}
	return s, nil
}
