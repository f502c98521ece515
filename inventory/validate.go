package inventory

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/net/idna"
)

// Defaults: the stock Debian paths and ports.
const (
	DefaultPostfixConfigDir = "/etc/postfix"
	DefaultQueueDir         = "/var/spool/postfix"
	DefaultDataDir          = "/var/lib/postfix"
	DefaultDovecotConfigDir = "/etc/dovecot"
	DefaultDovecotBaseDir   = "/run/dovecot"
	DefaultKeyDir           = "/etc/mailnode/dkim"
	DefaultStatePath        = "/var/lib/mailnode/state.db"
	DefaultResolver         = "127.0.0.1:53"
	DefaultMessageSizeLimit = 10240000 // Postfix's own default, in bytes
)

func (inv *Inventory) applyDefaults() {
	p := &inv.Postfix
	def := func(s *string, d string) {
		if strings.TrimSpace(*s) == "" {
			*s = d
		}
	}
	def(&inv.Node.Resolver, DefaultResolver)
	def(&inv.Node.ResolverAnchorFile, DefaultResolverAnchorFile)
	def(&p.ConfigDirectory, DefaultPostfixConfigDir)
	def(&p.QueueDirectory, DefaultQueueDir)
	def(&p.DataDirectory, DefaultDataDir)
	if p.SMTPListen == nil {
		p.SMTPListen = []string{"25"}
	}
	if inv.NullClient() {
		// No submission (checkRole refuses it), and smtpd on loopback only.
		p.SubmissionListen, p.SubmissionsListen = []string{}, []string{}
		def(&p.InetInterfaces, "loopback-only")
	}
	if p.SubmissionListen == nil {
		p.SubmissionListen = []string{"587"}
	}
	if p.SubmissionsListen == nil && p.TLS.CertFile != "" {
		p.SubmissionsListen = []string{"465"}
	}
	def(&p.InetInterfaces, "all")
	def(&p.InetProtocols, "all")
	def(&p.MailSpoolDirectory, "/var/mail")
	if p.RelayhostAuth != nil {
		def(&p.RelayhostTLS, "encrypt")
	}
	inv.applySecurityDefaults()
	inv.applySRSDefaults()
	if p.MessageSizeLimit == 0 {
		p.MessageSizeLimit = DefaultMessageSizeLimit
	}
	def(&inv.Policy.Listen, "unix:"+strings.TrimRight(p.QueueDirectory, "/")+"/private/mailnode-policy")
	def(&inv.Policy.SenderLogin, "domain")
	def(&inv.Policy.Mode, ModeEnforce)
	def(&inv.Policy.State.Backend, "bbolt")
	if inv.Policy.State.Backend == "bbolt" {
		def(&inv.Policy.State.Path, DefaultStatePath)
	}
	if g := inv.Policy.Greylist; g != nil {
		if g.Delay == 0 {
			g.Delay = Duration(300e9)
		}
		if g.RetryWindow == 0 {
			g.RetryWindow = Duration(48 * 3600e9)
		}
		if g.AutoWhitelistAfter == 0 {
			g.AutoWhitelistAfter = 5
		}
		if g.Expire == 0 {
			g.Expire = Duration(35 * 24 * 3600e9)
		}
	}
	def(&inv.Milter.Listen, "unix:"+strings.TrimRight(p.QueueDirectory, "/")+"/private/mailnode-milter")
	d := &inv.Dovecot
	def(&d.ConfigDirectory, DefaultDovecotConfigDir)
	def(&d.BaseDir, DefaultDovecotBaseDir)
	def(&d.SASLSocket, "private/auth")
	def(&d.LMTPSocket, "private/dovecot-lmtp")
	def(&d.MailUser, "vmail")
	def(&d.MailLocation, "maildir:/var/vmail/%d/%n")
	if d.Sieve != nil {
		def(&d.Sieve.JunkFolder, "Junk")
		if d.Sieve.Listen == nil {
			d.Sieve.Listen = []string{"4190"}
		}
	}
	def(&inv.DKIM.KeyDir, DefaultKeyDir)
	s := &inv.Spam
	def(&s.Engine, "builtin")
	if s.TagScore == 0 {
		s.TagScore = 5
	}
	if s.RejectScore == 0 {
		s.RejectScore = 15
	}
	def(&s.SubjectTag, "[SPAM]")
	def(&s.OnEngineFailure, "accept")
	if a := s.Antivirus; a != nil {
		def(&a.Engine, "clamd")
		def(&a.Address, DefaultClamdAddress)
		def(&a.OnFailure, "tempfail")
	}
	if d.SpamLearning && s.Engine == "rspamd" && s.RspamdControllerURL == "" {
		if u, err := url.Parse(s.RspamdURL); err == nil && u.Host != "" {
			u.Host = net.JoinHostPort(u.Hostname(), "11334")
			u.Path, u.RawQuery = "", ""
			s.RspamdControllerURL = u.String()
		}
	}
}

// DefaultClamdAddress is Debian's clamd socket (clamav-daemon).
const DefaultClamdAddress = "unix:/run/clamav/clamd.ctl"

// NormalizeDomain returns the ASCII (punycode), lower-case form of a domain
// without a trailing dot. It fails for names that are not valid host names.
func NormalizeDomain(s string) (string, error) {
	s = strings.TrimSpace(s)
	// Nearly every name is plain ASCII letters, digits and hyphens, for
	// which IDNA is the identity after lower-casing: check those labels by
	// hand (quickDomain) and leave IDNA the rest. FuzzNormalizeDomain holds
	// the two paths together.
	if d, ok, special := quickDomain(lowerASCII(s)); ok && !special {
		return d, nil
	}
	return normalizeDomainIDNA(s)
}

// normalizeDomainIDNA is NormalizeDomain through IDNA, for every name.
func normalizeDomainIDNA(s string) (string, error) {
	s = strings.TrimSuffix(strings.TrimSpace(s), ".")
	if s == "" {
		return "", fmt.Errorf("empty domain name")
	}
	a, err := idnaProfile.ToASCII(s)
	if err != nil {
		return "", fmt.Errorf("invalid domain name %q: %v", s, err)
	}
	a = strings.ToLower(a)
	if len(a) > 253 {
		return "", fmt.Errorf("domain name %q is longer than 253 characters", s)
	}
	for _, l := range strings.Split(a, ".") {
		if !labelRe.MatchString(l) {
			return "", fmt.Errorf("invalid domain name %q: bad label %q", s, l)
		}
	}
	return a, nil
}

var (
	idnaProfile = idna.New(idna.MapForLookup(), idna.Transitional(false), idna.BidiRule())
	labelRe     = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	selectorRe  = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)
	unixUserRe  = regexp.MustCompile(`^[a-z_][a-z0-9_.-]{0,31}$`)
	serviceRe   = regexp.MustCompile(`^(([0-9]{1,3}(\.[0-9]{1,3}){3}|\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9.-]+):)?([0-9]{1,5}|[a-z][a-z0-9-]*)$`)
)

// normalize lower-cases the node's own names; domains are normalized one
// by one as they are decoded (normalizeDomain).
func (inv *Inventory) normalize() {
	inv.Node.Hostname = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(inv.Node.Hostname)), ".")
	for i, u := range inv.UnixUsers {
		inv.UnixUsers[i] = strings.TrimSpace(u)
	}
}

// normalizeDomain applies the class default, lower-cases and punycodes the
// domain name, local parts and selectors. A bad name is reported at path p.
func normalizeDomain(v *validator, d *Domain, p func(...any) []any) {
	if strings.TrimSpace(d.Class) == "" {
		d.Class = "local"
	}
	d.Class = strings.ToLower(strings.TrimSpace(d.Class))
	if strings.TrimSpace(d.Name) == "" {
		return // reported by validateDomain
	}
	n, err := NormalizeDomain(d.Name)
	if err != nil {
		v.add(p("name"), "%v", err)
		return
	}
	d.Name = n
	for j := range d.Mailboxes {
		m := &d.Mailboxes[j]
		m.User = strings.ToLower(strings.TrimSpace(m.User))
		for k := range m.Aliases {
			m.Aliases[k] = strings.ToLower(strings.TrimSpace(m.Aliases[k]))
		}
	}
	d.Aliases = lowerKeys(d.Aliases)
	d.Lists = lowerKeys(d.Lists)
	if d.Transports != nil {
		t := make(map[string]string, len(d.Transports))
		for k, val := range d.Transports {
			t[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(val)
		}
		d.Transports = t
	}
	for j := range d.Recipients {
		d.Recipients[j] = strings.ToLower(strings.TrimSpace(d.Recipients[j]))
	}
	for j := range d.DKIM {
		d.DKIM[j].Selector = strings.ToLower(strings.TrimSpace(d.DKIM[j].Selector))
		d.DKIM[j].Algorithm = strings.ToLower(strings.TrimSpace(d.DKIM[j].Algorithm))
	}
}

func lowerKeys(m map[string]StringList) map[string]StringList {
	if m == nil {
		return nil
	}
	out := make(map[string]StringList, len(m))
	for k, l := range m {
		nl := make(StringList, len(l))
		for i, a := range l {
			nl[i] = normalizeTarget(a)
		}
		out[strings.ToLower(strings.TrimSpace(k))] = nl
	}
	return out
}

// normalizeTarget lower-cases an alias target and normalizes its domain.
func normalizeTarget(a string) string {
	a = strings.TrimSpace(a)
	at := strings.LastIndexByte(a, '@')
	if at < 0 {
		return strings.ToLower(a)
	}
	d, err := NormalizeDomain(a[at+1:])
	if err != nil {
		return strings.ToLower(a)
	}
	return strings.ToLower(a[:at]) + "@" + d
}

func (inv *Inventory) validate(v *validator) {
	// node
	if inv.Node.Hostname == "" && inv.InTier() && !inv.NullClient() {
		v.add([]any{"node", "hostname"}, "missing: with tier.nodes, say which node this is: --node NAME (one of: %s), or node.hostname", strings.Join(inv.TierHostnames(), ", "))
	} else if inv.Node.Hostname == "" {
		v.add([]any{"node", "hostname"}, "missing: the node's fully qualified host name (myhostname, HELO name, PTR target)")
	} else if h, err := NormalizeDomain(inv.Node.Hostname); err != nil {
		v.add([]any{"node", "hostname"}, "%v", err)
	} else if !strings.Contains(h, ".") {
		v.add([]any{"node", "hostname"}, "%q is not fully qualified (e.g. mx1.example.com)", h)
	} else {
		inv.Node.Hostname = h
	}
	for i, a := range inv.Node.Addresses {
		if _, err := netip.ParseAddr(strings.TrimSpace(a)); err != nil {
			v.add([]any{"node", "addresses", i}, "%q is not an IPv4 or IPv6 address", a)
		}
	}
	for i, n := range inv.Node.TrustedNetworks {
		if pfx, err := ParsePrefix(n); err != nil {
			v.add([]any{"node", "trusted_networks", i}, "%v", err)
		} else if why := tooWideToTrust(pfx); why != "" {
			v.add([]any{"node", "trusted_networks", i}, "%s", why)
		}
	}
	if err := checkHostPort(inv.Node.Resolver); err != nil {
		v.add([]any{"node", "resolver"}, "%v", err)
	}
	inv.checkResolverAnchor(v)
	// postfix
	for _, key := range []string{"smtp_listen", "submission_listen", "submissions_listen"} {
		for i, s := range inv.Postfix.listen(key) {
			if !serviceRe.MatchString(s) {
				v.add([]any{"postfix", key, i}, "%q is not a master.cf service name (\"25\", \"127.0.0.1:2525\", \"submission\")", s)
			}
		}
	}
	if d := inv.Postfix.RecipientDelimiter; d != "" {
		for i := 0; i < len(d); i++ {
			if strings.IndexByte(RecipientDelimiterChars, d[i]) < 0 || strings.IndexByte(d[:i], d[i]) >= 0 {
				v.add([]any{"postfix", "recipient_delimiter"}, "%q: each character must be one of %s, once", d, strings.Join(strings.Split(RecipientDelimiterChars, ""), " "))
				break
			}
		}
	}
	if len(inv.Postfix.SubmissionsListen) > 0 && inv.Postfix.TLS.CertFile == "" {
		v.add([]any{"postfix", "submissions_listen"}, "implicit TLS needs a certificate: set postfix.tls.cert_file and key_file, or submissions_listen: []")
	}
	for _, f := range []struct {
		key, val string
	}{{"config_directory", inv.Postfix.ConfigDirectory}, {"queue_directory", inv.Postfix.QueueDirectory}, {"data_directory", inv.Postfix.DataDirectory}} {
		if !strings.HasPrefix(f.val, "/") {
			v.add([]any{"postfix", f.key}, "%q must be an absolute path", f.val)
		}
	}
	if inv.Postfix.MessageSizeLimit < 1024 {
		v.add([]any{"postfix", "message_size_limit"}, "%d bytes is too small (default %d)", inv.Postfix.MessageSizeLimit, DefaultMessageSizeLimit)
	}
	if (inv.Postfix.TLS.CertFile == "") != (inv.Postfix.TLS.KeyFile == "") {
		v.add([]any{"postfix", "tls"}, "cert_file and key_file must be set together")
	}
	if rh := inv.Postfix.Relayhost; rh != "" {
		if err := checkNexthop(rh); err != nil {
			v.add([]any{"postfix", "relayhost"}, "%v", err)
		}
	}
	inv.checkRelayhostAuth(v)
	inv.checkSecurity(v)
	inv.checkSRS(v)
	inv.checkMainCF(v)
	// policy
	if _, _, err := ParseListen(inv.Policy.Listen); err != nil {
		v.add([]any{"policy", "listen"}, "%v", err)
	}
	if _, _, err := ParseListen(inv.Milter.Listen); err != nil {
		v.add([]any{"milter", "listen"}, "%v", err)
	}
	if inv.Policy.MetricsListen != "" {
		if err := checkHostPort(inv.Policy.MetricsListen); err != nil {
			v.add([]any{"policy", "metrics_listen"}, "%v", err)
		}
	}
	if inv.Milter.MetricsListen != "" {
		if err := checkHostPort(inv.Milter.MetricsListen); err != nil {
			v.add([]any{"milter", "metrics_listen"}, "%v", err)
		}
	}
	switch inv.Policy.SenderLogin {
	case "domain", "strict":
	default:
		v.add([]any{"policy", "sender_login"}, "%q is not one of: domain, strict", inv.Policy.SenderLogin)
	}
	switch inv.Policy.Mode {
	case ModeEnforce, ModeShadow:
	default:
		v.add([]any{"policy", "mode"}, "%q is not one of: enforce, shadow", inv.Policy.Mode)
	}
	switch inv.Policy.State.Backend {
	case "bbolt":
		if !strings.HasPrefix(inv.Policy.State.Path, "/") {
			v.add([]any{"policy", "state", "path"}, "bbolt needs an absolute file path")
		}
	case "redis":
		if sn := inv.Policy.State.Sentinel; sn != nil {
			checkSentinel(v, sn, inv.Policy.State.URL)
		} else if !strings.HasPrefix(inv.Policy.State.URL, "redis://") && !strings.HasPrefix(inv.Policy.State.URL, "rediss://") && !strings.HasPrefix(inv.Policy.State.URL, "unix://") {
			v.add([]any{"policy", "state", "url"}, "redis needs a url such as redis://127.0.0.1:6379/0 (or a sentinel)")
		}
	default:
		v.add([]any{"policy", "state", "backend"}, "%q is not one of: bbolt, redis", inv.Policy.State.Backend)
	}
	if inv.Policy.State.Sentinel != nil && inv.Policy.State.Backend != "redis" {
		v.add([]any{"policy", "state", "sentinel"}, "only with backend: redis")
	}
	if g := inv.Policy.Greylist; g != nil {
		if g.RetryWindow.D() <= g.Delay.D() {
			v.add([]any{"policy", "greylist", "retry_window"}, "must be longer than delay (%s)", g.Delay.D())
		}
		if g.AutoWhitelistAfter < 0 {
			v.add([]any{"policy", "greylist", "auto_whitelist_after"}, "must not be negative")
		}
		for i, n := range g.WhitelistClients {
			if _, err := ParsePrefix(n); err != nil {
				v.add([]any{"policy", "greylist", "whitelist_clients", i}, "%v", err)
			}
		}
		for i, n := range g.WhitelistSenders {
			if d, err := NormalizeDomain(strings.TrimPrefix(n, "@")); err != nil {
				v.add([]any{"policy", "greylist", "whitelist_senders", i}, "%v", err)
			} else {
				g.WhitelistSenders[i] = d
			}
		}
	}
	if r := inv.Policy.Ratelimit; r != nil {
		if r.MessagesPerHour < 0 || r.RecipientsPerHour < 0 {
			v.add([]any{"policy", "ratelimit"}, "limits must not be negative (0 means no limit)")
		}
		keys := make([]string, 0, len(r.Overrides))
		for k := range r.Overrides {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			o := r.Overrides[k]
			if o.MessagesPerHour < 0 || o.RecipientsPerHour < 0 {
				v.add([]any{"policy", "ratelimit", "overrides", k}, "limits must not be negative")
			}
			if _, err := ParsePrefix(k); err != nil && !strings.Contains(k, "@") {
				v.add([]any{"policy", "ratelimit", "overrides", k}, "key must be a SASL login (user@domain) or a client address/network")
			}
		}
	}
	// dovecot
	if !strings.HasPrefix(inv.Dovecot.ConfigDirectory, "/") {
		v.add([]any{"dovecot", "config_directory"}, "must be an absolute path")
	}
	if !strings.HasPrefix(inv.Dovecot.BaseDir, "/") {
		v.add([]any{"dovecot", "base_dir"}, "must be an absolute path")
	}
	for _, f := range []struct{ key, val string }{{"sasl_socket", inv.Dovecot.SASLSocket}, {"lmtp_socket", inv.Dovecot.LMTPSocket}} {
		if strings.HasPrefix(f.val, "/") || strings.Contains(f.val, "..") {
			v.add([]any{"dovecot", f.key}, "%q must be relative to postfix.queue_directory (e.g. private/auth)", f.val)
		}
	}
	if !unixUserRe.MatchString(inv.Dovecot.MailUser) {
		v.add([]any{"dovecot", "mail_user"}, "%q is not a valid system user name", inv.Dovecot.MailUser)
	}
	if !strings.Contains(inv.Dovecot.MailLocation, ":") {
		v.add([]any{"dovecot", "mail_location"}, "%q needs a format prefix, e.g. maildir:/var/vmail/%%d/%%n", inv.Dovecot.MailLocation)
	}
	if inv.Dovecot.SpamLearning {
		if inv.Dovecot.Sieve == nil {
			v.add([]any{"dovecot", "spam_learning"}, "needs dovecot.sieve: learning watches the moves into and out of its Junk folder")
		}
		if e := inv.Spam.Engine; e != "rspamd" && e != "spamd" {
			v.add([]any{"dovecot", "spam_learning"}, "needs spam.engine rspamd or spamd (it is %s, which has no classifier to train)", e)
		}
	}
	if q := inv.Dovecot.Quota; q != "" {
		if _, _, err := ParseSize(q); err != nil {
			v.add([]any{"dovecot", "quota"}, "%v", err)
		}
	}
	if !strings.HasPrefix(inv.DKIM.KeyDir, "/") {
		v.add([]any{"dkim", "key_dir"}, "must be an absolute path")
	}
	// spam
	s := inv.Spam
	switch s.Engine {
	case "builtin":
	case "rspamd":
		if !strings.HasPrefix(s.RspamdURL, "http://") && !strings.HasPrefix(s.RspamdURL, "https://") {
			v.add([]any{"spam", "rspamd_url"}, "engine rspamd needs rspamd_url, e.g. http://127.0.0.1:11333")
		}
	case "spamd":
		if err := checkHostPort(s.SpamdAddress); err != nil && !strings.HasPrefix(s.SpamdAddress, "/") {
			v.add([]any{"spam", "spamd_address"}, "engine spamd needs spamd_address host:port or a socket path: %v", err)
		}
	default:
		v.add([]any{"spam", "engine"}, "%q is not one of: builtin, rspamd, spamd", s.Engine)
	}
	if s.RejectScore <= s.TagScore {
		v.add([]any{"spam", "reject_score"}, "must be above tag_score (%g)", s.TagScore)
	}
	switch s.OnEngineFailure {
	case "accept", "tempfail":
	default:
		v.add([]any{"spam", "on_engine_failure"}, "%q is not one of: accept, tempfail", s.OnEngineFailure)
	}
	for i, z := range s.DNSBL {
		if _, err := NormalizeDomain(z); err != nil {
			v.add([]any{"spam", "dnsbl", i}, "%v", err)
		}
	}
	if a := s.Antivirus; a != nil {
		if a.Engine != "clamd" {
			v.add([]any{"spam", "antivirus", "engine"}, "%q is not one of: clamd", a.Engine)
		}
		if err := checkClamdAddress(a.Address); err != nil {
			v.add([]any{"spam", "antivirus", "address"}, "%v", err)
		}
		switch a.OnFailure {
		case "tempfail", "accept":
		default:
			v.add([]any{"spam", "antivirus", "on_failure"}, "%q is not one of: tempfail, accept", a.OnFailure)
		}
	}
	inv.checkConfigSyntax(v)
	inv.checkListenConflicts(v)
	// unix users
	seenUnix := map[string]bool{}
	for i, u := range inv.UnixUsers {
		if !unixUserRe.MatchString(u) {
			v.add([]any{"unix_users", i}, "%q is not a valid system user name", u)
		} else if seenUnix[u] {
			v.add([]any{"unix_users", i}, "%q listed twice", u)
		}
		seenUnix[u] = true
	}
}

// validateAcrossDomains checks what needs every domain at once: at least
// one domain, duplicates, the host name, alias loops.
func (inv *Inventory) validateAcrossDomains(v *validator) {
	if len(inv.Domains) == 0 {
		v.add([]any{"domains"}, "no domains: the node must be responsible for at least one domain")
	}
	seen := make(map[string]int, len(inv.Domains))
	for i := range inv.Domains {
		d := &inv.Domains[i]
		p := func(rest ...any) []any { return append([]any{"domains", i}, rest...) }
		if strings.TrimSpace(d.Name) == "" {
			continue
		}
		if j, dup := seen[d.Name]; dup {
			if inv.Domains[j].Class != d.Class {
				v.add(p("name"), "domain %s is both %s (domains[%d]) and %s: a domain has one class", d.Name, inv.Domains[j].Class, j, d.Class)
			} else {
				v.add(p("name"), "duplicate domain %s (also domains[%d])", d.Name, j)
			}
		} else {
			seen[d.Name] = i
		}
		if d.Name == inv.Node.Hostname {
			v.add(p("name"), "domain %s is the node's own host name, which serves unix_users; list another domain", d.Name)
		} else if inv.InTier() && slices.Contains(inv.TierHostnames(), d.Name) {
			// Every node loads this inventory: what one node refuses, all do.
			v.add(p("name"), "domain %s is the host name of a node of tier.nodes, which serves unix_users there; list another domain", d.Name)
		}
	}
	inv.validateLoops(v)
	inv.checkLocalTargets(v)
}

// validateDomain checks one domain on its own; p builds its paths.
func validateDomain(v *validator, d *Domain, p func(...any) []any) {
	if strings.TrimSpace(d.Name) == "" {
		v.add(p("name"), "missing domain name")
		return
	}
	switch d.Class {
	case "local":
		if d.Nexthop != "" {
			v.add(p("nexthop"), "a local domain is delivered here; nexthop applies to relay domains only")
		}
		if d.Recipients != nil {
			v.add(p("recipients"), "a local domain's recipients are its mailboxes, aliases and lists; recipients applies to relay domains only")
		}
		validateLocal(v, d, p)
	case "relay":
		if len(d.Mailboxes)+len(d.Aliases)+len(d.Lists)+len(d.Transports) > 0 {
			v.add(p("class"), "relay domain %s has mailboxes, aliases, lists or transports: make it local, or remove them", d.Name)
		}
		if len(d.DKIM) > 0 {
			v.add(p("dkim"), "relay domain %s is not signed here; DKIM selectors belong to local domains", d.Name)
		}
		if d.Nexthop != "" {
			if err := checkNexthop(d.Nexthop); err != nil {
				v.add(p("nexthop"), "%v", err)
			}
		}
		seen := make(map[string]bool, len(d.Recipients))
		for j, r := range d.Recipients {
			switch {
			case strings.HasPrefix(r, "#"):
				v.add(p("recipients", j), "%q starts with '#', which Postfix's map files read as a comment line", r)
			case !validLocalPart(r):
				v.add(p("recipients", j), "%q is not a valid local part (write the part before @%s)", r, d.Name)
			case seen[r]:
				v.add(p("recipients", j), "%s@%s listed twice", r, d.Name)
			}
			seen[r] = true
		}
	default:
		v.add(p("class"), "%q is not one of: local, relay", d.Class)
	}
}

func validateLocal(v *validator, d *Domain, p func(...any) []any) {
	names := make(map[string]string, 2*len(d.Mailboxes)+len(d.Aliases)+len(d.Lists)) // local part -> what it is
	claim := func(name, what string, path []any) bool {
		if strings.HasPrefix(name, "#") {
			v.add(path, "%q starts with '#', which Postfix's map files and Dovecot's passwd-file read as a comment line", name)
			return false
		}
		if !validLocalPart(name) {
			v.add(path, "%q is not a valid local part", name)
			return false
		}
		if prev, ok := names[name]; ok {
			v.add(path, "%s@%s is already defined as %s", name, d.Name, prev)
			return false
		}
		names[name] = what
		return true
	}
	for j, m := range d.Mailboxes {
		if m.User == "" {
			v.add(p("mailboxes", j, "user"), "missing user")
			continue
		}
		claim(m.User, "a mailbox", p("mailboxes", j, "user"))
		if m.Password == "" {
			v.add(p("mailboxes", j, "password"), "missing password hash for %s@%s (e.g. from doveadm pw -s SHA512-CRYPT)", m.User, d.Name)
		} else if why := checkPassword(m.Password); why != "" {
			v.add(p("mailboxes", j, "password"), "password for %s@%s: %s", m.User, d.Name, why)
		}
		for k, a := range m.Aliases {
			claim(a, "an alias of mailbox "+m.User, p("mailboxes", j, "aliases", k))
		}
		if m.Quota != "" {
			if _, _, err := ParseSize(m.Quota); err != nil {
				v.add(p("mailboxes", j, "quota"), "quota of %s@%s: %v", m.User, d.Name, err)
			}
		}
	}
	for _, name := range sortedKeys(d.Aliases) {
		claim(name, "an alias", p("aliases", name))
	}
	for _, name := range sortedKeys(d.Lists) {
		claim(name, "a list", p("lists", name))
	}
	tnames := make([]string, 0, len(d.Transports))
	for name := range d.Transports {
		tnames = append(tnames, name)
	}
	sort.Strings(tnames)
	for _, name := range tnames {
		if claim(name, "an address with a transport", p("transports", name)) {
			if err := checkTransport(d.Transports[name]); err != nil {
				v.add(p("transports", name), "%v", err)
			}
		}
	}
	for j, s := range d.DKIM {
		if !selectorRe.MatchString(s.Selector) {
			v.add(p("dkim", j, "selector"), "%q is not a valid DKIM selector (letters, digits, '-', '.')", s.Selector)
		}
		for k := 0; k < j; k++ {
			if d.DKIM[k].Selector == s.Selector {
				v.add(p("dkim", j, "selector"), "selector %q listed twice", s.Selector)
			}
		}
		switch s.Algorithm {
		case "rsa", "ed25519":
		default:
			v.add(p("dkim", j, "algorithm"), "%q is not one of: rsa, ed25519", s.Algorithm)
		}
	}
	// Targets: a bare name must be a mailbox, alias or list of this domain.
	checkTargets := func(kind, name string, targets StringList) {
		if len(targets) == 0 {
			what := "alias"
			if kind == "lists" {
				what = "list"
			}
			v.add(p(kind, name), "%s %s@%s has no members", what, name, d.Name)
		}
		for k, t := range targets {
			if t == "" {
				v.add(p(kind, name, k), "empty address")
				continue
			}
			local, dom, ok := strings.Cut(t, "@")
			if !ok {
				if _, ok := names[t]; !ok {
					v.add(p(kind, name, k), "%q names no mailbox, alias or list of %s", t, d.Name)
				}
				continue
			}
			if !validLocalPart(local) {
				v.add(p(kind, name, k), "%q is not a valid address", t)
				continue
			}
			if _, err := NormalizeDomain(dom); err != nil {
				v.add(p(kind, name, k), "%q: %v", t, err)
			}
		}
	}
	for _, name := range sortedKeys(d.Aliases) {
		checkTargets("aliases", name, d.Aliases[name])
	}
	for _, name := range sortedKeys(d.Lists) {
		checkTargets("lists", name, d.Lists[name])
	}
}

// validateLoops finds alias and list cycles across all local domains: a
// chain of aliases that never reaches a mailbox or an outside address.
func (inv *Inventory) validateLoops(v *validator) {
	n := 0
	for i := range inv.Domains {
		n += len(inv.Domains[i].Aliases) + len(inv.Domains[i].Lists)
	}
	graph := make(map[string][]string, n)
	for _, d := range inv.Domains {
		if d.Class != "local" {
			continue
		}
		at := "@" + d.Name
		for _, m := range []map[string]StringList{d.Aliases, d.Lists} {
			for name, ts := range m {
				addr := name + at
				for _, t := range ts {
					if strings.IndexByte(t, '@') < 0 {
						t += at
					}
					graph[addr] = append(graph[addr], t)
				}
			}
		}
	}
	// where finds the alias or list a problem points at (only for loops,
	// so no map of every name's path is kept).
	where := func(addr string) []any {
		name, dom, _ := strings.Cut(addr, "@")
		for i, d := range inv.Domains {
			if d.Class != "local" || d.Name != dom {
				continue
			}
			if _, ok := d.Lists[name]; ok {
				return []any{"domains", i, "lists", name}
			}
			if _, ok := d.Aliases[name]; ok {
				return []any{"domains", i, "aliases", name}
			}
		}
		return []any{"domains"}
	}
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	reported := map[string]bool{}
	var stack []string
	var visit func(a string)
	visit = func(a string) {
		color[a] = grey
		stack = append(stack, a)
		for _, t := range graph[a] {
			switch color[t] {
			case white:
				if _, ok := graph[t]; ok {
					visit(t)
				}
			case grey:
				// cycle: from t to the top of the stack
				var cyc []string
				for k := len(stack) - 1; k >= 0; k-- {
					cyc = append([]string{stack[k]}, cyc...)
					if stack[k] == t {
						break
					}
				}
				if !reported[t] {
					reported[t] = true
					v.add(where(t), "alias loop: %s -> %s", strings.Join(cyc, " -> "), t)
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[a] = black
	}
	keys := make([]string, 0, len(graph))
	for k := range graph {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if color[k] == white {
			visit(k)
		}
	}
}

// validLocalPart reports whether s is a lower-case dot-atom local part.
func validLocalPart(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' {
		return false
	}
	prevDot := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if prevDot {
				return false
			}
			prevDot = true
			continue
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+/=?^_{|}~-", c) >= 0:
		default:
			return false
		}
		prevDot = false
	}
	return true
}

func sortedKeys[T any](m map[string]T) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// ParsePrefix parses a CIDR network or a single address (as a host prefix).
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a network in CIDR form (e.g. 10.20.0.0/16)", s)
		}
		if p.Masked() != p {
			return netip.Prefix{}, fmt.Errorf("%q has host bits set; did you mean %s?", s, p.Masked())
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither an address nor a network in CIDR form", s)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// ParseListen splits "unix:/path" or "inet:host:port" into network and address.
func ParseListen(s string) (network, addr string, err error) {
	switch {
	case strings.HasPrefix(s, "unix:"):
		p := strings.TrimPrefix(s, "unix:")
		if !strings.HasPrefix(p, "/") {
			return "", "", fmt.Errorf("%q: unix socket path must be absolute", s)
		}
		return "unix", p, nil
	case strings.HasPrefix(s, "inet:"):
		a := strings.TrimPrefix(s, "inet:")
		if err := checkHostPort(a); err != nil {
			return "", "", fmt.Errorf("%q: %v", s, err)
		}
		return "tcp", a, nil
	}
	return "", "", fmt.Errorf("%q must be unix:/path or inet:host:port", s)
}

// checkClamdAddress checks spam.antivirus.address: unix:/absolute/path or
// host:port.
func checkClamdAddress(s string) error {
	if p, ok := strings.CutPrefix(s, "unix:"); ok {
		if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "\x00\r\n") {
			return fmt.Errorf("%q: the socket path after unix: must be absolute, e.g. %s", s, DefaultClamdAddress)
		}
		return nil
	}
	if err := checkHostPort(s); err != nil {
		return fmt.Errorf("%v: want unix:/path or host:port, e.g. %s or 127.0.0.1:3310", err, DefaultClamdAddress)
	}
	return nil
}

// checkSentinel checks policy.state.sentinel (backend redis).
func checkSentinel(v *validator, sn *Sentinel, url string) {
	at := func(k ...any) []any { return append([]any{"policy", "state", "sentinel"}, k...) }
	if url != "" {
		v.add([]any{"policy", "state", "url"}, "set either url or sentinel, not both: with a sentinel the master's address comes from the sentinels")
	}
	if sn.Master == "" {
		v.add(at("master"), "required: the master name the sentinels monitor (sentinel monitor NAME ...)")
	} else if strings.ContainsFunc(sn.Master, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
		v.add(at("master"), "%q: a master name has no spaces or control characters", sn.Master)
	}
	if len(sn.Addresses) == 0 {
		v.add(at("addresses"), "at least one sentinel address (host:port) is needed")
	}
	for i, a := range sn.Addresses {
		if err := checkHostPort(a); err != nil {
			v.add(at("addresses", i), "%v", err)
		}
	}
	if sn.PasswordFile != "" && !strings.HasPrefix(sn.PasswordFile, "/") {
		v.add(at("password_file"), "%q: an absolute file path is needed (the password itself never goes into the inventory)", sn.PasswordFile)
	}
}

func checkHostPort(s string) error {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port", s)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: bad port %q", s, p)
	}
	if h == "" {
		return fmt.Errorf("%q: missing host", s)
	}
	return nil
}

// checkNexthop accepts Postfix next-hop forms: host, [host], host:port,
// [host]:port, optionally with a transport prefix such as "smtp:" or "lmtp:".
func checkNexthop(s string) error {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f || s[i] == ',' {
			return fmt.Errorf("%q has %s: a next hop is one word (it is written into main.cf or the transport map)", s, describeByte(s[i]))
		}
	}
	rest := s
	if t, r, ok := strings.Cut(s, ":"); ok && (t == "smtp" || t == "lmtp" || t == "relay") {
		rest = r
	}
	host, port := rest, ""
	if strings.HasPrefix(rest, "[") {
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return fmt.Errorf("%q: unbalanced [", s)
		}
		host = rest[1:end]
		after := rest[end+1:]
		if after != "" {
			if !strings.HasPrefix(after, ":") {
				return fmt.Errorf("%q: expected :port after ]", s)
			}
			port = after[1:]
		}
		if _, err := netip.ParseAddr(host); err == nil {
			host = ""
		}
	} else if h, p, ok := strings.Cut(rest, ":"); ok {
		host, port = h, p
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q: bad port %q", s, port)
		}
	}
	if host != "" {
		if _, err := NormalizeDomain(host); err != nil {
			return fmt.Errorf("%q: %v", s, err)
		}
	}
	return nil
}

// checkTransport checks a per-address next hop (domains[].transports):
// "lmtp:" or "smtp:" or "relay:" and a next hop, or "lmtp:unix:/path".
func checkTransport(s string) error {
	t, rest, ok := strings.Cut(s, ":")
	if !ok || (t != "lmtp" && t != "smtp" && t != "relay") || rest == "" {
		return fmt.Errorf("%q: write TRANSPORT:NEXTHOP with lmtp, smtp or relay (\"lmtp:[127.0.0.1]:8024\")", s)
	}
	if p, ok := strings.CutPrefix(rest, "unix:"); ok && t == "lmtp" {
		if !pathRe.MatchString(p) {
			return fmt.Errorf("%q: the socket must be an absolute path of letters, digits and . _ / + @ -", s)
		}
		return nil
	}
	return checkNexthop(s)
}
