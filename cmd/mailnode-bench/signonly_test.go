package main

import (
	"crypto"
	"crypto/rsa"
	"encoding/base64"
	"net"
	"path/filepath"
	"strings"
	"testing"

	gomilter "github.com/d--j/go-milter"

	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/milter/miltertest"
)

// TestSignOnly: the sign-only stand-in inserts one DKIM-Signature field
// first among the headers, as milterd does, whose b= is the key's
// signature of its fixed digest (so the bench's rounds measure a real
// signature); a key that cannot be read is refused, naming the file.
func TestSignOnly(t *testing.T) {
	dir := t.TempDir()
	path := dkim.KeyPath(filepath.Join(dir, "keys"), "bench.example", "bench")
	key, err := dkim.Generate("rsa")
	if err != nil {
		t.Fatal(err)
	}
	if err := dkim.WriteKey(path, key); err != nil {
		t.Fatal(err)
	}
	s, err := newSignOnly(path, "bench.example", "bench")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", filepath.Join(dir, "sign-only.sock"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- serveSignOnly(ln, s) }()
	client := miltertest.NewClient("unix", ln.Addr().String(), gomilter.WithDialer(postfixDialer{}))
	for range 3 {
		r, err := miltertest.Submit(client, benchMessage("bench.example", 2048))
		if err != nil {
			t.Fatal(err)
		}
		if r.Action.Type != gomilter.ActionAccept || len(r.Mods) != 1 {
			t.Fatalf("action %v, %d modifications, want accept and one", r.Action, len(r.Mods))
		}
		m := r.Mods[0]
		if m.Type != gomilter.ActionInsertHeader || m.HeaderName != "DKIM-Signature" || m.HeaderIndex != 1 {
			t.Fatalf("modification %+v, want DKIM-Signature inserted at 1", m)
		}
		_, b, ok := strings.Cut(m.HeaderValue, "b=")
		if !ok || !strings.Contains(m.HeaderValue, "d=bench.example; s=bench;") {
			t.Fatalf("field %q", m.HeaderValue)
		}
		sig, err := base64.StdEncoding.DecodeString(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := rsa.VerifyPKCS1v15(key.Public().(*rsa.PublicKey), crypto.SHA256, s.digest[:], sig); err != nil {
			t.Fatalf("b= does not verify: %v", err)
		}
	}
	ln.Close()
	if err := <-done; err != nil {
		t.Errorf("serve: %v", err)
	}

	missing := filepath.Join(dir, "no-such.private")
	if _, err := newSignOnly(missing, "bench.example", "bench"); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing key: %v, want an error naming %s", err, missing)
	}
}
