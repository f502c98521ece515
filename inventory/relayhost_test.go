package inventory

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRelayhostPasswordFile: config check reads the smarthost password
// file (a host check) and names it when it is missing or unusable, never
// printing what it holds; without host checks the inventory loads.
func TestRelayhostPasswordFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	host := &Host{LookupUser: func(string) (int, error) { return 999, nil }}
	good := write("good", "s3cret pass\n")
	missing := filepath.Join(dir, "missing")
	for _, c := range []struct{ file, want string }{
		{good, ""},
		{write("crlf", "s3cret\r\n"), ""},
		{missing, "t.yaml:2: postfix.relayhost_auth.password_file: cannot read the relayhost password file: open " + missing + ": no such file or directory"},
		{write("empty", "\n"), "t.yaml:2: postfix.relayhost_auth.password_file: the relayhost password file " + dir + "/empty is empty"},
		{write("two", "hunter2\nhunter3\n"), "t.yaml:2: postfix.relayhost_auth.password_file: the relayhost password file " + dir + "/two holds more than one line"},
		{write("space", " hunter2\n"), "t.yaml:2: postfix.relayhost_auth.password_file: the relayhost password file " + dir + "/space: the password starts or ends with white space"},
	} {
		src := "node: {hostname: mx1.example.com}\npostfix: {relayhost: \"[smtp.example.net]:587\", relayhost_auth: {username: n1@example.net, password_file: " + c.file + "}}\ndomains: [{name: example.com}]\n"
		inv, err := ParseWith([]byte(src), "t.yaml", LoadOptions{Host: host})
		if c.want == "" {
			if err != nil {
				t.Errorf("%s: %v", c.file, err)
			} else if inv.Postfix.RelayhostTLS != "encrypt" {
				t.Errorf("relayhost_tls default %q, want encrypt", inv.Postfix.RelayhostTLS)
			}
			continue
		}
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%s: got %v\nwant prefix %s", c.file, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter") {
			t.Errorf("the password leaked into the error: %v", err)
		}
		if _, err := Parse([]byte(src), "t.yaml"); err != nil {
			t.Errorf("%s without host checks: %v", c.file, err)
		}
	}
	if pw, err := ReadRelayhostPassword(good); err != nil || pw != "s3cret pass" {
		t.Errorf("ReadRelayhostPassword = %q, %v", pw, err)
	}
}
