package sdnotify

import (
	"net"
	"path/filepath"
	"testing"
	"time"
)

// listen is what systemd does: a unixgram socket it reads the states from.
func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func read(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

func TestNotifyPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	conn := listen(t, path)
	t.Setenv("NOTIFY_SOCKET", path)
	for _, state := range []string{Ready, Reloading, Ready, Stopping} {
		sent, err := Notify(state)
		if !sent || err != nil {
			t.Fatalf("Notify(%q) = %v, %v; want true, nil", state, sent, err)
		}
		if got := read(t, conn); got != state {
			t.Fatalf("systemd read %q, want %q", got, state)
		}
	}
}

func TestNotifyAbstract(t *testing.T) {
	name := "mailnode-sdnotify-test-" + filepath.Base(t.TempDir())
	conn := listen(t, "@"+name) // Go maps a leading '@' to the abstract namespace too
	t.Setenv("NOTIFY_SOCKET", "@"+name)
	if sent, err := Notify(Ready); !sent || err != nil {
		t.Fatalf("Notify = %v, %v; want true, nil", sent, err)
	}
	if got := read(t, conn); got != Ready {
		t.Fatalf("systemd read %q, want %q", got, Ready)
	}
}

func TestNotifyUnset(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if sent, err := Notify(Ready); sent || err != nil {
		t.Fatalf("Notify without NOTIFY_SOCKET = %v, %v; want false, nil", sent, err)
	}
}

func TestNotifyNobodyListening(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone"))
	if sent, err := Notify(Ready); sent || err == nil {
		t.Fatalf("Notify to a missing socket = %v, %v; want false and an error", sent, err)
	}
	t.Setenv("NOTIFY_SOCKET", "relative/path")
	if sent, err := Notify(Ready); sent || err == nil {
		t.Fatalf("Notify to a relative path = %v, %v; want false and an error", sent, err)
	}
}
