"""Benchmark: packed batches (squad_qa/model/packing.py) against padded ones, in-process, as the service runs them.

The reader answers dev-v1.1 questions (every (total / n)-th, so all articles) `--group` at a time, the
way the service's micro-batches reach it. Three ways to run a call's windows:

- packed  ours: one padding-free row, attention window by window (`packing.packed_attention`)
- padded  transformers' SDPA attention over padded batches split by `batching.length_batches`
- hf-packed  transformers' own packed rows (5.25 and newer): the same row with `position_ids` that
          restart, no `cu_seq_lens`, transformers' SDPA attention with the block-diagonal mask it
          builds itself from those positions (only where transformers builds that mask)

Each round runs every mode once, in turn (first mode rotating); figures are medians over rounds, and
the answers of every mode are checked against padded.

    python benchmarks/bench_packing.py --num_questions 500 --group 8 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_service import DEFAULT_DEV, load_questions  # noqa: E402

from squad_qa.inference.reader import QAItem, QAReader  # noqa: E402
from squad_qa.model.packing import pack  # noqa: E402


def hf_packed_logits(reader: QAReader, features) -> tuple[np.ndarray, np.ndarray]:
    """transformers' own packed-sequence path: rows of up to max_batch_size windows, no cu_seq_lens."""
    width = features.max_seq_length
    start = np.zeros((len(features), width), np.float32)
    end = np.zeros((len(features), width), np.float32)
    n = len(features)
    with torch.inference_mode():
        for lo in range(0, n, reader.max_batch_size):
            rows = np.arange(lo, min(lo + reader.max_batch_size, n))
            inputs, window, position = pack(features, rows)
            inputs.pop("cu_seq_lens_q")
            out = reader.model(**inputs)
            start[rows[window], position] = out.start_logits[0].float().numpy()
            end[rows[window], position] = out.end_logits[0].float().numpy()
    return start, end


def hf_builds_packed_masks(reader: QAReader) -> bool:
    """Does this transformers keep the windows of a row apart by itself (block-diagonal mask)?"""
    job = reader.prepare([QAItem(q, c) for q, c in QAReader.PROBE_ITEMS])
    padded = reader._logits(job.features, packed=False)
    hf = hf_packed_logits(reader, job.features)
    real = np.arange(job.features.max_seq_length)[None, :] < job.features.seq_len[:, None]
    return bool(np.abs(padded[0][real] - hf[0][real]).max() < 1e-3)


def run(reader: QAReader, mode: str, items: list[QAItem], group: int) -> tuple[float, list]:
    answers = []
    t0 = time.perf_counter()
    for lo in range(0, len(items), group):
        job = reader.prepare(items[lo:lo + group])
        if mode == "hf-packed":
            job.start[:], job.end[:] = hf_packed_logits(reader, job.features)
        else:
            job.start[:], job.end[:] = reader._logits(job.features, packed=mode == "packed")
        answers.extend((a[0].text, a[0].start) for a in reader.finish(job))
    return time.perf_counter() - t0, answers


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=None, help="checkpoint folder (default: the shipped model)")
    p.add_argument("--predict_file", type=Path, default=DEFAULT_DEV)
    p.add_argument("--num_questions", type=int, default=500)
    p.add_argument("--group", type=int, default=8, help="questions per model call (the service's micro-batch)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtype", default="float32")
    args = p.parse_args(argv)

    questions = load_questions(args.predict_file, args.num_questions, "spread")
    items = [QAItem(q["question"], q["context"]) for q in questions]
    packed_reader = QAReader.from_pretrained(args.model, device="cpu", dtype=args.dtype)
    if not packed_reader.packed:
        print("packing is off for this model / these versions (see the log); nothing to compare")
        return 1
    hf_reader = QAReader.from_pretrained(args.model, device="cpu", dtype=args.dtype, packed=False)
    modes = {"packed": packed_reader, "padded": packed_reader}
    if hf_builds_packed_masks(hf_reader):
        modes["hf-packed"] = hf_reader
    print(f"{len(items)} questions, {args.group} per call; {args.dtype}; torch {torch.__version__}, transformers "
          f"{transformers.__version__}; {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; modes {list(modes)}")
    times: dict[str, list[float]] = {m: [] for m in modes}
    answers = {}
    for r in range(args.repeats):
        order = list(modes)[r % len(modes):] + list(modes)[:r % len(modes)]
        for mode in order:
            took, answers[mode] = run(modes[mode], mode, items, args.group)
            times[mode].append(took)
        print(f"round {r + 1}: " + ", ".join(f"{m} {len(items) / times[m][-1]:.1f} q/s" for m in modes), flush=True)
    base = statistics.median(times["padded"])
    for mode in modes:
        med = statistics.median(times[mode])
        same = sum(a == b for a, b in zip(answers[mode], answers["padded"]))
        print(f"{mode:>9}: {len(items) / med:6.1f} q/s (median of {args.repeats}), {base / med:.2f}x padded; "
              f"answers as padded: {same}/{len(items)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
