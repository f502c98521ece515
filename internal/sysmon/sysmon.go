// Package sysmon keeps the Go runtime's monitor thread from sleeping deeply
// in the long-running commands of mailnode (policyd, milterd) and of the
// benchmark program mailnode-bench, by re-executing the binary once with
// schedtrace in GODEBUG. Both mains call KeepAwake first thing.
package sysmon

import (
	"os"
	"slices"
	"strings"
	"syscall"
)

// Go's runtime has a monitor thread, sysmon. While every P is idle it sleeps
// deeply; the next system call wakes it, and it then polls every 20 µs for
// about a millisecond before backing off to 10 ms again. A daemon answering
// one small request at a time (a policy query, a milter session) goes idle
// and wakes again thousands of times a second, so sysmon spends most of its
// life in those 20 µs polls; where a sleep costs a context switch of several
// microseconds (virtual machines), that was 10-15 % of policyd's and
// milterd's CPU time, and took the same from the Postfix processes sharing
// the cores (make bench-policy: 52-60,000 decisions/s without, a median of
// 72,600 with). The load tools of mailnode-bench drive them the same way. With GODEBUG schedtrace set, sysmon never sleeps deeply and stays
// at one wake-up every 10 ms. The runtime reads schedtrace only when the
// process starts, so the long-running commands re-execute themselves once
// with it set. The period is the largest the runtime accepts (24.8 days):
// its only visible effect is one "SCHED" line on standard error that often.
//
// MAILNODE_SYSMON=default, or a GODEBUG that sets schedtrace, leaves the
// runtime as it is.
const Godebug = "schedtrace=2147483647"

// KeepAwake re-executes the binary with Godebug added to GODEBUG when
// args (os.Args) name one of commands, the ones that run long enough for it
// to matter. It returns only when it does not (or cannot: then the command
// runs as it is).
func KeepAwake(args []string, commands ...string) {
	if len(args) < 2 || !slices.Contains(commands, args[1]) || os.Getenv("MAILNODE_SYSMON") == "default" {
		return
	}
	godebug := os.Getenv("GODEBUG")
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "GODEBUG=") })
	for _, kv := range strings.Split(godebug, ",") {
		if strings.HasPrefix(strings.TrimSpace(kv), "schedtrace=") {
			return // set already: by us before the exec, or by the operator
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return
	}
	if godebug != "" {
		godebug += ","
	}
	env = append(env, "GODEBUG="+godebug+Godebug)
	syscall.Exec(exe, args, env) // returns only on failure
}
