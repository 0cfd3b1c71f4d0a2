#!/usr/bin/env bash
# make aarch64-check (run by .ci/run): the edge install on aarch64 under qemu-user, compared
# with the same commands on x86-64, on the bundled model and the real images of images.csv.
#
#  1. build-root.sh: the aarch64 userland and its two venvs (cached; see that script).
#  2. The x86-64 reference, computed now (so the check follows the bundled model when it is
#     rebuilt): edge-classify with LiteRT (.venv-edge) and with tflite-runtime (.venv-tflite).
#  3. The same under emulation for each CPU of $AARCH64_CPUS with LiteRT: labels identical
#     and probabilities within $AARCH64_MAX_STEPS (default 1) output steps of x86-64, or
#     the check fails. tflite-runtime
#     on the first CPU: labels identical (2.14's kernels round differently on x86-64 and ARM,
#     a few steps; see docs/platforms.md).
#  4. edge-bench under emulation (4 images, 1 thread: it proves the command, not a speed):
#     the report must say "emulated" (its timings are not a Pi's).
#
# Images: 2 per class from the bundled model's test split (never trained on): the first
# listed, and the least confident one under the model of 2025-11 (non-saturated outputs show
# rounding differences). A fixed list, so it stays meaningful when the model changes.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$REPO/scripts/aarch64
DATA=$(cd "${DATA:-$REPO/../shared/data/all4}" 2>/dev/null && pwd) ||
    { echo "aarch64: error: dataset not found (DATA=${DATA:-../shared/data/all4})" >&2; exit 2; }
EDGE=${EDGE_VENV:-$REPO/.venv-edge}
TFLITE=${TFLITE_VENV:-$REPO/.venv-tflite}
CPUS=${AARCH64_CPUS:-cortex-a72 cortex-a76}
if [ "$(id -u)" = 0 ]; then CACHE=${AARCH64_CACHE:-/var/cache/hemalite-aarch64}
else CACHE=${AARCH64_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hemalite-aarch64}; fi
export AARCH64_CACHE=$CACHE
MODEL=$REPO/hemalite/models/hemalite_int8.tflite
OUT=$CACHE/check
IMAGES=(--manifest "$HERE/images.csv" --data-root "$DATA" --quiet)

case " $CPUS " in *" max "*) echo "aarch64: error: never QEMU_CPU=max (wrong int8 results)" >&2; exit 2;; esac
start=$SECONDS
"$HERE/build-root.sh"
built=$SECONDS
rm -rf "$OUT" && mkdir -p "$OUT"
cd "$OUT"  # away from the checkout, like a user's folder
labels=$("$EDGE/bin/python" -c "from hemalite.metadata import read_model_info as r; print(len(r('$MODEL').labels))")
fail() { echo "aarch64: error: $*" >&2; exit 1; }
classify() {  # classify VENV RUNTIME NAME: every class's probability into $OUT/NAME.jsonl
    local venv=$1 runtime=$2 name=$3
    "$venv/bin/edge-classify" "${IMAGES[@]}" --top-k "$labels" --jsonl "$OUT/$name.jsonl" \
        --runtime "$runtime" --verbose >"$OUT/$name.log" 2>&1 ||
        { cat "$OUT/$name.log" >&2; fail "$name: edge-classify failed"; }
}
classify "$EDGE" ai_edge_litert x86_64-litert
classify "$TFLITE" tflite_runtime x86_64-tflite_runtime
runs=()
for cpu in $CPUS; do
    t=$SECONDS
    QEMU_CPU=$cpu classify "$CACHE/venv-litert" ai_edge_litert "aarch64-$cpu-litert"
    echo "aarch64: edge-classify on emulated $cpu: $((SECONDS - t)) s" >&2
    runs+=("$OUT/aarch64-$cpu-litert.jsonl")
done
first=${CPUS%% *}
QEMU_CPU=$first classify "$CACHE/venv-tflite" tflite_runtime "aarch64-$first-tflite_runtime"

status=0
echo "## aarch64 (emulated) vs x86-64, $(grep -c . "$HERE/images.csv" | awk '{print $1 - 1}') images, bundled int8 model"
"$EDGE/bin/python" "$HERE/compare.py" --model "$MODEL" --max-steps "${AARCH64_MAX_STEPS:-1}" \
    "$OUT/x86_64-litert.jsonl" "${runs[@]}" || status=1
echo
"$EDGE/bin/python" "$HERE/compare.py" --model "$MODEL" \
    "$OUT/x86_64-tflite_runtime.jsonl" "$OUT/aarch64-$first-tflite_runtime.jsonl" || status=1
echo

bench_cpu=${CPUS##* }
t=$SECONDS
QEMU_CPU=$bench_cpu "$CACHE/venv-litert/bin/edge-bench" "$MODEL" "${IMAGES[@]:0:4}" \
    --out "$OUT/bench-$bench_cpu" --limit 4 --runs 3 --warmup 1 --threads 1 --no-progress \
    >"$OUT/bench.log" 2>&1 || { cat "$OUT/bench.log" >&2; fail "edge-bench failed"; }
echo "aarch64: edge-bench on emulated $bench_cpu: $((SECONDS - t)) s" >&2
grep -A3 "^| variant" "$OUT/bench.log"
grep "^\*\*emulated\*\*" "$OUT/bench.log" ||
    { echo "aarch64: error: the emulated edge-bench report does not say emulated" >&2; status=1; }
echo "aarch64: $((SECONDS - start)) s in all ($((built - start)) s preparing); results in $OUT" >&2
exit $status
