package main

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/test/harness"
)

// The rspamd stack: Postfix with Debian's rspamd 3.4 as its one milter,
// doing what mailnode does with its own modules, on a private Redis:
//
//   - the proxy worker in milter mode scanning by itself (self_scan), one
//     process per CPU, on a unix socket in Postfix's private/ directory;
//   - dkim_signing with the node's RSA and Ed25519 keys (one signature
//     each) for mail from node.trusted_networks (local_addrs, sign_local)
//     or authenticated users;
//   - greylist and ratelimit on the Redis (rates far above the load, like
//     mailnode's), every other module at its default, which includes the
//     DKIM, SPF and DMARC checks and the spam rules of the outside path;
//   - milter_headers adding Authentication-Results, as milterd does;
//   - DNS asked of the namespace's server (127.0.0.1:53) only.
//
// The configuration is the packaged /etc/rspamd/rspamd.conf with
// LOCAL_CONFDIR, DBDIR, RUNDIR and LOGDIR pointed at a private tree whose
// local.d/ carries only the overrides below (rspamd's own way to configure it).

// rspamdUpstream keeps Debian's proxy layout (-rspamd-upstream), to
// compare it with the self-scanning proxies.
var rspamdUpstream bool

// rspamdUser is the account Debian's package runs rspamd as.
const rspamdUser = "_rspamd"

// startRspamd starts redis-server and rspamd for s and returns the main.cf
// settings that wire rspamd in as smtpd_milters and non_smtpd_milters.
func (s *stack) startRspamd() ([]string, error) {
	dir := filepath.Join(s.node.Dir, "rspamd")
	for _, d := range []string{"local.d", "db", "run", "log", "dkim", "redis"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	port, err := harness.FreePort()
	if err != nil {
		return nil, err
	}
	redis := "127.0.0.1:" + strconv.Itoa(port)
	pid, err := s.startExtra("redis", dir, "inet:"+redis, "/usr/bin/redis-server",
		"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--save", "", "--appendonly", "no",
		"--dir", filepath.Join(dir, "redis"), "--daemonize", "no", "--logfile", "")
	if err != nil {
		return nil, err
	}
	s.daemons["redis"] = pid
	s.redis = redis

	sock := filepath.Join(s.node.Inv.Postfix.QueueDirectory, "private", "rspamd")
	files, err := s.rspamdConfig(dir, redis, sock)
	if err != nil {
		return nil, err
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, "local.d", name), []byte(body), 0o644); err != nil {
			return nil, err
		}
	}
	if out, err := exec.Command("chown", "-R", rspamdUser+":"+rspamdUser, dir).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("chown %s: %v: %s", dir, err, out)
	}
	pid, err = s.startExtra("rspamd", dir, "unix:"+sock, "/usr/bin/rspamd", "-f",
		"-u", rspamdUser, "-g", rspamdUser, "-c", "/etc/rspamd/rspamd.conf",
		"--var=LOCAL_CONFDIR="+dir, "--var=DBDIR="+filepath.Join(dir, "db"),
		"--var=RUNDIR="+filepath.Join(dir, "run"), "--var=LOGDIR="+filepath.Join(dir, "log"))
	if err != nil {
		b, _ := os.ReadFile(filepath.Join(dir, "log", "rspamd.log"))
		return nil, fmt.Errorf("%w\n%.3000s", err, b)
	}
	s.daemons["rspamd"] = pid
	return []string{
		"smtpd_milters = unix:" + sock,
		"non_smtpd_milters = unix:" + sock,
		"milter_default_action = tempfail",
		"milter_protocol = 6",
	}, nil
}

// rspamdConfig returns the files of local.d/ by name. The DKIM keys are
// copied into dir/dkim in the formats rspamd reads: PEM for RSA, base64 of
// the 64-byte private key for Ed25519 (what `rspamadm dkim_keygen -t
// ed25519` writes).
func (s *stack) rspamdConfig(dir, redis, sock string) (map[string]string, error) {
	d := s.node.Inv.LocalDomains()[0]
	var sels []string
	for _, k := range d.DKIM {
		key, err := dkim.LoadKey(dkim.KeyPath(s.node.Inv.DKIM.KeyDir, d.Name, k.Selector), k.Algorithm)
		if err != nil {
			return nil, err
		}
		var data []byte
		switch k := key.(type) {
		case ed25519.PrivateKey:
			data = []byte(base64.StdEncoding.EncodeToString(k) + "\n")
		default:
			der, err := x509.MarshalPKCS8PrivateKey(k)
			if err != nil {
				return nil, err
			}
			data = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		}
		path := filepath.Join(dir, "dkim", d.Name+"."+k.Selector+".key")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, err
		}
		sels = append(sels, fmt.Sprintf("      { path = %q; selector = %q; }", path, k.Selector))
	}
	trusted := make([]string, len(s.node.Inv.Node.TrustedNetworks))
	for i, n := range s.node.Inv.Node.TrustedNetworks {
		trusted[i] = strconv.Quote(n)
	}
	// The proxy scans by itself, one process per CPU; with
	// -rspamd-upstream it keeps the package's layout instead (one proxy
	// handing every message to the normal workers over HTTP).
	proxy := fmt.Sprintf("bind_socket = \"%s mode=0666\";\nmilter = yes;\ncount = %d;\n"+
		"upstream \"local\" {\n  default = yes;\n  self_scan = yes;\n}\n", sock, runtime.NumCPU())
	if rspamdUpstream {
		proxy = fmt.Sprintf("bind_socket = \"%s mode=0666\";\n", sock)
	}
	return map[string]string{
		"options.inc":      fmt.Sprintf("local_addrs = [%s];\ndns {\n  nameserver = [\"127.0.0.1:53\"];\n}\n", strings.Join(trusted, ", ")),
		"logging.inc":      "level = \"warning\";\n",
		"redis.conf":       fmt.Sprintf("servers = %q;\n", redis),
		"worker-proxy.inc": proxy,
		"dkim_signing.conf": fmt.Sprintf("sign_local = true;\nsign_authenticated = true;\n"+
			"domain {\n  %s {\n    selectors = [\n%s\n    ];\n  }\n}\n", d.Name, strings.Join(sels, ",\n")),
		"greylist.conf":       "servers = \"" + redis + "\";\ntimeout = 1s;\n",
		"ratelimit.conf":      "rates {\n" + bucket("to") + bucket("to_ip") + bucket("to_ip_from") + bucket("user") + "}\n",
		"milter_headers.conf": "use = [\"authentication-results\"];\n",
	}, nil
}

// bucket is a ratelimit bucket far above the load: counted, never hit.
func bucket(name string) string {
	return "  " + name + " = { burst = 1000000000; rate = \"1000000000 / 1h\"; }\n"
}
