// Package procstat reads what Linux's /proc says about a process: its state,
// parent, CPU time, resident set (now and at its peak) and open file
// descriptors, and the machine's load average. It is the one /proc reader of
// the load tools (cmd/mailnode-bench), the end-to-end benchmark
// (test/e2ebench) and the test harness (test/harness): test and benchmark
// machinery, never imported by the product.
package procstat

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// userHZ is the unit of the times in /proc/PID/stat (USER_HZ, 100 on Linux).
const userHZ = 100

// Stat is the part of /proc/PID/stat the tools use.
type Stat struct {
	State    byte          // R, S, D, Z, ...
	PPid     int           // parent process id
	CPU      time.Duration // user+system time of the process (utime+stime)
	ChildCPU time.Duration // user+system time of the children it has reaped (cutime+cstime)
	MajFlt   int64         // page faults that waited for the disk (majflt)
}

// Zombie reports whether the process has exited and waits to be reaped.
func (s Stat) Zombie() bool { return s.State == 'Z' }

// Read reads /proc/PID/stat.
func Read(pid int) (Stat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Stat{}, err
	}
	return parseStat(b)
}

// parseStat parses the text of /proc/PID/stat. The command name, in
// parentheses, may hold spaces and parentheses: fields count from the last
// closing parenthesis.
func parseStat(b []byte) (Stat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Stat{}, errors.New("procstat: bad /proc stat")
	}
	// f[0] is the state (field 3 of proc(5)), f[1] the parent, f[9] majflt,
	// f[11]..f[14] utime, stime, cutime, cstime.
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 || len(f[0]) != 1 {
		return Stat{}, errors.New("procstat: short /proc stat")
	}
	var n [4]int64
	for k := range n {
		v, err := strconv.ParseInt(f[11+k], 10, 64)
		if err != nil {
			return Stat{}, errors.New("procstat: bad /proc stat times")
		}
		n[k] = v
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return Stat{}, errors.New("procstat: bad /proc stat ppid")
	}
	maj, err := strconv.ParseInt(f[9], 10, 64)
	if err != nil {
		return Stat{}, errors.New("procstat: bad /proc stat majflt")
	}
	ticks := func(t int64) time.Duration { return time.Duration(t) * time.Second / userHZ }
	return Stat{State: f[0][0], PPid: ppid, CPU: ticks(n[0] + n[1]), ChildCPU: ticks(n[2] + n[3]), MajFlt: maj}, nil
}

// CPU returns the user+system CPU time a process has used.
func CPU(pid int) (time.Duration, error) {
	s, err := Read(pid)
	return s.CPU, err
}

// SchedCPU returns the time the live threads of a process have run on a
// CPU, in nanoseconds (the first field of each /proc/PID/task/TID/schedstat):
// /proc/PID/stat counts in USER_HZ ticks of 10 ms, too coarse to tell a
// few dozen microseconds per message apart. Threads that have exited are
// not counted.
func SchedCPU(pid int) (time.Duration, error) {
	cpu, _, err := Sched(pid)
	return cpu, err
}

// Sched returns SchedCPU and how many times the live threads of a process
// have been put on a CPU (the third field of each schedstat: its wake-ups,
// plus its returns from being preempted), from one reading of the files.
func Sched(pid int) (cpu time.Duration, runs int64, err error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, err
	}
	for _, t := range tasks {
		b, err := os.ReadFile(dir + "/" + t.Name() + "/schedstat")
		if err != nil {
			continue // the thread has just exited
		}
		f := strings.Fields(string(b))
		if len(f) < 3 {
			continue
		}
		ns, err1 := strconv.ParseInt(f[0], 10, 64)
		n, err2 := strconv.ParseInt(f[2], 10, 64)
		if err1 != nil || err2 != nil {
			return 0, 0, fmt.Errorf("procstat: %s/schedstat: %q", t.Name(), b)
		}
		cpu += time.Duration(ns)
		runs += n
	}
	return cpu, runs, nil
}

// SelfCPU is the user+system CPU time this process has used (getrusage).
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// RSS returns the resident set size of a process (VmRSS), in bytes.
func RSS(pid int) (int64, error) { return status(pid, "VmRSS") }

// PeakRSS returns the peak resident set size of a process (VmHWM), in bytes.
func PeakRSS(pid int) (int64, error) { return status(pid, "VmHWM") }

// status reads a size field ("VmRSS", "VmHWM", in kB) of /proc/PID/status.
func status(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field+":" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("procstat: no %s in /proc/%d/status", field, pid)
}

// FDs returns the number of open file descriptors of a process.
func FDs(pid int) (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents), err
}

// Pids lists the processes /proc shows.
func Pids() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// LoadAvg returns the 1, 5 and 15 minute load averages.
func LoadAvg() ([3]float64, error) {
	var l [3]float64
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return l, err
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return l, errors.New("procstat: short /proc/loadavg")
	}
	for i := range l {
		if l[i], err = strconv.ParseFloat(f[i], 64); err != nil {
			return l, fmt.Errorf("procstat: /proc/loadavg: %w", err)
		}
	}
	return l, nil
}
