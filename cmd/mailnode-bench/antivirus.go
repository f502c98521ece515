package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	gomilter "github.com/d--j/go-milter"

	"github.com/mailnode/mailnode/antivirus"
	"github.com/mailnode/mailnode/antivirus/clamdtest"
	"github.com/mailnode/mailnode/milter/miltertest"
	"github.com/mailnode/mailnode/test/procstat"
)

// benchAntivirus is the milter bench's antivirus line: the running milterd
// (plainSock, process plainPid, no scan) beside a second one whose inventory adds
// spam.antivirus on a clamd started here, and clamd alone asked over
// INSTREAM with the bytes milterd streams. Each size is measured in
// alternating rounds of the three, one message at a time, so that the
// drift of a shared machine hits them alike.
func benchAntivirus(out io.Writer, dir, mailnode, invPath, plainSock string, plainPid int, domain string, sizes []int, n int) error {
	c, err := clamdtest.Start(filepath.Join(dir, "clamd"), clamdtest.Options{})
	if err != nil {
		return fmt.Errorf("bench: clamd: %w", err)
	}
	defer c.Proc.Stop()

	inv, err := os.ReadFile(invPath)
	if err != nil {
		return err
	}
	avSock := filepath.Join(dir, "milterd-av.sock")
	avInv := filepath.Join(dir, "inventory-av.yaml")
	text := strings.Replace(string(inv), plainSock, avSock, 1) + fmt.Sprintf("spam: {antivirus: {address: %q}}\n", c.Address)
	// The plain milterd serves the SRS socketmap in this directory.
	text = strings.Replace(text, "forwarding: {", "forwarding: {srs: false, ", 1)
	if err := os.WriteFile(avInv, []byte(text), 0o644); err != nil {
		return err
	}
	cmd := exec.Command(mailnode, "milterd", "--inventory", avInv)
	mlog, _ := os.Create(filepath.Join(dir, "milterd-av.log"))
	defer mlog.Close()
	cmd.Stdout, cmd.Stderr = mlog, mlog
	av := &benchTarget{name: "milterd-av", sock: avSock, cmd: cmd}
	stop, err := av.start(dir)
	if err != nil {
		return err
	}
	defer stop()

	plainClient := miltertest.NewClient("unix", plainSock, gomilter.WithDialer(postfixDialer{}))
	avClient := miltertest.NewClient("unix", avSock, gomilter.WithDialer(postfixDialer{}))
	clamd := &antivirus.Clamd{Address: c.Address}

	// The scan must really happen: EICAR in a signed message is refused.
	eicar := benchMessage(domain, 2048)
	eicar.Body = append([]byte(clamdtest.EICAR()+"\r\n"), eicar.Body...)
	if r, err := miltertest.Submit(avClient, eicar); err != nil {
		return err
	} else if r.Action == nil || r.Action.SMTPCode != 550 || !strings.Contains(r.Action.SMTPReply, clamdtest.VirusName) {
		return fmt.Errorf("bench: milterd with antivirus did not refuse EICAR: %+v", r.Action)
	}

	// What milterd's kept clamd sessions save per message: one connection
	// set up and torn down.
	network, addr, _ := antivirus.SplitAddress(c.Address)
	// Paced, so that clamd's listen backlog never fills.
	const dials = 200
	var dial time.Duration
	for range dials {
		t0 := time.Now()
		conn, err := net.Dial(network, addr)
		if err != nil {
			return err
		}
		conn.Close()
		dial += time.Since(t0)
		time.Sleep(time.Millisecond)
	}
	dial /= dials

	fmt.Fprintf(out, "\nantivirus: clamd %s, one-signature database, %s; %d messages per size and column, one at a time, in %d alternating rounds\n",
		clamdVersion(), c.Address, n, avRounds)
	fmt.Fprintf(out, "%8s %22s %22s %22s %14s %14s %10s %14s %10s\n", "body", "milterd msg/s (p99)", "+antivirus msg/s (p99)", "clamd alone msg/s (p99)",
		"added wall", "added CPU", "CPU/scan", "client CPU", "/scan")
	for _, size := range sizes {
		msg := benchMessage(domain, size)
		stream := streamBytes(msg)
		if r, err := clamd.ScanBytes(context.Background(), stream); err != nil || r.Virus != "" {
			return fmt.Errorf("bench: clamd on the clean message: %+v, %v", r, err)
		}
		var plain, withAV, alone []time.Duration
		var cpuPlain, cpuAV, cpuAlone time.Duration
		per := max(1, n/avRounds)
		for range avRounds {
			d, cpu, err := timedSubmits(plainClient, msg, per, plainPid)
			if err != nil {
				return err
			}
			plain, cpuPlain = append(plain, d...), cpuPlain+cpu
			d, cpu, err = timedSubmits(avClient, msg, per, cmd.Process.Pid)
			if err != nil {
				return err
			}
			withAV, cpuAV = append(withAV, d...), cpuAV+cpu
			self0, err := procstat.SchedCPU(os.Getpid())
			if err != nil {
				return err
			}
			for range per {
				start := time.Now()
				if _, err := clamd.ScanBytes(context.Background(), stream); err != nil {
					return err
				}
				alone = append(alone, time.Since(start))
			}
			self1, err := procstat.SchedCPU(os.Getpid())
			if err != nil {
				return err
			}
			cpuAlone += self1 - self0
		}
		mp, ma, ms := mean(plain), mean(withAV), mean(alone)
		addedCPU := (cpuAV - cpuPlain) / time.Duration(len(withAV))
		clientCPU := cpuAlone / time.Duration(len(alone))
		fmt.Fprintf(out, "%8s %12.0f (%7v) %12.0f (%7v) %12.0f (%7v) %14v %14v %9.1f%% %14v %9.1f%%\n", sizeName(size),
			1/mp.Seconds(), p99(plain).Round(time.Microsecond), 1/ma.Seconds(), p99(withAV).Round(time.Microsecond),
			1/ms.Seconds(), p99(alone).Round(time.Microsecond),
			(ma - mp - ms).Round(time.Microsecond), addedCPU.Round(time.Microsecond), 100*float64(addedCPU)/float64(ms),
			clientCPU.Round(time.Microsecond), 100*float64(clientCPU)/float64(ms))
	}
	fmt.Fprintf(out, "added wall: +antivirus's mean minus milterd's minus clamd alone's (negative: the scan overlaps the signature);\n")
	fmt.Fprintf(out, "added CPU: milterd's own CPU per message with the scan minus without (/proc/PID/task/*/schedstat), against clamd's scan (target < 10 %%)\n")
	fmt.Fprintf(out, "client CPU: this program's own CPU per scan in the clamd-alone loop (the same client, a kept session, the whole\n")
	fmt.Fprintf(out, "  stream in hand): what any scan costs its caller on this machine beside clamd's time, the floor under added CPU\n")
	fmt.Fprintf(out, "a clamd connection (dial + close), which milterd's kept sessions save per message: %v\n", dial.Round(time.Microsecond))
	return nil
}

const avRounds = 6

// streamBytes is what milterd streams to clamd for m: the header fields as
// received, an empty line, the body.
func streamBytes(m *miltertest.Message) []byte {
	var b []byte
	for _, h := range m.Headers {
		b = append(b, h.Name...)
		b = append(b, ':')
		b = append(b, h.Value...)
		b = append(b, '\r', '\n')
	}
	b = append(b, '\r', '\n')
	return append(b, m.Body...)
}

// timedSubmits sends msg n times, one at a time, and returns each
// message's time and the CPU the milter process (pid) spent meanwhile.
func timedSubmits(c *gomilter.Client, msg *miltertest.Message, n, pid int) ([]time.Duration, time.Duration, error) {
	before, err := procstat.SchedCPU(pid)
	if err != nil {
		return nil, 0, err
	}
	out := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		r, err := miltertest.Submit(c, msg)
		if err != nil {
			return nil, 0, err
		}
		if !hasSignature(r) {
			return nil, 0, fmt.Errorf("bench: message not signed: %+v", r.Action)
		}
		out = append(out, time.Since(start))
	}
	after, err := procstat.SchedCPU(pid)
	return out, after - before, err
}

func mean(d []time.Duration) time.Duration {
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	return sum / time.Duration(len(d))
}

func p99(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*99/100)]
}

func clamdVersion() string {
	b, err := exec.Command(clamdtest.Binary, "--version").Output()
	if err != nil {
		return "(version unknown)"
	}
	v, _, _ := strings.Cut(strings.TrimSpace(string(b)), "/")
	return v
}
