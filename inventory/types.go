// Package inventory loads, validates and classifies the mail node's domain
// inventory: the one YAML file that render-config, policyd, milterd and the
// DNS tools all read. The field names here are the contract documented in
// docs/design.md; add fields, never rename them.
package inventory

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Inventory is the whole node description.
type Inventory struct {
	Node      Node     `yaml:"node"`
	Tier      Tier     `yaml:"tier"`
	Postfix   Postfix  `yaml:"postfix"`
	Policy    Policy   `yaml:"policy"`
	Milter    Milter   `yaml:"milter"`
	Dovecot   Dovecot  `yaml:"dovecot"`
	DKIM      DKIM     `yaml:"dkim"`
	Spam      Spam     `yaml:"spam"`
	UnixUsers []string `yaml:"unix_users"`
	// Forwarding says what is done to mail an alias or list forwards to
	// an address that leaves the node (ForwardsOutside).
	Forwarding Forwarding `yaml:"forwarding"`
	Domains    []Domain   `yaml:"domains"`

	// File is the path the inventory was loaded from ("" when parsed from memory).
	File string `yaml:"-"`
	// Digest is "sha256:<hex>" of the bytes it was parsed from (see Digest).
	Digest string `yaml:"-"`

	idx *index // built by Load after validation; used by Classify and friends

	mapped *mapping // the snapshot the address tables are read from (OpenSnapshot)
}

// Node describes the host itself.
type Node struct {
	Hostname        string   `yaml:"hostname"`
	Addresses       []string `yaml:"addresses"`
	TrustedNetworks []string `yaml:"trusted_networks"`
	Resolver        string   `yaml:"resolver"`
	// ResolverAnchorFile is the DNSSEC root trust anchor of the node's
	// unbound, an auto-trust-anchor-file (RFC 5011) that unbound keeps
	// current itself (DefaultResolverAnchorFile, Debian's).
	ResolverAnchorFile string `yaml:"resolver_anchor_file"`
	// Role is what the node is: RoleMailnode (default), the MX and
	// mailbox server of its local domains, or RoleNullClient, a host that
	// takes no mail from the network, delivers nothing itself and hands
	// every message to postfix.relayhost, signed by milterd.
	Role string `yaml:"role"`
}

// Tier is a mail tier: several functionally identical mail nodes behind
// one round-robin MX, all rendered from this one inventory. Empty: the
// inventory describes node.hostname alone.
type Tier struct {
	// Nodes are every node of the tier; each renders its own files
	// (render-config --node NAME) and the zone lists each as an MX of
	// equal preference.
	Nodes []TierNode `yaml:"nodes"`
}

// TierNode is one node of the tier.
type TierNode struct {
	Hostname  string   `yaml:"hostname"`
	Addresses []string `yaml:"addresses"`
}

// The values of node.role.
const (
	RoleMailnode   = "mailnode"
	RoleNullClient = "nullclient"
)

// Roles are the values node.role accepts.
var Roles = []string{RoleMailnode, RoleNullClient}

// NullClient reports whether node.role is nullclient.
func (inv *Inventory) NullClient() bool { return inv.Node.Role == RoleNullClient }

// Postfix holds the installed Postfix paths and listeners.
type Postfix struct {
	ConfigDirectory  string   `yaml:"config_directory"`
	QueueDirectory   string   `yaml:"queue_directory"`
	DataDirectory    string   `yaml:"data_directory"`
	SMTPListen       []string `yaml:"smtp_listen"`
	SubmissionListen []string `yaml:"submission_listen"`
	// SubmissionsListen are the implicit-TLS submission services (RFC
	// 8314, port 465): default ["465"] when a certificate is configured,
	// none without one.
	SubmissionsListen []string `yaml:"submissions_listen"`
	TLS               TLS      `yaml:"tls"`
	Relayhost         string   `yaml:"relayhost"`
	// InetInterfaces overrides Postfix's inet_interfaces (default "all");
	// private test instances use "127.0.0.1".
	InetInterfaces string `yaml:"inet_interfaces"`
	// InetProtocols overrides Postfix's inet_protocols (default "all").
	InetProtocols string `yaml:"inet_protocols"`
	// MaillogFile makes Postfix log to a file (postlog) instead of syslog.
	MaillogFile string `yaml:"maillog_file"`
	// InstanceName sets multi_instance_name, which prefixes log lines.
	InstanceName string `yaml:"instance_name"`
	// MailSpoolDirectory is where local(8) writes the unix users' mailboxes
	// (mail_spool_directory, default /var/mail); private test instances
	// point it into their own tree.
	MailSpoolDirectory string `yaml:"mail_spool_directory"`
	// MessageSizeLimit is Postfix's message_size_limit in bytes (default
	// 10240000, Postfix's own); local(8)'s mailbox_size_limit follows it.
	MessageSizeLimit int64 `yaml:"message_size_limit"`
	// RecipientDelimiter is Postfix's recipient_delimiter: bob+news@
	// reaches bob@ ("" off). Every character is a delimiter.
	RecipientDelimiter string `yaml:"recipient_delimiter"`
	// RelayhostAuth is the SASL login at the smarthost (nil: none).
	RelayhostAuth *RelayhostAuth `yaml:"relayhost_auth"`
	// RelayhostTLS is the TLS level towards the smarthost: may, encrypt,
	// verify or secure (default encrypt with RelayhostAuth, else Postfix's
	// smtp_tls_security_level).
	RelayhostTLS string `yaml:"relayhost_tls"`
	// OutboundTLS is how the TLS of the peers the node sends to is
	// enforced: OutboundMay (default, opportunistic), OutboundDANE or
	// OutboundMTASTS.
	OutboundTLS string `yaml:"outbound_tls"`
	// MainCF are extra main.cf settings, applied last; the parameters
	// mailnode owns (OwnedMainCF) are refused.
	MainCF map[string]string `yaml:"main_cf"`
}

// RelayhostAuth is the smarthost login. The password lives in its own file
// (root-only), read by render-config into a 0600 map; the inventory, which
// the daemons read too, never holds it.
type RelayhostAuth struct {
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
}

// TLS names the certificate Postfix and Dovecot present.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Policy configures policyd.
type Policy struct {
	// Enabled, when explicitly false, leaves check_policy_service out of
	// main.cf. Postfix alone still refuses relaying; only the 550 texts of the
	// matrix are lost. Default true.
	Enabled     *bool  `yaml:"enabled"`
	Listen      string `yaml:"listen"`
	SenderLogin string `yaml:"sender_login"`
	// Mode is enforce (default) or shadow: both daemons decide and log
	// what they would refuse (would_reject=) but refuse nothing themselves.
	Mode          string     `yaml:"mode"`
	Greylist      *Greylist  `yaml:"greylist"`
	Ratelimit     *Ratelimit `yaml:"ratelimit"`
	State         State      `yaml:"state"`
	MetricsListen string     `yaml:"metrics_listen"`
}

// The values of policy.mode.
const (
	ModeEnforce = "enforce" // the daemons refuse what the contract refuses
	ModeShadow  = "shadow"  // they decide and log "would reject", and refuse nothing
)

// Shadow reports whether policy.mode is shadow.
func (p *Policy) Shadow() bool { return p.Mode == ModeShadow }

// Greylist holds postgrey-like greylisting settings; absent means off.
type Greylist struct {
	Enabled            bool     `yaml:"enabled"`
	Delay              Duration `yaml:"delay"`
	RetryWindow        Duration `yaml:"retry_window"`
	AutoWhitelistAfter int      `yaml:"auto_whitelist_after"`
	Expire             Duration `yaml:"expire"`
	WhitelistClients   []string `yaml:"whitelist_clients"`
	WhitelistSenders   []string `yaml:"whitelist_senders"`
}

// Ratelimit holds per-sender limits for authorized senders; absent means none.
type Ratelimit struct {
	MessagesPerHour   int               `yaml:"messages_per_hour"`
	RecipientsPerHour int               `yaml:"recipients_per_hour"`
	Overrides         map[string]Limits `yaml:"overrides"`
}

// Limits is one override entry of Ratelimit.
type Limits struct {
	MessagesPerHour   int `yaml:"messages_per_hour"`
	RecipientsPerHour int `yaml:"recipients_per_hour"`
}

// State selects where policyd keeps greylist and rate state.
type State struct {
	Backend string `yaml:"backend"`
	Path    string `yaml:"path"`
	URL     string `yaml:"url"`
	// Sentinel, with backend redis and instead of URL, finds the Redis
	// master through Redis Sentinel and follows it across a failover.
	Sentinel *Sentinel `yaml:"sentinel"`
}

// Sentinel names a Redis master watched by Redis Sentinel.
type Sentinel struct {
	Master    string   `yaml:"master"`    // the name the sentinels monitor
	Addresses []string `yaml:"addresses"` // sentinels, host:port; any one that answers will do
	// PasswordFile holds the password of the Redis master and replicas
	// (requirepass), on its first line; "" means none. Never inline.
	PasswordFile string `yaml:"password_file"`
}

// Equal reports whether two state selections are the same.
func (s State) Equal(o State) bool {
	if s.Backend != o.Backend || s.Path != o.Path || s.URL != o.URL || (s.Sentinel == nil) != (o.Sentinel == nil) {
		return false
	}
	if s.Sentinel == nil {
		return true
	}
	a, b := s.Sentinel, o.Sentinel
	return a.Master == b.Master && a.PasswordFile == b.PasswordFile && slices.Equal(a.Addresses, b.Addresses)
}

// Milter configures milterd.
type Milter struct {
	// Enabled, when explicitly false, leaves smtpd_milters and
	// non_smtpd_milters out of main.cf (no signing). Default true.
	Enabled *bool  `yaml:"enabled"`
	Listen  string `yaml:"listen"`
	// MetricsListen is HOST:PORT serving milterd's Prometheus /metrics and
	// /healthz; empty (the default) serves none.
	MetricsListen string `yaml:"metrics_listen"`
}

// Dovecot holds the installed Dovecot paths.
type Dovecot struct {
	ConfigDirectory string `yaml:"config_directory"`
	BaseDir         string `yaml:"base_dir"`
	SASLSocket      string `yaml:"sasl_socket"`
	LMTPSocket      string `yaml:"lmtp_socket"`
	MailUser        string `yaml:"mail_user"`
	MailLocation    string `yaml:"mail_location"`
	// IMAPListen and POP3Listen are Dovecot listen specs ("143", "127.0.0.1:10143");
	// empty lists use the standard ports on all addresses.
	IMAPListen []string `yaml:"imap_listen"`
	POP3Listen []string `yaml:"pop3_listen"`
	// LogPath sends Dovecot's log to a file instead of syslog.
	LogPath string `yaml:"log_path"`
	// Sieve turns on Pigeonhole: mail milterd marked as spam
	// (X-Spam-Status: Yes) is filed into the Junk folder, and users manage
	// their own scripts over ManageSieve. nil: no Sieve.
	Sieve *Sieve `yaml:"sieve"`
	// Quota is the storage limit of every mailbox ("1G", "500M", "100k");
	// mailboxes[].quota overrides it; "" means none. Over quota, Postfix
	// refuses the recipient at RCPT with 552 5.2.2 (Dovecot's
	// quota-status service).
	Quota string `yaml:"quota"`
	// SpamLearning trains the spam engine from the users' moves (needs
	// Sieve and spam.engine rspamd or spamd): a message moved into the
	// Junk folder is learned as spam, one moved out of it as ham
	// (IMAPSieve runs `mailnode learn`).
	SpamLearning bool `yaml:"spam_learning"`
	// MailnodePath is the mailnode binary the learning rules run; ""
	// finds it in /usr/local/bin or /usr/bin.
	MailnodePath string `yaml:"mailnode_path"`
}

// Sieve configures Pigeonhole (dovecot.sieve).
type Sieve struct {
	// JunkFolder is where mail tagged as spam is filed (default Junk);
	// it is created on demand and subscribed.
	JunkFolder string `yaml:"junk_folder"`
	// Listen are the ManageSieve listen specs ("4190", "127.0.0.1:4190");
	// default ["4190"] on every address.
	Listen []string `yaml:"listen"`
}

// DKIM configures where private keys live.
type DKIM struct {
	KeyDir string `yaml:"key_dir"`
}

// Spam configures the spam gate of milterd.
type Spam struct {
	Engine      string  `yaml:"engine"`
	TagScore    float64 `yaml:"tag_score"`
	RejectScore float64 `yaml:"reject_score"`
	SubjectTag  string  `yaml:"subject_tag"`
	RspamdURL   string  `yaml:"rspamd_url"`
	// RspamdControllerURL is rspamd's controller worker, where
	// dovecot.spam_learning sends what users move (default: rspamd_url's
	// host, port 11334).
	RspamdControllerURL string   `yaml:"rspamd_controller_url"`
	SpamdAddress        string   `yaml:"spamd_address"`
	DNSBL               []string `yaml:"dnsbl"`
	OnEngineFailure     string   `yaml:"on_engine_failure"`
	// Quarantine, when true, holds instead of rejecting: a message at or
	// above reject_score, or failing a DMARC p=reject policy, is accepted
	// into Postfix's hold queue (postsuper -r to release) rather than
	// refused with 550. Default false.
	Quarantine bool `yaml:"quarantine"`
	// Antivirus, when present, has milterd scan mail with a virus scanner;
	// absent: no scan.
	Antivirus *Antivirus `yaml:"antivirus"`
}

// Antivirus configures milterd's virus scan (spam.antivirus).
type Antivirus struct {
	// Engine is the scanner: clamd (the only one, and the default).
	Engine string `yaml:"engine"`
	// Address is clamd's socket: "unix:/path" or "host:port"; default
	// unix:/run/clamav/clamd.ctl (Debian's clamav-daemon).
	Address string `yaml:"address"`
	// OnFailure is what happens to a message when the scanner is down,
	// slow or answers an error: tempfail (default, 451 4.7.1: the sender
	// retries) or accept (the message goes on unscanned, logged and
	// counted as antivirus=error).
	OnFailure string `yaml:"on_failure"`
	// ScanOutbound, default true, scans the mail milterd signs as well
	// (authenticated, trusted and local submissions: outbound mail and
	// mail between the node's own users) besides the spam-checked inbound
	// mail; false scans inbound mail only.
	ScanOutbound *bool `yaml:"scan_outbound"`
}

// ScansOutbound reports spam.antivirus.scan_outbound (default true).
func (a *Antivirus) ScansOutbound() bool { return a.ScanOutbound == nil || *a.ScanOutbound }

// Domain is one local or relay domain.
type Domain struct {
	Name      string                `yaml:"name"`
	Class     string                `yaml:"class"`
	Nexthop   string                `yaml:"nexthop"`
	DKIM      []Selector            `yaml:"dkim"`
	Mailboxes []Mailbox             `yaml:"mailboxes"`
	Aliases   map[string]StringList `yaml:"aliases"`
	Lists     map[string]StringList `yaml:"lists"`
	// Recipients are, for a relay domain, the only local parts accepted
	// for it (relay_recipient_maps); none: every recipient.
	Recipients []string `yaml:"recipients"`
	// Transports are, for a local domain, addresses delivered to a next
	// hop of their own instead of a mailbox: local part -> "lmtp:[host]:port",
	// "smtp:[host]:port", "relay:...", "lmtp:unix:/path".
	Transports map[string]string `yaml:"transports"`
	// MTASTS, for a local domain, publishes an MTA-STS policy (RFC 8461)
	// naming every MX of the node or tier; nil: none.
	MTASTS *MTASTS `yaml:"mta_sts"`
	// TLSRPT, for a local domain, is the rua of its TLS-RPT record (RFC
	// 8460): mailto: and https: URIs, comma-separated; "": none.
	TLSRPT string `yaml:"tlsrpt"`
}

// MTASTS is a domain's published MTA-STS policy.
type MTASTS struct {
	// Mode is enforce, testing (default) or none.
	Mode string `yaml:"mode"`
	// MaxAge is the policy's max_age in seconds (default 86400; at most
	// 31557600, a year).
	MaxAge int `yaml:"max_age"`
}

// Forwarding is the forwarding section.
type Forwarding struct {
	// SRS rewrites the envelope sender of forwarded mail (default on).
	SRS *bool `yaml:"srs"`
	// ARC seals forwarded mail that milterd verified (default on).
	ARC *bool `yaml:"arc"`
	// SRSSecretFile holds the SRS secrets, one a line, the first making
	// addresses and every one verifying them (DefaultSRSSecretFile);
	// milterd reads it at start and on reload when SRSActive.
	SRSSecretFile string `yaml:"srs_secret_file"`
}

// SRSOn reports forwarding.srs (default true).
func (f Forwarding) SRSOn() bool { return f.SRS == nil || *f.SRS }

// ARCOn reports forwarding.arc (default true).
func (f Forwarding) ARCOn() bool { return f.ARC == nil || *f.ARC }

// Selector is one DKIM signing key of a domain.
type Selector struct {
	Selector  string `yaml:"selector"`
	Algorithm string `yaml:"algorithm"`
}

// Mailbox is one user with a mailbox on this node.
type Mailbox struct {
	User     string   `yaml:"user"`
	Password string   `yaml:"password"`
	Aliases  []string `yaml:"aliases"`
	// Quota overrides dovecot.quota for this mailbox ("2G", "100k").
	Quota string `yaml:"quota"`
}

// Address returns the mailbox's full address, which is also its SASL login.
func (m Mailbox) Address(domain string) string { return m.User + "@" + domain }

// StringList accepts either one scalar or a sequence of scalars.
type StringList []string

// UnmarshalYAML implements yaml.Unmarshaler.
func (s *StringList) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*s = StringList{n.Value}
		return nil
	case yaml.SequenceNode:
		var l []string
		if err := n.Decode(&l); err != nil {
			return err
		}
		*s = l
		return nil
	}
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: expected an address or a list of addresses", n.Line)}}
}

// Duration is a time.Duration written as "300s", "48h" or "35d".
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseDuration(n.Value)
	if err != nil {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %v", n.Line, err)}}
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration back in Go syntax.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// ParseDuration is time.ParseDuration plus a whole-day suffix "d".
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if strings.HasSuffix(s, "d") {
		var days int
		if _, err := fmt.Sscanf(s, "%dd", &days); err == nil && fmt.Sprintf("%dd", days) == s && days >= 0 {
			return time.Duration(days) * 24 * time.Hour, nil
		}
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (use e.g. 300s, 48h, 35d)", s)
	}
	if v < 0 {
		return 0, fmt.Errorf("negative duration %q", s)
	}
	return v, nil
}

// Class is the role a domain plays on this node.
type Class int

// The three domain classes of docs/design.md.
const (
	Outside Class = iota
	Local
	Relay
)

func (c Class) String() string {
	switch c {
	case Local:
		return "local"
	case Relay:
		return "relay"
	}
	return "outside"
}

// Auth tells how a client is authorized.
type Auth int

// Authorization states: none, SASL-authenticated, trusted network.
const (
	AuthNone Auth = iota
	AuthSASL
	AuthTrust
)

func (a Auth) String() string {
	switch a {
	case AuthSASL:
		return "auth"
	case AuthTrust:
		return "trust"
	}
	return "none"
}

// index is the derived lookup structure built after validation.
type index struct {
	classes map[string]Class   // ASCII domain -> class
	domains map[string]*Domain // ASCII domain -> domain
	trusted []netip.Prefix
	owners  *table          // SASL login (a mailbox address) -> addresses it may send as (strict); its keys are the mailboxes
	lists   *table          // list address -> expanded members
	virtual *table          // alias / list address -> targets (one level)
	routed  map[string]bool // address with a next hop of its own (domains[].transports)
	// forwards holds the alias and list addresses whose expansion reaches
	// an outside address (ForwardsOutside); kept by every Keep.
	forwards map[string]bool
	delim    string // postfix.recipient_delimiter
	// head is the block of a snapshot's head the domains and the sets
	// above were decoded from (their strings are parts of it); "" when
	// loaded from YAML. A reload whose head is the same shares them.
	head string
}

// listen returns the master.cf services of one postfix.*_listen field.
func (p *Postfix) listen(key string) []string {
	switch key {
	case "smtp_listen":
		return p.SMTPListen
	case "submission_listen":
		return p.SubmissionListen
	case "submissions_listen":
		return p.SubmissionsListen
	}
	return nil
}
