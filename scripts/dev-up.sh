#!/usr/bin/env bash
# Brings the whole system up locally on loopback, with nothing but this
# machine: builds the tools (once), starts etcd + kube-apiserver + Redis,
# applies the CRD and the examples into namespace `acme`, and prints how to
# look around. Ctrl-C stops everything it started.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

say() { printf '[dev-up] %s\n' "$*" >&2; }

say "installing tools (cached after the first run)"
bin_dir=$(scripts/install-tools.sh)

state=$(mktemp -d "${TMPDIR:-/tmp}/outbound-webhooks-dev.XXXXXX")
rmdir "$state"
fifo=$(mktemp -u "${TMPDIR:-/tmp}/outbound-webhooks-dev-fifo.XXXXXX")
mkfifo "$fifo"
ready="$state.ready"

# The control plane runs until its stdin closes: we hold the fifo's write end
# on fd 3, so it stops when this script ends, however it ends.
scripts/control-plane.sh "$state" <"$fifo" >"$ready" &
cp_pid=$!
exec 3>"$fifo"
rm -f "$fifo"
trap 'say "stopping"; exec 3>&-; wait $cp_pid 2>/dev/null; rm -f "$ready"; exit 0' INT TERM
trap 'exec 3>&-; wait $cp_pid 2>/dev/null; rm -f "$ready"' EXIT

until grep -q '^READY' "$ready" 2>/dev/null; do
  kill -0 $cp_pid 2>/dev/null || { say "the control plane failed to start"; exit 1; }
  sleep 0.5
done
line=$(grep '^READY' "$ready")
kubeconfig=$(sed -n 's/.*kubeconfig=\([^ ]*\).*/\1/p' <<<"$line")
redis_url=$(sed -n 's/.*redis=\([^ ]*\).*/\1/p' <<<"$line")
kubectl() { "$bin_dir/kubectl" --kubeconfig "$kubeconfig" "$@"; }

say "applying the examples into namespace acme"
kubectl create namespace acme >/dev/null
kubectl apply -n acme -f examples/ >/dev/null
kubectl get owh -n acme

cat <<EOF_HELP

The control plane is up. In another terminal:

  export KUBECONFIG=$kubeconfig PATH=$bin_dir:\$PATH
  kubectl get owh -A
  kubectl explain owh.spec
  redis-cli -u $redis_url

Ctrl-C here stops everything.
EOF_HELP

while kill -0 $cp_pid 2>/dev/null; do sleep 1; done
say "the control plane stopped"
exit 1
