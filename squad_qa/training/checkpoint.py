"""Training checkpoints: everything needed to resume a run mid-epoch, written atomically.

A ``checkpoint-<step>/`` folder holds the model (raw weights, safetensors) and tokenizer,
``optimizer.pt``, ``scheduler.pt`` [``swa_scheduler.pt``, ``scaler.pt``, ``averaged.safetensors``],
``rng_state_<rank>.pt`` and ``trainer_state.json`` (written last). It is filled under a temporary name
and renamed into place in one step, so a kill during a save never leaves a half-written checkpoint
that looks complete; a folder without ``trainer_state.json`` is never used. ``SHA256SUMS`` (written
just before ``trainer_state.json``) lists every other file with its sha256: resuming checks it, so a
truncated or overwritten file is found before it is loaded, and ``latest`` falls back to the newest
checkpoint that is intact. Old checkpoints are renamed to a temporary name before they are deleted,
so a kill during the deletion leaves garbage that the next start removes, never a partial checkpoint.
Checkpoints written before SHA256SUMS existed still resume (they are checked for their files only).

The ``.pt`` files hold tensors and plain Python values only and are read with
``torch.load(..., weights_only=True)``: nothing is unpickled.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from squad_qa.files.atomic import TMP_PREFIX, atomic_dir, commit_dir, tmp_dir_for
from squad_qa.training.averaging import averaged_state_dict, load_averaged_state_dict
from squad_qa.files.checksums import ChecksumError, verify_checksums, write_checksums
from squad_qa.files.run_record import write_run_record
from squad_qa.training.runtime import Runtime

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
# What every checkpoint has, whatever the tricks (trainer_state.json last of all).
REQUIRED_FILES = ("config.json", "model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json")


def check_checkpoint(ckpt: Path) -> TrainState:
    """Raise ChecksumError (one line, naming the file) unless ``ckpt`` has every file it needs, intact;
    returns its trainer state (the only place that reads trainer_state.json)."""
    missing = [n for n in REQUIRED_FILES if not (ckpt / n).is_file()]
    if missing:
        raise ChecksumError(f"{ckpt} is incomplete: no {', '.join(missing)}")
    verify_checksums(ckpt)
    try:
        return TrainState(**json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as e:
        raise ChecksumError(f"{ckpt / 'trainer_state.json'} is damaged ({type(e).__name__}: {e})") from None


@dataclass
class TrainState:
    global_step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # this rank's micro-batches of `epoch` already consumed
    total_steps: int = 0
    swa_started: bool = False
    best_f1: float | None = None
    best_step: int | None = None
    world_size: int = 1
    per_device_train_batch_size: int = 0
    gradient_accumulation_steps: int = 1
    seed: int = 0
    num_features: int = 0
    group_by_length: bool = True
    max_seq_length: int = 0
    doc_stride: int = 0
    max_query_length: int = 0
    max_train_samples: int | None = None

    # Everything that decides the batch order: resuming under other values would replay some data and skip the rest.
    DATA_POSITION_KEYS = ("world_size", "per_device_train_batch_size", "gradient_accumulation_steps", "seed",
                          "num_features", "group_by_length", "max_seq_length", "doc_stride", "max_query_length",
                          "max_train_samples")
    NOT_FLAGS = ("world_size", "num_features", "group_by_length")  # of those, the ones no flag holds by that name

    @classmethod
    def for_run(cls, args, world_size: int, num_features: int, total_steps: int) -> TrainState:
        """A fresh run's state: step 0, and what fixes its data order (``DATA_POSITION_KEYS``): the flags of
        that name, the world size, the number of training windows and --no_group_by_length."""
        return cls(total_steps=total_steps, world_size=world_size, num_features=num_features,
                   group_by_length=not args.no_group_by_length,
                   **{k: getattr(args, k) for k in cls.DATA_POSITION_KEYS if k not in cls.NOT_FLAGS})

    def data_position_mismatch(self, other: TrainState) -> str | None:
        """The first data-order key whose value differs from ``other``'s (None when they all agree)."""
        for key in self.DATA_POSITION_KEYS:
            if getattr(self, key) != getattr(other, key):
                return key
        return None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _checkpoint_step(path: Path) -> int | None:
    m = re.fullmatch(re.escape(CHECKPOINT_PREFIX) + r"(\d+)", path.name)
    return int(m.group(1)) if m else None


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints (a trainer_state.json is written last), oldest first."""
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.iterdir()
             if p.is_dir() and _checkpoint_step(p) is not None and (p / "trainer_state.json").is_file()]
    return sorted(found, key=_checkpoint_step)


def find_latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest checkpoint (not checked: see ``latest_intact_checkpoint``)."""
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def latest_intact_checkpoint(output_dir: Path) -> tuple[Path, TrainState] | None:
    """The newest checkpoint that passes ``check_checkpoint``, with its trainer state (a damaged one is skipped
    with a warning that says why): what ``--resume_from_checkpoint latest`` resumes from."""
    for ckpt in reversed(list_checkpoints(output_dir)):
        try:
            return ckpt, check_checkpoint(ckpt)
        except ChecksumError as e:
            logger.warning("not resuming from %s: %s", ckpt.name, e)
    return None


def _plain_state(state: dict[str, Any]) -> dict[str, Any]:
    # Scheduler state dicts may carry callables (lambdas, bound methods); weights_only loading refuses them and
    # the scheduler's constructor recreates them anyway.
    return {k: v for k, v in state.items() if not callable(v)}


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        # numpy's key is an ndarray, which weights_only loading rejects: store it as a tensor.
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(_py, np_state[2:])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _py(x: Any) -> Any:
    return x.item() if hasattr(x, "item") else x


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_to_tuple(state["python"]))
    name, key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_tuple(x: Any) -> Any:
    return tuple(_to_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def save_model_dir(model, tokenizer, path: Path, info: dict[str, Any] | None = None) -> None:
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    if info is not None:
        write_run_record(path, info)


def save_checkpoint(rt: Runtime, output_dir: Path, state: TrainState, model, tokenizer, optimizer, scheduler,
                    swa_scheduler, scaler, averaged, save_total_limit: int) -> Path | None:
    """Write ``checkpoint-<step>`` atomically: a temp folder is filled, then renamed in one step.

    Every rank writes its own RNG state (dropout streams differ per rank); rank 0 writes the rest.
    The trainer_state.json is written last: a folder without it is never used.
    """
    final = output_dir / f"{CHECKPOINT_PREFIX}{state.global_step}"
    tmp = tmp_dir_for(final)  # every rank writes its RNG state into the folder that rank 0 makes
    if rt.is_main:
        atomic_dir(final)
    rt.barrier()
    torch.save(_rng_state(), tmp / f"rng_state_{rt.rank}.pt")
    rt.barrier()
    if rt.is_main:
        save_model_dir(model, tokenizer, tmp)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(_plain_state(scheduler.state_dict()), tmp / "scheduler.pt")
        if swa_scheduler is not None:
            torch.save(_plain_state(swa_scheduler.state_dict()), tmp / "swa_scheduler.pt")
        if scaler is not None and scaler.is_enabled():
            torch.save(scaler.state_dict(), tmp / "scaler.pt")
        if averaged is not None:
            save_file({k: v.detach().clone().contiguous().cpu() for k, v in averaged_state_dict(averaged).items()},
                      str(tmp / "averaged.safetensors"))
        write_checksums(tmp, sorted(p.name for p in tmp.iterdir() if p.is_file()))
        (tmp / "trainer_state.json").write_text(json.dumps(state.to_json(), indent=2) + "\n")
        commit_dir(tmp, final)
        if save_total_limit > 0:
            for old in list_checkpoints(output_dir)[:-save_total_limit]:
                # Renamed first: a kill during the deletion leaves a .tmp- folder (removed at the next
                # start), never a checkpoint-N with some of its files gone.
                doomed = old.parent / f"{TMP_PREFIX}del-{old.name}"
                os.replace(old, doomed)
                shutil.rmtree(doomed, ignore_errors=True)
        logger.info("saved %s", final)
    rt.barrier()
    return final


def load_checkpoint(rt: Runtime, ckpt: Path, model, optimizer, scheduler, scaler, averaged,
                    swa_scheduler=None) -> None:
    """Load a checkpoint checked by ``check_checkpoint`` into the given objects; a file that still fails
    to load is a ChecksumError naming it."""
    try:
        current = ckpt / "model.safetensors"
        model.load_state_dict(load_file(str(current)), strict=True)
        # weights_only: the checkpoint holds tensors and plain python values only; never unpickle arbitrary objects.
        current = ckpt / "optimizer.pt"
        optimizer.load_state_dict(torch.load(current, weights_only=True, map_location="cpu"))
        current = ckpt / "scheduler.pt"
        scheduler.load_state_dict(torch.load(current, weights_only=True))
        current = ckpt / "scaler.pt"
        if scaler is not None and scaler.is_enabled() and current.is_file():
            scaler.load_state_dict(torch.load(current, weights_only=True))
        current = ckpt / "swa_scheduler.pt"
        if swa_scheduler is not None and current.is_file():
            swa_scheduler.load_state_dict(torch.load(current, weights_only=True))
        current = ckpt / "averaged.safetensors"
        if averaged is not None:
            load_averaged_state_dict(averaged, load_file(str(current), device=str(rt.device)))
    except Exception as e:  # SafetensorError, pickle/zip errors from torch.load, shape mismatches, OSError
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ChecksumError(f"{current} does not load ({type(e).__name__}: {first[:200]})") from None


def restore_rng(rt: Runtime, ckpt: Path) -> None:
    path = ckpt / f"rng_state_{rt.rank}.pt"
    if path.is_file():
        _set_rng_state(torch.load(path, weights_only=True))
    else:
        logger.warning("%s missing: dropout will not replay exactly", path)


def clean_stale_tmp(output_dir: Path) -> None:
    """Temp folders left by a kill during a save are garbage: the checkpoint they were becoming never existed."""
    for p in output_dir.glob(f"{TMP_PREFIX}*"):
        if p.is_dir():
            logger.warning("removing %s (left by an interrupted save)", p)
            shutil.rmtree(p, ignore_errors=True)


def remove_previous_run(output_dir: Path) -> None:
    """--overwrite_output_dir: old checkpoints would otherwise be rotated against ours or picked as 'latest'."""
    for p in [*output_dir.glob(f"{CHECKPOINT_PREFIX}*"), output_dir / "best"]:
        if p.is_dir():
            logger.warning("--overwrite_output_dir: removing %s of a previous run", p)
            shutil.rmtree(p)


def flag_problems(args) -> list[str]:
    """What is wrong with --output_dir and --resume_from_checkpoint for a training run: never silently mix two
    runs in one folder. [] when nothing."""
    if args.output_dir is None or not args.do_train:
        return []
    errors = []
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        errors.append(f"--output_dir {out} exists and is not a folder")
    elif (out.is_dir() and any(out.iterdir()) and not args.overwrite_output_dir
          and args.resume_from_checkpoint is None):
        errors.append(f"--output_dir {out} exists and is not empty: pass --overwrite_output_dir, "
                      "or --resume_from_checkpoint to continue a run")
    if args.resume_from_checkpoint not in (None, "latest"):
        ckpt = Path(args.resume_from_checkpoint)
        if not (ckpt / "trainer_state.json").is_file():
            errors.append(f"--resume_from_checkpoint {ckpt}: not a checkpoint folder (no trainer_state.json)")
    elif args.resume_from_checkpoint == "latest" and find_latest_checkpoint(out) is None:
        errors.append(f"--resume_from_checkpoint latest: no complete {CHECKPOINT_PREFIX}* folder in {out}")
    return errors
