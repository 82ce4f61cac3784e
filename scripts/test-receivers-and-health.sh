#!/usr/bin/env bash
# Tests the example receivers (shared signature vectors, each receiver's unit
# tests, the end-to-end smoke test of all four servers) and the Argo CD health
# check (every testdata case under Lua 5.1). Exits non-zero on any failure or
# missing tool; nothing is skipped.
#
# Needs: openssl, Node 20, Python 3.11, Go 1.26, Rust (cargo), lua5.1. lua5.1
# is installed with apt-get when missing (as root, or with sudo).
#
#   scripts/test-receivers-and-health.sh
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

started=$SECONDS
failed=()

if ! command -v lua5.1 >/dev/null 2>&1; then
  echo "[receivers+health] lua5.1 missing: installing it with apt-get" >&2
  if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo -n); fi
  if command -v apt-get >/dev/null 2>&1; then
    "${sudo[@]}" apt-get update -qq >&2 && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lua5.1 >&2
  fi
  if ! command -v lua5.1 >/dev/null 2>&1; then
    echo "[receivers+health] missing tool: lua5.1 (apt-get install -y lua5.1)" >&2
    exit 1
  fi
fi

echo "[receivers+health] example receivers" >&2
t=$SECONDS
if examples/receivers/test.sh; then
  echo "[receivers+health] example receivers: PASS ($((SECONDS - t))s)" >&2
else
  echo "[receivers+health] example receivers: FAIL" >&2
  failed+=(receivers)
fi

echo "[receivers+health] Argo CD health check (Lua 5.1)" >&2
t=$SECONDS
if python3 -B charts/outbound-webhooks/argocd/run_health_tests.py; then
  echo "[receivers+health] Argo CD health check: PASS ($((SECONDS - t))s)" >&2
else
  echo "[receivers+health] Argo CD health check: FAIL" >&2
  failed+=(argocd-health)
fi

if ((${#failed[@]})); then
  echo "[receivers+health] FAILED: ${failed[*]} ($((SECONDS - started))s)" >&2
  exit 1
fi
echo "[receivers+health] all passed ($((SECONDS - started))s)" >&2
