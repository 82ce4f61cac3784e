#!/usr/bin/env bash
# Builds the image the chart deploys, without a container daemon: the
# release binary, then an OCI archive with buildah (vfs storage, chroot
# isolation) from scripts/image/Containerfile, plus a CycloneDX SBOM of the
# crate's dependencies.
#
#   scripts/build-image.sh [OUT_DIR]      (default: target/image)
#
# Writes OUT_DIR/outbound-webhooks.oci.tar, OUT_DIR/digest (the manifest's
# sha256 digest) and OUT_DIR/outbound-webhooks.cdx.json, and prints
# `IMAGE archive=... digest=... size=...` last. Images are cached by the
# binary's hash outside the checkout, so a second run with the same binary
# takes seconds (and gives the same digest: timestamps are pinned).
#
#   OUTBOUND_WEBHOOKS_IMAGE_CACHE  where built images are kept
#                                  (default: ${XDG_CACHE_HOME:-$HOME/.cache}/outbound-webhooks/images)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$repo/target/image}
cache=${OUTBOUND_WEBHOOKS_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/outbound-webhooks/images}
tools=${OUTBOUND_WEBHOOKS_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/outbound-webhooks/tools}
start=$SECONDS

say() { printf '[build-image] %s\n' "$*" >&2; }

# Debian's buildah and skopeo (daemonless), binutils (strip), ca-certificates
# (the bundle the image carries).
missing=()
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v strip >/dev/null 2>&1 || missing+=(binutils)
[ -s /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  say "installing Debian packages: ${missing[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The SBOM tool, built once into the tools cache.
CYCLONEDX_VERSION=0.5.9
cyclonedx="$tools/cargo-cyclonedx-$CYCLONEDX_VERSION/bin/cargo-cyclonedx"
if [ ! -x "$cyclonedx" ]; then
  say "cargo-cyclonedx $CYCLONEDX_VERSION: building (once; later runs reuse it)"
  cargo install --locked --quiet --version "$CYCLONEDX_VERSION" --root "$tools/cargo-cyclonedx-$CYCLONEDX_VERSION" cargo-cyclonedx
fi

say "cargo build --release"
cargo build --release --locked --quiet --bin outbound-webhooks --manifest-path "$repo/Cargo.toml"
target_dir=$(cargo metadata --format-version 1 --no-deps --manifest-path "$repo/Cargo.toml" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
binary="$target_dir/release/outbound-webhooks"
# The key covers the binary, the Containerfile and this script: any change
# to what goes into the image builds it again.
key=$(cat "$binary" "$repo/scripts/image/Containerfile" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-32)
cached="$cache/$key"

if [ -s "$cached/digest" ]; then
  say "cached image for this binary: $cached"
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  rootfs="$work/rootfs"
  mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/ssl/certs"
  # Debug line tables stay in target/ for profiling; the image needs none.
  strip --strip-debug -o "$rootfs/usr/local/bin/outbound-webhooks" "$binary"
  chmod 0755 "$rootfs/usr/local/bin/outbound-webhooks"
  # The binary links glibc dynamically (mimalloc and ring need no musl
  # toolchain that way): the image carries exactly what ldd lists, at the
  # paths the loader looks for them.
  ldd "$binary" | awk '/=> \// {print $3} /^\t\/[^ ]+ \(/ {print $1}' | while read -r lib; do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
  cp -L /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  chmod -R a+rX,go-w "$rootfs"
  cp "$repo/scripts/image/Containerfile" "$work/Containerfile"

  storage=(--storage-driver vfs --root "$cache/storage" --runroot "$cache/run")
  tag="localhost/outbound-webhooks:$key"
  say "buildah build (vfs storage, chroot isolation)"
  buildah "${storage[@]}" build --quiet --isolation chroot --timestamp 0 \
    -f "$work/Containerfile" -t "$tag" "$work" >/dev/null
  mkdir -p "$work/out"
  buildah "${storage[@]}" push --quiet "$tag" "oci-archive:$work/out/outbound-webhooks.oci.tar" >/dev/null
  buildah "${storage[@]}" rmi "$tag" >/dev/null 2>&1 || true
  skopeo inspect --format '{{.Digest}}' "oci-archive:$work/out/outbound-webhooks.oci.tar" > "$work/out/digest"

  say "CycloneDX SBOM of the crate's dependencies"
  "$cyclonedx" cyclonedx --manifest-path "$repo/Cargo.toml" --format json --quiet \
    --override-filename outbound-webhooks.cdx >/dev/null
  mv "$repo/outbound-webhooks.cdx.json" "$work/out/outbound-webhooks.cdx.json"

  rm -rf "$cached.tmp" && mkdir -p "$cache" && mv "$work/out" "$cached.tmp" && rm -rf "$cached" && mv "$cached.tmp" "$cached"
fi

mkdir -p "$out"
cp "$cached/outbound-webhooks.oci.tar" "$cached/digest" "$cached/outbound-webhooks.cdx.json" "$out/"
size=$(du -k "$out/outbound-webhooks.oci.tar" | cut -f1)
say "done in $((SECONDS - start))s"
echo "IMAGE archive=$out/outbound-webhooks.oci.tar digest=$(cat "$out/digest") size_kib=$size sbom=$out/outbound-webhooks.cdx.json"
