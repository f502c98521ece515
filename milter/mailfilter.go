package milter

import (
	"bytes"
	"context"
	"io"
	"strings"

	"github.com/d--j/go-milter/mailfilter"
)

// DecisionFunc adapts the Filter to go-milter's mailfilter package: the same
// Transaction, driven from a mailfilter.Trx. mailfilter collects the whole
// body before it calls the function, so milterd itself serves the streaming
// backend (backend.go); this adapter is for embedding the filter in a
// mailfilter-based milter and for tests with mailfilter/testtrx.
func (f *Filter) DecisionFunc() mailfilter.DecisionModificationFunc {
	return func(ctx context.Context, trx mailfilter.Trx) (mailfilter.Decision, error) {
		env := Envelope{QueueID: trx.QueueId()}
		if c := trx.Connect(); c != nil {
			env.ClientAddr = c.Addr
			env.ClientHost = c.Host
			env.LocalSubmission = LocalSubmission(c.Host, c.Family, c.Port, c.Addr)
		}
		if h := trx.Helo(); h != nil {
			env.Helo = h.Name
		}
		if mf := trx.MailFrom(); mf != nil {
			env.AuthUser = mf.AuthenticatedUser()
			env.Sender = mf.Addr
		}
		tx := f.NewTransaction(env)
		defer tx.Close()
		for _, r := range trx.RcptTos() {
			tx.AddRcpt(r.Addr)
		}
		for fl := trx.Headers().Fields(); fl.Next(); {
			raw := fl.Raw()
			_, value, _ := bytes.Cut(raw, []byte(":"))
			value = bytes.TrimSuffix(value, []byte("\r\n"))
			value = bytes.TrimSuffix(value, []byte("\n"))
			if err := tx.Header(fl.Key(), string(value)); err != nil {
				return mailfilter.TempFail, err
			}
		}
		tx.EndOfHeaders()
		if tx.NeedsBody() {
			if body := trx.Body(); body != nil {
				buf := make([]byte, 64<<10)
				for {
					n, err := body.Read(buf)
					if n > 0 {
						if err := tx.Body(buf[:n]); err != nil {
							return mailfilter.TempFail, err
						}
					}
					if err == io.EOF {
						break
					}
					if err != nil {
						return mailfilter.TempFail, err
					}
				}
			}
		}
		res := tx.End(ctx)
		if res.TempFail || res.Reject {
			switch {
			case res.Reply != "":
				code, text := splitReply(res.Reply)
				return mailfilter.CustomErrorResponse(code, text), nil
			case res.Reject:
				return mailfilter.Reject, nil
			}
			return mailfilter.TempFail, nil
		}
		for _, c := range res.Changes {
			if c.Replace {
				n := 0
				for fl := trx.Headers().Fields(); fl.Next(); {
					if strings.EqualFold(fl.Key(), c.Name) {
						if n++; n == c.Index {
							fl.Set(c.Value)
						}
					}
				}
				continue
			}
			if c.Delete {
				n := 0
				for fl := trx.Headers().Fields(); fl.Next(); {
					if strings.EqualFold(fl.Key(), c.Name) {
						if n++; n == c.Index {
							fl.Del()
						}
					}
				}
				continue
			}
			fl := trx.Headers().Fields()
			if fl.Next() {
				fl.InsertBefore(c.Name, c.Value)
			} else {
				trx.Headers().Add(c.Name, c.Value)
			}
		}
		if res.Quarantine != "" {
			return mailfilter.QuarantineResponse(res.Quarantine), nil
		}
		return mailfilter.Accept, nil
	}
}
