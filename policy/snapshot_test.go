package policy

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/mailnode/mailnode/inventory"
)

// mappedInventory is testdata/inventory.yaml (plus extra) as policyd runs
// it from its load helper: a snapshot with the address tables mapped.
func mappedInventory(t *testing.T, extra string) *inventory.Inventory {
	t.Helper()
	data, err := os.ReadFile("testdata/inventory.yaml")
	if err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.ParseWith(append(data, extra...), "inventory.yaml", inventory.LoadOptions{Keep: inventory.KeepDecisions})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "tables"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var head bytes.Buffer
	if err := inv.WriteSnapshot(&head, f); err != nil {
		t.Fatal(err)
	}
	m, err := inventory.OpenSnapshot(head.Bytes(), f, inventory.TablesMapped, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Mapped() {
		t.Fatal("the tables are not mapped")
	}
	return m
}

// Reloads of mapped inventories while requests are answered on several
// connections: each reply is the one of the inventory before or after
// the swap, the replaced tables are unmapped once no request holds them,
// and no request faults on them.
func TestMappedInventoryReloads(t *testing.T) {
	first := mappedInventory(t, "")
	ts := startServer(t, "unix", func(s *Server) { s.SetInventory(first) })
	before := relayReply
	after := "action=550 5.7.1 Please use own mail service for send mail from <eve@example.org>\n\n"
	local := "action=DUNNO\n\n"
	// The lists table, read in place.
	listRequest := "request=smtpd_access_policy\nprotocol_state=RCPT\nsender=eve@outside.test\nrecipient=all-staff@example.com\nclient_address=198.51.100.7\n\n"
	listReply := "action=550 5.7.1 Sorry, <all-staff@example.com> accepts mail from internal senders only\n\n"
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan string, 8)
	for i := 0; i < 4; i++ {
		c := ts.dial(t)
		r := bufio.NewReader(c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				got, err := ask(c, r, relayRequest)
				if err != nil || (got != before && got != after) {
					errs <- got
					return
				}
				if got, err := ask(c, r, inboundRequest); err != nil || (got != local && got != after) {
					errs <- got
					return
				}
				if got, err := ask(c, r, listRequest); err != nil || got != listReply {
					errs <- got
					return
				}
			}
		}()
	}
	cur := first
	for i := 0; i < 20; i++ {
		extra := ""
		if i%2 == 0 {
			extra = "  - name: example.org\n    class: relay\n"
		}
		next := mappedInventory(t, extra)
		if err := ts.SetInventory(next); err != nil {
			t.Fatal(err)
		}
		<-cur.Release()
		cur = next
	}
	close(stop)
	wg.Wait()
	select {
	case got := <-errs:
		t.Fatalf("a reply during the reloads: %q", got)
	default:
	}
	// The inventory in use released by mistake: no reply (Postfix's
	// default_action), never a wrong one or a hang.
	<-cur.Release()
	c := ts.dial(t)
	if got, err := ask(c, bufio.NewReader(c), relayRequest); err == nil || got != "" {
		t.Fatalf("with the inventory in use released: %q, %v", got, err)
	}
}
