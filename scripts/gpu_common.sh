# Sourced by the GPU-session scripts (gpu_run.sh, gpu_teacher.sh) once their settings are made: makes the folders,
# starts the clock and prints the device report; then the stage banners, packing and shipping the best run of a
# folder. Needs OUT (the folder that comes back), ROOT (the run folders) and DEADLINE (seconds from the start).
T0=$(date +%s)
# the shipped model's full-dev F1 at the end of its GPU run (models/squad-minilm-l6/squad_qa.json, training_metrics):
# a candidate ships only above it
SHIPPED_F1=${SHIPPED_F1:-85.74}
# a rehearsal (REHEARSAL=1, CPU) runs in its own folder, cleared: a real run's folders would be skipped as "finished
# earlier" and its tiny runs would land beside real ones; it ships whatever it trains
if [ -n "${REHEARSAL:-}" ]; then ROOT=runs/gpu-rehearsal SHIPPED_F1=0; rm -rf "$ROOT"; fi
elapsed() { echo $(( $(date +%s) - T0 )); }
time_left() { echo $((DEADLINE - $(elapsed) - ${1:-0})); }  # time_left [RESERVE_S]: seconds to the deadline less it
stage() { echo "=== [$(elapsed) s] $*"; }

device_report() {  # the GPU, the software, the cores: $OUT/gpu.txt and the log
  (nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no GPU") | tee "$OUT/gpu.txt"
  python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
  echo "cpus $(nproc)"
}

pack_runs() {  # pack_runs DIR...: the run folders' metrics, results and logs (no weights, no n-best) into $OUT/runs.tgz
  find "$@" \( -name '*.json' -o -name '*.jsonl' -o -name '*.log' -o -name '*.md' \) \
    -not -name 'tokenizer*.json' -not -name 'special_tokens_map.json' -not -name 'nbest_predictions.json' \
    -not -path '*/best/*' -not -path "$ROOT/ship/*" -print0 | tar czf "$OUT/runs.tgz" --null -T -
}

ship_best() {  # ship_best RUNS_DIR [MIN_F1]: export the run with the best full-dev F1 (above MIN_F1) in fp16 parts
  local best
  best=$(python - "$1" "${2:--1}" <<'PY'
import sys
from pathlib import Path
from squad_qa.training import experiments as ablate  # its finished runs: the same ones the results table shows
root = Path(sys.argv[1])
try:
    groups = ablate.collect_runs(root)
except ablate.AblationError as e:  # no folder, a damaged run: say so, ship nothing
    print(e, file=sys.stderr)
    groups = {}
runs = sorted((r for group in groups.values() for r in group), key=lambda r: -r.f1)  # ties: by name, then seed
for r in runs:
    print(f"candidate {r.name}-s{r.seed}: full-dev F1 {r.f1:.2f}", file=sys.stderr)
print(ablate.run_dir(root, runs[0].name, runs[0].seed) if runs and runs[0].f1 > float(sys.argv[2]) else "")
PY
)
  if [ -n "$best" ]; then
    echo "shipping $best"
    rm -rf "$ROOT/ship"  # an earlier call's export must not go out as this one's
    if ! python scripts/export_fp16.py "$best" "$ROOT/ship"; then
      echo "export failed: nothing shipped"
    elif ! tar cf - -C "$ROOT" ship | split -b 15M - "$OUT/ship.tar.part-"; then
      echo "packing failed: $OUT/ship.tar.part-* incomplete"
    fi
  else
    echo "nothing to ship from $1"
  fi
}

mkdir -p "$ROOT" "$OUT"
stage "device"
device_report
