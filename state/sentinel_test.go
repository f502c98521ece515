package state

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/state/statetest"
)

// TestRedisSentinelFailover: the store opened through Sentinel follows the
// master across a failover. A triplet recorded before the master is
// SIGKILLed (and replicated) is still known on the promoted replica; while
// there is no master, every step is an error (the caller's 4xx), never an
// outcome.
func TestRedisSentinelFailover(t *testing.T) {
	g := statetest.ReplicatedGroup(t, 1, 3)
	sel := inventory.State{Backend: "redis", Sentinel: &inventory.Sentinel{Master: statetest.SentinelMaster, Addresses: g.SentinelAddrs()}}
	if n := Name(sel); !strings.HasPrefix(n, "redis master mailnode via sentinels 127.0.0.1:") {
		t.Errorf("Name = %q", n)
	}
	ctx := context.Background()
	st, err := Open(ctx, sel, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	clk := statetest.NewClock()
	gl := newGrey(t, greyCfg(), st, clk)
	expect(t, gl, tr1, greyed300, ReasonNew)
	if err := g.WaitReplicated(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	old, err := g.Master()
	if err != nil {
		t.Fatal(err)
	}
	old.Kill()
	killed := time.Now()
	clk.Add(300 * time.Second)
	errs := 0
	for {
		res, err := gl.Check(ctx, tr1)
		if err == nil {
			if res.Action != "" || res.Reason != ReasonPassed {
				t.Fatalf("after the failover: %+v (want the replicated triplet to pass)", res)
			}
			break
		}
		if res.Action != "" {
			t.Fatalf("an error with an action: %+v, %v", res, err)
		}
		errs++
		if time.Since(killed) > 30*time.Second {
			t.Fatalf("no master 30s after the kill: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	now, err := g.WaitNewMaster(old.Addr, 10*time.Second)
	if err != nil {
		t.Fatalf("master after the failover: %v (was %s)", err, old.Addr)
	}
	t.Logf("failover: kill of %s -> first answer from %s after %s (%d failed steps meanwhile)",
		old.Addr, now, time.Since(killed).Round(10*time.Millisecond), errs)
}

func TestReadPasswordFile(t *testing.T) {
	d := t.TempDir()
	ok := filepath.Join(d, "ok")
	os.WriteFile(ok, []byte("s3cret\r\nignored\n"), 0o600)
	empty := filepath.Join(d, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	if p, err := readPasswordFile(ok); p != "s3cret" || err != nil {
		t.Errorf("readPasswordFile(ok) = %q, %v", p, err)
	}
	if p, err := readPasswordFile(""); p != "" || err != nil {
		t.Errorf("readPasswordFile(\"\") = %q, %v", p, err)
	}
	for _, f := range []string{empty, filepath.Join(d, "missing")} {
		if _, err := readPasswordFile(f); err == nil || !strings.Contains(err.Error(), "password_file") {
			t.Errorf("readPasswordFile(%s): %v, want an error naming password_file", f, err)
		}
	}
}
