"""Where a run executes: device, torchrun's distributed ranks, seeds, autocast, logging."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import sys
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist



def use_cuda(args: argparse.Namespace) -> bool:
    return torch.cuda.is_available() and not args.no_cuda


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def pad_multiple(self) -> int:
        """Batch widths rounded up to a multiple of this: 8 on a GPU (tensor-core-friendly shapes), 1 elsewhere."""
        return 8 if self.device.type == "cuda" else 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def setup_runtime(args: argparse.Namespace) -> Runtime:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; without them this is a single-process run."""
    cuda = use_cuda(args)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if cuda:
            torch.cuda.set_device(local_rank)
            device = torch.device("cuda", local_rank)
        else:
            device = torch.device("cpu")
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if cuda else "gloo")
        return Runtime(device, rank, local_rank, world_size)
    return Runtime(torch.device("cuda" if cuda else "cpu"))


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def autocast_context(args: argparse.Namespace, device: torch.device) -> contextlib.AbstractContextManager:
    if args.bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if args.fp16:
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def main_process_first(rt: Runtime, cache_dir: str | None) -> Iterator[None]:
    """With a feature cache, rank 0 builds it and the others wait, then read it; without one, every
    rank converts at the same time (waiting would only serialise the same work)."""
    if cache_dir and not rt.is_main:
        rt.barrier()
    yield
    if cache_dir and rt.is_main:
        rt.barrier()


def setup_logging(rank: int) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # Other ranks only speak up for warnings: one readable log per run.
    logging.getLogger("squad_qa").setLevel(logging.INFO if rank == 0 else logging.WARNING)


def flag_problems(args: argparse.Namespace) -> list[str]:
    """What is wrong with the precision flags; [] when nothing."""
    if args.fp16 and args.bf16:
        return ["--fp16 and --bf16 cannot be combined: choose one"]
    if args.fp16 and not use_cuda(args):
        return ["--fp16 needs a CUDA GPU (float16 autocast on CPU is not supported); use --bf16 on CPU"]
    return []
