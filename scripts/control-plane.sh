#!/usr/bin/env bash
# Starts a real control plane on free loopback ports: etcd, kube-apiserver
# (RBAC on, like envtest), kube-controller-manager running only the
# ClusterRole aggregation controller (so roles labelled aggregate-to-admin/
# edit/view reach the built-in admin/edit/view, as on a real cluster; no
# garbage collector, no other controller) and redis-server, then applies the
# OutboundWebhook CRD and waits until the API serves it.
#
#   scripts/control-plane.sh STATE_DIR [--redis-aof]
#
# When ready it prints one line to stdout:
#   READY kubeconfig=STATE_DIR/kubeconfig redis=redis://127.0.0.1:PORT apiserver=https://127.0.0.1:PORT
# and then runs until its standard input closes or it gets SIGINT/SIGTERM;
# either way it stops every process it started and removes STATE_DIR. The
# test support holds its stdin open, so the processes die with the tests
# even when the test binary is killed.
set -euo pipefail

state=${1:?usage: control-plane.sh STATE_DIR [--redis-aof]}
redis_aof=no
[ "${2:-}" = "--redis-aof" ] && redis_aof=yes

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools_dir=${OUTBOUND_WEBHOOKS_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/outbound-webhooks/tools}
bin="$tools_dir/bin"

say() { printf '[control-plane] %s\n' "$*" >&2; }
for tool in etcd kube-apiserver kube-controller-manager kubectl; do
  if [ ! -x "$bin/$tool" ]; then
    say "missing $bin/$tool: run scripts/install-tools.sh first"
    exit 1
  fi
done
for tool in redis-server openssl; do
  command -v "$tool" >/dev/null 2>&1 || { say "missing $tool: run scripts/install-tools.sh (apt-get install -y $tool)"; exit 1; }
done

mkdir -p "$state"
pids=()
cleanup() {
  # Ignored, not reset: a signal arriving while this runs (stdin closed and
  # a TERM at once) would otherwise end it halfway, leaving processes behind.
  trap '' INT TERM
  trap - EXIT
  # Reverse start order (kube-controller-manager, then kube-apiserver, which
  # lingers in graceful shutdown once etcd is gone).
  local pid i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive -eq 1 ] || break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$state"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

# Below Linux's ephemeral range (32768-60999): a port bind(0) hands out may
# meanwhile become the source port of an outgoing connection.
free_port() {
  python3 -c '
import random, socket
for _ in range(2000):
    port = random.randint(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        print(port)
        break
    except OSError:
        pass
    finally:
        s.close()
'
}

# Throwaway PKI: a CA, the API server's serving certificate, an admin client
# certificate (system:masters) and the service-account key pair.
pki="$state/pki"
mkdir -p "$pki"
(
  cd "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj "/CN=outbound-webhooks-test-ca" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' > apiserver.ext
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 2 -extfile apiserver.ext 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=admin" 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' > admin.ext
  openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt -days 2 -extfile admin.ext 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
)

etcd_port=$(free_port)
say "starting etcd on 127.0.0.1:$etcd_port"
"$bin/etcd" --data-dir "$state/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://localhost:0" --unsafe-no-fsync --log-level error \
  >"$state/etcd.log" 2>&1 </dev/null &
pids+=($!)

api_port=$(free_port)
say "starting kube-apiserver on 127.0.0.1:$api_port"
"$bin/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$etcd_port" \
  --cert-dir "$pki" --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" \
  --secure-port "$api_port" --bind-address 127.0.0.1 --advertise-address 127.0.0.1 \
  --service-cluster-ip-range 10.0.0.0/24 --allow-privileged=true \
  --disable-admission-plugins ServiceAccount --authorization-mode RBAC \
  --service-account-issuer https://kubernetes.default.svc \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  >"$state/kube-apiserver.log" 2>&1 </dev/null &
pids+=($!)

redis_port=$(free_port)
say "starting redis-server on 127.0.0.1:$redis_port (appendonly $redis_aof)"
redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$state" --save "" --appendonly "$redis_aof" \
  --maxmemory-policy noeviction --daemonize no --logfile "$state/redis.log" </dev/null &
pids+=($!)

kubeconfig="$state/kubeconfig"
b64() { base64 -w0 < "$1"; }
cat > "$kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: outbound-webhooks-test
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $(b64 "$pki/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(b64 "$pki/admin.crt")
    client-key-data: $(b64 "$pki/admin.key")
contexts:
- name: outbound-webhooks-test
  context: {cluster: outbound-webhooks-test, user: admin}
current-context: outbound-webhooks-test
KUBECONFIG

kubectl() { "$bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }

alive() {
  for pid in "${pids[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      say "a process exited during start-up; last lines of its logs:"
      tail -n 20 "$state"/*.log >&2 || true
      exit 1
    fi
  done
}

say "waiting for the API server to be ready"
deadline=$((SECONDS + 120))
until kubectl get --raw /readyz >/dev/null 2>&1; do
  alive
  [ $SECONDS -lt $deadline ] || { say "kube-apiserver not ready after 120s"; tail -n 30 "$state/kube-apiserver.log" >&2; exit 1; }
  sleep 0.5
done
until kubectl get namespace default >/dev/null 2>&1; do
  alive
  [ $SECONDS -lt $deadline ] || { say "namespace default never appeared"; exit 1; }
  sleep 0.5
done
# Only the ClusterRole aggregation controller: the garbage collector and the
# rest stay off (tests assert owner references and rely on Secrets surviving
# their owner's deletion). No serving port, no leader election.
say "starting kube-controller-manager (clusterrole-aggregation-controller only)"
"$bin/kube-controller-manager" \
  --kubeconfig "$kubeconfig" \
  --controllers clusterrole-aggregation-controller \
  --leader-elect=false --bind-address 127.0.0.1 --secure-port 0 \
  >"$state/kube-controller-manager.log" 2>&1 </dev/null &
pids+=($!)
# Ready once it has aggregated the built-in roles: the bootstrap admin role
# has an aggregationRule and no rules of its own.
until [ -n "$(kubectl get clusterrole admin -o 'jsonpath={.rules}' 2>/dev/null)" ]; do
  alive
  [ $SECONDS -lt $deadline ] || { say "kube-controller-manager never aggregated the admin role"; tail -n 30 "$state/kube-controller-manager.log" >&2; exit 1; }
  sleep 0.5
done
until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do
  alive
  [ $SECONDS -lt $deadline ] || { say "redis-server not answering"; exit 1; }
  sleep 0.2
done

say "applying the OutboundWebhook CRD"
kubectl apply --server-side -f "$repo/crds/outboundwebhooks.io_outboundwebhooks.yaml" >/dev/null
kubectl wait --for condition=Established --timeout 60s crd/outboundwebhooks.outboundwebhooks.io >/dev/null
until kubectl get outboundwebhooks -A >/dev/null 2>&1; do
  [ $SECONDS -lt $deadline ] || { say "the API never served outboundwebhooks"; exit 1; }
  sleep 0.2
done

echo "READY kubeconfig=$kubeconfig redis=redis://127.0.0.1:$redis_port apiserver=https://127.0.0.1:$api_port"
say "ready (stop with Ctrl-C)"

# Run until stdin closes (the owner went away) or a signal arrives; watch
# the children meanwhile so a crash is reported.
while true; do
  status=0
  read -r -t 1 _ 2>/dev/null || status=$?
  if [ $status -ne 0 ] && [ $status -le 128 ]; then break; fi   # EOF, not a timeout
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { say "process $pid exited unexpectedly"; tail -n 20 "$state"/*.log >&2 || true; exit 1; }
  done
done
