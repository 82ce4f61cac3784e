#!/usr/bin/env bash
# Brings the whole system up locally on loopback, with nothing but this
# machine: builds the tools (once) and the binary, starts etcd +
# kube-apiserver + Redis, the controller, the dispatcher and the example Node
# receiver, applies the examples (namespace acme) and a hook pointing at the
# receiver (namespace demo), publishes a few events and prints the receiver's
# verified deliveries. Ctrl-C stops everything it started.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

say() { printf '[dev-up] %s\n' "$*" >&2; }
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

say "installing tools (cached after the first run)"
bin_dir=$(scripts/install-tools.sh)
say "building outbound-webhooks"
cargo build --quiet --bin outbound-webhooks
owh="$repo/target/debug/outbound-webhooks"

run=$(mktemp -d "${TMPDIR:-/tmp}/outbound-webhooks-dev.XXXXXX")
state="$run/control-plane"
fifo="$run/lifeline"
mkfifo "$fifo"
# Every process started from here on carries this marker in its environment,
# so a check can find any that outlive the script.
export OUTBOUND_WEBHOOKS_DEV_RUN="$run"
pids=()
names=()
# Stops ours first (the controller hands its Lease back through the API
# server), then the control plane; each gets 20s, and one that is still
# running then is named, its log's tail shown, and killed.
stop() {
  trap - EXIT INT TERM
  say "stopping"
  local i
  for ((i = ${#pids[@]} - 1; i >= 1; i--)); do kill "${pids[i]}" 2>/dev/null || true; done
  for ((i = ${#pids[@]} - 1; i >= 1; i--)); do stop_within 20 "$i"; done
  # The control plane stops when its standard input (the lifeline) closes;
  # a signal besides could cut its own clean-up short.
  exec 3>&- || true
  [ ${#pids[@]} -eq 0 ] || stop_within 20 0
  rm -rf "$run"
}
stop_within() {
  local seconds=$1 i=$2 deadline=$((SECONDS + $1))
  while kill -0 "${pids[i]}" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  if kill -0 "${pids[i]}" 2>/dev/null; then
    say "${names[i]} (pid ${pids[i]}) did not stop within ${seconds}s; killing it. Its log ends:"
    tail -n 30 "$run/${names[i]}.log" >&2 2>/dev/null || true
    kill -9 "${pids[i]}" 2>/dev/null || true
  fi
  wait "${pids[i]}" 2>/dev/null || true
}
trap stop EXIT
trap 'exit 0' INT TERM

# Every child reads the lifeline fifo; we hold its only write end on fd 3, so
# they all see end-of-file and stop when this script ends, however it ends.
scripts/control-plane.sh "$state" <"$fifo" >"$run/ready" &
pids+=($!)
names+=(control-plane)
exec 3>"$fifo"

until grep -q '^READY' "$run/ready" 2>/dev/null; do
  kill -0 "${pids[0]}" 2>/dev/null || { say "the control plane failed to start"; exit 1; }
  sleep 0.5
done
line=$(grep '^READY' "$run/ready")
export KUBECONFIG=$(sed -n 's/.*kubeconfig=\([^ ]*\).*/\1/p' <<<"$line")
redis_url=$(sed -n 's/.*redis=\([^ ]*\).*/\1/p' <<<"$line")
kubectl() { "$bin_dir/kubectl" "$@"; }

controller_port=$(free_port)
say "starting the controller (logs: $run/controller.log, metrics: http://127.0.0.1:$controller_port/metrics)"
"$owh" controller --http-addr "127.0.0.1:$controller_port" --allow-http --lease-namespace default \
  --exit-on-stdin-close <"$fifo" >"$run/controller.log" 2>&1 &
pids+=($!)
names+=(controller)

dispatcher_port=$(free_port)
say "starting the dispatcher (logs: $run/dispatcher.log, metrics: http://127.0.0.1:$dispatcher_port/metrics)"
"$owh" dispatcher --http-addr "127.0.0.1:$dispatcher_port" --redis-url "$redis_url" \
  --allow-destination-cidr 127.0.0.0/8 --retry-schedule 5s,10s,20s,40s,1m,2m,4m,8m,16m \
  --exit-on-stdin-close <"$fifo" >"$run/dispatcher.log" 2>&1 &
pids+=($!)
names+=(dispatcher)

say "applying the examples into namespace acme"
kubectl create namespace acme >/dev/null
kubectl apply -n acme -f examples/ >/dev/null

receiver_port=$(free_port)
say "creating hook demo/local-receiver -> http://127.0.0.1:$receiver_port/"
kubectl create namespace demo >/dev/null
kubectl apply -n demo -f - >/dev/null <<YAML
apiVersion: outboundwebhooks.io/v1alpha1
kind: OutboundWebhook
metadata:
  name: local-receiver
spec:
  name: The example Node receiver on this machine
  url: http://127.0.0.1:$receiver_port/
  events: [kustomer.conversation.create, kustomer.customer.update]
YAML
kubectl wait -n demo --for=condition=Ready owh/local-receiver --timeout=60s >/dev/null
kubectl get secret -n demo local-receiver-webhook-secret -o jsonpath='{.data.token}' | base64 -d >"$run/token"

say "starting the example Node receiver (examples/receivers/node) on 127.0.0.1:$receiver_port"
PORT=$receiver_port WEBHOOK_TOKEN_FILE="$run/token" node examples/receivers/node/server.js \
  <"$fifo" >"$run/receiver.log" 2>&1 &
pids+=($!)
names+=(receiver)
until curl -s -o /dev/null "http://127.0.0.1:$receiver_port/"; do sleep 0.2; done
until curl -sf "http://127.0.0.1:$dispatcher_port/readyz" >/dev/null; do sleep 0.2; done

say "publishing three events to org demo"
for i in 1 2 3; do
  "$owh" publish --redis-url "$redis_url" --org demo --event kustomer.conversation.create \
    --data "{\"type\":\"conversation\",\"id\":\"conv-$i\",\"attributes\":{\"subject\":\"Hello $i\"}}" >/dev/null
done
deadline=$((SECONDS + 30))
until [ "$(grep -c '^verified' "$run/receiver.log" 2>/dev/null)" -ge 3 ]; do
  [ $SECONDS -lt $deadline ] || { say "the receiver did not get all three events; see $run/dispatcher.log"; break; }
  sleep 0.2
done
say "the receiver verified:"
grep '^verified' "$run/receiver.log" >&2 || true
echo
kubectl get owh -A
cat <<EOF_HELP

Everything runs on loopback. In another terminal:

  export KUBECONFIG=$KUBECONFIG PATH=$bin_dir:\$PATH
  kubectl get owh -A                                   # every hook, READY and STATUS
  kubectl describe owh -n demo local-receiver          # conditions and Events
  $owh publish --redis-url $redis_url \\
      --org demo --event kustomer.customer.update --data '{"type":"customer","id":"c1"}'
  tail -f $run/receiver.log                            # the receiver's verified deliveries
  $owh dead-letter list --redis-url $redis_url

The acme hooks point at hosts that do not exist: publish to org acme and watch
them fail, retry and turn off (kubectl get owh -n acme; the Ready condition's
message says why and how to turn a hook back on).

Ctrl-C here stops everything.
EOF_HELP

while kill -0 "${pids[0]}" 2>/dev/null; do sleep 1; done
say "the control plane stopped"
exit 1
