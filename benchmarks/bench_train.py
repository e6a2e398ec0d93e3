"""Benchmark: training throughput with dynamic padding + length-grouped batches vs fixed 384 padding.

Same process, same base model, same training features (train-v1.1 at 384/128/64), same batches of
feature indices: one full optimiser step (forward, span loss, backward, AdamW) per batch.

* ``grouped``  ours: batches from ``LengthGroupedBatchSampler`` (epoch 0), each cut to its longest window
* ``dynamic``  the same features in random batches, each cut to its longest window (no grouping)
* ``fixed``    the peer, run_squad's ``pad_to_max_length``: the ``grouped`` batches padded to 384

Prints the median step time, samples/s and real (non-padding) tokens/s of each, and the ratios to ``fixed``.

``--sweep``: the CPU training settings instead, each on length-grouped batches of all of train-v1.1 —
float32 vs bf16 autocast, eager vs ``torch.compile`` of the model, max_seq_length 384 vs 256, batch 32 vs
64 — with samples/s, real tokens/s, achieved GFLOP/s (the model's matrix-product FLOPs per real token,
forward + backward = 3x forward) and the projected wall time of one epoch. The timed steps are a stratified
sample of the epoch's length-grouped batches (the batches at evenly spaced quantiles of width), so their mean
step time times the epoch's number of batches projects the epoch. The peer is plain PyTorch: float32, eager,
384, batch 32.

    python benchmarks/bench_train.py                          # CPU, 10 timed steps of batch 8
    python benchmarks/bench_train.py --device cuda --bf16 --batch_size 32 --steps 30
    python benchmarks/bench_train.py --limit 300 --steps 3    # quick check
    python benchmarks/bench_train.py --sweep --steps 6        # the CPU settings table (README)
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from squad_qa import default_base_model_path
from squad_qa.model.batching import LengthGroupedBatchSampler, collate
from squad_qa.data.squad import read_squad_examples
from squad_qa.data.features import convert_examples_to_features
from squad_qa.model.model_dir import load_qa_model
from squad_qa.training.optim import build_optimizer
from squad_qa.training.losses import compute_loss
from squad_qa.training.runtime import autocast_context

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


def matmul_flops_per_token(config, width: float) -> float:
    """Forward matrix-product FLOPs per token of a BERT encoder + QA head, for windows ``width`` tokens
    wide: per layer Q, K, V and output projections (4 d^2 multiply-adds) and the feed-forward (2 d f),
    plus attention scores and the weighted sum (2 W d); 2 FLOPs per multiply-add."""
    d, f, n = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    return 2 * (n * (4 * d * d + 2 * d * f + 2 * width * d) + 2 * d)


SWEEP = [  # (name, bf16, compile, max_seq_length, batch_size); the first row is the peer
    ("float32, eager, 384, batch 32", False, False, 384, 32),
    ("bf16, eager, 384, batch 32", True, False, 384, 32),
    ("bf16, eager, 384, batch 64", True, False, 384, 64),
    ("bf16, eager, 256, batch 32", True, False, 256, 32),
    ("bf16, compile, 384, batch 32", True, True, 384, 32),
]


def sweep(args, model_path, device) -> int:
    """The CPU training settings table: see the module docstring."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    examples = read_squad_examples(args.train_file, is_training=True)
    if args.limit:
        examples = examples[:args.limit]
    features_by_len = {}
    for length in sorted({row[3] for row in (SWEEP if not args.rows else [SWEEP[int(i)] for i in args.rows.split(",")])},
                         reverse=True):
        features_by_len[length] = convert_examples_to_features(examples, tokenizer, max_seq_length=length,
                                                               doc_stride=128, max_query_length=64, is_training=True)
    print(f"{len(examples)} questions; " + "; ".join(
        f"max_seq_length {n}: {len(f)} windows, {int(f.seq_len.sum()):,} real tokens" for n, f in features_by_len.items()))
    print(f"device {device}, threads {torch.get_num_threads()}, {args.steps} timed steps per row after {args.warmup} "
          f"untimed (a compiled row also compiles during those)")
    rows = []
    chosen = [SWEEP[int(i)] for i in args.rows.split(",")] if args.rows else SWEEP
    for name, bf16, compiled, length, batch_size in chosen:
        features = features_by_len[length]
        # A stratified sample of the epoch's batches: sorted by width, the batches at evenly spaced
        # quantiles, so a few timed steps stand for the whole epoch's mix of short and long windows.
        # Warm-up: the narrowest and the widest batch (a compiled model builds its graphs on those).
        epoch = LengthGroupedBatchSampler(features.seq_len, batch_size, seed=args.seed).batches(0)
        # Full batches only: the epoch's one short last batch would make a compiled model specialise
        # (and recompile) on its size.
        by_width = sorted((b for b in epoch if len(b) == batch_size), key=lambda b: int(features.seq_len[b].max()))
        picks = np.linspace(0, len(by_width) - 1, args.steps + 2).round().astype(int)[1:-1]
        batches = [by_width[0], by_width[-1]][: args.warmup] + [by_width[i] for i in picks]
        step_args = argparse.Namespace(**{**vars(args), "bf16": bf16, "warmup": min(args.warmup, 2)})
        torch.manual_seed(args.seed)
        model = load_qa_model(model_path, trained_head=False).to(device)
        model.train()
        run_model = torch.compile(model, dynamic=True) if compiled else model
        optimizer = build_optimizer(model, argparse.Namespace(learning_rate=3e-5))
        times, tokens = time_steps(run_model, optimizer, features, batches, None, step_args, device)
        widths = [int(features.seq_len[b].max()) for b in batches[step_args.warmup:]]
        tok_s = sum(tokens) / sum(times)
        # FLOPs: 3x forward (backward = two matrix products per forward one), attention at each batch's width.
        flops = sum(3 * t * matmul_flops_per_token(model.config, w) for t, w in zip(tokens, widths))
        epoch_s = statistics.mean(times) * len(epoch)  # the stratified estimate of the epoch's steps
        rows.append((name, batch_size * len(times) / sum(times), tok_s, flops / sum(times) / 1e9, epoch_s))
        r = rows[-1]
        print(f"{name:30s} {r[1]:7.2f} samples/s {r[2]:8.0f} real tokens/s {r[3]:6.1f} GFLOP/s  "
              f"epoch {epoch_s / 3600:5.2f} h  ({len(features):,} windows)", flush=True)
        del model, run_model, optimizer
    peer = rows[0]  # the first row run (the whole sweep: float32 eager, the peer)
    print("\n| setting | samples/s | real tokens/s | GFLOP/s | one epoch | epoch speed vs float32 eager |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, sps, tps, gf, ep in rows:
        print(f"| {name} | {sps:.2f} | {tps:,.0f} | {gf:.0f} | {ep / 3600:.2f} h | {peer[4] / ep:.2f}x |")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train_file", type=Path, default=DEFAULT_TRAIN)
    p.add_argument("--model_name_or_path", type=Path, default=None)
    p.add_argument("--limit", type=int, default=None,
                   help="use the first N training questions (0: all; default 2000, with --sweep all)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="timed steps per mode")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per mode first")
    p.add_argument("--max_seq_length", type=int, default=384)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--sweep", action="store_true",
                   help="the CPU settings table (float32/bf16, eager/compile, 384/256, batch 32/64) on all of train")
    p.add_argument("--rows", default=None, help="with --sweep: the rows to run, e.g. 0,1,3 (default: all)")
    args = p.parse_args(argv)

    from transformers import AutoTokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model_path = args.model_name_or_path or default_base_model_path()
    if args.limit is None:
        args.limit = 0 if args.sweep else 2000  # the sweep projects an epoch: all of train
    if args.sweep:
        return sweep(args, model_path, device)
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
    model = load_qa_model(model_path, trained_head=False).to(device)
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
