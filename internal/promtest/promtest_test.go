package promtest

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestValue(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c_total", Help: "x"}, []string{"a", "b"})
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g", Help: "x"})
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h_seconds", Help: "x"})
	reg.MustRegister(c, g, h)
	c.WithLabelValues("1", "x").Add(2)
	c.WithLabelValues("1", "y").Add(5)
	g.Set(7)
	h.Observe(1)
	h.Observe(2)
	for _, tc := range []struct {
		name   string
		labels map[string]string
		v      float64
		ok     bool
	}{
		{"c_total", map[string]string{"a": "1", "b": "y"}, 5, true},
		{"c_total", map[string]string{"b": "x"}, 2, true},
		{"c_total", map[string]string{"b": "z"}, 0, false},
		{"g", nil, 7, true},
		{"h_seconds", nil, 2, true},
		{"missing", nil, 0, false},
	} {
		v, ok, err := Value(reg, tc.name, tc.labels)
		if err != nil || v != tc.v || ok != tc.ok {
			t.Errorf("%s %v: %v %v %v, want %v %v", tc.name, tc.labels, v, ok, err, tc.v, tc.ok)
		}
	}
}
