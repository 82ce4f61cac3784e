#!/usr/bin/env bash
# Runs the README's first command (scripts/dev-up.sh) with a bounded
# duration: it must bring everything up and show verified deliveries, then
# stop cleanly on a signal, leaving no process and no state directory.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '[test-dev-up] %s\n' "$*" >&2; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT

scripts/dev-up.sh >"$log" 2>&1 &
pid=$!

deadline=$((SECONDS + 300))
until grep -q 'Ctrl-C here stops everything' "$log"; do
  if ! kill -0 $pid 2>/dev/null; then
    say "dev-up.sh exited before it was up:"; cat "$log" >&2; exit 1
  fi
  if [ $SECONDS -ge $deadline ]; then
    say "dev-up.sh was not up after 300s:"; cat "$log" >&2; kill -TERM $pid; exit 1
  fi
  sleep 1
done
verified=$(grep -c '^verified ' "$log" || true)
if [ "$verified" -lt 3 ]; then
  say "expected three verified deliveries, saw $verified:"; cat "$log" >&2; kill -TERM $pid; exit 1
fi
run_dir=$(sed -n 's|.*KUBECONFIG=\([^ ]*\)/control-plane/kubeconfig.*|\1|p' "$log" | head -1)
[ -n "$run_dir" ] || { say "dev-up.sh printed no KUBECONFIG line"; cat "$log" >&2; kill -TERM $pid; exit 1; }
say "up, with $verified verified deliveries; stopping it"

# Ctrl-C in a terminal; a background job ignores SIGINT, so TERM here (the
# script handles both the same way).
kill -TERM $pid
# dev-up.sh gives each process 20s to stop before it kills it.
deadline=$((SECONDS + 120))
while kill -0 $pid 2>/dev/null; do
  [ $SECONDS -lt $deadline ] || { say "dev-up.sh did not stop within 120s; its output:"; cat "$log" >&2; exit 1; }
  sleep 0.5
done
if grep -q 'did not stop within' "$log"; then
  say "a process did not stop when asked; dev-up.sh's output:"; cat "$log" >&2; exit 1
fi
sleep 1
# dev-up.sh marks every process it starts with OUTBOUND_WEBHOOKS_DEV_RUN.
stray=$(grep -lsa "OUTBOUND_WEBHOOKS_DEV_RUN=$run_dir" /proc/[0-9]*/environ 2>/dev/null \
  | cut -d/ -f3 | xargs -r ps -o pid=,args= -p || true)
if [ -n "$stray" ]; then
  say "stray processes after dev-up.sh stopped:"; echo "$stray" >&2; exit 1
fi
if [ -e "$run_dir" ]; then
  say "dev-up.sh left its state directory $run_dir behind"; exit 1
fi
say "stopped cleanly: no stray process, no state left"
