package drift

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGuard(t *testing.T) {
	dir := t.TempDir()
	var logs bytes.Buffer
	var seen []State
	g := &Guard{Daemon: "policyd", Log: slog.New(slog.NewTextHandler(&logs, nil)), OnCheck: func(s State) { seen = append(seen, s) }}
	install := func(d string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, DigestFile), []byte(d+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const a, b = "sha256:aaaa", "sha256:bbbb"

	// Nothing installed yet: a drift, naming the missing file.
	s := g.Set(a, dir)
	if !s.Drift() || s.Err == nil || !strings.Contains(s.Warning(), "is missing") {
		t.Fatalf("no digest file: %+v %q", s, s.Warning())
	}
	install(a)
	if s := g.Check(); s.Drift() || s.Warning() != "" {
		t.Fatalf("same digest: %+v", s)
	}
	if !strings.Contains(logs.String(), "inventory drift over") {
		t.Errorf("the end of the drift is not logged:\n%s", logs.String())
	}
	// The inventory changed and the daemon reloaded; the config was not installed.
	logs.Reset()
	s = g.Set(b, dir)
	if !s.Drift() || s.Installed != a || !strings.Contains(s.Warning(), "running "+b+", installed Postfix config rendered from "+a) {
		t.Fatalf("reloaded, not installed: %+v %q", s, s.Warning())
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "digest="+b) {
		t.Errorf("log:\n%s", logs.String())
	}
	// A periodic check repeats nothing while the drift stays the same.
	logs.Reset()
	if s := g.Check(); !s.Drift() {
		t.Fatal("drift cleared by itself")
	}
	if logs.Len() != 0 {
		t.Errorf("an unchanged drift is logged again:\n%s", logs.String())
	}
	install(b)
	if s := g.Check(); s.Drift() || g.State().Drift() {
		t.Fatalf("installed: %+v", s)
	}
	if len(seen) != 5 {
		t.Errorf("OnCheck called %d times, want 5", len(seen))
	}
	install("garbage")
	if s := g.Check(); !s.Drift() || s.Err == nil {
		t.Fatalf("garbage digest: %+v", s)
	}
}
