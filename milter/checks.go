package milter

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/authres"
	msgauth "github.com/emersion/go-msgauth/dkim"
	"github.com/mailnode/mailnode/dkim"
)

// The inbound check chain. Checks run in this order on every message that
// Decide sends to Verify (outside sender, local recipient); each adds its
// method results to the one Authentication-Results header.
//
// DefaultChecks is DKIM alone:
//
//  1. dkim — every DKIM-Signature, verified as the body streams.
//
// milterd runs InboundChecks (spamchecks.go): spf, dkim, dmarc, spam.
func DefaultChecks(lookup LookupTXT) []Check {
	return []Check{&DKIMCheck{LookupTXT: lookup, MaxSignatures: 8}}
}

// A Check is one step of the inbound chain.
type Check interface {
	Name() string
	// Start begins checking one message whose envelope and complete
	// header are known.
	Start(env Envelope, headers []dkim.Header) CheckRun
}

// CheckRun is one Check working on one message.
type CheckRun interface {
	// Body takes the next body chunk. It may block (back-pressure) but
	// must not keep the chunk.
	Body(chunk []byte) error
	// End returns the results once the whole body was given, waiting at
	// most until ctx is done (then the results are temperror).
	End(ctx context.Context) []authres.Result
	// Abort stops the run without results.
	Abort()
}

// LookupTXT resolves TXT records. Errors that are net.Error with
// Temporary() true count as temporary (temperror), others as permanent.
type LookupTXT func(ctx context.Context, name string) ([]string, error)

// ResolverLookup returns a LookupTXT that asks only the DNS server at
// addr (the inventory's node.resolver, host:port) and gives up after timeout.
// A timeout or SERVFAIL is a temporary error, NXDOMAIN a permanent one.
func ResolverLookup(addr string, timeout time.Duration) LookupTXT {
	r := &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	return func(ctx context.Context, name string) ([]string, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		if !strings.HasSuffix(name, ".") {
			name += "." // never the search list
		}
		return r.LookupTXT(ctx, name)
	}
}

// DKIMCheck verifies every DKIM signature (up to MaxSignatures) with
// go-msgauth, fed through a pipe as the body streams, so memory stays flat.
type DKIMCheck struct {
	LookupTXT     LookupTXT
	MaxSignatures int
}

// Name implements Check.
func (c *DKIMCheck) Name() string { return "dkim" }

// Start implements Check.
func (c *DKIMCheck) Start(_ Envelope, headers []dkim.Header) CheckRun {
	n := 0
	for _, h := range headers {
		if strings.EqualFold(h.Name, "DKIM-Signature") {
			n++
		}
	}
	if n == 0 {
		return noSignatures{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	r := &dkimRun{pw: pw, cancel: cancel, done: make(chan struct{})}
	opts := &msgauth.VerifyOptions{
		MaxVerifications: c.MaxSignatures,
		LookupTXT: func(name string) ([]string, error) {
			if c.LookupTXT == nil {
				return nil, &net.DNSError{Err: "no resolver configured", Name: name, IsTemporary: true}
			}
			return c.LookupTXT(ctx, name)
		},
	}
	go func() {
		defer close(r.done)
		r.verifs, r.err = msgauth.VerifyWithOptions(pr, opts)
		// go-msgauth may stop reading early; drain so writers never block.
		io.Copy(io.Discard, pr)
	}()
	// The header, as a message: name ":" raw value CRLF, folding in CRLF.
	var b []byte
	for _, h := range headers {
		b = append(b, h.Name...)
		b = append(b, ':')
		b = appendCRLF(b, h.Value)
		b = append(b, '\r', '\n')
	}
	b = append(b, '\r', '\n')
	if _, err := pw.Write(b); err != nil {
		r.werr = err
	}
	return r
}

// appendCRLF appends v with every lone LF made CRLF.
func appendCRLF(b []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		if v[i] == '\n' && (i == 0 || v[i-1] != '\r') {
			b = append(b, '\r')
		}
		b = append(b, v[i])
	}
	return b
}

type noSignatures struct{}

func (noSignatures) Body([]byte) error { return nil }
func (noSignatures) End(context.Context) []authres.Result {
	return []authres.Result{&authres.DKIMResult{Value: authres.ResultNone}}
}
func (noSignatures) Abort() {}

type dkimRun struct {
	pw     *io.PipeWriter
	cancel context.CancelFunc
	done   chan struct{}
	werr   error
	verifs []*msgauth.Verification
	err    error
}

func (r *dkimRun) Body(chunk []byte) error {
	if r.werr == nil {
		_, r.werr = r.pw.Write(chunk)
	}
	return nil // a verifier that stopped reading is not the connection's fault
}

func (r *dkimRun) End(ctx context.Context) []authres.Result {
	r.pw.Close()
	select {
	case <-r.done:
	case <-ctx.Done():
		r.Abort()
		return []authres.Result{&authres.DKIMResult{Value: authres.ResultTempError, Reason: "verification timed out"}}
	}
	r.cancel()
	if r.err != nil && !errors.Is(r.err, msgauth.ErrTooManySignatures) && len(r.verifs) == 0 {
		return []authres.Result{&authres.DKIMResult{Value: authres.ResultPermError, Reason: "malformed message"}}
	}
	var out []authres.Result
	for _, v := range r.verifs {
		res := &authres.DKIMResult{Domain: v.Domain, Identifier: v.Identifier}
		switch {
		case v.Err == nil:
			res.Value = authres.ResultPass
		case msgauth.IsTempFail(v.Err):
			res.Value = authres.ResultTempError
		case msgauth.IsPermFail(v.Err):
			res.Value = authres.ResultPermError
		default:
			res.Value = authres.ResultFail
		}
		if v.Err != nil {
			res.Reason = v.Err.Error()
		}
		out = append(out, res)
	}
	return out
}

func (r *dkimRun) Abort() {
	r.cancel()
	r.pw.CloseWithError(errors.New("milter: message aborted"))
}
