package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// cpuSnapshot is the CPU time (user+system) used so far by the parts of a
// stack: "postfix" (the master, its live children and the children it has
// reaped), each sidecar by name, and "sink" (smtp-sink).
type cpuSnapshot map[string]time.Duration

// procStat reads utime, stime, cutime, cstime and ppid of a process.
func procStat(pid int) (self, children time.Duration, ppid int, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return 0, 0, 0, false
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 15 {
		return 0, 0, 0, false
	}
	n := func(k int) time.Duration {
		v, _ := strconv.ParseInt(f[k], 10, 64)
		return time.Duration(v) * time.Second / 100 // USER_HZ
	}
	ppid, _ = strconv.Atoi(f[1])
	return n(11) + n(12), n(13) + n(14), ppid, true
}

func (s *stack) cpu() cpuSnapshot {
	c := cpuSnapshot{}
	for name, pid := range s.daemons {
		if self, _, _, ok := procStat(pid); ok {
			c[name] = self
		}
	}
	if len(s.procs) > 0 {
		if self, _, _, ok := procStat(s.procs[0].cmd.Process.Pid); ok {
			c["sink"] = self
		}
	}
	master := 0
	if b, err := os.ReadFile(filepath.Join(s.node.Inv.Postfix.QueueDirectory, "pid", "master.pid")); err == nil {
		master, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	if master <= 0 {
		return c
	}
	self, children, _, _ := procStat(master)
	total := self + children
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if self, children, ppid, ok := procStat(pid); ok && ppid == master {
			total += self + children
		}
	}
	c["postfix"] = total
	return c
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
