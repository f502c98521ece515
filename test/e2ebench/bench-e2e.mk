# Proposed Makefile lines for issue 9 (not included by the Makefile yet;
# add `bench-e2e` to .PHONY and paste the target, or `include test/e2ebench/bench-e2e.mk`).
# End-to-end throughput: bare Postfix vs Postfix+mailnode vs Postfix+OpenDKIM+postgrey,
# smtp-source -> Postfix -> smtp-sink in a network namespace it creates (needs root).
# BENCH_E2E_FLAGS=-quick for a smoke run; -wait-load 1.5 waits for a quiet machine.
BENCH_E2E_FLAGS ?= -runs 3
bench-e2e: deps build
	$(GO) run ./test/e2ebench $(BENCH_E2E_FLAGS)
