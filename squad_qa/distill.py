"""Knowledge distillation at fine-tuning time: a teacher's start/end logits on the student's own windows.

    teacher_logits_for_training(args, rt, examples, features, tokenizer)   what train.py calls (--teacher)
    compute_teacher_logits(teacher_dir, features, student_tokenizer, ...)   the teacher over every window
    map_student_ids(input_ids, student_tokenizer, teacher_tokenizer)        student ids -> teacher ids
    save_teacher_logits / load_teacher_logits / TeacherLogits.check         the cache file

Mode: cached logits. The teacher runs ONCE over all training windows (batched, ``torch.no_grad``, autocast as
configured, a progress bar) and its logits are cached on disk; training then reads the rows of each batch (by
feature index), cut to the batch's width, so a step costs no teacher forward. (On a GPU the teacher could also
run alongside the student, batch by batch; that mode is not built.)

The teacher sees the STUDENT'S windows: its input ids are built from the student's ids, so position ``p`` of
the teacher's logits is position ``p`` of the student's window (same question truncation, same doc stride,
same context pieces). Each student id becomes its token string (student tokenizer), special tokens are renamed
([CLS] -> the teacher's cls/bos, [SEP] -> sep/eos, [PAD] -> pad, [UNK] -> unk), then the string becomes a
teacher id (teacher vocab). For a BERT-family teacher with the same vocabulary this is the identity. For an
MPNet teacher (``<s> </s> <pad> <unk>``, no token_type_ids; the same WordPiece pieces as BERT uncased on SQuAD
text) note one difference from MPNet's own QA format: MPNet puts two separators ``</s></s>`` between question
and context, while a window built from BERT's single [SEP] gets one ``</s>`` there. No token is inserted, so
positions stay aligned; the teacher sees a slightly unusual (but close) input. token_type_ids are dropped when
the teacher's config has ``type_vocab_size <= 1`` or its forward takes none.

The cache file (safetensors, no pickle)::

    start_logits  float16 [num_features, max_seq_length]   (columns >= the window's seq_len are 0)
    end_logits    float16 [num_features, max_seq_length]
    metadata["squad_qa_teacher_logits"] = JSON {format, features_key, num_features, max_seq_length, doc_stride,
                                                max_query_length, teacher: {path, weights_sha256}, ...}

named ``teacher-logits-<key>.safetensors`` in ``--teacher_cache_dir`` (default ``--cache_dir``), where ``key``
hashes the features cache key (``feature_store.cache_key``: examples, tokenizer, window geometry) and the
teacher's fingerprint (its weight files' sha256). A cache is only used for the same training features: the
same features key and the same number of rows, else a ``TeacherCacheError``. ``--teacher FILE.safetensors``
uses such a file directly (e.g. averaged over an ensemble elsewhere); it is checked the same way.

DDP: rank 0 computes and writes the cache while the others wait (``runtime.main_process_first``), then every
rank reads it. Resuming needs nothing new: the cache is a pure function of the features and the teacher.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from transformers import AutoTokenizer

from squad_qa.batching import collate, length_batches, model_input_names
from squad_qa.checkpoint import file_sha256
from squad_qa.feature_store import cache_key
from squad_qa.model_dir import load_qa_model, weight_files
from squad_qa.runtime import autocast_context, main_process_first

logger = logging.getLogger(__name__)

META_KEY = "squad_qa_teacher_logits"
FORMAT = 1
FILE_PREFIX = "teacher-logits-"
_F16_MAX = float(np.finfo(np.float16).max)

__all__ = ["TeacherCacheError", "TeacherLogits", "teacher_fingerprint", "teacher_cache_path", "map_student_ids",
           "compute_teacher_logits", "save_teacher_logits", "load_teacher_logits", "is_teacher_logits_file",
           "teacher_logits_for_training"]


class TeacherCacheError(ValueError):
    """A teacher or a teacher-logits file that cannot serve these training features (said in one line)."""


# ----------------------------------------------------------------------------------------------------------------
# identity of a teacher


def teacher_fingerprint(teacher_dir: str | Path) -> dict[str, str]:
    """``{"path", "weights_sha256"}``: the teacher's safetensors file(s) hashed (one file: its own sha256)."""
    teacher_dir = Path(teacher_dir)
    files = weight_files(teacher_dir)
    if not files:
        raise TeacherCacheError(f"--teacher {teacher_dir}: no model.safetensors")
    digests = [file_sha256(f) for f in files]
    combined = digests[0] if len(digests) == 1 else hashlib.sha256("\n".join(digests).encode()).hexdigest()
    return {"path": str(teacher_dir.resolve()), "weights_sha256": combined}


def teacher_cache_path(cache_dir: str | Path, features_key: str, fingerprint: dict[str, str]) -> Path:
    """``<cache_dir>/teacher-logits-<key>.safetensors``; the key covers the features and the teacher's weights
    (not its path: a copied teacher folder reuses the cache)."""
    h = hashlib.sha256(f"{FORMAT}\n{features_key}\n{fingerprint['weights_sha256']}".encode())
    return Path(cache_dir) / f"{FILE_PREFIX}{h.hexdigest()[:32]}.safetensors"


# ----------------------------------------------------------------------------------------------------------------
# student ids -> teacher ids


def _special_map(student_tok, teacher_tok) -> dict[str, str]:
    def first(*names: str) -> str | None:
        for n in names:
            v = getattr(teacher_tok, n, None)
            if v:
                return str(v)
        return None

    pairs = {"cls_token": first("cls_token", "bos_token"), "sep_token": first("sep_token", "eos_token"),
             "pad_token": first("pad_token"), "unk_token": first("unk_token")}
    out = {}
    for name, target in pairs.items():
        src = getattr(student_tok, name, None)
        if src is None:
            continue
        if target is None:
            raise TeacherCacheError(f"the teacher's tokenizer has no {name} (nor an equivalent) for the "
                                    f"student's {src}")
        out[str(src)] = target
    return out


def map_student_ids(input_ids: np.ndarray, student_tokenizer, teacher_tokenizer,
                    missing: str = "error") -> tuple[np.ndarray, int]:
    """The student's ``input_ids`` (any shape) as teacher ids, position for position.

    Returns ``(teacher_ids int64, number of tokens mapped to the teacher's unk)``. A piece the teacher's vocab
    lacks is a ``TeacherCacheError`` naming it (and how many distinct pieces and tokens are missing), or, with
    ``missing="unk"``, becomes the teacher's unk token with one warning carrying the counts.
    """
    if missing not in ("error", "unk"):
        raise ValueError(f"missing must be 'error' or 'unk', got {missing!r}")
    ids = np.asarray(input_ids)
    uniq, inverse = np.unique(ids, return_inverse=True)
    pieces = student_tokenizer.convert_ids_to_tokens([int(i) for i in uniq])
    specials = _special_map(student_tokenizer, teacher_tokenizer)
    vocab = teacher_tokenizer.get_vocab()
    lut = np.empty(len(uniq), dtype=np.int64)
    absent: list[int] = []
    for j, piece in enumerate(pieces):
        piece = specials.get(piece, piece)
        tid = vocab.get(piece)
        if tid is None:
            absent.append(j)
            lut[j] = -1
        else:
            lut[j] = tid
    n_unk = 0
    if absent:
        counts = np.bincount(inverse.ravel(), minlength=len(uniq))[absent]
        n_unk = int(counts.sum())
        names = [pieces[j] for j in absent]
        shown = ", ".join(repr(n) for n in names[:10]) + (" ..." if len(names) > 10 else "")
        what = (f"{len(names)} student pieces ({n_unk} tokens of the windows) are not in the teacher's "
                f"vocabulary: {shown}")
        if missing == "error":
            raise TeacherCacheError(what)
        unk = teacher_tokenizer.unk_token
        if unk is None or unk not in vocab:
            raise TeacherCacheError(what + " (and the teacher has no unk token to map them to)")
        logger.warning("%s; mapped to the teacher's %s", what, unk)
        lut[absent] = vocab[unk]
    return lut[inverse].reshape(ids.shape), n_unk


# ----------------------------------------------------------------------------------------------------------------
# computing


@torch.no_grad()
def compute_teacher_logits(teacher_dir: str | Path, features, student_tokenizer, batch_size: int = 64,
                           device: torch.device | str = "cpu", amp: contextlib.AbstractContextManager | None = None,
                           show_progress: bool = False, missing: str = "error",
                           teacher=None, teacher_tokenizer=None) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's start/end logits on every window of ``features``: float16 ``[N, max_seq_length]``.

    Columns at and beyond a window's ``seq_len`` are 0 (never read: they are outside every valid mask).
    ``teacher``/``teacher_tokenizer`` may be passed already loaded (tests); else they are read from
    ``teacher_dir`` (a fine-tuned QA model folder with a fast tokenizer).
    """
    device = torch.device(device)
    if teacher_tokenizer is None:
        teacher_tokenizer = AutoTokenizer.from_pretrained(str(teacher_dir))
    if teacher is None:
        teacher = load_qa_model(teacher_dir, trained_head=True)
    teacher.to(device)
    was_training = teacher.training
    teacher.eval()
    ids, n_unk = map_student_ids(features.input_ids, student_tokenizer, teacher_tokenizer, missing=missing)
    mapped = replace(features, input_ids=ids)
    input_names = model_input_names(teacher)  # MPNet: no token_type_ids
    n, width = len(features), features.max_seq_length
    start = np.zeros((n, width), dtype=np.float16)
    end = np.zeros((n, width), dtype=np.float16)
    for rows in tqdm(length_batches(features.seq_len, batch_size), desc="teacher logits",
                     disable=not show_progress, leave=False):
        batch = collate(mapped, rows, with_targets=False, input_names=input_names)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with amp if amp is not None else contextlib.nullcontext():
            out = teacher(**batch)
        t = out.start_logits.shape[1]
        for dst, logits in ((start, out.start_logits), (end, out.end_logits)):
            # clamp: float16 tops out at 65504; zero beyond each window (padding is never a valid position)
            vals = logits.float().clamp(-_F16_MAX, _F16_MAX).cpu().numpy()
            vals[np.arange(t)[None, :] >= features.seq_len[rows][:, None]] = 0.0
            dst[rows, :t] = vals.astype(np.float16)
    teacher.train(was_training)
    if n_unk:
        logger.warning("teacher logits computed with %d tokens mapped to the teacher's unk", n_unk)
    return start, end


# ----------------------------------------------------------------------------------------------------------------
# the file


@dataclass
class TeacherLogits:
    """Cached teacher logits (float16, CPU) and their metadata; ``gather`` feeds the training loop."""

    start: torch.Tensor  # float16 [N, L]
    end: torch.Tensor
    meta: dict[str, Any]
    path: Path | None = None

    def __len__(self) -> int:
        return int(self.start.shape[0])

    def gather(self, idx, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows ``idx`` (feature indices) cut to ``width`` columns, as float32 (CPU) tensors."""
        rows = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        return (self.start.index_select(0, rows)[:, :width].float(),
                self.end.index_select(0, rows)[:, :width].float())

    def check(self, features, features_key: str | None) -> None:
        """Refuse a cache made for other windows: its features key, row count or width must match."""
        where = self.path if self.path is not None else "teacher logits"
        problems = []
        if features_key is not None and self.meta.get("features_key") != features_key:
            problems.append(f"it was made for the features {self.meta.get('features_key')}, these training "
                            f"features are {features_key} (other examples, tokenizer or window flags)")
        if len(self) != len(features):
            problems.append(f"it has {len(self)} rows, the training features have {len(features)}")
        if int(self.start.shape[1]) != features.max_seq_length:
            problems.append(f"its windows are {int(self.start.shape[1])} wide, --max_seq_length is "
                            f"{features.max_seq_length}")
        if problems:
            raise TeacherCacheError(f"{where} does not belong to this training data: " + "; ".join(problems))


def save_teacher_logits(path: str | Path, start: np.ndarray, end: np.ndarray, meta: dict[str, Any]) -> Path:
    """Write the cache file atomically (float16 tensors + the JSON metadata)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if start.shape != end.shape or start.ndim != 2:
        raise ValueError(f"start/end logits must be two equal [N, L] arrays, got {start.shape} and {end.shape}")
    meta = {"format": FORMAT, **meta, "num_features": int(start.shape[0]), "max_seq_length": int(start.shape[1])}
    tensors = {"start_logits": torch.from_numpy(np.ascontiguousarray(start, dtype=np.float16)),
               "end_logits": torch.from_numpy(np.ascontiguousarray(end, dtype=np.float16))}
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".safetensors.tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={META_KEY: json.dumps(meta, sort_keys=True)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_teacher_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON header of a teacher-logits file; TeacherCacheError when it is not one (or is damaged)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
            keys = set(f.keys())
    except Exception as e:  # safetensors raises its own error types for a damaged header
        raise TeacherCacheError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    if raw is None or not {"start_logits", "end_logits"} <= keys:
        raise TeacherCacheError(f"{path}: a safetensors file, but not teacher logits (no {META_KEY} metadata "
                                "or no start_logits/end_logits)")
    try:
        meta = json.loads(raw)
    except ValueError as e:
        raise TeacherCacheError(f"{path}: damaged {META_KEY} metadata ({e})") from None
    if meta.get("format") != FORMAT:
        raise TeacherCacheError(f"{path}: teacher-logits format {meta.get('format')}, this version reads {FORMAT}")
    return meta


def is_teacher_logits_file(path: str | Path) -> bool:
    try:
        read_teacher_metadata(path)
    except TeacherCacheError:
        return False
    return True


def load_teacher_logits(path: str | Path) -> TeacherLogits:
    path = Path(path)
    meta = read_teacher_metadata(path)
    with safe_open(str(path), framework="pt") as f:
        start, end = f.get_tensor("start_logits"), f.get_tensor("end_logits")
    if start.shape != end.shape or start.dim() != 2:
        raise TeacherCacheError(f"{path}: start/end logits of shapes {tuple(start.shape)} / {tuple(end.shape)}")
    if start.dtype != torch.float16 or end.dtype != torch.float16:
        start, end = start.to(torch.float16), end.to(torch.float16)
    return TeacherLogits(start, end, meta, path)


# ----------------------------------------------------------------------------------------------------------------
# what training calls


def teacher_logits_for_training(args: argparse.Namespace, rt, examples, features, tokenizer) -> TeacherLogits:
    """``--teacher``: a logits file used as is, or a teacher folder whose logits are computed once and cached.

    Every rank returns the same logits; with a cache folder rank 0 computes and writes, the others wait.
    """
    features_key = cache_key(examples, tokenizer, args.max_seq_length, args.doc_stride, args.max_query_length,
                             True)
    teacher = Path(args.teacher)
    if teacher.is_file():
        logits = load_teacher_logits(teacher)
        logits.check(features, features_key)
        logger.info("teacher logits from %s (%d windows)", teacher, len(logits))
        return logits

    fingerprint = teacher_fingerprint(teacher)
    cache_dir = args.teacher_cache_dir or args.cache_dir
    meta = {"features_key": features_key, "teacher": fingerprint, "doc_stride": args.doc_stride,
            "max_query_length": args.max_query_length, "train_file": str(args.train_file),
            "max_train_samples": args.max_train_samples}
    path = teacher_cache_path(cache_dir, features_key, fingerprint) if cache_dir else None
    with main_process_first(rt, cache_dir):
        if path is not None and path.is_file():
            logits = load_teacher_logits(path)
            logits.check(features, features_key)
            logger.info("teacher logits: cached in %s", path)
            return logits
        logger.info("teacher logits: running %s over %d training windows", teacher, len(features))
        start, end = compute_teacher_logits(teacher, features, tokenizer, batch_size=args.per_device_eval_batch_size,
                                            device=rt.device, amp=autocast_context(args, rt.device),
                                            show_progress=rt.is_main)
        if rt.device.type == "cuda":
            torch.cuda.empty_cache()  # the teacher is gone: give its memory back before the student trains
        if path is not None and rt.is_main:
            save_teacher_logits(path, start, end, meta)
            logger.info("teacher logits cached in %s", path)
    meta = {"format": FORMAT, **meta, "num_features": len(features), "max_seq_length": features.max_seq_length}
    return TeacherLogits(torch.from_numpy(start), torch.from_numpy(end), meta, path)
