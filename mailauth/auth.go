// Package mailauth evaluates who may send for a domain: SPF (RFC 7208)
// for the MAIL FROM or HELO identity, DMARC (RFC 7489) for the From:
// domain against the aligned SPF and DKIM results, the organizational
// domain both align on, and the parsing of the From: header field that
// names that domain. DNS goes through the caller's resolver (package
// resolver); DKIM verification itself is package dkim.
//
// milterd's inbound chain (milter/spamchecks.go) runs SPF and DMARC on
// mail the ACL matrix spam-checks; `mailnode dns check` evaluates a
// domain's SPF policy for the node's own addresses.
package mailauth

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/publicsuffix"
)

// SPF is the result of the SPF check (RFC 7208) of one message.
type SPF struct {
	Result   spf.Result // none, neutral, pass, fail, softfail, temperror, permerror
	Identity string     // "mailfrom" or "helo": which identity was checked
	Sender   string     // the address checked: MAIL FROM, or postmaster@HELO for the null sender
	Domain   string     // its domain, the one DMARC aligns with
	Reason   string     // why, when not plain (the library's error)
}

// CheckSPF evaluates SPF for the MAIL FROM identity, or for the HELO
// identity when MAIL FROM is the null sender (RFC 7208 §2.4), through r.
// DNS trouble makes temperror; ctx bounds the whole evaluation.
func CheckSPF(ctx context.Context, r spf.DNSResolver, client netip.Addr, helo, sender string) SPF {
	out := SPF{Identity: "mailfrom", Sender: sender}
	helo = strings.TrimSuffix(strings.TrimSpace(helo), ".")
	if sender == "" {
		out.Identity = "helo"
		if helo == "" || strings.HasPrefix(helo, "[") || net.ParseIP(helo) != nil {
			out.Result = spf.None
			out.Reason = "null sender and no HELO domain"
			return out
		}
		out.Sender = "postmaster@" + helo
	}
	if i := strings.LastIndexByte(out.Sender, '@'); i >= 0 {
		out.Domain = strings.ToLower(strings.TrimSuffix(out.Sender[i+1:], "."))
	}
	if out.Domain == "" {
		out.Result = spf.None
		out.Reason = "no domain to check"
		return out
	}
	if !client.IsValid() {
		out.Result = spf.None
		out.Reason = "no client address"
		return out
	}
	res, err := spf.CheckHostWithSender(net.IP(client.Unmap().AsSlice()), helo, out.Sender,
		spf.WithResolver(r), spf.WithContext(ctx))
	out.Result = res
	if err != nil && res != spf.Pass {
		out.Reason = err.Error()
	}
	return out
}

// DMARC is the result of evaluating the From domain's DMARC policy
// (RFC 7489) against the SPF and DKIM results.
type DMARC struct {
	Result      string       // pass, fail, none, temperror, permerror
	Domain      string       // the From: domain
	Policy      dmarc.Policy // p= (or sp= for a sub-domain of the record's domain); "" without record
	Disposition dmarc.Policy // what to do after pct=: none, quarantine or reject; none unless Result is fail
	Reason      string
}

// DMARCInput is what DMARC evaluation needs to know about a message.
type DMARCInput struct {
	FromDomain string   // RFC5322.From domain; "" when the message has not exactly one
	SPF        SPF      // the SPF result and its domain
	DKIMPass   []string // d= of every signature that verified
	DKIMTemp   []string // d= of every signature whose check failed temporarily
}

// TXTLookup resolves TXT records through the node's resolver.
type TXTLookup func(ctx context.Context, name string) ([]string, error)

// LookupDMARC finds the DMARC record for domain: at _dmarc.domain, else at
// the organizational domain (public suffix list), where sp= then applies.
// sub is true when the record came from the organizational domain and
// domain is below it. A missing record is dmarc.ErrNoPolicy.
func LookupDMARC(ctx context.Context, lookup TXTLookup, domain string) (rec *dmarc.Record, sub bool, err error) {
	opts := &dmarc.LookupOptions{LookupTXT: func(name string) ([]string, error) { return lookup(ctx, name) }}
	rec, err = dmarc.LookupWithOptions(domain, opts)
	if !errors.Is(err, dmarc.ErrNoPolicy) {
		return rec, false, err
	}
	org := OrgDomain(domain)
	if org == domain {
		return nil, false, err
	}
	rec, err = dmarc.LookupWithOptions(org, opts)
	return rec, err == nil, err
}

// OrgDomain returns the organizational domain of d (RFC 7489 §3.2): the
// public suffix plus one label; d itself when that cannot be told.
func OrgDomain(d string) string {
	d = strings.ToLower(strings.TrimSuffix(d, "."))
	if o, err := publicsuffix.EffectiveTLDPlusOne(d); err == nil {
		return o
	}
	return d
}

// aligned tells whether an authenticated domain is aligned with the From
// domain: the same domain (strict) or the same organizational domain (relaxed).
func aligned(mode dmarc.AlignmentMode, from, auth string) bool {
	from = strings.ToLower(strings.TrimSuffix(from, "."))
	auth = strings.ToLower(strings.TrimSuffix(auth, "."))
	if from == "" || auth == "" {
		return false
	}
	if mode == dmarc.AlignmentStrict {
		return from == auth
	}
	return OrgDomain(from) == OrgDomain(auth)
}

// Sample returns a number in [0, 100) for pct= sampling; tests replace it.
var Sample = func() int { return rand.IntN(100) }

// EvaluateDMARC applies the record to the message's results.
//
//   - pass: SPF passed for an aligned domain, or an aligned DKIM signature verified.
//   - temperror: the record could not be fetched, or no aligned
//     identifier passed while an aligned one failed only temporarily
//     (rejecting mail because our DNS hiccuped would be wrong).
//   - fail: otherwise. The disposition is p= (sp= for a sub-domain when the
//     record is the organizational domain's), applied to pct= percent of
//     failing messages; the others get the next milder policy (RFC 7489
//     §6.6.4: reject becomes quarantine, quarantine becomes none).
func EvaluateDMARC(rec *dmarc.Record, sub bool, lookupErr error, in DMARCInput) DMARC {
	out := DMARC{Domain: in.FromDomain, Disposition: dmarc.PolicyNone}
	switch {
	case in.FromDomain == "":
		out.Result = "none"
		out.Reason = "not exactly one From: domain"
		return out
	case errors.Is(lookupErr, dmarc.ErrNoPolicy):
		out.Result = "none"
		return out
	case dmarc.IsTempFail(lookupErr):
		out.Result = "temperror"
		out.Reason = lookupErr.Error()
		return out
	case lookupErr != nil:
		out.Result = "permerror"
		out.Reason = lookupErr.Error()
		return out
	}
	out.Policy = rec.Policy
	if sub && rec.SubdomainPolicy != "" {
		out.Policy = rec.SubdomainPolicy
	}
	if in.SPF.Result == spf.Pass && aligned(rec.SPFAlignment, in.FromDomain, in.SPF.Domain) {
		out.Result = "pass"
		return out
	}
	for _, d := range in.DKIMPass {
		if aligned(rec.DKIMAlignment, in.FromDomain, d) {
			out.Result = "pass"
			return out
		}
	}
	temp := in.SPF.Result == spf.TempError && aligned(rec.SPFAlignment, in.FromDomain, in.SPF.Domain)
	for _, d := range in.DKIMTemp {
		temp = temp || aligned(rec.DKIMAlignment, in.FromDomain, d)
	}
	if temp {
		out.Result = "temperror"
		out.Reason = "an aligned identifier failed temporarily"
		return out
	}
	out.Result = "fail"
	out.Disposition = out.Policy
	if rec.Percent != nil && *rec.Percent < 100 && Sample() >= *rec.Percent {
		switch out.Policy {
		case dmarc.PolicyReject:
			out.Disposition = dmarc.PolicyQuarantine
		case dmarc.PolicyQuarantine:
			out.Disposition = dmarc.PolicyNone
		}
		out.Reason = "pct sampled out"
	}
	if out.Disposition == "" {
		out.Disposition = dmarc.PolicyNone
	}
	return out
}
