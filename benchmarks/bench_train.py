"""Benchmark: training throughput with dynamic padding + length-grouped batches vs fixed 384 padding.

Same process, same base model, same training features (train-v1.1 at 384/128/64), same batches of
feature indices: one full optimiser step (forward, span loss, backward, AdamW) per batch.

* ``grouped``  ours: batches from ``LengthGroupedBatchSampler`` (epoch 0), each cut to its longest window
* ``dynamic``  the same features in random batches, each cut to its longest window (no grouping)
* ``fixed``    the peer, run_squad's ``pad_to_max_length``: the ``grouped`` batches padded to 384

Prints the median step time, samples/s and real (non-padding) tokens/s of each, and the ratios to ``fixed``.

    python benchmarks/bench_train.py                          # CPU, 10 timed steps of batch 8
    python benchmarks/bench_train.py --device cuda --bf16 --batch_size 32 --steps 30
    python benchmarks/bench_train.py --limit 300 --steps 3    # quick check
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from squad_qa import default_base_model_path
from squad_qa.data import read_squad_examples
from squad_qa.features import convert_examples_to_features
from squad_qa.optim import build_optimizer
from squad_qa.train import LengthGroupedBatchSampler, autocast_context, collate, compute_loss

DEFAULT_TRAIN = Path(__file__).resolve().parents[1] / ".." / "shared" / "squad" / "train-v1.1.json.gz"


def time_steps(model, optimizer, features, batches, pad_to, args, device) -> tuple[list[float], list[int]]:
    """Seconds and real tokens of each step (the first ``args.warmup`` steps are run but not returned)."""
    loss_args = argparse.Namespace(label_smoothing=0.0, rdrop_alpha=0.0, bf16=args.bf16, fp16=False)
    times, tokens = [], []
    for i, idx in enumerate(batches):
        batch = collate(features, idx, pad_to=pad_to)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        batch = {k: v.to(device) for k, v in batch.items()}
        loss = compute_loss(model, batch, loss_args, autocast_context(loss_args, device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
            tokens.append(int(features.seq_len[idx].sum()))
    return times, tokens


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train_file", type=Path, default=DEFAULT_TRAIN)
    p.add_argument("--model_name_or_path", type=Path, default=None)
    p.add_argument("--limit", type=int, default=2000, help="use the first N training questions (0: all)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="timed steps per mode")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per mode first")
    p.add_argument("--max_seq_length", type=int, default=384)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)

    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model_path = args.model_name_or_path or default_base_model_path()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    examples = read_squad_examples(args.train_file, is_training=True)
    if args.limit:
        examples = examples[:args.limit]
    features = convert_examples_to_features(examples, tokenizer, max_seq_length=args.max_seq_length,
                                            doc_stride=128, max_query_length=64, is_training=True)
    n_batches = args.warmup + args.steps
    # Skip batch 0: the sampler puts the longest batch first on purpose (out-of-memory check), which is
    # not representative of an epoch.
    grouped = LengthGroupedBatchSampler(features.seq_len, args.batch_size, seed=args.seed).batches(0)[1:1 + n_batches]
    if len(grouped) < n_batches:
        raise SystemExit(f"only {len(grouped)} batches from {len(features)} features: raise --limit")
    rng = np.random.default_rng(args.seed)
    pool = rng.permutation(np.concatenate(grouped))
    random_batches = [pool[i:i + args.batch_size] for i in range(0, len(pool), args.batch_size)]

    torch.manual_seed(args.seed)
    model = AutoModelForQuestionAnswering.from_pretrained(model_path, dtype=torch.float32).to(device)
    model.train()
    optimizer = build_optimizer(model, argparse.Namespace(learning_rate=3e-5))

    print(f"{len(examples)} questions -> {len(features)} features; mean window {features.seq_len.mean():.0f} "
          f"of {args.max_seq_length} tokens; batch {args.batch_size}, {args.steps} timed steps, device {device}, "
          f"threads {torch.get_num_threads()}{', bf16' if args.bf16 else ''}")
    results = {}
    for name, batches, pad_to in (("grouped", grouped, None), ("dynamic", random_batches, None),
                                  ("fixed", grouped, args.max_seq_length)):
        times, tokens = time_steps(model, optimizer, features, batches, pad_to, args, device)
        width = [min(args.max_seq_length, pad_to or int(features.seq_len[b].max())) for b in batches[args.warmup:]]
        med = statistics.median(times)
        results[name] = {
            "median_step_s": med,
            "samples_per_s": args.batch_size / med,
            "tokens_per_s": statistics.median(t / s for t, s in zip(tokens, times)),
            "mean_width": float(np.mean(width)),
        }
        r = results[name]
        print(f"{name:8s} median step {med * 1000:8.1f} ms  {r['samples_per_s']:8.2f} samples/s  "
              f"{r['tokens_per_s']:9.0f} real tokens/s  mean batch width {r['mean_width']:.0f}")
    base = results["fixed"]["samples_per_s"]
    print(f"ratio grouped/fixed  (ours / run_squad pad-to-384): {results['grouped']['samples_per_s'] / base:.2f}x")
    print(f"ratio dynamic/fixed  (dynamic padding alone):        {results['dynamic']['samples_per_s'] / base:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
