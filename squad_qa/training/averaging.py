"""Weight averaging: EMA and SWA through ``torch.optim.swa_utils``.

EMA (``--ema_decay d``)
    ``AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(d), use_buffers=True)``; call
    ``ema.update_parameters(model)`` after every ``optimizer.step()``.  The first update copies the
    weights, then ``W_ema <- d * W_ema + (1 - d) * W``.

SWA (``--swa_start``, ``--swa_lr``)
    ``AveragedModel(model, use_buffers=True)`` keeps the running mean of the snapshots it is given
    (``update_parameters`` at each chosen step / epoch end) and :func:`make_swa_scheduler` wraps
    ``SWALR``, which anneals every group's LR to ``swa_lr`` over ``anneal_steps`` calls of its
    ``step()`` and then holds it.

Why no ``update_bn``
    ``torch.optim.swa_utils.update_bn`` recomputes BatchNorm running statistics for the averaged
    weights, because averaged weights do not match statistics collected for any single snapshot.
    BERT-style encoders use LayerNorm, which normalises each token with statistics of that very
    token at run time and keeps no running estimates, and they contain no BatchNorm; their only
    buffers are constant index tables (``position_ids``, ``token_type_ids``).  So there is nothing
    to recompute and the averaged model can be evaluated directly.  :func:`check_no_batchnorm`
    asserts this for a model given to us.

Integer buffers
    With ``use_buffers=True`` the averaging function is applied to the buffers too, and torch's
    EMA/SWA functions treat integer tensors as ``(d * a + (1 - d) * b)`` cast back to int, which
    truncates (with ``d = 0.9``, 147 of BERT's 512 ``position_ids`` come out one too low after
    six updates).
    Index buffers are not weights, so we average floating-point tensors only and *copy* integer /
    bool tensors from the live model (:func:`_floats_only`).

Evaluation, saving and checkpoints
    :func:`averaged_module` returns the plain averaged ``nn.Module`` (``averaged.module``, e.g. a
    ``BertForQuestionAnswering`` with ``save_pretrained``); :func:`averaged_state_dict` /
    :func:`load_averaged_state_dict` round-trip the full state (weights, buffers and the
    ``n_averaged`` counter) for resumable training checkpoints; it is a flat dict of tensors, so
    ``safetensors.torch.save_file`` / ``load_file`` store it without pickles.  A DDP-wrapped model
    is unwrapped before copying, so the averaged model is always the plain model;
    ``update_parameters`` accepts the wrapped or the plain model (same parameter order).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.optim.swa_utils import SWALR, AveragedModel, get_ema_multi_avg_fn, get_swa_multi_avg_fn

from squad_qa.training.optim import unwrap_model

logger = logging.getLogger(__name__)

__all__ = [
    "WeightAveraging",
    "make_ema",
    "make_swa",
    "make_swa_scheduler",
    "averaged_module",
    "averaged_state_dict",
    "load_averaged_state_dict",
    "check_no_batchnorm",
]

_MultiAvgFn = Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor | int], None]


def _floats_only(multi_avg_fn: _MultiAvgFn) -> _MultiAvgFn:
    """Average floating-point tensors with ``multi_avg_fn``; copy integer/bool ones (see module docstring)."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor | int) -> None:
        # AveragedModel calls us once per (device, dtype) group, so one check covers the list.
        if averaged and (torch.is_floating_point(averaged[0]) or torch.is_complex(averaged[0])):
            multi_avg_fn(averaged, current, num_averaged)
        else:  # a few integer buffers (BERT's position/token-type ids): a plain copy each
            for a, c in zip(averaged, current):
                a.copy_(c)

    return update


def check_no_batchnorm(model: nn.Module) -> None:
    """Raise if ``model`` has BatchNorm layers (their statistics would need ``update_bn``)."""
    bn = [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if bn:
        raise ValueError(f"model has BatchNorm layers {bn[:4]}; averaged weights would need update_bn()")


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    """EMA copy of ``model`` (unwrapped from DDP) with ``decay`` in (0, 1)."""
    if not 0.0 < decay < 1.0:
        raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
    model = unwrap_model(model)
    check_no_batchnorm(model)
    return AveragedModel(model, multi_avg_fn=_floats_only(get_ema_multi_avg_fn(decay)), use_buffers=True)


def make_swa(model: nn.Module) -> AveragedModel:
    """Running-mean (SWA) copy of ``model`` (unwrapped from DDP)."""
    model = unwrap_model(model)
    check_no_batchnorm(model)
    return AveragedModel(model, multi_avg_fn=_floats_only(get_swa_multi_avg_fn()), use_buffers=True)


def make_swa_scheduler(
    optimizer: torch.optim.Optimizer,
    swa_lr: float | Sequence[float],
    anneal_steps: int,
    anneal_strategy: str = "cos",
) -> SWALR:
    """``SWALR`` annealing each group's LR to ``swa_lr`` over ``anneal_steps`` scheduler steps.

    ``swa_lr`` may be one value for all groups or one per group (e.g. to keep LLRD ratios).
    """
    if anneal_steps < 0:
        raise ValueError(f"anneal_steps must be >= 0, got {anneal_steps}")
    lrs = [swa_lr] if isinstance(swa_lr, (int, float)) else list(swa_lr)
    if any(lr <= 0 for lr in lrs):
        raise ValueError(f"swa_lr must be > 0, got {swa_lr}")
    return SWALR(optimizer, swa_lr=swa_lr, anneal_epochs=anneal_steps, anneal_strategy=anneal_strategy)


def averaged_module(averaged: AveragedModel) -> nn.Module:
    """The plain averaged model, for evaluation and ``save_pretrained``."""
    return averaged.module


def averaged_state_dict(averaged: AveragedModel) -> dict[str, torch.Tensor]:
    """Full state of the averager: ``module.*`` weights and buffers plus ``n_averaged``."""
    return averaged.state_dict()


def load_averaged_state_dict(averaged: AveragedModel, state: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`averaged_state_dict` (strict: every key must match)."""
    if "n_averaged" not in state:
        raise ValueError("averaged-model state has no 'n_averaged' entry (not from averaged_state_dict?)")
    averaged.load_state_dict(state, strict=True)


class WeightAveraging:
    """The averaged weights a training run evaluates and saves: EMA, SWA, or none (the raw weights).

    EMA updates the average after every optimiser step. SWA leaves the regular schedule at ``swa_start_step``:
    from then on ``SWALR`` anneals the learning rate to ``swa_lr`` and the average takes the weights every
    ``swa_freq`` steps. ``swa_scheduler`` exists from the first SWA step on (a checkpoint records whether).
    """

    def __init__(self, model: nn.Module, *, ema_decay: float | None = None, swa_start_step: int | None = None,
                 swa_lr: float | None = None, swa_anneal_steps: int | None = None, swa_freq: int | None = None,
                 total_steps: int = 0) -> None:
        self.kind = "ema" if ema_decay is not None else "swa" if swa_start_step is not None else None
        self.swa_start_step = swa_start_step
        self.swa_lr, self.swa_freq = swa_lr, swa_freq or 1
        # The default annealing: a tenth of the SWA phase.
        self.swa_anneal_steps = swa_anneal_steps if swa_anneal_steps is not None else \
            max(1, (total_steps - (swa_start_step or 0)) // 10)
        self.swa_scheduler: SWALR | None = None
        self.averaged: AveragedModel | None = None
        if ema_decay is not None:
            self.averaged = make_ema(model, ema_decay)
            logger.info("EMA of the weights (decay %g): evaluation and the saved model use the averaged weights",
                        ema_decay)
        elif swa_start_step is not None:
            self.averaged = make_swa(model)
            logger.info("SWA from step %d of %d: evaluation and the saved model use the averaged weights",
                        swa_start_step, total_steps)

    def start_swa(self, optimizer: torch.optim.Optimizer) -> None:
        """The SWA learning-rate schedule (also before loading a checkpoint taken after SWA began: its
        constructor touches the learning rates, which the optimiser state then restores)."""
        self.swa_scheduler = make_swa_scheduler(optimizer, self.swa_lr, self.swa_anneal_steps)

    def in_swa_phase(self, step: int) -> bool:
        return self.swa_start_step is not None and step > self.swa_start_step

    def after_step(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                   lr_scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
        """After optimiser step ``step`` (1-based): advance the right schedule, update the average."""
        if self.in_swa_phase(step):
            if self.swa_scheduler is None:
                self.start_swa(optimizer)
            else:
                self.swa_scheduler.step()
            if (step - self.swa_start_step - 1) % self.swa_freq == 0:
                self.averaged.update_parameters(model)
            return
        lr_scheduler.step()
        if self.kind == "ema":
            self.averaged.update_parameters(model)

    def eval_model(self, model: nn.Module) -> tuple[nn.Module, str]:
        """(the weights to evaluate and save, "ema" / "swa" / "raw")."""
        if self.kind == "ema":
            return averaged_module(self.averaged), "ema"
        if self.kind == "swa":
            if int(self.averaged.n_averaged) > 0:
                return averaged_module(self.averaged), "swa"
            logger.warning("SWA never started (stopped before step %s): using the raw weights", self.swa_start_step)
        return model, "raw"


def flag_problems(args) -> list[str]:
    """What is wrong with the EMA / SWA flags; [] when nothing."""
    errors = []
    if args.ema_decay is not None and args.swa_start is not None:
        errors.append("--ema_decay and --swa_start cannot be combined: both replace the evaluated weights with an "
                      "average")
    if args.ema_decay is not None and not 0 < args.ema_decay < 1:
        errors.append("--ema_decay must be in (0, 1), e.g. 0.999")
    if args.swa_start is None:
        errors += [f"--{flag} needs --swa_start" for flag in ("swa_lr", "swa_anneal_steps", "swa_freq")
                   if getattr(args, flag) is not None]
        return errors
    if not args.swa_start > 0:
        errors.append("--swa_start must be a fraction in (0, 1) or an epoch count >= 1")
    if args.swa_lr is not None and not args.swa_lr > 0:
        errors.append("--swa_lr must be > 0")
    if args.swa_anneal_steps is not None and args.swa_anneal_steps < 0:
        errors.append("--swa_anneal_steps must be >= 0")
    if args.swa_freq is not None and args.swa_freq < 1:
        errors.append("--swa_freq must be >= 1")
    return errors
