// Package miltertest is a milter client that talks to a milter the way
// Postfix does, over go-milter's client: the tests of package milter and of
// mailnode, and the load client of `mailnode-bench milter`, send messages
// with it and apply the modifications the milter asks for. Like
// net/http/httptest it is test machinery: the product never imports it.
package miltertest

import (
	"bytes"
	"fmt"
	"strings"

	gomilter "github.com/d--j/go-milter"
	"github.com/mailnode/mailnode/dkim"
)

// Message is one message as an MTA hands it to a milter: what the load
// client of `mailnode-bench milter` and the tests send with go-milter's
// client, the way Postfix would.
type Message struct {
	Host     string               // client host name ("localhost" for local submission)
	Family   gomilter.ProtoFamily // FamilyInet, FamilyInet6, ...
	Port     uint16               // client port (0: Postfix's non-SMTP submission)
	Addr     string               // client address
	Helo     string               // HELO name; Host when ""
	AuthUser string               // {auth_authen}, "" when not authenticated
	QueueID  string
	Sender   string
	Rcpts    []string
	Headers  []dkim.Header // values as in the message, leading space included
	Body     []byte        // CRLF line ends
}

// Result is what the milter answered.
type Result struct {
	Action *gomilter.Action
	Mods   []gomilter.ModifyAction
	AtEOH  bool // the milter decided at the end of the headers (no body sent)
	// Quarantine is the reason of a quarantine request ("" without one).
	Quarantine string
}

// NewClient returns a go-milter client that offers what Postfix offers;
// opts are added (e.g. gomilter.WithDialer).
func NewClient(network, address string, opts ...gomilter.Option) *gomilter.Client {
	return gomilter.NewClient(network, address, append([]gomilter.Option{
		gomilter.WithActions(gomilter.OptAddHeader | gomilter.OptChangeHeader | gomilter.OptChangeBody |
			gomilter.OptAddRcpt | gomilter.OptRemoveRcpt | gomilter.OptQuarantine | gomilter.OptChangeFrom |
			gomilter.OptSetMacros),
	}, opts...)...)
}

// Submit runs one message through one new milter session of c.
func Submit(c *gomilter.Client, m *Message) (*Result, error) {
	macros := gomilter.NewMacroBag()
	macros.Set(gomilter.MacroMTAFQDN, "mx.test")
	s, err := c.Session(macros)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return SubmitOn(s, macros, m)
}

// SubmitOn runs one message on an open session whose macros are macros.
func SubmitOn(s *gomilter.ClientSession, macros *gomilter.MacroBag, m *Message) (*Result, error) {
	stop := func(act *gomilter.Action, err error) (*Result, error, bool) {
		if err != nil {
			return nil, err, true
		}
		if act.Type != gomilter.ActionContinue {
			return &Result{Action: act, AtEOH: true}, nil, true
		}
		return nil, nil, false
	}
	family := m.Family
	if family == 0 {
		family = gomilter.FamilyInet
	}
	if r, err, done := stop(s.Conn(m.Host, family, m.Port, m.Addr)); done {
		return r, err
	}
	helo := m.Helo
	if helo == "" {
		helo = m.Host
	}
	if r, err, done := stop(s.Helo(helo)); done {
		return r, err
	}
	macros.Set(gomilter.MacroAuthAuthen, m.AuthUser)
	macros.Set(gomilter.MacroQueueId, m.QueueID)
	if r, err, done := stop(s.Mail(m.Sender, "")); done {
		return r, err
	}
	for _, rc := range m.Rcpts {
		if r, err, done := stop(s.Rcpt(rc, "")); done {
			return r, err
		}
	}
	if r, err, done := stop(s.DataStart()); done {
		return r, err
	}
	for _, h := range m.Headers {
		if r, err, done := stop(s.HeaderField(h.Name, h.Value, nil)); done {
			return r, err
		}
	}
	if r, err, done := stop(s.HeaderEnd()); done {
		return r, err
	}
	mods, act, err := s.BodyReadFrom(bytes.NewReader(m.Body))
	if err != nil {
		return nil, err
	}
	r := &Result{Action: act, Mods: mods}
	for _, mod := range mods {
		if mod.Type == gomilter.ActionQuarantine {
			r.Quarantine = mod.Reason
		}
	}
	return r, nil
}

// Apply returns the message as the MTA would pass it on: the header
// changes applied (Postfix semantics) and the body, CRLF throughout.
func (r *Result) Apply(m *Message) ([]byte, error) {
	hs := append([]dkim.Header(nil), m.Headers...)
	for _, mod := range r.Mods {
		switch mod.Type {
		case gomilter.ActionInsertHeader:
			i := min(int(mod.HeaderIndex), len(hs))
			hs = append(hs[:i], append([]dkim.Header{{Name: mod.HeaderName, Value: mod.HeaderValue}}, hs[i:]...)...)
		case gomilter.ActionChangeHeader:
			n := 0
			for i := range hs {
				if strings.EqualFold(hs[i].Name, mod.HeaderName) {
					if n++; n == int(mod.HeaderIndex) {
						if mod.HeaderValue == "" {
							hs = append(hs[:i], hs[i+1:]...)
						} else {
							hs[i].Value = mod.HeaderValue
						}
						break
					}
				}
			}
		case gomilter.ActionAddHeader:
			hs = append(hs, dkim.Header{Name: mod.HeaderName, Value: mod.HeaderValue})
		case gomilter.ActionQuarantine:
			// not a change of the message: the MTA holds it (Result.Quarantine)
		default:
			return nil, fmt.Errorf("miltertest: unexpected modification %v", mod)
		}
	}
	var b bytes.Buffer
	for _, h := range hs {
		b.WriteString(h.Name)
		b.WriteByte(':')
		b.Write(dkim.AppendCRLF(nil, h.Value))
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	b.Write(m.Body)
	return b.Bytes(), nil
}
