"""The GPU plan's building blocks; ``squad_qa/training/gpu_plan.py`` puts them in order (docs/GPU.md).

    Clock              one deadline for a whole device command; every stage asks it what is left
    device_report      the GPU, the software, the cores: OUT/gpu.txt and the log
    run_group          configs x seeds through the experiments runner (a subprocess per run), then its table
    read_probe         a short run's samples/s; fit_epochs turns it into the teacher's epochs
    split_file         15 MiB parts (the device returns files of at most 16 MiB); join_parts puts them back
    ready_logits       a teacher's logits file brought back earlier: joined or gunzipped, sha256-checked
    ship, pack_runs    the best run in float16 as OUT/ship.tar.part-*; metrics and logs as OUT/runs.tgz

Nothing here knows the plan's flags: each function takes what it needs, so the tests call them one by one.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import shutil
import string
import subprocess
import tarfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from squad_qa.files.atomic import atomic_file
from squad_qa.files.checksums import CHECKSUMS_FILE, ChecksumError, file_sha256, read_checksums
from squad_qa.files.run_record import METRICS_FILE, read_metrics, read_run_record, run_args
from squad_qa.training import experiments

logger = logging.getLogger(__name__)

PART_BYTES = 15 * 2**20  # the device returns files of at most 16 MiB
SHIPPED_F1 = 85.74  # the shipped model's full-dev F1 at the end of its GPU run (models/squad-minilm-l6/squad_qa.json)
# a run folder's account of itself; weights, tokenizers and n-best lists stay behind
PACKED_SUFFIXES = (".json", ".jsonl", ".log", ".md")
NOT_PACKED = ("tokenizer", "special_tokens_map.json", "nbest_predictions.json")


class PlanError(RuntimeError):
    """Bad input for the plan (a missing config, damaged parts or logits): one line naming what and where; exit 2."""


# ----------------------------------------------------------------------------------------------------------------
# The clock and the device


class Clock:
    """Seconds since the command started, against one deadline: a stage gets ``left(reserve)``, what is left
    once the stages after it have their ``reserve``, so that packing is done before the command's limit."""

    def __init__(self, deadline_s: float) -> None:
        self.t0 = time.monotonic()
        self.deadline_s = deadline_s

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self, reserve: float = 0.0) -> float:
        return self.deadline_s - self.elapsed() - reserve

    def stage(self, what: str) -> None:
        logger.info("=== [%.0f s] %s", self.elapsed(), what)


def nvidia_smi() -> str:
    """The GPU's name, memory and driver, as nvidia-smi reports them; "no GPU" without one (or without nvidia-smi)."""
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "no GPU"
    return smi.stdout.strip() if smi.returncode == 0 and smi.stdout.strip() else "no GPU"


def device_report(out: Path) -> list[str]:
    """The GPU, the software and the cores, into ``out/gpu.txt`` and the log: timings only compare on one kind."""
    import torch
    import transformers

    lines = [nvidia_smi(), f"torch {torch.__version__} transformers {transformers.__version__} "
                           f"cuda {torch.cuda.is_available()}", f"cpus {os.cpu_count()}"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for line in lines:
        logger.info("%s", line)
    return lines


def log_sha256(paths: list[Path]) -> None:
    """The sha256 of the carried files, in the log: what a run trained on, checkable against the files here."""
    for path in paths:
        logger.info("sha256 %s  %s", file_sha256(path) if path.is_file() else "(missing)", path)


# ----------------------------------------------------------------------------------------------------------------
# Runs


def check_entries(entries: list[str]) -> None:
    """Every CONFIG or CONFIG@SEED names a file: a typo is refused before the first run, not after the teacher."""
    for entry in entries:
        config, _ = experiments.parse_entry(entry)
        if not config.is_file():
            raise PlanError(f"config not found: {config}")


def run_group(entries: list[str], seeds: list[int], runs_dir: Path, extra: list[str], budget_s: float,
              jobs: int | None = None, results: str | None = "RESULTS.md") -> experiments.RunOutcome:
    """Configs x seeds side by side (``jobs`` at a time, default all), each ``python -m squad_qa.cli train`` in
    its own process (the experiments runner), then their table in ``runs_dir/results`` (None: no table). Runs
    finished by an earlier command are skipped; a run that would not fit ``budget_s`` is not started."""
    plans = experiments.plan_runs(entries, seeds, runs_dir)
    outcome = experiments.execute(plans, extra, budget_s, jobs=jobs or len(plans))
    logger.info("%s: %d done, %d skipped (finished earlier), %d failed, %d not started or stopped", runs_dir,
                len(outcome.done), len(outcome.skipped), len(outcome.failed), len(outcome.not_started))
    if results is not None:
        write_table(entries, runs_dir, results)
    return outcome


def write_table(entries: list[str], runs_dir: Path, results: str) -> None:
    """The finished runs of ``entries`` in ``runs_dir/results``. No plot: the machine may lack matplotlib, and the
    plots are rebuilt here from runs.tgz (scripts/ablate.py --aggregate_only)."""
    names = list(dict.fromkeys(experiments.config_name(experiments.parse_entry(e)[0]) for e in entries))
    groups = experiments.collect_runs(runs_dir, names)
    if groups:
        experiments.write_results(groups, runs_dir / results, None)


@dataclass
class Probe:
    samples_per_s: float  # the last logging interval's (the first one includes the start)
    windows: float  # training windows in one epoch


def read_probe(run: Path) -> Probe:
    """A short run's throughput, from its metrics.jsonl and its batch size; ValueError when it has no figures."""
    try:
        rows, _ = read_metrics(run / METRICS_FILE)
        last = rows[-1]
        batch = run_args(read_run_record(run))["per_device_train_batch_size"]
        return Probe(float(last["samples_per_s"]), float(last["step"]) * batch / float(last["epoch"]))
    except (OSError, IndexError, KeyError, TypeError, ZeroDivisionError) as e:
        raise ValueError(f"{run}: no throughput figures ({type(e).__name__}: {e})") from None


def fit_epochs(probe: Probe | None, budget_s: float, lo: float = 0.3, hi: float = 2.0) -> float:
    """The epochs (in tenths, ``lo`` to ``hi``) that fit ``budget_s`` at the probe's speed; one without a probe."""
    if probe is None:
        return 1.0
    # x 0.9: the first teacher's median over all of training (1,101/s) was 7 % under its probe's last interval (1,178/s)
    fit = budget_s * 0.9 * probe.samples_per_s / probe.windows
    logger.info("probe: %.0f samples/s, ~%.0f windows an epoch; %.2f epochs fit %.0f s", probe.samples_per_s,
                probe.windows, fit, budget_s)
    return max(lo, min(hi, math.floor(fit * 10) / 10))


def throughput_probe(config: str, extra: list[str], steps: int, log_steps: int, root: Path,
                     budget_s: float) -> Probe | None:
    """``steps`` steps of ``config`` in ``root`` (cleared: a finished probe would be skipped, not measured again);
    None when it gave no figures."""
    shutil.rmtree(root, ignore_errors=True)
    flags = [*extra, "--max_steps", str(steps), "--logging_steps", str(log_steps), "--max_eval_samples", "10"]
    plan = experiments.plan_runs([config], [1], root)
    experiments.execute(plan, flags, budget_s)
    try:
        return read_probe(plan[0].out)
    except ValueError as e:
        logger.warning("probe: %s", e)
        return None


# ----------------------------------------------------------------------------------------------------------------
# Parts, and the teacher's logits file


def part_name(prefix: str, n: int) -> str:
    """``split``'s names (prefix + aa, ab, ...): sorted by name is joined order, as with the parts made by hand."""
    letters = string.ascii_lowercase
    if n >= len(letters) ** 2:
        raise ValueError(f"{prefix}: more than {len(letters) ** 2} parts")
    return f"{prefix}{letters[n // 26]}{letters[n % 26]}"


def split_file(src: Path, prefix: Path, part_bytes: int = PART_BYTES) -> list[Path]:
    """``src`` cut into parts of at most ``part_bytes``: ``prefix``aa, ``prefix``ab, ..."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    parts = []
    with src.open("rb") as f:
        while data := f.read(part_bytes):
            parts.append(prefix.with_name(part_name(prefix.name, len(parts))))
            parts[-1].write_bytes(data)
    return parts


def join_parts(parts: list[Path], dest: Path) -> Path:
    """The parts, in the order given, into ``dest``; written aside and renamed, so a failed join leaves nothing."""
    with atomic_file(dest, ".joined") as tmp, tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
    return dest


def ready_logits(path: Path) -> Path:
    """A teacher's logits file brought back by an earlier command: ``path`` itself, else joined from
    ``path.part-*``, else gunzipped from ``path.gz``; then checked against ``SHA256SUMS`` beside it."""
    where = f"--teacher_logits {path}"
    sums = path.parent / CHECKSUMS_FILE
    if not sums.is_file():
        raise PlanError(f"{where}: no {CHECKSUMS_FILE} beside it")
    parts = sorted(path.parent.glob(f"{path.name}.part-*"))
    packed = path.with_name(path.name + ".gz")
    try:
        if parts:
            join_parts(parts, path)
        elif packed.is_file():  # gzip: 139 MB of float16 logits are 29 MB (the masked positions repeat)
            with gzip.open(packed, "rb") as src, atomic_file(path, ".gunzip") as tmp, tmp.open("wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        want = read_checksums(path.parent).get(path.name)
    except (OSError, EOFError, zlib.error, ChecksumError) as e:  # gzip.BadGzipFile is an OSError
        raise PlanError(f"{where}: damaged ({e})") from None
    if not path.is_file():
        raise PlanError(f"{where}: no such file, and no {path.name}.part-* or {path.name}.gz beside it")
    if want is None:
        raise PlanError(f"{where}: not listed in {sums}")
    got = file_sha256(path)
    if got != want:
        raise PlanError(f"{where}: damaged: sha256 {got[:16]}..., {sums} says {want[:16]}...")
    logger.info("teacher logits %s: sha256 %s checked", path, got[:16])
    return path


def logits_parts(cache: Path, parts_dir: Path) -> list[Path]:
    """The teacher's logits (float16, ~139 MB) in 15 MiB parts with a SHA256SUMS, left on the machine: short return
    commands right after this one bring them home, so a later command distils from them without the teacher."""
    shutil.rmtree(parts_dir, ignore_errors=True)
    parts = split_file(cache, parts_dir / f"{cache.name}.part-")
    (parts_dir / CHECKSUMS_FILE).write_text(f"{file_sha256(cache)}  {cache.name}\n", encoding="utf-8")
    logger.info("teacher logits: %.1f MB in %d parts in %s", cache.stat().st_size / 1e6, len(parts), parts_dir)
    return parts


# ----------------------------------------------------------------------------------------------------------------
# Shipping and packing


def best_run(runs_dir: Path, min_f1: float) -> Path | None:
    """The finished run of ``runs_dir`` (the ones its table shows) with the best full-dev F1, if above ``min_f1``."""
    try:
        groups = experiments.collect_runs(runs_dir)
    except experiments.AblationError as e:  # no folder, a damaged run: say so, ship nothing
        logger.warning("%s", e)
        return None
    runs = sorted((r for group in groups.values() for r in group), key=lambda r: -r.f1)  # ties: by name, then seed
    for r in runs:
        logger.info("candidate %s-s%d: full-dev F1 %.2f", r.name, r.seed, r.f1)
    if not runs or runs[0].f1 <= min_f1:
        logger.info("nothing to ship from %s: no finished run above F1 %.2f", runs_dir, min_f1)
        return None
    return experiments.run_dir(runs_dir, runs[0].name, runs[0].seed)


def ship(runs_dir: Path, work: Path, out: Path, min_f1: float) -> list[Path]:
    """The best run of ``runs_dir`` above ``min_f1`` exported in float16 (SHA256SUMS included) into ``work/ship``,
    tarred as ``ship/`` and cut into ``out/ship.tar.part-*``; [] (and the reason, logged) when nothing ships."""
    from squad_qa.training.export import export_fp16  # torch and transformers: only when something ships

    for stale in out.glob("ship.tar.part-*"):  # an earlier call's parts must not go out as this one's
        stale.unlink()
    best = best_run(runs_dir, min_f1)
    if best is None:
        return []
    logger.info("shipping %s", best)
    folder = work / "ship"
    shutil.rmtree(folder, ignore_errors=True)
    try:
        info = export_fp16(best, folder)
    except (OSError, ValueError) as e:
        logger.error("export of %s failed: nothing shipped (%s)", best, e)
        return []
    tar_path = work / "ship.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(folder, arcname="ship")
    parts = split_file(tar_path, out / "ship.tar.part-")
    tar_path.unlink()
    logger.info("shipped %s: %s (%.1f MB float16, sha256 %s) in %d parts", best.name, info["class"],
                info["bytes"] / 1e6, info["sha256"][:16], len(parts))
    return parts


def packed(path: Path, root: Path) -> bool:
    """Whether pack_runs takes ``path``: a run's metrics, results and logs, not the kept best weights' folder nor
    the export."""
    rel = path.relative_to(root)
    return (path.suffix in PACKED_SUFFIXES and not path.name.startswith(NOT_PACKED)
            and "best" not in rel.parts[:-1] and rel.parts[0] != "ship")


def pack_runs(root: Path, dest: Path) -> int:
    """``root``'s metrics, results and logs (no weights) into ``dest`` (gzipped tar); members are named as the
    folder was given (runs/gpu/kd/...), so unpacking at the checkout's root puts them where they were made."""
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and packed(p, root)]
    base = Path.cwd() if root.resolve().is_relative_to(Path.cwd()) else root.resolve().parent
    with atomic_file(dest, ".tgz") as tmp, tarfile.open(tmp, "w:gz") as tar:
        for p in files:
            tar.add(p, arcname=p.resolve().relative_to(base).as_posix())
    logger.info("packed %d files of %s into %s (%.1f kB)", len(files), root, dest, dest.stat().st_size / 1e3)
    return len(files)
