"""metrics.jsonl: the training log of a run folder (and TensorBoard when it is installed)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

try:  # optional: TensorBoard event files next to metrics.jsonl
    from torch.utils.tensorboard import SummaryWriter
except ImportError:  # pragma: no cover - depends on the environment
    SummaryWriter = None

from squad_qa.files.run_record import METRICS_FILE
from squad_qa.training.runtime import Runtime

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN/inf; the run stops without saving the poisoned weights."""


def _row(line: str) -> dict[str, Any] | None:
    """A complete JSON row, or None (a run killed mid-write can leave the last line cut short)."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    return row if isinstance(row, dict) else None


class MetricsLog:
    """metrics.jsonl (one JSON object per logging/eval step) + TensorBoard when it is installed; rank 0 only.

    Training rows: step, epoch, loss (mean since the last row), lr (the largest group lr), grad_norm (before
    clipping), samples_per_s and tokens_per_s (non-padding tokens) over all ranks. Eval rows: eval_exact_match,
    eval_f1. On resume, rows after the checkpoint's step (training that was thrown away) are dropped and a
    {"event": "resume"} row marks the spot, so the file is the trajectory of the weights actually kept.
    """

    def __init__(self, output_dir: Path, enabled: bool, resume_step: int | None = None) -> None:
        self.enabled = enabled
        self.path = output_dir / METRICS_FILE
        self.tb = None
        if not enabled:
            return
        if resume_step is None:
            self.path.unlink(missing_ok=True)
        elif self.path.exists():
            kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                    if (row := _row(line)) is not None and row.get("step", 0) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        if SummaryWriter is not None:
            self.tb = SummaryWriter(log_dir=str(output_dir / "runs"))
        else:
            logger.info("tensorboard not installed: logging to %s only", self.path)

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None and "step" in row:
            for k, v in row.items():
                if k not in ("step", "event") and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class Interval:
    """What the loop accumulates between two check points, on the device (no host sync per step)."""

    NONE = 2.0 ** 62  # "no non-finite step yet": larger than any step number, and exact in float32's range

    def __init__(self, device: torch.device) -> None:
        self.loss = torch.zeros((), device=device)
        self.first_bad = torch.full((), self.NONE, device=device)
        self.bad_loss = torch.zeros((), device=device)
        self.grad_norm: torch.Tensor | None = None
        self.steps = self.samples = self.tokens = 0
        self.t = time.perf_counter()

    def add(self, loss: torch.Tensor, samples: int, tokens: int, step: int) -> None:
        loss = loss.detach().float()
        new_bad = ~torch.isfinite(loss) & (self.first_bad == self.NONE)
        self.first_bad = torch.where(new_bad, torch.full_like(self.first_bad, step), self.first_bad)
        self.bad_loss = torch.where(new_bad, loss, self.bad_loss)
        self.loss = self.loss + loss
        self.steps += 1
        self.samples += samples
        self.tokens += tokens

    def reduce(self, rt: Runtime) -> tuple[float, float, float, float, float]:
        """(summed loss, samples, tokens, first non-finite step, its loss) over all ranks: one host sync.

        Every rank reaches the same check points, so a small all-reduce there lets all of them see the first
        non-finite step of any rank and stop together (none waits for a rank that stopped alone).
        """
        stats = torch.stack([self.loss, torch.tensor(float(self.samples), device=rt.device),
                             torch.tensor(float(self.tokens), device=rt.device), self.first_bad, self.bad_loss])
        if rt.distributed:
            sums, worst = stats[:3].clone(), stats[3:].clone()
            dist.all_reduce(sums)
            dist.all_reduce(worst[:1], op=dist.ReduceOp.MIN)
            dist.all_reduce(worst[1:], op=dist.ReduceOp.SUM)  # nan/inf stays nan/inf
            stats = torch.cat([sums, worst])
        loss_sum, samples, tokens, first_bad, bad_loss = stats.tolist()
        return loss_sum, samples, tokens, first_bad, bad_loss
