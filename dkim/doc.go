// Package dkim is DKIM (RFC 6376, and Ed25519 keys per RFC 8463) for the
// node, end to end:
//
//   - keys.go: where private keys live (<dkim.key_dir>/<domain>/<selector>.key),
//     generating them, reading them (one open, no symbolic links, mode
//     checked on the open file), and the TXT record that publishes each;
//   - rotate.go: adding a selector, and retiring an old one once DNS allows;
//   - sign.go, canon.go: signing a message as it streams (RSA through
//     OpenSSL's libcrypto in cgo builds, rsa_openssl.go; crypto/rsa
//     otherwise, rsa_purego.go);
//   - verify.go: a streaming verifier whose key lookups start as soon as the
//     header is complete.
//
// milterd (package milter) signs and verifies with it; the dkim and dns
// commands use the keys and records.
package dkim
