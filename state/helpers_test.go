package state

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/mailnode/mailnode/state/statetest"
	bolt "go.etcd.io/bbolt"
)

// fileKeys calls fn for every key with prefix in the file's trees, the kept
// tree's first (a tree that does not exist is skipped).
func fileKeys(tx *bolt.Tx, prefix string, fn func(k, v []byte)) {
	p := []byte(prefix)
	for _, b := range txTrees(tx).each() {
		c := b.Cursor()
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			fn(k, v)
		}
	}
}

// fileKeyN counts the keys in the file's trees.
func fileKeyN(tx *bolt.Tx) int {
	n := 0
	fileKeys(tx, "", func(_, _ []byte) { n++ })
	return n
}

func openRedis(t testing.TB, r *statetest.Process, prefix string) *Redis {
	t.Helper()
	s, err := OpenRedis(context.Background(), r.URL(), RedisOptions{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openBolt(t testing.TB, clock Clock) *Bolt {
	t.Helper()
	return openBoltWith(t, BoltOptions{Clock: clock})
}

// openBoltWith opens a bbolt store in a new directory, closed at the test's end.
func openBoltWith(t testing.TB, opt BoltOptions) *Bolt {
	t.Helper()
	s, err := OpenBolt(filepath.Join(t.TempDir(), "state.db"), opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// eachStore runs f once with a bbolt store and once with a Redis store.
func eachStore(t *testing.T, f func(t *testing.T, st Store, clk *statetest.Clock)) {
	t.Run("bbolt", func(t *testing.T) {
		clk := statetest.NewClock()
		f(t, openBolt(t, clk.Now), clk)
	})
	t.Run("redis", func(t *testing.T) {
		srv := statetest.Redis(t)
		clk := statetest.NewClock()
		f(t, openRedis(t, srv, "t:"), clk)
	})
}

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		crashChild()
		return
	}
	os.Exit(m.Run())
}
