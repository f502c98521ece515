package milter

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailnode/mailnode/acl"
	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/srs"
)

// SRS (forwarding.srs, docs/design.md "Forwarded mail: SRS"): the
// envelope sender of a message an alias or list forwards off the node is
// rewritten, at the end of the message, into an SRS0 address of the
// forwarding alias's domain (ChangeFrom), so that the next hop checks SPF
// against this node rather than the original sender's domain. Bounces to
// such addresses come back to a local domain: Postfix asks milterd, over
// a socketmap listed in virtual_alias_maps (SRSMap), which original
// sender each one stands for. Only addresses whose hash verifies with one
// of the node's secrets and that have not expired are reversed; any other
// address of a local domain that looks like SRS is an unknown user
// (550 5.1.1 at RCPT).
//
// What is rewritten: a non-null envelope sender that is not of a local
// domain (the node's host name included), on a message that is accepted
// and has at least one recipient Inventory.ForwardsOutside. A local
// sender (authenticated, trusted or on the node), mail addressed to a
// relay or outside domain directly, and plain local delivery keep their
// sender. A milter acts on the whole message: when it also has local
// recipients, their copies carry the SRS sender too.

// SRS is the rewriting and the reversal for one inventory and one set of
// secrets; a Filter holds one (nil: SRS off).
type SRS struct {
	srs     *srs.SRS
	inv     *inventory.Inventory
	metrics *Metrics
	log     *slog.Logger
}

// LoadSRS reads forwarding.srs_secret_file when the inventory rewrites
// (inventory.SRSActive); it returns nil, nil when it does not. An error
// names the field and the file, so that milterd refuses to start (or to
// reload) until the secret is in place.
func LoadSRS(inv *inventory.Inventory) (*srs.SRS, error) {
	if !inv.SRSActive() {
		return nil, nil
	}
	s, err := srs.LoadFile(inv.Forwarding.SRSSecretFile)
	if err != nil {
		hint := ""
		if errors.Is(err, srs.ErrNoSecretFile) {
			hint = " (create it: umask 027; head -c 32 /dev/urandom | base64 > " + inv.Forwarding.SRSSecretFile +
				", readable by milterd's group; every node of a tier needs the same file; forwarding.srs: false turns SRS off)"
		}
		return nil, fmt.Errorf("forwarding.srs_secret_file: %w%s", err, hint)
	}
	return s, nil
}

// NewSRS returns the SRS of inv with the secrets of s, nil when SRS is
// off for inv or s is nil.
func NewSRS(inv *inventory.Inventory, s *srs.SRS) *SRS {
	if s == nil || !inv.SRSActive() {
		return nil
	}
	return &SRS{srs: s, inv: inv}
}

func (s *SRS) logger() *slog.Logger {
	if s.log != nil {
		return s.log
	}
	return slog.Default()
}

// Forward returns the SRS address the envelope sender of env is rewritten
// to, "" when it is left as it is; why says why not when a forwarding
// recipient was there but the sender cannot be rewritten.
func (s *SRS) Forward(env Envelope) (sender, why string) {
	if s == nil || acl.IsNullSender(env.Sender) {
		return "", ""
	}
	from := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(env.Sender), "<"), ">")
	at := strings.LastIndexByte(from, '@')
	if at < 0 || s.inv.Classify(from) == inventory.Local {
		return "", "" // unqualified: Postfix qualifies it with the node's name, a local sender
	}
	alias := ""
	for _, r := range env.RcptList {
		if s.inv.ForwardsOutside(r) {
			_, alias = inventory.SplitAddress(r)
			break
		}
	}
	if alias == "" {
		return "", ""
	}
	if !rewritable(from[:at], from[at+1:]) {
		return "", "sender not rewritable (quoted local part or address literal)"
	}
	out, err := s.srs.Forward(from, alias)
	if err != nil {
		return "", err.Error()
	}
	return out, ""
}

// rewritable reports whether an address can go into an SRS local part as
// it is: a local part of dot-atom text (or UTF-8, with SMTPUTF8) and a
// domain name. A quoted local part or an address literal cannot.
func rewritable(local, domain string) bool {
	if local == "" || domain == "" || len(local)+len(domain) > 900 {
		return false
	}
	for i := 0; i < len(local); i++ {
		c := local[i]
		if c >= 0x80 || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-/=?^_`{|}~.", c) >= 0 {
			continue
		}
		return false
	}
	for i := 0; i < len(domain); i++ {
		c := domain[i]
		if c >= 0x80 || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' {
			continue
		}
		return false
	}
	return true
}

// srsRewrite is the end-of-message hook: an accepted message whose
// sender SRS rewrites gets Result.Sender, and its decision records it.
func (t *Transaction) srsRewrite(res *Result) {
	if t.f.SRS == nil || res.Reject || res.TempFail {
		return
	}
	sender, why := t.f.SRS.Forward(t.env)
	switch {
	case sender != "":
		res.Sender = sender
		t.decision.SRS = sender
		t.f.Metrics.srsForward("rewritten")
	case why != "":
		t.decision.SRSSkipped = why
		t.f.Metrics.srsForward("not_rewritable")
	}
}

// srsAttrs adds the SRS fields of a decision to its log line.
func srsAttrs(attrs []slog.Attr, d Decision) []slog.Attr {
	if d.SRS != "" {
		attrs = append(attrs, slog.String("srs", d.SRS))
	}
	if d.SRSSkipped != "" {
		attrs = append(attrs, slog.String("srs_skipped", d.SRSSkipped))
	}
	return attrs
}

// The results of mailnode_milter_srs_lookups_total.
const (
	SRSReversed = "reversed"  // a valid SRS address of a local domain: the original address answered
	SRSNotSRS   = "not_srs"   // not an SRS address (rendered main.cf sends only SRS-shaped ones: postmap -q or another wiring)
	SRSForeign  = "foreign"   // an SRS address of a domain that is not local here
	SRSInvalid  = "invalid"   // malformed, or its hash verifies with no secret
	SRSExpired  = "expired"   // older than srs.MaxAge days
	srsMapError = "bad_query" // a map name other than reverse, or an unusable answer
)

// Lookup answers Postfix's socketmap request NAME KEY (SRSMap serves it):
// OK and the original address for a valid SRS address of a local domain,
// NOTFOUND for everything else, PERM for another map name.
func (s *SRS) Lookup(name, key string) (status, data string) {
	if name != inventory.SRSMapName {
		s.metrics.srsLookup(srsMapError)
		return srs.StatusPerm, "unknown map " + name
	}
	key = strings.TrimSpace(key)
	if !srs.IsSRS(key) {
		s.metrics.srsLookup(SRSNotSRS)
		return srs.StatusNotFound, ""
	}
	_, domain := inventory.SplitAddress(key)
	if d := s.inv.Domain(domain); d == nil || d.Class == "relay" {
		s.metrics.srsLookup(SRSForeign)
		return srs.StatusNotFound, ""
	}
	orig, err := s.srs.Reverse(key)
	if err != nil {
		result := SRSInvalid
		if errors.Is(err, srs.ErrExpired) {
			result = SRSExpired
		}
		s.metrics.srsLookup(result)
		s.logger().Info("milterd: srs address not reversed", "address", key, "result", result, "why", err.Error())
		return srs.StatusNotFound, ""
	}
	// One address, as Postfix takes the answer: a list (",") or white
	// space would add recipients. The hash makes this impossible for
	// addresses this node made; it guards secrets shared with others.
	if strings.ContainsAny(orig, ", \t\r\n\"<>()[]\\;:") || strings.LastIndexByte(orig, '@') <= 0 {
		s.metrics.srsLookup(srsMapError)
		s.logger().Warn("milterd: srs address reverses to something that is not one address", "address", key, "to", orig)
		return srs.StatusNotFound, ""
	}
	s.metrics.srsLookup(SRSReversed)
	s.logger().Info("milterd: srs address reversed", "address", key, "to", orig)
	return srs.StatusOK, orig
}

// SRSMap serves the reversal to Postfix on inventory.SRSSocket (a unix
// socket, mode 0660, group postfix, like the milter's) while SRS is on.
// Update follows reloads: it swaps the SRS that answers, opens the socket
// when SRS comes on or the socket moves, and closes it when SRS goes off.
type SRSMap struct {
	Log     *slog.Logger
	Metrics *Metrics
	// Listen is milterd's own socket when --listen moved it: the
	// socketmap goes beside it (inventory.SRSSocketBeside); "" means
	// milter.listen.
	Listen string

	mu     sync.Mutex
	cur    *SRS
	path   string
	server *srs.SocketmapServer
	done   chan struct{}
}

// Update makes s (with inv) the reversal served; s nil stops serving.
func (m *SRSMap) Update(inv *inventory.Inventory, s *srs.SRS) error {
	x := NewSRS(inv, s)
	if x != nil {
		x.metrics, x.log = m.Metrics, m.Log
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cur = x
	want := ""
	if x != nil {
		want = inv.SRSSocket()
		if m.Listen != "" {
			want = inv.SRSSocketBeside(m.Listen)
		}
	}
	if want == m.path {
		return nil
	}
	m.stop()
	if want == "" {
		return nil
	}
	ln, err := Listen("unix:" + want)
	if err != nil {
		return fmt.Errorf("srs socketmap: %w", err)
	}
	m.serve(ln, want)
	return nil
}

func (m *SRSMap) serve(ln net.Listener, path string) {
	m.server = &srs.SocketmapServer{Lookup: m.lookup, Log: m.Log}
	m.path, m.done = path, make(chan struct{})
	go func(s *srs.SocketmapServer, done chan struct{}) {
		defer close(done)
		if err := s.Serve(ln); err != nil && m.Log != nil {
			m.Log.Error("milterd: srs socketmap stopped", "err", err)
		}
	}(m.server, m.done)
}

func (m *SRSMap) lookup(name, key string) (string, string) {
	m.mu.Lock()
	cur := m.cur
	m.mu.Unlock()
	if cur == nil {
		return srs.StatusNotFound, ""
	}
	return cur.Lookup(name, key)
}

// stop closes the socket and its connections (m.mu held).
func (m *SRSMap) stop() {
	if m.server != nil {
		m.server.Close()
		<-m.done
	}
	m.server, m.path, m.done = nil, "", nil
}

// Path is the socket served, "" when none.
func (m *SRSMap) Path() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.path
}

// Close stops serving.
func (m *SRSMap) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stop()
	return nil
}

// srsMetrics are mailnode_milter_srs_*.
type srsMetrics struct {
	forwards *prometheus.CounterVec
	lookups  *prometheus.CounterVec
}

func newSRSMetrics(r *prometheus.Registry) *srsMetrics {
	m := &srsMetrics{
		forwards: zeroed(counterVec("mailnode_milter_srs_rewrites_total",
			"Forwarded messages by what SRS did to their envelope sender: rewritten (an SRS address of the forwarding alias's domain), or not_rewritable (a quoted local part or an address literal, left as it was).",
			"result"), "rewritten", "not_rewritable"),
		lookups: zeroed(counterVec("mailnode_milter_srs_lookups_total",
			"Postfix's lookups in the SRS socketmap (virtual_alias_maps, for SRS-shaped recipients) by result: reversed, not_srs, foreign (an SRS address of a domain not local here), invalid (malformed or forged), expired, bad_query.",
			"result"), SRSReversed, SRSNotSRS, SRSForeign, SRSInvalid, SRSExpired, srsMapError),
	}
	r.MustRegister(m.forwards, m.lookups)
	return m
}

func (m *Metrics) srsForward(result string) {
	if m != nil && m.srs != nil {
		m.srs.forwards.WithLabelValues(result).Inc()
	}
}

func (m *Metrics) srsLookup(result string) {
	if m != nil && m.srs != nil {
		m.srs.lookups.WithLabelValues(result).Inc()
	}
}
