"""Fine-tune a QA encoder on SQuAD: the training loop of run_squad.py, plus the usual tricks.

This module is the ``Trainer`` and ``run``/``main``; each stage it drives has its own module:
    config.py      run_squad flag names; ``--config FILE`` (JSON/YAML) as defaults; every bad flag refused at once
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
import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm.auto import tqdm
from transformers import AutoTokenizer

import squad_qa
from squad_qa.training.adversarial import build_adversary
from squad_qa.files.atomic import atomic_dir, commit_dir
from squad_qa.training.averaging import WeightAveraging
from squad_qa.training.checkpoint import (CHECKPOINT_PREFIX, TrainState, check_checkpoint, clean_stale_tmp,
                                 find_latest_checkpoint, latest_intact_checkpoint, load_checkpoint,
                                 remove_previous_run, restore_rng, save_checkpoint, save_model_dir)
from squad_qa.files.checksums import ChecksumError
from squad_qa.training.config import UsageError, parse_args, validate_args
from squad_qa.data.squad import SquadFormatError, read_squad_examples
from squad_qa.training.distill import TeacherCacheError, teacher_for_training
from squad_qa.training.evaluation import EvalData, evaluate, load_eval_data
from squad_qa.scoring.metrics import em_of, f1_of
from squad_qa.data.features import convert_examples_to_features, special_layout
from squad_qa.model.batching import LengthGroupedBatchSampler, collate, model_input_names
from squad_qa.model.model_dir import CheckpointError, load_qa_model
from squad_qa.files.run_record import write_run_record
from squad_qa.training.losses import check_train_targets, compute_loss
from squad_qa.training.optim import build_optimizer, build_scheduler, reinit_top_layers
from squad_qa.training.run_log import Interval, MetricsLog, NonFiniteLossError
from squad_qa.training.runtime import Runtime, autocast_context, main_process_first, set_seed, setup_logging, setup_runtime
from squad_qa.data.windows import WindowConfig

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


# ----------------------------------------------------------------------------------------------------------------
# Training


@dataclass
class Trainer:
    """Everything the loop mutates, in one place, so save/resume sees all of it."""

    args: argparse.Namespace
    rt: Runtime
    model: Any  # the unwrapped BertForQuestionAnswering (raw weights)
    tokenizer: Any
    train_features: Any
    eval_data: EvalData | None
    output_dir: Path
    ddp_model: Any = None
    optimizer: Any = None
    scheduler: Any = None
    scaler: Any = None
    averaging: WeightAveraging | None = None  # EMA / SWA / none: the weights evaluated and saved
    adversary: Any = None
    sampler: LengthGroupedBatchSampler | None = None
    state: TrainState = field(default_factory=TrainState)
    steps_per_epoch: int = 0
    input_names: tuple[str, ...] = ()  # the window inputs the model's forward takes
    log: MetricsLog | None = None
    teacher: Any = None  # distill.CachedTeacher / LiveTeacher (--teacher): (feature rows, width) -> logits
    _interval: Any = None  # Interval: the loop's device-side accumulators between check points

    # -- setup ------------------------------------------------------------------------------------------------
    def setup(self) -> None:
        args, rt = self.args, self.rt
        self.input_names = model_input_names(self.model)  # e.g. no token_type_ids for MPNet
        check_train_targets(self.train_features)
        self.sampler = LengthGroupedBatchSampler(
            self.train_features.seq_len, args.per_device_train_batch_size, seed=args.seed,
            group_by_length=not args.no_group_by_length, num_replicas=rt.world_size, rank=rt.rank)
        steps_per_epoch = math.ceil(len(self.sampler) / args.gradient_accumulation_steps)
        total = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * steps_per_epoch)
        self.steps_per_epoch = steps_per_epoch
        self.state = TrainState.for_run(args, rt.world_size, len(self.train_features), total)
        warmup = args.warmup_steps or math.ceil(args.warmup_ratio * total)

        self.optimizer = build_optimizer(self.model, args)
        if warmup > total:
            raise UsageError(f"--warmup_steps {warmup} exceeds the {total} optimiser steps of this run")
        self.scheduler = build_scheduler(self.optimizer, args.lr_scheduler, warmup, total)
        self.scaler = torch.amp.GradScaler(rt.device.type, enabled=args.fp16)

        swa_start_step = None
        if args.swa_start is not None:  # a fraction of the run, or a number of epochs
            swa_start_step = int(args.swa_start * (total if args.swa_start < 1 else steps_per_epoch))
            if swa_start_step >= total:
                raise UsageError(f"--swa_start {args.swa_start} is at step {swa_start_step}, but training "
                                 f"has only {total} steps: nothing would be averaged")
        self.averaging = WeightAveraging(
            self.model, ema_decay=args.ema_decay, swa_start_step=swa_start_step,
            swa_lr=args.swa_lr if args.swa_lr is not None else args.learning_rate,
            swa_anneal_steps=args.swa_anneal_steps, swa_freq=args.swa_freq, total_steps=total)

        self.adversary = build_adversary(self.model, args)  # --adv fgm / pgd, else None

        if rt.distributed:
            self.ddp_model = DDP(self.model, device_ids=[rt.local_rank] if rt.device.type == "cuda" else None)
        else:
            self.ddp_model = self.model
        logger.info("training: %d features, world size %d, batch %d x %d accumulation x %d ranks, "
                    "%d steps/epoch, %d steps, warmup %d", len(self.train_features), rt.world_size,
                    args.per_device_train_batch_size, args.gradient_accumulation_steps, rt.world_size,
                    steps_per_epoch, total, warmup)

    def resume(self, ckpt: Path, saved: TrainState) -> None:
        """Continue from ``ckpt``, whose files ``check_checkpoint`` has found intact (``saved``: its state)."""
        rt = self.rt
        key = saved.data_position_mismatch(self.state)
        if key is not None:
            raise UsageError(f"cannot resume from {ckpt}: it was written with {key}={getattr(saved, key)}, "
                             f"this run has {key}={getattr(self.state, key)} (the data position would not match)")
        if saved.swa_started:
            self.averaging.start_swa(self.optimizer)  # before the optimiser state is loaded (see start_swa)
        total = self.state.total_steps
        load_checkpoint(rt, ckpt, self.model, self.optimizer, self.scheduler, self.scaler, self.averaging.averaged,
                        self.averaging.swa_scheduler)
        self.state = saved
        if self.state.total_steps != total:
            if not self.args.replan_schedule:
                raise UsageError(f"cannot resume from {ckpt}: it was planned for {self.state.total_steps} steps, "
                                 f"these flags give {total} (--replan_schedule continues with the new total)")
            if total <= self.state.global_step:
                raise UsageError(f"--replan_schedule: {total} steps, but {ckpt} is already at step "
                                 f"{self.state.global_step}")
            # The scheduler was built for `total` (setup); its saved state only carries the step count,
            # so from here the learning rate follows the new plan (e.g. decays to 0 by the new end).
            logger.warning("re-planned the schedule from step %d: %d steps in all instead of %d",
                           self.state.global_step, total, self.state.total_steps)
            self.state.total_steps = total
        restore_rng(rt, ckpt)
        logger.info("resumed from %s: step %d, epoch %d, batch %d of the epoch", ckpt, self.state.global_step,
                    self.state.epoch, self.state.batch_in_epoch)

    # -- one optimiser step -----------------------------------------------------------------------------------
    def _sync_context(self, final_backward: bool) -> contextlib.AbstractContextManager:
        # With DDP, gradients are all-reduced on every backward unless inside no_sync(); accumulate locally and
        # let only the last backward of the optimiser step synchronise (forward included, as DDP requires).
        if self.rt.distributed and not final_backward:
            return self.ddp_model.no_sync()
        return contextlib.nullcontext()

    def _backward(self, loss: torch.Tensor, scale: float) -> None:
        self.scaler.scale(loss * scale).backward()

    def train_step(self, micro_batches: list[np.ndarray]) -> tuple[torch.Tensor, int, int]:
        """Forward/backward over the micro-batches of one optimiser step; returns (summed loss, samples, tokens)."""
        args, rt = self.args, self.rt
        kd = self.teacher is not None
        need_mask = args.label_smoothing > 0 or args.rdrop_alpha > 0 or kd
        n_micro = len(micro_batches)
        loss_sum = torch.zeros((), device=rt.device)
        samples = tokens = 0
        for j, idx in enumerate(micro_batches):
            batch = collate(self.train_features, idx, pad_multiple=rt.pad_multiple, with_valid_mask=need_mask,
                            input_names=self.input_names)
            if kd:  # the teacher's logits of these windows at the batch's width (cached: host rows; live: a forward)
                batch["teacher_start"], batch["teacher_end"] = self.teacher(idx, batch["input_ids"].shape[1])
            batch = {k: v.to(rt.device, non_blocking=True) for k, v in batch.items()}
            samples += len(idx)
            tokens += int(self.train_features.seq_len[idx].sum())
            last = j == n_micro - 1
            scale = 1.0 / n_micro  # mean over the micro-batches actually used (the last step may be short)

            def loss_fn() -> torch.Tensor:
                return compute_loss(self.ddp_model, batch, args, autocast_context(args, rt.device))

            if self.adversary is None:
                with self._sync_context(last):
                    loss = loss_fn()
                    self._backward(loss, scale)
            else:  # FGM/PGD: extra forward/backward passes on perturbed embeddings (adversarial.py)
                loss = self.adversary.backward_with_attack(loss_fn, lambda l: self._backward(l, scale),
                                                           self._sync_context, last, first_micro=j == 0)
            loss_sum += loss.detach()
        if args.debug_nan_at_step is not None and self.state.global_step + 1 == args.debug_nan_at_step:
            loss_sum = loss_sum * float("nan")
        return loss_sum / n_micro, samples, tokens

    def optimizer_step(self) -> torch.Tensor | None:
        """Clip, step, schedule, average; returns the grad norm as a device tensor (read at logging steps only)."""
        args = self.args
        grad_norm = None  # not computed without clipping (and NaN is not JSON)
        if args.max_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        step = self.state.global_step + 1  # the step just taken
        self.averaging.after_step(step, self.model, self.optimizer, self.scheduler)
        return grad_norm

    # -- what a saved model folder records -----------------------------------------------------------------------
    def run_info(self, kind: str, metrics: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "squad_qa_version": squad_qa.__version__,
            "weights": kind,
            "global_step": self.state.global_step,
            "world_size": self.rt.world_size,
            "metrics": metrics,
            "training_args": {k: v for k, v in vars(self.args).items()},
        }

    # -- the loop -----------------------------------------------------------------------------------------------
    def train(self) -> bool:
        """Runs to the end; returns False when stopped early by the debug hook (a simulated kill)."""
        args, rt, st = self.args, self.rt, self.state
        self.model.train()
        bar = tqdm(total=st.total_steps, initial=st.global_step, desc="training", disable=not rt.is_main,
                   dynamic_ncols=True)
        # The loss, the first non-finite step and the grad norm stay on the device between check points, so a
        # step does not wait for the GPU (a host sync per step costs a small model on a GPU about a third of its
        # speed; --fp16's GradScaler still reads its inf check every step, bf16 has none). Check points are the logging, evaluation and checkpoint steps and the last step: a non-finite
        # loss is reported there, before anything is evaluated or written, so no bad weights reach the disk.
        self._interval = Interval(rt.device)
        stopped = False
        while st.global_step < st.total_steps and not stopped:
            batches = self.sampler.batches(st.epoch)
            while st.batch_in_epoch < len(batches) and st.global_step < st.total_steps:
                group = batches[st.batch_in_epoch:st.batch_in_epoch + args.gradient_accumulation_steps]
                loss, samples, tokens = self.train_step(group)
                self._interval.add(loss, samples, tokens, st.global_step + 1)
                self._interval.grad_norm = self.optimizer_step()
                st.global_step += 1
                st.batch_in_epoch += len(group)
                bar.update(1)

                log_now = st.global_step % args.logging_steps == 0 or st.global_step == st.total_steps
                eval_now = bool(args.eval_steps) and st.global_step % args.eval_steps == 0
                save_now = bool(args.save_steps) and st.global_step % args.save_steps == 0
                stop_now = args.stop_after_steps is not None and st.global_step >= args.stop_after_steps
                if log_now or eval_now or save_now or stop_now:
                    self.check_point(bar, len(batches), log_now)
                if eval_now:
                    self.evaluate_during_training()
                    self._interval.t = time.perf_counter()
                if save_now:
                    self.save()
                    self._interval.t = time.perf_counter()
                if stop_now:
                    logger.warning("stopping after %d steps (--stop_after_steps)", st.global_step)
                    stopped = True
                    break
            else:
                st.epoch += 1
                st.batch_in_epoch = 0
        bar.close()
        return not stopped

    def check_point(self, bar, batches_in_epoch: int, log_now: bool) -> None:
        """Sync with the device: stop on a non-finite loss since the last check point, else log the interval."""
        rt, st, iv = self.rt, self.state, self._interval
        loss_sum, samples, tokens, first_bad, bad_loss = iv.reduce(rt)
        if first_bad < Interval.NONE:
            bar.close()
            last = find_latest_checkpoint(self.output_dir)
            raise NonFiniteLossError(
                f"non-finite training loss ({bad_loss}) at step {int(first_bad)} "
                f"(epoch {(int(first_bad) - 1) // self.steps_per_epoch}): "
                "stopping; the weights of this step were not saved. Last good checkpoint: "
                f"{last if last is not None else 'none'}. Try a lower --learning_rate, --bf16 instead of "
                "--fp16, or gradient clipping.")
        if log_now and iv.steps:
            dt = max(time.perf_counter() - iv.t, 1e-9)
            grad_norm = float(iv.grad_norm) if iv.grad_norm is not None else None
            row = {"step": st.global_step,
                   "epoch": round(st.epoch + st.batch_in_epoch / batches_in_epoch, 4),
                   "loss": loss_sum / rt.world_size / iv.steps,
                   "lr": max(g["lr"] for g in self.optimizer.param_groups),
                   "grad_norm": grad_norm,
                   "samples_per_s": samples / dt,
                   "tokens_per_s": tokens / dt}
            if rt.is_main:
                self.log.write(row)
                bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}")
                logger.info("step %d/%d epoch %.2f loss %.4f lr %.3g %.1f samples/s %.0f tokens/s",
                            st.global_step, st.total_steps, row["epoch"], row["loss"], row["lr"],
                            row["samples_per_s"], row["tokens_per_s"])
            self._interval = Interval(rt.device)

    def save(self) -> None:
        self.state.swa_started = self.averaging.swa_scheduler is not None  # resume restarts the SWA schedule
        save_checkpoint(self.rt, self.output_dir, self.state, self.model, self.tokenizer, self.optimizer,
                        self.scheduler, self.averaging.swa_scheduler, self.scaler, self.averaging.averaged,
                        self.args.save_total_limit)

    def evaluate_during_training(self) -> None:
        args, rt, st = self.args, self.rt, self.state
        model, kind = self.averaging.eval_model(self.model)
        metrics = evaluate(args, rt, model, self.eval_data)
        if rt.is_main:
            f1, em = f1_of(metrics), em_of(metrics)
            improved = st.best_f1 is None or f1 > st.best_f1
            if improved:
                st.best_f1, st.best_step = f1, st.global_step  # rank 0's state is the one checkpointed
            self.log.write({"step": st.global_step, "eval_exact_match": em, "eval_f1": f1, "weights": kind,
                            "eval_questions": metrics["num_questions"], "best": improved})
            logger.info("eval at step %d (%s weights, %d questions): EM %.2f F1 %.2f%s", st.global_step, kind,
                        metrics["num_questions"], em, f1, " (best so far)" if improved else "")
            if improved:
                best = self.output_dir / "best"
                tmp = atomic_dir(best)
                save_model_dir(model, self.tokenizer, tmp, self.run_info(kind, metrics))
                commit_dir(tmp, best)
        rt.barrier()


# ----------------------------------------------------------------------------------------------------------------
# main


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
