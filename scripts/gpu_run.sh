#!/usr/bin/env bash
# One GPU-machine command (<= 10 min): the model to ship, then the ablation rows side by side, then the files to
# bring back. Prepared for a session with 15 device-minutes: one machine start and one command.
#
#   1. ship candidate: experiments/abl-baseline.json (lr 1e-4, batch 64, 2 epochs, bf16), seed 1, ALONE on the GPU,
#      so its logged samples/s are the clean throughput figure (one epoch of train-v1.1 = 88,641 windows).
#   2. ablation: every experiments/abl-*.json row at 1 epoch (one shared schedule), seeds 1 and 2, $JOBS runs at a
#      time on the one GPU (a 6-layer encoder leaves most of an H100 idle), seed-major, until the deadline.
#   3. if time is left: abl-best (2 epochs) and abl-baseline-3ep as further ship candidates; the candidate with the
#      best full-dev F1 is exported if it beats the shipped model's (SHIPPED_F1; selection on dev: say so).
#   4. $OUT: gpu.txt, log.txt (this script's output), ship.tar.part-* (fp16, <= 15 MiB parts: the device returns files of at most
#      16 MiB), runs.tgz (metrics, eval results, logs).
#
# Needs .device/ (carried): base-fp16/ (scripts/export_fp16.py), train-v1.1.json.gz, dev-v1.1.json.gz.
# On the device:   bash scripts/gpu_run.sh 2>&1 | tee $OUT/log.txt     (the device tool sets $OUT)
# Rehearsal here:  REHEARSAL=1 OUT=/tmp/gpu-out bash scripts/gpu_run.sh  (tiny subsets, a few steps, CPU)
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:?set OUT to the folder that comes back}
DEADLINE=${DEADLINE_S:-530}  # seconds from start: packing must be done before the command's timeout
ROOT=${ROOT:-runs/gpu}
JOBS=${JOBS:-6}
ROWS="baseline ls01 ema llrd fgm best swa rdrop reinit ls005"  # priority order: a cut-off loses the last ones
MAIN_EXTRA="--eval_steps 500 --eval_subset 1000"
ABL_EXTRA="--num_train_epochs 1 --eval_steps 250 --eval_subset 1000"
if [ -n "${REHEARSAL:-}" ]; then
  small="--max_train_samples 300 --max_eval_samples 120 --per_device_train_batch_size 8 --per_device_eval_batch_size 32"
  ROWS="baseline ema"
  MAIN_EXTRA="$small --max_steps 8 --eval_steps 4 --eval_subset 40"
  ABL_EXTRA="$small --max_steps 4 --eval_steps 2 --eval_subset 40"
  JOBS=2
fi
source scripts/gpu_common.sh  # the folders, the clock, the device report
sha256sum .device/base-fp16/model.safetensors .device/*.json.gz

stage "1. ship candidate: abl-baseline seed 1, 2 epochs, alone"
python scripts/ablate.py --configs experiments/abl-baseline.json --seeds 1 --output_root "$ROOT/main" \
  --results "$ROOT/main/RESULTS.md" --extra "$MAIN_EXTRA" --time_budget $((DEADLINE - 90))
stage "1. done"
left=$(time_left 30)
stage "2. ablation rows, 1 epoch, $JOBS at a time, budget $left s"
if [ "$left" -gt 60 ]; then
  python scripts/ablate.py --configs $(for r in $ROWS; do echo experiments/abl-$r.json; done) \
    --seeds 1 2 --output_root "$ROOT/abl1ep" --results "$ROOT/abl1ep/RESULTS.md" --extra "$ABL_EXTRA" \
    --jobs "$JOBS" --time_budget "$left"
fi
stage "2. done"

left=$(time_left 40)
stage "3. more ship candidates if time is left: abl-best (2 epochs) and abl-baseline-3ep, seed 1; budget $left s"
if [ "$left" -gt 150 ]; then
  python scripts/ablate.py --configs experiments/abl-best.json experiments/abl-baseline-3ep.json --seeds 1 \
    --output_root "$ROOT/main" --results "$ROOT/main/RESULTS.md" --extra "$MAIN_EXTRA" --jobs 2 --time_budget "$left"
fi

stage "4. export the ship candidate with the best full-dev F1 (fp16, split into 15 MiB parts)"
ship_best "$ROOT/main" "$SHIPPED_F1"

stage "5. packing"
pack_runs "$ROOT"
ls -la "$OUT"
stage "end"
