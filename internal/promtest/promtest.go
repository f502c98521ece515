// Package promtest reads one series of a metric out of a Prometheus
// registry, for the daemons' tests.
package promtest

import "github.com/prometheus/client_golang/prometheus"

// Value returns the series of metric name whose labels include every
// name=value of labels: a counter's or gauge's value, or a histogram's
// sample count. ok is false when there is no such series.
func Value(g prometheus.Gatherer, name string, labels map[string]string) (v float64, ok bool, err error) {
	mfs, err := g.Gather()
	if err != nil {
		return 0, false, err
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, s := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range s.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, want := range labels {
				if have[k] != want {
					continue series
				}
			}
			switch {
			case s.Counter != nil:
				return s.Counter.GetValue(), true, nil
			case s.Gauge != nil:
				return s.Gauge.GetValue(), true, nil
			case s.Histogram != nil:
				return float64(s.Histogram.GetSampleCount()), true, nil
			}
		}
	}
	return 0, false, nil
}
