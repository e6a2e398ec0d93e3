"""The run record: squad_qa.json, the training run's own account of a model folder.

    write_run_record(path, info)   training writes it next to the weights (checkpoint.save_model_dir)
    read_run_record(path)          {} when absent or unreadable: a model folder need not have one
    run_args(record)               the training flags inside it (window geometry, base model, seed)

Readers: QAReader (window geometry, metrics and base model for GET /v1/model), scripts/export_fp16.py
(copied along, and the model card) and scripts/ablate.py (global_step for the results table).

It is part of a model folder (squad_qa/model_dir.py), but it lives in this module of its own, which
imports nothing heavier than json: scripts/ablate.py reads it without importing torch (the machine
that aggregates ablation runs need not have it), and checkpoint.py writes it without importing the
model-folder code.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

RUN_INFO_FILE = "squad_qa.json"


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
