package policy

import (
	"bytes"
	"errors"
	"fmt"
)

// Request holds the attributes of one policy request that policyd uses;
// the others Postfix sends are read and ignored.
type Request struct {
	Request        string // must be smtpd_access_policy
	ProtocolState  string // CONNECT, EHLO, HELO, MAIL, RCPT, DATA, END-OF-MESSAGE, VRFY, ETRN
	ProtocolName   string // SMTP, ESMTP
	QueueID        string
	Instance       string // one value per message (per MAIL FROM) of one smtpd session
	Sender         string // "" is the null sender
	Recipient      string
	RecipientCount string
	ClientAddress  string
	ClientName     string
	HeloName       string
	SASLMethod     string
	SASLUsername   string
}

// Limits bound what one request may contain.
type Limits struct {
	MaxLine       int // bytes in one name=value line, without the LF
	MaxAttributes int // lines in one request, without the empty line
}

// DefaultLimits fit any request Postfix sends: about 30 attributes, the
// longest being addresses and certificate names well under 2 KiB (Postfix's
// own line_length_limit for SMTP commands is 2048).
var DefaultLimits = Limits{MaxLine: 4096, MaxAttributes: 100}

// ErrMalformed is returned (wrapped) for every request that breaks the
// protocol or the limits. The server answers none of them.
var ErrMalformed = errors.New("policy: malformed request")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// ParseRequest parses one complete request: name=value lines, each ended by
// LF (an optional CR before it is dropped), then an empty line. data must
// hold exactly one request and its terminating empty line.
func ParseRequest(data []byte, lim Limits) (Request, error) {
	var req Request
	n := 0
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			if len(data) > 0 {
				return Request{}, malformed("line without newline")
			}
			return Request{}, malformed("request not ended by an empty line")
		}
		line := data[:i]
		data = data[i+1:]
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		if len(line) == 0 {
			if len(data) > 0 {
				return Request{}, malformed("data after the end of the request")
			}
			break
		}
		n++
		if err := req.setLine(line, n, lim); err != nil {
			return Request{}, err
		}
	}
	if err := req.check(); err != nil {
		return Request{}, err
	}
	return req, nil
}

// setLine parses the n-th attribute line of a request.
func (r *Request) setLine(line []byte, n int, lim Limits) error {
	if n > lim.MaxAttributes {
		return malformed("more than %d attributes", lim.MaxAttributes)
	}
	if len(line) > lim.MaxLine {
		return malformed("line %d longer than %d bytes", n, lim.MaxLine)
	}
	if bytes.IndexByte(line, 0) >= 0 {
		return malformed("NUL byte in line %d", n)
	}
	eq := bytes.IndexByte(line, '=')
	if eq < 0 {
		return malformed("line %d is not name=value", n)
	}
	if eq == 0 {
		return malformed("line %d has an empty attribute name", n)
	}
	r.set(line[:eq], line[eq+1:])
	return nil
}

// check rejects requests policyd must not answer.
func (r *Request) check() error {
	if r.Request != "smtpd_access_policy" {
		return malformed("request=%q, want smtpd_access_policy", r.Request)
	}
	return nil
}

// set stores one attribute; the last of repeated attributes wins.
func (r *Request) set(name, value []byte) {
	switch string(name) {
	case "request":
		r.Request = intern(value)
	case "protocol_state":
		r.ProtocolState = intern(value)
	case "protocol_name":
		r.ProtocolName = intern(value)
	case "queue_id":
		r.QueueID = string(value)
	case "instance":
		r.Instance = string(value)
	case "sender":
		r.Sender = string(value)
	case "recipient":
		r.Recipient = string(value)
	case "recipient_count":
		r.RecipientCount = intern(value)
	case "client_address":
		r.ClientAddress = string(value)
	case "client_name":
		r.ClientName = string(value)
	case "helo_name":
		r.HeloName = string(value)
	case "sasl_method":
		r.SASLMethod = intern(value)
	case "sasl_username":
		r.SASLUsername = string(value)
	}
}

// intern returns shared strings for the values that recur in every request.
func intern(v []byte) string {
	switch string(v) {
	case "":
		return ""
	case "smtpd_access_policy":
		return "smtpd_access_policy"
	case "RCPT":
		return "RCPT"
	case "DATA":
		return "DATA"
	case "END-OF-MESSAGE":
		return "END-OF-MESSAGE"
	case "MAIL":
		return "MAIL"
	case "ESMTP":
		return "ESMTP"
	case "SMTP":
		return "SMTP"
	case "0":
		return "0"
	case "1":
		return "1"
	case "PLAIN":
		return "PLAIN"
	case "LOGIN":
		return "LOGIN"
	}
	return string(v)
}
