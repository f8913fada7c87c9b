#!/usr/bin/env bash
# Build-time benchmark of `rfs build` (issue 16): one Dockerfile — the Debian test image as
# base, RUN steps that add a user, delete files and chown a tree, a COPY of a source tree of
# ~8000 files (/usr/include) — built by rfs (as root and rootless as rfstest), `buildah bud` (as root over kernel overlay, and
# rootless as rfstest over fuse-overlayfs) and `docker build` (the Debian 20.10 engine, legacy
# builder, overlay2), cold (no cache) and warm (a rebuild with nothing changed). The systems
# run interleaved, REPS times; the table shows medians and the ratio to rfs.
#
#   sudo bash scripts/bench-build.sh [REPS]        # needs root, $RFS_IMAGES (make-test-images.sh)
#
# rfs is target/release/rfs (or $RFS). Everything lives in a scratch dir removed at the end;
# the dockerd it starts is stopped by pid.
set -euo pipefail
REPS=${1:-3}
IMAGES=${RFS_IMAGES:-/tmp/rfs-images}
HERE=$(cd "$(dirname "$0")/.." && pwd)
RFS=${RFS:-$HERE/target/release/rfs}
BASE_TAR=$IMAGES/docker/debian-docker-save.tar
[ -x "$RFS" ] || { echo "build rfs first: cargo build --release -p rfs-mount-helper" >&2; exit 1; }
[ -f "$BASE_TAR" ] || { echo "no $BASE_TAR: run make-test-images.sh" >&2; exit 1; }

W=$(mktemp -d /tmp/rfs-bench-build.XXXXXX)
chmod 755 "$W"
DOCKERD_PID=
cleanup() {
  if [ -n "$DOCKERD_PID" ]; then kill "$DOCKERD_PID" 2>/dev/null || true; wait "$DOCKERD_PID" 2>/dev/null || true; fi
  buildah --root "$W/bh" --runroot "$W/bhrun" --storage-driver overlay rmi -a -f >/dev/null 2>&1 || true
  su rfstest -s /bin/sh -c "cd / && XDG_RUNTIME_DIR=$W/xdg HOME=$W/home buildah --root $W/rl/bhr --runroot $W/rl/bhrrun \
     --storage-driver overlay --storage-opt overlay.mount_program=/usr/bin/fuse-overlayfs rmi -a -f" >/dev/null 2>&1 || true
  rm -rf "$W" 2>/dev/null || true
}
trap cleanup EXIT

# The context: ~8000 headers and the Dockerfile.
mkdir -p "$W/ctx"
cp -a /usr/include "$W/ctx/src"
cat > "$W/ctx/Dockerfile" <<'END'
FROM rfs/debian:bookworm
RUN useradd -m -u 1500 app && mkdir -p /opt/app && rm -rf /usr/share/doc /usr/share/man
COPY src/ /opt/app/src/
RUN find /opt/app/src -name '*.h' | wc -l > /opt/app/count && chown -R app:app /opt/app
WORKDIR /opt/app
USER app
CMD ["cat", "/opt/app/count"]
END
FILES=$(find "$W/ctx/src" -type f | wc -l)
chown -R rfstest "$W/ctx"

# rfs
export RFS_ROOT=$W/rfs
"$RFS" load -i "$BASE_TAR" >/dev/null

# docker (private daemon)
D=$W/docker; mkdir -p "$D"
dockerd --data-root "$D/root" --exec-root "$D/exec" --pidfile "$D/pid" -H "unix://$D/sock" \
  --iptables=false --ip6tables=false --bridge=none --storage-driver=overlay2 >"$D/log" 2>&1 &
DOCKERD_PID=$!
export DOCKER_HOST=unix://$D/sock DOCKER_BUILDKIT=0
for _ in $(seq 1 120); do docker version >/dev/null 2>&1 && break; sleep 0.5; done
docker load -q -i "$BASE_TAR" >/dev/null

# buildah as root, kernel overlay
BH=(buildah --root "$W/bh" --runroot "$W/bhrun" --storage-driver overlay)
"${BH[@]}" pull -q "docker-archive:$BASE_TAR" >/dev/null
# buildah rootless (rfstest), fuse-overlayfs; its storage and the base archive must be its own
mkdir -p "$W/xdg" "$W/home" "$W/rl"; chown rfstest "$W/xdg" "$W/home" "$W/rl"; chmod 700 "$W/xdg"
install -m 644 "$BASE_TAR" "$W/rl/base.tar"
BHR="cd $W/ctx && XDG_RUNTIME_DIR=$W/xdg HOME=$W/home buildah --root $W/rl/bhr --runroot $W/rl/bhrrun \
  --storage-driver overlay --storage-opt overlay.mount_program=/usr/bin/fuse-overlayfs"
ROOTLESS=1
su rfstest -s /bin/sh -c "$BHR pull -q docker-archive:$W/rl/base.tar" >/dev/null 2>&1 || ROOTLESS=0
# rfs rootless (rfstest)
install -m 755 "$RFS" "$W/rl/rfs"
RFSR="cd / && RFS_ROOT=$W/rl/rfsroot $W/rl/rfs"
su rfstest -s /bin/sh -c "$RFSR load -i $W/rl/base.tar" >/dev/null

declare -A T
now() { date +%s.%N; }
run() { # name cold|warm command...
  local name=$1 mode=$2; shift 2
  local t0 t1; t0=$(now)
  if ! "$@" >/dev/null 2>"$W/err"; then echo "$name $mode failed: $(tail -3 "$W/err")" >&2; T[$name,$mode]+="nan "; return; fi
  t1=$(now)
  T[$name,$mode]+="$(echo "$t1 - $t0" | bc) "
}
systems=(rfs rfs-rootless docker buildah-root buildah-rootless)
for rep in $(seq 1 "$REPS"); do
  # Rotate the order each repetition.
  order=("${systems[@]:$((rep % 5))}" "${systems[@]:0:$((rep % 5))}")
  for s in "${order[@]}"; do
    for mode in cold warm; do
      nc=(); [ $mode = cold ] && nc=(--no-cache)
      case $s in
        rfs) run rfs $mode "$RFS" build "${nc[@]}" -q -t bench "$W/ctx" ;;
        rfs-rootless) run rfs-rootless $mode su rfstest -s /bin/sh -c "$RFSR build ${nc[*]} -q -t bench $W/ctx" ;;
        docker) run docker $mode docker build "${nc[@]}" -q -t bench "$W/ctx" ;;
        buildah-root) run buildah-root $mode "${BH[@]}" bud --layers "${nc[@]}" -q -t bench "$W/ctx" ;;
        buildah-rootless)
          [ $ROOTLESS = 1 ] || continue
          run buildah-rootless $mode su rfstest -s /bin/sh -c "$BHR bud --isolation chroot --layers ${nc[*]} -q -t bench ." ;;
      esac
    done
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
echo "rfs build benchmark: $FILES files copied, $REPS repetitions, medians in seconds (ratio to rfs)"
echo "| system | cold | warm |"
echo "|---|---|---|"
rc=$(echo "${T[rfs,cold]}" | median); rw=$(echo "${T[rfs,warm]}" | median)
for s in "${systems[@]}"; do
  [ -n "${T[$s,cold]:-}" ] || { echo "| $s | n/a | n/a |"; continue; }
  c=$(echo "${T[$s,cold]}" | median); w=$(echo "${T[$s,warm]}" | median)
  printf '| %s | %.2f (%.2f×) | %.2f (%.2f×) |\n' "$s" "$c" "$(echo "$c / $rc" | bc -l)" "$w" "$(echo "$w / $rw" | bc -l)"
done
