package harness

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"sync"
)

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  error
)

// Binary returns the mailnode binary the harness runs: $MAILNODE_BIN when
// set, else one built from this repository once per process (go build
// needs the module cache, so Main builds it before entering the namespace).
func Binary() (string, error) {
	if b := os.Getenv(EnvBin); b != "" {
		return b, nil
	}
	buildOnce.Do(func() {
		root, err := RepoRoot()
		if err != nil {
			buildErr = err
			return
		}
		dir, err := os.MkdirTemp("", "mailnode-bin")
		if err != nil {
			buildErr = err
			return
		}
		buildBin, buildErr = BuildTo(root, filepath.Join(dir, "mailnode"))
	})
	return buildBin, buildErr
}

// BuildTo builds ./cmd/mailnode of the repository at root into out, as
// `make build` does (Go's own linker: see BUILDFLAGS in the Makefile).
func BuildTo(root, out string) (string, error) { return buildPackage(root, "./cmd/mailnode", out) }

var (
	benchOnce sync.Once
	benchBin  string
	benchErr  error
)

// BenchBinary returns the benchmark program (cmd/mailnode-bench, whose
// baseline servers the end-to-end benchmark runs): $MAILNODE_BENCH_BIN
// when set, else one built from this repository once per process. Build it
// before entering a namespace (go build needs the module cache) and pass it
// on in EnvBenchBin.
func BenchBinary() (string, error) {
	if b := os.Getenv(EnvBenchBin); b != "" {
		return b, nil
	}
	benchOnce.Do(func() {
		root, err := RepoRoot()
		if err != nil {
			benchErr = err
			return
		}
		dir, err := os.MkdirTemp("", "mailnode-bench-bin")
		if err != nil {
			benchErr = err
			return
		}
		benchBin, benchErr = buildPackage(root, "./cmd/mailnode-bench", filepath.Join(dir, "mailnode-bench"))
	})
	return benchBin, benchErr
}

// buildPackage builds the main package pkg of the repository at root into
// out, as the Makefile does.
func buildPackage(root, pkg, out string) (string, error) {
	cmd := exec.Command("go", "build", "-ldflags=-linkmode=internal", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	os.Chmod(filepath.Dir(out), 0o755)
	return out, nil
}

// RepoRoot finds the mailnode repository above the working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/mailnode/mailnode\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("harness: not inside the mailnode repository (no go.mod of github.com/mailnode/mailnode above the working directory)")
		}
		dir = parent
	}
}

func lookupUser(name string) (*user.User, error) { return user.Lookup(name) }

func sortStrings(l []string) []string {
	sort.Strings(l)
	return l
}
