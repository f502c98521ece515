package procstat

import (
	"os"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	// A command name with a space and a parenthesis, as a process may name itself.
	line := "4242 (a b) c) S 17 4242 4242 0 -1 4194560 100 0 9 0 250 130 7 3 20 0 1 0 100 1000 100 1 1 1 1 1 1 0 0 0 17 0 0 0 0 0 0\n"
	s, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if s.State != 'S' || s.PPid != 17 || s.CPU != 3800*time.Millisecond || s.ChildCPU != 100*time.Millisecond || s.MajFlt != 9 {
		t.Errorf("%+v", s)
	}
	if _, err := parseStat([]byte("4242 (x) S 1 2")); err == nil {
		t.Error("short line accepted")
	}
}

func TestSelf(t *testing.T) {
	pid := os.Getpid()
	s, err := Read(pid)
	if err != nil || s.PPid != os.Getppid() || s.Zombie() {
		t.Fatalf("%+v %v", s, err)
	}
	rss, err := RSS(pid)
	if err != nil || rss <= 0 {
		t.Errorf("RSS %d %v", rss, err)
	}
	peak, err := PeakRSS(pid)
	if err != nil || peak < rss {
		t.Errorf("peak RSS %d (RSS %d) %v", peak, rss, err)
	}
	if n, err := FDs(pid); err != nil || n < 3 {
		t.Errorf("%d fds, %v", n, err)
	}
	if l, err := LoadAvg(); err != nil || l[0] < 0 {
		t.Errorf("load %v %v", l, err)
	}
	cpu, runs, err := Sched(pid)
	if err != nil || runs <= 0 || cpu <= 0 {
		t.Errorf("Sched: %v, %d runs, %v", cpu, runs, err)
	}
	time.Sleep(time.Millisecond) // a wake-up
	if _, more, err := Sched(pid); err != nil || more <= runs {
		t.Errorf("Sched: %d runs after %d and a sleep, %v", more, runs, err)
	}
	found := false
	for _, p := range Pids() {
		found = found || p == pid
	}
	if !found {
		t.Error("own pid not listed")
	}
}
