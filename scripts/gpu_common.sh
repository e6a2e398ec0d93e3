# Sourced by the GPU-session scripts (gpu_run.sh, gpu_teacher.sh): the clock and stage banners, the device report,
# and shipping the best run of a folder. Needs OUT (the folder that comes back) and ROOT (the run folders).
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }
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
import json, sys
from pathlib import Path
runs = [(json.loads((d / "eval_results.json").read_text())["f1"], d) for d in Path(sys.argv[1]).glob("*-s*")
        if (d / "eval_results.json").is_file()]
for f1, d in sorted(runs, key=lambda r: -r[0]):
    print(f"candidate {d.name}: full-dev F1 {f1:.2f}", file=sys.stderr)
top = max(runs, key=lambda r: r[0]) if runs else None
print(top[1] if top and top[0] > float(sys.argv[2]) else "")
PY
)
  if [ -n "$best" ]; then
    echo "shipping $best"
    python scripts/export_fp16.py "$best" "$ROOT/ship"
    tar cf - -C "$ROOT" ship | split -b 15M - "$OUT/ship.tar.part-"
  else
    echo "nothing to ship from $1"
  fi
}
