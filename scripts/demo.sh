#!/usr/bin/env bash
# demo.sh - the main job on a fresh Debian 12 machine: install what rfs needs, build it,
# make a small image from Debian's busybox-static package, mount it with rfs (with a
# writable layer), list it, change a file, unmount, then run a container over it.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bash scripts/install-deps.sh
cargo build --release -p rfs-mount-helper
rfs=$here/target/release/rfs
demo=${RFS_DEMO_DIR:-/tmp/rfs-demo}
rm -rf "$demo"; mkdir -p "$demo/rootfs/bin" "$demo/rootfs/etc" "$demo/mnt"
cp /bin/busybox "$demo/rootfs/bin/busybox"
for a in sh ls cat echo id; do ln -s busybox "$demo/rootfs/bin/$a"; done
echo "hello from an rfs-mounted image" > "$demo/rootfs/etc/motd"
tar --numeric-owner -C "$demo/rootfs" -cf "$demo/sample-rootfs.tar" .
echo "== rfs mount $demo/sample-rootfs.tar $demo/mnt"
RFS_ROOT=$demo/root "$rfs" mount "$demo/sample-rootfs.tar" "$demo/mnt"
trap '"$rfs" umount "$demo/mnt" 2>/dev/null || true' EXIT
ls -l "$demo/mnt" "$demo/mnt/bin" | head -20
cat "$demo/mnt/etc/motd"
echo "changed in the writable layer" > "$demo/mnt/etc/motd"
cat "$demo/mnt/etc/motd"
"$rfs" umount "$demo/mnt"
trap - EXIT
echo "== the change lives in the upper dir:"
find "$demo/root/mounts" -path '*/upper/*' -type f
echo "== rfs run: a container over the same image (user, mount, pid namespaces; pivot_root)"
RFS_ROOT=$demo/root "$rfs" run --rm "$demo/sample-rootfs.tar" /bin/sh -c \
  'echo hello from a container; id; cat /etc/motd; ls /'
