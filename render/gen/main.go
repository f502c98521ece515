// Command gen prints a generated inventory for benchmarks (make bench-render):
//
//	go run ./render/gen -domains 10000 -mailboxes 100000 > /tmp/bench.yaml
package main

import (
	"flag"
	"os"

	"github.com/mailnode/mailnode/inventory/invgen"
)

func main() {
	domains := flag.Int("domains", 10000, "domains (every tenth a relay domain)")
	mailboxes := flag.Int("mailboxes", 100000, "mailboxes, spread over the local domains")
	flag.Parse()
	if _, err := os.Stdout.Write(invgen.Generate(*domains, *mailboxes)); err != nil {
		os.Exit(1)
	}
}
