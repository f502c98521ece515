package test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailnode/mailnode/dns/dnstest"
	"github.com/mailnode/mailnode/internal/testpeer"
	"github.com/mailnode/mailnode/render"
	"github.com/mailnode/mailnode/test/harness"
)

// testCA is a certificate authority of the test's own: Postfix and
// mta-sts-daemon are told to trust it, nothing else is.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mailnode test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue makes a server certificate for names, signed by the CA or by itself.
func (ca *testCA) issue(t *testing.T, selfSigned bool, names ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	parent, signer := ca.cert, ca.key
	if selfSigned {
		parent, signer = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// stsPeer is one outside domain of the test: its MX (a sink on port 25 of
// its own loopback address) and the MTA-STS policy it publishes.
type stsPeer struct {
	domain, mxAddr, mode string
	cert                 *tls.Certificate // STARTTLS certificate; nil: no STARTTLS
	sink                 *harness.Sink
}

// TestOutboundMTASTS: with postfix.outbound_tls: mta-sts, Postfix asks the
// real mta-sts-daemon (Debian's postfix-mta-sts-resolver, configured by
// the file render-config wrote) for each destination's policy, which the
// daemon finds through the test's DNS server (127.0.0.1:53, the
// namespace's resolv.conf) and fetches over HTTPS from a server with a
// certificate of the test's CA. A peer in mode enforce whose MX presents a
// certificate for its name gets the mail over verified TLS; one with a
// certificate for another name, a self-signed one or no STARTTLS gets
// nothing, not even in clear: the mail waits in the queue (4xx). A peer in
// mode testing gets it anyway.
func TestOutboundMTASTS(t *testing.T) {
	if _, err := exec.LookPath("mta-sts-daemon"); err != nil {
		testpeer.Missing(t, "mta-sts-daemon not installed (apt-get install postfix-mta-sts-resolver)")
	}
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	ca := newTestCA(t)
	caDir, err := os.MkdirTemp("", "mnsts")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(caDir) })
	os.Chmod(caDir, 0o755)
	caFile := filepath.Join(caDir, "ca.pem")
	if err := os.WriteFile(caFile, ca.pem, 0o644); err != nil {
		t.Fatal(err)
	}

	peers := []*stsPeer{
		{domain: "good.test", mxAddr: "127.0.0.25", mode: "enforce"},
		{domain: "wrongname.test", mxAddr: "127.0.0.26", mode: "enforce"},
		{domain: "selfsigned.test", mxAddr: "127.0.0.27", mode: "enforce"},
		{domain: "plain.test", mxAddr: "127.0.0.28", mode: "enforce"},
		{domain: "testing.test", mxAddr: "127.0.0.29", mode: "testing"},
		{domain: "nopolicy.test", mxAddr: "127.0.0.30"},
	}
	certs := map[string]tls.Certificate{
		"good.test":       ca.issue(t, false, "mx.good.test"),
		"wrongname.test":  ca.issue(t, false, "mx.elsewhere.test"),
		"selfsigned.test": ca.issue(t, true, "mx.selfsigned.test"),
		"testing.test":    ca.issue(t, true, "mx.testing.test"),
		"nopolicy.test":   ca.issue(t, false, "mx.nopolicy.test"),
	}
	const webAddr = "127.0.0.24"
	var zone strings.Builder
	var webNames []string
	for _, p := range peers {
		if c, ok := certs[p.domain]; ok {
			p.cert = &c
		}
		fmt.Fprintf(&zone, "%s 300 IN SOA ns.%s hostmaster.%s 1 3600 900 1209600 300\n", p.domain+".", p.domain+".", p.domain+".")
		fmt.Fprintf(&zone, "%s 300 IN MX 10 mx.%s\n", p.domain+".", p.domain+".")
		fmt.Fprintf(&zone, "mx.%s 300 IN A %s\n", p.domain+".", p.mxAddr)
		if p.mode != "" {
			fmt.Fprintf(&zone, "_mta-sts.%s 300 IN TXT \"v=STSv1; id=2026%s\"\n", p.domain+".", strings.ReplaceAll(p.domain, ".", ""))
			fmt.Fprintf(&zone, "mta-sts.%s 300 IN A %s\n", p.domain+".", webAddr)
			webNames = append(webNames, "mta-sts."+p.domain)
		}
	}
	// The namespace's resolv.conf names 127.0.0.1: Postfix's MX lookups
	// and the daemon's TXT and A lookups all come here.
	auth, err := dnstest.New("127.0.0.1:53")
	if err != nil {
		t.Fatalf("DNS server on 127.0.0.1:53 (the test namespace's resolver): %v", err)
	}
	t.Cleanup(auth.Close)
	if err := auth.Add(zone.String()); err != nil {
		t.Fatal(err)
	}

	// The peers' policies, over HTTPS with the test CA's certificate.
	policies := map[string]string{}
	for _, p := range peers {
		if p.mode != "" {
			policies["mta-sts."+p.domain] = fmt.Sprintf("version: STSv1\r\nmode: %s\r\nmx: mx.%s\r\nmax_age: 86400\r\n", p.mode, p.domain)
		}
	}
	webCert := ca.issue(t, false, webNames...)
	ln, err := tls.Listen("tcp", webAddr+":443", &tls.Config{Certificates: []tls.Certificate{webCert}})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	fetched := map[string]bool{}
	web := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := strings.Cut(r.Host, ":")
		body, ok := policies[host]
		if !ok || r.URL.Path != "/.well-known/mta-sts.txt" {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		fetched[host] = true
		mu.Unlock()
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte(body))
	})}
	go web.Serve(ln)
	t.Cleanup(func() { web.Close() })

	for _, p := range peers {
		opt := harness.SinkOptions{}
		if p.cert != nil {
			opt.TLS = &tls.Config{Certificates: []tls.Certificate{*p.cert}}
		}
		s, err := harness.StartSinkWith(p.mxAddr+":25", "", opt)
		if err != nil {
			t.Fatalf("sink for %s: %v", p.domain, err)
		}
		t.Cleanup(func() { s.Close() })
		p.sink = s
	}

	n := harness.StartNode(t, harness.Options{Edit: func(doc map[string]any) {
		harness.Set(doc, "postfix.outbound_tls", "mta-sts")
		harness.Set(doc, "postfix.main_cf", map[string]any{"smtp_tls_CAfile": caFile})
		harness.Set(doc, "policy.greylist.enabled", false)
	}})

	conf := filepath.Join(n.Dir, filepath.FromSlash(render.MTASTSResolverConfig))
	logFile := filepath.Join(n.Dir, "log", "mta-sts-daemon.log")
	daemon := exec.Command("mta-sts-daemon", "-c", conf, "-v", "debug", "-l", logFile)
	daemon.Env = append(os.Environ(), "SSL_CERT_FILE="+caFile)
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		daemon.Process.Kill()
		daemon.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logFile)
			t.Logf("mta-sts-daemon log:\n%s", b)
		}
	})
	if err := harness.WaitListening("inet:"+render.MTASTSResolverAddr, 20*time.Second); err != nil {
		t.Fatalf("mta-sts-daemon does not listen on %s: %v", render.MTASTSResolverAddr, err)
	}

	// Postfix's own view of the table, as smtp(8) asks it.
	table := "socketmap:inet:" + render.MTASTSResolverAddr + ":postfix"
	for domain, want := range map[string]string{
		"good.test":     "secure match=mx.good.test servername=hostname",
		"testing.test":  "",
		"nopolicy.test": "",
	} {
		out, err := exec.Command("postmap", "-c", n.PostfixConfig, "-q", domain, table).CombinedOutput()
		got := strings.TrimSpace(string(out))
		if want == "" && (err == nil || got != "") || want != "" && (err != nil || got != want) {
			t.Errorf("postmap -q %s %s: %q (%v), want %q", domain, table, got, err, want)
		}
	}

	ids := map[string]string{}
	for _, p := range peers {
		rcpt := "someone@" + p.domain
		msg, id := dkimTestMessage("alice@example.com", rcpt, "to "+p.domain, testBody)
		ids[p.domain] = id
		wantFinal(t, send(t, n.SMTP, harness.Envelope{LocalAddr: harness.TrustedClient, From: "alice@example.com", To: []string{rcpt}, Data: msg}))
	}

	for _, d := range []string{"good.test", "testing.test", "nopolicy.test"} {
		p := peerOf(peers, d)
		msgs, err := p.sink.Wait(1, harness.DeliveryTimeout)
		if err != nil || len(msgs) != 1 || !strings.Contains(string(msgs[0].Data), ids[d]) {
			t.Fatalf("%s: not delivered: %v\n%s", d, err, n.MailLog())
		}
	}
	n.WaitLog(t, "Verified TLS connection established to mx.good.test[127.0.0.25]:25")
	n.WaitLog(t, "Untrusted TLS connection established to mx.testing.test[127.0.0.29]:25")

	refused := map[string]string{
		"wrongname.test":  "Server certificate not verified",
		"selfsigned.test": "Server certificate not verified",
		"plain.test":      "TLS is required, but was not offered by host mx.plain.test[127.0.0.28]",
	}
	for d, why := range refused {
		n.WaitLog(t, "to=<someone@"+d+">")
		if log := n.MailLog(); !strings.Contains(log, why) {
			t.Errorf("%s: the mail log does not say %q", d, why)
		}
	}
	for _, line := range strings.Split(n.MailLog(), "\n") {
		for d := range refused {
			if strings.Contains(line, "to=<someone@"+d+">") && !strings.Contains(line, "status=deferred") {
				t.Errorf("%s: %s", d, line)
			}
		}
	}
	queued := queueJSON(t, n)
	for d := range refused {
		p := peerOf(peers, d)
		if got := len(p.sink.Messages()); got != 0 {
			t.Errorf("%s: the MX got %d messages without a verified certificate", d, got)
		}
		if c := p.sink.Counts(); c.ClearMail != 0 {
			t.Errorf("%s: MAIL was sent in clear %d times", d, c.ClearMail)
		}
		r, ok := queued["someone@"+d]
		if !ok {
			t.Errorf("%s: not in the queue (postqueue -j): %v", d, queued)
			continue
		}
		if !strings.Contains(r, "TLS") && !strings.Contains(r, "certificate") {
			t.Errorf("%s: queued with delay_reason %q", d, r)
		}
		t.Logf("%s: deferred: %s", d, r)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, p := range peers {
		if p.mode != "" && !fetched["mta-sts."+p.domain] {
			t.Errorf("the policy of %s was never fetched", p.domain)
		}
	}
}

func peerOf(peers []*stsPeer, domain string) *stsPeer {
	for _, p := range peers {
		if p.domain == domain {
			return p
		}
	}
	panic(domain)
}

// queueJSON returns each queued recipient's delay_reason (postqueue -j).
func queueJSON(t *testing.T, n *harness.Node) map[string]string {
	t.Helper()
	rs, _, err := n.QueueJSON()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range rs {
		got[r.Address] = r.DelayReason
	}
	return got
}

// servePolicies publishes the policy files render-config wrote under out
// (mta-sts/<domain>/.well-known/mta-sts.txt) the way the admin's web
// server does: HTTPS on port 443 of addrs (added to lo for the test), a
// certificate for every mta-sts.<domain> from a test CA, which processes
// started afterwards trust (SSL_CERT_FILE). It returns the hosts served.
func servePolicies(t *testing.T, out string, addrs ...string) []string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(out, "mta-sts", "*", ".well-known", "mta-sts.txt"))
	if len(files) == 0 {
		t.Fatalf("render-config wrote no policy under %s/mta-sts", out)
	}
	policies := map[string][]byte{}
	var hosts []string
	for _, f := range files {
		domain := filepath.Base(filepath.Dir(filepath.Dir(f)))
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		policies["mta-sts."+domain] = b
		hosts = append(hosts, "mta-sts."+domain)
	}
	ca := newTestCA(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, ca.pem, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SSL_CERT_FILE", caFile)
	cert := ca.issue(t, false, hosts...)
	web := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := policies[strings.ToLower(r.Host)]
		if !ok || r.URL.Path != "/.well-known/mta-sts.txt" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write(body)
	})}
	t.Cleanup(func() { web.Close() })
	for _, a := range addrs {
		prefix := a + "/32"
		if strings.Contains(a, ":") {
			prefix = a + "/128"
		}
		args := []string{"addr", "add", prefix, "dev", "lo"}
		if strings.Contains(a, ":") {
			args = append(args, "nodad")
		}
		if o, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, o)
		}
		t.Cleanup(func() { exec.Command("ip", "addr", "del", prefix, "dev", "lo").Run() })
		ln, err := tls.Listen("tcp", "["+a+"]:443", &tls.Config{Certificates: []tls.Certificate{cert}})
		if err != nil {
			t.Fatal(err)
		}
		go web.Serve(ln)
	}
	return hosts
}
