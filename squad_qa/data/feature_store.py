"""The windows of a conversion, column-wise, and their ``.npz`` cache.

:class:`SquadFeatures` holds every window of a set of examples as numpy arrays (one row per window),
which is what training batches and the decoder read; indexing it gives one run_squad-style
:class:`InputFeatures`, for tests and for reading a window by eye. ``save``/``load`` write it as an
uncompressed ``.npz`` without pickles, and :func:`cache_key` names such a file by everything that went
into it, so that a cached conversion is reused only for the same examples, tokenizer and parameters.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Sequence

import numpy as np

from squad_qa.files.atomic import atomic_file
from squad_qa.data.squad import SquadExample

# Bump when the arrays or their meaning change: old cache files then no longer match any key.
_CACHE_FORMAT = 1


@dataclass
class InputFeatures:
    """One window, with run_squad's field names (a view built from :class:`SquadFeatures`)."""

    unique_id: int
    example_index: int
    doc_span_index: int
    tokens: list[str]
    token_to_orig_map: dict[int, int]
    token_is_max_context: dict[int, bool]
    input_ids: list[int]
    attention_mask: list[int]
    token_type_ids: list[int]
    cls_index: int
    p_mask: list[int]
    paragraph_len: int
    start_position: int
    end_position: int
    is_impossible: bool
    offsets: list[tuple[int, int]]


@dataclass
class SquadFeatures:
    """All windows of a set of examples, column-wise. ``N`` windows of ``L = max_seq_length`` tokens.

    Per-token arrays are ``[N, L]`` (``offsets`` is ``[N, L, 2]``); per-window arrays are ``[N]``.
    Outside the context part of a window ``token_to_orig`` and ``offsets`` are -1 and
    ``token_is_max_context`` is False. ``p_mask`` is 1 where an answer cannot be (question, [SEP],
    padding) and 0 on context tokens and on [CLS] (the no-answer position).
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray
    p_mask: np.ndarray
    token_is_max_context: np.ndarray
    token_to_orig: np.ndarray
    offsets: np.ndarray
    seq_len: np.ndarray
    unique_id: np.ndarray
    example_index: np.ndarray
    doc_span_index: np.ndarray
    cls_index: np.ndarray
    context_start: np.ndarray
    paragraph_len: np.ndarray
    start_position: np.ndarray
    end_position: np.ndarray
    is_impossible: np.ndarray
    max_seq_length: int
    vocab: np.ndarray | None = None  # id -> token string, for InputFeatures.tokens

    @classmethod
    def allocate(cls, n: int, max_seq_length: int, pad_id: int = 0) -> "SquadFeatures":
        """``n`` empty windows: padding everywhere, nothing answerable, no context (-1 maps)."""
        N, L = n, max_seq_length
        return cls(
            input_ids=np.full((N, L), pad_id, np.int32),
            attention_mask=np.zeros((N, L), np.int8),
            token_type_ids=np.zeros((N, L), np.int8),
            p_mask=np.ones((N, L), np.int8),
            token_is_max_context=np.zeros((N, L), bool),
            token_to_orig=np.full((N, L), -1, np.int32),
            offsets=np.full((N, L, 2), -1, np.int32),
            seq_len=np.zeros(N, np.int32),
            unique_id=1_000_000_000 + np.arange(N, dtype=np.int64),
            example_index=np.zeros(N, np.int32),
            doc_span_index=np.zeros(N, np.int32),
            cls_index=np.zeros(N, np.int32),
            context_start=np.zeros(N, np.int32),
            paragraph_len=np.zeros(N, np.int32),
            start_position=np.zeros(N, np.int32),
            end_position=np.zeros(N, np.int32),
            is_impossible=np.zeros(N, bool),
            max_seq_length=L,
        )

    @property
    def _arrays(self) -> list[str]:
        return [f.name for f in fields(self) if f.name not in ("max_seq_length", "vocab")]

    def __len__(self) -> int:
        return len(self.unique_id)

    def __getitem__(self, i: int) -> InputFeatures:
        if not -len(self) <= i < len(self):
            raise IndexError(f"feature index {i} out of range for {len(self)} features")
        n = int(self.seq_len[i])
        ctx = np.flatnonzero(self.token_to_orig[i] >= 0)
        ids = self.input_ids[i].tolist()
        return InputFeatures(
            unique_id=int(self.unique_id[i]),
            example_index=int(self.example_index[i]),
            doc_span_index=int(self.doc_span_index[i]),
            tokens=[] if self.vocab is None else self.vocab[self.input_ids[i, :n]].tolist(),
            token_to_orig_map={int(p): int(self.token_to_orig[i, p]) for p in ctx},
            token_is_max_context={int(p): bool(self.token_is_max_context[i, p]) for p in ctx},
            input_ids=ids,
            attention_mask=self.attention_mask[i].tolist(),
            token_type_ids=self.token_type_ids[i].tolist(),
            cls_index=int(self.cls_index[i]),
            p_mask=self.p_mask[i].tolist(),
            paragraph_len=int(self.paragraph_len[i]),
            start_position=int(self.start_position[i]),
            end_position=int(self.end_position[i]),
            is_impossible=bool(self.is_impossible[i]),
            offsets=[tuple(o) for o in self.offsets[i].tolist()],
        )

    def select(self, indices) -> "SquadFeatures":
        """A subset of windows (e.g. a DDP shard); ``example_index`` still points into the same examples."""
        indices = np.asarray(indices)
        return SquadFeatures(
            **{name: getattr(self, name)[indices] for name in self._arrays},
            max_seq_length=self.max_seq_length,
            vocab=self.vocab,
        )

    @classmethod
    def concat(cls, parts: Sequence["SquadFeatures"]) -> "SquadFeatures":
        """The windows of several conversions one after another (all of the same max_seq_length);
        ``example_index`` is left as each part had it (the model does not read it)."""
        if len({p.max_seq_length for p in parts}) != 1:
            raise ValueError("cannot concatenate windows of different max_seq_length")
        if len(parts) == 1:
            return parts[0]
        return cls(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in parts[0]._arrays},
                   max_seq_length=parts[0].max_seq_length, vocab=parts[0].vocab)

    def save(self, path: str | Path) -> None:
        """Write an uncompressed ``.npz`` atomically (no pickle inside)."""
        arrays = {name: getattr(self, name) for name in self._arrays}
        arrays["max_seq_length"] = np.asarray(self.max_seq_length)
        if self.vocab is not None:
            arrays["vocab"] = self.vocab.astype(str)
        with atomic_file(path, ".npz.tmp") as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "SquadFeatures":
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        max_seq_length = int(data.pop("max_seq_length"))
        vocab = data.pop("vocab", None)
        return cls(**data, max_seq_length=max_seq_length, vocab=vocab)


def _tokenizer_fingerprint(tokenizer) -> str:
    backend = tokenizer.backend_tokenizer.to_str()
    return hashlib.sha256(f"{type(tokenizer).__name__}\n{backend}".encode()).hexdigest()


def _examples_fingerprint(examples: Sequence[SquadExample]) -> str:
    h = hashlib.sha256()
    last_context = None
    for ex in examples:
        if ex.context_text is not last_context:  # contexts are shared per paragraph: hash each once
            h.update(b"\x00C" + ex.context_text.encode())
            last_context = ex.context_text
        h.update(
            f"\x00Q{ex.qas_id}\x01{ex.question_text}\x01{ex.is_impossible}\x01{ex.answer_text}\x01"
            f"{ex.start_position}\x01{ex.end_position}".encode()
        )
    return h.hexdigest()


def cache_key(examples, tokenizer, max_seq_length, doc_stride, max_query_length, is_training) -> str:
    """Key of a feature cache file: what was read, the tokenizer, and every parameter."""
    params = json.dumps(
        dict(format=_CACHE_FORMAT, max_seq_length=max_seq_length, doc_stride=doc_stride,
             max_query_length=max_query_length, is_training=bool(is_training)),
        sort_keys=True,
    )
    h = hashlib.sha256()
    for part in (_examples_fingerprint(examples), _tokenizer_fingerprint(tokenizer), params):
        h.update(part.encode())
    return h.hexdigest()[:32]

