package statetest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelMaster is the master name a Replicated group's sentinels monitor.
const SentinelMaster = "mailnode"

// Replicated is a Redis master with replicas and the Redis Sentinels that
// watch them, all redis-server processes on loopback ports without
// persistence, in one private directory. The sentinels agree on a failure
// with a quorum of two, call a master down after DownAfter without an
// answer and fail over at once: a SIGKILLed master is replaced within a few
// seconds.
type Replicated struct {
	Redis     []*Process // data nodes; Redis[0] was the master at start
	Sentinels []*Process
	Dir       string
}

// DownAfter is the sentinels' down-after-milliseconds.
const DownAfter = time.Second

// StartReplicated starts one master, replicas replicas and sentinels
// sentinels (at least two: the quorum is two), and waits until every
// sentinel knows every replica.
func StartReplicated(replicas, sentinels int) (*Replicated, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server: %w (apt-get install redis-server)", ErrNotInstalled)
	}
	if sentinels < 2 {
		return nil, errors.New("statetest: a quorum of two needs at least two sentinels")
	}
	dir, err := os.MkdirTemp("", "redis-sentinel-")
	if err != nil {
		return nil, err
	}
	g := &Replicated{Dir: dir}
	fail := func(err error) (*Replicated, error) { g.Stop(); return nil, err }
	for i := 0; i <= replicas; i++ {
		d := filepath.Join(dir, "redis"+strconv.Itoa(i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fail(err)
		}
		var master string
		if i > 0 {
			master = g.Redis[0].Addr
		}
		p, err := start(d, 10*time.Second, pingRedis, func(addr string) *exec.Cmd {
			_, port, _ := net.SplitHostPort(addr)
			// The role writes the same settings into every Redis of a
			// Sentinel group.
			args, _ := redisArgs(port, d, RedisSettings)
			// Only the first start names the master: a restarted node
			// comes up empty and alone, and the sentinels make it a
			// replica of whichever node they hold for the master, as
			// they do in production.
			if master != "" {
				h, mp, _ := net.SplitHostPort(master)
				args = append(args, "--replicaof", h, mp)
				master = ""
			}
			return exec.Command(bin, args...)
		})
		if err != nil {
			return fail(err)
		}
		p.keep = true
		g.Redis = append(g.Redis, p)
	}
	mh, mp, _ := net.SplitHostPort(g.Redis[0].Addr)
	for i := 0; i < sentinels; i++ {
		d := filepath.Join(dir, "sentinel"+strconv.Itoa(i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fail(err)
		}
		conf := filepath.Join(d, "sentinel.conf")
		p, err := start(d, 10*time.Second, pingRedis, func(addr string) *exec.Cmd {
			_, port, _ := net.SplitHostPort(addr)
			// Written at the first start only: the sentinel rewrites it
			// with what it learnt (the current master, the replicas, the
			// other sentinels), and a restart goes on from there.
			if _, err := os.Stat(conf); err != nil {
				os.WriteFile(conf, []byte(fmt.Sprintf(`port %s
bind 127.0.0.1
dir %s
sentinel monitor %s %s %s 2
sentinel down-after-milliseconds %s %d
sentinel failover-timeout %s 3000
sentinel parallel-syncs %s 1
`, port, d, SentinelMaster, mh, mp, SentinelMaster, DownAfter.Milliseconds(), SentinelMaster, SentinelMaster)), 0o644)
			}
			return exec.Command(bin, conf, "--sentinel")
		})
		if err != nil {
			return fail(err)
		}
		p.keep = true
		g.Sentinels = append(g.Sentinels, p)
	}
	// Ready: each sentinel sees the replicas and the other sentinels.
	deadline := time.Now().Add(20 * time.Second)
	for _, s := range g.Sentinels {
		for {
			info, err := Command(s.Addr, "SENTINEL", "MASTER", SentinelMaster)
			if err == nil && fieldOf(info, "num-slaves") == strconv.Itoa(replicas) && fieldOf(info, "num-other-sentinels") == strconv.Itoa(sentinels-1) {
				break
			}
			if time.Now().After(deadline) {
				return fail(fmt.Errorf("sentinel %s does not see the group after 20s: %v %v\n%s", s.Addr, info, err, s.Log()))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return g, nil
}

// SentinelAddrs are the sentinels' addresses, host:port.
func (g *Replicated) SentinelAddrs() []string {
	var out []string
	for _, s := range g.Sentinels {
		out = append(out, s.Addr)
	}
	return out
}

// MasterAddr asks every running sentinel for the master's address and
// returns it when they agree. Right after a failover they may not: the
// sentinels that did not lead it learn of it a moment later.
func (g *Replicated) MasterAddr() (string, error) {
	got := ""
	for _, s := range g.Sentinels {
		if !s.Running() {
			continue
		}
		r, err := Command(s.Addr, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SentinelMaster)
		if err != nil || len(r) != 2 {
			return "", fmt.Errorf("sentinel %s: %v %v", s.Addr, r, err)
		}
		a := net.JoinHostPort(r[0], r[1])
		if got != "" && a != got {
			return "", fmt.Errorf("the sentinels disagree on the master: %s, %s", got, a)
		}
		got = a
	}
	if got == "" {
		return "", errors.New("no sentinel is running")
	}
	return got, nil
}

// WaitNewMaster waits until the running sentinels agree on a master other
// than old, and returns its address.
func (g *Replicated) WaitNewMaster(old string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		a, err := g.MasterAddr()
		if err == nil && a != old {
			return a, nil
		}
		if time.Now().After(deadline) {
			return a, fmt.Errorf("no new master agreed on after %s: %s %v", timeout, a, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Master returns the data node at the address the sentinels name.
func (g *Replicated) Master() (*Process, error) {
	a, err := g.MasterAddr()
	if err != nil {
		return nil, err
	}
	for _, p := range g.Redis {
		if p.Addr == a {
			return p, nil
		}
	}
	return nil, fmt.Errorf("the sentinels name %s, which is none of the group's", a)
}

// WaitReplicated waits until every running replica has processed the
// master's replication stream up to now (WAIT for all of them).
func (g *Replicated) WaitReplicated(timeout time.Duration) error {
	m, err := g.Master()
	if err != nil {
		return err
	}
	want := 0
	for _, p := range g.Redis {
		if p != m && p.Running() {
			want++
		}
	}
	r, err := Command(m.Addr, "WAIT", strconv.Itoa(want), strconv.FormatInt(timeout.Milliseconds(), 10))
	if err != nil {
		return err
	}
	if len(r) != 1 || r[0] != strconv.Itoa(want) {
		return fmt.Errorf("WAIT %d: %v replicas acknowledged", want, r)
	}
	return nil
}

// Stop kills every process and removes the directory.
func (g *Replicated) Stop() {
	for _, p := range append(append([]*Process{}, g.Sentinels...), g.Redis...) {
		p.Stop()
	}
	os.RemoveAll(g.Dir)
}

// ReplicatedGroup starts a group (StartReplicated) for one test or benchmark
// and stops it when that ends.
func ReplicatedGroup(t TB, replicas, sentinels int) *Replicated {
	t.Helper()
	g, err := StartReplicated(replicas, sentinels)
	check(t, err)
	t.Cleanup(g.Stop)
	return g
}

// Command sends one command to a Redis (or Sentinel) at addr, through the
// same go-redis client the product uses, and returns the reply flattened
// to strings: a status, integer or bulk string is one element, an array
// (nested arrays flattened) its elements, a nil reply none. An error reply
// is an error.
func Command(addr string, args ...string) ([]string, error) {
	c := redis.NewClient(&redis.Options{
		Addr: addr, Protocol: 2, DisableIdentity: true, MaxRetries: -1,
		DialTimeout: time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
	})
	defer c.Close()
	cmd := make([]any, len(args))
	for i, a := range args {
		cmd[i] = a
	}
	v, err := c.Do(context.Background(), cmd...).Result()
	if err == redis.Nil {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	flatten(v, &out)
	return out, nil
}

// flatten appends a RESP2 reply as go-redis gives it to out.
func flatten(v any, out *[]string) {
	switch v := v.(type) {
	case nil:
	case []any:
		for _, e := range v {
			flatten(e, out)
		}
	default:
		*out = append(*out, fmt.Sprint(v))
	}
}

// fieldOf finds the value after name in a flattened name/value list.
func fieldOf(kv []string, name string) string {
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i] == name {
			return kv[i+1]
		}
	}
	return ""
}
