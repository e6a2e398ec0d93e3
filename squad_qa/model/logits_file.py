"""The logits file: the start/end logits of every window, found again by (question id, window number).

    save_window_logits(path, start, end, features, qas_ids, window=..., models=...)   write one (atomically)
    load_window_logits(path) -> WindowLogits                                          read one back
    read_logits_metadata(path)                                                        its header only (cheap)
    WindowLogits.aligned_to(features, qas_ids, window)                                rows in these windows' order
    WindowLogits.gather(idx, width)                                                   a training batch's rows

One format for every logits file the project writes: ``predict.py --save_logits`` (one model's logits, or an
ensemble's averaged ones) and the teacher-logits cache of ``train.py --teacher`` (distill.py). So an ensemble's
file is a teacher: ``train.py --teacher FILE`` reads it as it reads its own cache.

Layout (safetensors, no pickle):

    tensors
        start_logits    float16 [N, L]   raw start logits of window n at position p (columns >= seq_len are 0)
        end_logits      float16 [N, L]   the same for the end
        seq_len         int32   [N]      real tokens of each window
        example_index   int32   [N]      the window's question: an index into metadata qas_ids
        doc_span_index  int32   [N]      the window's number among its question's windows
    metadata (safetensors' string -> string header)
        format          "squad_qa.logits/1"
        windows         N (decimal)
        max_seq_length, doc_stride, max_query_length    the window geometry (decimal; L = max_seq_length)
        models          JSON list of the model folders whose raw logits were averaged (one: no ensemble)
        averaging       "mean of raw logits"
        qas_ids         JSON list: the question id of each example_index
        squad_file      the SQuAD file the windows were cut from, when known
        teacher         (teacher cache only) JSON {path, weights_sha256}

Why (question id, window number) and not row order: a training run reads its file with ``is_training=True``,
which skips questions whose answer is not in the context (run_squad's "Could not find answer"), and may cut it
with ``--max_train_samples``. A window is the same window whatever else was read, because windows depend only
on the question, the context, the tokenizer and the geometry. ``aligned_to`` therefore picks, for every window
the run has, the file's row of the same question and number, and refuses (one line, naming the first culprit)
when the geometry differs, a window is missing, or a window's length differs (another tokenizer).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save_file

from squad_qa.files.atomic import atomic_file
from squad_qa.data.windows import WindowConfig

FORMAT = "squad_qa.logits/1"
GEOMETRY = tuple(f.name for f in fields(WindowConfig))  # max_seq_length, doc_stride, max_query_length
_F16_MAX = float(np.finfo(np.float16).max)

__all__ = ["FORMAT", "LogitsFileError", "WindowLogits", "save_window_logits", "load_window_logits",
           "read_logits_metadata", "geometry_differences", "to_float16"]


class LogitsFileError(ValueError):
    """A logits file that cannot be read or does not fit these windows (a one-line message)."""


def geometry_differences(theirs: Mapping[str, Any], ours: Mapping[str, int]) -> list[str]:
    """``--flag X there, Y here`` for each window setting in which a file (``theirs``: its header, strings, or
    ints) differs from a run (``ours``)."""
    return [f"--{k} {theirs.get(k)} there, {ours[k]} here" for k in GEOMETRY if str(theirs.get(k)) != str(ours[k])]


def to_float16(logits: np.ndarray) -> np.ndarray:
    """float16 with the out-of-range clamped (float16 tops out at 65504; a -inf mask value would stay -inf).
    Float16 input is returned as it is (logits this function already converted)."""
    if isinstance(logits, np.ndarray) and logits.dtype == np.float16:
        return logits
    return np.clip(np.asarray(logits, dtype=np.float32), -_F16_MAX, _F16_MAX).astype(np.float16)


def window_qas_ids(qas_ids: Sequence[str], example_index: np.ndarray) -> list[str]:
    """Each window's question id (``example_index`` indexes ``qas_ids``)."""
    return [qas_ids[int(e)] for e in example_index]


def save_window_logits(path: str | Path, start_logits: np.ndarray, end_logits: np.ndarray, features,
                       qas_ids: Sequence[str], *, window: Mapping[str, int], models: Sequence[str | Path],
                       squad_file: str | Path | None = None, extra: Mapping[str, Any] | None = None) -> Path:
    """Write the logits of every window of ``features`` (whose ``example_index`` indexes ``qas_ids``).

    Written to a temporary file and renamed, so a killed writer never leaves half a file under ``path``.
    ``extra`` adds JSON-encoded header entries (the teacher cache records its teacher's fingerprint).
    """
    path = Path(path)
    n = len(features)
    if start_logits.shape != end_logits.shape or start_logits.ndim != 2 or start_logits.shape[0] != n:
        raise ValueError(f"logits {start_logits.shape} / {end_logits.shape} do not match {n} windows")
    tensors = {
        "start_logits": np.ascontiguousarray(to_float16(start_logits)),
        "end_logits": np.ascontiguousarray(to_float16(end_logits)),
        "seq_len": np.ascontiguousarray(features.seq_len, dtype=np.int32),
        "example_index": np.ascontiguousarray(features.example_index, dtype=np.int32),
        "doc_span_index": np.ascontiguousarray(features.doc_span_index, dtype=np.int32),
    }
    metadata = {
        "format": FORMAT,
        "windows": str(n),
        **{k: str(int(window[k])) for k in GEOMETRY},
        "models": json.dumps([str(m) for m in models]),
        "averaging": "mean of raw logits",
        "qas_ids": json.dumps(list(qas_ids)),
    }
    if squad_file is not None:
        metadata["squad_file"] = str(squad_file)
    for k, v in (extra or {}).items():
        metadata[k] = json.dumps(v, sort_keys=True)
    with atomic_file(path, ".safetensors.tmp") as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_logits_metadata(path: str | Path) -> dict[str, str]:
    """The header of a logits file; ``LogitsFileError`` when the file is not one (or is damaged)."""
    try:
        with safe_open(str(path), framework="np") as f:
            metadata = dict(f.metadata() or {})
            keys = set(f.keys())
    except Exception as e:  # safetensors raises its own error types for a damaged header
        raise LogitsFileError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    if metadata.get("format") != FORMAT:
        raise LogitsFileError(f"{path}: a safetensors file, but not a squad_qa logits file (format "
                              f"{metadata.get('format')!r}, this version reads {FORMAT!r})")
    missing = {"start_logits", "end_logits", "seq_len", "example_index", "doc_span_index"} - keys
    if missing:
        raise LogitsFileError(f"{path}: a logits file without {', '.join(sorted(missing))}")
    return metadata


@dataclass
class WindowLogits:
    """The logits of N windows (float16, CPU), each window's (question id, window number, length), the header."""

    start: torch.Tensor  # float16 [N, L]
    end: torch.Tensor
    seq_len: np.ndarray  # int32 [N]
    qas_ids: list[str]  # per window
    doc_span_index: np.ndarray  # int32 [N]
    meta: dict[str, str] = field(default_factory=dict)
    path: Path | None = None

    def __len__(self) -> int:
        return int(self.start.shape[0])

    @property
    def where(self) -> str:
        return str(self.path) if self.path is not None else "the logits"

    def geometry(self) -> dict[str, int]:
        return {k: int(self.meta[k]) for k in GEOMETRY if k in self.meta}

    def aligned_to(self, features, qas_ids: Sequence[str], window: Mapping[str, int]) -> "WindowLogits":
        """These logits with one row per window of ``features``, in their order (``qas_ids`` per example).

        Refused (``LogitsFileError``, one line) when the geometry differs, a window is missing from the file, or
        a window's length differs (the windows were cut by another tokenizer).
        """
        differ = geometry_differences(self.meta, window)
        if differ:
            raise LogitsFileError(f"{self.where} was made with other windows: " + ", ".join(differ))
        row_of = {(q, int(d)): r for r, (q, d) in enumerate(zip(self.qas_ids, self.doc_span_index))}
        if len(row_of) != len(self):
            raise LogitsFileError(f"{self.where}: a (question id, window) pair appears twice")
        want_q = window_qas_ids(qas_ids, features.example_index)
        rows = np.fromiter((row_of.get((q, int(d)), -1) for q, d in zip(want_q, features.doc_span_index)),
                           dtype=np.int64, count=len(features))

        def first(bad: np.ndarray) -> tuple[int, str]:
            i = int(bad[0])
            return i, f"question {want_q[i]} window {int(features.doc_span_index[i])}"

        absent = np.flatnonzero(rows < 0)
        if absent.size:
            raise LogitsFileError(
                f"{self.where} lacks {absent.size} of these {len(features)} windows (first: {first(absent)[1]}); "
                f"it holds {len(self)} windows of {len(set(self.qas_ids))} questions from "
                f"{self.meta.get('squad_file', 'an unnamed file')}")
        other = np.flatnonzero(self.seq_len[rows] != features.seq_len)
        if other.size:
            i, which = first(other)
            raise LogitsFileError(
                f"{self.where}: {other.size} windows differ in length from these (first: {which}: "
                f"{int(self.seq_len[rows[i]])} tokens there, {int(features.seq_len[i])} here); were they cut by "
                f"another tokenizer?")
        if np.array_equal(rows, np.arange(len(self))):
            return self
        take = torch.from_numpy(rows)
        return WindowLogits(self.start.index_select(0, take), self.end.index_select(0, take), self.seq_len[rows],
                            want_q, self.doc_span_index[rows], self.meta, self.path)

    def gather(self, idx, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows ``idx`` cut to ``width`` columns, as float32 (CPU) tensors."""
        rows = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        return (self.start.index_select(0, rows)[:, :width].float(),
                self.end.index_select(0, rows)[:, :width].float())


def load_window_logits(path: str | Path) -> WindowLogits:
    """A logits file back (``LogitsFileError`` with the reason when it is not one)."""
    path = Path(path)
    meta = read_logits_metadata(path)
    with safe_open(str(path), framework="pt") as f:
        t = {k: f.get_tensor(k) for k in ("start_logits", "end_logits", "seq_len", "example_index",
                                            "doc_span_index")}
    start, end = t["start_logits"], t["end_logits"]
    n = int(start.shape[0]) if start.dim() == 2 else -1
    if start.shape != end.shape or n < 0 or any(int(t[k].shape[0]) != n for k in ("seq_len", "example_index",
                                                                                   "doc_span_index")):
        raise LogitsFileError(f"{path}: tensors of inconsistent shapes ({tuple(start.shape)}, {tuple(end.shape)})")
    try:
        qas_ids = json.loads(meta["qas_ids"])
    except (KeyError, ValueError) as e:
        raise LogitsFileError(f"{path}: no readable qas_ids in its header ({e})") from None
    example_index = t["example_index"].numpy()
    if n and (example_index.min() < 0 or example_index.max() >= len(qas_ids)):
        raise LogitsFileError(f"{path}: example_index outside its {len(qas_ids)} question ids")
    return WindowLogits(start.to(torch.float16), end.to(torch.float16), t["seq_len"].numpy().astype(np.int32),
                        window_qas_ids(qas_ids, example_index), t["doc_span_index"].numpy().astype(np.int32),
                        meta, path)
