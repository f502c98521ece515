package main

import (
	"net/http"

	"github.com/mailnode/mailnode/internal/statuspage"
)

// metricsMux serves a daemon's status page at "/" beside its metrics
// handler's /metrics and /healthz.
func metricsMux(metrics http.Handler, page *statuspage.Page) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics)
	mux.Handle("/healthz", metrics)
	mux.Handle("/", page)
	return mux
}
