package srs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// MaxSecretFile bounds a secrets file: a few lines of key material.
const MaxSecretFile = 64 << 10

// ErrNoSecretFile is returned (wrapped) by LoadFile when the file does
// not exist.
var ErrNoSecretFile = errors.New("no such file")

// ParseSecrets reads a secrets file's content: one secret a line, the
// first the one that makes addresses, every one verifying. Leading and
// trailing white space of a line is not part of its secret; empty lines
// are skipped. At least one secret is needed, each of MinSecretLen bytes
// or more. (postsrsd's secrets file has the same form.)
func ParseSecrets(data []byte) ([][]byte, error) {
	var out [][]byte
	for i, line := range bytes.Split(data, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if len(line) < MinSecretLen {
			return nil, fmt.Errorf("line %d: a secret of %d bytes is too short, at least %d are needed", i+1, len(line), MinSecretLen)
		}
		out = append(out, line)
	}
	if len(out) == 0 {
		return nil, errors.New("no secret in it (one a line, at least 16 bytes each)")
	}
	return out, nil
}

// LoadFile reads and parses a secrets file and returns an SRS with its
// secrets. The file must be a regular file, not a symbolic link, that
// neither other users can read or write nor its group write (0600 or
// 0640); the checks are made on the open file. Errors name the file.
func LoadFile(path string) (*SRS, error) {
	// O_NONBLOCK: a FIFO put where the file belongs must not hang the open.
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	switch {
	case errors.Is(err, syscall.ENOENT):
		return nil, fmt.Errorf("%s: %w", path, ErrNoSecretFile)
	case errors.Is(err, syscall.ELOOP):
		return nil, fmt.Errorf("%s is a symbolic link; the secrets file is opened without following links: put the file itself there", path)
	case err != nil:
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (%s)", path, st.Mode().Type())
	}
	if p := st.Mode().Perm(); p&0o027 != 0 {
		return nil, fmt.Errorf("%s: mode %04o lets other users read or change the secret; chmod 640 it (group: the daemon's)", path, p)
	}
	if st.Size() > MaxSecretFile {
		return nil, fmt.Errorf("%s: %d bytes is not a secrets file (at most %d)", path, st.Size(), MaxSecretFile)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxSecretFile+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	secrets, err := ParseSecrets(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return New(secrets...)
}
