// Command mailnode-bench holds mailnode's load generators, the do-nothing
// baseline servers they are read against and the launchers of the peers
// mailnode is compared with (Debian's OpenDKIM and postgrey), apart from the
// shipped binary, as Postfix keeps smtp-source apart from smtpd. It drives a
// mailnode binary from outside, over the sockets Postfix uses, and prints
// the figures of `make bench`:
//
//   - policy.go: policy (request mix against a running policyd),
//     dunno-server and null-milter (the baselines);
//   - greylist.go: greylist (policyd on bbolt and Redis vs postgrey);
//   - milter.go: milter (milterd vs OpenDKIM);
//   - inventory.go: inventory (a large generated inventory for
//     make bench-render);
//   - memory.go: memory (policyd's and milterd's resident memory across
//     reloads, by inventory size).
//
// It imports the product's packages and the test machinery (test/loadgen,
// test/invgen, test/procstat, test/opendkim, milter/miltertest); the
// product imports none of it.
package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/mailnode/mailnode/internal/sysmon"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func newApp() *cli.App {
	return &cli.App{
		Name:    "mailnode-bench",
		Usage:   "load generators and baselines for mailnode's sidecars (make bench)",
		Version: version,
		Description: `mailnode-bench measures a mailnode binary from outside: it replays Postfix
policy requests against policyd, drives milterd with a milter client the way
Postfix does, runs the same load against Debian's postgrey and OpenDKIM, and
serves do-nothing baselines in the sidecars' place. Commands that start
mailnode daemons themselves (greylist, milter) run the binary named by
--mailnode: by default the mailnode next to this program, else mailnode on
PATH. The figures are only comparable on an otherwise idle machine.

Start with:  make build build-bench && bin/mailnode-bench milter --duration 1s`,
		EnableBashCompletion: true,
		Commands: []*cli.Command{
			policyCommand(),
			dunnoServerCommand(),
			nullMilterCommand(),
			greylistCommand(),
			greylistScaleCommand(),
			milterCommand(),
			inventoryCommand(),
			memoryCommand(),
		},
	}
}

func main() {
	// The load generators answer one request at a time, as the daemons do.
	sysmon.KeepAwake(os.Args, "policy", "dunno-server", "null-milter", "greylist", "milter")
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "mailnode-bench:", err)
		if e, ok := err.(cli.ExitCoder); ok {
			os.Exit(e.ExitCode())
		}
		os.Exit(1)
	}
}

// mailnodeFlag is the --mailnode flag of the commands that start daemons.
func mailnodeFlag() *cli.StringFlag {
	return &cli.StringFlag{
		Name:    "mailnode",
		Usage:   "the mailnode `BINARY` whose daemons are measured (default: mailnode next to this program, else on PATH)",
		EnvVars: []string{"MAILNODE_BIN"},
	}
}

// mailnodeBinary is the binary --mailnode names, or the default.
func mailnodeBinary(cx *cli.Context) (string, error) {
	if b := cx.String("mailnode"); b != "" {
		return b, nil
	}
	if self, err := os.Executable(); err == nil {
		b := filepath.Join(filepath.Dir(self), "mailnode")
		if st, err := os.Stat(b); err == nil && st.Mode().IsRegular() {
			return b, nil
		}
	}
	b, err := exec.LookPath("mailnode")
	if err != nil {
		return "", fmt.Errorf("no mailnode binary next to this program or on PATH; build it (make build) or pass --mailnode")
	}
	return b, nil
}

// listenUntilSignal opens a baseline server's socket with listen and
// closes it on SIGTERM or SIGINT, which ends the server's accept loop.
func listenUntilSignal(listen func(string) (net.Listener, error), spec string) (net.Listener, error) {
	ln, err := listen(spec)
	if err != nil {
		return nil, cli.Exit(fmt.Sprintf("bench: %v", err), 1)
	}
	go func() {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		<-sigs
		ln.Close()
	}()
	return ln, nil
}
