"""Ensembles of QA models that share windows, and the saved-logits file (--save_logits; not yet a --teacher file).

    ModelEnsemble([m1, m2])                one module: each member's raw start/end logits, averaged
    check_compatible(a, b)                 one-line EnsembleError when two readers' windows differ
    save_logits(path, start, end, ...)     the (averaged) logits of every window, safetensors float16
    load_logits(path)                      (tensors, metadata) back from such a file

An ensemble averages RAW logits (the start/end scores before any softmax), window by window and
position by position, and the averaged logits are decoded as one model's would be
(postprocess.postprocess_predictions). Averaging logits needs the members to see the very same
windows: the same tokenizer (vocabulary, normalisation, special-token layout) and the same window
geometry (max_seq_length / doc_stride / max_query_length). ``check_compatible`` refuses anything
else, naming both folders and what differs. Members may be of different architectures (e.g. a
BERT and an MPNet model over the same vocabulary): each gets only the inputs its forward accepts.

Saved-logits file (``predict.py --save_logits FILE``; ``save_logits``), a safetensors file:

    tensors
        start_logits    float16 [N, L]   the (averaged) start logits of window n at position p
        end_logits      float16 [N, L]   the same for the end
        seq_len         int32   [N]      real tokens of each window (columns >= seq_len are 0, unused)
        example_index   int32   [N]      the window's question: its index in the predicted examples
        doc_span_index  int32   [N]      the window's number within its question's windows
    metadata (safetensors' string -> string header)
        format          "squad_qa.logits/1"
        windows         N, as a decimal string
        max_seq_length, doc_stride, max_query_length    the window geometry (decimal strings)
        models          JSON list of the model folders whose logits were averaged (one: no ensemble)
        averaging       "mean of raw logits"
        qas_ids         JSON list: the question id of each example_index
        predict_file    the SQuAD file the windows were cut from (when known)

N windows in the order features.convert_examples_to_features builds them for those examples with
that geometry and tokenizer (question after question, each question's windows in order), L =
max_seq_length. The windows do not depend on is_training, so a training run that cuts the same
file with the same tokenizer and geometry gets the same windows in the same order; a teacher
reader should check windows / geometry / seq_len / qas_ids against its own features before use.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save_file

from squad_qa.batching import model_input_names
from squad_qa.features import special_layout

LOGITS_FORMAT = "squad_qa.logits/1"


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
    and the three window fields) would not cut the same windows; name both folders and what differs."""
    a, b = getattr(first, "model_dir", None), getattr(second, "model_dir", None)
    for field in ("max_seq_length", "doc_stride", "max_query_length"):
        x, y = getattr(first, field), getattr(second, field)
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


# ------------------------------------------------------------------------------ saved logits


def save_logits(path: str | Path, start_logits: np.ndarray, end_logits: np.ndarray, features, *,
                window: Mapping[str, int], models: Sequence[str | Path], qas_ids: Sequence[str] | None = None,
                predict_file: str | Path | None = None) -> Path:
    """Write the logits of every window (see the module docstring for the layout); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(features)
    if start_logits.shape != end_logits.shape or start_logits.shape[0] != n:
        raise ValueError(f"logits {start_logits.shape} / {end_logits.shape} do not match {n} windows")
    tensors = {
        "start_logits": np.ascontiguousarray(start_logits, dtype=np.float16),
        "end_logits": np.ascontiguousarray(end_logits, dtype=np.float16),
        "seq_len": np.ascontiguousarray(features.seq_len, dtype=np.int32),
        "example_index": np.ascontiguousarray(features.example_index, dtype=np.int32),
        "doc_span_index": np.ascontiguousarray(features.doc_span_index, dtype=np.int32),
    }
    metadata = {
        "format": LOGITS_FORMAT,
        "windows": str(n),
        **{k: str(int(window[k])) for k in ("max_seq_length", "doc_stride", "max_query_length")},
        "models": json.dumps([str(m) for m in models]),
        "averaging": "mean of raw logits",
        "qas_ids": json.dumps(list(qas_ids) if qas_ids is not None else []),
    }
    if predict_file is not None:
        metadata["predict_file"] = str(predict_file)
    save_file(tensors, str(path), metadata=metadata)
    return path


def load_logits(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors (float16 logits as stored) and metadata of a ``save_logits`` file."""
    with safe_open(str(path), framework="np") as f:
        metadata = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if metadata.get("format") != LOGITS_FORMAT:
        raise ValueError(f"{path}: not a squad_qa logits file (format {metadata.get('format')!r})")
    return tensors, metadata
