#!/usr/bin/env bash
# One GPU-machine command (<= 10 min): fine-tune all-mpnet-base-v2 on train-v1.1 (or read a teacher's saved logits,
# TEACHER_LOGITS), distil the default encoder from it, and bring back the best run to ship if it beats the shipped
# model. What is carried to the machine, the calls, the stages' timings and the rehearsal: docs/GPU.md.
#
# Stages: 1 join the teacher's fp16 parts; 2a a 60-step probe sizes the teacher's epochs; 2 the teacher; 3a its logits
# on the student's windows, once; 3 STUDENTS (and PEERS, without a teacher) side by side; 4 the best run exported
# (gpu_common.sh ship_best); 5 with time left, --teacher_mode cached vs live. Knobs: the variables below.
#   on the device:  set -o pipefail && STUDENTS="..." PEERS="..." DEADLINE_S=580 bash scripts/gpu_teacher.sh 2>&1 | tee $OUT/log.txt
#   rehearsal here: REHEARSAL=1 OUT=/tmp/gpu-teacher bash scripts/gpu_teacher.sh   (CPU, a tiny random MPNet, ~2 min)
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:?set OUT to the folder that comes back}
DEADLINE=${DEADLINE_S:-540}  # seconds from start: packing must be done well before the command's timeout
ROOT=${ROOT:-runs/gpu}
# with the teacher, side by side; an entry CONFIG@SEED runs that seed (default 1; scripts/ablate.py)
STUDENTS=${STUDENTS:-"experiments/kd-baseline.json experiments/kd-fgm-ls01.json"}
PEERS=${PEERS:-}  # configs without a teacher that run beside them (e.g. experiments/abl-baseline-3ep.json), @SEED too
STUDENTS_S=${STUDENTS_S:-290}  # 3a + 3 + 4: the teacher's logits, the students side by side, export
MODES_S=${MODES_S:-0}  # seconds kept from the students for stage 5 (cached vs live)
# the teacher's logits brought home by an earlier session (a FILE, or its FILE.part-* or FILE.gz, with SHA256SUMS
# beside it): stages 1-3a are skipped and every student reads it as --teacher FILE (stage 5 times live mode with a
# stand-in)
TEACHER_LOGITS=${TEACHER_LOGITS:-}
TEACHER_EXTRA=""
STUDENT_EXTRA="--eval_steps 500 --eval_subset 1000"
DEV_DIR=.device
if [ -n "${REHEARSAL:-}" ]; then
  DEV_DIR=.device-rehearsal
  small="--max_train_samples 200 --max_eval_samples 80 --per_device_train_batch_size 8 --per_device_eval_batch_size 32"
  TEACHER_EXTRA="$small --max_steps 6 --model_name_or_path $DEV_DIR/mpnet --train_file $DEV_DIR/train-v1.1.json.gz \
    --predict_file $DEV_DIR/dev-v1.1.json.gz"
  MODE_STEPS=3 MODE_LOG=1 PROBE_STEPS=4 PROBE_LOG=2 STUDENTS_S=60
  STUDENT_EXTRA="$small --max_steps 4 --eval_steps 2 --eval_subset 40 --model_name_or_path $DEV_DIR/base-fp16 \
    --train_file $DEV_DIR/train-v1.1.json.gz --predict_file $DEV_DIR/dev-v1.1.json.gz"
  python - "$DEV_DIR" <<'PY' || exit 1
# a tiny random MPNet base (the real tokenizer), cut into parts like the real one; the student's base and data as is
import shutil, sys
from pathlib import Path
import torch
from transformers import AutoTokenizer, MPNetConfig, MPNetForMaskedLM
import squad_qa
from squad_qa.training.teacher import write_fp16_shards
root = Path(sys.argv[1]); src = root / "mpnet-src"
shutil.rmtree(root, ignore_errors=True); src.mkdir(parents=True)
teacher = Path.home() / "squad-runs/teacher/all-mpnet-base-v2"
tok = AutoTokenizer.from_pretrained(str(teacher)); tok.save_pretrained(src)
torch.manual_seed(0)
MPNetForMaskedLM(MPNetConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=128, max_position_embeddings=514)).save_pretrained(src)
write_fp16_shards(src, root / "mpnet", max_shard_bytes=200_000)
shutil.rmtree(src)
shutil.copytree(squad_qa.default_base_model_path(), root / "base-fp16")
for name in ("train-v1.1.json.gz", "dev-v1.1.json.gz"):
    shutil.copy(Path("../shared/squad") / name, root / name)
PY
fi
source scripts/gpu_common.sh  # the folders, the clock, the device report

PEER_EXTRA="$STUDENT_EXTRA"
if [ -n "$TEACHER_LOGITS" ]; then
  stage "1. the teacher's logits from an earlier session: join the parts, check the sha256"
  sums="$(dirname "$TEACHER_LOGITS")/SHA256SUMS" name=$(basename "$TEACHER_LOGITS")
  [ -f "$sums" ] || { echo "no $sums beside $TEACHER_LOGITS"; exit 2; }
  if ls "$TEACHER_LOGITS".part-* > /dev/null 2>&1; then  # joined aside, so a failed join leaves nothing behind
    cat "$TEACHER_LOGITS".part-* > "$TEACHER_LOGITS.joined" && mv "$TEACHER_LOGITS.joined" "$TEACHER_LOGITS" || exit 2
  elif [ -f "$TEACHER_LOGITS.gz" ]; then  # gzip: 139 MB of float16 logits are 29 MB (the masked positions repeat)
    python -m gzip -d "$TEACHER_LOGITS.gz" || exit 2
  fi
  [ -f "$TEACHER_LOGITS" ] || { echo "no $TEACHER_LOGITS and no parts of it"; exit 2; }
  (cd "$(dirname "$TEACHER_LOGITS")" && grep -F "  $name" SHA256SUMS | sha256sum -c -) \
    || { echo "teacher logits damaged: $TEACHER_LOGITS"; exit 2; }
  STUDENT_EXTRA="$STUDENT_EXTRA --teacher $TEACHER_LOGITS"
else  # stages 1-3a: train the teacher here (not indented: the here-documents end at the line's start)
stage "1. join the teacher's parts"
python scripts/download_teacher.py --join_shards "$DEV_DIR/mpnet" || { echo "teacher parts missing or damaged"; exit 2; }
sha256sum "$DEV_DIR/mpnet/model.safetensors" "$DEV_DIR/base-fp16/model.safetensors" "$DEV_DIR"/*.json.gz

stage "2a. teacher probe: ${PROBE_STEPS:-60} steps for its samples/s (and the MPNet windows' feature cache)"
python scripts/train_squad.py --config experiments/teacher-mpnet.json $TEACHER_EXTRA --max_steps ${PROBE_STEPS:-60} \
  --logging_steps ${PROBE_LOG:-20} --max_eval_samples 10 --output_dir "$ROOT/probe" --overwrite_output_dir 2>&1 \
  | grep -iE "^[0-9-]+ [0-9:,]+ INFO squad_qa.training.train: training:|error" | tail -3
# the epochs that fit: the teacher's run (its start and full-dev eval ~35 s) must leave STUDENTS_S for the rest
budget=$(time_left $((STUDENTS_S + 35)))
EPOCHS=$(python - "$ROOT/probe" "$budget" <<'PY'
import math, sys
from pathlib import Path
try:
    from squad_qa.files.run_record import METRICS_FILE, read_metrics, read_run_record, run_args
    rows, _ = read_metrics(Path(sys.argv[1]) / METRICS_FILE)
    last = rows[-1]
    bs = run_args(read_run_record(sys.argv[1]))["per_device_train_batch_size"]
    windows = last["step"] * bs / last["epoch"]
    # x 0.9: the first run's median over all of training (1,101/s) was 7 % under its probe's last interval (1,178/s)
    fit = float(sys.argv[2]) * 0.9 * last["samples_per_s"] / windows
    print(f"probe: {last['samples_per_s']:.0f} samples/s, ~{windows:.0f} windows; {fit:.2f} epochs fit", file=sys.stderr)
except Exception as e:  # no probe figures: one epoch
    print(f"probe failed ({e}): 1 epoch", file=sys.stderr)
    fit = 1.0
print(max(0.3, min(2.0, math.floor(fit * 10) / 10)))
PY
)
stage "2. teacher: all-mpnet-base-v2, $EPOCHS epochs, alone (training budget $budget s)"
python scripts/ablate.py --configs experiments/teacher-mpnet.json --seeds 1 --output_root "$ROOT/teacher" \
  --results "$ROOT/teacher/RESULTS.md" --extra "--num_train_epochs $EPOCHS $TEACHER_EXTRA" \
  --time_budget $(time_left 120)
[ -f "$ROOT/teacher/teacher-mpnet-s1/eval_results.json" ] || { echo "no teacher: stopping"; pack_runs "$ROOT"; exit 3; }
cat "$ROOT/teacher/teacher-mpnet-s1/eval_results.json"

STUDENT_EXTRA="$STUDENT_EXTRA --teacher $ROOT/teacher/teacher-mpnet-s1"
stage "3a. the teacher's logits on the student's training windows, once (the students read the cache)"
# the first student's config (CONFIG@SEED read by squad_qa/training/experiments.py's parse_entry) and the folder this stage caches
# the teacher's logits in, read from the flags the run below gets (squad_qa/training/distill.py's teacher_cache_dir)
read -r first cache_dir < <(python -c 'import sys; from squad_qa.training.experiments import parse_entry
from squad_qa.training.config import parse_args
from squad_qa.training.distill import teacher_cache_dir
cfg = str(parse_entry(sys.argv[1])[0]); print(cfg, teacher_cache_dir(parse_args(["--config", cfg, *sys.argv[2:]])) or "")' \
  "${STUDENTS%% *}" $STUDENT_EXTRA)
python scripts/train_squad.py --config "$first" $STUDENT_EXTRA --max_steps 1 --eval_steps 0 --eval_subset 0 \
  --max_eval_samples 10 --output_dir "$ROOT/precompute" --overwrite_output_dir 2>&1 | grep -iE "teacher logits|error" | tail -3
fi

left=$(time_left $((40 + MODES_S)))
stage "3. students with the teacher${PEERS:+ and peers without}, side by side, budget $left s"
if [ -n "$PEERS" ]; then  # an entry CONFIG@SEED runs that seed alone (scripts/ablate.py)
  python scripts/ablate.py --configs $PEERS --seeds 1 --output_root "$ROOT/kd" --results "$ROOT/kd/RESULTS-peers.md" \
    --extra "$PEER_EXTRA" --jobs $(echo $PEERS | wc -w) --time_budget "$left" &
fi
python scripts/ablate.py --configs $STUDENTS --seeds 1 --output_root "$ROOT/kd" --results "$ROOT/kd/RESULTS.md" \
  --extra "$STUDENT_EXTRA" --jobs $(echo $STUDENTS | wc -w) --time_budget "$left"
wait

stage "4. export the best student if it beats the shipped model's full-dev F1 $SHIPPED_F1"
ship_best "$ROOT/kd" "$SHIPPED_F1"
pack_runs "$ROOT"
# stage 5's seconds: to the deadline, less 20 for the last packing; a mode (and the stand-in built for it) runs
# only with more than MODE_MIN_S of them
modes_left() { time_left 20; }
MODE_MIN_S=60
# the teacher's logits on the student's windows (float16, ~139 MB) stay on the machine in 15 MiB parts: short
# return calls right after this one can bring them home (4 parts a call), so a later session distils with
# --teacher FILE without training the teacher again (cat the parts, sha256sum -c SHA256SUMS)
if [ -z "$TEACHER_LOGITS" ]; then  # a teacher was trained here: its logits in parts; it is timed live in stage 5
# stage 3a's; none without a cache folder (nothing was cached: a file in the working folder is another run's)
cache=$([ -n "$cache_dir" ] && ls -t "$cache_dir"/teacher-logits-*.safetensors 2>/dev/null | head -1)
if [ -n "$cache" ]; then
  rm -rf "$ROOT/logits-parts" && mkdir -p "$ROOT/logits-parts"
  split -b 15M "$cache" "$ROOT/logits-parts/$(basename "$cache").part-"
  (cd "$(dirname "$cache")" && sha256sum "$(basename "$cache")") > "$ROOT/logits-parts/SHA256SUMS"
  echo "teacher logits: $(du -h "$cache" | cut -f1) in $(ls "$ROOT/logits-parts" | grep -c part-) parts in $ROOT/logits-parts"
fi
CACHED_TEACHER="$ROOT/teacher/teacher-mpnet-s1" LIVE_TEACHER="$ROOT/teacher/teacher-mpnet-s1"
# no teacher here: time live mode with a stand-in of its size, built only if stage 5 has time to run (~10 s, 436 MB
# written)
elif [ -f "$DEV_DIR/mpnet/config.json" ] && [ "$(modes_left)" -gt $MODE_MIN_S ]; then
stage "5a. a stand-in teacher for the live timing: the teacher's config and tokenizer ($DEV_DIR/mpnet), random weights"
# A forward's cost does not depend on the weights' values, so a randomly initialised model of the teacher's
# architecture times --teacher_mode live as the fine-tuned teacher would; its logits teach nothing (timing only).
python - "$DEV_DIR/mpnet" "$ROOT/standin" <<'PY' && CACHED_TEACHER="$TEACHER_LOGITS" LIVE_TEACHER="$ROOT/standin"
import sys
import torch
from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoTokenizer
src, out = sys.argv[1:]
torch.manual_seed(0)
model = AutoModelForQuestionAnswering.from_config(AutoConfig.from_pretrained(src), dtype=torch.float32)
model.save_pretrained(out)
AutoTokenizer.from_pretrained(src).save_pretrained(out)
print(f"stand-in: {type(model).__name__}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")
PY
fi

left=$(modes_left)
if [ -n "${LIVE_TEACHER:-}" ]; then
stage "5. --teacher_mode cached vs live, alone, if time is left ($left s)"
for mode in cached live; do
  if [ "$left" -gt $MODE_MIN_S ]; then
    teacher=$CACHED_TEACHER; [ "$mode" = live ] && teacher=$LIVE_TEACHER
    timeout $((left / 2)) python scripts/train_squad.py --config experiments/kd-baseline.json $PEER_EXTRA \
      --teacher "$teacher" --teacher_mode $mode --max_steps ${MODE_STEPS:-150} --eval_steps 0 --eval_subset 0 \
      --max_eval_samples 100 --logging_steps ${MODE_LOG:-50} --output_dir "$ROOT/kd-mode/$mode" \
      --overwrite_output_dir 2>&1 | grep -iE "error" | tail -3
    python -c "import sys; from squad_qa.files.run_record import read_metrics
rows, _ = read_metrics(sys.argv[1]); print(sys.argv[2], 'samples/s', [round(r['samples_per_s'], 1) for r in rows])" \
      "$ROOT/kd-mode/$mode/metrics.jsonl" $mode
    pack_runs "$ROOT"
  fi
  left=$(modes_left)
done
fi
ls -la "$OUT"
stage "end"
