#!/usr/bin/env bash
# test.sh - the whole test suite on a fresh Debian 12 machine, as root:
# installs dependencies, builds the real test images (../shared/scripts/make-test-images.sh,
# once; REBUILD_IMAGES=1 forces it), then runs `cargo test` for the workspace.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bash scripts/install-deps.sh
# Rootless tests run as this unprivileged user, with /dev/fuse usable by everyone as
# distributions ship it (this machine's is 0600), and subordinate ids for `rfs run`.
id rfstest >/dev/null 2>&1 || useradd -m rfstest
grep -q '^rfstest:' /etc/subuid 2>/dev/null || echo 'rfstest:100000:65536' >> /etc/subuid
grep -q '^rfstest:' /etc/subgid 2>/dev/null || echo 'rfstest:100000:65536' >> /etc/subgid
chmod 0666 /dev/fuse
# crun refuses a hybrid cgroup layout whose v2 hierarchy still has controllers (hugetlb on
# this machine); give that controller a v1 hierarchy so podman tests can run containers.
if [ -f /sys/fs/cgroup/unified/cgroup.controllers ] && [ -n "$(cat /sys/fs/cgroup/unified/cgroup.controllers)" ]; then
  for c in $(cat /sys/fs/cgroup/unified/cgroup.controllers); do
    mkdir -p "/sys/fs/cgroup/$c" && mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c" || true
  done
fi
export RFS_IMAGES=${RFS_IMAGES:-/tmp/rfs-images}
shared=${RFS_SHARED:-$here/../shared}
if [ "${REBUILD_IMAGES:-0}" = 1 ] || [ ! -f "$RFS_IMAGES/SIZES.txt" ]; then
  echo "test.sh: building test images in $RFS_IMAGES (about a minute)"
  OUT=$RFS_IMAGES INSTALL=0 bash "$shared/scripts/make-test-images.sh" > /tmp/rfs-make-test-images.log 2>&1 ||
    { tail -30 /tmp/rfs-make-test-images.log; exit 1; }
fi
cargo build --workspace --all-targets
cargo test --workspace -- --test-threads=2
