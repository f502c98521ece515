package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// RSABits is the size of generated RSA keys.
const RSABits = 2048

// KeyPath is where the private key of one selector lives:
// <key_dir>/<domain>/<selector>.key (PKCS#8 PEM, mode 0600).
func KeyPath(keyDir, domain, selector string) string {
	return filepath.Join(keyDir, domain, selector+".key")
}

// ErrNoKey is returned (wrapped) when a configured key file does not exist.
var ErrNoKey = errors.New("dkim: key file missing")

// maxKeyFile bounds what LoadKey reads: a PEM RSA-8192 key is under 7 KiB.
const maxKeyFile = 64 << 10

// LoadKey reads and checks a private key: it must exist, be a regular file
// (a symbolic link is refused, not followed), not be readable by others
// (group or world), be PKCS#8 PEM, and match algorithm ("rsa" or
// "ed25519"). The file is opened once and every check is made on the open
// file, so what is checked is what is read. Errors name the file.
func LoadKey(path, algorithm string) (crypto.Signer, error) {
	data, err := ReadKeyFile(path)
	if err != nil {
		return nil, err
	}
	return ParseKey(path, data, algorithm)
}

// ReadKeyFile reads a private key file with LoadKey's checks (a regular
// file, not a link, mode 0600 or stricter, of a key's size), made on the
// open file. A missing file is ErrNoKey.
func ReadKeyFile(path string) ([]byte, error) {
	// O_NONBLOCK: a FIFO put where the key belongs must not hang the open.
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	switch {
	case errors.Is(err, syscall.ENOENT):
		return nil, fmt.Errorf("%w: %s (run: mailnode dkim keygen)", ErrNoKey, path)
	case errors.Is(err, syscall.ELOOP):
		return nil, fmt.Errorf("dkim: %s is a symbolic link; keys are opened without following links: put the key file itself there", path)
	case err != nil:
		return nil, fmt.Errorf("dkim: %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("dkim: %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("dkim: %s is not a regular file (%s)", path, st.Mode().Type())
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("dkim: %s: mode %04o lets other users read the private key; chmod 600 it", path, st.Mode().Perm())
	}
	if st.Size() > maxKeyFile {
		return nil, fmt.Errorf("dkim: %s: %d bytes is not a private key file (at most %d)", path, st.Size(), maxKeyFile)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("dkim: %s: %w", path, err)
	}
	return data, nil
}

// ParseKey decodes a PKCS#8 PEM private key and checks its algorithm.
func ParseKey(name string, data []byte, algorithm string) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("dkim: %s: no PEM block found", name)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		// Accept the traditional RSA form too; many existing keys use it.
		if rk, err2 := x509.ParsePKCS1PrivateKey(block.Bytes); err2 == nil {
			k = rk
		} else {
			return nil, fmt.Errorf("dkim: %s: not a PKCS#8 private key: %v", name, err)
		}
	}
	switch k := k.(type) {
	case *rsa.PrivateKey:
		if algorithm != "rsa" {
			return nil, fmt.Errorf("dkim: %s: is an RSA key but the selector is configured for %s", name, algorithm)
		}
		if k.N.BitLen() < 1024 {
			return nil, fmt.Errorf("dkim: %s: RSA key of %d bits is too short (receivers ignore < 1024)", name, k.N.BitLen())
		}
		return k, nil
	case ed25519.PrivateKey:
		if algorithm != "ed25519" {
			return nil, fmt.Errorf("dkim: %s: is an Ed25519 key but the selector is configured for %s", name, algorithm)
		}
		return k, nil
	}
	return nil, fmt.Errorf("dkim: %s: unsupported key type %T", name, k)
}

// Generate creates a new private key for algorithm ("rsa" or "ed25519").
func Generate(algorithm string) (crypto.Signer, error) {
	switch algorithm {
	case "rsa":
		return rsa.GenerateKey(rand.Reader, RSABits)
	case "ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}
	return nil, fmt.Errorf("dkim: unknown algorithm %q", algorithm)
}

// EnsureKey loads the key at path, or, when there is none, generates one
// for algorithm and writes it there (created is then true). An existing
// key is never overwritten; an unusable one is an error.
func EnsureKey(path, algorithm string) (key crypto.Signer, created bool, err error) {
	key, err = LoadKey(path, algorithm)
	if !errors.Is(err, ErrNoKey) {
		return key, false, err
	}
	if key, err = Generate(algorithm); err != nil {
		return nil, false, err
	}
	if err := WriteKey(path, key); err != nil {
		return nil, false, err
	}
	return key, true, nil
}

// WriteKey stores key at path as PKCS#8 PEM with mode 0600, creating the
// directory (0700). It never overwrites: an existing file is an error.
func WriteKey(path string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("dkim: %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("dkim: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("dkim: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("dkim: %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("dkim: %s: %w", path, err)
	}
	return f.Close()
}

// TXTValue is the DKIM record value publishing key's public half
// (RFC 6376 section 3.6.1; Ed25519 per RFC 8463).
func TXTValue(key crypto.Signer) (string, error) {
	switch pub := key.Public().(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return "", err
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der), nil
	case ed25519.PublicKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub), nil
	}
	return "", fmt.Errorf("dkim: unsupported key type %T", key)
}

// RecordName is the owner name of a selector's TXT record.
func RecordName(selector, domain string) string {
	return selector + "._domainkey." + strings.TrimSuffix(domain, ".") + "."
}
