"""Window geometry: how a (question, context) pair is cut into model inputs of a fixed size.

``WindowConfig`` is the one owner of run_squad's 384 / 128 / 64 and of their checks: training's flags
(config.py), the training record (squad_qa.json) and the reader (QAReader.from_pretrained) all go
through it. ``SpecialLayout`` is where a tokenizer's own special tokens sit around the pair (3 for BERT,
4 for RoBERTa / MPNet); features.special_layout reads it from a tokenizer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from squad_qa.files.run_record import run_args

BERT_SPECIAL_TOKENS = 3  # [CLS] question [SEP] context [SEP]


@dataclass(frozen=True)
class WindowConfig:
    """Window geometry: windows of ``max_seq_length`` tokens, ``doc_stride`` context tokens apart,
    questions cut to ``max_query_length`` tokens. The defaults are run_squad's.

    Not validated on construction: training wants every problem of its flags in one report
    (:meth:`problems`), the reader wants to refuse a model outright (:meth:`validate`).
    """

    max_seq_length: int = 384
    doc_stride: int = 128
    max_query_length: int = 64

    def problems(self, max_positions: int | None = None, n_special: int = BERT_SPECIAL_TOKENS) -> list[str]:
        """What makes windows impossible with this geometry (empty when usable). ``max_positions``:
        the model's number of position embeddings, when known; ``n_special``: special tokens in a
        window (3 for BERT, 4 for RoBERTa / MPNet: ``SpecialLayout.n_special``)."""
        out = []
        if self.max_query_length < 1:
            out.append(f"max_query_length must be >= 1, got {self.max_query_length}")
        if self.max_seq_length < self.max_query_length + n_special + 1:
            out.append(
                f"max_seq_length ({self.max_seq_length}) must leave room for the question (max_query_length "
                f"{self.max_query_length}), {n_special} special tokens and at least one context token"
            )
        else:  # the stride is only judged against a window that has room for context at all
            room = context_room(self.max_seq_length, self.max_query_length, n_special)
            if not 0 < self.doc_stride < room:
                out.append(
                    f"doc_stride ({self.doc_stride}) must be in 1..{room - 1}: windows hold at least "
                    f"max_seq_length - max_query_length - {n_special} = {room} context tokens, and a stride that is "
                    f"not smaller than that would skip context between windows"
                )
        if max_positions is not None and self.max_seq_length > max_positions:
            out.append(f"max_seq_length ({self.max_seq_length}) exceeds the model's {max_positions} "
                       f"position embeddings")
        return out

    def validate(self, max_positions: int | None = None, n_special: int = BERT_SPECIAL_TOKENS) -> WindowConfig:
        """Raise one ValueError naming every problem (see :meth:`problems`); return self otherwise."""
        problems = self.problems(max_positions, n_special)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_args(cls, args: Any) -> WindowConfig:
        """A run's geometry from its parsed run_squad flags (--max_seq_length, --doc_stride, --max_query_length)."""
        return cls(args.max_seq_length, args.doc_stride, args.max_query_length)

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None, **overrides: int | None) -> WindowConfig:
        """The geometry a model was trained with, from its training record (squad_qa.json).

        The values are read from the record's flags (under ``training_args``, ``args`` or
        ``train_args``), or from ``record`` itself when it has none of those (e.g. :meth:`to_dict`'s
        output). ``overrides`` that are given (not None or 0) win, e.g. command-line flags; a value
        that is missing, None or 0 everywhere falls back to the default.
        """
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise TypeError(f"unknown window parameter(s): {', '.join(unknown)}")
        record = record or {}
        args = run_args(record) or record  # the record's flags, or a flat mapping such as to_dict()'s
        defaults = cls()
        return cls(**{name: int(overrides.get(name) or args.get(name) or getattr(defaults, name))
                      for name in names})




@dataclass(frozen=True)
class SpecialLayout:
    """Where a tokenizer's own special tokens go around a (question, context) pair, read from its
    pair template (``special_layout``): ``prefix`` question ``middle`` context ``suffix``.

    BERT: ``[CLS] q [SEP] c [SEP]`` (prefix (101,), middle (102,), suffix (102,)), token types 0 up
    to and including the first [SEP], 1 on the context and the last [SEP]. RoBERTa / MPNet (HF's
    convention for run_squad's layout): ``<s> q </s></s> c </s>``, all token types 0.
    """

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    prefix_types: tuple[int, ...]
    question_type: int
    middle_types: tuple[int, ...]
    context_type: int
    suffix_types: tuple[int, ...]

    @property
    def n_special(self) -> int:
        """Special tokens in a window: 3 for BERT, 4 for RoBERTa / MPNet (the double separator)."""
        return len(self.prefix) + len(self.middle) + len(self.suffix)


def context_room(max_seq_length: int, query_len: int, n_special: int = BERT_SPECIAL_TOKENS) -> int:
    """Context tokens a window holds: [CLS] query [SEP] context [SEP] in max_seq_length tokens
    (``n_special`` = 3 special tokens; 4 for RoBERTa / MPNet's ``<s> q </s></s> c </s>``)."""
    return max_seq_length - query_len - n_special


def count_windows(n_pieces: int, query_len: int, max_seq_length: int, doc_stride: int,
                  n_special: int = BERT_SPECIAL_TOKENS) -> int:
    """Windows a context of ``n_pieces`` word pieces is cut into next to a ``query_len``-piece question:
    they start at 0, stride, 2*stride, ... until one reaches the end of the context."""
    if n_pieces <= 0:
        return 0
    return 1 + max(0, -(-(n_pieces - context_room(max_seq_length, query_len, n_special)) // doc_stride))
