"""Training flags: run_squad's names, and ``--config FILE`` (JSON or YAML) as defaults.

This module owns the flags and their choices and defaults; it imports nothing of training, so every training
module may read its constants. Whether a set of flags can work is checked by the module each flag serves, and
``checks.validate_args`` gathers those checks into one ``UsageError`` before anything heavy is loaded.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from squad_qa.data.windows import WindowConfig

try:  # optional: YAML experiment files (JSON needs nothing); the GPU machine's image may lack it
    import yaml
except ImportError:  # pragma: no cover - depends on the environment
    yaml = None


class UsageError(ValueError):
    """Inconsistent flags, missing files, refused combinations: reported before any work is done."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """ArgumentDefaultsHelpFormatter, except for flags whose default is None: that only means "not given" (e.g.
    a --kd_* flag without --teacher is refused, --adv_epsilon without --adv); their help says the real default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None:
            return action.help or ""
        return super()._get_help_string(action)


SCHEDULER_CHOICES = ("linear", "cosine", "constant")  # --lr_scheduler; optim.py names transformers' schedules
TEACHER_MODES = ("cached", "live")  # --teacher_mode; distill.py runs them
KD_ALPHA_DEFAULT = 0.5  # --kd_alpha and --kd_temperature with --teacher (None without one, so it can be refused)
KD_TEMPERATURE_DEFAULT = 2.0

EXTENDS = "extends"  # a config key: the file (relative to this one) whose keys this one starts from


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train_squad",
        description="Fine-tune a BERT-style encoder for SQuAD extractive QA (run_squad.py flags).",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--config", help="JSON or YAML file of the same keys as the flags; command-line flags override it; "
                   f"'{EXTENDS}': FILE starts from another such file's keys")

    g = p.add_argument_group("model and data")
    g.add_argument("--model_name_or_path", help="local model folder (default: squad_qa.default_base_model_path())")
    g.add_argument("--train_file", help="SQuAD .json or .json.gz for training")
    g.add_argument("--predict_file", help="SQuAD .json or .json.gz to predict and score")
    g.add_argument("--output_dir", help="where checkpoints, the final model and predictions go")
    g.add_argument("--cache_dir", help="cache converted features here (.npz)")
    g.add_argument("--do_train", action="store_true")
    g.add_argument("--do_eval", action="store_true")
    g.add_argument("--overwrite_output_dir", action="store_true")
    g.add_argument("--version_2_with_negative", action="store_true", help="SQuAD 2.0: some questions have no answer")
    g.add_argument("--null_score_diff_threshold", type=float, default=0.0)
    window = WindowConfig()  # the one owner of run_squad's 384 / 128 / 64
    g.add_argument("--max_seq_length", type=int, default=window.max_seq_length)
    g.add_argument("--doc_stride", type=int, default=window.doc_stride)
    g.add_argument("--max_query_length", type=int, default=window.max_query_length)
    g.add_argument("--n_best_size", type=int, default=20)
    g.add_argument("--max_answer_length", type=int, default=30)
    g.add_argument("--max_train_samples", type=int, help="train on the first N questions only")
    g.add_argument("--max_eval_samples", type=int, help="evaluate on the first N questions only")

    g = p.add_argument_group("optimisation")
    g.add_argument("--per_device_train_batch_size", type=int, default=32)
    g.add_argument("--per_device_eval_batch_size", type=int, default=64)
    g.add_argument("--learning_rate", type=float, default=3e-5)
    g.add_argument("--weight_decay", type=float, default=0.0)
    g.add_argument("--adam_epsilon", type=float, default=1e-8)
    g.add_argument("--max_grad_norm", type=float, default=1.0, help="0 disables clipping")
    g.add_argument("--num_train_epochs", type=float, default=2.0)
    g.add_argument("--max_steps", type=int, default=-1, help="if > 0: total optimiser steps (overrides epochs)")
    g.add_argument("--warmup_steps", type=int, default=0)
    g.add_argument("--warmup_ratio", type=float, default=0.0)
    g.add_argument("--lr_scheduler", choices=SCHEDULER_CHOICES, default="linear")
    g.add_argument("--gradient_accumulation_steps", type=int, default=1)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CUDA or CPU)")
    g.add_argument("--fp16", action="store_true", help="float16 autocast + GradScaler (CUDA only)")
    g.add_argument("--no_cuda", action="store_true", help="train on CPU even if a GPU is present")
    g.add_argument("--no_group_by_length", action="store_true",
                   help="plain shuffled batches instead of length-grouped ones (still dynamically padded)")

    g = p.add_argument_group("logging, evaluation and checkpoints")
    g.add_argument("--logging_steps", type=int, default=50)
    g.add_argument("--save_steps", type=int, default=500, help="checkpoint every N optimiser steps (0: never)")
    g.add_argument("--save_total_limit", type=int, default=2, help="keep the last N checkpoints (0: keep all)")
    g.add_argument("--resume_from_checkpoint", nargs="?", const="latest",
                   help="a checkpoint folder, or 'latest' (the newest checkpoint-* in output_dir)")
    g.add_argument("--replan_schedule", action="store_true",
                   help="with --resume_from_checkpoint: accept a different total of steps (e.g. a smaller "
                        "--max_steps to end sooner); the learning-rate schedule follows the new total from the "
                        "checkpoint's step on")
    g.add_argument("--eval_steps", type=int, default=0,
                   help="evaluate every N optimiser steps during training; best model kept in output_dir/best")
    g.add_argument("--eval_subset", type=int, default=0,
                   help="with --eval_steps: evaluate on the first N questions of the predict file only")

    g = p.add_argument_group("tricks (all off by default)")
    g.add_argument("--label_smoothing", type=float, default=0.0, help="epsilon over context tokens + CLS")
    g.add_argument("--adv", choices=["fgm", "pgd"], help="adversarial training on the word embeddings")
    g.add_argument("--adv_epsilon", type=float, help="perturbation radius (default 1.0)")
    g.add_argument("--adv_alpha", type=float, help="PGD step size (default 0.3)")
    g.add_argument("--adv_steps", type=int, help="PGD steps (default 3)")
    g.add_argument("--adv_param", help="name fragment of the perturbed parameter (default word_embeddings)")
    g.add_argument("--ema_decay", type=float, help="keep an exponential moving average of the weights")
    g.add_argument("--swa_start", type=float,
                   help="start stochastic weight averaging after this fraction of training (0 < x < 1) "
                        "or after this many epochs (x >= 1)")
    g.add_argument("--swa_lr", type=float, help="SWA learning rate (default: --learning_rate)")
    g.add_argument("--swa_anneal_steps", type=int, help="steps to anneal to --swa_lr (default: 10%% of the SWA phase)")
    g.add_argument("--swa_freq", type=int, help="update the SWA average every N optimiser steps (default 1)")
    g.add_argument("--llrd_decay", type=float, help="layer-wise lr decay gamma in (0, 1]")
    g.add_argument("--head_lr", type=float, help="with --llrd_decay: lr of the QA head (default --learning_rate)")
    g.add_argument("--llrd_groups", type=int, help="with --llrd_decay: number of layer groups sharing one lr")
    g.add_argument("--reinit_layers", type=int, default=0, help="re-initialise the top N encoder layers")
    g.add_argument("--rdrop_alpha", type=float, default=0.0, help="R-Drop: weight of the symmetric KL term")

    g = p.add_argument_group("distillation (squad_qa/training/distill.py)")
    g.add_argument("--teacher",
                   help="knowledge distillation from a fine-tuned QA model folder or from a logits file "
                        "(predict.py --save_logits over the training file, e.g. an ensemble's; or a cache file)")
    g.add_argument("--teacher_mode", choices=TEACHER_MODES,
                   help="with a teacher folder: 'cached' (default) computes its logits on the training windows "
                        "once and caches them; 'live' runs it beside the student on every micro-batch")
    g.add_argument("--kd_alpha", type=float,
                   help="with --teacher: loss = alpha * KD + (1 - alpha) * span loss; in [0, 1] (default 0.5)")
    g.add_argument("--kd_temperature", type=float,
                   help="with --teacher: softmax temperature T of the KD term (scaled by T^2); > 0 (default 2.0)")
    g.add_argument("--teacher_cache_dir",
                   help="with --teacher: where computed teacher logits are cached (default: --cache_dir; "
                        "neither: computed in memory every run)")

    # Test/debug hooks, hidden from --help: simulate a kill after N steps; poison the loss at step N.
    p.add_argument("--stop_after_steps", type=int, help=argparse.SUPPRESS)
    p.add_argument("--debug_nan_at_step", type=int, help=argparse.SUPPRESS)
    return p


def _read_file(cfg_path: Path) -> dict[str, Any]:
    """One JSON/YAML file's mapping, as written."""
    is_yaml = cfg_path.suffix.lower() in (".yaml", ".yml")
    if is_yaml and yaml is None:
        raise UsageError(f"--config {cfg_path}: YAML needs pyyaml (pip install pyyaml), or use JSON")
    text = cfg_path.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text) if is_yaml else json.loads(text)
    except Exception as e:  # both parsers raise their own types; the message is what matters
        raise UsageError(f"--config {cfg_path}: cannot parse: {e}") from e
    if not isinstance(raw, dict):
        raise UsageError(f"--config {cfg_path}: expected a mapping of flag names to values, got {type(raw).__name__}")
    return raw


def _config_chain(cfg_path: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The file and the files it ``extends``, each base relative to the file that names it: a variant names its
    base and only what it changes, so a recipe's settings have one owner. The named file comes first."""
    chain: list[tuple[Path, dict[str, Any]]] = []
    while True:
        if not cfg_path.is_file():
            where = f"--config {chain[-1][0]}: '{EXTENDS}'" if chain else "--config"
            raise UsageError(f"{where}: file not found: {cfg_path}")
        if cfg_path.resolve() in {p.resolve() for p, _ in chain}:
            loop = " -> ".join(str(p) for p in (*(p for p, _ in chain), cfg_path))
            raise UsageError(f"--config {chain[0][0]}: '{EXTENDS}' loops: {loop}")
        raw = _read_file(cfg_path)
        chain.append((cfg_path, raw))
        if EXTENDS not in raw:
            return chain
        base = raw.pop(EXTENDS)
        if not isinstance(base, str) or not base:
            raise UsageError(f"--config {cfg_path}: '{EXTENDS}' must be a file name, got {base!r}")
        cfg_path = cfg_path.parent / base


def _as_defaults(raw: dict[str, Any], cfg_path: Path, actions: dict[str, argparse.Action]) -> dict[str, Any]:
    """One file's keys as parser defaults, with the checks argparse would do; errors name that file."""
    cfg: dict[str, Any] = {}
    unknown = []
    for key, value in raw.items():
        dest = str(key).lstrip("-").replace("-", "_")
        action = actions.get(dest)
        if action is None:
            unknown.append(str(key))
            continue
        if value is not None:
            if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
                if not isinstance(value, bool):
                    raise UsageError(f"--config {cfg_path}: '{key}' must be true or false, got {value!r}")
            elif action.type is not None:
                try:
                    value = action.type(value)
                except (TypeError, ValueError) as e:
                    raise UsageError(f"--config {cfg_path}: '{key}': {e}") from e
            if action.choices is not None and value not in action.choices:
                raise UsageError(f"--config {cfg_path}: '{key}' must be one of {list(action.choices)}, got {value!r}")
        cfg[dest] = value
    if unknown:
        raise UsageError(f"--config {cfg_path}: unknown keys {sorted(unknown)} (use the flag names, e.g. learning_rate)")
    return cfg


def load_config(path: str, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Read a JSON/YAML experiment file (over the files it extends) into parser defaults."""
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
    cfg: dict[str, Any] = {}
    for cfg_path, raw in reversed(_config_chain(Path(path))):  # the base first: each file overrides the one it extends
        cfg.update(_as_defaults(raw, cfg_path, actions))
    return cfg


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    pre, _ = parser.parse_known_args(argv)
    if pre.config:
        parser.set_defaults(**load_config(pre.config, parser))
    return parser.parse_args(argv)
