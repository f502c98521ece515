package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// Targets of issue 24, per scenario, on the median delivered and accepted
// rates. floor/bare has none: it is what the two protocols cost Postfix.
const (
	TargetVsFloor   = 0.95
	TargetVsClassic = 1.30
	TargetVsRspamd  = 1.50
)

type stat struct{ med, lo, hi, loadLo, loadHi float64 }

func summarize(rs []Result, metric func(Result) float64) stat {
	if len(rs) == 0 {
		return stat{}
	}
	v := make([]float64, len(rs))
	s := stat{loadLo: rs[0].Load, loadHi: rs[0].Load}
	for i, r := range rs {
		v[i] = metric(r)
		s.loadLo, s.loadHi = min(s.loadLo, r.Load), max(s.loadHi, r.Load)
	}
	sort.Float64s(v)
	s.lo, s.hi = v[0], v[len(v)-1]
	if n := len(v); n%2 == 1 {
		s.med = v[n/2]
	} else {
		s.med = (v[n/2-1] + v[n/2]) / 2
	}
	return s
}

// Report prints one table per metric (accepted, delivered messages/s):
// rows = scenario, columns = bare, floor, mailnode, classic, rspamd
// (median, min–max, the 1-minute load average range at the start of the
// runs), floor/bare (no target: what the protocols alone cost),
// mailnode/floor, mailnode/classic, mailnode/rspamd (ratios of medians,
// marked when a target is missed).
// It returns the number of missed targets.
func Report(w io.Writer, scs []Scenario, results []Result) (missed int) {
	by := map[string][]Result{}
	for _, r := range results {
		k := r.Scenario.String() + "|" + r.Stack
		by[k] = append(by[k], r)
	}
	for _, m := range []struct {
		name string
		f    func(Result) float64
	}{
		{"accepted msg/s (smtp-source: N / wall time)", func(r Result) float64 { return r.Accepted }},
		{"delivered msg/s (smtp-sink: N / time to the N-th arrival)", func(r Result) float64 { return r.Delivered }},
	} {
		fmt.Fprintf(w, "\n%s — median (min–max) [load avg 1m]\n", m.name)
		fmt.Fprintf(w, "%-44s | %-26s | %-26s | %-26s | %-26s | %-26s | %-10s | %-14s | %-16s | %-15s\n", "scenario (N messages)", Bare, Floor, Mailnode, Classic, Rspamd,
			"floor/bare", "mailnode/floor", "mailnode/classic", "mailnode/rspamd")
		fmt.Fprintln(w, strings.Repeat("-", 44+26*5+10+14+16+15+27))
		for _, sc := range scs {
			st := map[string]stat{}
			cells := []string{}
			for _, name := range stackNames {
				rs := by[sc.String()+"|"+name]
				if len(rs) == 0 {
					cells = append(cells, "-")
					continue
				}
				s := summarize(rs, m.f)
				st[name] = s
				cells = append(cells, fmt.Sprintf("%.0f (%.0f–%.0f) [%.1f–%.1f]", s.med, s.lo, s.hi, s.loadLo, s.loadHi))
			}
			ratio := func(a, b string, target float64) string {
				x, okx := st[a]
				y, oky := st[b]
				if !okx || !oky || y.med == 0 {
					return "-"
				}
				r := x.med / y.med
				mark := ""
				if r < target {
					mark = " MISS"
					missed++
				}
				return fmt.Sprintf("%.2f%s", r, mark)
			}
			fmt.Fprintf(w, "%-44s | %-26s | %-26s | %-26s | %-26s | %-26s | %-10s | %-14s | %-16s | %-15s\n", fmt.Sprintf("%s (%d)", sc, sc.N), cells[0], cells[1], cells[2], cells[3], cells[4],
				ratio(Floor, Bare, 0), ratio(Mailnode, Floor, TargetVsFloor), ratio(Mailnode, Classic, TargetVsClassic), ratio(Mailnode, Rspamd, TargetVsRspamd))
		}
	}
	fmt.Fprintf(w, "\nCPU ms per message, medians: postfix (master and all its processes) + sidecars; source/sink = smtp-source/smtp-sink\n")
	for _, sc := range scs {
		var cells []string
		for _, name := range stackNames {
			rs := by[sc.String()+"|"+name]
			if len(rs) == 0 {
				continue
			}
			var parts []string
			keys := map[string]bool{}
			for _, r := range rs {
				for k := range r.CPU {
					keys[k] = true
				}
			}
			var ks []string
			for k := range keys {
				ks = append(ks, k)
			}
			sort.Slice(ks, func(i, j int) bool { return cpuOrder(ks[i]) < cpuOrder(ks[j]) })
			for _, k := range ks {
				s := summarize(rs, func(r Result) float64 { return r.CPU[k] })
				parts = append(parts, fmt.Sprintf("%s %.2f", k, s.med))
			}
			cells = append(cells, name+": "+strings.Join(parts, " "))
		}
		fmt.Fprintf(w, "%-44s | %s\n", sc, strings.Join(cells, " | "))
	}
	return missed
}

func cpuOrder(k string) string {
	switch k {
	case "postfix":
		return "0"
	case "source":
		return "8"
	case "sink":
		return "9"
	}
	return "1" + k
}

// ReportRSS prints the peak resident set (VmHWM) of every sidecar.
func ReportRSS(w io.Writer, b *Bench) {
	fmt.Fprintf(w, "\nsidecar peak RSS (VmHWM, whole run):")
	for _, name := range stackNames {
		s, ok := b.stacks[name]
		if !ok {
			continue
		}
		h := s.hwm()
		var ds []string
		for d := range h {
			ds = append(ds, d)
		}
		sort.Strings(ds)
		for _, d := range ds {
			fmt.Fprintf(w, "  %s/%s %.1f MiB", name, d, float64(h[d])/1024)
		}
	}
	fmt.Fprintln(w)
}
