"""Experiments: every config x seed as its own training run, then one results table (`scripts/ablate.py`).

    python scripts/ablate.py --configs experiments/baseline.json experiments/fgm.json --seeds 1 2 \
        --output_root runs/ablate --results runs/ablate/RESULTS.md
    python scripts/ablate.py --configs experiments/fgm.json experiments/baseline.json@2 --seeds 1   # fgm-s1, baseline-s2

Each run is ``python -m squad_qa.cli train --config C --seed S --output_dir ROOT/<name>-s<S> --overwrite_output_dir``
in a subprocess (a fresh process per run: no state, RNG or CUDA cache leaks from one row into the next). A run whose
``eval_results.json`` exists is finished and skipped, so the same command can be repeated across several
time-limited device commands and picks up where the last one stopped (an interrupted run has no eval_results.json
and starts over). ``--aggregate_only`` rebuilds the table from run folders alone, e.g. here from folders that came
back from the GPU machine.

What a run folder must hold for the table: eval_results.json (written by train.py after --do_eval),
metrics.jsonl (training rows with samples_per_s, eval rows with eval_f1/eval_exact_match when --eval_steps),
squad_qa.json (global_step) and ablate_run.json (written here: wall time, device, command).

Importable without fastapi/pyyaml/matplotlib (the GPU machine has none of them); configs should be JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# torch-free imports: the planning and the tables run where torch may be missing
from squad_qa.files import run_record
from squad_qa.files.run_record import METRICS_FILE, read_run_record
from squad_qa.scoring.metrics import em_of, f1_of  # the scorer: standard library only

# Named as when this was squad_qa/ablate.py: main() turns on INFO for "squad_qa", and a script's
# __name__ is "__main__".
logger = logging.getLogger("squad_qa.ablate")

RUN_FILE = "ablate_run.json"
EVAL_FILE = "eval_results.json"
RUN_DIR_RE = re.compile(r"^(?P<name>.+)-s(?P<seed>-?\d+)$")


class AblationError(RuntimeError):
    """A run folder or config that cannot be used; the message names the path."""


# ----------------------------------------------------------------------------------------------------------------
# Running


def config_name(path: Path) -> str:
    return path.stem


def run_dir(root: Path, name: str, seed: int) -> Path:
    return root / f"{name}-s{seed}"


def is_finished(path: Path) -> bool:
    return (path / EVAL_FILE).is_file()


def device_name() -> str:
    """The accelerator a run used, as the table reports it ("cpu" without CUDA)."""
    try:
        import torch
    except ImportError:
        return "cpu"
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return "cpu"


def train_command(config: Path, seed: int, out: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "squad_qa.cli", "train", "--config", str(config), "--seed", str(seed),
            "--output_dir", str(out), "--overwrite_output_dir", *extra]


@dataclass
class RunPlan:
    config: Path
    seed: int
    out: Path


@dataclass
class RunOutcome:
    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[Path] = field(default_factory=list)
    not_started: list[Path] = field(default_factory=list)  # left for a later command (--time_budget)


def parse_entry(entry: str | Path) -> tuple[Path, int | None]:
    """``CONFIG`` (every seed of --seeds) or ``CONFIG@SEED`` (that seed alone), e.g. ``experiments/abl-best.json@2``."""
    text = str(entry)
    path, at, seed = text.rpartition("@")
    if at and seed.removeprefix("-").isdigit():
        return Path(path), int(seed)
    return Path(text), None  # no seed after an '@': all of it is the path (and must exist)


def plan_runs(configs: list[str | Path], seeds: list[int], root: Path) -> list[RunPlan]:
    entries = [parse_entry(c) for c in configs]
    for c, _ in entries:
        if not c.is_file():
            raise AblationError(f"config not found: {c}")
        if c.suffix.lower() != ".json":
            logger.warning("%s: not JSON; the GPU machine may lack pyyaml to read it", c)
    plans = [RunPlan(c, s, run_dir(root, config_name(c), s))
             for c, pinned in entries for s in ([pinned] if pinned is not None else seeds)]
    dup = sorted(name for name, n in Counter(p.out.name for p in plans).items() if n > 1)
    if dup:
        raise AblationError(f"two entries share the run folder(s) {dup} (the file stem and the seed name it)")
    # Seed-major (in --seeds order, pinned seeds not in it last): a budget cut-off leaves every row with >= 1 seed
    # rather than some rows with none.
    plans.sort(key=lambda p: (seeds.index(p.seed) if p.seed in seeds else len(seeds), p.seed))
    return plans


def _earlier_walls(plan: RunPlan) -> list[float]:
    """Wall times of finished runs of the same config (other seeds) under the same root."""
    walls = []
    for rec in plan.out.parent.glob(f"{config_name(plan.config)}-s*/{RUN_FILE}"):
        m = RUN_DIR_RE.match(rec.parent.name)
        if m is not None and m["name"] == config_name(plan.config):
            walls.append(float(json.loads(rec.read_text()).get("wall_s", 0.0)))
    return walls


@dataclass
class _Running:
    plan: RunPlan
    proc: subprocess.Popen
    log: Any
    log_path: Path
    cmd: list[str]
    t0: float


def execute(plans: list[RunPlan], extra: list[str], time_budget: float | None = None,
            device: str | None = None, jobs: int = 1) -> RunOutcome:
    """Run every unfinished plan in a subprocess, ``jobs`` at a time; output goes to ROOT/<name>-s<S>.log.

    ``jobs`` > 1 runs several small models side by side on one GPU: a 6-layer encoder leaves most of an H100
    idle, and each process's CPU-side work (kernel launches, collation) overlaps the others' GPU work. Each
    process gets ``cpu_count // jobs`` intra-op threads.

    ``time_budget`` (seconds since the call): a run is not started when the slowest run so far would no longer
    fit, and runs still going when the budget is spent are stopped (they have no eval_results.json, so a later
    command starts them over), so a device command ends cleanly before its hard limit.
    """
    outcome = RunOutcome()
    device = device or device_name()
    t_start = time.perf_counter()
    slowest = 0.0
    threads = max(1, (os.cpu_count() or 1) // max(jobs, 1))
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(threads))
    pending = list(enumerate(plans))
    running: list[_Running] = []

    def finish(r: _Running, rc: int) -> None:
        nonlocal slowest
        r.log.close()
        wall = time.perf_counter() - r.t0
        slowest = max(slowest, wall)
        p = r.plan
        if rc != 0 or not is_finished(p.out):
            tail = "".join(r.log_path.read_text(encoding="utf-8", errors="replace").splitlines(True)[-15:])
            logger.error("%s failed (exit %d after %.0f s); log %s ends:\n%s", p.out.name, rc, wall, r.log_path, tail)
            outcome.failed.append(p.out)
            return
        record = {"config": str(p.config), "seed": p.seed, "wall_s": round(wall, 2), "device": device,
                  "command": shlex.join(r.cmd), "extra": extra, "concurrent_jobs": jobs}
        (p.out / RUN_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        ev = json.loads((p.out / EVAL_FILE).read_text())
        logger.info("%s: EM %.2f F1 %.2f in %.0f s", p.out.name, em_of(ev, float("nan")),
                    f1_of(ev, float("nan")), wall)
        outcome.done.append(p.out)

    while pending or running:
        elapsed = time.perf_counter() - t_start
        if time_budget is not None and elapsed > time_budget:
            for r in running:
                logger.warning("%s: stopped, the %.0f s budget is spent", r.plan.out.name, time_budget)
                r.proc.terminate()
                r.proc.wait()
                r.log.close()
                outcome.not_started.append(r.plan.out)
            running = []
            outcome.not_started.extend(p.out for _, p in pending)
            break
        while pending and len(running) < jobs:
            i, p = pending.pop(0)
            if is_finished(p.out):
                logger.info("[%d/%d] %s: finished earlier, skipped", i + 1, len(plans), p.out.name)
                outcome.skipped.append(p.out)
                continue
            # FGM/R-Drop rows cost ~2x a plain one: a seed of the same config finished earlier is the best estimate.
            expect = max([slowest, *_earlier_walls(p)])
            if time_budget is not None and elapsed + expect > time_budget:
                logger.warning("[%d/%d] %s: not started (%.0f s used of the %.0f s budget, a run takes ~%.0f s)",
                               i + 1, len(plans), p.out.name, elapsed, time_budget, expect)
                outcome.not_started.append(p.out)
                continue
            cmd = train_command(p.config, p.seed, p.out, extra)
            p.out.parent.mkdir(parents=True, exist_ok=True)
            log_path = p.out.parent / f"{p.out.name}.log"
            logger.info("[%d/%d] %s: %s", i + 1, len(plans), p.out.name, shlex.join(cmd))
            log = log_path.open("w", encoding="utf-8")
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            running.append(_Running(p, proc, log, log_path, cmd, time.perf_counter()))
        still = []
        for r in running:
            rc = r.proc.poll()
            if rc is None:
                still.append(r)
            else:
                finish(r, rc)
        running = still
        if running:
            time.sleep(0.5)
    return outcome


# ----------------------------------------------------------------------------------------------------------------
# Aggregating


@dataclass
class RunResult:
    name: str
    seed: int
    exact_match: float
    f1: float
    steps: int | None
    wall_s: float | None
    samples_per_s: float | None
    device: str
    eval_curve: list[tuple[int, float]]  # (step, dev F1) from --eval_steps rows


def read_metrics(path: Path) -> tuple[list[dict], list[dict]]:
    """(training rows, eval rows) of a run's metrics.jsonl (``run_record.read_metrics``); none without one."""
    if not path.is_file():
        return [], []
    try:
        return run_record.read_metrics(path)
    except ValueError as e:
        raise AblationError(str(e)) from None


def read_run(path: Path) -> RunResult:
    m = RUN_DIR_RE.match(path.name)
    if m is None:
        raise AblationError(f"{path}: run folders are named <config>-s<seed>")
    ev_path = path / EVAL_FILE
    if not ev_path.is_file():
        raise AblationError(f"{path}: no {EVAL_FILE} (the run did not finish)")
    ev = json.loads(ev_path.read_text())
    if "f1" not in ev:
        raise AblationError(f"{ev_path}: no 'f1' field")
    train_rows, eval_rows = read_metrics(path / METRICS_FILE)
    info = read_run_record(path)
    run = json.loads((path / RUN_FILE).read_text()) if (path / RUN_FILE).is_file() else {}
    steps = info.get("global_step")
    if steps is None and train_rows:
        steps = max(int(r["step"]) for r in train_rows)
    # Median over logging intervals: robust to the first interval (CUDA warm-up, feature conversion).
    sps = [float(r["samples_per_s"]) for r in train_rows if r.get("samples_per_s") is not None]
    return RunResult(name=m["name"], seed=int(m["seed"]), exact_match=em_of(ev, float("nan")), f1=float(ev["f1"]),
                     steps=int(steps) if steps is not None else None, wall_s=run.get("wall_s"),
                     samples_per_s=statistics.median(sps) if sps else None, device=run.get("device", "unknown"),
                     eval_curve=[(int(r["step"]), float(r["eval_f1"])) for r in eval_rows])


def collect_runs(root: Path, names: list[str] | None = None) -> dict[str, list[RunResult]]:
    """Finished runs under ``root`` grouped by config name (in ``names`` order if given, else sorted)."""
    if not root.is_dir():
        raise AblationError(f"--output_root {root}: not a folder")
    groups: dict[str, list[RunResult]] = {}
    unfinished = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and RUN_DIR_RE.match(p.name)):
        if not is_finished(d):
            unfinished.append(d.name)
            continue
        r = read_run(d)
        if names is not None and r.name not in names:
            continue
        groups.setdefault(r.name, []).append(r)
    if unfinished:
        logger.warning("unfinished runs left out of the table: %s", ", ".join(unfinished))
    for runs in groups.values():
        runs.sort(key=lambda r: r.seed)
    order = names if names is not None else sorted(groups)
    return {n: groups[n] for n in order if n in groups}


def mean_std(xs: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n-1); no std from a single seed."""
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


def _pm(xs: list[float]) -> str:
    m, s = mean_std(xs)
    return f"{m:.2f} ± {s:.2f}" if s is not None else f"{m:.2f} (1 seed)"


def _num(xs: list[float | None], fmt: str) -> str:
    vals = [x for x in xs if x is not None and not math.isnan(x)]
    return format(statistics.fmean(vals), fmt) if vals else "n/a"


def results_table(groups: dict[str, list[RunResult]]) -> str:
    head = ("| configuration | seeds | dev EM | dev F1 | optimiser steps | wall time (s) | samples/s | device |\n"
            "|---|---|---|---|---|---|---|---|\n")
    rows = []
    for name, runs in groups.items():
        devices = sorted({r.device for r in runs})
        rows.append(
            f"| {name} | {', '.join(str(r.seed) for r in runs)} | {_pm([r.exact_match for r in runs])} "
            f"| {_pm([r.f1 for r in runs])} | {_num([r.steps for r in runs], '.0f')} "
            f"| {_num([r.wall_s for r in runs], '.0f')} | {_num([r.samples_per_s for r in runs], '.0f')} "
            f"| {' / '.join(devices)} |\n")
    return head + "".join(rows)


def mean_curve(runs: list[RunResult]) -> list[tuple[int, float]]:
    """Dev F1 averaged over seeds at the steps every seed evaluated."""
    common = set.intersection(*(set(s for s, _ in r.eval_curve) for r in runs)) if runs else set()
    return [(s, statistics.fmean(dict(r.eval_curve)[s] for r in runs)) for s in sorted(common)]


def plot_curves(groups: dict[str, list[RunResult]], path: Path) -> bool:
    """PNG of dev F1 over optimiser steps, one line per configuration; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, runs in groups.items():
        curve = mean_curve(runs)
        if curve:
            ax.plot([s for s, _ in curve], [f for _, f in curve], marker="o", markersize=3,
                    label=f"{name} (n={len(runs)})")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("dev F1 (mean over seeds)")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_results(groups: dict[str, list[RunResult]], results: Path, plot: Path | None,
                  plot_names: list[str] | None = None) -> str:
    table = results_table(groups)
    lines = ["# Ablation results (SQuAD v1.1 dev)\n\n",
             "EM/F1: mean ± sample std over seeds, scored by the official v1.1 script on the full dev set unless a "
             "config says otherwise. Steps, wall time (whole run: features, training, evaluation) and samples/s "
             "(median over logging intervals) are means over seeds. Written by `scripts/ablate.py`.\n\n", table]
    if plot is not None:
        sel = {n: r for n, r in groups.items() if plot_names is None or n in plot_names}
        if not any(r.eval_curve for runs in sel.values() for r in runs):
            lines.append("\nNo dev-F1 curve: no run evaluated during training (--eval_steps).\n")
        elif plot_curves(sel, plot):
            rel = os.path.relpath(plot, results.parent)
            lines.append(f"\n![dev F1 over training steps]({rel})\n")
        else:
            msg = "matplotlib is not installed: no plot written (pip install matplotlib, then --aggregate_only)"
            logger.warning(msg)
            lines.append(f"\n{msg}.\n")
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text("".join(lines), encoding="utf-8")
    return table


# ----------------------------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Run experiment configs x seeds and tabulate dev EM/F1.")
    p.add_argument("--configs", nargs="+",
                   help="experiment files (JSON; the stem names the row); FILE@SEED runs that seed alone")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    p.add_argument("--output_root", type=Path, default=Path("runs/ablate"))
    p.add_argument("--extra", default="", help='flags appended to every run, e.g. "--max_steps 5"')
    p.add_argument("--results", type=Path, default=Path("runs/ablate/RESULTS.md"),
                   help="the generated table (docs/RESULTS.md is written by hand around it)")
    p.add_argument("--plot", type=Path, help="PNG of dev F1 over steps (default: <results stem>_f1.png)")
    p.add_argument("--plot_configs", nargs="+", help="config names in the plot (default: all)")
    p.add_argument("--aggregate_only", action="store_true", help="no training: rebuild the table from run folders")
    p.add_argument("--time_budget", type=float,
                   help="seconds: start no run that would not fit, stop the ones still running at the end")
    p.add_argument("--jobs", type=int, default=1, help="runs side by side (small models on one GPU)")
    return p


def main(argv: list[str] | None = None) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("squad_qa").setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    plot = args.plot or args.results.with_name(args.results.stem + "_f1.png")
    try:
        outcome = None
        if not args.aggregate_only:
            if not args.configs:
                raise AblationError("--configs is required unless --aggregate_only")
            plans = plan_runs(args.configs, args.seeds, args.output_root)
            outcome = execute(plans, shlex.split(args.extra), args.time_budget, jobs=args.jobs)
        names = list(dict.fromkeys(config_name(parse_entry(c)[0]) for c in args.configs)) if args.configs else None
        groups = collect_runs(args.output_root, names)
        if not groups:
            raise AblationError(f"no finished runs under {args.output_root}")
        table = write_results(groups, args.results, plot, args.plot_configs)
    except AblationError as e:
        logger.error("%s", e)
        return 2
    print(table, end="")
    print(f"wrote {args.results}")
    if outcome is not None:
        print(f"runs: {len(outcome.done)} done, {len(outcome.skipped)} skipped (finished earlier), "
              f"{len(outcome.failed)} failed, {len(outcome.not_started)} not started or stopped (time budget)")
        if outcome.failed:
            print("failed: " + ", ".join(p.name for p in outcome.failed))
            return 1
    return 0

