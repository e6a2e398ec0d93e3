"""The run record: squad_qa.json, the training run's own account of a model folder; and the reader of its
log, metrics.jsonl (written by run_log.MetricsLog).

    write_run_record(path, info)   training writes it next to the weights (checkpoint.save_model_dir)
    read_run_record(path)          {} when absent or unreadable: a model folder need not have one
    run_args(record)               the training flags inside it (window geometry, base model, seed)
    read_metrics(path)             metrics.jsonl's training rows and evaluation rows

Readers: QAReader (window geometry, metrics and base model for GET /v1/model), scripts/export_fp16.py
(copied along, and the model card) and scripts/ablate.py (global_step for the results table).

It is part of a model folder (squad_qa/model/model_dir.py), but it lives in this module of its own, which
imports nothing heavier than json: scripts/ablate.py reads it without importing torch (the machine
that aggregates ablation runs need not have it), and checkpoint.py writes it without importing the
model-folder code. scripts/plot_metrics.py reads the log the same way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

RUN_INFO_FILE = "squad_qa.json"
METRICS_FILE = "metrics.jsonl"  # a training run's log: a row per logging step, evaluation or event


def write_run_record(path: str | Path, info: Mapping[str, Any]) -> Path:
    """Write ``info`` (training args, metrics, which weights) as ``path/squad_qa.json``; values that JSON
    has no type for (paths, dtypes) are written as their str()."""
    record = Path(path) / RUN_INFO_FILE
    record.write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
    return record


def read_run_record(path: str | Path) -> dict[str, Any]:
    """``path/squad_qa.json`` (args + metrics); {} when absent or unreadable (with a warning)."""
    record = Path(path) / RUN_INFO_FILE
    if not record.is_file():
        return {}
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        logger.warning("ignoring unreadable %s: %s", record, e)
        return {}
    return data if isinstance(data, dict) else {}


def run_args(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """The training flags of a run record: "training_args" as train.py writes them ("args" and
    "train_args" are accepted too)."""
    for key in ("args", "training_args", "train_args"):
        if isinstance(record.get(key), Mapping):
            return record[key]
    return {}


def read_metrics(path: str | Path) -> tuple[list[dict], list[dict]]:
    """(training rows, evaluation rows) of a metrics.jsonl; event rows (resume markers) are skipped.

    A last line cut short by a kill is ignored with a warning; any other line that is not a JSON object with a
    "step" is a ValueError naming the file and line."""
    path = Path(path)
    train, evals = [], []
    lines = path.read_text(encoding="utf-8").splitlines()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if lineno == len(lines):
                logger.warning("%s:%d: incomplete last line ignored", path, lineno)
                continue
            raise ValueError(f"{path}:{lineno}: not JSON: {e}") from None
        if not isinstance(row, dict) or "step" not in row:
            raise ValueError(f"{path}:{lineno}: expected an object with a 'step' field")
        if "eval_f1" in row:
            evals.append(row)
        elif "loss" in row:
            train.append(row)
    return train, evals
