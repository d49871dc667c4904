#!/usr/bin/env bash
# bench/detection/make_traces.sh OUT_DIR: the trace suite that detection_bench scores.
#
# Runs gradwatch-train (CPU, one thread, no monitor, 600 steps) once per trace and writes
#   OUT_DIR/NAME.csv          every step as gradwatch CSV (--trace-csv)
#   OUT_DIR/NAME.truth.json   {"kind": explosion|nan|divergence|slow_divergence|lr_spike|collapse|healthy,
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

# [STEPS=N] trace NAME KIND SEED LR FAULT_KIND FAULT_STEP FACTOR [EXTRA_JSON]
#   KIND: the ground truth (explosion|nan|divergence|slow_divergence|lr_spike|collapse|healthy)
#   FAULT_KIND: grad_spike|lr_spike|lr_ramp|grad_ascent|nan, or - for none
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
  local config="{\"seed\": $seed, \"lr\": $lr, \"steps\": ${STEPS:-600}, \"threads\": 1, \"device\": \"cpu\","
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

# --- Added for issue 17: the start of a run, the learning rate, slow divergence, noisy starts.

# Explosions inside the first 30 steps, where the statistical warm-up (25 steps) has not ended;
# early_s7_..._at21 is the issue's run (0-based fault step 20). Adam normalises the spike away.
spawn early_s1_lr0.01_x1000_at5     explosion 1 0.01 grad_spike 5 1000
spawn early_s2_lr0.01_x1000_at12    explosion 2 0.01 grad_spike 12 1000
spawn early_s7_lr0.01_x1000_at21    explosion 7 0.01 grad_spike 21 1000
spawn early_s3_lr0.02_x100_at28     explosion 3 0.02 grad_spike 28 100
spawn early_s4_adam_lr0.001_x1000_at15 explosion 4 0.001 grad_spike 15 1000 '"optimizer": "adam"'

# One-step learning-rate spikes x10 and x100: truth = the spiked step, which gated mode must see
# before its update (tolerance 0). Some collapse afterwards; the bench finds those collapses.
spawn lrspike_s1_lr0.01_x10_at300   lr_spike 1 0.01  lr_spike 300 10
spawn lrspike_s2_lr0.01_x10_at200   lr_spike 2 0.01  lr_spike 200 10
spawn lrspike_s3_lr0.02_x10_at400   lr_spike 3 0.02  lr_spike 400 10
spawn lrspike_s4_lr0.01_x100_at250  lr_spike 4 0.01  lr_spike 250 100
spawn lrspike_s5_lr0.005_x100_at350 lr_spike 5 0.005 lr_spike 350 100
spawn lrspike_s7_lr0.01_x100_at352  lr_spike 7 0.01  lr_spike 352 100

# Slow divergence at three rates: from the fault on the gradient is reversed and scaled (gradient
# ascent), so after ~20 steps of momentum the loss creeps up; x0.05 ~0.5-1%, x0.1 ~1-2.5%,
# x0.2 a few % a step. Truth = the fault's step.
spawn slowdiv_s7_lr0.01_x0.05_at301 slow_divergence 7 0.01 grad_ascent 301 0.05
spawn slowdiv_s1_lr0.005_x0.05_at401 slow_divergence 1 0.005 grad_ascent 401 0.05
spawn slowdiv_s7_lr0.01_x0.1_at301  slow_divergence 7 0.01 grad_ascent 301 0.1
spawn slowdiv_s1_lr0.005_x0.1_at401 slow_divergence 1 0.005 grad_ascent 401 0.1
spawn slowdiv_s4_lr0.01_x0.2_at301  slow_divergence 4 0.01 grad_ascent 301 0.2
spawn slowdiv_s5_lr0.02_x0.2_at251  slow_divergence 5 0.02 grad_ascent 251 0.2

# Noisy-start healthy runs: high early norms at LR 0.03 (seeds 42 and 3, the issue's false
# criticals), Adam, warm-up schedules; and one long run that converges near 0 (5,000 steps).
spawn healthy_s42_lr0.03            healthy 42 0.03  - 0 0
spawn healthy_s3_lr0.03             healthy 3 0.03   - 0 0
spawn healthy_s1_adam_lr0.001       healthy 1 0.001  - 0 0 '"optimizer": "adam"'
spawn healthy_s2_adam_lr0.003       healthy 2 0.003  - 0 0 '"optimizer": "adam"'
spawn healthy_s5_lr0.02_warmup50    healthy 5 0.02   - 0 0 '"lr_warmup_steps": 50'
spawn healthy_s2_lr0.03_warmup100_cosine healthy 2 0.03 - 0 0 '"lr_warmup_steps": 100, "lr_schedule": "cosine"'
spawn healthy_s4_lr0.02_batch2_warmup30 healthy 4 0.02 - 0 0 '"lr_warmup_steps": 30, "batch": 2'
STEPS=5000 spawn healthy_s7_lr0.01_long5000 healthy 7 0.01 - 0 0

status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
n=$(find "$out" -maxdepth 1 -name '*.truth.json' | wc -l)
echo "$0: $n traces in $out" >&2
exit $status
