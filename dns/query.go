package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/mailnode/mailnode/resolver"
	mdns "github.com/miekg/dns"
)

// Problem kinds a question can end with, as `dns check` reports them. They
// are told apart because they mean different things to the operator: a
// name that does not exist (NXDOMAIN) or has no record of the type (NODATA)
// is an answer about the published data; SERVFAIL, REFUSED and a timeout
// say nothing about the data, only that it could not be read.
const (
	ProblemNXDomain    = "NXDOMAIN"
	ProblemNoData      = "NODATA"
	ProblemServFail    = "SERVFAIL"
	ProblemRefused     = "REFUSED"
	ProblemTimeout     = "timeout"
	ProblemUnreachable = "unreachable"
)

// answer is the outcome of one question.
type answer struct {
	rrs     []mdns.RR // answer records of the type asked (after any CNAME)
	cnames  []string  // CNAME targets followed, in order
	authSOA *mdns.SOA // SOA of the authority section of a negative answer
	ns      []mdns.RR // NS of the authority section (referrals)
	aa, ad  bool
	problem string // "" when rrs is not empty
	err     error  // detail for timeout/unreachable
}

// describe says what the question found in a few words.
func (a answer) describe() string {
	switch a.problem {
	case "":
		return ""
	case ProblemTimeout:
		return "timeout (no answer)"
	case ProblemUnreachable:
		return fmt.Sprintf("unreachable: %v", a.err)
	}
	return a.problem
}

// querier asks one server (the resolver, or a parent's authoritative
// server) and remembers answers for the duration of one check run.
type querier struct {
	timeout  time.Duration
	attempts int

	mu    sync.Mutex
	cache map[qkey]answer
}

type qkey struct {
	server, name string
	qtype        uint16
	rd           bool
}

// ask sends one question to server (host:port) through resolver.Exchange
// (UDP, TCP when the answer is truncated; only an answer that matches the
// question is taken), retrying a timeout attempts-1 times.
func (q *querier) ask(ctx context.Context, server, name string, qtype uint16, rd bool) answer {
	name = mdns.Fqdn(strings.ToLower(name))
	k := qkey{server, name, qtype, rd}
	q.mu.Lock()
	if a, ok := q.cache[k]; ok {
		q.mu.Unlock()
		return a
	}
	q.mu.Unlock()
	a := q.exchange(ctx, server, name, qtype, rd)
	q.mu.Lock()
	if q.cache == nil {
		q.cache = map[qkey]answer{}
	}
	q.cache[k] = a
	q.mu.Unlock()
	return a
}

func (q *querier) exchange(ctx context.Context, server, name string, qtype uint16, rd bool) answer {
	m := new(mdns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = rd
	m.SetEdns0(1232, true) // DO: a validating resolver then tells AD
	var (
		in  *mdns.Msg
		err error
	)
	for i := 0; i < max(q.attempts, 1); i++ {
		in, err = resolver.Exchange(ctx, server, m, q.timeout)
		if err == nil || !isTimeout(err) || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		if isTimeout(err) || ctx.Err() != nil {
			return answer{problem: ProblemTimeout, err: err}
		}
		return answer{problem: ProblemUnreachable, err: err}
	}
	a := answer{aa: in.Authoritative, ad: in.AuthenticatedData}
	for _, rr := range in.Ns {
		switch v := rr.(type) {
		case *mdns.SOA:
			a.authSOA = v
		case *mdns.NS:
			a.ns = append(a.ns, v)
		}
	}
	switch in.Rcode {
	case mdns.RcodeSuccess:
	case mdns.RcodeNameError:
		a.problem = ProblemNXDomain
		return a
	case mdns.RcodeServerFailure:
		a.problem = ProblemServFail
		return a
	case mdns.RcodeRefused:
		a.problem = ProblemRefused
		return a
	default:
		a.problem = mdns.RcodeToString[in.Rcode]
		if a.problem == "" {
			a.problem = fmt.Sprintf("RCODE%d", in.Rcode)
		}
		return a
	}
	// Follow the CNAME chain the server put in the answer.
	owner := name
	for range 10 {
		next := ""
		for _, rr := range in.Answer {
			if c, ok := rr.(*mdns.CNAME); ok && strings.EqualFold(c.Hdr.Name, owner) && qtype != mdns.TypeCNAME {
				next = strings.ToLower(c.Target)
			}
		}
		if next == "" {
			break
		}
		a.cnames = append(a.cnames, next)
		owner = next
	}
	for _, rr := range in.Answer {
		if rr.Header().Rrtype == qtype && strings.EqualFold(rr.Header().Name, owner) {
			a.rrs = append(a.rrs, rr)
		}
	}
	if len(a.rrs) == 0 {
		a.problem = ProblemNoData
	}
	return a
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded)
}
