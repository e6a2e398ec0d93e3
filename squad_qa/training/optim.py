"""Optimiser, parameter groups (weight decay, layer-wise LR decay), LR schedule and top-layer re-init.

Parameter groups (:func:`build_param_groups`)
    Every trainable parameter lands in exactly one group (asserted).  Biases and LayerNorm weights
    go to ``weight_decay = 0`` groups, everything else gets ``weight_decay`` (the BERT recipe).
    Groups are named ``"<part>/decay"`` / ``"<part>/no_decay"`` and also carry torch's
    ``"param_names"`` (names relative to the unwrapped model, so a checkpoint is the same with or
    without DDP); ``"initial_lr"`` is added by the LR scheduler.

    The model is split into *parts*: the **head** (everything outside ``model.base_model``, e.g.
    ``qa_outputs``, plus the base model's ``pooler`` if it has one), the encoder **layers**
    (names ``<base>.encoder.layer.N.`` or ``<base>.transformer.layer.N.``, ``N < num_hidden_layers``)
    and the **embeddings** (``<base>.embeddings.*``, plus ELECTRA's ``embeddings_project``).  Any
    other base-model parameter is an error (we would rather refuse a new architecture than guess
    its learning rate).

    * ``llrd_decay=None``: parts ``head`` (lr ``head_lr``, default ``learning_rate``) and ``body``
      (``learning_rate``).
    * ``llrd_decay=γ`` (layer-wise LR decay, "LLRD"): with ``L`` layers the top layer ``L-1`` gets
      ``learning_rate``, layer ``i`` gets ``learning_rate * γ**(L-1-i)``, the embeddings one more
      factor: ``learning_rate * γ**L``.  Parts are named ``layer.<i>`` and ``embeddings``.
    * ``llrd_decay=γ, llrd_groups=k`` (grouped LLRD): layer ``i`` belongs to group
      ``g = i * k // L`` (``k`` contiguous blocks whose sizes differ by at most one, e.g. 6 layers,
      k=3 -> {0,1} {2,3} {4,5}; 4 layers, k=3 -> {0,1} {2} {3}), group ``g`` gets ``learning_rate * γ**(k-1-g)`` and the embeddings one
      more factor, ``learning_rate * γ**k``.  With ``k = L`` this is exactly the per-layer scheme.
      Parts are named ``layers.<first>-<last>`` (``layers.<i>`` for a single layer) and ``embeddings``.

Optimiser (:func:`build_optimizer`)
    ``torch.optim.AdamW`` over those groups; ``fused=True`` when all parameters are on CUDA.
    ``args`` attributes (missing ones take the defaults): ``learning_rate`` (required),
    ``weight_decay=0.0``, ``adam_epsilon=1e-8``, ``adam_beta1=0.9``, ``adam_beta2=0.999``,
    ``llrd_decay=None``, ``head_lr=None``, ``llrd_groups=None``.

Schedule (:func:`build_scheduler`)
    ``transformers.get_scheduler``; ``linear`` and ``cosine`` warm up linearly then decay to 0,
    ``constant`` is ``constant_with_warmup``.

Re-initialisation (:func:`reinit_top_layers`)
    Re-draws the top ``n`` encoder layers (and the pooler, if any) with the model's own
    ``_init_weights`` (normal(0, ``config.initializer_range``) for Linear, LayerNorm to (1, 0)).
    transformers 5.x marks loaded tensors ``_is_hf_initialized`` and its ``init.*`` functions skip
    such tensors, so ``_init_weights`` alone would silently do nothing after ``from_pretrained``;
    we lift the flags on the tensors being re-drawn for the call (and put them back afterwards).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import torch
from torch import nn

from squad_qa.training.config import SCHEDULER_CHOICES

logger = logging.getLogger(__name__)

__all__ = [
    "SCHEDULER_CHOICES",
    "unwrap_model",
    "build_param_groups",
    "build_optimizer",
    "build_scheduler",
    "reinit_top_layers",
]

# --lr_scheduler choices (config.py) -> transformers scheduler names
_SCHEDULERS = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}

# "<base>.encoder.layer.3.attention..." (BERT, RoBERTa, ELECTRA, ...) / "<base>.transformer.layer.3." (DistilBERT)
_LAYER_RE = re.compile(r"^(?:encoder|transformer)\.layers?\.(\d+)\.")
_LAYER_LIST_RE = re.compile(r"^(?:encoder|transformer)\.layers?$")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside DDP / DataParallel / ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):  # torch.compile
            model = model._orig_mod
        else:
            return model


def _base_model(model: nn.Module) -> tuple[nn.Module, str]:
    """``(base_model, prefix)`` where ``prefix`` is its parameter-name prefix ("bert." for BERT)."""
    base = getattr(model, "base_model", None)
    if base is None or base is model:
        return model, ""
    for name, module in model.named_children():
        if module is base:
            return base, name + "."
    raise ValueError(f"cannot locate base_model of {type(model).__name__} among its children")


def _num_layers(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    n = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layers", None)
    if not isinstance(n, int) or n <= 0:
        raise ValueError(f"{type(model).__name__}.config has no positive num_hidden_layers")
    return n


def _is_no_decay(module: nn.Module, param_name: str) -> bool:
    # Biases and LayerNorm parameters are not decayed (BERT's AdamWeightDecay exclusion list).
    return param_name.endswith("bias") or isinstance(module, nn.LayerNorm) or "LayerNorm" in type(module).__name__


def _classify(model: nn.Module) -> list[tuple[str, nn.Parameter, str, int | None, bool]]:
    """``(name, param, part, layer_index, no_decay)`` for every trainable parameter.

    ``part`` is "head", "layer" or "embeddings".
    """
    base, prefix = _base_model(model)
    n_layers = _num_layers(model)
    owner = {}  # parameter name -> owning module (for the LayerNorm test)
    for mod_name, module in model.named_modules():
        for p_name, _ in module.named_parameters(recurse=False):
            owner[f"{mod_name}.{p_name}" if mod_name else p_name] = module
    rows = []
    unknown = []
    seen_layers = set()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = _is_no_decay(owner[name], name)
        if prefix and not name.startswith(prefix):
            rows.append((name, p, "head", None, no_decay))
            continue
        rel = name[len(prefix):]
        m = _LAYER_RE.match(rel)
        if m:
            idx = int(m.group(1))
            if idx >= n_layers:
                raise ValueError(f"parameter {name!r} is in layer {idx} but config.num_hidden_layers={n_layers}")
            seen_layers.add(idx)
            rows.append((name, p, "layer", idx, no_decay))
        elif rel.startswith("pooler."):
            rows.append((name, p, "head", None, no_decay))
        elif rel.startswith(("embeddings.", "embeddings_project.")):  # ELECTRA projects below layer 0
            rows.append((name, p, "embeddings", None, no_decay))
        elif rel.startswith("encoder.relative_attention_bias."):
            # MPNet: relative-position buckets shared by every layer, position information like the
            # position embeddings, so it learns at the embeddings' rate
            rows.append((name, p, "embeddings", None, no_decay))
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(
            f"cannot assign a learning rate to {len(unknown)} parameter(s) of {type(model).__name__} "
            f"(expected <base>.embeddings.*, <base>.encoder.layer.N.*, <base>.pooler.* or a head outside the base model): {unknown[:6]}"
        )
    missing = sorted(set(range(n_layers)) - seen_layers)
    if missing and any(r[2] == "layer" for r in rows):
        logger.warning("encoder layers %s have no trainable parameters (frozen?)", missing)
    return rows


def build_param_groups(
    model: nn.Module,
    learning_rate: float,
    weight_decay: float = 0.0,
    llrd_decay: float | None = None,
    head_lr: float | None = None,
    llrd_groups: int | None = None,
) -> list[dict[str, Any]]:
    """AdamW parameter groups with no-decay groups and optional (grouped) layer-wise LR decay.

    See the module docstring for the exact learning rates.  Accepts a plain or DDP-wrapped model.
    """
    if learning_rate <= 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    if llrd_decay is not None and not 0.0 < llrd_decay <= 1.0:
        raise ValueError(f"llrd_decay must be in (0, 1], got {llrd_decay}")
    if llrd_groups is not None and llrd_decay is None:
        raise ValueError("llrd_groups needs llrd_decay")
    model = unwrap_model(model)
    head_lr = learning_rate if head_lr is None else head_lr
    rows = _classify(model)
    n_layers = _num_layers(model)
    if llrd_groups is not None and not 1 <= llrd_groups <= n_layers:
        raise ValueError(f"llrd_groups must be in [1, num_hidden_layers={n_layers}], got {llrd_groups}")

    def part_and_lr(part: str, layer: int | None) -> tuple[str, float]:
        if part == "head":
            return "head", head_lr
        if llrd_decay is None:
            return "body", learning_rate
        if llrd_groups is None:  # one group per layer
            if part == "embeddings":
                return "embeddings", learning_rate * llrd_decay**n_layers
            return f"layer.{layer}", learning_rate * llrd_decay ** (n_layers - 1 - layer)
        k = llrd_groups
        if part == "embeddings":
            return "embeddings", learning_rate * llrd_decay**k
        g = layer * k // n_layers
        members = [i for i in range(n_layers) if i * k // n_layers == g]
        label = f"{members[0]}-{members[-1]}" if len(members) > 1 else f"{members[0]}"
        return f"layers.{label}", learning_rate * llrd_decay ** (k - 1 - g)

    groups: dict[str, dict[str, Any]] = {}
    for name, p, part, layer, no_decay in rows:
        part_name, lr = part_and_lr(part, layer)
        key = f"{part_name}/{'no_decay' if no_decay else 'decay'}"
        group = groups.setdefault(
            key,
            {"name": key, "params": [], "param_names": [], "lr": lr, "weight_decay": 0.0 if no_decay else weight_decay},
        )
        group["params"].append(p)
        group["param_names"].append(name)

    # Every trainable parameter exactly once (named_parameters() already de-duplicates tied weights).
    placed = [id(p) for g in groups.values() for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert len(placed) == len(set(placed)) and set(placed) == set(trainable), "parameter grouping is not a partition"
    result = list(groups.values())
    for g in result:
        logger.debug("param group %-24s lr=%.3g wd=%g n=%d", g["name"], g["lr"], g["weight_decay"], len(g["params"]))
    return result


def build_optimizer(model: nn.Module, args: Any) -> torch.optim.AdamW:
    """AdamW over :func:`build_param_groups`; reads hyper-parameters from ``args`` (module docstring)."""
    groups = build_param_groups(
        model,
        learning_rate=args.learning_rate,
        weight_decay=getattr(args, "weight_decay", 0.0),
        llrd_decay=getattr(args, "llrd_decay", None),
        head_lr=getattr(args, "head_lr", None),
        llrd_groups=getattr(args, "llrd_groups", None),
    )
    betas = (getattr(args, "adam_beta1", 0.9), getattr(args, "adam_beta2", 0.999))
    params = [p for g in groups for p in g["params"]]
    # The fused CUDA kernel is one launch per step instead of a foreach loop; needs all params on CUDA.
    fused = True if params and all(p.is_cuda for p in params) else None
    optimizer = torch.optim.AdamW(
        groups, lr=args.learning_rate, betas=betas, eps=getattr(args, "adam_epsilon", 1e-8), fused=fused
    )
    logger.info(
        "AdamW: %d groups, lr %s, fused=%s",
        len(groups),
        sorted({round(g["lr"], 12) for g in groups}, reverse=True),
        bool(fused),
    )
    return optimizer


def build_scheduler(
    optimizer: torch.optim.Optimizer, name: str, num_warmup_steps: int, num_training_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """``transformers.get_scheduler`` for ``name`` in :data:`SCHEDULER_CHOICES` (LR multiplier per group)."""
    from transformers import get_scheduler

    if name not in _SCHEDULERS:
        raise ValueError(f"unknown lr scheduler {name!r}; choose from {', '.join(SCHEDULER_CHOICES)}")
    if num_training_steps <= 0 or not 0 <= num_warmup_steps <= num_training_steps:
        raise ValueError(
            f"need 0 <= num_warmup_steps <= num_training_steps and num_training_steps > 0, "
            f"got warmup={num_warmup_steps}, total={num_training_steps}"
        )
    return get_scheduler(
        _SCHEDULERS[name],
        optimizer=optimizer,
        num_warmup_steps=num_warmup_steps,
        num_training_steps=num_training_steps,
    )


def _encoder_layers(model: nn.Module) -> tuple[nn.ModuleList, str]:
    base, prefix = _base_model(model)
    n_layers = _num_layers(model)
    for name, module in base.named_modules():
        if _LAYER_LIST_RE.match(name) and isinstance(module, nn.ModuleList) and len(module) == n_layers:
            return module, prefix + name
    raise ValueError(f"cannot find the encoder layer list (encoder.layer) of {type(model).__name__}")


def _initializer_range(model: nn.Module) -> float:
    return float(getattr(getattr(model, "config", None), "initializer_range", 0.02))


def _plain_init(modules, std: float) -> None:
    """BERT's initialisation: Linear and Embedding weights ~ N(0, std), biases 0, LayerNorm (1, 0)."""
    for m in modules:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            m.weight.normal_(0.0, std)
        if isinstance(m, nn.Linear) and m.bias is not None:
            m.bias.zero_()
        if isinstance(m, nn.LayerNorm):
            m.weight.fill_(1.0)
            m.bias.zero_()


def reinit_top_layers(model: nn.Module, n: int) -> list[str]:
    """Re-initialise the top ``n`` encoder layers (and the pooler) with the model's ``_init_weights``.

    Returns the names of the re-initialised parameters (relative to the unwrapped model).
    """
    model = unwrap_model(model)
    layers, layers_name = _encoder_layers(model)
    n_layers = len(layers)
    if not 0 <= n <= n_layers:
        raise ValueError(f"reinit_top_layers: n must be in [0, num_hidden_layers={n_layers}], got {n}")
    if n == 0:
        return []
    init_fn = getattr(model, "_init_weights", None)
    if init_fn is None:
        raise ValueError(f"{type(model).__name__} has no _init_weights (not a transformers PreTrainedModel?)")
    base, prefix = _base_model(model)
    targets = [(f"{layers_name}.{i}", layers[i]) for i in range(n_layers - n, n_layers)]
    pooler = getattr(base, "pooler", None)
    if isinstance(pooler, nn.Module):
        targets.append((prefix + "pooler", pooler))

    names = []
    linears = [m for _, t in targets for m in t.modules() if isinstance(m, nn.Linear)]
    before = [m.weight.detach().clone() for m in linears]
    with torch.no_grad():
        for target_name, target in targets:
            for module in target.modules():
                tensors = [module, *module.parameters(recurse=False), *module.buffers(recurse=False)]
                flags = [t.__dict__.pop("_is_hf_initialized", None) for t in tensors]
                try:
                    init_fn(module)  # transformers' init.* functions skip flagged tensors
                finally:
                    for t, flag in zip(tensors, flags):
                        if flag is not None:
                            t._is_hf_initialized = flag
            names.extend(f"{target_name}.{p_name}" for p_name, _ in target.named_parameters())
        # The flag is a transformers internal: should a release skip re-drawn tensors some other
        # way, _init_weights changes nothing. Then re-draw them here, as BERT's _init_weights does.
        if linears and all(torch.equal(m.weight, w) for m, w in zip(linears, before)):
            logger.warning("reinit_top_layers: the model's _init_weights left the weights as they were "
                           "(transformers internals changed?); re-initialising them directly instead")
            _plain_init([m for _, t in targets for m in t.modules()], _initializer_range(model))
    logger.info("re-initialised %d top layer(s)%s: %d tensors", n, " + pooler" if pooler is not None else "", len(names))
    return names


def flag_problems(args: Any) -> list[str]:
    """What is wrong with the optimiser's flags (learning rate, warm-up, LLRD, re-init); [] when nothing."""
    errors = []
    if not args.learning_rate > 0:
        errors.append("--learning_rate must be > 0")
    if args.warmup_steps and args.warmup_ratio:
        errors.append("--warmup_steps and --warmup_ratio are alternatives: give one of them")
    if not 0 <= args.warmup_ratio < 1:
        errors.append("--warmup_ratio must be in [0, 1)")
    if args.reinit_layers < 0:
        errors.append("--reinit_layers must be >= 0")
    if args.llrd_decay is None:
        errors += [f"--{flag} needs --llrd_decay" for flag in ("head_lr", "llrd_groups") if getattr(args, flag) is not None]
    else:
        if not 0 < args.llrd_decay <= 1:
            errors.append("--llrd_decay must be in (0, 1]")
        if args.llrd_groups is not None and args.llrd_groups < 1:
            errors.append("--llrd_groups must be >= 1")
    return errors
