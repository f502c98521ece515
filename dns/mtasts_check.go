package dns

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	neturl "net/url"
	"slices"
	"strings"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/mailnode/mailnode/inventory"
)

// policyFetchTimeout bounds one HTTPS fetch of a policy; maxPolicySize is
// the largest policy accepted (RFC 8461 §3.3: 64 KiB).
const (
	policyFetchTimeout = 10 * time.Second
	maxPolicySize      = 64 << 10
)

// checkSTS runs the MTA-STS and TLS-RPT checks of local domain d, which
// has mta_sts or tlsrpt; z is its rendered zone.
func (c *Checker) checkSTS(ctx context.Context, base Result, inv *inventory.Inventory, d *inventory.Domain, z Zone) []Result {
	var out []Result
	if policy := MTASTSPolicy(inv, d); policy != "" {
		out = append(out, c.checkSTSRecord(ctx, base, z.Origin, policy))
		var addrs []netip.Addr
		for _, r := range z.Records {
			if r.Name == "mta-sts."+z.Origin && (r.Type == TypeA || r.Type == TypeAAAA) {
				addrs = append(addrs, r.Addr)
			}
		}
		for _, v6 := range []bool{false, true} {
			want := family(addrs, v6)
			if len(want) == 0 {
				continue
			}
			r := base
			r.Check = "name:mta-sts"
			if v6 {
				r.Check += "/aaaa"
			}
			out = append(out, c.compareAddrs(ctx, r, "mta-sts."+z.Origin, want, v6))
		}
		out = append(out, c.checkPolicy(ctx, base, d, z.Origin))
	}
	if d.TLSRPT != "" {
		out = append(out, c.checkTLSRPT(ctx, base, "_smtp._tls."+z.Origin, TLSRPTRecord(d.TLSRPT)))
	}
	return out
}

// txtStarting returns the TXT records at name that start with prefix, or
// the failed result.
func (c *Checker) txtStarting(ctx context.Context, r *Result, name, prefix string) ([]string, bool) {
	a := c.ask(ctx, name, mdns.TypeTXT)
	if a.problem != "" {
		r.Status, r.Found, r.Problem = StatusFail, a.describe(), a.problem
		return nil, false
	}
	var recs []string
	for _, rr := range a.rrs {
		if s := strings.Join(rr.(*mdns.TXT).Txt, ""); strings.HasPrefix(s, prefix) {
			recs = append(recs, s)
		}
	}
	if len(recs) == 0 {
		r.Status, r.Found, r.Problem = StatusFail, "no record starting with "+prefix, ProblemNoData
		return nil, false
	}
	r.Found = strings.Join(recs, " | ")
	if len(recs) > 1 {
		r.Status = StatusFail
		r.Detail = "several records: senders ignore them all"
		return nil, false
	}
	return recs, true
}

// checkSTSRecord checks the _mta-sts TXT record: one, v=STSv1, a valid id;
// an id other than the rendered policy's warns (senders that cached the
// policy under the published id do not fetch the current one).
func (c *Checker) checkSTSRecord(ctx context.Context, r Result, origin, policy string) Result {
	r.Check, r.Name = "mta-sts", "_mta-sts."+origin
	r.Expected = MTASTSRecord(policy)
	recs, ok := c.txtStarting(ctx, &r, r.Name, "v=STSv1")
	if !ok {
		if r.Detail == "" {
			r.Detail = "no MTA-STS record: senders do not look for the policy"
		}
		return r
	}
	id, err := ParseSTSRecord(recs[0])
	switch {
	case err != nil:
		r.Status, r.Detail = StatusFail, "malformed: "+err.Error()
	case id != MTASTSID(policy):
		r.Status = StatusWarn
		r.Detail = "the id is not the rendered policy's: publish the zone again, or senders keep an older policy they cached"
	default:
		r.Status = StatusOK
	}
	return r
}

// checkTLSRPT checks the TLS-RPT record: one, v=TLSRPTv1, the inventory's
// report addresses.
func (c *Checker) checkTLSRPT(ctx context.Context, r Result, name, want string) Result {
	r.Check, r.Name, r.Expected = "tlsrpt", name, want
	recs, ok := c.txtStarting(ctx, &r, name, "v=TLSRPTv1")
	if !ok {
		if r.Detail == "" {
			r.Detail = "no TLS-RPT record: senders do not report TLS failures"
		}
		return r
	}
	rua := ""
	for _, f := range strings.Split(recs[0], ";") {
		if k, v, ok := strings.Cut(strings.TrimSpace(f), "="); ok && k == "rua" {
			rua = strings.TrimSpace(v)
		}
	}
	_, wantRUA, _ := strings.Cut(want, "rua=")
	switch {
	case rua == "":
		r.Status, r.Detail = StatusFail, "no rua=: senders have nowhere to report"
	case rua != wantRUA:
		r.Status, r.Detail = StatusFail, "reports go to "+rua+", not to the inventory's "+wantRUA
	default:
		r.Status = StatusOK
	}
	return r
}

// checkPolicy fetches https://mta-sts.<domain>/.well-known/mta-sts.txt from
// every address of mta-sts.<domain> (as senders do: no redirects, a
// certificate valid for that name, 64 KiB at most, text/plain) and checks
// that it parses, that its mode and max_age are the inventory's, and that
// its mx lines and the domain's MX records in DNS match both ways.
func (c *Checker) checkPolicy(ctx context.Context, r Result, d *inventory.Domain, origin string) Result {
	host := "mta-sts." + strings.TrimSuffix(origin, ".")
	url := "https://" + host + "/.well-known/mta-sts.txt"
	r.Check, r.Name = "mta-sts-policy", url
	r.Expected = fmt.Sprintf("mode %s, max_age %d, mx matching the MX records", d.MTASTS.Mode, d.MTASTS.MaxAge)
	var addrs []netip.Addr
	for _, v6 := range []bool{false, true} {
		a, _ := c.addrsOf(ctx, host+".", v6)
		addrs = append(addrs, a...)
	}
	if len(addrs) == 0 {
		r.Status, r.Found = StatusFail, host+" has no address"
		return r
	}
	var text string
	for _, ip := range addrs {
		t, err := c.fetchPolicy(ctx, url, host, ip)
		if err != nil {
			r.Status, r.Found = StatusFail, "from "+ip.String()+": "+err.Error()
			return r
		}
		if text != "" && t != text {
			r.Status, r.Found = StatusFail, "from "+ip.String()+": another policy than from "+addrs[0].String()
			return r
		}
		text = t
	}
	p, err := ParsePolicy(text)
	if err != nil {
		r.Status, r.Found = StatusFail, "malformed: "+err.Error()
		return r
	}
	r.Found = fmt.Sprintf("mode %s, max_age %d, mx %s", p.Mode, p.MaxAge, strings.Join(p.MX, " "))
	var why []string
	if p.Mode != d.MTASTS.Mode {
		why = append(why, "mode "+p.Mode+", the inventory says "+d.MTASTS.Mode)
	}
	if p.MaxAge != d.MTASTS.MaxAge {
		why = append(why, fmt.Sprintf("max_age %d, the inventory says %d", p.MaxAge, d.MTASTS.MaxAge))
	}
	a := c.ask(ctx, origin, mdns.TypeMX)
	if a.problem != "" {
		why = append(why, "the MX records: "+a.describe())
	}
	var mxs []string
	for _, rr := range a.rrs {
		mxs = append(mxs, strings.ToLower(strings.TrimSuffix(rr.(*mdns.MX).Mx, ".")))
	}
	for _, mx := range mxs {
		if !slices.ContainsFunc(p.MX, func(pat string) bool { return MXMatches(pat, mx) }) {
			why = append(why, "MX "+mx+" is matched by no mx line: senders enforcing the policy refuse it")
		}
	}
	for _, pat := range p.MX {
		if !slices.ContainsFunc(mxs, func(mx string) bool { return MXMatches(pat, mx) }) {
			why = append(why, "mx "+pat+" matches no MX record")
		}
	}
	r.Status = StatusOK
	if len(why) > 0 {
		r.Status, r.Detail = StatusFail, strings.Join(why, "; ")
	}
	return r
}

// fetchPolicy fetches the policy from one address of host.
func (c *Checker) fetchPolicy(ctx context.Context, url, host string, ip netip.Addr) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, policyFetchTimeout)
	defer cancel()
	dial := c.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	addr := net.JoinHostPort(ip.String(), "443")
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dial(ctx, network, addr)
		},
		TLSClientConfig:   &tls.Config{ServerName: host, RootCAs: c.RootCAs, MinVersion: tls.VersionTLS12},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse // RFC 8461 §3.3: senders follow no redirect
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		var ue *neturl.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %s (senders take only 200, and follow no redirect)", resp.Status)
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "text/plain" {
		return "", fmt.Errorf("Content-Type %q, want text/plain", resp.Header.Get("Content-Type"))
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxPolicySize+1))
	if err != nil {
		return "", err
	}
	if len(b) > maxPolicySize {
		return "", fmt.Errorf("larger than %d bytes (RFC 8461: senders refuse it)", maxPolicySize)
	}
	return string(b), nil
}
