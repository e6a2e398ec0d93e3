"""Span losses for extractive QA: (label-smoothed) cross-entropy and the R-Drop consistency term.

The model scores every position of the window twice, once as the answer start and once as the
answer end; the training target is one position for each (the CLS position, index 0, for an
impossible question or an answer outside the window).  As in ``BertForQuestionAnswering`` the
loss is the mean of the two cross-entropies::

    loss = (CE(start_logits, start_positions) + CE(end_logits, end_positions)) / 2

The softmax runs over all ``T`` positions of the (dynamically padded) batch, exactly like BERT's
head, so with ``label_smoothing=0`` :func:`span_loss` *is* ``F.cross_entropy`` (it calls it).

Label smoothing (``--label_smoothing ε``)
    The target distribution becomes ``q = (1 - ε) · onehot(y) + ε · u`` where ``u`` is uniform over
    the *valid* positions of the row, ``valid_mask`` (context tokens + CLS, i.e. ``p_mask == 0`` and
    not padding; see :func:`span_valid_mask`).  Spreading mass onto question tokens, [SEP] or
    padding would teach the model that an answer can start there, which it never can.  The loss is
    ``-Σ_j q_j log p_j = (1 - ε) · NLL(y) + ε · mean_{j valid} (-log p_j)``.  Without a mask the
    smoothing is uniform over all ``T`` positions and we defer to ``F.cross_entropy(...,
    label_smoothing=ε)``, which is the same formula.

R-Drop (``rdrop_alpha``)
    Two forward passes with different dropout masks give logits ``a`` and ``b``; the consistency
    term is the symmetric KL ``½ (KL(P_a ‖ P_b) + KL(P_b ‖ P_a))`` between the two start (and the
    two end) distributions, computed over the valid positions only (masked logits are removed from
    the softmax, so they cannot influence the term), summed over positions and averaged over the
    batch.  The full training loss (:func:`rdrop_span_loss`) is::

        loss = ½ (span_loss(a) + span_loss(b))
               + alpha · ½ (rdrop_kl(start_a, start_b) + rdrop_kl(end_a, end_b))

    i.e. the cross-entropy averaged over the two forwards plus ``alpha`` times the KL averaged
    over start and end (mirroring how :func:`span_loss` averages start and end).  The two
    forwards are best done as *one* forward of the batch repeated twice (``torch.cat([x, x])``,
    logits split with ``.chunk(2)``), as the R-Drop authors do: dropout masks differ per row, and
    one forward of 2B rows uses the accelerator better than two of B.

Knowledge distillation (``--teacher``, ``kd_alpha α``, ``kd_temperature T``)
    A teacher's start/end logits on the same windows give soft targets; :func:`kd_span_loss` is the mean
    over start and end of ``T² · KL(softmax(teacher/T) ‖ softmax(student/T))``, both softmaxes over the
    valid positions only (the same ``valid_mask`` as the hard loss; masked positions get probability 0 on
    both sides), in float32, averaged over the batch. ``T²`` keeps the gradient scale independent of ``T``
    (Hinton et al.). The training loss is ``α · KD + (1 − α) · hard`` where ``hard`` is the span loss
    (label-smoothed if asked). With R-Drop the KD term is averaged over the two dropout passes and the hard
    part is the whole R-Drop loss (CE of both passes + its KL): ``α · ½ (KD(a) + KD(b)) + (1 − α) · rdrop``.

Targets
    A target outside ``[0, T)`` is a bug upstream (features / dynamic padding), so we raise a
    ``ValueError`` naming the row and value instead of BERT's silent clamp to ``ignore_index``.
    With a ``valid_mask`` the target must also be a valid position.  This check reads one boolean
    back from the device per call (``check_targets=False`` skips it).
"""

from __future__ import annotations

import argparse
import contextlib

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["span_valid_mask", "span_loss", "rdrop_kl", "rdrop_span_loss", "kd_span_loss"]


def span_valid_mask(p_mask: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Positions that may hold an answer boundary: ``p_mask == 0`` (context tokens and CLS) and not padding.

    ``p_mask`` / ``attention_mask`` are ``[B, T]`` integer tensors from the features (already cut
    to the batch width ``T``).  Returns a ``[B, T]`` bool tensor.
    """
    valid = p_mask == 0
    if attention_mask is not None:
        if attention_mask.shape != p_mask.shape:
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} != p_mask shape {tuple(p_mask.shape)}"
            )
        valid = valid & (attention_mask != 0)
    return valid


def _check_inputs(
    name: str,
    logits: torch.Tensor,
    positions: torch.Tensor,
    valid_mask: torch.Tensor | None,
    check_targets: bool,
) -> None:
    if logits.dim() != 2:
        raise ValueError(f"{name}_logits must be [batch, seq_len], got shape {tuple(logits.shape)}")
    batch, width = logits.shape
    if positions.shape != (batch,):
        raise ValueError(
            f"{name}_positions must have shape ({batch},) to match {name}_logits {tuple(logits.shape)}, "
            f"got {tuple(positions.shape)}"
        )
    if valid_mask is not None and valid_mask.shape != logits.shape:
        raise ValueError(
            f"valid_mask shape {tuple(valid_mask.shape)} != {name}_logits shape {tuple(logits.shape)}"
        )
    if not check_targets:
        return
    out_of_range = (positions < 0) | (positions >= width)
    bad = out_of_range
    if valid_mask is not None:
        # Gather only where in range, so the index itself is legal.
        safe = positions.clamp(0, width - 1).unsqueeze(1)
        bad = bad | ~valid_mask.gather(1, safe).squeeze(1)
    if bool(bad.any()):  # one device->host read per call; see module docstring
        rows = torch.nonzero(bad).flatten().tolist()
        details = []
        for r in rows[:5]:
            pos = int(positions[r])
            why = f"outside [0, {width})" if bool(out_of_range[r]) else "not a valid (context/CLS) position"
            details.append(f"row {r}: {name}_position={pos} {why}")
        more = f" (+{len(rows) - 5} more)" if len(rows) > 5 else ""
        raise ValueError(f"bad {name} targets in batch of {batch}, seq_len {width}: " + "; ".join(details) + more)


def _smoothed_ce(
    logits: torch.Tensor,
    targets: torch.Tensor,
    valid_mask: torch.Tensor | None,
    label_smoothing: float,
) -> torch.Tensor:
    if label_smoothing == 0.0:
        # Exactly the BertForQuestionAnswering loss, bit for bit.
        return F.cross_entropy(logits, targets)
    if valid_mask is None:
        # Uniform over all T positions: torch's own label smoothing is this very formula.
        return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
    # Smoothing in float32 even under autocast: the mean of log-probs is sensitive to bf16 rounding.
    logp = F.log_softmax(logits.float(), dim=-1)
    nll = -logp.gather(1, targets.unsqueeze(1)).squeeze(1)
    mask = valid_mask.to(logp.dtype)
    # Each row has >= 1 valid position (its target; checked unless check_targets=False).
    n_valid = mask.sum(dim=1).clamp_min(1.0)
    # torch.where rather than multiplying: -log p can be huge at masked positions, never nan, but
    # keeping them out of the sum entirely makes the "no mass on masked positions" property exact.
    uniform = -torch.where(valid_mask, logp, torch.zeros_like(logp)).sum(dim=1) / n_valid
    return ((1.0 - label_smoothing) * nll + label_smoothing * uniform).mean()


def span_loss(
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    start_positions: torch.Tensor,
    end_positions: torch.Tensor,
    valid_mask: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    *,
    check_targets: bool = True,
) -> torch.Tensor:
    """``(CE_start + CE_end) / 2`` with optional label smoothing over ``valid_mask`` (see module docstring).

    Args:
        start_logits, end_logits: ``[B, T]`` logits.
        start_positions, end_positions: ``[B]`` integer targets in ``[0, T)``.
        valid_mask: ``[B, T]`` bool, positions that may receive smoothing mass (context + CLS).
            ``None``: all ``T`` positions.  Only used when ``label_smoothing > 0`` (and for the
            target check).
        label_smoothing: ``ε`` in ``[0, 1)``; 0 gives exactly ``F.cross_entropy``.
        check_targets: raise ``ValueError`` on targets outside ``[0, T)`` or on masked positions.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    _check_inputs("start", start_logits, start_positions, valid_mask, check_targets)
    _check_inputs("end", end_logits, end_positions, valid_mask, check_targets)
    start_loss = _smoothed_ce(start_logits, start_positions, valid_mask, label_smoothing)
    end_loss = _smoothed_ce(end_logits, end_positions, valid_mask, label_smoothing)
    return (start_loss + end_loss) / 2


def _masked_log_softmax(logits: torch.Tensor, valid_mask: torch.Tensor | None) -> torch.Tensor:
    """log-softmax over each row's valid positions (all of them when ``valid_mask`` is None).

    A finite fill (not -inf) keeps log p finite at masked positions, so 0 * (log p - log q) is 0 rather
    than nan, in the forward and in the backward; ``_sum_valid`` then drops those positions exactly.
    """
    if valid_mask is not None:
        logits = logits.masked_fill(~valid_mask, torch.finfo(logits.dtype).min)
    return F.log_softmax(logits, dim=-1)


def _sum_valid(per_pos: torch.Tensor, valid_mask: torch.Tensor | None) -> torch.Tensor:
    """Sum over the valid positions of each row, mean over the batch."""
    if valid_mask is not None:
        per_pos = torch.where(valid_mask, per_pos, torch.zeros_like(per_pos))
    return per_pos.sum(dim=-1).mean()


def rdrop_kl(
    logits_a: torch.Tensor,
    logits_b: torch.Tensor,
    valid_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric KL ``½ (KL(P_a ‖ P_b) + KL(P_b ‖ P_a))``, summed over positions, mean over the batch.

    ``P_a``/``P_b`` are softmaxes over the valid positions of each row only (masked logits are
    replaced by a huge negative number, so they get probability 0 and their values never matter).
    Computed in float32.  Zero iff the two distributions agree on the valid positions.
    """
    if logits_a.shape != logits_b.shape or logits_a.dim() != 2:
        raise ValueError(
            f"rdrop_kl needs two [batch, seq_len] logits of equal shape, got "
            f"{tuple(logits_a.shape)} and {tuple(logits_b.shape)}"
        )
    if valid_mask is not None and valid_mask.shape != logits_a.shape:
        raise ValueError(f"valid_mask shape {tuple(valid_mask.shape)} != logits shape {tuple(logits_a.shape)}")
    logp_a = _masked_log_softmax(logits_a.float(), valid_mask)
    logp_b = _masked_log_softmax(logits_b.float(), valid_mask)
    # (p_a - p_b)(log p_a - log p_b) = p_a log(p_a/p_b) + p_b log(p_b/p_a): both KLs in one term.
    return 0.5 * _sum_valid(((logp_a.exp() - logp_b.exp()) * (logp_a - logp_b)), valid_mask)


def rdrop_span_loss(
    start_logits_a: torch.Tensor,
    end_logits_a: torch.Tensor,
    start_logits_b: torch.Tensor,
    end_logits_b: torch.Tensor,
    start_positions: torch.Tensor,
    end_positions: torch.Tensor,
    valid_mask: torch.Tensor | None = None,
    alpha: float = 1.0,
    label_smoothing: float = 0.0,
    *,
    check_targets: bool = True,
) -> torch.Tensor:
    """R-Drop training loss for two forwards ``a``/``b`` of the same batch (formula in the module docstring)."""
    ce = 0.5 * (
        span_loss(start_logits_a, end_logits_a, start_positions, end_positions, valid_mask,
                  label_smoothing, check_targets=check_targets)
        + span_loss(start_logits_b, end_logits_b, start_positions, end_positions, valid_mask,
                    label_smoothing, check_targets=False)  # same targets: checked once
    )
    kl = 0.5 * (rdrop_kl(start_logits_a, start_logits_b, valid_mask) + rdrop_kl(end_logits_a, end_logits_b, valid_mask))
    return ce + alpha * kl


def _kd_kl(student: torch.Tensor, teacher: torch.Tensor, valid_mask: torch.Tensor | None,
           temperature: float) -> torch.Tensor:
    logp_s = _masked_log_softmax(student.float() / temperature, valid_mask)
    logp_t = _masked_log_softmax(teacher.float() / temperature, valid_mask)
    return _sum_valid(logp_t.exp() * (logp_t - logp_s), valid_mask)


def kd_span_loss(
    student_start: torch.Tensor,
    student_end: torch.Tensor,
    teacher_start: torch.Tensor,
    teacher_end: torch.Tensor,
    valid_mask: torch.Tensor | None = None,
    temperature: float = 2.0,
) -> torch.Tensor:
    """``T² · ½ (KL(P_t^start ‖ P_s^start) + KL(P_t^end ‖ P_s^end))`` over the valid positions, batch mean.

    ``P = softmax(logits / T)`` over the positions where ``valid_mask`` is True (all ``T`` positions when it
    is None); masked positions get probability 0 for both teacher and student, so their logits never
    matter. Float32 whatever the input dtype. The teacher side carries no gradient if the teacher logits
    do not (cached logits never do).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    for name, a, b in (("start", student_start, teacher_start), ("end", student_end, teacher_end)):
        if a.shape != b.shape or a.dim() != 2:
            raise ValueError(f"kd_span_loss: student and teacher {name} logits must be equal [batch, seq_len], "
                             f"got {tuple(a.shape)} and {tuple(b.shape)}")
        if valid_mask is not None and valid_mask.shape != a.shape:
            raise ValueError(f"valid_mask shape {tuple(valid_mask.shape)} != {name} logits shape {tuple(a.shape)}")
    kl = 0.5 * (_kd_kl(student_start, teacher_start, valid_mask, temperature)
                + _kd_kl(student_end, teacher_end, valid_mask, temperature))
    return (temperature ** 2) * kl


# ----------------------------------------------------------------------------------------------------------------
# The training loss of a batch: model forward (autocast) -> float32 logits -> span loss (+ R-Drop)


def compute_loss(model, batch: dict[str, torch.Tensor], args: argparse.Namespace,
                 amp: contextlib.AbstractContextManager) -> torch.Tensor:
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}  # MPNet: no types
    valid = batch.get("valid_mask")
    rdrop = args.rdrop_alpha > 0
    if rdrop:
        # R-Drop: the batch twice in one forward; dropout masks differ per row, so the two halves are two
        # dropout samples of the same inputs (and DDP sees one forward per backward, as it requires).
        inputs = {k: torch.cat([v, v]) for k, v in inputs.items()}
    with amp:
        out = model(**inputs)
    # The loss in float32 whatever the autocast dtype: log-softmax over up to 384 logits wants the range.
    start, end = out.start_logits.float(), out.end_logits.float()
    sp, ep = batch["start_positions"], batch["end_positions"]
    # check_targets=False: the targets were checked once on the host (check_train_targets); checking them here
    # would wait for the device on every micro-batch.
    if rdrop:
        (s1, s2), (e1, e2) = start.chunk(2), end.chunk(2)
        hard = rdrop_span_loss(s1, e1, s2, e2, sp, ep, valid_mask=valid, alpha=args.rdrop_alpha,
                               label_smoothing=args.label_smoothing, check_targets=False)
        passes = ((s1, e1), (s2, e2))
    else:
        hard = span_loss(start, end, sp, ep, valid_mask=valid, label_smoothing=args.label_smoothing,
                         check_targets=False)
        passes = ((start, end),)
    if "teacher_start" not in batch:  # --teacher: the batch carries the teacher's logits (distill.py)
        return hard
    # The KD term of each dropout pass, averaged (x / 1 and (a + b) / 2: bit-identical to writing each case out).
    ts, te = batch["teacher_start"], batch["teacher_end"]
    soft = sum(kd_span_loss(s, e, ts, te, valid, args.kd_temperature) for s, e in passes) / len(passes)
    return args.kd_alpha * soft + (1.0 - args.kd_alpha) * hard


def check_train_targets(features) -> None:
    """Every training target inside its window and on a position an answer may take (CLS or context).

    Once, on the host, for the whole set: the loss then skips its own per-batch check (a device sync).
    """
    rows = np.arange(len(features))
    for name, pos in (("start_position", features.start_position), ("end_position", features.end_position)):
        pos = np.asarray(pos)
        bad = (pos < 0) | (pos >= features.seq_len)
        bad |= features.p_mask[rows, np.clip(pos, 0, features.p_mask.shape[1] - 1)] != 0
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"training feature {i}: {name} {int(pos[i])} is outside the window's context "
                             f"({int(bad.sum())} features like it); the features cache may be damaged")


def flag_problems(args: argparse.Namespace) -> list[str]:
    """What is wrong with the loss flags (label smoothing, R-Drop); [] when nothing."""
    errors = []
    if not 0 <= args.label_smoothing < 1:
        errors.append("--label_smoothing must be in [0, 1)")
    if args.rdrop_alpha < 0:
        errors.append("--rdrop_alpha must be >= 0")
    return errors
