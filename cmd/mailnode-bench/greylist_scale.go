package main

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"math/bits"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/mailnode/mailnode/state"
	"github.com/mailnode/mailnode/state/statetest"
	"github.com/mailnode/mailnode/test/loadgen"
	"github.com/mailnode/mailnode/test/procstat"
)

func greylistScaleCommand() *cli.Command {
	return &cli.Command{
		Name:  "greylist-scale",
		Usage: "greylisting with millions of stored triplets: policyd on bbolt and Redis, postgrey for the ratio",
		Description: `Fills each store with --prefill triplets in bulk, in the format the store
itself writes (state.TripletEntry: passed triplets last used within the
past 30 days; with --expired F that share of them expired days ago), then
starts the server on it and replays over -c connections:

  check  every prefilled triplet sampled (--check of them) that is expired
         must be deferred; this and "known" show the server reads the
         prefilled entries as its own
  new    -n triplets never seen, each next to a prefilled one in key order
         (scattered over the whole store): every reply a deferral
  known  -n distinct prefilled live triplets picked at random: every
         reply a pass (each refreshes its entry, as a triplet seen again
         after hours does)

--settle (3 s) apart, so that the known stream does not run while bbolt
still commits the backlog the new one left (up to MaxLag, 1 s; with the
streams back to back, --settle 0, the 20,000-request known stream ran with
the disk behind for most of its requests and its p99 measured that).
--known-first runs the known stream first: with bbolt, the first stream
that writes many pages grows the file (and policyd's heap) and pays for
it, and new triplets (in the small tree of waiting entries) no longer
write enough to grow it, so in the usual order the known stream pays what
the new one paid before; the reverse order shows where that cost went.

and prints decisions/s, p50, p99, the ratio to postgrey, the load loader's
rate, and the store's bytes and resident memory per million entries
(bbolt: file size and policyd's RSS; Redis: used_memory and the
redis-server's RSS; postgrey: postgrey.db and its RSS).

postgrey is filled with at most --postgrey-prefill triplets (its Berkeley DB
through perl's BerkeleyDB module, key "net/sender/recipient", value
"first,last" in seconds, as postgrey writes).

--sweep D then keeps the decisions going for D in rounds of --round
requests (new and known alternating, on triplets not asked before, paced
at --rate) and prints each round's p99: with
--expired the bbolt sweeper's first pass (SweepInterval, 1 min after
policyd starts) deletes the expired entries meanwhile; in Redis the
expired share is loaded to expire from --redis-expire-in after the
prefill began, spread over --redis-expire-over (100 s: about as long as
bbolt's pass over 10 M entries takes),
and Redis's own expiry cycle deletes them. Afterwards the bbolt file is
counted: entries left, expired left.

--ladder R1,R2,... instead runs, 3 s after the streams (their backlog
committed), a round of new and a
round of known triplets at each rate in turn (--ladder-step each, fresh
triplets, every reply checked), paced, with each latency measured from
the time its request fell due: a server that cannot keep the pace is
charged the wait it causes, as a client arriving on time would see it.
The unpaced streams measure p99 where the machine is saturated (the load
generator and the server share its cores); the ladder shows p99 at rates
below that, and the highest rate at which both rounds keep p99 under
2 ms is printed with the store's figures. Each round also shows the
server's page faults a second that waited for the disk.`,
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "prefill", Value: 1_000_000, Usage: "triplets stored before the run"},
			&cli.IntFlag{Name: "postgrey-prefill", Value: 1_000_000, Usage: "at most this many for postgrey"},
			&cli.Float64Flag{Name: "expired", Value: 0, Usage: "share of the prefilled triplets that are expired (0..1)"},
			&cli.BoolFlag{Name: "cold", Usage: "bbolt: drop the state file's pages from the page cache before policyd starts, as after a reboot of the machine"},
			&cli.IntFlag{Name: "c", Value: 8, Usage: "persistent connections"},
			&cli.IntFlag{Name: "n", Value: 20000, Usage: "requests per server and stream"},
			&cli.IntFlag{Name: "check", Value: 2000, Usage: "expired triplets sampled for the check stream"},
			&cli.DurationFlag{Name: "sweep", Value: 0, Usage: "after the streams, keep deciding this long in rounds (0: not)"},
			&cli.IntFlag{Name: "round", Value: 25000, Usage: "requests per round with --sweep"},
			&cli.Float64Flag{Name: "rate", Value: 5000, Usage: "with --sweep, requests per second over all connections (0: as fast as the replies come)"},
			&cli.StringFlag{Name: "ladder", Usage: "after the streams, paced rounds at each of these rates (decisions/s, ascending, comma-separated), latency from each request's due time; prints the highest rate whose p99 stays under 2 ms (not with --sweep)"},
			&cli.DurationFlag{Name: "settle", Value: settle, Usage: "pause between the new and the known stream (0: back to back)"},
			&cli.BoolFlag{Name: "known-first", Usage: "run the known stream before the new one"},
			&cli.DurationFlag{Name: "ladder-step", Value: 5 * time.Second, Usage: "with --ladder, how long each round lasts at its rate (a new and a known round per rate)"},
			&cli.DurationFlag{Name: "redis-expire-in", Value: 3 * time.Minute, Usage: "with --expired, when Redis's expired share begins to expire, from the start of the prefill"},
			&cli.DurationFlag{Name: "redis-expire-over", Value: 100 * time.Second, Usage: "with --expired, how long Redis's expired share takes to expire (spread evenly)"},
			&cli.StringSliceFlag{Name: "redis-setting", Value: cli.NewStringSlice(statetest.RedisSettings...), Usage: "a redis.conf line (\"name value\") for the Redis started; the default is what the Ansible role writes (\"hz 10\" is Redis's own)"},
			&cli.StringSliceFlag{Name: "server", Value: cli.NewStringSlice("postgrey", "bbolt", "redis"), Usage: "servers to run: postgrey, bbolt, redis"},
			&cli.StringFlag{Name: "dir", Value: os.TempDir(), Usage: "where the state files go (removed afterwards)"},
			mailnodeFlag(),
		},
		Action: runBenchGreylistScale,
	}
}

// The greylisting settings of startBenchPolicyd's inventory.
const (
	scaleWindow = 48 * time.Hour
	scaleExpire = 840 * time.Hour
	scaleDomain = "example.com"
)

// scaleTriplet is prefilled triplet i (variant "") or the never-seen triplet
// next to it (variant "n"). Keys sort as i does (every octet of the client
// has three digits, the sender number eight), so a bulk load appends; the
// never-seen triplet's key sorts right after triplet i's.
func scaleTriplet(i int, variant string) state.Triplet {
	j := i / 256
	return state.Triplet{
		Client:    fmt.Sprintf("%d.%d.%d.%d", 100+j/22500, 100+j/150%150, 100+j%150, 1+i%250),
		Sender:    fmt.Sprintf("s%08d%s@sender%d.test", i, variant, i%97),
		Recipient: fmt.Sprintf("u%d@%s", i%500, scaleDomain),
	}
}

// postgreyKey is postgrey's key for scaleTriplet's triplets: the client's
// /24 network address, the sender (no extension, BATV tag or lone digits
// in these), the recipient, lower-cased.
func postgreyKey(t state.Triplet) string {
	a := strings.Split(t.Client, ".")
	return strings.ToLower(a[0] + "." + a[1] + "." + a[2] + ".0/" + t.Sender + "/" + t.Recipient)
}

func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// scaleTimes is when prefilled triplet i was first and last seen and how
// often it passed, and whether it is expired, as of now.
func scaleTimes(i int, now time.Time, expired float64) (first, last time.Time, passes int, dead bool) {
	h := mix64(uint64(i))
	dead = float64(h%1_000_000) < expired*1_000_000
	if dead {
		// Last used 1 h to 6 days beyond expiry.
		last = now.Add(-scaleExpire - time.Hour - time.Duration(h>>20%uint64(5*24*time.Hour/time.Millisecond))*time.Millisecond)
	} else {
		last = now.Add(-time.Duration(h>>20%uint64(30*24*time.Hour/time.Millisecond)) * time.Millisecond)
	}
	return last.Add(-26 * time.Hour), last, 1 + int(h>>8%4), dead
}

// stride is a step coprime to n, so i*stride mod n visits distinct indices.
func stride(n int) int {
	s := 1_000_003
	for gcd(s, n) != 1 {
		s += 2
	}
	return s
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// scalePick is the k-th of a pseudo-random walk over [0, n) without repeats.
func scalePick(k, n, offset int) int {
	hi, lo := bits.Mul64(uint64(k), uint64(stride(n)))
	_, r := bits.Div64(hi%uint64(n), lo, uint64(n))
	return int((r + uint64(offset)) % uint64(n))
}

type scaleResult struct {
	server          string
	prefilled       int
	loadTime        time.Duration
	stateBytes      int64 // file or used_memory
	rss             int64
	rows            map[string]loadgen.Result
	cpu             map[string]time.Duration // the server's CPU per decision (with Redis: policyd's plus Redis's)
	note            string
	stateWhat, rssW string
}

// onSignal holds what to stop and remove should the run be interrupted
// (SIGINT, SIGTERM): the servers and the gigabytes of state files.
var onSignal struct {
	sync.Mutex
	fs map[int]func()
	n  int
}

// atSignal registers f and returns the function that unregisters it.
func atSignal(f func()) func() {
	onSignal.Lock()
	defer onSignal.Unlock()
	if onSignal.fs == nil {
		onSignal.fs = map[int]func(){}
	}
	id := onSignal.n
	onSignal.n++
	onSignal.fs[id] = f
	return func() {
		onSignal.Lock()
		delete(onSignal.fs, id)
		onSignal.Unlock()
	}
}

func runBenchGreylistScale(cx *cli.Context) error {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	go func() {
		s, ok := <-sig
		if !ok {
			return
		}
		onSignal.Lock()
		for id := onSignal.n; id >= 0; id-- { // the last registered first
			if f := onSignal.fs[id]; f != nil {
				f()
			}
		}
		fmt.Fprintf(os.Stderr, "bench greylist-scale: %v: servers stopped, state removed\n", s)
		os.Exit(1)
	}()

	prefill, conns, n := cx.Int("prefill"), cx.Int("c"), cx.Int("n")
	expired := cx.Float64("expired")
	if prefill < 1 || prefill >= 100_000_000 || conns < 1 || n < conns || expired < 0 || expired > 1 {
		return cli.Exit("bench greylist-scale: need 1 <= --prefill < 100,000,000, -c >= 1, -n >= -c, 0 <= --expired <= 1", 2)
	}
	if l := cx.String("ladder"); l != "" {
		if cx.Duration("sweep") > 0 {
			return cli.Exit("bench greylist-scale: --ladder and --sweep: one at a time", 2)
		}
		if _, err := parseRates(l); err != nil {
			return cli.Exit("bench greylist-scale: "+err.Error(), 2)
		}
		if cx.Duration("ladder-step") < 100*time.Millisecond {
			return cli.Exit("bench greylist-scale: --ladder-step below 100ms measures nothing", 2)
		}
	}
	mailnode, err := mailnodeBinary(cx)
	if err != nil {
		return cli.Exit(fmt.Sprintf("bench greylist-scale: %v", err), 2)
	}
	dir, err := os.MkdirTemp(cx.String("dir"), "mailnode-bench-greylist-scale-")
	if err != nil {
		return cli.Exit(fmt.Sprintf("bench greylist-scale: %v", err), 1)
	}
	defer os.RemoveAll(dir)
	defer atSignal(func() { os.RemoveAll(dir) })()
	os.Chmod(dir, 0o755)

	first := "new"
	if cx.Bool("known-first") {
		first = "known"
	}
	fmt.Printf("greylisting at scale: %d prefilled triplets (%.0f%% expired), %d connections, %d requests per stream, the %s stream first, %s between the streams\n",
		prefill, expired*100, conns, n, first, cx.Duration("settle"))
	fmt.Printf("load average before: %s\n", loadAvg())
	var results []scaleResult
	for _, name := range cx.StringSlice("server") {
		var r scaleResult
		var err error
		switch name {
		case "bbolt", "redis", "postgrey":
			r, err = scaleOne(cx, name, mailnode, dir, prefill, expired)
		default:
			return cli.Exit(fmt.Sprintf("bench greylist-scale: unknown server %q (postgrey, bbolt, redis)", name), 2)
		}
		if err != nil {
			return cli.Exit(fmt.Sprintf("bench greylist-scale: %s: %v", name, err), 1)
		}
		results = append(results, r)
	}
	fmt.Printf("load average after:  %s\n\n", loadAvg())

	var base map[string]loadgen.Result
	for _, r := range results {
		if r.server == "postgrey" {
			base = r.rows
		}
	}
	fmt.Printf("%-9s %10s %-6s %12s %9s %9s %9s %10s %8s\n", "server", "prefilled", "stream", "decisions/s", "p50", "p99", "max", "server CPU", "ratio")
	for _, r := range results {
		for _, kind := range []string{"new", "known"} {
			res := r.rows[kind]
			ratio := "-"
			if b, ok := base[kind]; ok && b.PerSecond > 0 {
				ratio = fmt.Sprintf("%.1fx", res.PerSecond/b.PerSecond)
			}
			fmt.Printf("%-9s %10d %-6s %12.0f %9s %9s %9s %8.1fµs %8s\n", r.server, r.prefilled, kind, res.PerSecond,
				res.P50.Round(time.Microsecond), res.P99.Round(time.Microsecond), res.Max.Round(time.Microsecond),
				float64(r.cpu[kind].Nanoseconds())/1e3, ratio)
		}
	}
	fmt.Println("(server CPU: user+system time per decision of the server process, for redis policyd's plus redis-server's;")
	fmt.Println(" ratio: decisions/s over postgrey's, whose store may hold fewer triplets: --postgrey-prefill)")
	fmt.Println()
	for _, r := range results {
		m := float64(r.prefilled) / 1e6
		fmt.Printf("%-9s loaded %d in %s (%.0f/s); %s %.1f MiB (%.1f MiB per million); %s %.1f MiB (%.1f MiB per million)%s\n",
			r.server, r.prefilled, r.loadTime.Round(time.Millisecond), float64(r.prefilled)/r.loadTime.Seconds(),
			r.stateWhat, float64(r.stateBytes)/(1<<20), float64(r.stateBytes)/(1<<20)/m,
			r.rssW, float64(r.rss)/(1<<20), float64(r.rss)/(1<<20)/m, r.note)
	}
	return nil
}

// scaleOne fills one server's store, starts it and runs the streams.
func scaleOne(cx *cli.Context, name, mailnode, dir string, prefill int, expired float64) (scaleResult, error) {
	conns, n := cx.Int("c"), cx.Int("n")
	r := scaleResult{server: name, prefilled: prefill, rows: map[string]loadgen.Result{}, cpu: map[string]time.Duration{}}
	now := time.Now()
	var srv *benchServer
	var redis *statetest.Process
	var stateFile string
	switch name {
	case "bbolt":
		stateFile = filepath.Join(dir, "state.db")
		t0 := time.Now()
		i := 0
		loaded, err := state.LoadBolt(stateFile, 0, func() (state.Entry, bool) {
			if i == prefill {
				return state.Entry{}, false
			}
			first, last, passes, _ := scaleTimes(i, now, expired)
			e := state.TripletEntry(scaleTriplet(i, ""), first, last, passes, scaleWindow, scaleExpire)
			i++
			return e, true
		})
		if err != nil {
			return r, err
		}
		r.loadTime = time.Since(t0)
		if fi, err := os.Stat(stateFile); err == nil {
			r.stateBytes = fi.Size()
		}
		r.stateWhat = "file"
		r.prefilled = loaded
		if cx.Bool("cold") {
			if err := dropCache(stateFile); err != nil {
				return r, err
			}
			fmt.Printf("%s: the state file's pages dropped from the page cache (--cold)\n", name)
		}
		srv, err = startBenchPolicyd(mailnode, dir, name, "{backend: bbolt, path: "+stateFile+"}")
		if err != nil {
			return r, err
		}
		// policyd reads its file into the page cache in the background
		// as it starts; the streams begin once it has.
		t1 := time.Now()
		for deadline := t1.Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if v, err := srv.counter("mailnode_policy_state_file_read_bytes_total"); err != nil || v >= float64(r.stateBytes) {
				if err == nil {
					fmt.Printf("%s: policyd read its %.1f MiB file into the page cache in %s\n", name, float64(r.stateBytes)/(1<<20), time.Since(t1).Round(time.Millisecond))
				}
				break
			}
		}
	case "redis":
		var err error
		if redis, err = statetest.StartRedisWith(cx.StringSlice("redis-setting")); err != nil {
			return r, err
		}
		fmt.Printf("redis: settings beyond Redis's defaults: %s\n", strings.Join(cx.StringSlice("redis-setting"), ", "))
		defer redis.Stop()
		defer atSignal(redis.Stop)()
		_, base := redisMemory(redis.Addr)
		st, err := state.OpenRedis(context.Background(), redis.URL(), state.RedisOptions{})
		if err != nil {
			return r, err
		}
		t0 := time.Now()
		soon := now.Add(cx.Duration("redis-expire-in"))
		batch := make([]state.Entry, 0, 2000)
		for i := 0; i < prefill; i++ {
			first, last, passes, dead := scaleTimes(i, now, expired)
			if dead {
				// Loaded to expire soon (an expired one would not be stored).
				h := mix64(uint64(i) ^ 0x5eed)
				at := soon.Add(time.Duration(h % uint64(max(cx.Duration("redis-expire-over"), time.Millisecond))))
				e := state.TripletEntry(scaleTriplet(i, ""), first, now, passes, scaleWindow, scaleExpire)
				shift := at.Sub(e.ExpiresAt)
				first, last = first.Add(shift), now.Add(shift)
			}
			batch = append(batch, state.TripletEntry(scaleTriplet(i, ""), first, last, passes, scaleWindow, scaleExpire))
			if len(batch) == cap(batch) || i == prefill-1 {
				if err := st.Load(context.Background(), batch); err != nil {
					st.Close()
					return r, err
				}
				batch = batch[:0]
			}
		}
		st.Close()
		r.loadTime = time.Since(t0)
		keys, used := redisMemory(redis.Addr)
		r.prefilled = int(keys)
		r.stateBytes = used - base
		r.stateWhat = "used_memory"
		srv, err = startBenchPolicyd(mailnode, dir, name, `{backend: redis, url: "`+redis.URL()+`"}`)
		if err != nil {
			return r, err
		}
		srv.redis = redis.Addr
	case "postgrey":
		if p := cx.Int("postgrey-prefill"); p < prefill {
			prefill = p
		}
		r.prefilled = prefill
		expired = 0 // postgrey is the baseline of the live set only
		var pdir string
		t0 := time.Now()
		p, err := statetest.StartPostgreyWith(1, func(d string) error {
			pdir = d
			return fillPostgrey(d, prefill, now)
		})
		if err != nil {
			return r, err
		}
		r.loadTime = time.Since(t0)
		defer p.Stop()
		defer atSignal(p.Stop)()
		srv = &benchServer{name: name, addr: p.Addr, pid: p.Pid(), stop: p.Stop}
		stateFile = filepath.Join(pdir, "postgrey.db")
		if fi, err := os.Stat(stateFile); err == nil {
			r.stateBytes = fi.Size()
		}
		r.stateWhat = "postgrey.db"
	}
	started := time.Now()
	stopOnce := sync.OnceFunc(srv.stop) // bbolt's is stopped early, to count its file
	defer stopOnce()
	defer atSignal(stopOnce)()
	live := int(float64(prefill) * (1 - expired))
	if n > live {
		return r, fmt.Errorf("-n %d is more than the %d live prefilled triplets", n, live)
	}

	run := func(mix []loadgen.Item) (loadgen.Result, error) {
		return loadgen.Run(loadgen.Config{Network: "tcp", Addr: srv.addr, Conns: conns, Requests: len(mix), Mix: mix})
	}
	// The streams: distinct picks from prefilled triplets, so that every
	// request looks up a different key somewhere in the store.
	var newMix, knownMix, deadMix []loadgen.Item
	off := int(mix64(uint64(now.UnixNano())) % uint64(prefill))
	k := 0
	for ; len(newMix) < n || len(knownMix) < n || (len(deadMix) < cx.Int("check") && expired > 0); k++ {
		if k >= prefill {
			break
		}
		i := scalePick(k, prefill, off)
		_, _, _, dead := scaleTimes(i, now, expired)
		t := scaleTriplet(i, "")
		switch {
		case dead && len(deadMix) < cx.Int("check"):
			deadMix = append(deadMix, loadgen.GreylistItem(t.Client, t.Sender, t.Recipient))
		case !dead && len(knownMix) < n:
			knownMix = append(knownMix, loadgen.GreylistItem(t.Client, t.Sender, t.Recipient))
		}
		if len(newMix) < n {
			t := scaleTriplet(i, "n")
			newMix = append(newMix, loadgen.GreylistItem(t.Client, t.Sender, t.Recipient))
		}
	}
	if len(knownMix) < n || len(newMix) < n {
		return r, fmt.Errorf("could not pick %d live triplets", n)
	}
	if len(deadMix) > 0 && name != "redis" {
		res, err := run(deadMix)
		if err != nil {
			return r, fmt.Errorf("check: %v", err)
		}
		if d := deferrals(res); d != res.Requests {
			return r, fmt.Errorf("check: %d of %d expired prefilled triplets deferred, want all: %v", d, res.Requests, res.Replies)
		}
		fmt.Printf("%s: check: all %d sampled expired prefilled triplets deferred\n", name, res.Requests)
	}
	var waits []string // bbolt: what the writers' brake did in each stream
	order := []string{"new", "known"}
	if cx.Bool("known-first") {
		order = []string{"known", "new"}
	}
	for i, kind := range order {
		mix := newMix
		if kind == "known" {
			mix = knownMix
		}
		if i > 0 {
			time.Sleep(cx.Duration("settle"))
		}
		var w0 *boltCounts
		if name == "bbolt" {
			w0 = readBoltCounts(srv)
		}
		cpu0, rcpu0 := srv.cpu(), redisCPU(srv.redis)
		res, err := run(mix)
		if err != nil {
			return r, fmt.Errorf("%s: %v", kind, err)
		}
		r.cpu[kind] = (srv.cpu() - cpu0 + redisCPU(srv.redis) - rcpu0) / time.Duration(res.Requests)
		want := res.Requests
		if kind == "known" {
			want = 0
		}
		if d := deferrals(res); d != want {
			return r, fmt.Errorf("%s: %d deferrals of %d requests, want %d: %v", kind, d, res.Requests, want, res.Replies)
		}
		r.rows[kind] = res
		if w0 == nil {
			continue
		}
		if w := readBoltCounts(srv); w != nil {
			note := fmt.Sprintf("%s %.0f waited, %.0f refreshes dropped", kind, w.braked-w0.braked, w.dropped-w0.dropped)
			if w.prio && w0.prio {
				note += ", " + w.commitsSince(w0)
			}
			waits = append(waits, note)
		}
	}
	fmt.Printf("%s: new: all %d deferred; known: all %d sampled prefilled triplets passed\n", name, n, n)
	if len(waits) > 0 {
		fmt.Printf("%s: writers' brake (updates that waited for the disk; refreshes of passing entries dropped instead): %s\n", name, strings.Join(waits, "; "))
	}

	var ladderNote string
	if l := cx.String("ladder"); l != "" && name != "postgrey" {
		rates, _ := parseRates(l) // checked before
		var w0 *boltCounts        // bbolt only, as for the streams
		if name == "bbolt" {
			w0 = readBoltCounts(srv)
		}
		sum, err := ladderRounds(srv, rates, cx.Duration("ladder-step"), conns, prefill, off, &k, now, expired)
		if err != nil {
			return r, err
		}
		fmt.Printf("%s: %s\n", name, sum)
		if w0 != nil {
			if w := readBoltCounts(srv); w != nil && w.prio && w0.prio {
				fmt.Printf("%s: ladder: %s; updates that waited at the brake %.0f\n", name, w.commitsSince(w0), w.braked-w0.braked)
			}
		}
		ladderNote = "; " + sum
	}

	if d := cx.Duration("sweep"); d > 0 && name != "postgrey" {
		if err := sweepRounds(srv, redis, d, cx.Int("round"), cx.Float64("rate"), conns, prefill, off, k, now, started, expired); err != nil {
			return r, err
		}
	}

	switch name {
	case "bbolt":
		r.rss, _ = procstat.RSS(srv.pid)
		r.rssW = "policyd RSS"
	case "redis":
		r.rss = redisRSS(redis.Addr)
		r.rssW = "redis-server RSS"
		r.note = fmt.Sprintf(" (policyd RSS %.1f MiB)", float64(mustRSS(srv.pid))/(1<<20))
	case "postgrey":
		r.rss, _ = procstat.RSS(srv.pid)
		r.rssW = "postgrey RSS"
	}
	if name == "bbolt" {
		stopOnce()
		if fi, err := os.Stat(stateFile); err == nil {
			r.note = fmt.Sprintf(" (file after the run %.1f MiB)", float64(fi.Size())/(1<<20))
		}
		if cx.Duration("sweep") > 0 {
			total, dead, err := state.CountBolt(stateFile, time.Now())
			if err != nil {
				return r, err
			}
			r.note += fmt.Sprintf("; after the run the file holds %d entries, %d of them expired", total, dead)
		}
	}
	r.note += ladderNote
	return r, nil
}

func mustRSS(pid int) int64 {
	v, _ := procstat.RSS(pid)
	return v
}

// sweepRounds keeps deciding for d in rounds of round requests, new and
// known alternating, each round on triplets not asked before: new ones
// next to prefilled triplets, known ones prefilled live triplets further
// along the same walk as the streams'. It prints each round's figures.
func sweepRounds(srv *benchServer, redis *statetest.Process, d time.Duration, round int, rate float64, conns, prefill, off, from int, now, started time.Time, expired float64) error {
	pace := "as fast as the replies come"
	if rate > 0 {
		pace = fmt.Sprintf("paced at %.0f/s", rate)
	}
	fmt.Printf("%s: deciding for %s in rounds of %d on fresh triplets (new and known alternating), %s;\n", srv.name, d, round, pace)
	fmt.Printf("  \"at\": seconds since the server started (bbolt's first sweep pass begins at 60 s)\n")
	fmt.Printf("  \"server CPU\": the server process's user+system time over the round's time (the sweep shows there)\n")
	fmt.Printf("  %8s %-6s %12s %9s %9s %9s %10s %12s\n", "at", "stream", "decisions/s", "p50", "p99", "max", "server CPU", "Redis keys")
	start := time.Now()
	var worst, worstMax time.Duration
	k := from
	for r := 0; time.Since(start) < d; r++ {
		kind := "new"
		if r%2 == 1 {
			kind = "known"
		}
		items := freshMix(kind, round, &k, prefill, off, now, expired)
		cpu0 := srv.cpu()
		res, err := loadgen.Run(loadgen.Config{Network: "tcp", Addr: srv.addr, Conns: conns, Requests: round, Mix: items, Rate: rate})
		busy := float64(srv.cpu()-cpu0) / float64(res.Elapsed) * 100
		if err != nil {
			return fmt.Errorf("round %d: %v", r, err)
		}
		keys := "-"
		if redis != nil {
			n, _ := redisMemory(redis.Addr)
			keys = strconv.FormatInt(n, 10)
		}
		worst, worstMax = max(worst, res.P99), max(worstMax, res.Max)
		fmt.Printf("  %7.1fs %-6s %12.0f %9s %9s %9s %9.0f%% %12s\n", time.Since(started).Seconds(), kind, res.PerSecond,
			res.P50.Round(time.Microsecond), res.P99.Round(time.Microsecond), res.Max.Round(time.Microsecond), busy, keys)
	}
	fmt.Printf("%s: worst round p99 %s, worst max %s; load average now %s\n", srv.name, worst.Round(time.Microsecond), worstMax.Round(time.Microsecond), loadAvg())
	return nil
}

// freshMix is n requests of kind (new or known) on triplets not asked
// before, from position *k of the walk the streams took (which it
// advances): new ones next to prefilled triplets, known ones prefilled live
// triplets.
func freshMix(kind string, n int, k *int, prefill, off int, now time.Time, expired float64) []loadgen.Item {
	items := make([]loadgen.Item, 0, n)
	for len(items) < n {
		i := scalePick(*k%prefill, prefill, off)
		*k++
		var t state.Triplet
		if kind == "new" {
			t = scaleTriplet(i, fmt.Sprintf("r%d", *k/prefill))
		} else if _, _, _, dead := scaleTimes(i, now, expired); !dead {
			t = scaleTriplet(i, "")
		} else {
			continue
		}
		items = append(items, loadgen.GreylistItem(t.Client, t.Sender, t.Recipient))
	}
	return items
}

// ladderP99 is the p99 the ladder holds each rate to (the target
// at 10 M entries).
const ladderP99 = 2 * time.Millisecond

// settle is the pause between the unpaced streams and the ladder (and by
// default between the streams): the writes of a stream leave bbolt up to
// MaxLag (1 s) of updates to commit, which the next would be charged.
const settle = 3 * time.Second

// ladderRounds runs, at each rate in turn, a round of new and a round of
// known triplets lasting about step each, paced, every latency measured
// from the request's due time (loadgen.Config.FromDue: a server behind the
// pace is charged the wait). It checks every reply (new: deferred, known:
// passed), prints a line per round, stops climbing at a round that fails
// (no reply within the timeout: the store fell behind), and returns a
// sentence for the summary: the highest rate up to which both rounds kept
// p99 under ladderP99, and the first that did not.
func ladderRounds(srv *benchServer, rates []float64, step time.Duration, conns, prefill, off int, k *int, now time.Time, expired float64) (string, error) {
	time.Sleep(settle)
	fmt.Printf("%s: paced rounds, new then known, %s each at every rate, fresh triplets, %s after the streams; latency from each request's due time; faults/s: the server's page faults that waited for the disk\n", srv.name, step, settle)
	fmt.Printf("  %8s %-6s %12s %9s %9s %9s %10s %8s\n", "rate", "stream", "decisions/s", "p50", "p99", "max", "server CPU", "faults/s")
	held := 0.0
	climbing := true
	var first string // the first rate that missed, and why
	for _, rate := range rates {
		ok := true
		for _, kind := range []string{"new", "known"} {
			n := max(conns, int(rate*step.Seconds()))
			items := freshMix(kind, n, k, prefill, off, now, expired)
			cpu0, maj0 := srv.cpu(), srv.majFlt()
			res, err := loadgen.Run(loadgen.Config{Network: "tcp", Addr: srv.addr, Conns: conns, Requests: n, Mix: items, Rate: rate, FromDue: true})
			if err != nil {
				fmt.Printf("  %7.0f/s %-6s failed: %v\n", rate, kind, err)
				if first == "" {
					first = fmt.Sprintf("at %.0f/s the %s round failed (%v)", rate, kind, err)
				}
				return ladderSummary(held, first), nil
			}
			want := res.Requests
			if kind == "known" {
				want = 0
			}
			if d := deferrals(res); d != want {
				return "", fmt.Errorf("ladder at %.0f/s, %s: %d deferrals of %d requests, want %d: %v", rate, kind, d, res.Requests, want, res.Replies)
			}
			busy := float64(srv.cpu()-cpu0) / float64(res.Elapsed) * 100
			faults := float64(srv.majFlt()-maj0) / res.Elapsed.Seconds()
			fmt.Printf("  %7.0f/s %-6s %12.0f %9s %9s %9s %9.0f%% %8.0f\n", rate, kind, res.PerSecond,
				res.P50.Round(time.Microsecond), res.P99.Round(time.Microsecond), res.Max.Round(time.Microsecond), busy, faults)
			if res.P99 >= ladderP99 {
				ok = false
				if first == "" {
					first = fmt.Sprintf("first above: %.0f/s (%s p99 %s)", rate, kind, res.P99.Round(10*time.Microsecond))
				}
			}
		}
		if ok && climbing {
			held = rate
		}
		climbing = climbing && ok
	}
	return ladderSummary(held, first), nil
}

func ladderSummary(held float64, first string) string {
	s := fmt.Sprintf("paced p99 < %s up to %.0f/s", ladderP99, held)
	if held == 0 {
		s = fmt.Sprintf("paced p99 < %s at none of the rates", ladderP99)
	}
	if first != "" {
		s += "; " + first
	}
	return s
}

// parseRates reads "10000,20000" as ascending rates.
func parseRates(list string) ([]float64, error) {
	var rates []float64
	for _, f := range strings.Split(list, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || !(v > 0) || math.IsInf(v, 0) { // !(v > 0): NaN too
			return nil, fmt.Errorf("--ladder: %q is not a rate (decisions per second above 0)", f)
		}
		if len(rates) > 0 && v <= rates[len(rates)-1] {
			return nil, fmt.Errorf("--ladder: rates must ascend (%v after %v)", v, rates[len(rates)-1])
		}
		rates = append(rates, v)
	}
	return rates, nil
}

// redisRSS is INFO memory's used_memory_rss.
func redisRSS(addr string) int64 {
	r, err := statetest.Command(addr, "INFO", "memory")
	if err != nil || len(r) != 1 {
		return 0
	}
	for _, l := range strings.Split(r[0], "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "used_memory_rss:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

// postgreyFill is a perl program (postgrey is perl, and so is the module
// it keeps its database with) that stores "key<TAB>value" lines from its
// standard input in postgrey.db of the environment in the directory it is
// given, as postgrey opens it.
const postgreyFill = `use strict; use warnings; use BerkeleyDB;
my $dir = shift;
my $env = BerkeleyDB::Env->new(-Home => $dir, -Cachesize => 64 << 20,
    -Flags => DB_CREATE|DB_INIT_TXN|DB_INIT_MPOOL|DB_INIT_LOG)
    or die "env: $BerkeleyDB::Error\n";
my $db = BerkeleyDB::Btree->new(-Filename => 'postgrey.db', -Flags => DB_CREATE, -Env => $env)
    or die "db: $BerkeleyDB::Error\n";
my $n = 0;
while (my $l = <STDIN>) {
    chomp $l;
    my ($k, $v) = split /\t/, $l, 2;
    $db->db_put($k, $v) == 0 or die "put: $BerkeleyDB::Error\n";
    $n++;
}
$db->db_sync(); $db->db_close(); $env->txn_checkpoint(0, 0);
print "$n\n";
`

// fillPostgrey stores prefill passed triplets in postgrey's database in dir.
func fillPostgrey(dir string, prefill int, now time.Time) error {
	cmd := exec.Command("perl", "-e", postgreyFill, dir)
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("perl: %v", err)
	}
	w := bufio.NewWriterSize(in, 1<<20)
	for i := 0; i < prefill; i++ {
		first, last, _, _ := scaleTimes(i, now, 0)
		fmt.Fprintf(w, "%s\t%d,%d\n", postgreyKey(scaleTriplet(i, "")), first.Unix(), last.Unix())
	}
	werr := w.Flush()
	in.Close()
	if err := cmd.Wait(); err != nil || werr != nil {
		return fmt.Errorf("filling postgrey's database: %v %v: %s", err, werr, out.String())
	}
	if strings.TrimSpace(out.String()) != strconv.Itoa(prefill) {
		return fmt.Errorf("filling postgrey's database: perl says %q, want %d", out.String(), prefill)
	}
	return nil
}

// boltCounts are policyd's counts of the bbolt store (its metrics): updates
// that waited at the writers' brake, refreshes dropped instead, and commits
// at a lower priority, handed over, starved and crowded (state/boltprio.go;
// prio false from a policyd without them).
type boltCounts struct {
	braked, dropped               float64
	prio                          bool
	low, raised, starved, crowded float64
}

// readBoltCounts reads the counts, or nil when the server has none
// (postgrey) or they cannot be read.
func readBoltCounts(srv *benchServer) *boltCounts {
	if srv.metrics == "" {
		return nil
	}
	var c boltCounts
	var err error
	if c.braked, err = srv.counter("mailnode_policy_state_brake_waits_total"); err != nil {
		return nil
	}
	if c.dropped, err = srv.counter("mailnode_policy_state_refreshes_dropped_total"); err != nil {
		return nil
	}
	if c.low, err = srv.counter("mailnode_policy_state_low_priority_commits_total"); err != nil {
		return &c
	}
	c.prio = true
	c.raised, _ = srv.counter("mailnode_policy_state_raised_commits_total")
	c.starved, _ = srv.counter("mailnode_policy_state_starved_commits_total")
	c.crowded, _ = srv.counter("mailnode_policy_state_crowded_commits_total")
	return &c
}

// commitsSince says where the commits since c0 ran.
func (c *boltCounts) commitsSince(c0 *boltCounts) string {
	return fmt.Sprintf("commits at low priority %.0f, handed over %.0f, starved %.0f, crowded %.0f",
		c.low-c0.low, c.raised-c0.raised, c.starved-c0.starved, c.crowded-c0.crowded)
}

// dropCache drops a file's pages from the page cache (its dirty pages
// written first), as a restart of the machine would leave it.
func dropCache(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return err
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("drop %s from the page cache: %w", path, err)
	}
	return nil
}
