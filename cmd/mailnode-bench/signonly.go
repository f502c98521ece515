package main

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"os"

	gomilter "github.com/d--j/go-milter"

	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/milter"
)

// signOnly is the stand-in of `null-milter --sign`: a milter whose only
// work is milterd's RSA signature. At the end of each message it signs a
// fixed SHA-256 digest with the signer milterd makes of the same key
// (dkim.NewKey: OpenSSL's in cgo builds) and inserts a DKIM-Signature
// field carrying it where milterd inserts its own. Served by milterd's own
// server (negotiation and connection guard), what it costs beyond a bare
// signature is what any milter shaped like milterd pays before it reads a
// header or hashes a byte: the floor of milterd's signing path.
type signOnly struct {
	gomilter.NoOpMilter
	key    dkim.Key
	digest [32]byte
	head   string // the field's value up to "b="
}

func newSignOnly(keyFile, domain, selector string) (*signOnly, error) {
	signer, err := dkim.LoadKey(keyFile, "rsa")
	if err != nil {
		return nil, err
	}
	key, err := dkim.NewKey(domain, selector, "rsa", signer)
	if err != nil {
		return nil, err
	}
	s := &signOnly{key: key, digest: sha256.Sum256([]byte("mailnode-bench null-milter --sign"))}
	bh := sha256.Sum256(nil)
	s.head = fmt.Sprintf("v=1; a=rsa-sha256; c=relaxed/relaxed; d=%s; s=%s;\r\n\tt=1700000000; h=from:to:subject:date:message-id;\r\n\tbh=%s;\r\n\tb=",
		domain, selector, base64.StdEncoding.EncodeToString(bh[:]))
	return s, nil
}

func (s *signOnly) EndOfMessage(m gomilter.Modifier) (*gomilter.Response, error) {
	sig, err := s.key.Signer.Sign(rand.Reader, s.digest[:], crypto.SHA256)
	if err != nil {
		return nil, err
	}
	if err := m.InsertHeader(1, "DKIM-Signature", s.head+base64.StdEncoding.EncodeToString(sig)); err != nil {
		return nil, err
	}
	return gomilter.RespAccept, nil
}

// serveSignOnly serves signOnly milters on ln with milterd's server.
func serveSignOnly(ln net.Listener, s *signOnly) error {
	srv := &milter.Server{Limits: milter.DefaultGuardLimits, Log: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	return srv.ServeMilter(ln, func() gomilter.Milter { return s })
}
