// Package opendkim writes the configuration of a private Debian OpenDKIM
// instance, the classic signing milter mailnode's milterd is measured
// against by `mailnode-bench milter` and by the end-to-end benchmark
// (test/e2ebench). Benchmark machinery, never imported by the product.
package opendkim

import (
	"fmt"
	"strings"
)

// Config describes a private Debian OpenDKIM instance (opendkim -f -x
// FILE) that signs for one domain with one key file: the classic stack that
// mailnode's milterd is measured against by `mailnode-bench milter` and by the
// end-to-end benchmark (test/e2ebench). Both write their opendkim.conf with
// String, so the two benchmarks measure the same OpenDKIM set-up.
type Config struct {
	Domain, Selector string
	KeyFile          string // PEM private key (dkim.KeyPath), RSA
	Socket           string // path of the milter's unix socket
	PidFile          string
	// Mode is OpenDKIM's Mode: "s" (sign), "v" (verify) or "sv"; "" means "s".
	Mode string
	// InternalHosts are the clients whose mail is signed; nil means 127.0.0.1.
	InternalHosts []string
	// UMask of the socket; "" means 007 (only root and its group connect;
	// 000 lets Postfix's unprivileged smtpd/cleanup connect).
	UMask string
	// Nameservers, when set, replace the resolver of Debian's libunbound
	// build (which would otherwise recurse from the root servers).
	Nameservers []string
	// UnsafeKeyPath turns off OpenDKIM's check that no directory above the
	// key file is writable by others (a private tree under /tmp fails it).
	UnsafeKeyPath bool
}

// String is the opendkim.conf text: relaxed/relaxed, rsa-sha256, the usual
// header set with From oversigned, no syslog.
func (c Config) String() string {
	mode, umask, hosts := c.Mode, c.UMask, c.InternalHosts
	if mode == "" {
		mode = "s"
	}
	if umask == "" {
		umask = "007"
	}
	if hosts == nil {
		hosts = []string{"127.0.0.1"}
	}
	conf := fmt.Sprintf(`Syslog no
Mode %s
Domain %s
Selector %s
KeyFile %s
Socket local:%s
UMask %s
Canonicalization relaxed/relaxed
SignatureAlgorithm rsa-sha256
SignHeaders From,To,Cc,Subject,Date,Message-ID,Reply-To,In-Reply-To,References,MIME-Version,Content-Type
OversignHeaders From
InternalHosts %s
PidFile %s
`, mode, c.Domain, c.Selector, c.KeyFile, c.Socket, umask, strings.Join(hosts, ","), c.PidFile)
	if len(c.Nameservers) > 0 {
		conf += "Nameservers " + strings.Join(c.Nameservers, ",") + "\n"
	}
	if c.UnsafeKeyPath {
		conf += "RequireSafeKeys false\n"
	}
	return conf
}
