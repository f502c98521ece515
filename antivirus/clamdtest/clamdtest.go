// Package clamdtest runs the real ClamAV clamd (Debian's clamav-daemon)
// for tests and the benchmark: in a private directory, on a unix socket
// there, with a tiny signature database written on the spot instead of
// ClamAV's (which would need the network to fetch): one signature for the
// EICAR test file, whose text is public. Nothing it starts listens on the
// network.
package clamdtest

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mailnode/mailnode/antivirus"
	"github.com/mailnode/mailnode/internal/testpeer"
	"github.com/mailnode/mailnode/test/harness"
)

// Binary is Debian's clamd.
const Binary = "/usr/sbin/clamd"

// SignatureName is the name of the database's one signature. clamd
// reports signatures of databases it does not know as its own with
// ".UNOFFICIAL" appended: VirusName is what a scan answers.
const (
	SignatureName = "Mailnode.Test.EICAR"
	VirusName     = SignatureName + ".UNOFFICIAL"
)

// EICAR returns the EICAR anti-virus test file, put together from pieces
// so that no file of the repository is itself the test file.
func EICAR() string {
	return `X5O!P%@AP[4\PZX54(P^)7CC)7}$` + "EICAR" + `-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`
}

// Clamd is a running clamd.
type Clamd struct {
	Dir     string // its private directory
	Socket  string // the unix socket
	Address string // "unix:" + Socket, as spam.antivirus.address takes it
	Proc    *harness.Proc
}

// Options tune the clamd.conf written.
type Options struct {
	// StreamMaxLength is clamd's limit for INSTREAM ("25M" when "").
	StreamMaxLength string
	// Threads is MaxThreads (clamd's default when 0).
	Threads int
	// IdleTimeout is clamd's IdleTimeout in seconds, after which it closes
	// an idle session (clamd's default, 30, when 0).
	IdleTimeout int
}

// Available reports why clamd cannot run here ("" when it can).
func Available() string {
	if _, err := os.Stat(Binary); err != nil {
		return "clamd not installed (apt-get install clamav-daemon)"
	}
	return ""
}

// TB is what StartT needs of a test or benchmark (testing.TB has it; the
// bench program links this package without importing testing).
type TB interface {
	testpeer.T
	TempDir() string
	Cleanup(func())
}

// StartT starts clamd for a test or benchmark in a directory of its own
// and stops it when t ends. A missing clamd fails the test (skips it under
// -short: testpeer).
func StartT(t TB, opt Options) *Clamd {
	t.Helper()
	if why := Available(); why != "" {
		testpeer.Missing(t, "%s", why)
	}
	c, err := Start(t.TempDir(), opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Proc.Stop)
	return c
}

// Start writes the configuration and the database into dir (created when
// missing) and starts clamd in the foreground, waiting until it answers
// PING. Stop it with c.Proc.Stop; Kill and Restart simulate a crash.
func Start(dir string, opt Options) (*Clamd, error) {
	if why := Available(); why != "" {
		return nil, fmt.Errorf("clamdtest: %s", why)
	}
	c := &Clamd{Dir: dir, Socket: filepath.Join(dir, "clamd.sock")}
	c.Address = "unix:" + c.Socket
	db := filepath.Join(dir, "db")
	tmp := filepath.Join(dir, "tmp")
	for _, d := range []string{db, tmp} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	// An extended signature (.ndb): Name:TargetType:Offset:HexSignature,
	// target 0 (any file), anywhere in it. clamd decodes MIME, so a
	// base64 attachment is found too.
	ndb := SignatureName + ":0:*:" + hex.EncodeToString([]byte(EICAR())) + "\n"
	if err := os.WriteFile(filepath.Join(db, "mailnode-test.ndb"), []byte(ndb), 0o644); err != nil {
		return nil, err
	}
	max := opt.StreamMaxLength
	if max == "" {
		max = "25M"
	}
	conf := []string{
		"Foreground yes",
		"LocalSocket " + c.Socket,
		"LocalSocketMode 660",
		"FixStaleSocket yes",
		"DatabaseDirectory " + db,
		"TemporaryDirectory " + tmp,
		"LogFile " + filepath.Join(dir, "clamd.log"),
		"LogTime yes",
		"PidFile " + filepath.Join(dir, "clamd.pid"),
		"StreamMaxLength " + max,
		"Bytecode no",
		"SelfCheck 0",
	}
	if opt.IdleTimeout > 0 {
		conf = append(conf, fmt.Sprintf("IdleTimeout %d", opt.IdleTimeout))
	}
	if opt.Threads > 0 {
		conf = append(conf, fmt.Sprintf("MaxThreads %d", opt.Threads))
	}
	confFile := filepath.Join(dir, "clamd.conf")
	if err := os.WriteFile(confFile, []byte(strings.Join(conf, "\n")+"\n"), 0o644); err != nil {
		return nil, err
	}
	client := &antivirus.Clamd{Address: c.Address, Timeout: 2 * time.Second}
	c.Proc = &harness.Proc{
		Name:    "clamd",
		Args:    []string{Binary, "--foreground", "--config-file=" + confFile},
		Dir:     dir,
		LogFile: filepath.Join(dir, "clamd.out"),
		Ready:   func() error { return client.Ping(context.Background()) },
	}
	if err := c.Proc.Start(2 * time.Minute); err != nil {
		c.Proc.Stop()
		return nil, err
	}
	return c, nil
}

// Restart starts clamd again after Proc.Kill or Proc.Stop, with the same
// configuration, and waits for PONG.
func (c *Clamd) Restart() error {
	os.Remove(c.Socket)
	return c.Proc.Start(2 * time.Minute)
}

// Log returns clamd's own log.
func (c *Clamd) Log() string {
	b, _ := os.ReadFile(filepath.Join(c.Dir, "clamd.log"))
	return string(b)
}
