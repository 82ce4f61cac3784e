#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs the tools it needs
# (built once, cached outside the checkout), then every unit and end-to-end
# test against a real kube-apiserver, etcd, kubectl and redis-server.
#
#   scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "[test] installing tools (cached after the first run)" >&2
scripts/install-tools.sh >/dev/null

echo "[test] installing the signature verifiers (tests/verifiers)" >&2
command -v npm >/dev/null 2>&1 || { echo "[test] missing npm: install Node.js 20 (apt-get install -y nodejs npm)" >&2; exit 1; }
npm ci --prefix tests/verifiers --no-audit --no-fund >/dev/null

echo "[test] example receivers and the Argo CD health check" >&2
scripts/test-receivers-and-health.sh

echo "[test] the image (scripts/build-image.sh: release build, buildah; cached by the binary's hash)" >&2
scripts/build-image.sh >&2

echo "[test] the book in docs/ (mdBook) and its links (mdbook-linkcheck, offline)" >&2
scripts/docs.sh

echo "[test] cargo test (unit tests and end-to-end tests on the real control plane)" >&2
cargo test --all-targets "$@"

echo "[test] the README's first command (scripts/dev-up.sh), bounded, then a clean stop" >&2
scripts/test-dev-up.sh
