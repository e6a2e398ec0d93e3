"""Ensembles of QA models that share windows: their raw logits averaged per window.

    ModelEnsemble([m1, m2])                one module: each member's raw start/end logits, averaged
    check_compatible(a, b)                 one-line EnsembleError when two readers' windows differ

An ensemble averages RAW logits (the start/end scores before any softmax), window by window and
position by position, and the averaged logits are decoded as one model's would be
(postprocess.postprocess_predictions). Averaging logits needs the members to see the very same
windows: the same tokenizer (vocabulary, normalisation, special-token layout) and the same window
geometry (max_seq_length / doc_stride / max_query_length). ``check_compatible`` refuses anything
else, naming both folders and what differs. Members may be of different architectures (e.g. a
BERT and an MPNet model over the same vocabulary): each gets only the inputs its forward accepts.

The logits of every window (``predict.py --save_logits FILE``) go to a logits file (logits_file.py),
the format train.py's ``--teacher FILE`` reads: an ensemble's averaged logits can be a teacher.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import torch

from squad_qa.model.batching import model_input_names
from squad_qa.data.features import special_layout


class EnsembleError(ValueError):
    """Models that cannot be averaged (their windows differ); a one-line message."""


class ModelEnsemble(torch.nn.Module):
    """Several QA models as one: ``forward`` runs every member on the same windows and returns the
    mean of their RAW start/end logits (float32), as a QuestionAnsweringModelOutput-like object.

    ``config`` is the first member's (packing and the window checks read it); ``members`` the models.
    """

    def __init__(self, members: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one model")
        self.members = torch.nn.ModuleList(members)
        # Which window inputs each member's forward takes: decided once, here, not per batch.
        self.member_inputs = [model_input_names(m) for m in members]

    @property
    def config(self):
        return self.members[0].config

    def set_attn_implementation(self, name: str) -> None:
        for m in self.members:
            m.set_attn_implementation(name)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **kwargs):
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        start = end = None
        for member, names in zip(self.members, self.member_inputs):
            inputs = {k: given[k] for k in names if given[k] is not None}
            out = member(**inputs, **kwargs)
            s, e = out.start_logits.float(), out.end_logits.float()
            start = s if start is None else start + s
            end = e if end is None else end + e
        n = len(self.members)
        return SimpleNamespace(start_logits=start / n, end_logits=end / n)


# ------------------------------------------------------------------------------ compatibility


def _tokenizer_parts(tokenizer) -> dict[str, Any]:
    """What decides a window's tokens: vocabulary, normalisation, pre-tokenisation, special layout."""
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    return {
        "vocabulary": tokenizer.get_vocab(),
        "normalizer": backend.get("normalizer"),
        "pre-tokenizer": backend.get("pre_tokenizer"),
        "tokenizer model": {k: v for k, v in (backend.get("model") or {}).items() if k != "vocab"},
        "special-token layout": special_layout(tokenizer),
        "padding id": tokenizer.pad_token_id,
    }


def check_compatible(first, second) -> None:
    """Raise a one-line EnsembleError when two readers (anything with ``tokenizer``, ``model_dir``
    and ``window``, a WindowConfig) would not cut the same windows; name both folders and what differs."""
    a, b = getattr(first, "model_dir", None), getattr(second, "model_dir", None)
    for field, x in first.window.to_dict().items():
        y = getattr(second.window, field)
        if x != y:
            raise EnsembleError(f"cannot ensemble {a} and {b}: their windows differ ({field} {x} vs {y}); "
                                f"give --{field} to use one geometry for both")
    pa, pb = _tokenizer_parts(first.tokenizer), _tokenizer_parts(second.tokenizer)
    for what in pa:
        if pa[what] != pb[what]:
            detail = ""
            if what == "vocabulary":
                va, vb = pa[what], pb[what]
                diff = len(set(va.items()) ^ set(vb.items()))
                detail = f" ({len(va)} vs {len(vb)} tokens, {diff} entries differ)"
            elif what in ("special-token layout", "padding id"):
                detail = f" ({pa[what]} vs {pb[what]})"
            raise EnsembleError(f"cannot ensemble {a} and {b}: their tokenizers differ in the {what}{detail}, "
                                f"so their windows and logits do not line up")
