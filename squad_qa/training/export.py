"""Save a model folder in float16 safetensors (half the bytes), with its tokenizer (``scripts/export_fp16.py``).

A base encoder in fp16 is ~45 MB, small enough to travel to the GPU machine with the SQuAD files; a fine-tuned
checkpoint in fp16 is what ships (``squad_qa/training/gpu_stages.py``). Training from it needs nothing special:
train.py loads with dtype=torch.float32, so the fp16 weights are upcast on load (fp16 -> fp32 is exact; only the
export itself rounds, by at most 2^-11 relative). squad_qa.json (run info, metrics) is copied along.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import torch
from transformers import AutoModel, AutoModelForQuestionAnswering, AutoTokenizer

from squad_qa.files.checksums import file_sha256, write_checksums
from squad_qa.files.run_record import RUN_INFO_FILE, read_run_record, run_args
from squad_qa.model.model_dir import missing_qa_head_keys
from squad_qa.scoring.metrics import em_of, f1_of


def model_card(dst: Path, src: Path) -> str:
    info = read_run_record(dst)
    metrics = info.get("metrics") or {}
    targs = run_args(info)
    em, f1 = em_of(metrics, math.nan), f1_of(metrics, math.nan)  # NaN: not recorded
    score = (f"EM {em:.2f} / F1 {f1:.2f} on {metrics.get('num_questions', '?')} SQuAD v1.1 dev questions "
             f"({info.get('weights', '?')} weights, scored before the fp16 export)" if not math.isnan(em + f1)
             else "no metrics recorded in squad_qa.json")
    keys = ["learning_rate", "num_train_epochs", "per_device_train_batch_size", "max_seq_length", "doc_stride",
            "warmup_ratio", "label_smoothing", "adv", "adv_epsilon", "ema_decay", "swa_start", "llrd_decay",
            "reinit_layers", "rdrop_alpha", "teacher", "teacher_mode", "kd_alpha", "kd_temperature", "seed", "bf16"]
    hp = "\n".join(f"- {k}: {targs[k]}" for k in keys if targs.get(k) not in (None, 0, 0.0, False))
    return f"""---
language: en
license: apache-2.0
library_name: transformers
pipeline_tag: question-answering
datasets: [squad]
---

# squad-minilm-l6 (fp16)

Extractive question answering: MiniLM-L6-H384 (uncased BERT, 6 layers, hidden 384) fine-tuned on SQuAD v1.1 train
with squad-qa (`scripts/train_squad.py`), weights stored in float16.

- Result: {score}.
- Source checkpoint: `{src.name}`, global step {info.get('global_step', '?')}.
- Load: `AutoModelForQuestionAnswering.from_pretrained(path)` (transformers 5 keeps the stored float16 unless
  you pass `dtype=torch.float32`, which you should for CPU inference), or `squad_qa.inference.reader.QAReader`.
- Limits: English Wikipedia-style paragraphs; always returns a span (SQuAD v1.1 has no unanswerable questions);
  inputs over 384 tokens are read in overlapping windows.

Training flags:
{hp or '- (none recorded)'}
"""


def export_fp16(src: Path, dst: Path, write_card: bool = False) -> dict:
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{src}: no config.json (not a transformers model folder)")
    # A base encoder stays a base encoder: a QA class would add a random, never-trained head to the file.
    cls = AutoModel if missing_qa_head_keys(src) else AutoModelForQuestionAnswering
    model = cls.from_pretrained(src, dtype=torch.float16)
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst, safe_serialization=True)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    if (src / RUN_INFO_FILE).is_file():
        shutil.copy2(src / RUN_INFO_FILE, dst / RUN_INFO_FILE)
    if write_card:
        (dst / "README.md").write_text(model_card(dst, src), encoding="utf-8")
    # SHA256SUMS: QAReader.from_pretrained refuses a folder whose weights, config or tokenizer changed.
    write_checksums(dst, ["model.safetensors", "config.json", "tokenizer.json"])
    st = dst / "model.safetensors"
    return {"path": str(st), "bytes": st.stat().st_size, "sha256": file_sha256(st), "class": cls.__name__}
