"""Evaluation during and after training: dev features -> logits (sharded over DDP ranks, gathered on rank 0)
-> n-best spans -> the official SQuAD EM/F1."""

from __future__ import annotations

import argparse
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from squad_qa.model.batching import predict_logits
from squad_qa.data.squad import load_squad_json, read_squad_examples
from squad_qa.data.features import convert_examples_to_features
from squad_qa.scoring.metrics import evaluate_v1, evaluate_v2
from squad_qa.spans.postprocess import postprocess_predictions, write_predictions
from squad_qa.training.runtime import Runtime, autocast_context, main_process_first
from squad_qa.data.windows import WindowConfig

logger = logging.getLogger(__name__)


@dataclass
class EvalData:
    examples: list
    features: Any
    dataset: list  # the SQuAD "data" list restricted to these questions, for the official scorer
    name: str = "eval"

    def first(self, n: int) -> EvalData:
        """The first ``n`` questions: what ``load_eval_data(..., limit=n)`` returns, without reading the file again
        (a question's windows depend on it alone, so they are the same rows)."""
        examples = self.examples[:n]
        return EvalData(examples, self.features.select(np.flatnonzero(self.features.example_index < n)),
                        _restrict_dataset(self.dataset, {e.qas_id for e in examples}), self.name)


def _restrict_dataset(data: list, qids: set[str]) -> list:
    """The official scorer counts every question in the file; keep only the ones we predict."""
    out = []
    for article in data:
        paragraphs = []
        for para in article["paragraphs"]:
            qas = [qa for qa in para["qas"] if qa["id"] in qids]
            if qas:
                paragraphs.append({**para, "qas": qas})
        if paragraphs:
            out.append({**article, "paragraphs": paragraphs})
    return out


def load_eval_data(args: argparse.Namespace, tokenizer, rt: Runtime, limit: int | None = None) -> EvalData:
    data = load_squad_json(args.predict_file)["data"]  # read once: the examples and the scorer's dataset
    examples = read_squad_examples(args.predict_file, is_training=False,
                                   version_2_with_negative=args.version_2_with_negative, dataset=data)
    if limit:
        examples = examples[:limit]
    with main_process_first(rt, args.cache_dir):
        features = convert_examples_to_features(
            examples, tokenizer, **WindowConfig.from_args(args).to_dict(), is_training=False,
            cache_dir=args.cache_dir, show_progress=rt.is_main)
    dataset = _restrict_dataset(data, {e.qas_id for e in examples})
    logger.info("eval: %d questions -> %d features (%s)", len(examples), len(features), args.predict_file)
    return EvalData(examples, features, dataset)


def evaluate(args: argparse.Namespace, rt: Runtime, model, data: EvalData,
             output_dir: Path | None = None) -> dict[str, Any] | None:
    """Predict ``data`` (sharded over ranks, gathered on rank 0), decode, score.

    Returns the metrics on rank 0 (None on the other ranks) and, when ``output_dir`` is given, writes the
    prediction files there.
    """
    t0 = time.perf_counter()
    n = len(data.features)
    shard = np.array_split(np.arange(n), rt.world_size)[rt.rank]
    start, end = predict_logits(model, data.features, shard, args.per_device_eval_batch_size, rt.device,
                                autocast_context(args, rt.device), rt.pad_multiple, show_progress=rt.is_main)
    if rt.distributed:
        # Shards differ by at most one row: pad to the largest, all_gather tensors, rank 0 puts rows back.
        rows = math.ceil(n / rt.world_size)
        local = torch.zeros((2, rows, start.shape[1]), dtype=torch.float32)
        local[0, :len(shard)], local[1, :len(shard)] = torch.from_numpy(start), torch.from_numpy(end)
        local = local.to(rt.device)
        gathered = [torch.empty_like(local) for _ in range(rt.world_size)]
        dist.all_gather(gathered, local)
        if rt.is_main:
            start = np.zeros((n, start.shape[1]), dtype=np.float32)
            end = np.zeros_like(start)
            for idx, t in zip(np.array_split(np.arange(n), rt.world_size), gathered):
                t = t.cpu().numpy()
                start[idx], end[idx] = t[0, :len(idx)], t[1, :len(idx)]
    metrics: dict[str, Any] | None = None
    if rt.is_main:
        result = postprocess_predictions(
            data.examples, data.features, start, end, n_best_size=args.n_best_size,
            max_answer_length=args.max_answer_length, version_2_with_negative=args.version_2_with_negative,
            null_score_diff_threshold=args.null_score_diff_threshold)
        if args.version_2_with_negative:
            metrics = dict(evaluate_v2(data.dataset, result.predictions))
        else:
            metrics = dict(evaluate_v1(data.dataset, result.predictions))
        metrics.update(num_questions=len(data.examples), num_features=n,
                       eval_seconds=round(time.perf_counter() - t0, 2))
        if output_dir is not None:
            write_predictions(result, output_dir)
    return metrics
