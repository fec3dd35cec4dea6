#!/usr/bin/env bash
# A lent GPU's slice, prepared here so that nothing is decided on the clock (docs/reproducing.md). CIFAR-10
# travels in two parts (.c1, .c2: one part fits beside the tree in a call), so a slice is a few commands on
# one warm machine, from the repository root:
#
#   bash experiments/gpu_slice.sh check                       # carry .c1: data part 1; the CUDA tests that
#       decide how this machine trains (a failing grouped-run test: runs alone; a failing graph test: the
#       eager step)
#   bash experiments/gpu_slice.sh probe SECONDS [--rehearse]  # carry .c2: the data; benchmarks/probe.py
#       (about 150 s): cudnn.benchmark, group sizes, torch.compile, the cost table; its decisions and
#       table go to this machine's later train commands
#   bash experiments/gpu_slice.sh bring [replicate.py options] # carry .c3: an earlier slice's paused runs
#   bash experiments/gpu_slice.sh train SECONDS [replicate.py options]
#       experiments/replicate.py until SECONDS after this command began, less the reserve for packing that
#       the probe measured (else 40 s), every run of one depth as one group, a unit opened only where it
#       can finish (the probe's cost table, else the committed one); then the runs packed into $OUT
#
# Here, before and after a slice (the tree travels within about 12 MB, and a run trained in segments on a
# CPU commits its checkpoint, about 7 MB):
#   bash experiments/gpu_slice.sh stow      # every results/runs/*/checkpoint.pt into .git/stowed/<run>/
#   bash experiments/gpu_slice.sh unstow    # and back; both do nothing when there is nothing to move, and
#                                           # refuse (moving nothing) where a checkpoint would be replaced
#
# Every command first copies the committed runs into $RESULTS (finished runs are skipped) and unpacks the
# archives in .c3/ (the paused runs of an earlier slice, made with replicate.py --pack .c3/carry.tar
# --checkpoint-mb 55), so the sweep continues where the last slice stopped. What comes back lands in $OUT:
# slice.tar (and slice.part2.tar, ...: every run's records, the unfinished runs' checkpoints), the logs,
# and the probe's speed.json, speed.md and costs.json. The runs themselves stay in $RESULTS (default
# /tmp/r) while the machine is warm; a run paused at the end of a slice (a unit is opened to be paused only
# when nothing fits and nothing is open, cut to the runs whose checkpoints CHECKPOINT_MB holds:
# resnet.plan.PAUSE_MB) travels back in slice.tar with its checkpoint, and is lost with the machine if that
# archive does not come back. torch.compile's cache stays on the machine ($MACHINE/inductor) for the
# probe and every train command, out of what comes back.
set -uo pipefail
cd "$(dirname "$0")/.."

# Committed checkpoints out of the shipped tree and back (run here, not on the GPU machine)
stow_runs() {  # stow_runs FROM TO VERB: every FROM/<run>/checkpoint.pt to TO/<run>/checkpoint.pt
    local from=$1 to=$2 verb=$3 src run clash=()
    local found=("$from"/*/checkpoint.pt)
    if [ ! -e "${found[0]}" ]; then
        echo "gpu_slice: $verb: no checkpoint in $from: nothing to move" >&2
        return 0
    fi
    for src in "${found[@]}"; do
        run=$(basename "$(dirname "$src")")
        [ -e "$to/$run/checkpoint.pt" ] && clash+=("$to/$run/checkpoint.pt")
    done
    if [ ${#clash[@]} -gt 0 ]; then
        echo "gpu_slice: $verb: nothing moved: ${clash[*]} already there and would be replaced; compare it" \
             "with $from/<run>/checkpoint.pt and remove the one you do not want, then $verb again" >&2
        return 1
    fi
    for src in "${found[@]}"; do
        run=$(basename "$(dirname "$src")")
        mkdir -p "$to/$run" && mv "$src" "$to/$run/checkpoint.pt" || return 1
        [ "$verb" = unstow ] && rmdir "$(dirname "$src")" 2>/dev/null  # the emptied stowed/<run>
    done
    echo "gpu_slice: $verb: ${#found[@]} checkpoint(s) moved from $from to $to" >&2
}
case "${1:-}" in
stow|unstow)
    if [ -z "${STOWED:-}" ]; then  # inside .git: never shipped, never tracked
        git_dir=$(git rev-parse --git-dir 2>/dev/null) || {
            echo "gpu_slice: $1 keeps the checkpoints in the checkout's .git/stowed, and this is no git" \
                 "checkout; run it in yours (or name a folder outside the tree as STOWED=...)" >&2
            exit 1
        }
        STOWED=$git_dir/stowed
    fi
    if [ "$1" = stow ]; then
        stow_runs results/runs "$STOWED" stow
    else
        stow_runs "$STOWED" results/runs unstow
    fi
    exit $?
    ;;
esac

OUT=${OUT:-/tmp/slice-out}
RESULTS=${RESULTS:-/tmp/r}
PACK_RESERVE=40  # seconds kept for the last checkpoints and the pack, until the probe has measured them
CHECKPOINT_MB=55  # unfinished runs' checkpoints packed at most (.c3 travels beside the tree: 64 MiB)
MACHINE=${MACHINE:-/tmp/gpu_slice}  # what this machine's commands leave for its later ones
NO_GROUP=${NO_GROUP:-$MACHINE/no_group}  # left by 'check' when the grouped CUDA tests fail
NO_GRAPH=$MACHINE/no_graph  # left by 'check' when the CUDA-graph test fails
mkdir -p "$MACHINE"
mkdir -p "$OUT"
# one compile cache for the probe and the train commands, kept on the machine: $OUT is emptied by every
# command, and its files come back
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$MACHINE/inductor}
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

# The second part of the data, when this call carries it (.c2/)
make_data() {
    if [ -f .c2/make_cifar10.py ]; then
        python3 .c2/make_cifar10.py data || {
            say "the data could not be made (exit $?): if part 1 is missing, this machine is a new one;" \
                "run 'check' first"
            exit 1
        }
    fi
}

# A budget in whole seconds, or the usage and exit 2
seconds() {
    if ! [[ "${1:-}" =~ ^[0-9]+$ ]]; then
        echo "usage: bash experiments/gpu_slice.sh $2 SECONDS ..." >&2
        exit 2
    fi
}

case "${1:-}" in
check)
    python3 .c1/make_cifar10.py data
    rc=$?
    [ "$rc" = 0 ] || [ "$rc" = 3 ] || say "data part 1 was not written (exit $rc); the CUDA tests need none"
    bring_runs
    # the tests whose verdict decides how this machine trains: the graph step, and runs as one group
    python3 -m pytest -q tests/test_gpu.py -k "graph_step or group" 2>&1 | tee "$OUT/test_gpu.log"
    if grep -q "^FAILED.*group" "$OUT/test_gpu.log"; then  # the train commands then train runs alone
        touch "$NO_GROUP"
        say "the grouped CUDA tests failed: this machine's train commands train every run alone (--group 1)"
    fi
    if grep -q "^FAILED.*graph_step" "$OUT/test_gpu.log"; then
        touch "$NO_GRAPH"
        say "the CUDA-graph test failed: this machine's train commands take the eager step (--no-graph)"
    fi
    ;;
probe)
    seconds "${2:-}" probe
    budget=$2
    shift 2
    make_data
    timeout "$budget" python3 benchmarks/probe.py --out "$OUT" --budget $((budget * 4 / 5)) "$@" 2>&1 |
        tee "$OUT/probe.log"
    for f in decisions.env costs.json; do [ -f "$OUT/$f" ] && cp "$OUT/$f" "$MACHINE/$f"; done
    [ -f "$MACHINE/decisions.env" ] && say "the probe decided: $(tr '\n' ' ' < "$MACHINE/decisions.env")"
    ;;
bring)
    shift
    bring_runs "$@"
    ;;
train)
    seconds "${2:-}" train
    budget=$2
    shift 2
    make_data
    bring_runs "$@"
    flags=()
    costs=()
    if [ -f "$MACHINE/decisions.env" ]; then  # the probe's, on this machine: PROBE_FLAGS, PACK_RESERVE
        source "$MACHINE/decisions.env"
        read -ra flags <<< "$PROBE_FLAGS"
    fi
    [ -f "$MACHINE/costs.json" ] && costs=(--costs "$MACHINE/costs.json")
    if [ -f "$NO_GROUP" ]; then
        flags+=(--group 1)
        say "every run trains alone (--group 1): the grouped CUDA tests failed on this machine"
    fi
    if [ -f "$NO_GRAPH" ]; then
        flags+=(--no-graph)
        say "the eager step (--no-graph): the CUDA-graph test failed on this machine"
    fi
    limit=$((budget - (SECONDS - start) - PACK_RESERVE))
    rc=0
    if [ "$limit" -ge 30 ]; then
        say "training for at most $limit s (${flags[*]:-no probe flags})"
        python3 experiments/replicate.py --results "$RESULTS" --time-limit "$limit" --no-figures \
            "${flags[@]}" "${costs[@]}" "$@" 2>&1 | tee "$OUT/train.log"
        rc=${PIPESTATUS[0]}
    else
        say "only $limit s left for training: nothing trained"
    fi
    python3 experiments/replicate.py --results "$RESULTS" "$@" --pack "$OUT/slice.tar" \
        --checkpoint-mb "$CHECKPOINT_MB" | tee -a "$OUT/slice.log" || rc=1
    say "done in $((SECONDS - start)) s of $budget"
    exit "$rc"
    ;;
*)
    sed -n '2,33p' "$0" >&2
    exit 2
    ;;
esac
