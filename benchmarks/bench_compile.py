"""Benchmark: what `squad-qa serve --compile` adds, a compiled and a plain server side by side.

Both servers run at once on loopback ports (an idle server costs nothing), with the same checkpoint,
dtype and batching settings; rounds alternate which goes first, at concurrency 8 and 1, over the
same dev-v1.1 questions. On a shared machine whose speed drifts by 20% between runs, timing the two
in alternation within one run is what isolates the option's effect (bench_service.py compares
against the transformers pipeline, one side after the other). Figures are medians over rounds, and
the per-round ratios are printed.

    python benchmarks/bench_compile.py --model runs/cpu-bf16 --num_questions 500 --sample spread --repeats 4
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_service import DEFAULT_DEV, ask_service, load_questions, start_service, stop_service  # noqa: E402

from service.settings import ServiceSettings  # noqa: E402
from squad_qa.model.compute import DTYPE_CHOICES  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="fine-tuned checkpoint folder")
    p.add_argument("--predict_file", type=Path, default=DEFAULT_DEV)
    p.add_argument("--num_questions", type=int, default=500)
    p.add_argument("--sample", choices=["first", "spread"], default="spread")
    p.add_argument("--concurrency", type=int, nargs="+", default=[8, 1])
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--max_batch_size", type=int, default=ServiceSettings.max_batch_size)
    p.add_argument("--max_wait_ms", type=float, default=ServiceSettings.max_wait_ms)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=ServiceSettings.dtype, choices=DTYPE_CHOICES)
    args = p.parse_args(argv)

    questions = load_questions(args.predict_file, args.num_questions, args.sample)
    print(f"{len(questions)} questions ({args.sample}) from {args.predict_file.name}; model {args.model}; "
          f"dtype {args.dtype}; {os.cpu_count()} CPUs")
    servers = {}
    try:
        for name, extra in (("plain", []), ("compiled", ["--compile"])):
            servers[name] = start_service(args.model, args, extra)
        qps = {(name, c): [] for name in servers for c in args.concurrency}
        answers = {}
        for r in range(args.repeats):
            for c in args.concurrency:
                order = list(servers) if r % 2 == 0 else list(servers)[::-1]
                for name in order:
                    res = ask_service(servers[name][1], questions, c, warmup=args.warmup)
                    qps[(name, c)].append(res["qps"])
                    answers[(name, c)] = res["answers"]
            print(f"round {r + 1}: " + ", ".join(f"{n} c={c} {v[-1]:.1f} q/s" for (n, c), v in qps.items()),
                  flush=True)
    finally:
        for server, _ in servers.values():
            stop_service(server)

    print(f"\n{'concurrency':<14}{'plain q/s':>11}{'compiled q/s':>14}{'ratio':>8}   per round")
    for c in args.concurrency:
        plain, comp = qps[("plain", c)], qps[("compiled", c)]
        ratio = statistics.median(comp) / statistics.median(plain)
        rounds = ", ".join(f"{b / a:.2f}x" for a, b in zip(plain, comp))
        print(f"{c:<14}{statistics.median(plain):>11.1f}{statistics.median(comp):>14.1f}{ratio:>7.2f}x   {rounds}")
    c = args.concurrency[-1]
    same = sum(a == b for a, b in zip(answers[("plain", c)], answers[("compiled", c)]))
    print(f"(medians of {args.repeats} rounds; ratio = compiled / plain, higher is better)\n"
          f"same answer text, compiled vs plain at concurrency {c}: {same}/{len(questions)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
