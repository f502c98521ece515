package milter

import (
	"path/filepath"
	"runtime"
	"testing"
	"weak"

	"github.com/mailnode/mailnode/milter/miltertest"

	gomilter "github.com/d--j/go-milter"
)

// TestSetFilterAppliesToNewConnections: SIGHUP's swap reaches every
// connection opened afterwards; here the new filter has no keys for the
// domain, so the next message goes out unsigned, while the old filter signed.
func TestSetFilterAppliesToNewConnections(t *testing.T) {
	f, _ := testFilter(t)
	path := filepath.Join(t.TempDir(), "milter.sock")
	ln, err := Listen("unix:" + path)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(f)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); ln.Close(); <-done })

	sigs := func() int {
		r, err := miltertest.Submit(miltertest.NewClient("unix", path), localMessage("alice@example.com"))
		if err != nil {
			t.Fatal(err)
		}
		return countMods(r, gomilter.ActionInsertHeader, "DKIM-Signature")
	}
	if n := sigs(); n != 2 {
		t.Fatalf("before the swap: %d signatures, want 2", n)
	}
	g, _ := testFilter(t)
	g.Keys = nil
	srv.SetFilter(g)
	if n := sigs(); n != 0 {
		t.Fatalf("after the swap to a filter without keys: %d signatures, want 0", n)
	}
	srv.SetFilter(f)
	if n := sigs(); n != 2 {
		t.Fatalf("after swapping back: %d signatures, want 2", n)
	}
}

// TestSetFilterLetsGoOfTheOld: once swapped out and its connections done, a
// filter (and with it an inventory and keys) is garbage. The server kept
// the filter it started with for as long as it ran, so milterd held two
// inventories and two sets of keys after its first reload.
func TestSetFilterLetsGoOfTheOld(t *testing.T) {
	f, _ := testFilter(t)
	old := weak.Make(f)
	srv := NewServer(f)
	f = nil
	g, _ := testFilter(t)
	srv.SetFilter(g)
	for i := 0; i < 3 && old.Value() != nil; i++ {
		runtime.GC()
	}
	if old.Value() != nil {
		t.Fatal("the server still holds the filter it started with")
	}
	if srv.current.Load() != g {
		t.Fatal("the server does not serve the new filter")
	}
}
