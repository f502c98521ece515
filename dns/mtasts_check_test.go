package dns_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/mailnode/mailnode/dns"
	"github.com/mailnode/mailnode/dns/dnstest"
	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/render"
)

// policyWeb is the HTTPS server of the tests' mta-sts.<domain> hosts: it
// serves the policy files render-config wrote, under a certificate of a
// CA of the test's own, and the checker's Dial sends every connection for
// port 443 to it (nothing leaves the machine).
type policyWeb struct {
	srv   *httptest.Server
	pool  *x509.CertPool
	mu    sync.Mutex
	files map[string]string // host -> body
	ctype string
	dials []string
}

func startPolicyWeb(t *testing.T, inv *inventory.Inventory, names ...string) *policyWeb {
	t.Helper()
	files, err := render.Render(inv)
	if err != nil {
		t.Fatal(err)
	}
	w := &policyWeb{files: map[string]string{}, ctype: "text/plain"}
	for _, d := range inv.LocalDomains() {
		if b, ok := files[dns.PolicyPath(d.Name)]; ok {
			w.files["mta-sts."+d.Name] = string(b)
			names = append(names, "mta-sts."+d.Name)
		}
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dns test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2),
		Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
		ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	w.pool = x509.NewCertPool()
	w.pool.AddCert(ca)
	w.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.mu.Lock()
		body, ok := w.files[r.Host]
		ctype := w.ctype
		w.mu.Unlock()
		if !ok || r.URL.Path != "/.well-known/mta-sts.txt" {
			http.NotFound(rw, r)
			return
		}
		rw.Header().Set("Content-Type", ctype)
		rw.Write([]byte(body))
	}))
	w.srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	w.srv.StartTLS()
	t.Cleanup(w.srv.Close)
	return w
}

func (w *policyWeb) set(host, body string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.files[host] = body
}

// dial connects every port-443 address to the server and refuses the rest.
func (w *policyWeb) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	w.mu.Lock()
	w.dials = append(w.dials, addr)
	w.mu.Unlock()
	if _, port, _ := net.SplitHostPort(addr); port != "443" {
		return nil, &net.OpError{Op: "dial", Net: network, Err: net.UnknownNetworkError("not port 443")}
	}
	return (&net.Dialer{}).DialContext(ctx, "tcp", w.srv.Listener.Addr().String())
}

func checkWith(inv *inventory.Inventory, s *dnstest.Server, w *policyWeb) dns.Report {
	c := &dns.Checker{Resolver: s.Addr, Timeout: 200 * time.Millisecond, Attempts: 2, AuthPort: s.Port(), RootCAs: w.pool, Dial: w.dial}
	domains := append(inv.LocalDomains(), inv.RelayDomains()...)
	return c.Run(context.Background(), inv, domains)
}

func result(rep dns.Report, domain, check string) dns.Result {
	for _, r := range rep.Results {
		if r.Domain == domain && r.Check == check {
			return r
		}
	}
	return dns.Result{}
}

// The published policy checks out from every address of mta-sts.<domain>,
// and each fault is its own finding.
func TestCheckMTASTS(t *testing.T) {
	inv := loadInventory(t)
	good := "version: STSv1\nmode: testing\nmx: mx1.example.com\nmax_age: 86400\n"
	for _, tc := range []struct {
		name   string
		break_ func(s *dnstest.Server, w *policyWeb) error
		check  string // the one failing (or warning) check; "" none
		status dns.Status
		detail string // in its Found or Detail
	}{
		{"published as rendered", func(*dnstest.Server, *policyWeb) error { return nil }, "", dns.StatusOK, ""},
		{"wildcard mx", func(_ *dnstest.Server, w *policyWeb) error {
			w.set("mta-sts.example.com", strings.Replace(good, "mx1.example.com", "*.example.com", 1))
			return nil
		}, "", dns.StatusOK, ""},
		{"no _mta-sts record", func(s *dnstest.Server, _ *policyWeb) error {
			s.Remove("_mta-sts.example.com.", mdns.TypeTXT)
			return nil
		}, "mta-sts", dns.StatusFail, "NXDOMAIN"},
		{"two _mta-sts records", func(s *dnstest.Server, _ *policyWeb) error {
			return s.Replace("_mta-sts.example.com.", `_mta-sts.example.com. 3600 IN TXT "v=STSv1; id=1"`, `_mta-sts.example.com. 3600 IN TXT "v=STSv1; id=2"`)
		}, "mta-sts", dns.StatusFail, "several records"},
		{"bad id", func(s *dnstest.Server, _ *policyWeb) error {
			return s.Replace("_mta-sts.example.com.", `_mta-sts.example.com. 3600 IN TXT "v=STSv1; id=not-alnum"`)
		}, "mta-sts", dns.StatusFail, "not 1 to 32 letters and digits"},
		{"old id", func(s *dnstest.Server, _ *policyWeb) error {
			return s.Replace("_mta-sts.example.com.", `_mta-sts.example.com. 3600 IN TXT "v=STSv1; id=20260101"`)
		}, "mta-sts", dns.StatusWarn, "not the rendered policy's"},
		{"policy not served", func(_ *dnstest.Server, w *policyWeb) error {
			w.set("mta-sts.example.com", "")
			w.mu.Lock()
			delete(w.files, "mta-sts.example.com")
			w.mu.Unlock()
			return nil
		}, "mta-sts-policy", dns.StatusFail, "HTTP 404"},
		{"not text/plain", func(_ *dnstest.Server, w *policyWeb) error {
			w.ctype = "text/html"
			return nil
		}, "mta-sts-policy", dns.StatusFail, `Content-Type "text/html"`},
		{"too large", func(_ *dnstest.Server, w *policyWeb) error {
			w.set("mta-sts.example.com", good+strings.Repeat("x: y\n", 14000))
			return nil
		}, "mta-sts-policy", dns.StatusFail, "larger than 65536 bytes"},
		{"malformed", func(_ *dnstest.Server, w *policyWeb) error {
			w.set("mta-sts.example.com", "version: STSv1\nmode: sometimes\nmx: mx1.example.com\nmax_age: 86400\n")
			return nil
		}, "mta-sts-policy", dns.StatusFail, `mode "sometimes"`},
		{"mode and max_age not the inventory's", func(_ *dnstest.Server, w *policyWeb) error {
			w.set("mta-sts.example.com", "version: STSv1\nmode: enforce\nmx: mx1.example.com\nmax_age: 600\n")
			return nil
		}, "mta-sts-policy", dns.StatusFail, "mode enforce, the inventory says testing; max_age 600, the inventory says 86400"},
		{"an MX the policy does not cover", func(s *dnstest.Server, _ *policyWeb) error {
			return s.Replace("example.com.", "example.com. 3600 IN MX 10 mx1.example.com.", "example.com. 3600 IN MX 20 backup.example.org.")
		}, "mta-sts-policy", dns.StatusFail, "MX backup.example.org is matched by no mx line"},
		{"an mx line no MX uses", func(_ *dnstest.Server, w *policyWeb) error {
			w.set("mta-sts.example.com", strings.Replace(good, "max_age", "mx: old.example.com\nmax_age", 1))
			return nil
		}, "mta-sts-policy", dns.StatusFail, "mx old.example.com matches no MX record"},
		{"wildcard one label too deep", func(_ *dnstest.Server, w *policyWeb) error {
			w.set("mta-sts.example.com", strings.Replace(good, "mx1.example.com", "*.com", 1))
			return nil
		}, "mta-sts-policy", dns.StatusFail, "MX mx1.example.com is matched by no mx line"},
		{"mta-sts host on another address", func(s *dnstest.Server, _ *policyWeb) error {
			return s.Replace("mta-sts.example.com.", "mta-sts.example.com. 3600 IN A 198.51.100.7", "mta-sts.example.com. 3600 IN AAAA 2001:db8::10")
		}, "name:mta-sts", dns.StatusFail, "198.51.100.7"},
		{"no TLS-RPT record", func(s *dnstest.Server, _ *policyWeb) error {
			s.Remove("_smtp._tls.example.com.", mdns.TypeTXT)
			return nil
		}, "tlsrpt", dns.StatusFail, "NXDOMAIN"},
		{"TLS-RPT to someone else", func(s *dnstest.Server, _ *policyWeb) error {
			return s.Replace("_smtp._tls.example.com.", `_smtp._tls.example.com. 3600 IN TXT "v=TLSRPTv1; rua=mailto:reports@example.org"`)
		}, "tlsrpt", dns.StatusFail, "reports go to mailto:reports@example.org, not to the inventory's mailto:postmaster@example.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := serve(t, inv)
			w := startPolicyWeb(t, inv)
			if err := tc.break_(s, w); err != nil {
				t.Fatal(err)
			}
			rep := checkWith(inv, s, w)
			var odd []string
			for _, r := range rep.Results {
				if r.Status != dns.StatusOK {
					odd = append(odd, r.Domain+" "+r.Check)
				}
			}
			want := []string{}
			if tc.check != "" {
				want = append(want, "example.com "+tc.check)
			}
			if !slices.Equal(append([]string{}, odd...), want) {
				t.Fatalf("checks not ok: %q, want %q:\n%s", odd, want, dump(rep))
			}
			if tc.check == "" {
				for _, c := range []string{"mta-sts", "name:mta-sts", "name:mta-sts/aaaa", "mta-sts-policy", "tlsrpt"} {
					if result(rep, "example.com", c).Status != dns.StatusOK {
						t.Errorf("no ok %s check:\n%s", c, dump(rep))
					}
				}
				// Both addresses of mta-sts.example.com were asked.
				if !slices.Contains(w.dials, "203.0.113.10:443") || !slices.Contains(w.dials, "[2001:db8::10]:443") {
					t.Errorf("fetched from %q, want both addresses of mta-sts.example.com", w.dials)
				}
				if result(rep, "example.net", "mta-sts").Check != "" {
					t.Errorf("example.net has no mta_sts but was checked")
				}
				return
			}
			check := tc.check
			r := result(rep, "example.com", check)
			if r.Status != tc.status || !strings.Contains(r.Found+" "+r.Detail, tc.detail) {
				t.Errorf("%s: %s, found %q, detail %q; want %s saying %q", check, r.Status, r.Found, r.Detail, tc.status, tc.detail)
			}
		})
	}
}

// A certificate the checker does not trust is a failure, not a fetch.
func TestCheckMTASTSUntrusted(t *testing.T) {
	inv := loadInventory(t)
	s := serve(t, inv)
	w := startPolicyWeb(t, inv)
	w.pool = x509.NewCertPool() // trusts nothing
	r := result(checkWith(inv, s, w), "example.com", "mta-sts-policy")
	if r.Status != dns.StatusFail || !strings.Contains(r.Found, "certificate") {
		t.Errorf("untrusted server: %s %q", r.Status, r.Found)
	}
}

func TestMXMatches(t *testing.T) {
	for _, c := range []struct {
		pattern, host string
		want          bool
	}{
		{"mx1.example.com", "mx1.example.com.", true},
		{"MX1.Example.com", "mx1.example.com", true},
		{"*.example.com", "mx1.example.com", true},
		{"*.example.com", "a.b.example.com", false},
		{"*.example.com", "example.com", false},
		{"mx1.example.com", "mx2.example.com", false},
	} {
		if got := dns.MXMatches(c.pattern, c.host); got != c.want {
			t.Errorf("MXMatches(%q, %q) = %v", c.pattern, c.host, got)
		}
	}
}

func TestParseSTSRecord(t *testing.T) {
	for rec, want := range map[string]string{
		"v=STSv1; id=20160831085700Z":            "20160831085700Z",
		"v=STSv1;id=abc":                         "abc",
		"v=STSv1; id=" + strings.Repeat("a", 33): "",
		"v=STSv1; id=a-b":                        "",
		"v=STSv1":                                "",
		"v=STSv2; id=1":                          "",
	} {
		got, err := dns.ParseSTSRecord(rec)
		if got != want || (err == nil) != (want != "") {
			t.Errorf("ParseSTSRecord(%q) = %q, %v; want %q", rec, got, err, want)
		}
	}
}

func TestParsePolicy(t *testing.T) {
	p, err := dns.ParsePolicy("version: STSv1\r\nmode: enforce\r\nmx: MX1.example.com.\r\nmx: *.example.net\r\nmax_age: 604800\r\nextension: ignored\r\n")
	if err != nil || p.Mode != "enforce" || p.MaxAge != 604800 || strings.Join(p.MX, " ") != "mx1.example.com *.example.net" {
		t.Errorf("CRLF policy: %+v, %v", p, err)
	}
	for text, want := range map[string]string{
		"mode: enforce\nmx: a.example\nmax_age: 1\n":                        `version ""`,
		"version: STSv1\nmode: enforce\nmax_age: 1\n":                       "mode enforce without an mx line",
		"version: STSv1\nmode: none\nmax_age: 1\n":                          "",
		"version: STSv1\nmode: testing\nmx: a.example\n":                    "no max_age",
		"version: STSv1\nmode: testing\nmx: a.example\nmax_age: -1\n":       "max_age \"-1\"",
		"version: STSv1\nmode: testing\nmx: a.example\nmax_age: 99999999\n": "max_age \"99999999\"",
		"version: STSv1\ngarbage\n":                                         "is not \"key: value\"",
	} {
		_, err := dns.ParsePolicy(text)
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("ParsePolicy(%q): %v, want %q", text, err, want)
		}
	}
}
