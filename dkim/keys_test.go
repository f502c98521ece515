package dkim

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestLoadKeyRefuses: the key files LoadKey must not use, each with the
// reason it gives; and the good one it must.
func TestLoadKeyRefuses(t *testing.T) {
	dir := t.TempDir()
	key, err := Generate("ed25519")
	if err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good.key")
	if err := WriteKey(good, key); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey(good, "ed25519"); err != nil {
		t.Fatalf("good key: %v", err)
	}
	link := filepath.Join(dir, "link.key")
	os.Symlink(good, link)
	readable := filepath.Join(dir, "readable.key")
	data, _ := os.ReadFile(good)
	os.WriteFile(readable, data, 0o644)
	os.Chmod(readable, 0o644)
	fifo := filepath.Join(dir, "fifo.key")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	subdir := filepath.Join(dir, "dir.key")
	os.Mkdir(subdir, 0o700)
	big := filepath.Join(dir, "big.key")
	os.WriteFile(big, make([]byte, maxKeyFile+1), 0o600)
	for _, c := range []struct{ path, alg, want string }{
		{filepath.Join(dir, "missing.key"), "ed25519", "key file missing"},
		{link, "ed25519", "is a symbolic link; keys are opened without following links"},
		{readable, "ed25519", "mode 0644 lets other users read the private key"},
		{fifo, "ed25519", "is not a regular file"},
		{subdir, "ed25519", "is not a regular file"},
		{big, "ed25519", "is not a private key file"},
		{good, "rsa", "is an Ed25519 key but the selector is configured for rsa"},
	} {
		_, err := LoadKey(c.path, c.alg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", filepath.Base(c.path), err, c.want)
		}
	}
}
