"""Fine-tune a QA encoder on SQuAD: the training loop of run_squad.py, plus the usual tricks.

This module is ``run``/``main``: the flags, the model and data, then the loop (trainer.py's ``Trainer``);
each stage the loop drives has its own module:
    config.py      run_squad flag names; ``--config FILE`` (JSON/YAML) as defaults
    checks.py      every bad flag refused at once, each checked by the module it serves
    trainer.py     the loop: steps, check points, save / resume
    runtime.py     device, ``torchrun`` ranks (DDP), seeds, autocast
    batching.py    length-grouped batches + dynamic padding (a SQuAD window is often far shorter than 384)
    losses.py      forward (autocast) -> span loss (+ label smoothing, R-Drop, KD); adversarial.py: FGM/PGD
    distill.py     --teacher: its logits on the training windows (cached once, or live beside the student)
    averaging.py   EMA / SWA weights; optim.py: AdamW groups, layer-wise decay, schedules, re-init
    checkpoint.py  atomic ``checkpoint-<step>`` dirs: everything needed to resume mid-epoch
    evaluation.py  logits (sharded across DDP ranks) -> postprocess -> official EM/F1
    run_log.py     metrics.jsonl; the loop syncs with the device only at logging/eval/save steps
``torchrun --nproc_per_node=N scripts/train_squad.py ...`` runs DDP.

The loss is ours (``losses.span_loss``) rather than the model's, so that label smoothing and R-Drop can see
the logits; without tricks it is exactly BertForQuestionAnswering's (start CE + end CE) / 2.

What a run leaves in ``--output_dir``::

    model.safetensors config.json tokenizer*   the final model (EMA/SWA weights when those are on)
    squad_qa.json                              training args, metrics, which weights ("raw" / "ema" / "swa")
    predictions.json nbest_predictions.json    (--do_eval; null_odds.json for v2) and eval_results.json
    metrics.jsonl                              one row per logging step / evaluation (runs/ for TensorBoard)
    checkpoint-<step>/                         model (raw weights) + tokenizer, optimizer.pt, scheduler.pt,
                                               [swa_scheduler.pt, scaler.pt, averaged.safetensors],
                                               rng_state_<rank>.pt, trainer_state.json (written last)
    best/                                      (--eval_steps) the best model so far, by F1

Resuming replays the run exactly: the batch order is a pure function of (seed, epoch), the checkpoint
records how many of the epoch's batches were consumed, and the RNG states bring back the same dropout masks.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from transformers import AutoTokenizer

import squad_qa
from squad_qa.training.checkpoint import (CHECKPOINT_PREFIX, check_checkpoint, clean_stale_tmp,
                                 latest_intact_checkpoint, remove_previous_run, save_model_dir)
from squad_qa.files.checksums import ChecksumError
from squad_qa.training.checks import validate_args
from squad_qa.training.config import UsageError, parse_args
from squad_qa.data.squad import SquadFormatError, read_squad_examples
from squad_qa.training.distill import TeacherCacheError, teacher_for_training
from squad_qa.training.evaluation import evaluate, load_eval_data
from squad_qa.scoring.metrics import em_of, f1_of
from squad_qa.data.features import convert_examples_to_features, special_layout
from squad_qa.model.model_dir import CheckpointError, load_qa_model
from squad_qa.files.run_record import write_run_record
from squad_qa.training.optim import reinit_top_layers
from squad_qa.training.run_log import MetricsLog, NonFiniteLossError
from squad_qa.training.runtime import Runtime, main_process_first, set_seed, setup_logging, setup_runtime
from squad_qa.data.windows import WindowConfig
from squad_qa.training.trainer import Trainer

logger = logging.getLogger("squad_qa.training.train" if __name__ == "__main__" else __name__)


# ----------------------------------------------------------------------------------------------------------------
# Data


def load_train_features(args: argparse.Namespace, tokenizer, rt: Runtime):
    examples = read_squad_examples(args.train_file, is_training=True,
                                   version_2_with_negative=args.version_2_with_negative)
    if args.max_train_samples:
        examples = examples[:args.max_train_samples]
    with main_process_first(rt, args.cache_dir):
        features = convert_examples_to_features(
            examples, tokenizer, **WindowConfig.from_args(args).to_dict(), is_training=True,
            cache_dir=args.cache_dir, show_progress=rt.is_main)
    logger.info("train: %d questions -> %d features (%s)", len(examples), len(features), args.train_file)
    return examples, features


def run(args: argparse.Namespace) -> dict[str, Any] | None:
    rt = setup_runtime(args)
    setup_logging(rt.rank)
    try:
        if rt.distributed:
            logger.info("distributed: world size %d, backend %s, device %s", rt.world_size, dist.get_backend(),
                        rt.device)
        else:
            logger.info("world size 1, device %s", rt.device)
        if rt.device.type == "cuda":
            # fp32 matmuls on tensor cores (TF32): the usual fine-tuning setting, several times faster on Ampere+.
            torch.set_float32_matmul_precision("high")
        model_path = Path(args.model_name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        if not getattr(tokenizer, "is_fast", False):
            raise UsageError(f"{model_path}: a fast tokenizer (tokenizer.json) is required for the character offsets")
        # validate_args checked the windows against BERT's 3 special tokens; RoBERTa / MPNet put 4 in each window.
        problems = WindowConfig.from_args(args).problems(n_special=special_layout(tokenizer).n_special)
        if problems:
            raise UsageError(f"--max_seq_length/--doc_stride/--max_query_length with {model_path}'s tokenizer: "
                             + "; ".join(problems))

        output_dir = Path(args.output_dir)
        if rt.is_main:
            output_dir.mkdir(parents=True, exist_ok=True)
            clean_stale_tmp(output_dir)
        if rt.is_main and args.do_train and args.overwrite_output_dir and args.resume_from_checkpoint is None:
            remove_previous_run(output_dir)
        rt.barrier()

        # The same seed on every rank for initialisation (new QA head, re-initialised layers), so ranks agree;
        # the dropout streams are re-seeded per rank below.
        set_seed(args.seed)
        model = load_qa_model(model_path, trained_head=False)  # a base encoder's new head: logged, not a warning table
        if args.reinit_layers and args.do_train and args.resume_from_checkpoint is None:
            names = reinit_top_layers(model, args.reinit_layers)
            logger.info("re-initialised the top %d layers: %s", args.reinit_layers, ", ".join(names))
        model.to(rt.device)

        eval_data = None
        if args.do_eval:
            eval_data = load_eval_data(args, tokenizer, rt, args.max_eval_samples)
        metrics: dict[str, Any] | None = None
        kind = "as loaded"
        if args.do_train:
            train_examples, train_features = load_train_features(args, tokenizer, rt)
            if len(train_features) == 0:
                raise UsageError(f"--train_file {args.train_file}: no training features")
            step_eval = None
            if args.eval_steps:
                if eval_data is None:
                    step_eval = load_eval_data(args, tokenizer, rt, args.eval_subset or args.max_eval_samples)
                elif args.eval_subset and args.eval_subset < len(eval_data.examples):
                    step_eval = eval_data.first(args.eval_subset)
                else:
                    step_eval = eval_data
            trainer = Trainer(args, rt, model, tokenizer, train_features, step_eval, output_dir)
            if args.teacher is not None:
                trainer.teacher = teacher_for_training(args, rt, train_examples, train_features, tokenizer)
            trainer.setup()
            if args.resume_from_checkpoint == "latest":
                found = latest_intact_checkpoint(output_dir)
                if found is None:
                    raise UsageError(f"--resume_from_checkpoint latest: every {CHECKPOINT_PREFIX}* folder in "
                                     f"{output_dir} is damaged (see the warnings above)")
                trainer.resume(*found)
            elif args.resume_from_checkpoint is not None:
                ckpt = Path(args.resume_from_checkpoint)
                trainer.resume(ckpt, check_checkpoint(ckpt))
            else:
                set_seed(args.seed + rt.rank)
            resumed = args.resume_from_checkpoint is not None
            trainer.log = MetricsLog(output_dir, enabled=rt.is_main,
                                     resume_step=trainer.state.global_step if resumed else None)
            if resumed:
                trainer.log.write({"event": "resume", "step": trainer.state.global_step})
            try:
                finished = trainer.train()
            finally:
                trainer.log.close()
            if not finished:
                return None
            model, kind = trainer.averaging.eval_model(trainer.model)
            info = trainer.run_info(kind, None)
            if rt.is_main:
                save_model_dir(model, tokenizer, output_dir, info)
                logger.info("saved the final model (%s weights) to %s", kind, output_dir)
            rt.barrier()
        if args.do_eval:
            metrics = evaluate(args, rt, model, eval_data, output_dir=output_dir)
            if rt.is_main:
                metrics["weights"] = kind
                (output_dir / "eval_results.json").write_text(json.dumps(metrics, indent=2) + "\n")
                if args.do_train:  # the record saved with the final model gets its score
                    info["metrics"] = metrics
                    write_run_record(output_dir, info)
                logger.info("eval (%s weights, %d questions): EM %.2f F1 %.2f", kind, metrics["num_questions"],
                            em_of(metrics), f1_of(metrics))
        return metrics
    finally:
        if rt.distributed and dist.is_initialized():
            dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    setup_logging(int(os.environ.get("RANK", "0")))
    try:
        args = parse_args(argv)
        if args.model_name_or_path is None:
            args.model_name_or_path = str(squad_qa.default_base_model_path())
        validate_args(args)
        metrics = run(args)
    except SquadFormatError as e:
        logger.error("bad SQuAD file: %s", e)
        return 2
    except (UsageError, CheckpointError, ChecksumError, TeacherCacheError) as e:  # each names what and where
        logger.error("%s", e)
        return 2
    except NonFiniteLossError as e:
        logger.error("%s", e)
        return 1
    if metrics is not None and int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: metrics[k] for k in metrics if k in ("exact_match", "f1", "exact", "HasAns_f1",
                                                                  "NoAns_f1", "weights")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
