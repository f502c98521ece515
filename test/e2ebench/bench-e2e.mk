# The Makefile lines proposed for issue 9 (the Makefile carries them since
# 05a6c85; this file is the reference, the Makefile does not include it).
#
# End-to-end throughput: bare Postfix vs Postfix+mailnode vs Postfix+OpenDKIM+postgrey
# vs Postfix+rspamd, and the floor (do-nothing sidecars),
# smtp-source -> Postfix -> smtp-sink inside a network namespace it creates
# (root; nothing leaves the machine). About 5 minutes on 2 cores.
#   BENCH_E2E_FLAGS=-quick           smoke run (about a minute)
#   BENCH_E2E_FLAGS="-perf DIR"      also perf-record every sidecar per measurement
BENCH_E2E_FLAGS ?= -runs 3 -wait-load 1.5 -wait-max 10m
bench-e2e: deps build
	$(GO) run ./test/e2ebench $(BENCH_E2E_FLAGS)

# and, as a section of `make bench`, append to its recipe:
#	$(MAKE) bench-e2e
