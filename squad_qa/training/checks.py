"""Can these training flags work? Every problem at once, before anything heavy is loaded.

The run's own flags (what to do, files, sizes, the model folder) are checked here; the flags of one part of
training are checked by the module that uses them (``flag_problems`` in optim, losses, adversarial, averaging,
runtime, distill and checkpoint), and ``validate_args`` gathers them all into one ``UsageError``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from squad_qa.data.windows import WindowConfig
from squad_qa.model.model_dir import CheckpointError, check_qa_checkpoint, positions_problem, read_config_json
from squad_qa.training import adversarial, averaging, checkpoint, distill, losses, optim, runtime
from squad_qa.training.config import UsageError

# Each returns the problems of its flags as one-line messages naming the flag.
PART_CHECKS = (optim.flag_problems, runtime.flag_problems, losses.flag_problems, adversarial.flag_problems,
               averaging.flag_problems, distill.flag_problems, checkpoint.flag_problems)


def run_problems(args: argparse.Namespace) -> list[str]:
    """The run's own flags: what to do, the files, sizes and counts, the window geometry."""
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
    need(args.num_train_epochs > 0 or args.max_steps > 0, "--num_train_epochs must be > 0 (or set --max_steps)")
    need(args.logging_steps >= 1, "--logging_steps must be >= 1")
    need(args.save_steps >= 0 and args.save_total_limit >= 0 and args.eval_steps >= 0 and args.eval_subset >= 0,
         "--save_steps/--save_total_limit/--eval_steps/--eval_subset must be >= 0")

    # training-only flags without --do_train
    if not args.do_train:
        for flag in ("resume_from_checkpoint", "stop_after_steps"):
            need(getattr(args, flag) is None, f"--{flag} needs --do_train")
        need(not args.eval_steps, "--eval_steps needs --do_train")
    need(not args.eval_subset or args.eval_steps, "--eval_subset needs --eval_steps")
    return errors


def model_problems(args: argparse.Namespace) -> list[str]:
    """--model_name_or_path against the flags: positions, layer counts, and a fine-tuned head for --do_eval
    alone (checked only when the folder's config raised nothing, so a bad config.json is said once)."""
    if args.model_name_or_path is None or not Path(args.model_name_or_path).is_dir():
        return []
    folder = Path(args.model_name_or_path)
    config, problem = read_config_json(folder)
    errors = [f"--model_name_or_path {folder}: {problem}"] if problem else []
    if positions_problem(args.max_seq_length, config, "model"):
        errors.append(positions_problem(args.max_seq_length, config, "model"))
    layers = config.get("num_hidden_layers")
    for flag in ("reinit_layers", "llrd_groups"):
        value = getattr(args, flag)
        if layers is not None and value is not None and value > layers:
            errors.append(f"--{flag} {value} exceeds the model's {layers} layers")
    if not args.do_train and args.do_eval and not errors:
        # Evaluating a base encoder would score a randomly initialised answer head.
        try:
            check_qa_checkpoint(folder)
        except CheckpointError as e:
            errors.append(f"--do_eval without --do_train needs a fine-tuned checkpoint: {e.with_hint()}")
    return errors


def validate_args(args: argparse.Namespace) -> None:
    """Refuse what cannot work, with a message naming the flag, before loading anything heavy."""
    errors = run_problems(args)
    for check in PART_CHECKS:
        errors += check(args)
    errors += model_problems(args)
    if errors:
        raise UsageError("invalid arguments:\n  - " + "\n  - ".join(errors))
