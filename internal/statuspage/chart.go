package statuspage

import (
	"fmt"
	"html"
	"html/template"
	"strings"
	"time"
)

// Chart geometry: one bar per minute.
const (
	chartBar    = 10 // px per minute, gap included
	chartHeight = 120
	chartLeft   = 40 // room for the scale
	chartTop    = 10
)

// chartColors are the outcomes' colours, also used by the legend.
var chartColors = [NumOutcomes]string{"#4a9a4a", "#c0392b", "#e0a800", "#3b6fb6"}

// stackOrder draws accepted at the bottom, then the deferrals, then the
// rejections on top.
var stackOrder = [NumOutcomes]Outcome{Accepted, Greylisted, Deferred, Rejected}

// Chart draws the decisions per minute of v, stacked by outcome, as an
// inline SVG (no script, nothing loaded): the hour from left to right, the
// tallest minute setting the scale. loc is the zone of the time labels.
// Every text in it is escaped.
func Chart(v WindowView, loc *time.Location) template.HTML {
	if loc == nil {
		loc = time.UTC
	}
	peak := 0
	for _, m := range v.Minutes {
		t := 0
		for _, n := range m {
			t += n
		}
		peak = max(peak, t)
	}
	width := chartLeft + Minutes*chartBar + 10
	height := chartTop + chartHeight + 30
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" id="decisions-chart" role="img" width="%d" height="%d" viewBox="0 0 %d %d">`, width, height, width, height)
	b.WriteString(`<title>decisions per minute over the last hour, stacked by outcome</title>`)
	base := chartTop + chartHeight
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#888"/>`, chartLeft, base, chartLeft+Minutes*chartBar, base)
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11" text-anchor="end">%d</text>`, chartLeft-4, chartTop+10, peak)
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11" text-anchor="end">0</text>`, chartLeft-4, base)
	if peak == 0 {
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="13" text-anchor="middle" fill="#555">%s</text>`,
			chartLeft+Minutes*chartBar/2, chartTop+chartHeight/2, html.EscapeString("no decisions in the last hour"))
	}
	for i, m := range v.Minutes {
		total := 0
		for _, n := range m {
			total += n
		}
		if total == 0 {
			continue
		}
		at := v.Start.Add(time.Duration(i) * time.Minute).In(loc)
		var tip []string
		for _, o := range stackOrder {
			if m[o] > 0 {
				tip = append(tip, fmt.Sprintf("%d %s", m[o], o))
			}
		}
		fmt.Fprintf(&b, `<g><title>%s</title>`, html.EscapeString(at.Format("15:04")+": "+strings.Join(tip, ", ")))
		y := float64(base)
		for _, o := range stackOrder {
			if m[o] == 0 {
				continue
			}
			h := float64(m[o]) * chartHeight / float64(peak)
			y -= h
			fmt.Fprintf(&b, `<rect x="%d" y="%.1f" width="%d" height="%.1f" fill="%s"/>`, chartLeft+i*chartBar, y, chartBar-1, h, chartColors[o])
		}
		b.WriteString(`</g>`)
	}
	for _, l := range []struct {
		i      int
		anchor string
	}{{0, "start"}, {Minutes / 2, "middle"}, {Minutes - 1, "end"}} {
		x := chartLeft + l.i*chartBar
		if l.anchor == "end" {
			x += chartBar
		}
		label := v.Start.Add(time.Duration(l.i) * time.Minute).In(loc).Format("15:04")
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11" text-anchor="%s">%s</text>`, x, base+14, l.anchor, html.EscapeString(label))
	}
	x := chartLeft
	for _, o := range stackOrder {
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d" font-size="11">%s</text>`,
			x, base+18, chartColors[o], x+14, base+27, html.EscapeString(o.String()))
		x += 100
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}
