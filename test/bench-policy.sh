#!/usr/bin/env bash
# make bench-policy: starts policyd on the example inventory (matrix only:
# greylisting and rate limits are measured by `mailnode-bench greylist`),
# then replays a realistic request mix over 8 persistent connections with
# 1,000 idle connections held open (IDLE=N for more), checking every reply
# against Decide.
# Usage: test/bench-policy.sh [MAILNODE [MAILNODE-BENCH]]
set -euo pipefail
bin=${1:-bin/mailnode}
bench=${2:-bin/mailnode-bench}
T=$(mktemp -d)
trap 'kill $(cat "$T/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$T"' EXIT
/usr/bin/python3 -I - examples/inventory.yaml >"$T/inv.yaml" <<'PY'
import sys, yaml
inv = yaml.safe_load(open(sys.argv[1]))
inv['policy'].pop('greylist', None)
inv['policy'].pop('ratelimit', None)
yaml.safe_dump(inv, sys.stdout, sort_keys=False)
PY
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true  # thousands of idle connections need a high limit
"$bin" policyd -i "$T/inv.yaml" --listen "unix:$T/policy.sock" --maillog off 2>"$T/log" &
echo $! >"$T/pid"
for _ in $(seq 1 100); do [[ -S $T/policy.sock ]] && break; sleep 0.1; done
[[ -S $T/policy.sock ]] || { cat "$T/log"; echo "policyd did not start" >&2; exit 1; }
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
"$bench" policy --addr "unix:$T/policy.sock" -i "$T/inv.yaml" -c 8 -n "${N:-200000}" --idle "${IDLE:-1000}" --pid "$(cat "$T/pid")"
