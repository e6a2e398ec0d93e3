"""Adversarial training on the embedding matrix: FGM and PGD.

Both perturb the *weights* of the (word) embedding table in the direction of the loss gradient,
run a second forward/backward on the perturbed model so its gradient is added to the clean one,
and then put the exact original weights back before ``optimizer.step()``.

FGM (Miyato et al., one step)::

    loss = model(**batch).loss; loss.backward()
    fgm.attack()                       # W <- W + eps * g / ||g||
    model(**batch).loss.backward()     # adversarial gradient accumulates onto the clean one
    fgm.restore()                      # W <- W (bit for bit, from a copy)
    optimizer.step(); optimizer.zero_grad()

PGD (Madry et al., ``k`` projected steps; the usual PGD-for-BERT recipe)::

    loss.backward()
    pgd.backup_grad()                  # the clean gradient of every parameter
    for t in range(k):
        pgd.attack(is_first_attack=(t == 0))   # r += alpha * g/||g||, then project onto ||r|| <= eps
        if t != k - 1:
            model.zero_grad()          # intermediate steps only steer the perturbation
        else:
            pgd.restore_grad()         # final step: clean gradient + last adversarial gradient
        model(**batch).loss.backward()
    pgd.restore()
    optimizer.step(); optimizer.zero_grad()

Details:

* ``||g||`` is the Frobenius norm of the whole gradient matrix (as in the recipe).  When it is 0
  or not finite (e.g. an overflowing fp16 step) the step is skipped (``r = 0`` for that step).
  The decision is taken on the device with ``torch.where``, so no host synchronisation is needed.
* ``param_name`` is a substring of the parameter names (default ``"word_embeddings"``); with a
  DDP-wrapped model the names start with ``"module."``, which a substring match handles.  A
  pattern matching no trainable parameter raises ``ValueError``.
* Weights are changed in place (``copy_``/``add_`` on ``param.data``), never re-bound, so DDP
  buckets, optimizer state and tied weights keep pointing at the same storage.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Callable

import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["FGM", "PGD", "build_adversary"]

# What the training loop hands to ``backward_with_attack``: the loss of this micro-batch (a fresh forward each
# call), backward of a loss (scaled for accumulation / fp16), and the DDP gradient-sync context (True: this
# backward may all-reduce, i.e. it is the last one of the optimiser step).
LossFn = Callable[[], torch.Tensor]
Backward = Callable[[torch.Tensor], None]
SyncContext = Callable[[bool], contextlib.AbstractContextManager]


def _matching_params(model: nn.Module, param_name: str) -> list[tuple[str, nn.Parameter]]:
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad and param_name in n]
    if not params:
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        hint = ", ".join(n for n in names if "embed" in n) or ", ".join(names[:8])
        raise ValueError(
            f"adversarial param_name {param_name!r} matches no trainable parameter of "
            f"{type(model).__name__}; candidates: {hint}"
        )
    return params


@torch.no_grad()
def _normalised_step(grad: torch.Tensor, size: float) -> torch.Tensor:
    """``size * g / ||g||``, or zeros when ``||g||`` is 0 / inf / nan (no host sync)."""
    norm = torch.linalg.vector_norm(grad.float()).to(grad.dtype)
    ok = torch.isfinite(norm) & (norm > 0)
    step = grad * (size / norm)
    return torch.where(ok, step, torch.zeros_like(step))


def _require_grad(name: str, p: torch.Tensor, who: str) -> torch.Tensor:
    if p.grad is None:
        raise RuntimeError(f"{who}.attack(): parameter {name!r} has no gradient; call loss.backward() first")
    return p.grad


def snapshot_grads(params: list[tuple[str, nn.Parameter]]) -> dict[str, torch.Tensor | None]:
    """Copies of the matched parameters' gradients, to subtract later (see ``attack(grads_before=...)``)."""
    return {name: None if p.grad is None else p.grad.detach().clone() for name, p in params}


def _direction(name: str, p: torch.Tensor, who: str, grads_before: dict | None) -> torch.Tensor:
    """This micro-batch's gradient: ``.grad`` minus what earlier micro-batches had accumulated.

    With gradient accumulation ``.grad`` already holds the previous micro-batches' (clean and
    adversarial) gradients; stepping along that sum would attack the wrong examples.
    """
    grad = _require_grad(name, p, who)
    before = None if grads_before is None else grads_before.get(name)
    return grad if before is None else grad - before


class FGM:
    """Fast Gradient Method on the embedding weights: one step ``r = epsilon * g / ||g||``."""

    def __init__(self, model: nn.Module, epsilon: float = 1.0, param_name: str = "word_embeddings") -> None:
        if epsilon <= 0:
            raise ValueError(f"FGM epsilon must be > 0, got {epsilon}")
        self.model = model
        self.epsilon = float(epsilon)
        self.param_name = param_name
        self.params = _matching_params(model, param_name)
        self.backup: dict[str, torch.Tensor] = {}
        logger.info("FGM on %s (epsilon=%g)", [n for n, _ in self.params], self.epsilon)

    def snapshot_grads(self) -> dict[str, torch.Tensor | None]:
        return snapshot_grads(self.params)

    @torch.no_grad()
    def attack(self, grads_before: dict[str, torch.Tensor | None] | None = None) -> None:
        """Back up the matched weights and add ``epsilon * g / ||g||`` (needs a prior backward).

        ``grads_before``: a :meth:`snapshot_grads` taken before this micro-batch's backward, so that
        ``g`` is this micro-batch's gradient only (gradient accumulation).
        """
        if self.backup:
            raise RuntimeError("FGM.attack() called twice without restore()")
        for name, p in self.params:
            grad = _direction(name, p, "FGM", grads_before)
            self.backup[name] = p.data.clone()
            p.data.add_(_normalised_step(grad, self.epsilon))

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the exact weights saved by :meth:`attack`."""
        if not self.backup:
            raise RuntimeError("FGM.restore() called without a preceding attack()")
        for name, p in self.params:
            p.data.copy_(self.backup[name])
        self.backup = {}

    def backward_with_attack(self, loss_fn: LossFn, backward: Backward, sync: SyncContext, last: bool,
                             first_micro: bool) -> torch.Tensor:
        """One micro-batch: clean gradient, step the embeddings along it, add the adversarial gradient, restore.

        With gradient accumulation the direction must be this micro-batch's gradient alone, so the gradients
        accumulated by the earlier micro-batches are snapshotted and subtracted. Returns the clean loss.
        """
        before = None if first_micro else self.snapshot_grads()
        with sync(False):
            loss = loss_fn()
            backward(loss)
        self.attack(grads_before=before)
        with sync(last):
            backward(loss_fn())
        self.restore()
        return loss


class PGD:
    """Projected Gradient Descent on the embedding weights (``steps`` attacks, run by :meth:`backward_with_attack`).

    Each :meth:`attack` adds ``alpha * g / ||g||`` and projects the total perturbation
    ``r = W - W_0`` back onto the ball ``||r|| <= epsilon`` around the weights ``W_0`` backed up by
    the first attack.  :meth:`backup_grad` / :meth:`restore_grad` save and restore the clean
    gradients of *all* trainable parameters, so that the intermediate attack steps (whose
    gradients are only used to steer ``r``) do not leak into the update.
    """

    def __init__(
        self,
        model: nn.Module,
        epsilon: float = 1.0,
        alpha: float = 0.3,
        param_name: str = "word_embeddings",
        steps: int = 3,
    ) -> None:
        if epsilon <= 0 or alpha <= 0:
            raise ValueError(f"PGD epsilon and alpha must be > 0, got epsilon={epsilon}, alpha={alpha}")
        if steps < 1:
            raise ValueError(f"PGD needs steps >= 1, got {steps}")
        self.model = model
        self.epsilon = float(epsilon)
        self.alpha = float(alpha)
        self.steps = int(steps)
        self.param_name = param_name
        self.params = _matching_params(model, param_name)
        self.emb_backup: dict[str, torch.Tensor] = {}
        self.grad_backup: dict[str, torch.Tensor] = {}
        logger.info("PGD on %s (epsilon=%g, alpha=%g)", [n for n, _ in self.params], self.epsilon, self.alpha)

    def snapshot_grads(self) -> dict[str, torch.Tensor | None]:
        return snapshot_grads(self.params)

    @torch.no_grad()
    def attack(self, is_first_attack: bool = False,
               grads_before: dict[str, torch.Tensor | None] | None = None) -> None:
        """One PGD step; ``is_first_attack=True`` first backs up the clean weights.

        ``grads_before`` as in :meth:`FGM.attack` (only the first step needs it: later steps follow
        a ``zero_grad``)."""
        if is_first_attack:
            if self.emb_backup:
                raise RuntimeError("PGD.attack(is_first_attack=True) called again without restore()")
            for name, p in self.params:
                self.emb_backup[name] = p.data.clone()
        elif not self.emb_backup:
            raise RuntimeError("PGD.attack(): the first step of an attack needs is_first_attack=True")
        for name, p in self.params:
            grad = _direction(name, p, "PGD", grads_before)
            p.data.add_(_normalised_step(grad, self.alpha))
            self._project(name, p)

    def _project(self, name: str, p: torch.Tensor) -> None:
        base = self.emb_backup[name]
        r = p.data - base
        norm = torch.linalg.vector_norm(r.float()).to(r.dtype)
        # Shrink only when outside the ball; inside, r is kept as is (factor exactly 1).
        factor = torch.where(norm > self.epsilon, self.epsilon / norm, torch.ones_like(norm))
        p.data.copy_(base + r * factor)

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the exact weights saved by the first attack."""
        if not self.emb_backup:
            raise RuntimeError("PGD.restore() called without a preceding attack(is_first_attack=True)")
        for name, p in self.params:
            p.data.copy_(self.emb_backup[name])
        self.emb_backup = {}

    @torch.no_grad()
    def backup_grad(self) -> None:
        """Save a copy of the current gradient of every trainable parameter that has one."""
        self.grad_backup = {
            n: p.grad.clone() for n, p in self.model.named_parameters() if p.requires_grad and p.grad is not None
        }

    @torch.no_grad()
    def restore_grad(self) -> None:
        """Restore the gradients saved by :meth:`backup_grad` (in place where a gradient tensor exists)."""
        if not self.grad_backup:
            raise RuntimeError("PGD.restore_grad() called without a preceding backup_grad()")
        for n, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            saved = self.grad_backup.get(n)
            if saved is None:
                # No clean gradient (unused in the clean pass): drop what the attack steps left.
                p.grad = None
            elif p.grad is None:  # zero_grad(set_to_none=True) dropped it
                p.grad = saved
            else:  # keep the tensor (DDP may use gradient_as_bucket_view)
                p.grad.copy_(saved)
        self.grad_backup = {}

    def backward_with_attack(self, loss_fn: LossFn, backward: Backward, sync: SyncContext, last: bool,
                             first_micro: bool) -> torch.Tensor:
        """One micro-batch of K-step PGD: the clean gradient is kept aside while the perturbation is searched,
        then the last adversarial gradient is added to it. Returns the clean loss."""
        before = None if first_micro else self.snapshot_grads()
        with sync(False):
            loss = loss_fn()
            backward(loss)
        self.backup_grad()
        for t in range(self.steps):
            self.attack(is_first_attack=(t == 0), grads_before=before if t == 0 else None)
            if t != self.steps - 1:
                self.model.zero_grad(set_to_none=False)
            else:
                self.restore_grad()
            with sync(last and t == self.steps - 1):
                backward(loss_fn())
        self.restore()
        return loss


def build_adversary(model: nn.Module, args) -> FGM | PGD | None:
    """``--adv fgm|pgd`` with ``--adv_epsilon/--adv_alpha/--adv_steps/--adv_param`` (unset: the classes' defaults)."""
    if args.adv is None:
        return None
    given = {"epsilon": args.adv_epsilon, "param_name": args.adv_param}
    if args.adv == "pgd":
        given.update(alpha=args.adv_alpha, steps=args.adv_steps)
    kwargs = {k: v for k, v in given.items() if v is not None}
    return FGM(model, **kwargs) if args.adv == "fgm" else PGD(model, **kwargs)


def flag_problems(args) -> list[str]:
    """What is wrong with the --adv* flags; [] when nothing."""
    errors = []
    if args.adv is None:
        errors += [f"--{flag} needs --adv fgm|pgd" for flag in ("adv_epsilon", "adv_alpha", "adv_steps", "adv_param")
                   if getattr(args, flag) is not None]
    if args.adv != "pgd":
        errors += [f"--{flag} only applies to --adv pgd" for flag in ("adv_steps", "adv_alpha")
                   if getattr(args, flag) is not None]
    if args.adv_steps is not None and args.adv_steps < 1:
        errors.append("--adv_steps must be >= 1")
    for flag in ("adv_epsilon", "adv_alpha"):
        if getattr(args, flag) is not None and not getattr(args, flag) > 0:
            errors.append(f"--{flag} must be > 0")
    return errors
