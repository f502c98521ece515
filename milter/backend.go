package milter

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	gomilter "github.com/d--j/go-milter"
)

// Negotiated with the MTA: we add, change and delete header fields, may
// quarantine (Postfix: the hold queue) and change the envelope sender
// (SRS, srs.go), and skip every event and reply we do
// not need. HELO is sent (SPF checks the HELO identity; Postfix has no
// macro for it) but not answered, and so is every event before the end of
// the message (a message that needs nothing more lets its body go by
// unread, see Headers). Header values come with their leading space
// (OptHeaderLeadingSpace) so they are exactly as in the message.
const (
	milterActions  = gomilter.OptAddHeader | gomilter.OptChangeHeader | gomilter.OptQuarantine | gomilter.OptChangeFrom
	milterProtocol = gomilter.OptNoHeloReply | gomilter.OptNoUnknown | gomilter.OptNoData |
		gomilter.OptNoConnReply | gomilter.OptNoMailReply | gomilter.OptNoRcptReply |
		gomilter.OptNoHeaderReply | gomilter.OptNoBodyReply | gomilter.OptNoUnknownReply |
		gomilter.OptNoDataReply | gomilter.OptNoEOHReply | gomilter.OptHeaderLeadingSpace
)

// backend is the go-milter Milter for one MTA connection: it turns milter
// events into Transaction calls.
type backend struct {
	f     *Filter
	addr  string
	host  string
	helo  string
	local bool
	tx    *Transaction
}

var _ gomilter.Milter = (*backend)(nil)

func (b *backend) NewConnection(gomilter.Modifier) error { return nil }

func (b *backend) Connect(host, family string, port uint16, addr string, _ gomilter.Modifier) (*gomilter.Response, error) {
	b.addr = addr
	b.host = host
	b.helo = ""
	b.local = LocalSubmission(host, family, port, addr)
	return gomilter.RespContinue, nil
}

func (b *backend) Helo(name string, _ gomilter.Modifier) (*gomilter.Response, error) {
	if len(name) > 255 {
		name = name[:255]
	}
	b.helo = name
	return gomilter.RespContinue, nil
}

func (b *backend) MailFrom(from, _ string, m gomilter.Modifier) (*gomilter.Response, error) {
	b.reset()
	b.tx = b.f.NewTransaction(Envelope{
		QueueID:         m.Get(gomilter.MacroQueueId),
		ClientAddr:      b.addr,
		LocalSubmission: b.local,
		AuthUser:        m.Get(gomilter.MacroAuthAuthen),
		Sender:          from,
		Helo:            b.helo,
		ClientHost:      b.host,
	})
	return gomilter.RespContinue, nil
}

func (b *backend) RcptTo(rcpt, _ string, _ gomilter.Modifier) (*gomilter.Response, error) {
	if b.tx == nil {
		return nil, b.failed(fmt.Errorf("%w: RCPT before MAIL", ErrProtocol))
	}
	b.tx.AddRcpt(rcpt)
	return gomilter.RespContinue, nil
}

func (b *backend) Data(gomilter.Modifier) (*gomilter.Response, error) {
	return gomilter.RespContinue, nil
}

func (b *backend) Header(name, value string, _ gomilter.Modifier) (*gomilter.Response, error) {
	if b.tx == nil {
		return nil, b.failed(fmt.Errorf("%w: header before MAIL", ErrProtocol))
	}
	if err := b.tx.Header(name, value); err != nil {
		return nil, b.failed(err)
	}
	return gomilter.RespContinue, nil
}

func (b *backend) Headers(m gomilter.Modifier) (*gomilter.Response, error) {
	if b.tx == nil {
		return nil, b.failed(fmt.Errorf("%w: end of headers before MAIL", ErrProtocol))
	}
	b.tx.SetQueueID(m.Get(gomilter.MacroQueueId))
	b.tx.EndOfHeaders()
	// The MTA expects no reply here (OptNoEOHReply): nearly all mail is
	// signed or checked and needs its body anyway, and a round trip fewer
	// saves both sides a wake-up per message. A message with nothing to
	// sign, check or remove lets its body go by unread (Transaction.Body)
	// and is accepted at its end.
	return gomilter.RespContinue, nil
}

func (b *backend) BodyChunk(chunk []byte, _ gomilter.Modifier) (*gomilter.Response, error) {
	if b.tx == nil {
		return nil, b.failed(fmt.Errorf("%w: body before MAIL", ErrProtocol))
	}
	if err := b.tx.Body(chunk); err != nil {
		return nil, b.failed(err)
	}
	return gomilter.RespContinue, nil
}

func (b *backend) EndOfMessage(m gomilter.Modifier) (*gomilter.Response, error) {
	if b.tx == nil {
		return nil, b.failed(fmt.Errorf("%w: end of message before MAIL", ErrProtocol))
	}
	b.tx.SetQueueID(m.Get(gomilter.MacroQueueId))
	res := b.tx.End(context.Background())
	b.reset()
	if res.TempFail || res.Reject {
		if res.Reply == "" {
			if res.Reject {
				return gomilter.RespReject, nil
			}
			return gomilter.RespTempFail, nil
		}
		code, text := splitReply(res.Reply)
		return gomilter.RejectWithCodeAndReason(code, text)
	}
	if err := applyMilter(m, res.Changes); err != nil {
		b.f.Metrics.Error(ErrKindMTA)
		return nil, err
	}
	if res.Sender != "" {
		if err := m.ChangeFrom(res.Sender, ""); err != nil {
			b.f.Metrics.Error(ErrKindMTA)
			return nil, err
		}
	}
	if res.Quarantine != "" {
		if err := m.Quarantine(res.Quarantine); err != nil {
			b.f.Metrics.Error(ErrKindMTA)
			return nil, err
		}
	}
	return gomilter.RespAccept, nil
}

// failed counts an error that closes the connection by its kind.
func (b *backend) failed(err error) error {
	switch {
	case errors.Is(err, ErrLimit):
		b.f.Metrics.Error(ErrKindLimit)
	case errors.Is(err, ErrProtocol):
		b.f.Metrics.Error(ErrKindProtocol)
	}
	return err
}

// splitReply splits "550 5.7.1 text" into 550 and "5.7.1 text".
func splitReply(r string) (uint16, string) {
	code, text, _ := strings.Cut(r, " ")
	n, err := strconv.Atoi(code)
	if err != nil || n < 400 || n > 599 {
		return 451, "4.3.0 " + r
	}
	return uint16(n), text
}

// applyMilter sends the header changes over the milter protocol.
func applyMilter(m gomilter.Modifier, changes []HeaderChange) error {
	for _, c := range changes {
		var err error
		if c.Delete {
			err = m.ChangeHeader(c.Index, c.Name, "")
		} else if c.Replace {
			err = m.ChangeHeader(c.Index, c.Name, c.Value)
		} else {
			// Postfix wants LF line ends in header values; go-milter
			// converts CRLF. With OptHeaderLeadingSpace negotiated the
			// value is used as is, leading space included.
			err = m.InsertHeader(c.Index, c.Name, c.Value)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (b *backend) Abort(gomilter.Modifier) error {
	b.reset()
	return nil
}

func (b *backend) Unknown(string, gomilter.Modifier) (*gomilter.Response, error) {
	return gomilter.RespContinue, nil
}

func (b *backend) Cleanup(gomilter.Modifier) { b.reset() }

func (b *backend) reset() {
	if b.tx != nil {
		b.tx.Close()
		b.tx = nil
	}
}
