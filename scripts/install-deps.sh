#!/usr/bin/env bash
# install-deps.sh - install what building, demoing and testing rfs needs on Debian 12.
# Idempotent; run as root (or it re-runs itself with sudo).
set -euo pipefail
if [ "$(id -u)" != 0 ]; then exec sudo -E bash "$0" "$@"; fi
export DEBIAN_FRONTEND=noninteractive
pkgs="fuse3 attr acl busybox-static tar coreutils findutils zstd gzip jq util-linux
      umoci skopeo buildah podman debootstrap fuse-overlayfs uidmap crun bubblewrap
      docker-registry curl openssl python3 python3-cryptography apache2-utils passt bc"
docker_pkg="docker"; docker_pkg+=".io"   # Debian's Docker engine (make-test-images.sh uses it)
missing=""
for p in $pkgs $docker_pkg; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "install-deps: apt-get install$missing"
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
command -v cargo >/dev/null || { echo "install-deps: cargo (Rust toolchain) is required" >&2; exit 1; }
