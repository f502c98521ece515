package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mailnode/mailnode/state/statetest"
	"github.com/mailnode/mailnode/test/loadgen"
	"github.com/mailnode/mailnode/test/procstat"
)

func greylistCommand() *cli.Command {
	return &cli.Command{
		Name:  "greylist",
		Usage: "the same greylisting request stream against mailnode policyd (bbolt, Redis) and Debian's postgrey",
		Description: `Starts, on loopback ports with private directories: postgrey (--delay 1), a
redis-server, and "mailnode policyd" processes (--mailnode) greylisting
with a 1 s delay: one on a bbolt file, one on that Redis, and (redis-2n) two
sharing a second Redis, as two nodes of a tier do, the connections split
between them. Then replays the
same Postfix policy request stream against each over -c persistent
connections (one request in flight per connection, as Postfix does):

  new    -n triplets never seen before: every reply must be a deferral
         (policyd: 450 4.7.1 Greylisted...; postgrey: DEFER_IF_PERMIT)
  known  -n requests cycling over --pool triplets that were seen and
         passed greylisting first: every reply must be a pass

and prints decisions/s, p50, p99 and the ratio to postgrey, with the load
average before and after (the figures are only comparable on an idle
machine; the servers run one after the other, so all see the same load).`,
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "c", Value: 8, Usage: "persistent connections"},
			&cli.IntFlag{Name: "n", Value: 20000, Usage: "requests per server and stream"},
			&cli.IntFlag{Name: "pool", Value: 2000, Usage: "known triplets"},
			&cli.StringSliceFlag{Name: "server", Value: cli.NewStringSlice("postgrey", "bbolt", "redis", "redis-2n"), Usage: "servers to run: postgrey, bbolt, redis, redis-2n (two policyd on one Redis)"},
			mailnodeFlag(),
		},
		Action: runBenchGreylist,
	}
}

// benchServer is one greylisting policy server under test.
type benchServer struct {
	name string
	addr string // 127.0.0.1:PORT
	// metrics is policyd's /metrics address ("" for other servers).
	metrics string
	addrs   []string // several servers sharing the load (redis-2n); nil: addr alone
	pid     int
	pids    []int // with addrs: every server's process
	stop    func()
	redis   string // the Redis the server keeps its state in ("" for none)
	// redisBase is that Redis's used_memory before the run.
	redisBase int64
}

// cpu is the user+system time of the server's processes so far.
func (s *benchServer) cpu() time.Duration {
	if len(s.pids) == 0 {
		c, _ := procstat.CPU(s.pid)
		return c
	}
	var sum time.Duration
	for _, p := range s.pids {
		c, _ := procstat.CPU(p)
		sum += c
	}
	return sum
}

// majFlt is the server's page faults that waited for the disk so far
// (policyd's: a decision reading a page of the bbolt file not in memory).
func (s *benchServer) majFlt() int64 {
	st, _ := procstat.Read(s.pid)
	return st.MajFlt
}

func runBenchGreylist(cx *cli.Context) error {
	conns, n, poolSize := cx.Int("c"), cx.Int("n"), cx.Int("pool")
	if conns < 1 || n < conns || poolSize < 1 {
		return cli.Exit("bench greylist: need -c >= 1, -n >= -c, --pool >= 1", 2)
	}
	dir, err := os.MkdirTemp("", "mailnode-bench-greylist-")
	if err != nil {
		return cli.Exit(fmt.Sprintf("bench greylist: %v", err), 1)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)

	var servers []*benchServer
	defer func() {
		for _, s := range servers {
			s.stop()
		}
	}()
	mailnode, err := mailnodeBinary(cx)
	if err != nil {
		return cli.Exit(fmt.Sprintf("bench greylist: %v", err), 2)
	}
	var redis *statetest.Process
	for _, name := range cx.StringSlice("server") {
		var s *benchServer
		switch name {
		case "postgrey":
			p, err := statetest.StartPostgrey(1)
			if err != nil {
				return cli.Exit(fmt.Sprintf("bench greylist: %v", err), 1)
			}
			s = &benchServer{name: name, addr: p.Addr, pid: p.Pid(), stop: p.Stop}
		case "bbolt":
			s, err = startBenchPolicyd(mailnode, dir, name, "{backend: bbolt, path: "+filepath.Join(dir, "state.db")+"}")
		case "redis":
			if redis == nil {
				if redis, err = statetest.StartRedis(); err != nil {
					return cli.Exit(fmt.Sprintf("bench greylist: %v", err), 1)
				}
				defer redis.Stop()
			}
			s, err = startBenchPolicyd(mailnode, dir, name, `{backend: redis, url: "`+redis.URL()+`"}`)
			if s != nil {
				s.redis = redis.Addr
			}
		case "redis-2n":
			// A Redis of their own: the other line's triplets are not theirs.
			shared, err := statetest.StartRedis()
			if err != nil {
				return cli.Exit(fmt.Sprintf("bench greylist: %v", err), 1)
			}
			defer shared.Stop()
			var ps []*benchServer
			for _, node := range []string{"redis-2n-a", "redis-2n-b"} {
				p, err := startBenchPolicyd(mailnode, dir, node, `{backend: redis, url: "`+shared.URL()+`"}`)
				if err != nil {
					for _, p := range ps {
						p.stop()
					}
					return cli.Exit(fmt.Sprintf("bench greylist: %s: %v", node, err), 1)
				}
				ps = append(ps, p)
			}
			s = &benchServer{name: name, addr: ps[0].addr, addrs: []string{ps[0].addr, ps[1].addr},
				pid: ps[0].pid, pids: []int{ps[0].pid, ps[1].pid}, stop: func() { ps[0].stop(); ps[1].stop() }, redis: shared.Addr}
		default:
			return cli.Exit(fmt.Sprintf("bench greylist: unknown server %q (postgrey, bbolt, redis, redis-2n)", name), 2)
		}
		if err != nil {
			return cli.Exit(fmt.Sprintf("bench greylist: %s: %v", name, err), 1)
		}
		servers = append(servers, s)
	}

	for _, s := range servers {
		if s.redis != "" {
			_, s.redisBase = redisMemory(s.redis)
		}
	}
	fmt.Printf("greylisting side by side: %d connections, %d requests per server and stream, %d known triplets\n", conns, n, poolSize)
	fmt.Printf("load average before: %s\n", loadAvg())

	// Known triplets: asked once (deferred), then after the 1 s delay again (passed).
	pool := loadgen.GreylistStream("example.com", 0, poolSize)
	run := func(s *benchServer, mix []loadgen.Item, requests int) (loadgen.Result, error) {
		return loadgen.Run(loadgen.Config{Network: "tcp", Addr: s.addr, Addrs: s.addrs, Conns: conns, Requests: requests, Mix: mix})
	}
	for _, s := range servers {
		res, err := run(s, pool, len(pool))
		if err != nil {
			return cli.Exit(fmt.Sprintf("bench greylist: seeding %s: %v", s.name, err), 1)
		}
		if bad := res.Requests - deferrals(res); bad != 0 {
			return cli.Exit(fmt.Sprintf("bench greylist: seeding %s: %d of %d new triplets not deferred: %v", s.name, bad, res.Requests, res.Replies), 1)
		}
	}
	time.Sleep(1100 * time.Millisecond)
	for _, s := range servers {
		res, err := run(s, pool, len(pool))
		if err != nil {
			return cli.Exit(fmt.Sprintf("bench greylist: passing %s: %v", s.name, err), 1)
		}
		if d := deferrals(res); d != 0 {
			return cli.Exit(fmt.Sprintf("bench greylist: %s: %d triplets still deferred after the delay: %v", s.name, d, res.Replies), 1)
		}
	}

	type row struct {
		res      loadgen.Result
		cpuPer   time.Duration
		redisPer time.Duration // the Redis server's CPU per decision
	}
	results := map[string]row{}
	fresh := loadgen.GreylistStream("example.com", poolSize, n) // the same new triplets for every server
	for _, kind := range []string{"new", "known"} {
		for _, s := range servers {
			mix := fresh
			if kind == "known" {
				mix = pool
			}
			cpu0, rcpu0 := s.cpu(), redisCPU(s.redis)
			res, err := run(s, mix, n)
			if err != nil {
				return cli.Exit(fmt.Sprintf("bench greylist: %s %s: %v", s.name, kind, err), 1)
			}
			cpu1, rcpu1 := s.cpu(), redisCPU(s.redis)
			want := res.Requests
			if kind == "known" {
				want = 0
			}
			if d := deferrals(res); d != want {
				return cli.Exit(fmt.Sprintf("bench greylist: %s %s: %d deferrals of %d requests, want %d: %v", s.name, kind, d, res.Requests, want, res.Replies), 1)
			}
			results[kind+"/"+s.name] = row{res, (cpu1 - cpu0) / time.Duration(res.Requests), (rcpu1 - rcpu0) / time.Duration(res.Requests)}
		}
	}
	fmt.Printf("load average after:  %s\n\n", loadAvg())
	fmt.Printf("%-6s %-9s %12s %9s %9s %10s %9s %8s\n", "stream", "server", "decisions/s", "p50", "p99", "server CPU", "Redis CPU", "ratio")
	for _, kind := range []string{"new", "known"} {
		base := results[kind+"/postgrey"].res.PerSecond
		for _, s := range servers {
			r := results[kind+"/"+s.name]
			ratio := "-"
			if base > 0 {
				ratio = fmt.Sprintf("%.1fx", r.res.PerSecond/base)
			}
			rc := "-"
			if s.redis != "" {
				rc = fmt.Sprintf("%.1fµs", float64(r.redisPer.Nanoseconds())/1e3)
			}
			fmt.Printf("%-6s %-9s %12.0f %9s %9s %8.0fµs %9s %8s\n", kind, s.name, r.res.PerSecond,
				r.res.P50.Round(time.Microsecond), r.res.P99.Round(time.Microsecond), float64(r.cpuPer.Nanoseconds())/1e3, rc, ratio)
		}
	}
	fmt.Println("(server CPU: user+system time of the server process per decision, both processes for redis-2n;")
	fmt.Println(" Redis CPU: the redis-server's used_cpu_user+sys per decision, one script call each;")
	fmt.Println(" redis-2n: two policyd on one Redis, the connections split between them; ratio: decisions/s over postgrey's)")
	for _, s := range servers {
		if s.redis == "" {
			continue
		}
		// The keys are the triplets (the seeded pool, the new stream) and
		// the clients that passed; the empty server's memory is subtracted.
		keys, used := redisMemory(s.redis)
		if keys > 0 && used > s.redisBase {
			fmt.Printf("%s: Redis holds %d keys (triplets, clients) in %.1f MiB used_memory above the empty server: %.0f bytes per key\n",
				s.name, keys, float64(used-s.redisBase)/(1<<20), float64(used-s.redisBase)/float64(keys))
		}
	}
	return nil
}

// deferrals counts the replies that defer: policyd's 450, postgrey's DEFER_IF_PERMIT.
func deferrals(r loadgen.Result) int {
	return r.Replies["450"] + r.Replies["DEFER_IF_PERMIT"]
}

// startBenchPolicyd runs the mailnode binary as policyd on a loopback port
// with a minimal inventory: one local domain, greylisting with a 1 s delay
// on the given policy.state.
func startBenchPolicyd(mailnode, dir, name, stateYAML string) (*benchServer, error) {
	port, err := statetest.FreePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	mport, err := statetest.FreePort()
	if err != nil {
		return nil, err
	}
	metrics := fmt.Sprintf("127.0.0.1:%d", mport)
	inv := filepath.Join(dir, name+".yaml")
	doc := `node: {hostname: mx1.bench.test, trusted_networks: [127.0.0.0/8]}
policy:
  listen: "inet:` + addr + `"
  metrics_listen: "` + metrics + `"
  greylist: {enabled: true, delay: 1s, retry_window: 48h, auto_whitelist_after: 5, expire: 840h}
  state: ` + stateYAML + `
unix_users: [root]
domains:
  - name: example.com
    mailboxes: [{user: alice, password: "{SHA512-CRYPT}$6$x"}]
`
	if err := os.WriteFile(inv, []byte(doc), 0o644); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(mailnode, "policyd", "--inventory", inv, "--maillog", "off", "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = io.Discard, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("policyd exited (%v): %s", err, strings.TrimSpace(string(b)))
		default:
		}
		if time.Now().After(deadline) {
			stop()
			return nil, errors.New("policyd did not listen on " + addr)
		}
	}
	return &benchServer{name: name, addr: addr, metrics: metrics, pid: cmd.Process.Pid, stop: stop}, nil
}

// counter reads one unlabelled counter from the server's /metrics (policyd's).
func (b *benchServer) counter(name string) (float64, error) {
	if b.metrics == "" {
		return 0, errors.New("no metrics address")
	}
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + b.metrics + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s: no %s", b.metrics, name)
}

// loadAvg is /proc/loadavg's three load averages.
func loadAvg() string {
	l, err := procstat.LoadAvg()
	if err != nil {
		return "unknown"
	}
	return fmt.Sprintf("%.2f %.2f %.2f (1, 5, 15 min)", l[0], l[1], l[2])
}

// redisMemory is a Redis's key count (DBSIZE) and INFO memory's used_memory.
func redisMemory(addr string) (keys, used int64) {
	if r, err := statetest.Command(addr, "DBSIZE"); err == nil && len(r) == 1 {
		keys, _ = strconv.ParseInt(r[0], 10, 64)
	}
	if r, err := statetest.Command(addr, "INFO", "memory"); err == nil && len(r) == 1 {
		for _, l := range strings.Split(r[0], "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "used_memory:"); ok {
				used, _ = strconv.ParseInt(v, 10, 64)
			}
		}
	}
	return keys, used
}

// redisCPU is a Redis's used_cpu_user + used_cpu_sys (INFO cpu); 0 for addr "".
func redisCPU(addr string) time.Duration {
	if addr == "" {
		return 0
	}
	r, err := statetest.Command(addr, "INFO", "cpu")
	if err != nil || len(r) != 1 {
		return 0
	}
	var sum float64
	for _, l := range strings.Split(r[0], "\n") {
		l = strings.TrimSpace(l)
		for _, k := range []string{"used_cpu_user:", "used_cpu_sys:"} {
			if v, ok := strings.CutPrefix(l, k); ok {
				f, _ := strconv.ParseFloat(v, 64)
				sum += f
			}
		}
	}
	return time.Duration(sum * float64(time.Second))
}
