// Package render turns a validated inventory into the node's configuration
// files: the staging tree that `mailnode render-config --out DIR` writes.
//
//	postfix/main.cf, postfix/master.cf          (templates/*.tmpl)
//	postfix/transport, relay_domains, relay_recipient_maps, tls_policy,
//	        virtual_mailbox_domains, virtual_mailbox_maps, virtual_alias_maps,
//	        sender_login_maps, quota_recipients,
//	        aliases                              (map sources, for postmap/postalias)
//	postfix/sasl_passwd                          (smarthost login, texthash, 0600)
//	dovecot/dovecot.conf, dovecot/users          (passwd-file of the mailboxes)
//	dovecot/sieve/junk.sieve                     (dovecot.sieve: the Junk before-script)
//	dovecot/sieve/report-{spam,ham}.sieve,
//	        bin/mailnode-learn                   (dovecot.spam_learning: IMAPSieve rules, 0755 wrapper)
//	unbound/unbound.conf
//	dns/<domain>.zone                            (one per local domain, package dns)
//	mta-sts/<domain>/.well-known/mta-sts.txt     (domains[].mta_sts: the policy to serve, mtasts.go)
//	mta-sts-resolver/mta-sts-daemon.yml          (postfix.outbound_tls: mta-sts, mtasts.go)
//	postfix/mailnode-inventory.digest            (the inventory's digest, see DigestFile)
//
// A null client (node.role: nullclient) gets main.cf, master.cf,
// tls_policy, sasl_passwd, unbound.conf and the digest: no Dovecot, no
// domain maps, no zones.
//
// Render is pure: the same inventory (and DKIM keys) gives the same bytes.
// Files name the installed paths from the inventory (postfix.config_directory,
// dovecot.config_directory, ...), never the staging directory. Write installs
// a tree atomically file by file (temp file + rename); Check compares a tree
// with what is on disk and returns a unified diff.
package render

import (
	"bytes"
	"fmt"
	"net"
	"path"
	"slices"
	"sort"
	"strings"
	"text/template"

	"github.com/mailnode/mailnode/dns"
	"github.com/mailnode/mailnode/internal/drift"
	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/templates"
)

// Files maps a slash-separated path relative to the staging directory
// ("postfix/main.cf") to the file's bytes.
type Files map[string][]byte

// Names returns the file names in sorted order.
func (f Files) Names() []string {
	names := make([]string, 0, len(f))
	for n := range f {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// PostfixMaps lists the map sources under postfix/ with the command that
// compiles each (postmap, or postalias for aliases), in a fixed order.
var PostfixMaps = []struct{ Name, Compiler string }{
	{"transport", "postmap"},
	{"relay_domains", "postmap"},
	{"relay_recipient_maps", "postmap"},
	{"tls_policy", "postmap"},
	{"virtual_mailbox_domains", "postmap"},
	{"virtual_mailbox_maps", "postmap"},
	{"virtual_alias_maps", "postmap"},
	{"sender_login_maps", "postmap"},
	{"quota_recipients", "postmap"},
	{"aliases", "postalias"},
}

// PostfixMapsFor lists the map sources rendered for inv, in PostfixMaps'
// order: all of them for a mail node; for a null client only tls_policy,
// the one map its main.cf names (it has no domains to route or deliver).
func PostfixMapsFor(inv *inventory.Inventory) []struct{ Name, Compiler string } {
	if !inv.NullClient() {
		return PostfixMaps
	}
	var out []struct{ Name, Compiler string }
	for _, m := range PostfixMaps {
		if m.Name == "tls_policy" {
			out = append(out, m)
		}
	}
	return out
}

// DigestFile is the file under postfix/ that holds the digest of the
// inventory rendered; policyd and milterd compare it with the inventory
// they run (package internal/drift).
const DigestFile = drift.DigestFile

// Secret reports whether a rendered file holds secrets (password hashes,
// the smarthost password) and must not be world-readable.
func Secret(name string) bool { return name == "dovecot/users" || name == SASLPasswd }

// Executable reports whether a rendered file (by its name under the
// staging directory, or any path ending in it) is a program: the wrappers
// the Sieve pipe runs (dovecot/sieve/bin/).
func Executable(name string) bool {
	return strings.HasPrefix(name, SieveBinDir+"/") || strings.Contains(name, "/"+SieveBinDir+"/")
}

// SASLPasswd is the smarthost password map (postfix.relayhost_auth): a
// texthash table, so that no compiled copy exists with other permissions;
// mode 0600, read by smtp(8) as root before it drops privileges.
const SASLPasswd = "postfix/sasl_passwd"

var tmpl = template.Must(template.New("").Option("missingkey=error").ParseFS(templates.FS, "*.tmpl"))

// Render produces every file of the staging tree from inv, which must come
// from inventory.Load or inventory.Parse (validated and indexed).
func Render(inv *inventory.Inventory) (Files, error) {
	// The files are independent of each other: render them on every core
	// (the maps and the zones of a large inventory are most of the work).
	var jobs []func(Files) error
	jobs = append(jobs, func(f Files) error { return renderPostfixConfig(inv, f) })
	if inv.Digest != "" {
		jobs = append(jobs, func(f Files) error {
			f["postfix/"+DigestFile] = []byte(inv.Digest + "\n")
			return nil
		})
	}
	for _, m := range PostfixMapsFor(inv) {
		jobs = append(jobs, func(f Files) error {
			f["postfix/"+m.Name] = postfixMap(inv, m.Name)
			return nil
		})
	}
	jobs = append(jobs,
		func(f Files) error { return renderSASLPasswd(inv, f) },
		func(f Files) error { return renderUnbound(inv, f) },
		func(f Files) error { return renderMTASTS(inv, f) })
	local := inv.LocalDomains()
	if inv.NullClient() {
		// No Dovecot, and no zones: a null client's domains receive their
		// mail elsewhere, and their zones are the mail node's to render.
		// The DKIM records of its selectors are what `dkim keygen` prints.
		local = nil
	} else {
		jobs = append(jobs, func(f Files) error { return renderDovecot(inv, f) })
	}
	const zonesPerJob = 256
	for start := 0; start < len(local); start += zonesPerJob {
		batch := local[start:min(start+zonesPerJob, len(local))]
		jobs = append(jobs, func(f Files) error {
			for _, d := range batch {
				z, err := dns.ZoneFor(inv, d)
				if err != nil {
					return fmt.Errorf("render: zone %s: %w", d.Name, err)
				}
				f["dns/"+d.Name+".zone"] = z.Format()
			}
			return nil
		})
	}
	outs := make([]Files, len(jobs))
	errs := make([]error, len(jobs))
	parallel(len(jobs), func(i int) {
		outs[i] = Files{}
		errs[i] = jobs[i](outs[i])
	})
	files := make(Files, len(local)+16)
	for i := range jobs {
		if errs[i] != nil {
			return nil, errs[i]
		}
		for name, b := range outs[i] {
			files[name] = b
		}
	}
	return files, nil
}

func execute(name string, data any) ([]byte, error) {
	var b bytes.Buffer
	if err := tmpl.ExecuteTemplate(&b, name, data); err != nil {
		return nil, fmt.Errorf("render: %s: %w", name, err)
	}
	return b.Bytes(), nil
}

// queuePath returns the absolute path of a path named relative to the
// Postfix queue directory, as Dovecot needs it.
func queuePath(inv *inventory.Inventory, rel string) string {
	return path.Join(inv.Postfix.QueueDirectory, rel)
}

// PostfixSocket turns a policy.listen / milter.listen value into the form
// Postfix's clients use: "inet:host:port" as is; "unix:/abs/path" relative
// to the queue directory ("unix:private/name") when it lies under it,
// absolute otherwise (no Postfix service runs chrooted).
func PostfixSocket(listen, queueDir string) string {
	p, ok := strings.CutPrefix(listen, "unix:")
	if !ok {
		return listen
	}
	q := strings.TrimRight(queueDir, "/") + "/"
	if rel, ok := strings.CutPrefix(path.Clean(p), q); ok && rel != "" {
		return "unix:" + rel
	}
	return "unix:" + path.Clean(p)
}

type postfixData struct {
	Hostname, ConfigDirectory, QueueDirectory, DataDirectory string
	InstanceName, MaillogFile, MaillogPrefix                 string
	InetInterfaces, InetProtocols, Relayhost, Mynetworks     string
	MailSpoolDirectory, LMTPSocket, SASLPath                 string
	Policy, Milter, TLSCert, TLSKey                          string
	RecipientDelimiter, RelayhostTLS                         string
	QuotaStatus, QuotaClass                                  string // Dovecot's quota-status policy service, "" without quotas
	SRSMap                                                   string // forwarding.srs: milterd's reversal socketmap, "" when off
	RelayhostAuth, NullClient                                bool
	DANE                                                     bool // postfix.outbound_tls: dane
	SMTPListen, SubmissionListen, SubmissionsListen          []string
	MessageSizeLimit, MailboxSizeLimit                       int64
	MTASTSPolicyMap, OutboundCAFile                          string // postfix.outbound_tls: mta-sts (mtasts.go)
}

// renderPostfixConfig writes main.cf and master.cf (the maps are rendered
// on their own by postfixMap).
func renderPostfixConfig(inv *inventory.Inventory, files Files) error {
	p := inv.Postfix
	d := postfixData{
		Hostname:           inv.Node.Hostname,
		ConfigDirectory:    strings.TrimRight(p.ConfigDirectory, "/"),
		QueueDirectory:     p.QueueDirectory,
		DataDirectory:      p.DataDirectory,
		InstanceName:       p.InstanceName,
		MaillogFile:        p.MaillogFile,
		InetInterfaces:     p.InetInterfaces,
		InetProtocols:      p.InetProtocols,
		Relayhost:          p.Relayhost,
		Mynetworks:         mynetworks(inv.Node.TrustedNetworks),
		MailSpoolDirectory: p.MailSpoolDirectory,
		LMTPSocket:         inv.Dovecot.LMTPSocket,
		SASLPath:           inv.Dovecot.SASLSocket,
		TLSCert:            p.TLS.CertFile,
		TLSKey:             p.TLS.KeyFile,
		SMTPListen:         p.SMTPListen,
		SubmissionListen:   p.SubmissionListen,
		RecipientDelimiter: p.RecipientDelimiter,
		RelayhostTLS:       p.RelayhostTLS,
		RelayhostAuth:      p.RelayhostAuth != nil,
		NullClient:         inv.NullClient(),
		DANE:               inv.DANE() && !inv.NullClient(),
		MessageSizeLimit:   p.MessageSizeLimit,
		// local(8) refuses to start when its limit is below the message limit.
		MailboxSizeLimit: max(51200000, p.MessageSizeLimit),
	}
	if p.TLS.CertFile != "" {
		// Implicit TLS cannot run without a certificate (config check
		// refuses an explicit list without one).
		d.SubmissionsListen = p.SubmissionsListen
	}
	if d.MaillogFile != "" {
		d.MaillogPrefix = path.Dir(d.MaillogFile)
	}
	if inv.PolicyEnabled() {
		d.Policy = PostfixSocket(inv.Policy.Listen, p.QueueDirectory)
	}
	if inv.MilterEnabled() {
		// Milter clients take "unix:/abs/path" as is (no service is chrooted).
		d.Milter = inv.Milter.Listen
	}
	d.MTASTSPolicyMap, d.OutboundCAFile = mtastsPolicyMap(inv), DefaultCAFile
	if inv.QuotaOn() {
		d.QuotaStatus, d.QuotaClass = "unix:"+QuotaStatusSocket, QuotaClass
	}
	if inv.SRSActive() {
		d.SRSMap = srsMap(inv)
	}
	for _, f := range []string{"main.cf", "master.cf"} {
		t := f + ".tmpl"
		if f == "main.cf" && d.NullClient {
			t = "nullclient-main.cf.tmpl"
		}
		b, err := execute(t, d)
		if err != nil {
			return err
		}
		if f == "main.cf" && len(p.MainCF) > 0 {
			b = applyMainCF(b, p)
		}
		files["postfix/"+f] = b
	}
	return nil
}

// applyMainCF appends postfix.main_cf to main.cf, last. A parameter the
// template also sets is taken out of its place (with its continuation
// lines) and a comment says where it went, so main.cf sets each name once.
func applyMainCF(b []byte, p inventory.Postfix) []byte {
	var out bytes.Buffer
	skipping := false
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if skipping && (strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t")) {
			continue
		}
		skipping = false
		name, _, ok := strings.Cut(line, " =")
		if _, mine := p.MainCF[name]; ok && mine {
			out.WriteString("# " + name + ": set by postfix.main_cf, at the end of this file\n")
			skipping = true
			continue
		}
		out.WriteString(line)
	}
	out.WriteString("\n# postfix.main_cf: the inventory's own settings, applied last.\n")
	for _, k := range p.MainCFKeys() {
		out.WriteString(k + " = " + p.MainCF[k] + "\n")
	}
	return out.Bytes()
}

// mynetworks writes the trusted networks in Postfix's syntax: IPv6 in
// brackets ([2001:db8::]/32), single addresses as themselves.
func mynetworks(nets []string) string {
	var out []string
	for _, n := range nets {
		p, err := inventory.ParsePrefix(n)
		if err != nil {
			continue // Load has refused such an inventory already
		}
		if p.Addr().Is6() {
			out = append(out, "["+p.Addr().String()+"]/"+fmt.Sprint(p.Bits()))
		} else if p.IsSingleIP() {
			out = append(out, p.Addr().String())
		} else {
			out = append(out, p.String())
		}
	}
	return strings.Join(out, " ")
}

const mapHeader = "# Generated by `mailnode render-config` from the inventory; do not edit here.\n"

// postfixMap writes one lookup table source, sorted by key.
func postfixMap(inv *inventory.Inventory, name string) []byte {
	var b bytes.Buffer
	b.WriteString(mapHeader)
	line := func(k string, vs ...string) {
		b.WriteString(k)
		if name == "aliases" {
			b.WriteByte(':')
		}
		for i, v := range vs {
			if i == 0 {
				b.WriteByte(' ')
			} else {
				b.WriteString(", ")
			}
			b.WriteString(v)
		}
		b.WriteByte('\n')
	}
	switch name {
	case "transport":
		b.WriteString("# Relay domains and their next hop (empty: the domain's MX).\n")
		for _, d := range sortedDomains(inv.RelayDomains()) {
			line(d.Name, relayTransport(d.Nexthop))
		}
		routed := false
		for _, d := range sortedDomains(inv.LocalDomains()) {
			if len(d.Transports) > 0 && !routed {
				b.WriteString("# Addresses of local domains with a next hop of their own (domains[].transports).\n")
				routed = true
			}
			for _, name := range sortedKeys(d.Transports) {
				line(name+"@"+d.Name, d.Transports[name])
			}
		}
	case "relay_domains":
		b.WriteString("# Domains this node is a backup MX for.\n")
		for _, d := range sortedDomains(inv.RelayDomains()) {
			line(d.Name, "OK")
		}
	case "tls_policy":
		b.WriteString("# TLS towards the smarthost (postfix.relayhost_tls).\n")
		if lv := inv.Postfix.RelayhostTLS; lv != "" {
			line(inv.Postfix.Relayhost, lv)
		}
	case "relay_recipient_maps":
		b.WriteString("# Recipients accepted for the relay domains: the ones listed\n")
		b.WriteString("# (domains[].recipients), else the whole domain; others get 550 5.1.1.\n")
		for _, d := range sortedDomains(inv.RelayDomains()) {
			if len(d.Recipients) == 0 {
				line("@"+d.Name, "OK")
				continue
			}
			rs := append([]string(nil), d.Recipients...)
			sort.Strings(rs)
			for _, r := range rs {
				line(r+"@"+d.Name, "OK")
			}
		}
	case "virtual_mailbox_domains":
		b.WriteString("# Local domains: mailboxes in Dovecot, delivered over LMTP.\n")
		for _, d := range sortedDomains(inv.LocalDomains()) {
			line(d.Name, "OK")
		}
	case "virtual_mailbox_maps":
		b.WriteString("# Mailboxes of the local domains (unknown users get 550 5.1.1 at RCPT).\n")
		b.Grow(mailboxCount(inv) * 40)
		for _, d := range sortedDomains(inv.LocalDomains()) {
			for _, u := range sortedUsers(d) {
				b.WriteString(u)
				b.WriteByte('@')
				b.WriteString(d.Name)
				b.WriteString(" OK\n")
			}
			// Valid recipients too; transport_maps sends them elsewhere.
			for _, name := range sortedKeys(d.Transports) {
				line(name+"@"+d.Name, "OK")
			}
		}
	case "virtual_alias_maps":
		b.WriteString("# Aliases and internal lists of the local domains, one level each.\n")
		es := inv.VirtualAliases()
		b.Grow(len(es) * 64)
		for _, e := range es {
			line(e.Key, e.Values...)
		}
	case "quota_recipients":
		b.WriteString("# Mailboxes with a quota (dovecot.quota, mailboxes[].quota): Postfix asks\n")
		b.WriteString("# Dovecot's quota-status service about these recipients only, at RCPT.\n")
		for _, d := range sortedDomains(inv.LocalDomains()) {
			ms := append([]inventory.Mailbox(nil), d.Mailboxes...)
			sort.Slice(ms, func(i, j int) bool { return ms[i].User < ms[j].User })
			for _, m := range ms {
				if inv.MailboxQuota(m) != "" {
					line(m.User+"@"+d.Name, QuotaClass)
				}
			}
		}
	case "sender_login_maps":
		b.WriteString("# Sender address -> SASL logins that may use it.\n")
		es := inv.Owners()
		b.Grow(len(es) * 48)
		for _, e := range es {
			line(e.Key, e.Values...)
		}
	case "aliases":
		b.WriteString("# Unix users on the node's host name, delivered by local(8). Only these\n")
		b.WriteString("# names are valid there (local_recipient_maps = $alias_maps).\n")
		users := append([]string(nil), inv.UnixUsers...)
		sort.Strings(users)
		have := map[string]bool{}
		for _, u := range users {
			have[u] = true
		}
		var entries [][2]string
		for _, u := range users {
			entries = append(entries, [2]string{u, u})
		}
		// The RFC role addresses reach the first unix user.
		if len(inv.UnixUsers) > 0 {
			for _, role := range []string{"postmaster", "mailer-daemon", "abuse"} {
				if !have[role] {
					entries = append(entries, [2]string{role, inv.UnixUsers[0]})
				}
			}
		}
		sort.Slice(entries, func(i, j int) bool { return entries[i][0] < entries[j][0] })
		for _, e := range entries {
			line(e[0], e[1])
		}
	}
	return b.Bytes()
}

// relayTransport is the transport(5) value for a relay domain's next hop:
// "relay:[host]:port", or the hop as written when it names a transport.
func relayTransport(nexthop string) string {
	for _, t := range []string{"smtp:", "relay:", "lmtp:"} {
		if strings.HasPrefix(nexthop, t) {
			return nexthop
		}
	}
	return "relay:" + nexthop
}

func mailboxCount(inv *inventory.Inventory) int {
	n := 0
	for i := range inv.Domains {
		n += len(inv.Domains[i].Mailboxes)
	}
	return n
}

// sortedUsers returns the mailbox names of a domain, sorted.
func sortedUsers(d *inventory.Domain) []string {
	us := make([]string, len(d.Mailboxes))
	for i, m := range d.Mailboxes {
		us[i] = m.User
	}
	sort.Strings(us)
	return us
}

func sortedDomains(ds []*inventory.Domain) []*inventory.Domain {
	out := append([]*inventory.Domain(nil), ds...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

type listener struct {
	Name, Address, Port string
	SSL                 bool
}

type dovecotData struct {
	Hostname, BaseDir, LogPath, MailLocation, MailUser, Home string
	UsersFile, SASLSocket, LMTPSocket, TLSCert, TLSKey       string
	RecipientDelimiter                                       string
	IMAP, POP3                                               []listener
	Sieve                                                    *sieveData
	Quota                                                    *quotaData
	IMAPPlugins                                              string // mail_plugins added for IMAP
}

// quotaData is the quota part of dovecot.conf (dovecot.quota,
// mailboxes[].quota).
type quotaData struct {
	Rule   string // dovecot.quota in Dovecot's form, "" when only some mailboxes have one
	Socket string // the quota-status service's socket (absolute)
}

// sieveData is the Pigeonhole part of dovecot.conf (dovecot.sieve).
type sieveData struct {
	JunkFolder string     // where mail tagged as spam is filed
	Before     string     // the installed path of the global before-script
	Listen     []listener // ManageSieve
	// Learning: the installed directory of the scripts (dovecot.spam_learning), "" when off.
	Learning string
}

// QuotaStatusSocket is where Dovecot's quota-status service listens,
// relative to postfix.queue_directory (Postfix's name for it).
const QuotaStatusSocket = "private/quota-status"

// QuotaClass is the Postfix restriction class that asks quota-status;
// quota_recipients maps every mailbox with a quota to it.
const QuotaClass = "mailnode_quota"

// SieveDir is the directory under dovecot/ that holds the Sieve scripts
// mailnode renders; `render-config --postmap` compiles them (sievec).
const SieveDir = "dovecot/sieve"

// SieveBinDir holds the programs the Sieve pipe may run
// (sieve_pipe_bin_dir): the learning wrapper of dovecot.spam_learning.
const SieveBinDir = SieveDir + "/bin"

// reportSpamScript and reportHamScript are the IMAPSieve rules of
// dovecot.spam_learning: a message copied or moved into the Junk folder is
// learned as spam; one out of it, except into Trash, as ham.
const reportSpamScript = `# Generated by ` + "`mailnode render-config`" + ` from the inventory; do not edit here.
# dovecot.spam_learning: a message moved or copied into the Junk folder is
# learned as spam by the spam engine.
require ["vnd.dovecot.pipe", "copy", "imapsieve"];
pipe :copy "mailnode-learn" ["spam"];
`

const reportHamScript = `# Generated by ` + "`mailnode render-config`" + ` from the inventory; do not edit here.
# dovecot.spam_learning: a message moved or copied out of the Junk folder is
# learned as ham by the spam engine, unless it goes to the Trash.
require ["vnd.dovecot.pipe", "copy", "imapsieve", "environment", "variables"];
if environment :matches "imap.mailbox" "*" {
  set "mailbox" "${1}";
}
if string "${mailbox}" "Trash" {
  stop;
}
pipe :copy "mailnode-learn" ["ham"];
`

// learnWrapper is the program the learning rules pipe the message into:
// it runs `mailnode learn` with the engine from the inventory. Dovecot
// runs it as the mail user with an empty environment.
const learnWrapper = `#!/bin/sh
# Generated by ` + "`mailnode render-config`" + ` from the inventory; do not edit here.
# dovecot.spam_learning: the Sieve pipe runs this with "spam" or "ham" and
# the message on standard input.
PATH=/usr/local/bin:/usr/bin:/bin
export PATH
exec %s learn %s "$1"
`

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// junkScript is the global before-script of dovecot.sieve: it runs before
// the user's own script, files mail milterd tagged as spam into the Junk
// folder (creating it) and stops there.
const junkScript = `# Generated by ` + "`mailnode render-config`" + ` from the inventory; do not edit here.
# dovecot.sieve: runs before every user's own script (sieve_before). Mail
# milterd tagged as spam (X-Spam-Status: Yes, ...) goes into the Junk folder,
# created on demand; nothing else is touched.
require ["fileinto", "mailbox"];
if header :matches "X-Spam-Status" "Yes*" {
  fileinto :create "%s";
  stop;
}
`

func renderDovecot(inv *inventory.Inventory, files Files) error {
	dv := inv.Dovecot
	d := dovecotData{
		Hostname:           inv.Node.Hostname,
		BaseDir:            dv.BaseDir,
		LogPath:            dv.LogPath,
		MailLocation:       dv.MailLocation,
		MailUser:           dv.MailUser,
		Home:               mailHome(dv.MailLocation),
		UsersFile:          path.Join(dv.ConfigDirectory, "users"),
		RecipientDelimiter: inv.Postfix.RecipientDelimiter,
		SASLSocket:         queuePath(inv, dv.SASLSocket),
		LMTPSocket:         queuePath(inv, dv.LMTPSocket),
		TLSCert:            inv.Postfix.TLS.CertFile,
		TLSKey:             inv.Postfix.TLS.KeyFile,
	}
	var err error
	if d.IMAP, err = listeners("imap", dv.IMAPListen, "143", "993", d.TLSCert != ""); err != nil {
		return err
	}
	if d.POP3, err = listeners("pop3", dv.POP3Listen, "110", "995", d.TLSCert != ""); err != nil {
		return err
	}
	if inv.QuotaOn() {
		d.Quota = &quotaData{Socket: queuePath(inv, QuotaStatusSocket)}
		if dv.Quota != "" {
			_, d.Quota.Rule, _ = inventory.ParseSize(dv.Quota)
		}
	}
	if sv := dv.Sieve; sv != nil {
		d.Sieve = &sieveData{JunkFolder: sv.JunkFolder, Before: path.Join(dv.ConfigDirectory, "sieve", "junk.sieve")}
		for i, s := range sv.Listen {
			l, err := listenerAt("sieve", s)
			if err != nil {
				return err
			}
			if i > 0 {
				l.Name = fmt.Sprintf("sieve%d", i+1)
			}
			d.Sieve.Listen = append(d.Sieve.Listen, l)
		}
		files[SieveDir+"/junk.sieve"] = fmt.Appendf(nil, junkScript, sv.JunkFolder)
		if dv.SpamLearning {
			d.Sieve.Learning = path.Join(dv.ConfigDirectory, "sieve")
			files[SieveDir+"/report-spam.sieve"] = []byte(reportSpamScript)
			files[SieveDir+"/report-ham.sieve"] = []byte(reportHamScript)
			bin := "mailnode"
			if dv.MailnodePath != "" {
				bin = dv.MailnodePath
			}
			engine := "--spamd " + shellQuote(inv.Spam.SpamdAddress)
			if inv.Spam.Engine == "rspamd" {
				engine = "--rspamd " + shellQuote(inv.Spam.RspamdControllerURL)
			}
			files[SieveBinDir+"/mailnode-learn"] = fmt.Appendf(nil, learnWrapper, shellQuote(bin), engine)
		}
	}
	var imapPlugins []string
	if d.Quota != nil {
		imapPlugins = append(imapPlugins, "imap_quota")
	}
	if d.Sieve != nil && d.Sieve.Learning != "" {
		imapPlugins = append(imapPlugins, "imap_sieve")
	}
	d.IMAPPlugins = strings.Join(imapPlugins, " ")
	b, err := execute("dovecot.conf.tmpl", d)
	if err != nil {
		return err
	}
	files["dovecot/dovecot.conf"] = b

	var u bytes.Buffer
	u.WriteString("# Dovecot passwd-file: the inventory's mailboxes, login = full address.\n")
	u.WriteString(mapHeader)
	u.Grow(mailboxCount(inv) * 160)
	quota := inv.QuotaOn()
	for _, dom := range sortedDomains(inv.LocalDomains()) {
		ms := append([]inventory.Mailbox(nil), dom.Mailboxes...)
		sort.Slice(ms, func(i, j int) bool { return ms[i].User < ms[j].User })
		for _, m := range ms {
			u.WriteString(m.User)
			u.WriteByte('@')
			u.WriteString(dom.Name)
			u.WriteByte(':')
			u.WriteString(m.Password)
			if quota {
				// The userdb too: passwd-file's user:password:uid:gid:gecos:home:shell:extra,
				// where an empty uid, gid and home take userdb's default_fields.
				u.WriteString("::::::")
				if m.Quota != "" {
					u.WriteString("userdb_quota_rule=*:storage=" + inv.MailboxQuota(m))
				}
			}
			u.WriteByte('\n')
		}
	}
	files["dovecot/users"] = u.Bytes()
	return nil
}

// mailHome derives the users' home from mail_location
// ("maildir:/var/vmail/%d/%n:LAYOUT=fs" -> "/var/vmail/%d/%n").
func mailHome(loc string) string {
	_, rest, ok := strings.Cut(loc, ":")
	if !ok {
		return ""
	}
	p, _, _ := strings.Cut(rest, ":")
	if !strings.HasPrefix(p, "/") {
		return ""
	}
	return p
}

// listeners turns Dovecot listen specs ("143", "127.0.0.1:10143",
// "[::1]:143") into inet_listener blocks. No specs: the standard port and,
// with TLS, the implicit-TLS port.
func listeners(proto string, specs []string, port, tlsPort string, tls bool) ([]listener, error) {
	if len(specs) == 0 {
		l := []listener{{Name: proto, Port: port}}
		if tls {
			l = append(l, listener{Name: proto + "s", Port: tlsPort, SSL: true})
		}
		return l, nil
	}
	var out []listener
	for i, s := range specs {
		l, err := listenerAt(proto, s)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			l.Name = fmt.Sprintf("%s%d", proto, i+1)
		}
		out = append(out, l)
	}
	// Dovecot's built-in imaps/pop3s listener (993/995 on every address)
	// stays unless it is named and given port 0: with explicit listeners
	// only those are opened.
	if !slices.ContainsFunc(out, func(l listener) bool { return l.Name == proto+"s" }) {
		out = append(out, listener{Name: proto + "s", Port: "0"})
	}
	return out, nil
}

// listenerAt reads one listen spec, "PORT" or "HOST:PORT".
func listenerAt(proto, s string) (listener, error) {
	l := listener{Name: proto, Port: s}
	if strings.Contains(s, ":") {
		h, p, err := net.SplitHostPort(s)
		if err != nil {
			field := "dovecot." + proto + "_listen"
			if proto == "sieve" {
				field = "dovecot.sieve.listen"
			}
			return listener{}, fmt.Errorf("render: %s: %q is not PORT or HOST:PORT", field, s)
		}
		l.Address, l.Port = h, p
	}
	return l, nil
}

func renderUnbound(inv *inventory.Inventory, files Files) error {
	h, p, err := net.SplitHostPort(inv.Node.Resolver)
	if err != nil {
		return fmt.Errorf("render: node.resolver: %w", err)
	}
	b, err := execute("unbound.conf.tmpl", struct{ Hostname, Interface, Port, AnchorFile, RootKeyFile string }{
		inv.Node.Hostname, h, p, inv.Node.ResolverAnchorFile, inventory.RootKeyFile})
	if err != nil {
		return err
	}
	files["unbound/unbound.conf"] = b
	return nil
}

// renderSASLPasswd writes the smarthost password map from
// postfix.relayhost_auth, reading the password file now: the password is in
// this file only, never in main.cf, a log line or an error.
func renderSASLPasswd(inv *inventory.Inventory, files Files) error {
	var b bytes.Buffer
	b.WriteString(mapHeader)
	b.WriteString("# The login at the smarthost (postfix.relayhost_auth). Mode 0600.\n")
	if a := inv.Postfix.RelayhostAuth; a != nil {
		pw, err := inventory.ReadRelayhostPassword(a.PasswordFile)
		if err != nil {
			return fmt.Errorf("render: postfix.relayhost_auth.password_file: %w", err)
		}
		b.WriteString(inv.Postfix.Relayhost + " " + a.Username + ":" + pw + "\n")
	}
	files[SASLPasswd] = b.Bytes()
	return nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// srsGate passes on to the next table only an address that begins as an
// SRS address does (SRS0 or SRS1 and a separator, in any case), unchanged;
// anything else is not found. "$$" is main.cf's spelling of "$".
const srsGate = "regexp:{{/^(srs[01][-+=].*)/ $${1}}}"

// srsMap is the reversal table of virtual_alias_maps: milterd's socketmap
// behind srsGate in a pipemap, so that Postfix asks milterd only about
// SRS-shaped addresses and not about every recipient it validates (smtpd)
// and expands (cleanup). The socket path is absolute: no service is
// chrooted, and postmap -q works from anywhere.
func srsMap(inv *inventory.Inventory) string {
	return "pipemap:{" + srsGate + ", socketmap:unix:" + inv.SRSSocket() + ":" + inventory.SRSMapName + "}"
}
