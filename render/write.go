package render

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// Write installs files under dir. Each file is written to a temporary file
// in its own directory and renamed over the old one, so a reader (Postfix,
// Dovecot) sees the old or the new file, never a partial one. Files whose
// bytes are unchanged are left alone (their mtime too, so postmap can skip
// them). Zone files under dns/ and MTA-STS files (policies, the resolver's
// configuration) that the inventory no longer produces are removed. It
// returns the names written or removed, sorted.
func Write(dir string, files Files) ([]string, error) {
	names := files.Names()
	// Create every directory once, then write files on every core: a node
	// with thousands of domains has thousands of zone files.
	dirs := map[string]bool{}
	for _, name := range names {
		d := filepath.Dir(filepath.Join(dir, filepath.FromSlash(name)))
		if !dirs[d] {
			dirs[d] = true
			if err := os.MkdirAll(d, 0o755); err != nil {
				return nil, fmt.Errorf("render: %w", err)
			}
		}
	}
	wrote := make([]bool, len(names))
	errs := make([]error, len(names))
	parallel(len(names), func(i int) {
		name := names[i]
		dst := filepath.Join(dir, filepath.FromSlash(name))
		data := files[name]
		if old, err := os.ReadFile(dst); err == nil && bytes.Equal(old, data) {
			return
		}
		if errs[i] = writeAtomic(dst, data, Secret(name)); errs[i] == nil {
			wrote[i] = true
		}
	})
	var changed []string
	for i, name := range names {
		if errs[i] != nil {
			return changed, errs[i]
		}
		if wrote[i] {
			changed = append(changed, name)
		}
	}
	stale, err := staleZones(dir, files)
	if err != nil {
		return changed, err
	}
	for _, name := range stale {
		if err := os.Remove(filepath.Join(dir, filepath.FromSlash(name))); err != nil {
			return changed, fmt.Errorf("render: %w", err)
		}
		changed = append(changed, name)
	}
	sort.Strings(changed)
	return changed, nil
}

// tmpSeq numbers temporary files; with the pid it makes their names unique.
var (
	tmpSeq atomic.Uint64
	pid    = os.Getpid() // a system call each time it is asked
)

// writeAtomic writes data to a temporary file beside dst and renames it
// over dst. It uses plain system calls: an *os.File registers every file
// with the runtime poller (fcntl, epoll_ctl), which for thousands of zone
// files costs more than writing them.
func writeAtomic(dst string, data []byte, secret bool) error {
	tmp := fmt.Sprintf("%s/.%s.tmp%d.%d", filepath.Dir(dst), filepath.Base(dst), pid, tmpSeq.Add(1))
	mode := uint32(0o644)
	plain := strings.HasSuffix(filepath.ToSlash(dst), "/"+SASLPasswd)
	if secret {
		mode = 0o640 // password hashes: readable by root and Dovecot's group only
	}
	if plain {
		mode = 0o600 // a password in clear: root only
	}
	if Executable(filepath.ToSlash(dst)) {
		mode = 0o755 // run by Dovecot's Sieve pipe as the mail user
	}
	fd, err := syscall.Open(tmp, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_CLOEXEC, mode)
	if err != nil {
		return fmt.Errorf("render: %s: %w", tmp, err)
	}
	fail := func(err error) error {
		syscall.Close(fd)
		os.Remove(tmp)
		return fmt.Errorf("render: %s: %w", dst, err)
	}
	if secret && !plain {
		if g, err := user.LookupGroup("dovecot"); err == nil {
			if gid, err := strconv.Atoi(g.Gid); err == nil {
				_ = syscall.Fchown(fd, -1, gid) // best effort: needs root, as Dovecot's auth does
			}
		}
	}
	// The umask may have narrowed the mode given to open.
	if err := syscall.Fchmod(fd, mode); err != nil {
		return fail(err)
	}
	for rest := data; len(rest) > 0; {
		n, err := syscall.Write(fd, rest)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return fail(err)
		}
		rest = rest[n:]
	}
	if err := syscall.Close(fd); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("render: %s: %w", dst, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("render: %w", err)
	}
	return nil
}

// staleZones lists dns/*.zone files in dir that files does not contain,
// and the MTA-STS files no longer rendered (staleMTASTS).
func staleZones(dir string, files Files) ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(dir, "dns"))
	if errors.Is(err, fs.ErrNotExist) {
		return staleMTASTS(dir, files), nil
	}
	if err != nil {
		return nil, fmt.Errorf("render: %w", err)
	}
	var out []string
	for _, e := range ents {
		name := "dns/" + e.Name()
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".zone") {
			if _, ok := files[name]; !ok {
				out = append(out, name)
			}
		}
	}
	return append(out, staleMTASTS(dir, files)...), nil
}

// Check compares files with what is installed under dir and returns a
// unified diff (old = dir, new = files) of everything that differs: changed
// files, files missing from dir, and stale zone files Write would remove.
// An empty result means dir is up to date.
func Check(dir string, files Files) ([]byte, error) {
	var out bytes.Buffer
	for _, name := range files.Names() {
		old, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(name)))
		oldName := "a/" + name
		if errors.Is(err, fs.ErrNotExist) {
			old, oldName = nil, "/dev/null"
		} else if err != nil {
			return nil, fmt.Errorf("render: %w", err)
		}
		if bytes.Equal(old, files[name]) {
			continue
		}
		if name == SASLPasswd {
			// Never print the password, old or new.
			fmt.Fprintf(&out, "--- %s\n+++ b/%s\n(differs; the smarthost password map is not shown)\n", oldName, name)
			continue
		}
		out.Write(UnifiedDiff(oldName, "b/"+name, old, files[name]))
	}
	stale, err := staleZones(dir, files)
	if err != nil {
		return nil, err
	}
	for _, name := range stale {
		old, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(name)))
		if err != nil {
			return nil, fmt.Errorf("render: %w", err)
		}
		out.Write(UnifiedDiff("a/"+name, "/dev/null", old, nil))
	}
	return out.Bytes(), nil
}

// parallel calls f(0) ... f(n-1) on every core (two workers at least: file
// writes wait on the kernel).
func parallel(n int, f func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < min(n, max(2, runtime.GOMAXPROCS(0))); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				f(i)
			}
		}()
	}
	wg.Wait()
}
