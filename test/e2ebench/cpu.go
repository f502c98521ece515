package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mailnode/mailnode/test/procstat"
)

// cpuSnapshot is the CPU time (user+system) used so far by the parts of a
// stack: "postfix" (the master, its live children and the children it has
// reaped), each sidecar by name, and "sink" (smtp-sink).
type cpuSnapshot map[string]time.Duration

func (s *stack) cpu() cpuSnapshot {
	c := cpuSnapshot{}
	for name, pid := range s.daemons {
		if st, err := procstat.Read(pid); err == nil {
			c[name] = st.CPU
		}
		if forking[name] {
			for _, kid := range children(pid) {
				if st, err := procstat.Read(kid); err == nil {
					c[name] += st.CPU
				}
			}
		}
	}
	if len(s.procs) > 0 {
		if st, err := procstat.Read(s.procs[0].cmd.Process.Pid); err == nil {
			c["sink"] = st.CPU
		}
	}
	master := 0
	if b, err := os.ReadFile(filepath.Join(s.node.Inv.Postfix.QueueDirectory, "pid", "master.pid")); err == nil {
		master, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	if master <= 0 {
		return c
	}
	st, _ := procstat.Read(master)
	total := st.CPU + st.ChildCPU
	for _, pid := range procstat.Pids() {
		if st, err := procstat.Read(pid); err == nil && st.PPid == master {
			total += st.CPU + st.ChildCPU
		}
	}
	c["postfix"] = total
	return c
}

// forking are the sidecars whose work is done by child processes (rspamd's
// workers): their CPU is the main process's plus the children's, their
// peak RSS that of the largest of them.
var forking = map[string]bool{"rspamd": true}

// children are the pids whose parent is pid.
func children(pid int) []int {
	var l []int
	for _, p := range procstat.Pids() {
		if st, err := procstat.Read(p); err == nil && st.PPid == pid {
			l = append(l, p)
		}
	}
	return l
}

// perMessage is (after - before) / n for every part, in milliseconds.
func perMessage(before, after cpuSnapshot, n int) map[string]float64 {
	m := map[string]float64{}
	for k, v := range after {
		d := v - before[k]
		if d < 0 { // a Postfix child exited and was reaped by nobody we saw
			d = 0
		}
		m[k] = float64(d.Microseconds()) / 1000 / float64(n)
	}
	return m
}
