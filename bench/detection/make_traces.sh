#!/usr/bin/env bash
# bench/detection/make_traces.sh OUT_DIR: the trace suite that detection_bench scores.
#
# Runs gradwatch-train (CPU, one thread, no monitor, 600 steps) once per trace and writes
#   OUT_DIR/NAME.csv          every step as gradwatch CSV (--trace-csv)
#   OUT_DIR/NAME.truth.json   {"kind": explosion|nan|divergence|collapse|healthy,
#                              "step": first 1-based step of the event, or null,
#                              "loss_upper_bound": 1, "fault": {...} or null, "config": {...}}
# "step" is the injected fault's 1-based step (the config's 0-based fault step + 1). Collapse
# traces carry "step": null: detection_bench computes the collapse step from the trace (the
# first step from which the loss stays >= 0.99), and derives vanishing gradients from the
# trace too; the trainer has no knob that makes gradients vanish without a collapse.
# "fault" names what was injected; detection_bench treats the steps from the fault on as
# not healthy, whatever the trace shows.
#
# Existing traces (both files present) are kept, so a second run costs nothing; delete
# OUT_DIR to regenerate. The runs are deterministic (seeded, one thread).
# Environment: GRADWATCH_TRAIN (default: build/bin/gradwatch-train beside this checkout),
# JOBS (parallel trainer runs, default 1: ~36 traces take ~2 minutes on one core).
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 OUT_DIR" >&2
  exit 2
fi
out=$1
here=$(cd "$(dirname "$0")" && pwd)
train=${GRADWATCH_TRAIN:-$here/../../build/bin/gradwatch-train}
jobs=${JOBS:-1}
if [[ ! -x $train ]]; then
  echo "$0: no trainer at $train (build gradwatch-train or set GRADWATCH_TRAIN)" >&2
  exit 2
fi
mkdir -p "$out"

# trace NAME KIND SEED LR FAULT_KIND FAULT_STEP FACTOR [EXTRA_JSON]
#   KIND: the ground truth (explosion|nan|divergence|collapse|healthy)
#   FAULT_KIND: grad_spike|lr_spike|lr_ramp|nan, or - for none
#   FAULT_STEP: 1-based step at which the fault shows in the trace
#   EXTRA_JSON: more config fields, e.g. '"batch": 2, "lr_schedule": "cosine"'
trace() {
  local name=$1 kind=$2 seed=$3 lr=$4 fkind=$5 fstep=$6 factor=$7 extra=${8:-}
  [[ -s $out/$name.csv && -s $out/$name.truth.json ]] && return 0
  local faults="[]" fault=null step=null
  if [[ $fkind != - ]]; then
    faults="[{\"kind\": \"$fkind\", \"step\": $((fstep - 1)), \"factor\": $factor}]"
    fault="{\"kind\": \"$fkind\", \"step\": $fstep, \"factor\": $factor}"
    [[ $kind != collapse ]] && step=$fstep
  fi
  local config="{\"seed\": $seed, \"lr\": $lr, \"steps\": 600, \"threads\": 1, \"device\": \"cpu\","
  config+=" \"log_every\": 0, \"eval_every\": 50, \"no_monitor\": true${extra:+, $extra},"
  config+=" \"faults\": $faults}"
  echo "$config" > "$out/$name.config.json"
  if ! "$train" --config "$out/$name.config.json" --trace-csv "$out/$name.csv.tmp" \
      > "$out/$name.log" 2>&1; then
    echo "$0: $name failed; see $out/$name.log" >&2
    return 1
  fi
  mv "$out/$name.csv.tmp" "$out/$name.csv"
  printf '{"kind": "%s", "step": %s, "loss_upper_bound": 1, "fault": %s, "config": %s}\n' \
    "$kind" "$step" "$fault" "$config" > "$out/$name.truth.json"
}

# At most $jobs runs at a time; a failed run fails the script at the end.
pids=()
spawn() {
  while (( $(jobs -rp | wc -l) >= jobs )); do wait -n || true; done
  trace "$@" &
  pids+=($!)
}

# Healthy: no fault. Seeds 1-5 and the case's seed 7; constant and cosine schedules; a small
# LR (slow, warm-up-like start); batch 2 (noisy small batches).
spawn healthy_s1_lr0.005          healthy 1 0.005 - 0 0
spawn healthy_s2_lr0.01           healthy 2 0.01  - 0 0
spawn healthy_s3_lr0.02           healthy 3 0.02  - 0 0
spawn healthy_s7_lr0.01           healthy 7 0.01  - 0 0
spawn healthy_s4_lr0.01_cosine    healthy 4 0.01  - 0 0 '"lr_schedule": "cosine"'
spawn healthy_s5_lr0.02_cosine    healthy 5 0.02  - 0 0 '"lr_schedule": "cosine"'
spawn healthy_s1_lr0.001          healthy 1 0.001 - 0 0
spawn healthy_s3_lr0.002          healthy 3 0.002 - 0 0
spawn healthy_s4_lr0.01_batch2    healthy 4 0.01  - 0 0 '"batch": 2'
spawn healthy_s5_lr0.005_batch2   healthy 5 0.005 - 0 0 '"batch": 2'
spawn healthy_s3_lr0.02_batch2    healthy 3 0.02  - 0 0 '"batch": 2'

# Explosions: one step's gradient x100..x1000. Some collapse afterwards (seed 7 x1000 at 350 is
# the case in DESIGN.md); the bench finds those collapses in the trace.
spawn explosion_s1_lr0.005_x100_at150  explosion 1 0.005 grad_spike 150 100
spawn explosion_s2_lr0.01_x300_at250   explosion 2 0.01  grad_spike 250 300
spawn explosion_s3_lr0.02_x1000_at350  explosion 3 0.02  grad_spike 350 1000
spawn explosion_s4_lr0.01_x100_at450   explosion 4 0.01  grad_spike 450 100
spawn explosion_s5_lr0.005_x1000_at250 explosion 5 0.005 grad_spike 250 1000
spawn explosion_s1_lr0.02_x300_at450   explosion 1 0.02  grad_spike 450 300
spawn explosion_s2_lr0.005_x1000_at350 explosion 2 0.005 grad_spike 350 1000
spawn explosion_s3_lr0.01_x100_at250   explosion 3 0.01  grad_spike 250 100
spawn explosion_s4_lr0.02_x1000_at350  explosion 4 0.02  grad_spike 350 1000
spawn explosion_s7_lr0.01_x1000_at350  explosion 7 0.01  grad_spike 350 1000
spawn explosion_s5_lr0.01_x300_at150_batch2 explosion 5 0.01 grad_spike 150 300 '"batch": 2'

# NaN: one NaN in one gradient; the grad norm is NaN at the fault step, the loss from the next.
spawn nan_s1_lr0.01_at200   nan 1 0.01  nan 200 1
spawn nan_s2_lr0.005_at300  nan 2 0.005 nan 300 1
spawn nan_s3_lr0.02_at400   nan 3 0.02  nan 400 1
spawn nan_s4_lr0.01_at500   nan 4 0.01  nan 500 1
spawn nan_s5_lr0.02_at120   nan 5 0.02  nan 120 1

# Slow divergence: the LR grows 10x per 100 steps from the fault step (lr_ramp, factor 10).
spawn divergence_s1_lr0.01_ramp_at150  divergence 1 0.01  lr_ramp 150 10
spawn divergence_s2_lr0.005_ramp_at200 divergence 2 0.005 lr_ramp 200 10
spawn divergence_s3_lr0.02_ramp_at250  divergence 3 0.02  lr_ramp 250 10
spawn divergence_s4_lr0.005_ramp_at250 divergence 4 0.005 lr_ramp 250 10
spawn divergence_s7_lr0.01_ramp_at200  divergence 7 0.01  lr_ramp 200 10

# Collapse: one step's LR x30..x1000 (clipping cannot stop it); step computed by the bench.
# Not every LR spike collapses the run (seed 5, LR 0.02, x300 at 300 recovers): these do.
spawn collapse_s1_lr0.01_lrx300_at250 collapse 1 0.01 lr_spike 250 300
spawn collapse_s4_lr0.02_lrx300_at200 collapse 4 0.02 lr_spike 200 300
spawn collapse_s3_lr0.01_lrx30_at300  collapse 3 0.01 lr_spike 300 30
spawn collapse_s2_lr0.01_lrx1000_at350 collapse 2 0.01 lr_spike 350 1000
spawn collapse_s5_lr0.01_lrx300_at200 collapse 5 0.01 lr_spike 200 300

status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
n=$(find "$out" -maxdepth 1 -name '*.truth.json' | wc -l)
echo "$0: $n traces in $out" >&2
exit $status
