#!/usr/bin/env bash
# Tests the example receivers: the shared vectors against openssl, each
# receiver's verify function against the shared vectors (node --test,
# python3 -m unittest, go test, cargo test), then the end-to-end smoke test
# of all four real servers. Fails on any failure and names a missing tool;
# nothing is skipped.
#
#   examples/receivers/test.sh
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

missing=()
for tool in openssl node python3 go cargo; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "[receivers] missing tool(s): ${missing[*]} (needed: openssl, Node 20, Python 3.11, Go 1.26, Rust/cargo)" >&2
  exit 1
fi

# Rust builds go outside the source tree.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/outbound-webhooks/receiver-rust-target}"

failed=()
step() {
  local name=$1; shift
  local started=$SECONDS
  echo "[receivers] $name" >&2
  if "$@"; then
    echo "[receivers] $name: PASS ($((SECONDS - started))s)" >&2
  else
    echo "[receivers] $name: FAIL" >&2
    failed+=("$name")
  fi
}

step "vectors vs openssl" python3 check_vectors.py
step "node unit" bash -c 'cd node && node --test verify.test.js'
step "python unit" bash -c 'cd python && python3 -B -m unittest -v test_verify'
step "go unit" bash -c 'cd go && go vet ./... && go test -count=1 ./...'
step "rust unit" bash -c 'cd rust && cargo test --locked --quiet'
step "smoke (all four servers)" python3 -B smoke_test.py

if ((${#failed[@]})); then
  echo "[receivers] FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "[receivers] all passed" >&2
