package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gomilter "github.com/d--j/go-milter"
	msgauth "github.com/emersion/go-msgauth/dkim"
	"github.com/urfave/cli/v2"

	"github.com/mailnode/mailnode/antivirus/clamdtest"
	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/dns/dnstest"
	"github.com/mailnode/mailnode/milter/miltertest"
	"github.com/mailnode/mailnode/test/opendkim"
	"github.com/mailnode/mailnode/test/procstat"
)

// milterCommand is `mailnode-bench milter`.
func milterCommand() *cli.Command {
	return &cli.Command{
		Name:  "milter",
		Usage: "mailnode milterd vs Debian OpenDKIM: signed messages/s, side by side",
		Description: `Starts mailnode milterd (--mailnode) and OpenDKIM (opendkim -f with a private config) on
unix sockets in a temporary directory, with the same RSA-2048 key and domain,
and drives both with go-milter's client the way Postfix does (one milter
session per message, {auth_authen} set, 127.0.0.1): the same messages with
2 KiB, 64 KiB and 1 MiB bodies at concurrency 1 and 8. Every signature of the
first message of each run is verified. Reports msgs/s of both and the ratio,
then milterd's own CPU time per 2 KiB RSA-signed message (the threads' run
time from /proc/PID/task/*/schedstat) against a bare RSA-2048 signature in
this process, and against two stand-ins driven in the same alternating
rounds: a milter that does nothing (null-milter), and one whose only work
is the same signature over a fixed digest, served by milterd's own server
(null-milter --sign): the floor of milterd's path beyond the signature,
and milterd's own work above it. Then milterd's CPU per 2 KiB message from outside (an RSA-2048
DKIM signature to verify, SPF, DMARC and the builtin spam gate; the DNS
records served by this process on a loopback port as node.resolver, cached
by milterd after the first message) against null-milter's, in alternating
rounds (--inbound-messages). Per-round ranges and the load average come
with the figures.

With --antivirus (the default; Debian's clamd on a one-signature database
written on the spot), a second milterd with spam.antivirus scans every signed message:
msg/s and p99 with and without the scan, the same bytes scanned by clamd
alone in a direct INSTREAM loop, and milterd's own added time per message
beside clamd's scan, measured in alternating rounds at concurrency 1.`,
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "duration", Value: 3 * time.Second, Usage: "length of each run"},
			&cli.StringFlag{Name: "sizes", Value: "2048,65536,1048576", Usage: "body sizes in bytes, comma-separated"},
			&cli.StringFlag{Name: "concurrency", Value: "1,8", Usage: "concurrent sessions, comma-separated"},
			&cli.StringFlag{Name: "opendkim", Value: "/usr/sbin/opendkim", Usage: "OpenDKIM binary (\"\" to skip it)"},
			&cli.IntFlag{Name: "cpu-messages", Value: 3000, Usage: "2 KiB messages for the CPU-per-message measurement"},
			&cli.IntFlag{Name: "inbound-messages", Value: 3000, Usage: "2 KiB messages from outside (DKIM RSA-2048, SPF, DMARC, the builtin spam gate) for milterd's CPU per inbound message; 0 skips it"},
			&cli.BoolFlag{Name: "antivirus", Value: true, Usage: "add the antivirus line (Debian's clamd, " + clamdtest.Binary + ", on a test database)"},
			&cli.IntFlag{Name: "av-messages", Value: 600, Usage: "messages per body size for the antivirus line (each of with, without, clamd alone)"},
			&cli.StringFlag{Name: "av-sizes", Value: "2048,65536", Usage: "body sizes for the antivirus line, comma-separated"},
			mailnodeFlag(),
		},
		Action: benchMilter,
	}
}

type benchTarget struct {
	name string
	sock string
	cmd  *exec.Cmd
}

func benchMilter(c *cli.Context) error {
	out := c.App.Writer
	dir, err := os.MkdirTemp(benchBaseDir(), "mailnode-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	const domain, selector = "bench.example", "bench"
	keyDir := filepath.Join(dir, "keys")
	keyPath := dkim.KeyPath(keyDir, domain, selector)
	key, err := dkim.Generate("rsa")
	if err != nil {
		return err
	}
	if err := dkim.WriteKey(keyPath, key); err != nil {
		return err
	}
	txt, _ := dkim.TXTValue(key)

	// The DNS of an outside sender whose mail milterd verifies (the
	// inbound line): node.resolver for milterd.
	dnsSrv, sender, err := inboundDNS(key)
	if err != nil {
		return err
	}
	defer dnsSrv.Close()

	// mailnode milterd, as its own process.
	inv := filepath.Join(dir, "inventory.yaml")
	msock := filepath.Join(dir, "milterd.sock")
	forwarding, err := srsSecret(dir)
	if err != nil {
		return err
	}
	os.WriteFile(inv, []byte(fmt.Sprintf(`node: {hostname: bench.mailnode.test, trusted_networks: [127.0.0.0/8], resolver: "%s"}
milter: {listen: "unix:%s"}
dkim: {key_dir: %s}
%sdomains:
  - {name: %s, class: local, dkim: [{selector: %s, algorithm: rsa}]}
`, dnsSrv.Addr, msock, keyDir, forwarding, domain, selector)), 0o644)
	mailnode, err := mailnodeBinary(c)
	if err != nil {
		return err
	}
	mcmd := exec.Command(mailnode, "milterd", "--inventory", inv)
	mlog, _ := os.Create(filepath.Join(dir, "milterd.log"))
	mcmd.Stdout, mcmd.Stderr = mlog, mlog
	targets := []*benchTarget{{name: "milterd", sock: msock, cmd: mcmd}}

	if bin := c.String("opendkim"); bin != "" {
		osock := filepath.Join(dir, "opendkim.sock")
		conf := filepath.Join(dir, "opendkim.conf")
		os.WriteFile(conf, []byte(opendkim.Config{
			Domain: domain, Selector: selector, KeyFile: keyPath,
			Socket: osock, PidFile: filepath.Join(dir, "opendkim.pid"),
		}.String()), 0o644)
		ocmd := exec.Command(bin, "-f", "-x", conf)
		olog, _ := os.Create(filepath.Join(dir, "opendkim.log"))
		ocmd.Stdout, ocmd.Stderr = olog, olog
		targets = append(targets, &benchTarget{name: "opendkim", sock: osock, cmd: ocmd})
	}
	for _, t := range targets {
		stop, err := t.start(dir)
		if err != nil {
			return err
		}
		defer stop()
	}

	sizes, err := intList(c.String("sizes"))
	if err != nil {
		return err
	}
	concs, err := intList(c.String("concurrency"))
	if err != nil {
		return err
	}
	lookup := func(name string) ([]string, error) {
		if name == selector+"._domainkey."+domain {
			return []string{txt}, nil
		}
		return nil, errors.New("no such key")
	}
	fmt.Fprintf(out, "mailnode-bench milter: RSA-2048 %s/%s, relaxed/relaxed, unix sockets, %v per run, GOMAXPROCS-free client on this machine\n\n", domain, selector, c.Duration("duration"))
	fmt.Fprintf(out, "%8s %5s %14s %15s %7s\n", "body", "conc", "milterd msg/s", "opendkim msg/s", "ratio")
	for _, size := range sizes {
		msg := benchMessage(domain, size)
		for _, conc := range concs {
			rates := map[string]float64{}
			for _, t := range targets {
				r, err := benchRun(t.sock, msg, conc, c.Duration("duration"), lookup)
				if err != nil {
					return fmt.Errorf("bench: %s, %d bytes, c%d: %w", t.name, size, conc, err)
				}
				rates[t.name] = r
			}
			ratio := "-"
			od := "-"
			if r, ok := rates["opendkim"]; ok && r > 0 {
				od = fmt.Sprintf("%.0f", r)
				ratio = fmt.Sprintf("%.2fx", rates["milterd"]/r)
			}
			fmt.Fprintf(out, "%8s %5d %14.0f %15s %7s\n", sizeName(size), conc, rates["milterd"], od, ratio)
		}
	}

	// milterd's own CPU per 2 KiB RSA-signed message vs a bare RSA signature,
	// measured in alternating rounds: the speed of a shared virtual machine
	// drifts by a third within a minute, and only rounds side by side see
	// the same machine.
	// The bare signature is measured twice: with crypto/rsa, the issue's
	// yardstick, and with the signer milterd itself uses (OpenSSL's in cgo
	// builds), whose difference to milterd's figure is the rest of the path.
	// The floor of that rest is a milter that does nothing (null-milter:
	// go-milter's session with milterd's negotiation), driven in the same
	// rounds by the same client: what any milter built on go-milter pays per
	// message for Postfix's stages (its system calls and wake-ups). Beside
	// it, a milter whose only work is the same signature over a fixed
	// digest, on milterd's own server and guard (null-milter --sign): what
	// that signature costs inside a milter session, before any header is
	// read or byte hashed; its rest is the floor of milterd's.
	// CPU time is the threads' run time from schedstat, in nanoseconds:
	// /proc/PID/stat's 10 ms ticks are a tenth of a round.
	const rounds = 8
	n := c.Int("cpu-messages")
	msg := benchMessage(domain, 2048)
	nodeKey, err := dkim.NewKey(domain, selector, "rsa", key)
	if err != nil {
		return err
	}
	null, err := startStandIn(dir, "null-milter")
	if err != nil {
		return err
	}
	defer null.stop()
	signOnly, err := startStandIn(dir, "sign-only", "--sign", keyPath, "--domain", domain, "--selector", selector)
	if err != nil {
		return err
	}
	defer signOnly.stop()
	bareSigners := []crypto.Signer{key, nodeKey.Signer}
	bareSpent, bareSigned := make([]time.Duration, len(bareSigners)), make([]int, len(bareSigners))
	var roundSigns []time.Duration // milterd's own signer, each round
	sides, err := alternateRounds([]roundMilter{
		{mcmd.Process.Pid, msock, true},
		{null.pid, null.sock, false},
		{signOnly.pid, signOnly.sock, true},
	}, msg, n, rounds, func() {
		for i, s := range bareSigners {
			sd, m := bareRSASign(s, 200*time.Millisecond)
			bareSpent[i] += sd
			bareSigned[i] += m
			if i == len(bareSigners)-1 {
				roundSigns = append(roundSigns, sd/time.Duration(m))
			}
		}
	})
	if err != nil {
		return err
	}
	md, nm, so := sides[0], sides[1], sides[2]
	rest := func(side roundSide) []time.Duration {
		out := make([]time.Duration, len(side.rounds))
		for i, d := range side.rounds {
			out[i] = d - roundSigns[i]
		}
		return out
	}
	spent, signed, perMsg := md.spent, md.done, md.per()
	goRSA := bareSpent[0] / time.Duration(bareSigned[0])
	node := bareSpent[1] / time.Duration(bareSigned[1])
	engine := "crypto/rsa (this build has no cgo)"
	if dkim.OpenSSLRSA {
		engine = "OpenSSL libcrypto"
	}
	fmt.Fprintf(out, "\nmilterd CPU per 2 KiB RSA-signed message: %v (%d messages, %v run time from /proc/%d/task/*/schedstat)\n", perMsg.Round(time.Microsecond), signed, spent.Round(time.Millisecond), mcmd.Process.Pid)
	fmt.Fprintf(out, "bare RSA-2048 PKCS#1 v1.5 signature, crypto/rsa:       %v (%d signatures on one thread, in %d rounds alternating with milterd's)\n", goRSA.Round(time.Microsecond), bareSigned[0], rounds)
	fmt.Fprintf(out, "bare RSA-2048 signature as milterd signs (%s): %v (%d signatures)\n", engine, node.Round(time.Microsecond), bareSigned[1])
	fmt.Fprintf(out, "ratio to crypto/rsa's signature: %.2fx (target <= 1.3x); to milterd's own signer: %.2fx; the rest of the path: %v per message (rounds %s)\n",
		float64(perMsg)/float64(goRSA), float64(perMsg)/float64(node), (perMsg - node).Round(time.Microsecond), durRange(rest(md)))
	fmt.Fprintf(out, "floor, a milter doing nothing (null-milter, milterd's negotiation) in the same rounds: %v per message (rounds %s)\n",
		nm.per().Round(time.Microsecond), durRange(nm.rounds))
	fmt.Fprintf(out, "sign-only, a milter that only makes the same signature (null-milter --sign, on milterd's server and guard): %v per message, its rest beyond the bare signature %v (rounds %s): the floor of milterd's rest; milterd's own work above it %v\n",
		so.per().Round(time.Microsecond), (so.per() - node).Round(time.Microsecond), durRange(rest(so)), (perMsg - so.per()).Round(time.Microsecond))
	fmt.Fprintf(out, "threads put on a CPU per message (wake-ups and returns from preemption, schedstat): milterd %.2f, null-milter %.2f, sign-only %.2f\n",
		md.wakesPer(), nm.wakesPer(), so.wakesPer())
	if l, err := procstat.LoadAvg(); err == nil {
		fmt.Fprintf(out, "load average: %.2f %.2f %.2f (2 cores shared with the client and whatever else runs)\n", l[0], l[1], l[2])
	}
	if n := c.Int("inbound-messages"); n > 0 {
		if err := benchInbound(out, mcmd.Process.Pid, msock, null, sender, domain, n); err != nil {
			return err
		}
	}
	if !c.Bool("antivirus") {
		return nil
	}
	if why := clamdtest.Available(); why != "" {
		fmt.Fprintf(out, "\nantivirus: skipped: %s\n", why)
		return nil
	}
	avSizes, err := intList(c.String("av-sizes"))
	if err != nil {
		return err
	}
	return benchAntivirus(out, dir, mailnode, inv, msock, mcmd.Process.Pid, domain, avSizes, c.Int("av-messages"))
}

// start starts the target's process and waits for its socket; stop ends it.
func (t *benchTarget) start(dir string) (stop func(), err error) {
	if err := t.cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start %s: %w", t.name, err)
	}
	stop = func() {
		t.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { t.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.cmd.Process.Kill()
		}
	}
	if err := waitSocket(t.sock, 10*time.Second); err != nil {
		stop()
		logs, _ := os.ReadFile(filepath.Join(dir, t.name+".log"))
		return nil, fmt.Errorf("bench: %s: %w\n%s", t.name, err, logs)
	}
	return stop, nil
}

// benchBaseDir is where the run's directory goes. OpenDKIM refuses a
// configuration file below a directory that others may write to — /tmp,
// sticky bit or not — so /run is preferred when it is private.
func benchBaseDir() string {
	for _, d := range []string{"/run", os.TempDir()} {
		st, err := os.Stat(d)
		if err == nil && st.IsDir() && st.Mode().Perm()&0o022 == 0 && syscall.Access(d, 2 /* W_OK */) == nil {
			return d
		}
	}
	return os.TempDir()
}

func waitSocket(path string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("socket %s not ready after %v", path, d)
}

func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bench: bad number %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func sizeName(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

// benchMessage is a plain-text message from an authenticated local user,
// as Postfix would hand it over, with a body of size bytes of text lines.
func benchMessage(domain string, size int) *miltertest.Message {
	lines := []string{
		"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod",
		"tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim",
		"veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea",
		"",
		"commodo consequat. Duis aute irure dolor in reprehenderit in voluptate",
	}
	var b bytes.Buffer
	for i := 0; b.Len() < size-2; i++ {
		b.WriteString(lines[i%len(lines)])
		b.WriteString("\r\n")
	}
	body := append(b.Bytes()[:size-2], '\r', '\n')
	h := func(n, v string) dkim.Header { return dkim.Header{Name: n, Value: " " + v} }
	return &miltertest.Message{
		Host: "localhost", Port: 40000, Addr: "127.0.0.1", AuthUser: "alice@" + domain, QueueID: "4BENCH",
		Sender: "alice@" + domain, Rcpts: []string{"carol@partner.example"},
		Headers: []dkim.Header{
			h("From", "Alice <alice@"+domain+">"), h("To", "Carol <carol@partner.example>"),
			h("Subject", "benchmark"), h("Date", "Sun, 01 Mar 2026 12:00:00 +0000"),
			h("Message-ID", "<bench@"+domain+">"), h("MIME-Version", "1.0"),
			h("Content-Type", "text/plain; charset=utf-8"),
		},
		Body: body,
	}
}

// benchRun sends msg for d with conc sessions and returns signed messages/s.
// The first message's signature is verified.
func benchRun(sock string, msg *miltertest.Message, conc int, d time.Duration, lookup func(string) ([]string, error)) (float64, error) {
	client := miltertest.NewClient("unix", sock, gomilter.WithDialer(postfixDialer{}))
	r, err := miltertest.Submit(client, msg)
	if err != nil {
		return 0, err
	}
	if err := checkSigned(r, msg, lookup); err != nil {
		return 0, err
	}
	var count atomic.Int64
	var firstErr error
	var mu sync.Mutex
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < conc; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				r, err := miltertest.Submit(client, msg)
				if err == nil && !hasSignature(r) {
					err = fmt.Errorf("message not signed: %v", r.Action)
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					cancel()
					return
				}
				count.Add(1)
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return 0, firstErr
	}
	return float64(count.Load()) / time.Since(start).Seconds(), nil
}

// benchCount sends n messages with conc sessions and returns how many were
// signed, or, unless wantSigned, answered.
func benchCount(sock string, msg *miltertest.Message, conc, n int, wantSigned bool) (int, error) {
	client := miltertest.NewClient("unix", sock, gomilter.WithDialer(postfixDialer{}))
	done := 0
	for i := 0; i < n; i++ {
		r, err := miltertest.Submit(client, msg)
		if err != nil {
			return done, err
		}
		if !wantSigned || hasSignature(r) {
			done++
		}
	}
	if done == 0 {
		return 0, errors.New("bench: nothing signed")
	}
	return done, nil
}

// roundSide is one milter's share of alternating rounds: its CPU time,
// the messages it answered (signed, when it must sign), how often its
// threads were put on a CPU, and its CPU per message in each round.
type roundSide struct {
	spent  time.Duration
	done   int
	wakes  int64
	rounds []time.Duration
}

func (r roundSide) per() time.Duration { return r.spent / time.Duration(r.done) }
func (r roundSide) wakesPer() float64  { return float64(r.wakes) / float64(r.done) }

// roundMilter is a milter process driven in the rounds: its pid, its
// socket, and whether every answer must carry a signature.
type roundMilter struct {
	pid        int
	sock       string
	wantSigned bool
}

// alternateRounds sends n messages to each milter, in rounds, by turns
// within each round (the same message to all); between, when set, runs
// after each round. The sides are in the milters' order.
func alternateRounds(milters []roundMilter, msg *miltertest.Message, n, rounds int, between func()) ([]roundSide, error) {
	sides := make([]roundSide, len(milters))
	for range rounds {
		for i, m := range milters {
			d, k, runs, err := cpuPerRound(m.pid, m.sock, msg, max(1, n/rounds), m.wantSigned)
			if err != nil {
				return nil, err
			}
			s := &sides[i]
			s.spent, s.done, s.wakes = s.spent+d, s.done+k, s.wakes+runs
			s.rounds = append(s.rounds, d/time.Duration(k))
		}
		if between != nil {
			between()
		}
	}
	return sides, nil
}

// cpuPerRound sends n messages one at a time to the milter process pid
// listening on sock and returns the CPU time the process spent, how many
// messages were signed (answered, unless wantSigned), and how many times
// its threads were put on a CPU meanwhile (procstat.Sched).
func cpuPerRound(pid int, sock string, msg *miltertest.Message, n int, wantSigned bool) (time.Duration, int, int64, error) {
	before, runs0, err := procstat.Sched(pid)
	if err != nil {
		return 0, 0, 0, err
	}
	k, err := benchCount(sock, msg, 1, n, wantSigned)
	if err != nil {
		return 0, 0, 0, err
	}
	after, runs1, err := procstat.Sched(pid)
	if err != nil {
		return 0, 0, 0, err
	}
	return after - before, k, runs1 - runs0, nil
}

// standIn is a `mailnode-bench null-milter` (doing nothing, or --sign)
// started by this process.
type standIn struct {
	sock string
	pid  int
	stop func()
}

// startStandIn starts `mailnode-bench null-milter` as name (its socket
// and log in dir are named after it), with args added to its command line.
func startStandIn(dir, name string, args ...string) (*standIn, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, name+".sock")
	cmd := exec.Command(self, append([]string{"null-milter", "--listen", "unix:" + sock}, args...)...)
	log, _ := os.Create(filepath.Join(dir, name+".log"))
	cmd.Stdout, cmd.Stderr = log, log
	t := &benchTarget{name: name, sock: sock, cmd: cmd}
	stop, err := t.start(dir)
	if err != nil {
		return nil, err
	}
	return &standIn{sock: sock, pid: cmd.Process.Pid, stop: stop}, nil
}

// durRange is "min–max" of ds, rounded to the microsecond.
func durRange(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	lo, hi := slices.Min(ds), slices.Max(ds)
	return fmt.Sprintf("%v–%v", lo.Round(time.Microsecond), hi.Round(time.Microsecond))
}

// postfixDialer makes go-milter's client write like Postfix's milter8
// client. go-milter writes every packet with two system calls (length and
// code, then data) as soon as it is made; Postfix writes into a VSTREAM
// buffer (4 KiB, larger writes go straight out) that is flushed when it
// waits for a reply — "sending macros and event parameters in one VSTREAM
// transaction", and all header fields in one when the milter negotiated no
// header replies (milter8.c). Driving a milter with a system call per half
// packet makes it wake up, and spend CPU, once per half packet, which
// Postfix never asks of it; both milters get the same client.
type postfixDialer struct{}

func (postfixDialer) Dial(network, addr string) (net.Conn, error) {
	c, err := net.DialTimeout(network, addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	return &vstreamConn{Conn: c, w: bufio.NewWriterSize(c, 4096)}, nil
}

// vstreamConn buffers writes until the next read (or Close).
type vstreamConn struct {
	net.Conn
	w *bufio.Writer
}

func (v *vstreamConn) Write(p []byte) (int, error) { return v.w.Write(p) }

func (v *vstreamConn) Read(p []byte) (int, error) {
	if v.w.Buffered() > 0 {
		if err := v.w.Flush(); err != nil {
			return 0, err
		}
	}
	return v.Conn.Read(p)
}

func (v *vstreamConn) Close() error {
	v.w.Flush()
	return v.Conn.Close()
}

func hasSignature(r *miltertest.Result) bool {
	for _, m := range r.Mods {
		if (m.Type == gomilter.ActionInsertHeader || m.Type == gomilter.ActionAddHeader) && strings.EqualFold(m.HeaderName, "DKIM-Signature") {
			return true
		}
	}
	return false
}

func checkSigned(r *miltertest.Result, msg *miltertest.Message, lookup func(string) ([]string, error)) error {
	if !hasSignature(r) {
		return fmt.Errorf("first message not signed (action %v, %d modifications)", r.Action, len(r.Mods))
	}
	raw, err := r.Apply(msg)
	if err != nil {
		return err
	}
	vs, err := msgauth.VerifyWithOptions(bytes.NewReader(raw), &msgauth.VerifyOptions{LookupTXT: lookup})
	if err != nil {
		return err
	}
	for _, v := range vs {
		if v.Err != nil {
			return fmt.Errorf("signature does not verify: %v", v.Err)
		}
	}
	return nil
}

// bareRSASign signs with k for d of wall time on one thread and returns
// that thread's CPU time (milterd's is measured in CPU time too) and the
// number of RSA-2048 PKCS#1 v1.5 SHA-256 signatures made.
func bareRSASign(k crypto.Signer, d time.Duration) (time.Duration, int) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	digest := sha256.Sum256([]byte("mailnode"))
	k.Sign(nil, digest[:], crypto.SHA256) // warm up
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	n := 0
	start, c0 := time.Now(), cpu()
	for time.Since(start) < d {
		k.Sign(nil, digest[:], crypto.SHA256)
		n++
	}
	return cpu() - c0, n
}

// srsSecret writes an SRS secret into dir, as milterd needs one
// (forwarding.srs, on by default), and returns the inventory line that
// names it.
func srsSecret(dir string) (string, error) {
	key := make([]byte, 24)
	if _, err := rand.Read(key); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "srs.secret")
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o640); err != nil {
		return "", err
	}
	return "forwarding: {srs_secret_file: " + path + "}\n", nil
}

// inboundDNS serves, on a loopback port, the records of sender.example, an
// outside domain: SPF for 198.51.100.0/24, DMARC p=reject and its DKIM key
// (selector s1, k the bench's RSA key). It returns the server and that
// key, to sign its mail with.
func inboundDNS(k crypto.Signer) (*dnstest.Server, dkim.Key, error) {
	key, err := dkim.NewKey("sender.example", "s1", "rsa", k)
	if err != nil {
		return nil, key, err
	}
	txt, err := dkim.TXTValue(k)
	if err != nil {
		return nil, key, err
	}
	d, err := dnstest.New("127.0.0.1:0")
	if err != nil {
		return nil, key, err
	}
	err = d.Add(". 3600 IN SOA ns.example. hostmaster.example. 1 3600 600 86400 60\n" +
		`sender.example. 3600 IN TXT "v=spf1 ip4:198.51.100.0/24 -all"` + "\n" +
		`_dmarc.sender.example. 3600 IN TXT "v=DMARC1; p=reject"` + "\n" +
		"s1._domainkey.sender.example. 3600 IN TXT " + strconv.Quote(txt) + "\n")
	if err != nil {
		d.Close()
		return nil, key, err
	}
	return d, key, nil
}

// inboundMessage is a 2 KiB message from news@sender.example, signed by
// it, from 198.51.100.7 to a mailbox of domain: what milterd verifies and
// scores.
func inboundMessage(sender dkim.Key, domain string) (*miltertest.Message, error) {
	m := benchMessage(domain, 2048)
	m.Host, m.Addr, m.Helo, m.AuthUser, m.QueueID = "mail.sender.example", "198.51.100.7", "mail.sender.example", "", "4INBOUND"
	m.Sender, m.Rcpts = "news@sender.example", []string{"alice@" + domain}
	m.Headers[0].Value = " News <news@sender.example>"
	m.Headers[1].Value = " Alice <alice@" + domain + ">"
	bh := dkim.NewBodyHasher()
	bh.Write(m.Body)
	sig, err := dkim.Sign(sender, m.Headers, bh.Sum(), time.Now())
	if err != nil {
		return nil, err
	}
	m.Headers = append([]dkim.Header{{Name: "DKIM-Signature", Value: sig}}, m.Headers...)
	return m, nil
}

// benchInbound measures milterd's CPU per inbound message, in rounds
// alternating with the null milter driven by the same messages. The first
// message asks the DNS server; the rest are answered from milterd's cache,
// as for a sender seen before.
func benchInbound(out io.Writer, pid int, sock string, null *standIn, sender dkim.Key, domain string, n int) error {
	msg, err := inboundMessage(sender, domain)
	if err != nil {
		return err
	}
	r, err := miltertest.Submit(miltertest.NewClient("unix", sock, gomilter.WithDialer(postfixDialer{})), msg)
	if err != nil {
		return err
	}
	var ar string
	for _, m := range r.Mods {
		if m.HeaderName == "Authentication-Results" {
			ar = strings.Join(strings.Fields(m.HeaderValue), " ")
		}
	}
	for _, want := range []string{"spf=pass", "dkim=pass header.d=sender.example", "dmarc=pass"} {
		if !strings.Contains(ar, want) {
			return fmt.Errorf("bench: inbound message: Authentication-Results %q lacks %s (action %v)", ar, want, r.Action)
		}
	}
	sides, err := alternateRounds([]roundMilter{{pid, sock, false}, {null.pid, null.sock, false}}, msg, n, 8, nil)
	if err != nil {
		return err
	}
	md, nm := sides[0], sides[1]
	per, nullPer := md.per(), nm.per()
	fmt.Fprintf(out, "\nmilterd CPU per 2 KiB inbound message (DKIM RSA-2048 verified, SPF, DMARC, builtin spam gate; DNS answers cached after the first): %v (rounds %s, %d messages)\n",
		per.Round(time.Microsecond), durRange(md.rounds), md.done)
	fmt.Fprintf(out, "null-milter in the same rounds: %v (rounds %s); milterd's own work per inbound message: %v\n",
		nullPer.Round(time.Microsecond), durRange(nm.rounds), (per - nullPer).Round(time.Microsecond))
	fmt.Fprintf(out, "threads put on a CPU per inbound message: milterd %.2f, null-milter %.2f\n",
		md.wakesPer(), nm.wakesPer())
	if l, err := procstat.LoadAvg(); err == nil {
		fmt.Fprintf(out, "load average: %.2f %.2f %.2f\n", l[0], l[1], l[2])
	}
	return nil
}
