"""The training loop: one ``Trainer`` holds everything the loop changes, so a checkpoint saves all of it.

    setup()              batches, optimiser and schedule, EMA / SWA, FGM / PGD, DDP
    resume(ckpt)         back to a checkpoint's exact position (weights, optimiser, RNG, batch order)
    train()              optimiser steps until the run's total, with check points for logging, evaluation and
                         checkpoints (the only places the loop waits for the device)

train.py builds it (``run``) from the flags and saves what it leaves.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm.auto import tqdm

import squad_qa
from squad_qa.training.adversarial import build_adversary
from squad_qa.files.atomic import atomic_dir, commit_dir
from squad_qa.training.averaging import WeightAveraging
from squad_qa.training.checkpoint import (TrainState, find_latest_checkpoint, load_checkpoint,
                                 restore_rng, save_checkpoint, save_model_dir)
from squad_qa.training.config import UsageError
from squad_qa.training.evaluation import EvalData, evaluate
from squad_qa.scoring.metrics import em_of, f1_of
from squad_qa.model.batching import LengthGroupedBatchSampler, collate, model_input_names
from squad_qa.training.losses import check_train_targets, compute_loss
from squad_qa.training.optim import build_optimizer, build_scheduler
from squad_qa.training.run_log import Interval, MetricsLog, NonFiniteLossError
from squad_qa.training.runtime import Runtime, autocast_context

logger = logging.getLogger(__name__)


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
