#!/usr/bin/env bash
# The delivery-path benchmark: release builds, then every process on loopback
# (control plane, Redis, the controller, a fast receiver, dispatchers), the
# scenarios and a table. Everything it starts stops when it ends, also on Ctrl-C.
#
#   benches/run.sh                  # full run (under 10 minutes after the build)
#   BENCH_SCALE=0.1 benches/run.sh  # a smaller, quicker run
#   BENCH_SKIP_FOOTPRINT=1 benches/run.sh
#                                   # skip scenario 5 (seeding 50,000 hooks; BENCH_SKIP_10K
#                                   # is still read as this)
#   BENCH_ONLY_FOOTPRINT=1 benches/run.sh
#                                   # the control plane and scenario 5 only: 50,000 hooks
#                                   # (10,000 namespaces x 5) seeded in bulk with their Secrets
#                                   # and status; seeding time, time until the dispatcher's
#                                   # caches synced, its idle RSS and RSS per hook
#   BENCH_FOOTPRINT_COMPARE="/path/a /path/b" benches/run.sh
#                                   # scenario 5 also measures these outbound-webhooks binaries
#                                   # (or scripts that exec one) on the same hooks
#   BENCH_ONLY_1A=1 benches/run.sh  # the control plane and scenario 1a only
#   BENCH_ONLY_LATENCY=7000 BENCH_SKIP_CONTROLLER=1 benches/run.sh
#                                   # scenario 2 only, at 1,000 and 7,000 events/s
#                                   # (BENCH_LATENCY_RATES=1000,4000,8000 for other rates)
#   BENCH_SKIP_CONTROLLER=1 benches/run.sh
#                                   # every dispatcher scenario, not the controller's
#   BENCH_DISPATCHER=PATH benches/run.sh
#                                   # measure another build of the dispatcher (an
#                                   # older commit's) with this driver and baselines
#   BENCH_ONLY_CONTROLLER=1 benches/run.sh
#                                   # the control plane and the controller scenario only
#                                   # (the real controller, 10,000 hooks created at once in
#                                   # 2,000 namespaces, time until all are Ready, its RSS/CPU
#                                   # and the API server's; BENCH_CONTROLLER_NAMESPACES=200
#                                   # for 1,000 hooks, BENCH_CONTROLLER_ARGS adds controller flags)
#   BENCH_ONLY_FLEET=1 benches/run.sh
#                                   # the control plane and scenario 8 only: 1,000 hooks on
#                                   # 1,000 HTTPS host names answering after 200 ms
#                                   # (BENCH_FLEET_LATENCY_MS), against Little's limit and a
#                                   # bare hyper client; BENCH_FLEET_ARGS adds dispatcher flags
#   BENCH_ONLY_FEATURES=1 benches/run.sh
#                                   # the control plane and scenario 7 only
#   BENCH_SKIP_FEATURES=1, BENCH_SKIP_FLEET=1
#                                   # skip scenario 7 (filters, tracing, a rate limit) or 8
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"

echo "bench: building (release)" >&2
cargo build --release --manifest-path "$repo/Cargo.toml" --bin outbound-webhooks
CARGO_TARGET_DIR="$target" cargo build --release --manifest-path "$repo/benches/Cargo.toml"

driver_pid=
stop() {
  if [ -n "$driver_pid" ]; then kill -INT "$driver_pid" 2>/dev/null || true; wait "$driver_pid" 2>/dev/null || true; fi
}
trap stop INT TERM
"$target/release/outbound-webhooks-bench" "$repo" "${BENCH_DISPATCHER:-$target/release/outbound-webhooks}" &
driver_pid=$!
status=0
wait "$driver_pid" || status=$?
driver_pid=
exit "$status"
