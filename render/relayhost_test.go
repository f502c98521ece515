package render

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSmarthostPassword: the password is in postfix/sasl_passwd only,
// written 0600, never shown by Check, and a missing password file is an
// error that names it.
func TestSmarthostPassword(t *testing.T) {
	inv := load(t, "testdata/private.yaml")
	files, err := Render(inv)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if strings.Contains(string(b), "golden-not-a-secret") != (name == SASLPasswd) {
			t.Errorf("%s: holds the password = %v", name, name != SASLPasswd)
		}
	}
	if !Secret(SASLPasswd) {
		t.Error("the password map is not a secret")
	}
	dir := t.TempDir()
	if _, err := Write(dir, files); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, SASLPasswd))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("sasl_passwd: %v, mode %v", err, st.Mode().Perm())
	}
	os.WriteFile(filepath.Join(dir, SASLPasswd), []byte("old-password\n"), 0o600)
	diff, err := Check(dir, files)
	if err != nil || !strings.Contains(string(diff), "b/"+SASLPasswd) {
		t.Fatalf("Check: %v\n%s", err, diff)
	}
	if strings.Contains(string(diff), "golden-not-a-secret") || strings.Contains(string(diff), "old-password") {
		t.Errorf("Check shows the password:\n%s", diff)
	}
	inv.Postfix.RelayhostAuth.PasswordFile = filepath.Join(dir, "nosuch.secret")
	if _, err := Render(inv); err == nil || !strings.Contains(err.Error(), "postfix.relayhost_auth.password_file") || !strings.Contains(err.Error(), "nosuch.secret") {
		t.Errorf("missing password file: %v", err)
	}
}
