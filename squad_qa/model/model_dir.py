"""A model folder: where it is, whether it is a fine-tuned QA checkpoint, and loading it.

    resolve_model_dir(dir)      --model, else $SQUAD_QA_MODEL, else DEFAULT_MODEL_DIR
    check_qa_checkpoint(dir)    a one-line CheckpointError for anything but a fine-tuned QA checkpoint
    load_qa_model(dir)          AutoModelForQuestionAnswering in float32, the load report explained
    train_hint()                what to do when there is no model: the runs trained here, a command

The model used when none is named (resolve_model_dir):
    1. $SQUAD_QA_MODEL, when set (read at each call);
    2. else DEFAULT_MODEL_DIR, fixed at import: models/squad-minilm-l6 next to the package folder
       when that folder exists (the model that ships in git, found from a checkout or an editable
       install whatever the current directory),
    3. else models/squad-minilm-l6 relative to the current directory. An installed wheel carries no
       model, so the checkout's layout is never assumed; a folder that does not exist gets the usual
       CheckpointError: "does not exist", then train_hint().

The folder's run record (squad_qa.json: training flags, metrics) is squad_qa/files/run_record.py's.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import AutoModelForQuestionAnswering

from squad_qa.files.checksums import ChecksumError, verify_checksums

logger = logging.getLogger(__name__)

MODEL_ENV_VAR = "SQUAD_QA_MODEL"
# The checkpoint that ships with the project (trained by scripts/train_squad.py). It may not exist
# in a fresh checkout: then every entry point says how to make one instead of guessing.
SHIPPED_MODEL = Path("models") / "squad-minilm-l6"
_BESIDE_PACKAGE = Path(__file__).resolve().parents[2] / SHIPPED_MODEL
DEFAULT_MODEL_DIR = _BESIDE_PACKAGE if _BESIDE_PACKAGE.is_dir() else SHIPPED_MODEL
QA_HEAD_KEYS = ("qa_outputs.weight", "qa_outputs.bias")

# Where `serve` / `predict.py` look for models the user has already trained (when the shipped one is missing).
RUN_ROOTS = (Path("runs"), Path.home() / "squad-runs")


def resolve_model_dir(model_dir: str | Path | ModelFolder | None = None) -> Path | ModelFolder:
    """--model if given, else $SQUAD_QA_MODEL, else DEFAULT_MODEL_DIR (the shipped model; see above).
    A ModelFolder (checked already) comes back as it is."""
    if isinstance(model_dir, ModelFolder):
        return model_dir
    if model_dir:
        return Path(model_dir)
    env = os.environ.get(MODEL_ENV_VAR)
    return Path(env) if env else DEFAULT_MODEL_DIR


class CheckpointError(ValueError):
    """The folder is not a fine-tuned question-answering checkpoint we are willing to serve.

    The message is one line: what is wrong. ``hint=True`` (the folder is missing or not a QA model,
    rather than damaged): where it is printed, ``with_hint()`` adds ``train_hint()`` below it, the
    models already trained here and how to train one."""

    def __init__(self, message: str, hint: bool = False) -> None:
        super().__init__(message)
        self.hint = hint

    def with_hint(self) -> str:
        """The message, and where ``hint`` is set the how-to-get-a-model lines: built here, when the
        error is printed, because they look through the runs on this machine."""
        return f"{self}\n{train_hint()}" if self.hint else str(self)


@dataclass(frozen=True)
class ModelFolder:
    """A model folder that passed ``check_qa_checkpoint``: resolved, checked and (with SHA256SUMS)
    hashed once. Hand it on instead of the path (``QAReader.from_pretrained``, ``create_app``) and
    nothing checks or hashes it again in this process."""

    path: Path

    def __str__(self) -> str:
        return str(self.path)


def find_trained_models(roots: Sequence[Path] | None = None, limit: int = 8) -> list[Path]:
    """Fine-tuned QA model folders under ``roots`` (default ``RUN_ROOTS``: a run's output_dir and
    its best/), newest first."""
    found = []
    for root in RUN_ROOTS if roots is None else roots:
        if not root.is_dir():
            continue
        for cfg in [*root.glob("*/config.json"), *root.glob("*/best/config.json")]:
            try:
                found.append((cfg.stat().st_mtime, check_qa_checkpoint(cfg.parent, hint=False).path))
            except (CheckpointError, OSError):
                continue
    return [p for _, p in sorted(found, reverse=True)[:limit]]


def train_hint() -> str:
    """How to get a model, for this machine: the models already trained here, then a command that fits."""
    from squad_qa.model.compute import has_native_bf16  # which recipe fits this CPU: only for this message

    lines = []
    trained = find_trained_models()
    if trained:
        lines.append("Models already trained on this machine (pass one with --model):")
        lines += [f"  {p}" for p in trained]
    if torch.cuda.is_available():
        lines += ["Train one on this GPU (all of train-v1.1, two epochs):",
                  "  python scripts/train_squad.py --config experiments/cpu-full.yaml --max_steps -1 "
                  "--num_train_epochs 2 --output_dir runs/full"]
    elif has_native_bf16("cpu"):
        lines += ["Train one on this CPU (it multiplies bfloat16 natively; times from 2 cores of an AMD EPYC, Zen 4):",
                  "  python scripts/train_squad.py --config experiments/cpu-bf16.yaml    # ~45 min, dev F1 about 74",
                  "  python scripts/train_squad.py --config experiments/cpu-full.yaml    # the shipped model's "
                  "recipe, ~2.4 h an epoch, F1 78 at 0.64 epoch"]
    else:
        lines += ["This CPU has no native bfloat16, so a real model takes many hours here (a GPU, or a CPU with",
                  "AVX512-BF16/AMX, is the place for it). A toy model (dev F1 about 40; 5-40 minutes) to try the tools:",
                  "  python scripts/train_squad.py --config experiments/smoke.yaml"]
    lines.append(f"The shipped model lives in {DEFAULT_MODEL_DIR} (restore it with `git checkout -- models/`).")
    return "\n".join(lines)


def read_config_json(folder: Path) -> tuple[dict, str | None]:
    """``folder/config.json`` as a dict and what is wrong with it: ({}, None) when there is none (loading the
    model says so), ({}, problem) when it is not a readable JSON object."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        return {}, None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return {}, f"config.json cannot be read ({type(e).__name__}: {e})"
    if not isinstance(config, dict):
        return {}, "config.json is not a JSON object"
    return config, None


def positions_problem(max_seq_length: int, config: dict, whose: str) -> str | None:
    """Windows longer than the model's position table: what to say, or None."""
    max_pos = config.get("max_position_embeddings")
    if max_pos is not None and max_seq_length > max_pos:
        return f"--max_seq_length {max_seq_length} exceeds the {whose}'s max_position_embeddings {max_pos}"
    return None


def weight_files(path: Path) -> list[Path]:
    """The safetensors weight file(s) of a model folder, in shard order ([] when there are none)."""
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    index = path / "model.safetensors.index.json"
    if index.is_file():  # sharded save_pretrained output
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{index} is damaged ({type(e).__name__}: {e})") from None
        return [path / s for s in shards]
    return []


def missing_qa_head_keys(path: str | Path, files: list[Path] | None = None) -> list[str]:
    """The QA head weights (``QA_HEAD_KEYS``) that the folder's safetensors lack, read from their
    headers alone: [] for a fine-tuned QA checkpoint, both keys for a base encoder.

    The one answer to "is this a QA checkpoint?" (check_qa_checkpoint, scripts/export_fp16.py).
    The weights decide, not config.json's ``architectures``: they are what a load uses, and a
    config need not list architectures at all. CheckpointError when the folder has no safetensors
    or one of them is damaged. ``files``: the folder's ``weight_files`` when the caller already has them.
    """
    path = Path(path)
    files = weight_files(path) if files is None else files
    if not files:
        raise CheckpointError(f"{path} has no model.safetensors (pickled .bin weights are never loaded)")
    keys: set[str] = set()
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as st:
                keys.update(st.keys())
        except Exception as e:  # SafetensorError (truncated header, bad JSON), OSError
            raise CheckpointError(f"{f} is damaged or truncated ({type(e).__name__}: {e})") from None
    return [k for k in QA_HEAD_KEYS if not any(key == k or key.endswith("." + k) for key in keys)]


def check_qa_checkpoint(path: str | Path | ModelFolder, hint: bool = True) -> ModelFolder:
    """Refuse anything but a fine-tuned QA checkpoint, with a one-line CheckpointError that says
    what is wrong (``e.hint``: whether ``train_hint()`` should follow it). Returns the checked
    ``ModelFolder``; one given in is returned as it is (checked already).

    Reads only the safetensors headers (and, where the folder has SHA256SUMS, hashes the files),
    so it is cheap enough to run before starting a server. The point: transformers happily loads a
    base encoder into BertForQuestionAnswering and initialises qa_outputs at random, which would
    serve confident-looking nonsense; and a damaged file must say so, not dump a traceback.
    """
    if isinstance(path, ModelFolder):
        return path
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"model folder {path} does not exist", hint=hint)
    config = path / "config.json"
    if not config.is_file():
        raise CheckpointError(f"{path} has no config.json, so it is not a saved model", hint=hint)
    files = weight_files(path)
    if not files:
        raise CheckpointError(f"{path} has no model.safetensors (pickled .bin weights are never loaded)", hint=hint)
    try:  # SHA256SUMS (the shipped model has one, written by scripts/export_fp16.py)
        verify_checksums(path)
    except ChecksumError as e:
        raise CheckpointError(f"{e} (restore the folder, e.g. `git checkout -- {path}`)") from None
    try:
        if not isinstance(json.loads(config.read_text(encoding="utf-8")), dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{config} is damaged ({type(e).__name__}: {e})") from None
    missing = missing_qa_head_keys(path, files)
    if missing:
        raise CheckpointError(
            f"{path} is not a fine-tuned question-answering checkpoint: its weights have no "
            f"{' / '.join(missing)} (a base encoder without a trained QA head); serving it would "
            f"answer from a randomly initialised head",
            hint=hint,
        )
    if not (path / "tokenizer.json").is_file():
        raise CheckpointError(f"{path} has no tokenizer.json (a fast tokenizer is needed for offsets)", hint=hint)
    return ModelFolder(path)


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def load_qa_model(path: str | Path, *, trained_head: bool = True) -> torch.nn.Module:
    """``AutoModelForQuestionAnswering`` in float32 from a local folder, with transformers' load
    report replaced by what it means here.

    Fine-tuning starts from a base encoder (``trained_head=False``): its QA head is initialised at
    random (that is what training trains) and its pooler is unused (the QA model has none), so the
    report's MISSING / UNEXPECTED table is expected and logged as one line. A model to answer with
    (``trained_head=True``) must bring its head: a missing one is a CheckpointError. float32 also
    for float16 files (the shipped model): transformers 5 would otherwise keep the stored dtype,
    and CPUs compute float16 slowly.
    """
    hf_logger = logging.getLogger("transformers.modeling_utils")
    # The load report is a WARNING; we report it below. A filter, not a higher level: transformers
    # 5.25 runs (and logs) a tensor-parallel plan check whenever that logger's level is >= WARNING.
    quiet = _BelowError()
    hf_logger.addFilter(quiet)
    try:
        model, info = AutoModelForQuestionAnswering.from_pretrained(
            str(path), dtype=torch.float32, output_loading_info=True, use_safetensors=True
        )
    except (OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: the model does not load ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    finally:
        hf_logger.removeFilter(quiet)
    missing = sorted(info.get("missing_keys", ()))
    unexpected = sorted(info.get("unexpected_keys", ()))
    head = [k for k in missing if "qa_outputs" in k]
    other = [k for k in missing if "qa_outputs" not in k]
    if trained_head and head:
        # Belt and braces for check_qa_checkpoint: whatever the key naming, a QA head that the
        # loader had to initialise is an untrained head.
        raise CheckpointError(f"{path}: the question-answering head ({', '.join(head)}) was not in the "
                              f"checkpoint and would be random", hint=True)
    if head:
        logger.info("%s: new QA head %s initialised at random (expected: fine-tuning trains it)%s", path,
                    "/".join(head), f"; unused from the checkpoint: {', '.join(unexpected)}" if unexpected else "")
    elif unexpected:
        logger.info("%s: unused from the checkpoint: %s", path, ", ".join(unexpected))
    if other:
        logger.warning("%s: %d weights not in the checkpoint, initialised at random: %s", path, len(other),
                       ", ".join(other[:8]) + (" ..." if len(other) > 8 else ""))
    return model
