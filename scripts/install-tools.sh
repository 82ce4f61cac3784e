#!/usr/bin/env bash
# Builds and installs the real components the tests and the local run use:
# kube-apiserver, kube-controller-manager and kubectl (from the Go module
# proxy), etcd, helm, promtool (the chart's alert tests), an OpenTelemetry
# Collector (otelcol, the trace tests' span sink), mdBook and
# mdbook-linkcheck (the book in docs/, with `cargo install --locked`), and
# Debian's redis-server, redis-tools and redis-sentinel. Idempotent: each tool is
# built once per version into a cache outside the checkout, so a second run
# takes seconds.
#
#   OUTBOUND_WEBHOOKS_TOOLS_DIR  where built tools live
#                                (default: ${XDG_CACHE_HOME:-$HOME/.cache}/outbound-webhooks/tools)
#
# The tools are linked into $OUTBOUND_WEBHOOKS_TOOLS_DIR/bin, which the test
# support and scripts/dev-up.sh read.
set -euo pipefail

KUBERNETES_VERSION=v1.36.3
ETCD_VERSION=v3.6.16
HELM_VERSION=v3.22.0
# Prometheus v3.16.0 is published as the Go module version v0.316.0.
PROMETHEUS_VERSION=v3.16.0
# mdbook-linkcheck 0.7.7 reads the 0.4 renderer format (mdBook 0.5 changed it),
# so mdBook stays on the last 0.4 release.
MDBOOK_VERSION=0.4.52
MDBOOK_LINKCHECK_VERSION=0.7.7
# The OpenTelemetry Collector the trace tests export spans to (tools/otelcol:
# the OTLP receiver and contrib's file exporter). Every collector module is at
# this one release (core modules at the matching v1.67.0): contrib's
# fileexporter is known to build at v0.161.0, not at the newer releases.
OTELCOL_VERSION=v0.161.0

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools_dir=${OUTBOUND_WEBHOOKS_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/outbound-webhooks/tools}
bin_dir="$tools_dir/bin"
mkdir -p "$bin_dir"

say() { printf '[install-tools] %s\n' "$*" >&2; }

need() {
  command -v "$1" >/dev/null 2>&1 || { say "missing $1: $2"; exit 1; }
}
need go "install Go 1.26 (https://go.dev/doc/install)"
need node "install Node.js 20 (apt-get install -y nodejs npm)"
need python3 "install Python 3.11 (apt-get install -y python3)"
need cargo "install Rust (https://rustup.rs)"

export CGO_ENABLED=0
export GOFLAGS=-buildvcs=false

# build_go NAME VERSION MODULE_DIR PACKAGE LDFLAGS: builds one binary into
# $tools_dir/NAME-VERSION/ unless it is there already.
build_go() {
  local name=$1 version=$2 module_dir=$3 package=$4 ldflags=$5
  local dest="$tools_dir/$name-$version"
  if [ -x "$dest/$name" ]; then
    say "$name $version: cached at $dest"
  else
    say "$name $version: building (the first build takes minutes; later runs reuse it)"
    local start=$SECONDS
    mkdir -p "$dest.tmp"
    (cd "$module_dir" && go build -trimpath -ldflags "$ldflags" -o "$dest.tmp/$name" "$package")
    rm -rf "$dest" && mv "$dest.tmp" "$dest"
    say "$name $version: built in $((SECONDS - start))s"
  fi
  ln -sfn "$dest/$name" "$bin_dir/$name"
}

# build_cargo NAME VERSION [cargo install flags]: builds one crate's binary
# into $tools_dir/NAME-VERSION/bin/ with its own lock file unless it is
# there already.
build_cargo() {
  local name=$1 version=$2
  shift 2
  local dest="$tools_dir/$name-$version"
  if [ -x "$dest/bin/$name" ]; then
    say "$name $version: cached at $dest"
  else
    say "$name $version: building (the first build takes minutes; later runs reuse it)"
    local start=$SECONDS
    rm -rf "$dest.tmp"
    cargo install --locked --quiet --version "$version" --root "$dest.tmp" "$@" "$name"
    rm -rf "$dest" && mv "$dest.tmp" "$dest"
    say "$name $version: built in $((SECONDS - start))s"
  fi
  ln -sfn "$dest/bin/$name" "$bin_dir/$name"
}

k8s_minor=${KUBERNETES_VERSION#v1.}; k8s_minor=${k8s_minor%%.*}
k8s_stamp=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_stamp+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  k8s_stamp+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
build_go kube-apiserver "$KUBERNETES_VERSION" "$repo/tools/kubernetes" k8s.io/kubernetes/cmd/kube-apiserver "-s -w$k8s_stamp"
build_go kube-controller-manager "$KUBERNETES_VERSION" "$repo/tools/kubernetes" k8s.io/kubernetes/cmd/kube-controller-manager "-s -w$k8s_stamp"
build_go kubectl "$KUBERNETES_VERSION" "$repo/tools/kubernetes" k8s.io/kubernetes/cmd/kubectl "-s -w$k8s_stamp"
build_go etcd "$ETCD_VERSION" "$repo/tools/etcd" . "-s -w"
build_go helm "$HELM_VERSION" "$repo/tools/helm" helm.sh/helm/v3/cmd/helm \
  "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
build_go promtool "$PROMETHEUS_VERSION" "$repo/tools/prometheus" github.com/prometheus/prometheus/cmd/promtool \
  "-s -w -X github.com/prometheus/common/version.Version=${PROMETHEUS_VERSION#v}"
build_go otelcol "$OTELCOL_VERSION" "$repo/tools/otelcol" . "-s -w"
# The book (scripts/docs.sh). mdBook without its `serve` and `watch`
# features: they add a web server and a file watcher that a build never uses.
build_cargo mdbook "$MDBOOK_VERSION" --no-default-features --features search
build_cargo mdbook-linkcheck "$MDBOOK_LINKCHECK_VERSION"

# Debian packages: redis-server for the dispatcher's stream, redis-tools
# (redis-cli, which also creates the test Redis Clusters) and redis-sentinel
# for the Redis topology tests, openssl for the test PKI (TLS Redis too),
# lua5.1 (Argo CD's Lua dialect) for the health check's tests, wrk for the
# benchmark's baseline C (the machine's HTTP limit), faketime (libfaketime)
# to run a dispatcher with its clock ahead of the others'.
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v lua5.1 >/dev/null 2>&1 || missing+=(lua5.1)   # the Argo CD health check's tests
command -v wrk >/dev/null 2>&1 || missing+=(wrk)         # benches/run.sh's baseline C
command -v faketime >/dev/null 2>&1 || missing+=(faketime) # a dispatcher with its clock ahead
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
apt_updated=false
apt_update() { $apt_updated || $sudo_cmd apt-get update -qq; apt_updated=true; }
if ! command -v redis-sentinel >/dev/null 2>&1; then
  apt_update
  # redis-sentinel only adds a binary name and a service: the tests start
  # their sentinels as `redis-server CONF --sentinel` (the same binary), so a
  # package source without it is no reason to fail.
  if [[ "$(apt-cache policy redis-sentinel 2>/dev/null)" == *"Candidate: "[0-9]* ]]; then
    missing+=(redis-sentinel)
  else
    say "redis-sentinel: no Debian package here; the tests run sentinels as redis-server --sentinel"
  fi
fi
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  apt_update
  DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
  # The packages start system-wide servers; the tests start their own.
  if command -v systemctl >/dev/null 2>&1; then
    $sudo_cmd systemctl disable --now redis-server redis-sentinel >/dev/null 2>&1 || true
  fi
fi
say "redis-server: $(redis-server --version | awk '{print $3}'), redis-cli: $(redis-cli --version | awk '{print $2}')"

say "tools ready in $bin_dir"
echo "$bin_dir"
