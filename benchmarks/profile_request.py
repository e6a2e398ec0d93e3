"""Where a request's time goes: pricing, windows, the model, decoding, and HTTP around them.

For each served variant (--variants), the same dev-v1.1 questions are answered in-process, stage by
stage, one question at a time (what one request at concurrency 1 costs) and 8 at a time (what a
batch at concurrency 8 costs), medians over the questions; then the same questions over HTTP at
concurrency 1 against `python -m service` with that variant, so "HTTP, JSON and hand-offs" is what
HTTP adds to the in-process total.

    pricing    QAReader.count_windows: the old service tokenised each request once to price it and
               again to cut its windows; the service now cuts them once (`prepare`) and prices
               those, so this row is what tokenising once saves
    windows    QAReader.prepare: item checks, tokenising, doc-stride windows
    model      QAReader.run_windows: every window through the model
    decoding   QAReader.finish: n-best spans, max-context rule, answers

    python benchmarks/profile_request.py --num_questions 200
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service import DEFAULT_DEV, ask_service, load_questions, start_service, stop_service  # noqa: E402

from squad_qa.inference.items import QAItem  # noqa: E402
from squad_qa.inference.reader import QAReader  # noqa: E402
from squad_qa.model.cpu import cpu_kind, model_threads  # noqa: E402

VARIANTS = {  # name: (QAReader.from_pretrained keywords, the service's flags)
    "torch-float32": ({"dtype": "float32"}, ["--backend", "torch"]),
    "torch-auto": ({"dtype": "auto"}, ["--backend", "torch"]),
    "onnx-float32": ({"backend": "onnx"}, ["--backend", "onnx"]),
    "onnx-int8": ({"backend": "onnx", "quantize": "int8"}, ["--backend", "onnx", "--quantize", "int8"]),
}


def stages(reader: QAReader, items: list[QAItem]) -> dict[str, float]:
    """Milliseconds of each stage for one call over ``items``."""
    t = [time.perf_counter()]
    reader.count_windows(items)
    t.append(time.perf_counter())
    job = reader.prepare(items)
    t.append(time.perf_counter())
    reader.run_windows([(job, np.arange(job.windows))])
    t.append(time.perf_counter())
    reader.finish(job)
    t.append(time.perf_counter())
    return {name: 1e3 * (b - a) for name, a, b in zip(("pricing", "windows", "model", "decoding"), t, t[1:])}


def profile(reader: QAReader, items: list[QAItem], group: int) -> dict[str, float]:
    rows = [stages(reader, items[i:i + group]) for i in range(0, len(items), group)]
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=Path("models/squad-minilm-l6"))
    p.add_argument("--predict_file", type=Path, default=DEFAULT_DEV)
    p.add_argument("--num_questions", type=int, default=200)
    p.add_argument("--variants", nargs="+", default=["torch-float32", "onnx-int8"], choices=list(VARIANTS))
    args = p.parse_args(argv)
    questions = load_questions(args.predict_file, args.num_questions, "spread")
    items = [QAItem(q["question"], q["context"]) for q in questions]
    print(f"{len(items)} dev-v1.1 questions; CPU kind {cpu_kind()}, {os.cpu_count()} CPUs, "
          f"{model_threads()} model threads; medians per request (ms)")
    print(f"{'variant':<15}{'items':>6}{'pricing':>9}{'windows':>9}{'model':>9}{'decoding':>10}"
          f"{'in-process':>12}{'HTTP c=1':>10}{'HTTP adds':>11}")
    for name in args.variants:
        kwargs, flags = VARIANTS[name]
        reader = QAReader.from_pretrained(args.model, **kwargs)
        reader.answer_batch(items[:8])  # warm
        one, eight = profile(reader, items, 1), profile(reader, items, 8)
        bench_args = argparse.Namespace(max_batch_size=32, max_wait_ms=10.0, device="cpu",
                                        dtype=kwargs.get("dtype", "auto"))
        server, port = start_service(args.model, bench_args, flags)
        try:
            http = ask_service(port, questions, 1, warmup=8)["p50_ms"]
        finally:
            stop_service(server)
        total = one["windows"] + one["model"] + one["decoding"]
        print(f"{name:<15}{1:>6}{one['pricing']:>9.2f}{one['windows']:>9.2f}{one['model']:>9.2f}"
              f"{one['decoding']:>10.2f}{total:>12.2f}{http:>10.2f}{http - total:>11.2f}")
        print(f"{'':<15}{8:>6}{eight['pricing']:>9.2f}{eight['windows']:>9.2f}{eight['model']:>9.2f}"
              f"{eight['decoding']:>10.2f}{eight['windows'] + eight['model'] + eight['decoding']:>12.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
