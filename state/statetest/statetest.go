// Package statetest starts the real peers the state layer is measured and
// tested against: Debian's postgrey (the greylisting baseline) and
// redis-server, each on a loopback port with a private directory. The
// state package's benchmarks and `mailnode-bench greylist` share it, so
// both run postgrey the same way. Clock is the settable time of the state
// layer's tests and of policyd's.
//
// It is test and benchmark machinery: the mailnode binary never imports
// it. The benchmark program links it, so it does not import testing: the
// helpers for tests take a TB.
package statetest

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mailnode/mailnode/internal/testpeer"
)

// ErrNotInstalled is returned (wrapped) when the program is not installed.
var ErrNotInstalled = errors.New("not installed")

// Process is a started peer; Stop kills it and removes its directory.
type Process struct {
	Addr   string // 127.0.0.1:PORT
	Dir    string // private directory (database, log)
	cmd    *exec.Cmd
	log    *os.File
	exited chan struct{} // closed when cmd.Wait returned
	mk     func(addr string) *exec.Cmd
	ready  func(net.Conn) bool
	keep   bool // Stop leaves Dir (it belongs to a group)
}

// Kill ends the process with SIGKILL, as a crash would, and waits for it;
// Restart starts it again on the same address.
func (p *Process) Kill() {
	if p == nil || p.exited == nil {
		return
	}
	p.cmd.Process.Kill()
	<-p.exited
}

// Running reports whether the process was started and has not exited.
func (p *Process) Running() bool {
	if p == nil || p.exited == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Restart starts a killed process again with the same command line and
// address, and waits (up to wait) until it is ready.
func (p *Process) Restart(wait time.Duration) error {
	if p.Running() {
		return fmt.Errorf("%s is still running", p.Addr)
	}
	return p.launch(wait)
}

// Stop kills the process, waits for it and removes its directory.
func (p *Process) Stop() {
	if p == nil {
		return
	}
	if p.exited != nil {
		p.cmd.Process.Kill()
		<-p.exited
	}
	if p.log != nil {
		p.log.Close()
	}
	if !p.keep {
		os.RemoveAll(p.Dir)
	}
}

// Log returns what the process wrote to stdout and stderr.
func (p *Process) Log() string {
	b, _ := os.ReadFile(filepath.Join(p.Dir, "out.log"))
	return string(b)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago, for
// a server the caller starts next. It is picked at random below the
// kernel's ephemeral range (ip_local_port_range), where the kernel never
// puts a connection's source port or a bind to port 0: a port from inside
// that range could be taken by any connection made before the server
// binds it (a test's Postfix once failed to start with "Address already in
// use" that way). Only when no such port binds does it take one the
// kernel picks.
func FreePort() (int, error) {
	lo, hi := freePortFloor, ephemeralLow()-1
	for i := 0; hi-lo >= 1000 && i < 64; i++ {
		p := lo + rand.IntN(hi-lo+1)
		if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p)); err == nil {
			l.Close()
			return p, nil
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// freePortFloor keeps FreePort above the ports services and the demo use.
const freePortFloor = 20000

// ephemeralLow is the first port of the kernel's ephemeral range.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if f := strings.Fields(string(b)); err == nil && len(f) == 2 {
		if n, err := strconv.Atoi(f[0]); err == nil {
			return n
		}
	}
	return 32768 // Linux's default
}

// StartPostgrey runs Debian's postgrey (/usr/sbin/postgrey) on a loopback
// port with a private database directory, greylisting for delay seconds
// (postgrey's smallest is 1), with empty client and recipient whitelists
// so that it greylists every triplet as policyd's stream expects. Run as
// root it drops to the postgrey user (which then owns the directory);
// otherwise it runs as the current user.
func StartPostgrey(delay int) (*Process, error) { return StartPostgreyWith(delay, nil) }

// StartPostgreyWith is StartPostgrey with prepare run first on the empty
// database directory (to fill the database before postgrey opens it).
func StartPostgreyWith(delay int, prepare func(dir string) error) (*Process, error) {
	bin, err := exec.LookPath("postgrey")
	if err != nil {
		return nil, fmt.Errorf("postgrey: %w (apt-get install postgrey)", ErrNotInstalled)
	}
	dir, err := os.MkdirTemp("", "postgrey-")
	if err != nil {
		return nil, err
	}
	os.Chmod(dir, 0o755)
	if prepare != nil {
		if err := prepare(dir); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	args := []string{"--dbdir=" + dir, "--delay=" + strconv.Itoa(delay),
		"--whitelist-clients=/dev/null", "--whitelist-recipients=/dev/null"}
	if os.Geteuid() == 0 {
		if u, err := user.Lookup("postgrey"); err == nil {
			uid, _ := strconv.Atoi(u.Uid)
			gid, _ := strconv.Atoi(u.Gid)
			filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
				if err == nil {
					os.Chown(p, uid, gid)
				}
				return nil
			})
		}
	} else if u, err := user.Current(); err == nil {
		args = append(args, "--user="+u.Username)
	}
	return start(dir, 15*time.Second, nil, func(addr string) *exec.Cmd {
		return exec.Command(bin, append([]string{"--inet=" + addr}, args...)...)
	})
}

// RedisSettings are the settings, beyond Redis's defaults, that the
// Ansible role writes into the Redis it runs for policyd's state
// (ansible/roles/mailnode/templates/redis.conf.j2; a test keeps the two
// alike), one "name value" each:
//
//   - hz 100: Redis's active expiry runs in its cron, at most a quarter of
//     each tick, so with the default 10 ticks a second a mass expiry
//     (millions of greylist entries ageing out together) holds every
//     client up to 25 ms at a time; at 100 a tick it is 2.5 ms, for the
//     same share of the CPU.
//   - activerehashing no: the cron also gives a hash table that is being
//     resized a millisecond per tick (per table); at 100 ticks that raised
//     the p99 of a stream of new greylist entries on 10 million stored
//     keys from 0.7 to 2.3 ms. Without it a resize advances a step with
//     every command that touches the table, as it does anyway.
//
// docs/scaling.md has the figures with and without them.
var RedisSettings = []string{"hz 100", "activerehashing no"}

// StartRedis runs redis-server with RedisSettings on a loopback port
// without persistence and waits until it answers PING.
func StartRedis() (*Process, error) { return StartRedisWith(RedisSettings) }

// StartRedisWith is StartRedis with other settings ("name value" each, as
// in redis.conf), e.g. "hz 10" for Redis's own default.
func StartRedisWith(settings []string) (*Process, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server: %w (apt-get install redis-server)", ErrNotInstalled)
	}
	if _, err := redisArgs("0", "", settings); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "redis-")
	if err != nil {
		return nil, err
	}
	return start(dir, 10*time.Second, pingRedis, func(addr string) *exec.Cmd {
		_, port, _ := net.SplitHostPort(addr)
		args, _ := redisArgs(port, dir, settings)
		return exec.Command(bin, args...)
	})
}

// redisArgs is the command line of a test Redis on a loopback port,
// without persistence, in dir, with settings ("name value" each).
func redisArgs(port, dir string, settings []string) ([]string, error) {
	args := []string{"--port", port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", dir}
	for _, s := range settings {
		name, value, ok := strings.Cut(strings.TrimSpace(s), " ")
		if !ok || name == "" {
			return nil, fmt.Errorf("redis setting %q: want \"name value\"", s)
		}
		args = append(args, "--"+name, strings.TrimSpace(value))
	}
	return args, nil
}

// TB is the part of testing.TB that Redis and Postgrey use.
type TB interface {
	Helper()
	Skip(args ...any)
	Fatal(args ...any)
	Cleanup(func())
}

// Redis starts redis-server (StartRedis) for one test or benchmark and
// stops it when that ends. The test fails when redis-server is not
// installed (skips under -short) or does not start.
func Redis(t TB) *Process {
	t.Helper()
	p, err := StartRedis()
	return started(t, p, err)
}

// Postgrey starts postgrey (StartPostgrey) for one test or benchmark as
// Redis does redis-server.
func Postgrey(t TB, delay int) *Process {
	t.Helper()
	p, err := StartPostgrey(delay)
	return started(t, p, err)
}

func started(t TB, p *Process, err error) *Process {
	t.Helper()
	check(t, err)
	t.Cleanup(p.Stop)
	return p
}

// check ends the test when a start failed; a program that is not
// installed fails it too (skips under -short: testpeer).
func check(t TB, err error) {
	t.Helper()
	if errors.Is(err, ErrNotInstalled) {
		testpeer.Missing(t, "%v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// URL is the redis:// URL of a Redis started by StartRedis (database 0).
func (p *Process) URL() string { return "redis://" + p.Addr + "/0" }

func pingRedis(c net.Conn) bool {
	c.SetDeadline(time.Now().Add(time.Second))
	fmt.Fprintf(c, "PING\r\n")
	buf := make([]byte, 7)
	n, _ := io.ReadFull(c, buf)
	return string(buf[:n]) == "+PONG\r\n"
}

// start runs the command mk makes for a free loopback address and waits
// until the address accepts connections (and ready says yes, when given).
func start(dir string, wait time.Duration, ready func(net.Conn) bool, mk func(addr string) *exec.Cmd) (*Process, error) {
	port, err := FreePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	p := &Process{Addr: fmt.Sprintf("127.0.0.1:%d", port), Dir: dir, mk: mk, ready: ready}
	if err := p.launch(wait); err != nil {
		p.Stop()
		return nil, err
	}
	return p, nil
}

// launch runs the command for p.Addr, its output appended to Dir/out.log,
// and waits until it is ready.
func (p *Process) launch(wait time.Duration) error {
	if p.log != nil {
		p.log.Close()
	}
	var err error
	if p.log, err = os.OpenFile(filepath.Join(p.Dir, "out.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
		return err
	}
	p.cmd = p.mk(p.Addr)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.exited = nil
	if err := p.cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	p.exited = exited
	go func() { p.cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(wait)
	for {
		if c, err := net.DialTimeout("tcp", p.Addr, 200*time.Millisecond); err == nil {
			ok := p.ready == nil || p.ready(c)
			c.Close()
			if ok {
				return nil
			}
		}
		select {
		case <-exited:
			return fmt.Errorf("%s exited before listening on %s:\n%s", filepath.Base(p.cmd.Path), p.Addr, p.Log())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not listen on %s within %s:\n%s", filepath.Base(p.cmd.Path), p.Addr, wait, p.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Pid is the process id (0 when not running).
func (p *Process) Pid() int {
	if p == nil || p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Clock is a settable clock for tests, safe for concurrent use. Its Now
// method is a state.Clock.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a Clock set to 2026-03-02 09:00 UTC.
func NewClock() *Clock {
	return &Clock{t: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Add moves the clock by d.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}
