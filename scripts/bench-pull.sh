#!/usr/bin/env bash
# bench-pull.sh - pulling from a registry: `rfs pull` of the Debian test image from a loopback
# registry (Debian's docker-registry, distribution 2.8) against `skopeo copy` to an OCI
# directory and `podman pull` (private storage, overlay driver), interleaved (each repetition
# runs every tool once, the order rotated by one each time) from the same registry in the same
# run; and the time from `rfs run REF` with REF not yet in the store to its first output line.
# Prints the median of each and its ratio to skopeo. Everything lives in a temporary directory
# that is removed at the end; the registry is stopped by its pid.
#
# Usage: sudo scripts/bench-pull.sh [REPS]     (default 5; RFS=path/to/rfs, default the
#        release build; RFS_IMAGES as for the tests)
set -euo pipefail
REPS=${1:-5}
HERE=$(cd "$(dirname "$0")/.." && pwd)
RFS=${RFS:-$HERE/target/release/rfs}
IMAGES=${RFS_IMAGES:-/tmp/rfs-images}
[ -x "$RFS" ] || { echo "bench-pull: no $RFS (cargo build --release -p rfs-mount-helper)" >&2; exit 1; }
[ -d "$IMAGES/debian-oci" ] || { echo "bench-pull: no $IMAGES/debian-oci (make-test-images.sh)" >&2; exit 1; }

W=$(mktemp -d /tmp/rfs-bench-pull.XXXXXX)
REG_PID=""
cleanup() {
  if [ -n "$REG_PID" ]; then kill "$REG_PID" 2>/dev/null || true; wait "$REG_PID" 2>/dev/null || true; fi
  rm -rf "$W"
}
trap cleanup EXIT
export HOME=$W/home XDG_RUNTIME_DIR=$W/xdg
unset REGISTRY_AUTH_FILE DOCKER_CONFIG
mkdir -p "$HOME" "$XDG_RUNTIME_DIR"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
HOST=127.0.0.1:$PORT
cat > "$W/config.yml" <<END
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $W/registry}}
http: {addr: "$HOST"}
END
docker-registry serve "$W/config.yml" > "$W/registry.log" 2>&1 &
REG_PID=$!
for _ in $(seq 100); do curl -fsS "http://$HOST/v2/" > /dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "http://$HOST/v2/" > /dev/null || { cat "$W/registry.log" >&2; exit 1; }
REF=$HOST/rfs/debian:bookworm
skopeo copy -q --dest-tls-verify=false "oci:$IMAGES/debian-oci:bookworm" "docker://$REF"

now() { date +%s.%N; }
podman_cmd() {
  podman --root "$W/podman-root" --runroot "$W/podman-run" --storage-driver overlay \
    --cgroup-manager cgroupfs --events-backend none "$@"
}
# Each runs one pull into fresh storage; the time is taken around the command only.
run_one() {
  case $1 in
    rfs) "$RFS" --root "$W/rfs-root" pull -q "$REF" > /dev/null 2> "$W/pull.err" ;;
    skopeo) skopeo copy -q --src-tls-verify=false "docker://$REF" "oci:$W/oci:bookworm" ;;
    podman) podman_cmd pull -q --tls-verify=false "$REF" > /dev/null ;;
  esac
}
reset_one() {
  case $1 in
    rfs) rm -rf "$W/rfs-root" ;;
    skopeo) rm -rf "$W/oci" ;;
    podman) podman_cmd system reset -f > /dev/null 2>&1 || true; rm -rf "$W/podman-root" "$W/podman-run" ;;
  esac
}

TOOLS=(rfs skopeo podman)
: > "$W/times"
for rep in $(seq 1 "$REPS"); do
  for i in 0 1 2; do
    t=${TOOLS[$(( (i + rep) % 3 ))]}
    reset_one "$t"
    sync
    start=$(now); run_one "$t"; end=$(now)
    echo "$t $(awk "BEGIN { print $end - $start }")" >> "$W/times"
    reset_one "$t"
  done
  # rfs run REF, not yet pulled: until the first line of output.
  rm -rf "$W/run-root"
  start=$(now)
  first=$("$RFS" --root "$W/run-root" run --rm "$REF" echo first-line 2> "$W/run.err" | head -n 1)
  end=$(now)
  [ "$first" = first-line ] || { cat "$W/run.err" >&2; exit 1; }
  echo "run $(awk "BEGIN { print $end - $start }")" >> "$W/times"
done

python3 - "$W/times" "$REPS" <<'END'
import statistics, sys
times = {}
for line in open(sys.argv[1]):
    tool, t = line.split()
    times.setdefault(tool, []).append(float(t))
med = {k: statistics.median(v) for k, v in times.items()}
print(f"Debian image (51 MB compressed, 1 layer), loopback distribution 2.8, {sys.argv[2]} repetitions, medians:")
for tool, label in [("rfs", "rfs pull"), ("skopeo", "skopeo copy to an OCI dir"), ("podman", "podman pull (overlay)"),
                    ("run", "rfs run REF (not pulled) to first output")]:
    ratio = "" if tool == "run" else f" ({med[tool] / med['skopeo']:.2f}x skopeo)"
    print(f"  {label:42} {med[tool]:7.3f} s{ratio}   all: {' '.join(f'{t:.3f}' for t in times[tool])}")
END
