package statuspage

import (
	"encoding/xml"
	"strings"
	"testing"
	"time"
)

// wellFormed parses the chart as XML: an escaping mistake breaks it.
func wellFormed(t *testing.T, svg string) {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(svg))
	for {
		_, err := d.Token()
		if err != nil {
			if err.Error() != "EOF" {
				t.Fatalf("chart is not well-formed XML: %v\n%s", err, svg)
			}
			return
		}
	}
}

func TestChartEmpty(t *testing.T) {
	var v WindowView
	v.Start = t0
	svg := string(Chart(v, nil))
	wellFormed(t, svg)
	if !strings.Contains(svg, "no decisions in the last hour") || strings.Contains(svg, "<g>") {
		t.Errorf("empty chart: %s", svg)
	}
	for _, want := range []string{">04:00<", ">04:30<", ">04:59<", ">accepted<", ">rejected<"} {
		if !strings.Contains(svg, want) {
			t.Errorf("empty chart lacks %s: %s", want, svg)
		}
	}
}

func TestChartBars(t *testing.T) {
	w := NewWindow(2)
	for range 3 {
		w.Add(t0.Add(58*time.Minute), 0, Accepted)
	}
	w.Add(t0.Add(58*time.Minute), 1, Rejected)
	w.Add(t0.Add(59*time.Minute), 1, Greylisted)
	svg := string(Chart(w.View(t0.Add(59*time.Minute)), time.UTC))
	wellFormed(t, svg)
	if n := strings.Count(svg, "<g>"); n != 2 {
		t.Errorf("%d bars, want 2: %s", n, svg)
	}
	for _, want := range []string{
		"<title>04:58: 3 accepted, 1 rejected</title>",
		"<title>04:59: 1 greylisted</title>",
		// The tallest minute (4) is the full height, 120 px: 3 accepted
		// are 90, the rejection 30 above them.
		`y="40.0" width="9" height="90.0" fill="#4a9a4a"`,
		`y="10.0" width="9" height="30.0" fill="#c0392b"`,
		`text-anchor="end">4</text>`,
	} {
		if !strings.Contains(svg, want) {
			t.Errorf("chart lacks %s:\n%s", want, svg)
		}
	}
	if strings.Contains(svg, "no decisions") || strings.Contains(svg, "<script") {
		t.Errorf("chart: %s", svg)
	}
}
