package maillog

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestFiles: patterns expand to files oldest first, files last written
// before since are left out, "-" is kept, and a pattern naming nothing is
// an error that names it.
func TestFiles(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	for name, age := range map[string]time.Duration{"mail.log": 0, "mail.log.1": time.Hour, "mail.log.2.gz": 3 * time.Hour, "mail.log.9.gz": 72 * time.Hour} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, nil, 0o644)
		os.Chtimes(p, now.Add(-age), now.Add(-age))
	}
	got, err := Files([]string{filepath.Join(dir, "mail.log*"), "-"}, now.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(dir, "mail.log.2.gz"), filepath.Join(dir, "mail.log.1"), filepath.Join(dir, "mail.log"), "-"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
	if _, err := Files([]string{filepath.Join(dir, "nothing*")}, now); err == nil || !strings.Contains(err.Error(), "nothing*") {
		t.Errorf("a pattern naming nothing: %v", err)
	}
}
