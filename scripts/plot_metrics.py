"""Plot a training run's metrics.jsonl: ``python scripts/plot_metrics.py OUTPUT_DIR/metrics.jsonl -o plot.png``.

Panels: training loss, learning rate, throughput (samples/s) and, if the run evaluated during training
(--eval_steps), EM/F1 per evaluation. Needs matplotlib (``pip install matplotlib``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from squad_qa.files.run_record import read_metrics as load_metrics  # noqa: E402 (the one reader of metrics.jsonl)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("metrics", type=Path, help="metrics.jsonl written by train_squad.py")
    p.add_argument("-o", "--output", type=Path, default=Path("plot.png"), help="image file to write")
    args = p.parse_args(argv)

    if not args.metrics.is_file():
        print(f"error: {args.metrics}: file not found", file=sys.stderr)
        return 2
    try:
        train, evals = load_metrics(args.metrics)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not train and not evals:
        print(f"error: {args.metrics}: no training or evaluation rows", file=sys.stderr)
        return 2
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        print("error: plotting needs matplotlib, which is not installed: pip install matplotlib", file=sys.stderr)
        return 1

    panels = [("loss", "training loss"), ("lr", "learning rate"), ("samples_per_s", "samples/s")]
    n = len(panels) + (1 if evals else 0)
    fig, axes = plt.subplots(n, 1, figsize=(8, 2.6 * n), sharex=True)
    steps = [r["step"] for r in train]
    for ax, (key, label) in zip(axes, panels):
        ax.plot(steps, [r.get(key) for r in train])
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if evals:
        ax = axes[-1]
        es = [r["step"] for r in evals]
        ax.plot(es, [r["eval_f1"] for r in evals], marker="o", label="F1")
        ax.plot(es, [r["eval_exact_match"] for r in evals], marker="o", label="EM")
        ax.set_ylabel("dev score")
        ax.legend()
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("optimiser step")
    fig.suptitle(str(args.metrics))
    fig.tight_layout()
    fig.savefig(args.output, dpi=120)
    print(f"wrote {args.output} ({len(train)} training rows, {len(evals)} evaluations)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
