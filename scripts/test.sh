#!/usr/bin/env bash
# test.sh - the whole test suite on a fresh Debian 12 machine, as root:
# installs dependencies, builds the real test images (../shared/scripts/make-test-images.sh)
# when $RFS_IMAGES has none, or they were made by another version of that script
# (REBUILD_IMAGES=1 forces it), then runs `cargo test --no-fail-fast` for the workspace.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bash scripts/install-deps.sh
# Rootless tests run as this unprivileged user, with /dev/fuse (and /dev/net/tun) usable by
# everyone as distributions ship them (this machine's are 0600), and subordinate ids for `rfs run`.
id rfstest >/dev/null 2>&1 || useradd -m rfstest
grep -q '^rfstest:' /etc/subuid 2>/dev/null || echo 'rfstest:100000:65536' >> /etc/subuid
grep -q '^rfstest:' /etc/subgid 2>/dev/null || echo 'rfstest:100000:65536' >> /etc/subgid
chmod 0666 /dev/fuse
# The same for /dev/net/tun, which pasta opens for a rootless container's private network.
[ -e /dev/net/tun ] && chmod 0666 /dev/net/tun
# crun refuses a hybrid cgroup layout whose v2 hierarchy still has controllers (hugetlb on
# this machine); give that controller a v1 hierarchy so podman tests can run containers.
if [ -f /sys/fs/cgroup/unified/cgroup.controllers ] && [ -n "$(cat /sys/fs/cgroup/unified/cgroup.controllers)" ]; then
  for c in $(cat /sys/fs/cgroup/unified/cgroup.controllers); do
    mkdir -p "/sys/fs/cgroup/$c" && mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c" || true
  done
fi
export RFS_IMAGES=${RFS_IMAGES:-/tmp/rfs-images}
shared=${RFS_SHARED:-$here/../shared}
# The images are stamped with the sha256 of the script that made them: a changed script means
# new images, so this machine and a fresh one test the same thing.
maker=$shared/scripts/make-test-images.sh
stamp=$(sha256sum "$maker" | cut -d' ' -f1)
if [ "${REBUILD_IMAGES:-0}" = 1 ] || [ ! -f "$RFS_IMAGES/SIZES.txt" ] ||
   [ "$(cat "$RFS_IMAGES/.made-by" 2>/dev/null)" != "$stamp" ]; then
  echo "test.sh: building test images in $RFS_IMAGES (about a minute)"
  log=$(mktemp /tmp/rfs-make-test-images.XXXXXX.log)
  OUT=$RFS_IMAGES INSTALL=0 bash "$maker" > "$log" 2>&1 || { tail -30 "$log"; exit 1; }
  echo "$stamp" > "$RFS_IMAGES/.made-by"
fi
cargo build --workspace --all-targets
# --no-fail-fast: a failing test binary must not hide the results of the ones after it.
cargo test --workspace --no-fail-fast -- --test-threads=2
