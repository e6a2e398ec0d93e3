"""Training flags: run_squad's names, ``--config FILE`` (JSON or YAML) as defaults, and validation.

Every inconsistent flag, missing file or refused combination is reported at once, before anything heavy is
loaded (``validate_args`` collects all the problems into one ``UsageError``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from squad_qa.training.checkpoint import CHECKPOINT_PREFIX, find_latest_checkpoint
from squad_qa.training.distill import TEACHER_MODES
from squad_qa.model.logits_file import LogitsFileError, geometry_differences, read_logits_metadata
from squad_qa.model.model_dir import CheckpointError, check_qa_checkpoint
from squad_qa.training.optim import SCHEDULER_CHOICES
from squad_qa.training.runtime import use_cuda
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


KD_ALPHA_DEFAULT = 0.5
KD_TEMPERATURE_DEFAULT = 2.0


def _model_config(folder: Path, flag: str, errors: list[str]) -> dict[str, Any]:
    """``folder/config.json`` as a dict; {} when there is none (loading the model says so), an error when it is
    not a JSON object."""
    path = folder / "config.json"
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        errors.append(f"{flag} {folder}: config.json cannot be read ({type(e).__name__}: {e})")
        return {}
    if not isinstance(config, dict):
        errors.append(f"{flag} {folder}: config.json is not a JSON object")
        return {}
    return config


def _check_positions(args: argparse.Namespace, config: dict[str, Any], whose: str, errors: list[str]) -> None:
    max_pos = config.get("max_position_embeddings")
    if max_pos is not None and args.max_seq_length > max_pos:
        errors.append(f"--max_seq_length {args.max_seq_length} exceeds the {whose}'s max_position_embeddings "
                      f"{max_pos}")


def _validate_teacher(args: argparse.Namespace, errors: list[str]) -> None:
    """--teacher and its --kd_* flags; fills in the KD defaults when a teacher is given."""
    if args.teacher is None:
        for flag in ("kd_alpha", "kd_temperature", "teacher_cache_dir", "teacher_mode"):
            if getattr(args, flag) is not None:
                errors.append(f"--{flag} needs --teacher")
        return
    if args.kd_alpha is None:
        args.kd_alpha = KD_ALPHA_DEFAULT
    if args.kd_temperature is None:
        args.kd_temperature = KD_TEMPERATURE_DEFAULT
    if args.teacher_mode is None:
        args.teacher_mode = "cached"
    if not 0.0 <= args.kd_alpha <= 1.0:
        errors.append(f"--kd_alpha must be in [0, 1], got {args.kd_alpha}")
    if not args.kd_temperature > 0:
        errors.append(f"--kd_temperature must be > 0, got {args.kd_temperature}")
    if not args.do_train:
        errors.append("--teacher needs --do_train")
    teacher = Path(args.teacher)
    if teacher.is_dir():
        try:
            check_qa_checkpoint(teacher, hint=False)
        except CheckpointError as e:
            errors.append(f"--teacher {teacher}: not a fine-tuned QA model folder: {e}")
            return
        _check_positions(args, _model_config(teacher, "--teacher", errors), "teacher", errors)
        if args.teacher_mode == "live" and args.teacher_cache_dir is not None:
            errors.append("--teacher_cache_dir applies to --teacher_mode cached, not live (nothing is cached)")
        if args.teacher_cache_dir is not None and Path(args.teacher_cache_dir).exists() \
                and not Path(args.teacher_cache_dir).is_dir():
            errors.append(f"--teacher_cache_dir {args.teacher_cache_dir} exists and is not a folder")
    elif teacher.is_file():
        try:
            meta = read_logits_metadata(teacher)
        except LogitsFileError as e:
            errors.append(f"--teacher {teacher}: neither a QA model folder nor a logits file: {e}")
            return
        differ = geometry_differences(meta, WindowConfig.from_args(args).to_dict())
        if differ:
            errors.append(f"--teacher {teacher}: its logits are of other windows: " + ", ".join(differ))
        if args.teacher_cache_dir is not None:
            errors.append("--teacher_cache_dir applies to a teacher model folder, not to a logits file")
        if args.teacher_mode == "live":
            errors.append("--teacher_mode live needs a teacher model folder, not a logits file")
    else:
        errors.append(f"--teacher {teacher}: no such file or folder (a QA model folder or a teacher-logits "
                      ".safetensors file)")


def validate_args(args: argparse.Namespace) -> None:
    """Refuse what cannot work, with a message naming the flag, before loading anything heavy."""
    errors: list[str] = []

    def need(cond: bool, msg: str) -> None:
        if not cond:
            errors.append(msg)

    need(args.do_train or args.do_eval, "nothing to do: pass --do_train and/or --do_eval")
    need(args.output_dir is not None, "--output_dir is required")
    if args.do_train:
        need(args.train_file is not None, "--do_train needs --train_file")
    if args.do_eval or args.eval_steps:
        need(args.predict_file is not None, "--do_eval/--eval_steps need --predict_file")
    for flag in ("train_file", "predict_file", "config"):
        path = getattr(args, flag)
        if path is not None and not Path(path).is_file():
            errors.append(f"--{flag}: file not found: {path}")
    if args.model_name_or_path is not None and not Path(args.model_name_or_path).is_dir():
        errors.append(f"--model_name_or_path: no such model folder: {args.model_name_or_path} "
                      "(hub downloads are not used; pass a local folder)")

    # numbers
    for flag in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                 "max_seq_length", "doc_stride", "max_query_length", "n_best_size", "max_answer_length"):
        need(getattr(args, flag) >= 1, f"--{flag} must be >= 1")
    for flag in ("max_train_samples", "max_eval_samples"):
        v = getattr(args, flag)
        need(v is None or v >= 1, f"--{flag} must be >= 1")
    if all(getattr(args, f) >= 1 for f in ("max_seq_length", "doc_stride", "max_query_length")):
        problems = WindowConfig.from_args(args).problems()
        if problems:
            errors.append("--max_seq_length/--doc_stride/--max_query_length: " + "; ".join(problems))
    need(args.learning_rate > 0, "--learning_rate must be > 0")
    need(args.num_train_epochs > 0 or args.max_steps > 0, "--num_train_epochs must be > 0 (or set --max_steps)")
    need(args.logging_steps >= 1, "--logging_steps must be >= 1")
    need(args.save_steps >= 0 and args.save_total_limit >= 0 and args.eval_steps >= 0 and args.eval_subset >= 0,
         "--save_steps/--save_total_limit/--eval_steps/--eval_subset must be >= 0")
    need(not (args.warmup_steps and args.warmup_ratio),
         "--warmup_steps and --warmup_ratio are alternatives: give one of them")
    need(0 <= args.warmup_ratio < 1, "--warmup_ratio must be in [0, 1)")

    # precision
    need(not (args.fp16 and args.bf16), "--fp16 and --bf16 cannot be combined: choose one")
    if args.fp16 and not use_cuda(args):
        errors.append("--fp16 needs a CUDA GPU (float16 autocast on CPU is not supported); use --bf16 on CPU")

    # tricks
    need(0 <= args.label_smoothing < 1, "--label_smoothing must be in [0, 1)")
    need(args.rdrop_alpha >= 0, "--rdrop_alpha must be >= 0")
    need(args.reinit_layers >= 0, "--reinit_layers must be >= 0")
    if args.adv is None:
        for flag in ("adv_epsilon", "adv_alpha", "adv_steps", "adv_param"):
            need(getattr(args, flag) is None, f"--{flag} needs --adv fgm|pgd")
    if args.adv != "pgd":
        need(args.adv_steps is None, "--adv_steps only applies to --adv pgd")
        need(args.adv_alpha is None, "--adv_alpha only applies to --adv pgd")
    if args.adv_steps is not None:
        need(args.adv_steps >= 1, "--adv_steps must be >= 1")
    if args.adv_epsilon is not None:
        need(args.adv_epsilon > 0, "--adv_epsilon must be > 0")
    if args.adv_alpha is not None:
        need(args.adv_alpha > 0, "--adv_alpha must be > 0")
    need(not (args.ema_decay is not None and args.swa_start is not None),
         "--ema_decay and --swa_start cannot be combined: both replace the evaluated weights with an average")
    if args.ema_decay is not None:
        need(0 < args.ema_decay < 1, "--ema_decay must be in (0, 1), e.g. 0.999")
    if args.swa_start is None:
        for flag in ("swa_lr", "swa_anneal_steps", "swa_freq"):
            need(getattr(args, flag) is None, f"--{flag} needs --swa_start")
    else:
        need(args.swa_start > 0, "--swa_start must be a fraction in (0, 1) or an epoch count >= 1")
        need(args.swa_lr is None or args.swa_lr > 0, "--swa_lr must be > 0")
        need(args.swa_anneal_steps is None or args.swa_anneal_steps >= 0, "--swa_anneal_steps must be >= 0")
        need(args.swa_freq is None or args.swa_freq >= 1, "--swa_freq must be >= 1")
    if args.llrd_decay is None:
        need(args.head_lr is None, "--head_lr needs --llrd_decay")
        need(args.llrd_groups is None, "--llrd_groups needs --llrd_decay")
    else:
        need(0 < args.llrd_decay <= 1, "--llrd_decay must be in (0, 1]")
        need(args.llrd_groups is None or args.llrd_groups >= 1, "--llrd_groups must be >= 1")

    # distillation
    _validate_teacher(args, errors)

    # training-only flags without --do_train
    if not args.do_train:
        for flag in ("resume_from_checkpoint", "stop_after_steps"):
            need(getattr(args, flag) is None, f"--{flag} needs --do_train")
        need(not args.eval_steps, "--eval_steps needs --do_train")
    need(not args.eval_subset or args.eval_steps, "--eval_subset needs --eval_steps")

    # the output dir: never silently mix two runs
    if args.output_dir is not None and args.do_train:
        out = Path(args.output_dir)
        if out.exists() and not out.is_dir():
            errors.append(f"--output_dir {out} exists and is not a folder")
        elif (out.is_dir() and any(out.iterdir()) and not args.overwrite_output_dir
              and args.resume_from_checkpoint is None):
            errors.append(f"--output_dir {out} exists and is not empty: pass --overwrite_output_dir, "
                          "or --resume_from_checkpoint to continue a run")
        if args.resume_from_checkpoint not in (None, "latest"):
            ckpt = Path(args.resume_from_checkpoint)
            if not (ckpt / "trainer_state.json").is_file():
                errors.append(f"--resume_from_checkpoint {ckpt}: not a checkpoint folder (no trainer_state.json)")
        elif args.resume_from_checkpoint == "latest" and find_latest_checkpoint(out) is None:
            errors.append(f"--resume_from_checkpoint latest: no complete {CHECKPOINT_PREFIX}* folder in {out}")

    if args.model_name_or_path is not None and Path(args.model_name_or_path).is_dir():
        n_errors = len(errors)
        config = _model_config(Path(args.model_name_or_path), "--model_name_or_path", errors)
        _check_positions(args, config, "model", errors)
        layers = config.get("num_hidden_layers")
        for flag in ("reinit_layers", "llrd_groups"):
            value = getattr(args, flag)
            if layers is not None and value is not None and value > layers:
                errors.append(f"--{flag} {value} exceeds the model's {layers} layers")
        if not args.do_train and args.do_eval and len(errors) == n_errors:  # (a bad config.json is said once)
            # Evaluating a base encoder would score a randomly initialised answer head.
            try:
                check_qa_checkpoint(args.model_name_or_path)
            except CheckpointError as e:
                errors.append(f"--do_eval without --do_train needs a fine-tuned checkpoint: {e.with_hint()}")
    if errors:
        raise UsageError("invalid arguments:\n  - " + "\n  - ".join(errors))
