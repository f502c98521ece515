package inventory

import (
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
)

// The checks in this file look at inventory values as the files they are
// written into will read them. A value that lands in main.cf, master.cf, a
// Postfix map, Dovecot's passwd-file, dovecot.conf, unbound.conf or a mail
// header must not carry that file's separators, line breaks or comment
// characters: a newline in a socket path would add a main.cf line of the
// writer's choice, a ':' in a password hash another passwd-file field.
// Values are refused, never quoted or escaped, so what the admin wrote is
// what every program reads.

var (
	// pathRe: absolute paths Postfix, Dovecot and the daemons are given.
	// No white space (a main.cf value ends there), no ',' '{' '}' (Postfix
	// list and option syntax), no '$' (Postfix expands it), no '#' or '"'.
	pathRe = regexp.MustCompile(`^/[A-Za-z0-9._/+@-]*$`)
	// mailLocationRe: Dovecot's mail_location, FORMAT:PATH[:KEY=VALUE...],
	// with Dovecot's %-variables and ~ for the home directory.
	mailLocationRe = regexp.MustCompile(`^[a-z]+:[A-Za-z0-9._/%:=~+@-]+$`)
	// mailboxNameRe: a top-level IMAP folder name (dovecot.sieve.junk_folder).
	mailboxNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)
	// instanceNameRe: Postfix's multi_instance_name (a log prefix).
	instanceNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	// schemeRe: a Dovecot password scheme with an optional encoding suffix,
	// {SHA512-CRYPT}, {SSHA256.b64}.
	schemeRe = regexp.MustCompile(`^\{([A-Za-z0-9-]+)(\.(?i:b64|base64|hex))?\}`)
)

// passwordSchemes are the Dovecot schemes that store a hash (or a derived
// secret), never the password itself. Keyed by upper-case name; the value
// is the prefix the stored hash must have ("" when the scheme has none).
var passwordSchemes = map[string]string{
	"SHA512-CRYPT": "$6$", "SHA256-CRYPT": "$5$", "BLF-CRYPT": "$2",
	"ARGON2I": "$argon2i$", "ARGON2ID": "$argon2id$", "PBKDF2": "$1$",
	"MD5-CRYPT": "$1$", "CRYPT": "", "DES-CRYPT": "",
	"SSHA512": "", "SSHA256": "", "SSHA": "", "SHA512": "", "SHA256": "", "SHA": "", "SHA1": "",
	"SMD5": "", "PLAIN-MD5": "", "LDAP-MD5": "", "PLAIN-MD4": "", "CRAM-MD5": "", "DIGEST-MD5": "",
	"SCRAM-SHA-1": "", "SCRAM-SHA-256": "", "NTLM": "",
}

// plainSchemes keep the password readable: refused with their own reason.
var plainSchemes = map[string]bool{"PLAIN": true, "CLEAR": true, "CLEARTEXT": true, "PLAIN-TRUNC": true}

// checkPassword checks a mailbox's password as Dovecot's passwd-file line
// "user@domain:PASSWORD:..." will read it. It returns "" when it is fine.
func checkPassword(pw string) string {
	m := schemeRe.FindStringSubmatch(pw)
	if m == nil {
		return "must be a hash with its scheme, e.g. {SHA512-CRYPT}$6$... (doveadm pw -s SHA512-CRYPT); plain text is refused"
	}
	scheme := strings.ToUpper(m[1])
	hash := pw[len(m[0]):]
	if plainSchemes[scheme] {
		return fmt.Sprintf("{%s} stores the password in plain text, which is refused; store a hash: doveadm pw -s SHA512-CRYPT", m[1])
	}
	prefix, known := passwordSchemes[scheme]
	if !known {
		return fmt.Sprintf("{%s} is not a Dovecot password hash scheme mailnode accepts (use SHA512-CRYPT, BLF-CRYPT or ARGON2ID)", m[1])
	}
	for i := 0; i < len(hash); i++ {
		if c := hash[i]; c <= ' ' || c >= 0x7f || c == ':' {
			return fmt.Sprintf("the hash has %s at byte %d; Dovecot's passwd-file separates fields with ':' and users with line breaks, so a hash holds neither (nor spaces or control characters)", describeByte(c), len(m[0])+i+1)
		}
	}
	if hash == "" {
		return fmt.Sprintf("{%s} is followed by no hash", m[1])
	}
	if prefix != "" && !strings.HasPrefix(hash, prefix) {
		return fmt.Sprintf("a {%s} hash starts with %q; this one does not (copy the whole output of doveadm pw)", m[1], prefix)
	}
	return ""
}

func describeByte(c byte) string {
	switch c {
	case '\n':
		return "a line break"
	case '\r':
		return "a carriage return"
	case ' ':
		return "a space"
	case '\t':
		return "a tab"
	case ':', ',':
		return "'" + string(c) + "'"
	}
	return fmt.Sprintf("the byte 0x%02x", c)
}

// checkPath checks an absolute path that is written into a config file.
func checkPath(v *validator, path []any, s string) {
	if s == "" {
		return
	}
	if !pathRe.MatchString(s) {
		v.add(path, "%q: a path here must be absolute and use only letters, digits and . _ / + @ - (it is written into Postfix's or Dovecot's configuration, where spaces, ',', '$', '#', quotes and line breaks change its meaning)", s)
	}
}

// checkListenSyntax checks a unix:/path or inet:host:port listen address
// whose parts are written into main.cf (check_policy_service, smtpd_milters).
func checkListenSyntax(v *validator, path []any, s string) {
	network, addr, err := ParseListen(s)
	if err != nil {
		return // reported by the caller's own check
	}
	if network == "unix" {
		checkPath(v, path, addr)
		return
	}
	h, _, _ := strings.Cut(addr[:strings.LastIndexByte(addr, ':')], "%")
	h = strings.Trim(h, "[]")
	if _, err := netip.ParseAddr(h); err == nil {
		return
	}
	if _, err := NormalizeDomain(h); err != nil {
		v.add(path, "%q: %q is neither an IP address nor a host name", s, h)
	}
}

// checkIPPort checks a HOST:PORT whose host must be an IP address because
// the program it is written for (unbound's interface, Dovecot's
// listeners) takes no names there.
func checkIPPort(v *validator, path []any, s, program, example string) bool {
	ap, err := netip.ParseAddrPort(s)
	if err != nil || !ap.Addr().IsValid() {
		v.add(path, "%q must be IP:PORT, e.g. %s: it is written into %s's configuration, which takes an address here, not a name", s, example, program)
		return false
	}
	return true
}

// checkHeaderText checks text milterd writes into a mail header.
func checkHeaderText(v *validator, path []any, s string) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c >= 0x7f {
			v.add(path, "%q has %s at byte %d; header text must be printable ASCII (no line breaks, which would start a new header field)", s, describeByte(c), i+1)
			return
		}
	}
}

// checkConfigSyntax runs the checks of this file over the inventory.
func (inv *Inventory) checkConfigSyntax(v *validator) {
	if r := inv.Node.Resolver; checkHostPort(r) == nil {
		checkIPPort(v, []any{"node", "resolver"}, r, "unbound", "127.0.0.1:53")
	}
	p := &inv.Postfix
	for _, f := range []struct{ key, val string }{
		{"config_directory", p.ConfigDirectory}, {"queue_directory", p.QueueDirectory},
		{"data_directory", p.DataDirectory}, {"mail_spool_directory", p.MailSpoolDirectory},
		{"maillog_file", p.MaillogFile},
	} {
		if strings.HasPrefix(f.val, "/") || f.key == "maillog_file" || f.key == "mail_spool_directory" {
			checkPath(v, []any{"postfix", f.key}, f.val)
		}
	}
	if p.TLS.CertFile != "" {
		checkPath(v, []any{"postfix", "tls", "cert_file"}, p.TLS.CertFile)
	}
	if p.TLS.KeyFile != "" {
		checkPath(v, []any{"postfix", "tls", "key_file"}, p.TLS.KeyFile)
	}
	if p.InstanceName != "" && !instanceNameRe.MatchString(p.InstanceName) {
		v.add([]any{"postfix", "instance_name"}, "%q: letters, digits, '.', '_' and '-' only (it is written into main.cf)", p.InstanceName)
	}
	checkInetInterfaces(v, p.InetInterfaces)
	switch strings.Join(strings.FieldsFunc(strings.ToLower(p.InetProtocols), func(r rune) bool { return r == ',' || r == ' ' }), ",") {
	case "all", "ipv4", "ipv6", "ipv4,ipv6", "ipv6,ipv4":
	default:
		v.add([]any{"postfix", "inet_protocols"}, "%q is not one of: all, ipv4, ipv6, \"ipv4, ipv6\"", p.InetProtocols)
	}
	checkListenSyntax(v, []any{"policy", "listen"}, inv.Policy.Listen)
	checkListenSyntax(v, []any{"milter", "listen"}, inv.Milter.Listen)
	if inv.Policy.State.Backend == "bbolt" && strings.HasPrefix(inv.Policy.State.Path, "/") {
		checkPath(v, []any{"policy", "state", "path"}, inv.Policy.State.Path)
	}
	if inv.Policy.State.Backend == "redis" && inv.Policy.State.URL != "" {
		if u, err := url.Parse(inv.Policy.State.URL); err != nil || strings.ContainsAny(inv.Policy.State.URL, " \t\r\n") {
			v.add([]any{"policy", "state", "url"}, "%q is not a URL", inv.Policy.State.URL)
		} else if u.Scheme != "unix" && u.Host == "" {
			v.add([]any{"policy", "state", "url"}, "%q names no host", inv.Policy.State.URL)
		}
	}
	d := &inv.Dovecot
	if strings.HasPrefix(d.ConfigDirectory, "/") {
		checkPath(v, []any{"dovecot", "config_directory"}, d.ConfigDirectory)
	}
	if strings.HasPrefix(d.BaseDir, "/") {
		checkPath(v, []any{"dovecot", "base_dir"}, d.BaseDir)
	}
	checkPath(v, []any{"dovecot", "log_path"}, d.LogPath)
	for _, f := range []struct{ key, val string }{{"sasl_socket", d.SASLSocket}, {"lmtp_socket", d.LMTPSocket}} {
		if !strings.HasPrefix(f.val, "/") && !strings.Contains(f.val, "..") {
			checkPath(v, []any{"dovecot", f.key}, "/"+f.val)
		}
	}
	if strings.Contains(d.MailLocation, ":") && !mailLocationRe.MatchString(d.MailLocation) {
		v.add([]any{"dovecot", "mail_location"}, "%q: FORMAT:PATH with letters, digits and . _ / %% : = ~ + @ - only (it is written into dovecot.conf)", d.MailLocation)
	}
	for _, key := range []string{"imap_listen", "pop3_listen"} {
		l := d.IMAPListen
		if key == "pop3_listen" {
			l = d.POP3Listen
		}
		for i, s := range l {
			if port, err := parsePort(s); err == nil && port > 0 {
				continue
			}
			checkIPPort(v, []any{"dovecot", key, i}, s, "Dovecot", "127.0.0.1:143")
		}
	}
	if sv := d.Sieve; sv != nil {
		if !mailboxNameRe.MatchString(sv.JunkFolder) {
			v.add([]any{"dovecot", "sieve", "junk_folder"}, "%q: a folder name of letters, digits, '_' and '-' (at most 64; no '.' or '/', which Dovecot reads as a folder hierarchy; it is written into dovecot.conf and a Sieve script)", sv.JunkFolder)
		}
		for i, s := range sv.Listen {
			if port, err := parsePort(s); err == nil && port > 0 {
				continue
			}
			checkIPPort(v, []any{"dovecot", "sieve", "listen", i}, s, "Dovecot", "127.0.0.1:4190")
		}
	}
	if strings.HasPrefix(inv.DKIM.KeyDir, "/") {
		checkPath(v, []any{"dkim", "key_dir"}, inv.DKIM.KeyDir)
	}
	checkHeaderText(v, []any{"spam", "subject_tag"}, inv.Spam.SubjectTag)
	if inv.Spam.Engine == "rspamd" && inv.Spam.RspamdURL != "" {
		if u, err := url.Parse(inv.Spam.RspamdURL); err != nil || u.Host == "" || strings.ContainsAny(inv.Spam.RspamdURL, " \t\r\n") {
			v.add([]any{"spam", "rspamd_url"}, "%q is not an http(s) URL with a host", inv.Spam.RspamdURL)
		}
	}
	if c := inv.Spam.RspamdControllerURL; c != "" {
		if u, err := url.Parse(c); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.ContainsAny(c, " \t\r\n'\"\\$`") {
			v.add([]any{"spam", "rspamd_controller_url"}, "%q is not an http(s) URL with a host (it is written into a shell script)", c)
		}
	}
	checkPath(v, []any{"dovecot", "mailnode_path"}, d.MailnodePath)
	if inv.Spam.Engine == "spamd" && strings.HasPrefix(inv.Spam.SpamdAddress, "/") {
		checkPath(v, []any{"spam", "spamd_address"}, inv.Spam.SpamdAddress)
	}
}

// checkInetInterfaces checks Postfix's inet_interfaces: all, loopback-only,
// or addresses and host names separated by commas or spaces.
func checkInetInterfaces(v *validator, s string) {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] >= 0x7f {
			v.add([]any{"postfix", "inet_interfaces"}, "%q has %s: it is written into main.cf, where a line break starts a new setting", s, describeByte(s[i]))
			return
		}
	}
	items := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' })
	if len(items) == 0 {
		v.add([]any{"postfix", "inet_interfaces"}, "empty")
		return
	}
	for _, it := range items {
		switch strings.ToLower(it) {
		case "all", "loopback-only":
			if len(items) > 1 {
				v.add([]any{"postfix", "inet_interfaces"}, "%q: %s cannot be combined with other interfaces", s, it)
			}
			continue
		}
		if _, err := netip.ParseAddr(strings.Trim(it, "[]")); err == nil {
			continue
		}
		if _, err := NormalizeDomain(it); err != nil {
			v.add([]any{"postfix", "inet_interfaces"}, "%q: %q is neither all, loopback-only, an IP address nor a host name", s, it)
			return
		}
	}
}

func parsePort(s string) (int, error) {
	n := 0
	if s == "" || len(s) > 5 {
		return 0, fmt.Errorf("not a port")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("not a port")
		}
		n = n*10 + int(s[i]-'0')
	}
	if n > 65535 {
		return 0, fmt.Errorf("not a port")
	}
	return n, nil
}
