// Package templates holds the text/template sources render-config fills in
// from the inventory: Postfix main.cf and master.cf, dovecot.conf and
// unbound.conf. Lookup tables and zones are generated in Go (package render
// and package dns), because they are plain lists that can be very long.
//
// The templates are embedded in the binary; FS is what package render parses.
package templates

import "embed"

// FS holds every *.tmpl file of this directory.
//
//go:embed *.tmpl
var FS embed.FS
