#!/usr/bin/env bash
# Builds the book in docs/ (mdBook) into docs/book/ and checks its links
# with mdbook-linkcheck, offline: every link between pages and to files in
# the book must resolve; no web link is fetched. The anchors that code,
# chart texts and README cite are checked by tests/docs_anchors.rs. Needs
# the tools of scripts/install-tools.sh.
#
#   OUTBOUND_WEBHOOKS_TOOLS_DIR  where built tools live (as install-tools.sh)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools_dir=${OUTBOUND_WEBHOOKS_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/outbound-webhooks/tools}
bin_dir="$tools_dir/bin"

for tool in mdbook mdbook-linkcheck; do
  if [ ! -x "$bin_dir/$tool" ]; then
    echo "[docs] missing $tool: run scripts/install-tools.sh" >&2
    exit 1
  fi
done

# mdBook runs the linkcheck backend by its name, so it must be on PATH.
PATH="$bin_dir:$PATH" mdbook build "$repo/docs"
echo "[docs] built docs/book/html; every link between the book's pages resolves" >&2
