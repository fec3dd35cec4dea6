#!/usr/bin/env bash
# A lent GPU's slice, prepared here so that nothing is decided on the clock (README: "On a lent GPU").
# CIFAR-10 travels in two parts (.c1, .c2: one part fits beside the tree in a call), and the unfinished
# runs of the last slice (.c3) need a call of their own, so a slice is up to three commands on one warm
# machine (then more `train` commands while it stays warm), from the repository root:
#
#   bash experiments/gpu_slice.sh check                       # carry .c1: data part 1, the CUDA tests
#       (when the grouped-run tests among them fail, this machine's train commands train runs alone)
#   bash experiments/gpu_slice.sh bring [replicate.py options] # carry .c3: the last slice's runs
#   bash experiments/gpu_slice.sh train SECONDS [--speed] [replicate.py options]
#                                                             # carry .c2: the data; with --speed
#       benchmarks/gpu_speed.py and benchmarks/grouped_speed.py first (at most 2/5 and 1/8 of SECONDS;
#       what they measured is kept); then experiments/replicate.py until SECONDS after this command
#       began, less a reserve for packing, seeds of one network trained as one group of at most $GROUP
#       (3: a paused group's checkpoints must travel to the next slice, ResNet-110's 14 MB each); then
#       the runs packed
#
# Every command first copies the committed runs into $RESULTS (finished runs are skipped) and unpacks the
# archives in .c3/ (unfinished runs of an earlier slice, made here with replicate.py --pack .c3/carry.tar
# --checkpoint-mb 55), so the sweep continues where the last slice stopped. What comes back lands in $OUT:
# slice.tar (and slice.part2.tar, ...: every run's records, the unfinished runs' checkpoints), the logs,
# gpu.json, gpu.md, grouped.json and grouped.md. The runs themselves stay in $RESULTS (default /tmp/r)
# while the machine is warm.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/slice-out}
RESULTS=${RESULTS:-/tmp/r}
PACK_RESERVE=40  # seconds kept for writing the checkpoints and packing them
CHECKPOINT_MB=55  # unfinished runs' checkpoints packed at most (.c3 travels beside the tree: 64 MiB)
GROUP=${GROUP:-3}  # runs trained as one grouped network at most (replicate.py --group)
NO_GROUP=${NO_GROUP:-/tmp/gpu_slice_no_group}  # left by 'check' when the grouped CUDA tests fail
mkdir -p "$OUT"
start=$SECONDS

say() { echo "gpu_slice: $*" | tee -a "$OUT/slice.log" >&2; }

# The runs this slice continues: the finished ones committed in results/runs (copied, so that the sweep
# skips them), then any archives carried in .c3/ (unfinished runs with their checkpoints).
bring_runs() {
    if [ -d results/runs ]; then
        mkdir -p "$RESULTS/runs"
        cp -rn results/runs/. "$RESULTS/runs/"
    fi
    if compgen -G ".c3/*.tar" >/dev/null; then
        python3 experiments/replicate.py --results "$RESULTS" "$@" --unpack .c3/*.tar |
            tee -a "$OUT/slice.log"
    fi
}

# benchmarks/NAME_speed.py for at most SECONDS (bench NAME SECONDS), its record written straight into
# $OUT: never mistaken for the committed record of an earlier GPU
bench() {
    timeout "$2" python3 "benchmarks/$1_speed.py" --out "$OUT/$1" 2>&1 | tee "$OUT/$1_speed.log"
    [ -f "$OUT/$1.json" ] || say "benchmarks/$1_speed.py wrote no record in its $2 s (see $1_speed.log)"
}

case "${1:-}" in
check)
    python3 .c1/make_cifar10.py data
    rc=$?
    [ "$rc" = 0 ] || [ "$rc" = 3 ] || say "data part 1 was not written (exit $rc); the CUDA tests need none"
    bring_runs
    python3 -m pytest -q tests/test_gpu.py 2>&1 | tee "$OUT/test_gpu.log"
    if grep -q "^FAILED.*group" "$OUT/test_gpu.log"; then  # the train commands then train runs alone
        touch "$NO_GROUP"
        say "the grouped CUDA tests failed: this machine's train commands train every run alone (--group 1)"
    fi
    ;;
bring)
    shift
    bring_runs "$@"
    ;;
train)
    budget=${2:-}
    if ! [[ "$budget" =~ ^[0-9]+$ ]]; then
        echo "usage: bash experiments/gpu_slice.sh train SECONDS [--speed] [replicate.py options]" >&2
        exit 2
    fi
    shift 2
    speed=0
    if [ "${1:-}" = "--speed" ]; then speed=1; shift; fi
    if [ -f .c2/make_cifar10.py ]; then
        python3 .c2/make_cifar10.py data || {
            say "the data could not be made (exit $?): if part 1 is missing, this machine is a new one;" \
                "run 'check' first"
            exit 1
        }
    fi
    bring_runs "$@"
    if [ "$speed" = 1 ]; then
        bench gpu $((budget * 2 / 5))
        bench grouped $((budget / 8))
    fi
    limit=$((budget - (SECONDS - start) - PACK_RESERVE))
    rc=0
    if [ -f "$NO_GROUP" ]; then
        GROUP=1
        say "every run trains alone (--group 1): the grouped CUDA tests failed on this machine"
    fi
    if [ "$limit" -ge 30 ]; then
        say "training for at most $limit s"
        python3 experiments/replicate.py --results "$RESULTS" --time-limit "$limit" --group "$GROUP" "$@" 2>&1 |
            tee "$OUT/train.log"
        rc=$?
    else
        say "only $limit s left for training: nothing trained"
    fi
    python3 experiments/replicate.py --results "$RESULTS" "$@" --pack "$OUT/slice.tar" \
        --checkpoint-mb "$CHECKPOINT_MB" | tee -a "$OUT/slice.log" || rc=1
    say "done in $((SECONDS - start)) s of $budget"
    exit "$rc"
    ;;
*)
    sed -n '2,24p' "$0" >&2
    exit 2
    ;;
esac
