package harness

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// PutSieveScript uploads a user's Sieve script over ManageSieve (RFC 5804)
// to the node's ManageSieve service and makes it the active one: STARTTLS
// (trusting CertFile), AUTHENTICATE PLAIN, PUTSCRIPT, SETACTIVE. It
// returns the server's refusal when a step fails.
func (n *Node) PutSieveScript(user, pass, name, script string) error {
	if n.ManageSieve == "" {
		return fmt.Errorf("managesieve: the inventory has no dovecot.sieve")
	}
	c, err := net.DialTimeout("tcp", n.ManageSieve, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	// response reads lines up to the OK/NO/BYE that ends a response.
	response := func() (string, error) {
		var lines []string
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return strings.Join(lines, ""), fmt.Errorf("managesieve: %v after %q", err, lines)
			}
			lines = append(lines, l)
			switch {
			case strings.HasPrefix(l, "OK"):
				return strings.Join(lines, ""), nil
			case strings.HasPrefix(l, "NO"), strings.HasPrefix(l, "BYE"):
				return strings.Join(lines, ""), fmt.Errorf("managesieve: %s", strings.TrimSpace(l))
			}
		}
	}
	cmd := func(line string) (string, error) {
		if _, err := fmt.Fprintf(c, "%s\r\n", line); err != nil {
			return "", err
		}
		return response()
	}
	greeting, err := response()
	if err != nil {
		return err
	}
	if !strings.Contains(greeting, `"STARTTLS"`) {
		return fmt.Errorf("managesieve: no STARTTLS offered:\n%s", greeting)
	}
	if _, err := cmd("STARTTLS"); err != nil {
		return err
	}
	pem, err := os.ReadFile(n.CertFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tc := tls.Client(c, &tls.Config{RootCAs: pool, ServerName: n.Hostname})
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("managesieve: TLS: %w", err)
	}
	c, r = tc, bufio.NewReader(tc)
	if _, err := response(); err != nil { // capabilities again, after TLS
		return err
	}
	cred := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
	if _, err := cmd(`AUTHENTICATE "PLAIN" "` + cred + `"`); err != nil {
		return err
	}
	script = strings.ReplaceAll(strings.ReplaceAll(script, "\r\n", "\n"), "\n", "\r\n")
	if _, err := cmd(fmt.Sprintf("PUTSCRIPT %q {%d+}\r\n%s", name, len(script), script)); err != nil {
		return err
	}
	if _, err := cmd(fmt.Sprintf("SETACTIVE %q", name)); err != nil {
		return err
	}
	_, err = cmd("LOGOUT")
	return err
}
