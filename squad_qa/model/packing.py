"""Padding-free forward passes: a batch of windows packed back to back into one row.

Why: a padded batch is as wide as its longest window. Over a whole dataset sorted by length that
costs little, but a service's batch is a few requests of whatever lengths they have: on 500
dev-v1.1 questions from all articles, answered 8 at a time, 19.5% of the tokens the encoder saw
were padding, and 34% of the attention scores (attention grows with the square of the width).
`batching.length_batches` limits the waste by splitting such a batch, at the price of more and
smaller matrix products.

Packing removes the padding instead. The windows of a batch go into one row of T tokens
(T = the sum of their lengths):

    input_ids, token_type_ids   the windows' real tokens, one after the other       [1, T]
    position_ids                0..len-1 for each window: every window keeps its own
                                position embeddings, exactly as when it is alone     [1, T]
    cu_seq_lens_q               where each window starts, and T at the end           [n + 1]

Everything in BERT but attention works token by token (embeddings, the Linear layers, LayerNorm,
GELU, the QA head), so it is the same computation as padded, minus the padding. Attention must
not mix windows: `packed_attention` runs torch's scaled_dot_product_attention window by window
(a block-diagonal attention that is never materialised), and without a padding mask, which is
also the kernel's faster path. It plugs into transformers through its documented extension point
(`AttentionInterface.register`); calls that carry no `cu_seq_lens_q` (ordinary padded batches)
go to transformers' own SDPA attention, so a model set up for packing still runs padded batches.

Measured with benchmarks/bench_packing.py (the shipped model, 500 dev-v1.1 questions from all
articles answered 8 at a time in-process, float32, medians of 3 rounds; AMD EPYC, 2 cores, AVX2
only, torch 2.13.0): with transformers 5.25.0 packed 19.7 q/s against padded 17.6 (1.12x), and
transformers' own packed rows (5.25 finds the windows from the restarting position_ids and gives
SDPA a block-diagonal [T, T] mask) 11.0 q/s (0.63x): attention over the whole row, most of it
masked. With 5.17.0: packed 21.7 against 16.7 q/s (1.31x). Answers equal padded ones on all 500
in every case. In bf16 on a 2-core AVX512-BF16 AMD EPYC (Zen 4): 1.27x; predict.py's
length-sorted batches of 64, where padding is rare, 1.07x-1.16x. Used by QAReader on CPU for BERT
models once its probe passes (QAReader.probe_packing); on a GPU the per-window loop would be one
small kernel launch per window and layer, and padded batches stay.

Since 5.25, transformers also builds that block-diagonal mask whenever position_ids restart in a
row; `packed_mask` (the mask function registered with our attention) builds none for packed rows.

The per-window loop is a torch custom op (`squad_qa::window_attention`), so torch.compile treats
it as one opaque call whose output shape it knows, instead of tracing the loop and recompiling
for every new set of window lengths.
"""

from __future__ import annotations

import logging
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

# transformers' attention and mask registries are documented extension points, but the helpers
# reused here (its SDPA attention and mask builder) live in submodules that may move. If any of
# it is missing, packing is unavailable and every batch runs padded (one warning line).
try:
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import sdpa_mask
    UNAVAILABLE: str | None = None
except ImportError as e:  # pragma: no cover - depends on the installed transformers
    UNAVAILABLE = f"transformers has no {e.name or e}"

ATTENTION = "squad_qa_packed"  # the name under which packed_attention is registered
PACKABLE_MODEL_TYPES = ("bert",)  # absolute position embeddings indexed by position_ids


@torch.library.custom_op("squad_qa::window_attention", mutates_args=())
def window_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu_seqlens: torch.Tensor,
                     scale: float) -> torch.Tensor:
    """Attention within each window of a packed row: q, k, v ``[1, heads, T, d]`` -> ``[1, T, heads, d]``."""
    batch, heads, total, dim = query.shape
    out = query.new_empty(batch, total, heads, dim)
    bounds = cu_seqlens.tolist()
    for a, b in zip(bounds[:-1], bounds[1:]):
        out[:, a:b] = F.scaled_dot_product_attention(
            query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], scale=scale
        ).transpose(1, 2)
    return out


@window_attention.register_fake
def _window_attention_shape(query, key, value, cu_seqlens, scale):
    batch, heads, total, dim = query.shape
    return query.new_empty(batch, total, heads, dim)


def packed_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention function (see AttentionInterface): per-window attention for packed
    rows (``cu_seq_lens_q`` given), transformers' SDPA attention for anything else."""
    cu_seqlens = kwargs.get("cu_seq_lens_q")
    if cu_seqlens is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    if attention_mask is not None:
        raise ValueError("a packed row has no padding: call the model without attention_mask")
    if dropout and module.training:
        raise ValueError("packed attention is for inference (no attention dropout)")
    scale = float(scaling) if scaling is not None else query.shape[-1] ** -0.5
    return window_attention(query, key, value, cu_seqlens, scale), None


def packed_mask(*args, attention_mask=None, **kwargs):
    """transformers mask function for ``ATTENTION``: no padding mask, no mask at all.

    A packed row has no padding, and `packed_attention` keeps its windows apart itself. Since 5.25,
    transformers also spots packed rows from ``position_ids`` that restart and builds a block-
    diagonal ``[T, T]`` mask for them: never used here, and for predict.py's rows of 64 windows
    (T ~ 12k) T² booleans, about 140 MB, per forward pass. Padded batches keep their padding mask."""
    if attention_mask is None:
        return None
    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


if UNAVAILABLE is None:
    try:
        AttentionInterface.register(ATTENTION, packed_attention)
        AttentionMaskInterface.register(ATTENTION, packed_mask)
    except Exception as e:  # pragma: no cover - depends on the installed transformers
        UNAVAILABLE = f"transformers refused the attention registration ({type(e).__name__}: {e})"
if UNAVAILABLE is not None:  # pragma: no cover
    logger.warning("packed batches are off, every batch runs padded: %s", UNAVAILABLE)


def supports_packing(model: torch.nn.Module) -> bool:
    """True for the models whose forward pass `pack` inputs are known to reproduce: BERT, in a
    transformers whose BERT attention dispatches through AttentionInterface (5.x; 4.57's BERT has
    its own attention classes, which would attend across windows)."""
    members = getattr(model, "members", None)  # an ensemble (squad_qa/model/ensemble.py): every member must
    if members is not None:
        return len(members) > 0 and all(supports_packing(m) for m in members)
    config = getattr(model, "config", None)
    module = sys.modules.get(type(model).__module__)
    return (UNAVAILABLE is None and getattr(config, "model_type", None) in PACKABLE_MODEL_TYPES
            and hasattr(model, "set_attn_implementation")
            and getattr(module, "ALL_ATTENTION_FUNCTIONS", None) is not None)


def enable_packing(model: torch.nn.Module) -> torch.nn.Module:
    """Route the model's attention through `packed_attention` (in place; padded calls still work)."""
    if not supports_packing(model):
        raise ValueError(f"packing supports model types {PACKABLE_MODEL_TYPES} whose attention goes through "
                         f"transformers' AttentionInterface (transformers 5), not {type(model).__name__} "
                         f"(model type {getattr(getattr(model, 'config', None), 'model_type', None)!r})")
    model.set_attn_implementation(ATTENTION)
    return model


def disable_packing(model: torch.nn.Module) -> torch.nn.Module:
    """Back to transformers' own SDPA attention (in place): what a model that never packed runs."""
    model.set_attn_implementation("sdpa")
    return model


def check_packing_enabled(model: torch.nn.Module) -> None:
    """Refuse packed inputs for a model whose attention would run across the whole row."""
    used = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if used != ATTENTION:
        raise ValueError(f"packed batches need the model's attention set by enable_packing(); it uses {used!r}, "
                         "which would let the windows of a row attend to each other")


def compare_packed(run, seq_len: np.ndarray, tolerance: float) -> str | None:
    """What is wrong with packed logits, or None: ``run(packed)`` gives (start, end) logits of the
    same windows (lengths ``seq_len``) packed or padded. A raise or a difference beyond
    ``tolerance`` x the largest logit is a problem. The reader's tolerance (5 %) is far above
    float32 / bfloat16 / int8 rounding (which move its probe's logits by < 0.1) and far below what
    windows attending to each other do (whole units)."""
    t0 = time.perf_counter()
    try:
        padded, packed = run(False), run(True)
    except Exception as e:
        return f"a packed call raised {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    real = np.arange(padded[0].shape[1])[None, :] < np.asarray(seq_len)[:, None]
    diff = max(float(np.abs(a[real] - b[real]).max()) for a, b in zip(padded, packed))
    scale = max(1.0, *(float(np.abs(a[real]).max()) for a in padded))
    logger.debug("packing probe: max |packed - padded| %.2g (logits up to %.1f), %.1f ms",
                 diff, scale, 1e3 * (time.perf_counter() - t0))
    if not np.isfinite(diff) or diff > tolerance * scale:
        return f"packed logits differ from padded ones by {diff:.3g} (logits up to {scale:.3g})"
    return None


def pack(features, rows: np.ndarray) -> tuple[dict[str, torch.Tensor], np.ndarray, np.ndarray]:
    """The model inputs for windows ``rows`` of ``features``, packed into one row; also, for
    `unpack`, each packed token's window (as a position in ``rows``) and its column in its window."""
    rows = np.asarray(rows)
    lengths = features.seq_len[rows].astype(np.int64)
    width = int(lengths.max())
    real = np.arange(width)[None, :] < lengths[:, None]  # row-major: window after window
    position = np.broadcast_to(np.arange(width), real.shape)[real]
    window = np.broadcast_to(np.arange(len(rows))[:, None], real.shape)[real]
    cu = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(lengths, out=cu[1:])
    inputs = {
        "input_ids": torch.from_numpy(features.input_ids[rows, :width][real].astype(np.int64)[None]),
        "token_type_ids": torch.from_numpy(features.token_type_ids[rows, :width][real].astype(np.int64)[None]),
        "position_ids": torch.from_numpy(position.astype(np.int64)[None]),
        "cu_seq_lens_q": torch.from_numpy(cu),
    }
    return inputs, window, position


def unpack(packed: torch.Tensor, window: np.ndarray, position: np.ndarray, out: np.ndarray,
           out_rows: np.ndarray) -> None:
    """Scatter a packed ``[1, T]`` output (logits) back to ``out[out_rows[window], position]``."""
    out[np.asarray(out_rows)[window], position] = packed[0].float().cpu().numpy()
