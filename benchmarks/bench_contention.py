"""The service while another process keeps one core busy: how much slower does it get?

For each served variant, the same dev-v1.1 questions at concurrency 1 and 8, first on a quiet
machine, then beside `python -c 'while 1: pass'` (one busy core, killed after the round). With
half of 2 cores taken, a proportional slow-down is about 2x; a thread pool that spins or asks for
more threads than it gets cores collapses far beyond that. Medians over --repeats rounds.

    python benchmarks/bench_contention.py --num_questions 200
    python benchmarks/bench_contention.py --variants onnx-int8 torch-float32
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service import DEFAULT_DEV, ask_service, load_questions, start_service, stop_service  # noqa: E402

from squad_qa.model.cpu import cpu_kind, model_threads  # noqa: E402

VARIANTS = {  # name: the service's flags
    "default": [],
    "onnx-int8": ["--backend", "onnx", "--quantize", "int8"],
    "onnx-float32": ["--backend", "onnx"],
    "torch-float32": ["--backend", "torch"],
}


def busy() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while 1: pass"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=Path("models/squad-minilm-l6"))
    p.add_argument("--predict_file", type=Path, default=DEFAULT_DEV)
    p.add_argument("--num_questions", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    p.add_argument("--variants", nargs="+", default=["default", "torch-float32"], choices=list(VARIANTS))
    args = p.parse_args(argv)
    questions = load_questions(args.predict_file, args.num_questions, "spread")
    print(f"{len(questions)} dev-v1.1 questions; CPU kind {cpu_kind()}, {os.cpu_count()} CPUs, policy "
          f"{model_threads()} model threads; q/s medians of {args.repeats} rounds")
    print(f"{'variant':<24}{'c':>3}{'quiet q/s':>11}{'one core busy':>15}{'slower':>8}")
    for name in args.variants:
        flags = VARIANTS[name]
        bench_args = argparse.Namespace(max_batch_size=32, max_wait_ms=10.0, device="cpu", dtype="auto")
        server, port = start_service(args.model, bench_args, flags)
        try:
            ask_service(port, questions[:8], 1)  # warm
            rows = {c: ([], []) for c in args.concurrency}
            for _ in range(args.repeats):
                for c in args.concurrency:
                    rows[c][0].append(ask_service(port, questions, c)["qps"])
                    hog = busy()
                    try:
                        rows[c][1].append(ask_service(port, questions, c)["qps"])
                    finally:
                        hog.kill()
                        hog.wait()
        finally:
            stop_service(server)
        for c, (quiet, loaded) in rows.items():
            q, b = statistics.median(quiet), statistics.median(loaded)
            print(f"{name:<24}{c:>3}{q:>11.1f}{b:>15.1f}{q / b:>7.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
