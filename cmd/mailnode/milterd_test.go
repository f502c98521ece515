package main

import (
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/milter/miltertest"
	"github.com/mailnode/mailnode/state/statetest"
)

// TestMilterdMetricsProcess runs the real binary with --metrics: /healthz
// answers ok, and /metrics counts a message it signed, with the Go runtime
// and process collectors beside milterd's own; / is the status page.
func TestMilterdMetricsProcess(t *testing.T) {
	dir, inv := testNode(t, "127.0.0.1:1")
	sock := filepath.Join(dir, "milter.sock")
	port, err := statetest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	metrics := "127.0.0.1:" + strconv.Itoa(port)
	p := startDaemon(t, sock, "milterd", "-i", inv, "--listen", "unix:"+sock, "--metrics", metrics)
	get := func(path string) (int, string) { return httpGet(metrics, path) }
	waitUntil(t, "/healthz", func() bool { code, _ := get("/healthz"); return code == 200 })
	// The test's postfix.config_directory holds no rendered digest: a
	// drift, which /healthz reports without failing.
	if code, body := get("/healthz"); code != 200 || !strings.HasPrefix(body, "ok\nwarning: inventory drift: ") {
		t.Errorf("/healthz: %d %q", code, body)
	}

	m := &miltertest.Message{
		Host: "client.example.com", Port: 40000, Addr: "198.51.100.7",
		AuthUser: "alice@example.com", QueueID: "4ABC",
		Sender: "alice@example.com", Rcpts: []string{"x@elsewhere.test"},
		Body: []byte("Hi,\r\n\r\nmetrics.\r\n"),
	}
	for _, h := range [][2]string{{"From", "Alice <alice@example.com>"}, {"To", "x@elsewhere.test"},
		{"Subject", "metrics"}, {"Date", "Sun, 01 Mar 2026 12:00:00 +0000"}, {"Message-ID", "<m1@example.com>"}} {
		m.Headers = append(m.Headers, dkim.Header{Name: h[0], Value: " " + h[1]})
	}
	if _, err := miltertest.Submit(miltertest.NewClient("unix", sock), m); err != nil {
		t.Fatal(err)
	}
	_, body := get("/metrics")
	for _, want := range []string{
		`mailnode_milter_messages_total{action="sign"} 1`,
		`mailnode_milter_signatures_total{algorithm="rsa",domain="example.com",selector="mx2026r"} 1`,
		`mailnode_milter_signatures_total{algorithm="ed25519",domain="example.com",selector="mx2026e"} 1`,
		`mailnode_milter_errors_total{kind="sign"} 0`,
		"mailnode_milter_inventory_drift 1",
		`mailnode_milter_inventory_installed_info{digest=""} 1`,
		"go_goroutines ",
		"process_open_fds ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, body)
		}
	}
	// The status page: read-only, what milterd runs with and its counters.
	code, page := get("/")
	for _, want := range []string{
		"<h1>mailnode milterd</h1>", "<tr><td>mode</td><td>enforce</td></tr>",
		"example.com/mx2026r/rsa, example.com/mx2026e/ed25519",
		`mailnode_milter_messages_total{action=&#34;sign&#34;}</code></td><td>1</td>`,
	} {
		if code != 200 || !strings.Contains(page, want) {
			t.Errorf("status page (%d) lacks %s:\n%s", code, want, page)
		}
	}
	if resp, err := http.Post("http://"+metrics+"/", "text/plain", strings.NewReader("x")); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %v %v, want 405", resp, err)
	}
	p.stop(t)
}
