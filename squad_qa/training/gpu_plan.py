"""One command on the lent GPU machine: a teacher, the students distilled from it, the model to ship (docs/GPU.md).

    python -m squad_qa.cli gpu all --configs experiments/kd-baseline.json --peers experiments/abl-best.json
    python -m squad_qa.cli gpu all --no_teacher --alone experiments/abl-baseline.json --configs ...
    python -m squad_qa.cli gpu rehearse        # the whole plan on the CPU with tiny inputs: run it before the GPU

Run from the checkout's root (the experiment files and the runs' relative paths start there).

``all`` runs the stages below under one clock (``--deadline_s`` from its start: every stage gets what is left once
the stages after it have their reserve); ``probe``, ``teacher``, ``students`` and ``ship`` run their part alone.

    device  the GPU, the software, the cores (OUT/gpu.txt); the sha256 of the carried files
    1       the teacher's float16 parts joined and checked (training/teacher.py), or --teacher_logits FILE:
            joined from FILE.part-* or gunzipped from FILE.gz, and checked against SHA256SUMS beside it
    2a      a short run of the teacher: its samples/s size its epochs to the time left after --students_s
    2       the teacher, alone on the GPU
    3a      its logits on the student's training windows, once (a 1-step student run fills the cache), also cut
            into 15 MiB parts in ROOT/logits-parts for short return commands
    3       --alone configs (no teacher) one at a time; then --configs (with the teacher) and --peers (without)
            side by side, in ROOT/GROUP
    4       the run of ROOT/GROUP with the best full-dev F1 above --min_f1, in float16, as OUT/ship.tar.part-*;
            the runs' metrics, results and logs as OUT/runs.tgz

The runs are ``python -m squad_qa.cli train`` processes started by the experiments runner (experiments.py): a
run whose folder holds eval_results.json is skipped, so a command cut short is picked up by the next one.
Exit codes: 0 done, 1 a run failed, 2 bad input (one line on stderr), 3 no teacher came out of stage 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from squad_qa.training import experiments
from squad_qa.training.config import UsageError, parse_args
from squad_qa.training.gpu_stages import (SHIPPED_F1, Clock, PlanError, check_entries, device_report, fit_epochs,
                                          log_sha256, logits_parts, pack_runs, ready_logits, run_group, ship,
                                          throughput_probe, write_table)

logger = logging.getLogger(__name__)

REHEARSAL_MARKER = ".gpu-rehearsal"  # a folder `rehearse` may clear: one it made
STUDENTS = ["experiments/kd-baseline.json", "experiments/kd-fgm-ls01.json"]
TEACHER = "experiments/teacher-mpnet.json"


# ----------------------------------------------------------------------------------------------------------------
# Stages


def run_flags(entry: str, extra: list[str]) -> argparse.Namespace:
    """The training flags a run of ``entry`` gets (its config, then ``extra``): where its files are."""
    return parse_args(["--config", str(experiments.parse_entry(entry)[0]), *extra])


def teacher_stage(args: argparse.Namespace, clock: Clock) -> Path | None:
    """Stages 1-3a: what the students distil from (the trained teacher's folder, or a logits file); None when the
    teacher did not finish."""
    from squad_qa.files.checksums import ChecksumError
    from squad_qa.training.distill import teacher_cache_dir
    from squad_qa.training.teacher import MANIFEST_FILE, TeacherError, join_shards

    if args.teacher_logits is not None:
        clock.stage("1. the teacher's logits from an earlier command: join or gunzip, check the sha256")
        return ready_logits(args.teacher_logits)

    teacher_extra = shlex.split(args.teacher_extra)
    shards = Path(run_flags(args.teacher_config, teacher_extra).model_name_or_path)
    clock.stage(f"1. join the teacher's parts in {shards}")
    if (shards / MANIFEST_FILE).is_file():  # else a whole folder, used as it is
        try:
            join_shards(shards)
        except (TeacherError, ChecksumError, OSError) as e:
            raise PlanError(f"teacher parts in {shards}: {e}") from None
    log_sha256([shards / "model.safetensors"])

    clock.stage(f"2a. teacher probe: {args.probe_steps} steps for its samples/s")
    probe = throughput_probe(args.teacher_config, teacher_extra, args.probe_steps, args.probe_log_steps,
                             args.root / "probe", clock.left(args.students_s))
    # the epochs that fit: the teacher's run (its start and its full-dev eval, ~35 s) leaves --students_s for the rest
    budget = clock.left(args.students_s + 35)
    epochs = fit_epochs(probe, budget)
    name = experiments.config_name(Path(args.teacher_config))
    clock.stage(f"2. teacher: {name}, {epochs} epochs, alone (training budget {budget:.0f} s)")
    run_group([args.teacher_config], [1], args.root / "teacher", ["--num_train_epochs", str(epochs), *teacher_extra],
              clock.left(120), jobs=1)
    teacher = experiments.run_dir(args.root / "teacher", name, 1)
    if not experiments.is_finished(teacher):
        logger.error("no teacher: %s did not finish", teacher)
        return None
    logger.info("teacher: %s", (teacher / experiments.EVAL_FILE).read_text().strip())

    clock.stage("3a. the teacher's logits on the student's training windows, once (the students read the cache)")
    flags = [*shlex.split(args.extra), "--teacher", str(teacher)]
    run_group(args.configs[:1], [1], args.root / "precompute",
              [*flags, "--max_steps", "1", "--eval_steps", "0", "--eval_subset", "0", "--max_eval_samples", "10"],
              clock.left(args.reserve_s), jobs=1)
    cache_dir = teacher_cache_dir(run_flags(args.configs[0], flags))
    caches = sorted(Path(cache_dir).glob("teacher-logits-*.safetensors"), key=lambda p: p.stat().st_mtime) \
        if cache_dir else []
    if caches:  # the newest: the one just written (or read, when an earlier command wrote it)
        logits_parts(caches[-1], args.root / "logits-parts")
    else:
        logger.warning("no teacher logits cached (no --cache_dir): every student computes its own")
    return teacher


def students_stage(args: argparse.Namespace, clock: Clock, teacher: Path | None) -> list[experiments.RunOutcome]:
    """Stage 3: the --alone configs one at a time, then --configs (with ``teacher``) and --peers side by side."""
    runs = args.root / args.group
    extra = shlex.split(args.extra)
    outcomes = []
    if args.alone:
        clock.stage(f"3. alone, without a teacher: {' '.join(args.alone)}")
        outcomes.append(run_group(args.alone, args.seeds, runs, extra, clock.left(args.reserve_s), jobs=1,
                                  results="RESULTS-alone.md"))
    left = clock.left(args.reserve_s)
    with_ = (" with the teacher" if teacher else "") + (" and peers without" if args.peers else "")
    clock.stage(f"3. students{with_}, side by side, budget {left:.0f} s")
    groups = [(args.configs, "RESULTS.md", [*extra, *(["--teacher", str(teacher)] if teacher else [])])]
    if args.peers:
        groups.append((args.peers, "RESULTS-peers.md", extra))
    # one runner a group (each starts and watches its own processes), so the peers run beside the students; the
    # tables once both are done (a table read while the other group writes its results could catch a half file)
    with ThreadPoolExecutor(len(groups)) as pool:
        futures = [pool.submit(run_group, entries, args.seeds, runs, flags, left, args.jobs, None)
                   for entries, _, flags in groups]
        outcomes += [f.result() for f in futures]
    for entries, results, _ in groups:
        write_table(entries, runs, results)
    return outcomes


def ship_stage(args: argparse.Namespace, clock: Clock) -> None:
    """Stage 4: the best run exported in parts, and every run's metrics and logs packed."""
    runs = args.root / args.group
    clock.stage(f"4. export the best run of {runs} above full-dev F1 {args.min_f1:.2f} (float16, 15 MiB parts)")
    ship(runs, args.root, args.out, args.min_f1)
    clock.stage("4. pack the runs' metrics, results and logs")
    pack_runs(args.root, args.out / "runs.tgz")


# ----------------------------------------------------------------------------------------------------------------
# Commands


def report(args: argparse.Namespace, clock: Clock) -> None:
    clock.stage("device")
    device_report(args.out)


def check_inputs(args: argparse.Namespace) -> None:
    """Configs and extra flags that a later stage would refuse, refused now: before the teacher's minutes, not after."""
    check_entries([*args.configs, *args.alone, *args.peers])
    if getattr(args, "teacher", None) is not None and not args.teacher.exists():
        raise PlanError(f"--teacher {args.teacher}: no such folder or file")
    try:
        for entries in (args.configs, args.alone, args.peers):
            if entries:
                run_flags(entries[0], shlex.split(args.extra))
        if hasattr(args, "teacher_config") and args.teacher_logits is None and not getattr(args, "no_teacher", False):
            check_entries([args.teacher_config])
            run_flags(args.teacher_config, shlex.split(args.teacher_extra))
    except UsageError as e:
        raise PlanError(str(e)) from None


def outcome_code(outcomes: list[experiments.RunOutcome]) -> int:
    failed = [p.name for o in outcomes for p in o.failed]
    if failed:
        logger.error("failed runs: %s", ", ".join(failed))
    return 1 if failed else 0


def cmd_probe(args: argparse.Namespace, clock: Clock) -> int:
    report(args, clock)
    if args.config:
        clock.stage(f"probe: {args.config}, {args.steps} steps")
        probe = throughput_probe(args.config, shlex.split(args.extra), args.steps, args.log_steps,
                                 args.root / "probe", clock.left())
        if probe is None:
            return 1
        with (args.out / "gpu.txt").open("a", encoding="utf-8") as f:
            f.write(f"probe {args.config}: {probe.samples_per_s:.1f} samples/s, ~{probe.windows:.0f} windows\n")
        logger.info("probe %s: %.1f samples/s", args.config, probe.samples_per_s)
    return 0


def cmd_teacher(args: argparse.Namespace, clock: Clock) -> int:
    check_inputs(args)
    report(args, clock)
    teacher = teacher_stage(args, clock)
    pack_runs(args.root, args.out / "runs.tgz")
    return 0 if teacher is not None else 3


def cmd_students(args: argparse.Namespace, clock: Clock) -> int:
    check_inputs(args)
    report(args, clock)
    outcomes = students_stage(args, clock, args.teacher)
    pack_runs(args.root, args.out / "runs.tgz")
    return outcome_code(outcomes)


def cmd_ship(args: argparse.Namespace, clock: Clock) -> int:
    ship_stage(args, clock)
    return 0


def cmd_all(args: argparse.Namespace, clock: Clock) -> int:
    check_inputs(args)
    report(args, clock)
    first = run_flags(args.configs[0], shlex.split(args.extra))
    log_sha256([Path(first.model_name_or_path or "") / "model.safetensors", Path(first.train_file or ""),
                Path(first.predict_file or "")])
    teacher = None
    if not args.no_teacher:
        teacher = teacher_stage(args, clock)
        if teacher is None:
            pack_runs(args.root, args.out / "runs.tgz")
            return 3
    outcomes = students_stage(args, clock, teacher)
    ship_stage(args, clock)
    clock.stage("end")
    return outcome_code(outcomes)


# ----------------------------------------------------------------------------------------------------------------
# The rehearsal: the plan on the CPU, with inputs built here in seconds


def rehearsal_inputs(inputs: Path, configs: list[str], teacher: bool) -> None:
    """Tiny stand-ins for what .device/ carries, built offline:

    - mpnet/: a random 2-layer MPNet (hidden 32) with a tokenizer of all-mpnet-base-v2's kind (the student's
      uncased vocabulary behind MPNet's four specials, ids shifted by 4, <mask> last), in float16 parts with a
      manifest (teacher.write_fp16_shards), as the real teacher travels;
    - base-fp16/: a random 2-layer BERT (hidden 32) with the shipped tokenizer, exported in float16 as the real base;
    - configs/: each experiment file of the plan (experiments/NAME.json) as NAME.json extending it with bf16 off (a
      flag cannot unset a config's store_true bf16, and bf16 is emulated, and slow, on CPUs without it); the run
      folders keep the files' names.
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel, MPNetConfig, MPNetModel, MPNetTokenizerFast

    import squad_qa
    from squad_qa.training.export import export_fp16
    from squad_qa.training.teacher import write_fp16_shards

    student_tok = AutoTokenizer.from_pretrained(str(squad_qa.default_base_model_path()))
    torch.manual_seed(0)
    src = inputs / "base-src"
    BertModel(BertConfig(vocab_size=len(student_tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(src)
    student_tok.save_pretrained(src)
    export_fp16(src, inputs / "base-fp16")
    shutil.rmtree(src)
    if teacher:
        vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
        for piece, _ in sorted(student_tok.get_vocab().items(), key=lambda kv: kv[1]):
            vocab.setdefault(piece, len(vocab))
        vocab["<mask>"] = len(vocab)
        src = inputs / "mpnet-src"
        MPNetTokenizerFast(vocab=vocab).save_pretrained(src)
        MPNetModel(MPNetConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=514)).save_pretrained(src)
        write_fp16_shards(src, inputs / "mpnet", max_shard_bytes=600_000, show_progress=False)  # 4 parts
        shutil.rmtree(src)
    (inputs / "configs").mkdir(parents=True)
    for name in configs:
        extends = Path("experiments", f"{name}.json").resolve()
        (inputs / "configs" / f"{name}.json").write_text(json.dumps({"extends": str(extends), "bf16": False}) + "\n")


def rehearsal_argv(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """``all``'s flags for the rehearsal, and the config copies they name: a few steps of every run, 16 training
    and 8 dev questions, short windows, the CPU, float32; it ships whatever it trains (any F1 above -1).

    The teacher's plan: the teacher's stages, then kd-baseline with the teacher beside abl-baseline without.
    --no_teacher, the plan without one: abl-baseline alone, then abl-ema."""
    inputs = args.folder / "inputs"
    names = ["abl-baseline", "abl-ema"] if args.no_teacher else [Path(TEACHER).stem, "kd-baseline", "abl-baseline"]
    copy = {n: str(inputs / "configs" / f"{n}.json") for n in names}
    small = ["--train_file", str(args.data), "--predict_file", str(args.data), "--cache_dir", str(inputs / "cache"),
             "--max_train_samples", "16", "--max_eval_samples", "8", "--per_device_train_batch_size", "4",
             "--per_device_eval_batch_size", "16", "--max_seq_length", "128", "--doc_stride", "48", "--no_cuda"]
    teacher_extra = [*small, "--model_name_or_path", str(inputs / "mpnet"), "--max_steps", "3"]
    extra = [*small, "--model_name_or_path", str(inputs / "base-fp16"), "--max_steps", "3", "--logging_steps", "1",
             "--eval_steps", "2", "--eval_subset", "4"]
    argv = ["all", "--out", str(args.out), "--root", str(args.folder / "runs"), "--deadline_s", str(args.deadline_s),
            "--min_f1", "-1", f"--extra={shlex.join(extra)}"]
    if args.no_teacher:
        argv += ["--no_teacher", "--alone", copy["abl-baseline"], "--configs", copy["abl-ema"]]
    else:
        argv += ["--teacher_config", copy[Path(TEACHER).stem], f"--teacher_extra={shlex.join(teacher_extra)}",
                 "--probe_steps", "2", "--probe_log_steps", "1", "--students_s", "60",
                 "--configs", copy["kd-baseline"], "--peers", copy["abl-baseline"]]
    return argv, names


def clear_rehearsal(folder: Path) -> None:
    """A fresh rehearsal folder: a real run's folders would be skipped as finished, and tiny runs would land
    beside real ones. Only a folder an earlier rehearsal made is cleared."""
    if folder.exists() and not (folder / REHEARSAL_MARKER).is_file():
        raise PlanError(f"--folder {folder}: exists and is not a rehearsal folder (no {REHEARSAL_MARKER}): "
                        "not cleared; remove it by hand if nothing in it is wanted")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / REHEARSAL_MARKER).touch()


# ----------------------------------------------------------------------------------------------------------------
# Command line


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in the help, except None and False: they only mean "not given"."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False):
            return action.help or ""
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", type=Path, help="the folder that comes back (default: $OUT, set by the device tool)")
    common.add_argument("--root", type=Path, default=Path("runs/gpu"), help="where the run folders go")
    common.add_argument("--deadline_s", type=float, default=540,
                        help="seconds from the start by which the results are packed (under the command's limit)")

    teacher = argparse.ArgumentParser(add_help=False)
    g = teacher.add_argument_group("the teacher")
    g.add_argument("--teacher_config", default=TEACHER, help="the teacher's experiment file")
    g.add_argument("--teacher_extra", default="", help="flags appended to the teacher's runs (probe included)")
    g.add_argument("--teacher_logits", type=Path, metavar="FILE",
                   help="distil from this logits file (or FILE.part-*, or FILE.gz; SHA256SUMS beside it) instead "
                        "of training a teacher: stages 1-3a become a join and a check")
    g.add_argument("--probe_steps", type=int, default=60, help="the teacher probe's steps (stage 2a)")
    g.add_argument("--probe_log_steps", type=int, default=20, help="the probe's logging interval")
    g.add_argument("--students_s", type=float, default=290,
                   help="seconds kept for stages 3a, 3 and 4 when the probe sizes the teacher's epochs")

    students = argparse.ArgumentParser(add_help=False)
    g = students.add_argument_group("the students")
    g.add_argument("--configs", nargs="+", default=STUDENTS,
                   help="configs with the teacher, side by side; CONFIG@SEED runs that seed alone")
    g.add_argument("--peers", nargs="+", default=[], help="configs without the teacher, beside them")
    g.add_argument("--alone", nargs="+", default=[],
                   help="configs run first, one at a time, without the teacher (a clean samples/s figure)")
    g.add_argument("--seeds", nargs="+", type=int, default=[1], help="seeds of the entries without an @SEED")
    g.add_argument("--jobs", type=int, help="runs side by side in each group (default: all of them)")
    g.add_argument("--extra", default="--eval_steps 500 --eval_subset 1000",
                   help="flags appended to every student's and peer's run")
    g.add_argument("--reserve_s", type=float, default=40, help="seconds the students leave for export and packing")

    shipping = argparse.ArgumentParser(add_help=False)
    g = shipping.add_argument_group("shipping")
    g.add_argument("--group", default="kd",
                   help="the folder of ROOT the students run in and the shipped run comes from")
    g.add_argument("--min_f1", type=float, default=SHIPPED_F1,
                   help="ship only a run whose full-dev F1 is above this (default: the shipped model's)")

    p = argparse.ArgumentParser(prog="squad-qa gpu", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, parents: list[argparse.ArgumentParser], help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=parents, help=help_, formatter_class=_Help)

    s = command("probe", [common], "the device report, and a short run's samples/s")
    s.add_argument("--config", help="a config to probe (none: the report only)")
    s.add_argument("--steps", type=int, default=60, help="the probe's optimiser steps")
    s.add_argument("--log_steps", type=int, default=20, help="its logging interval: samples/s of the last one")
    s.add_argument("--extra", default="", help="flags appended to the probe's run")
    command("teacher", [common, teacher, students, shipping], "stages 1-3a: the teacher")
    s = command("students", [common, students, shipping], "stage 3: the students side by side")
    s.add_argument("--teacher", type=Path, help="a teacher folder or logits file (none: no distillation)")
    command("ship", [common, shipping], "stage 4: the best run in parts, the runs packed")
    s = command("all", [common, teacher, students, shipping], "every stage under one clock")
    s.add_argument("--no_teacher", action="store_true", help="no teacher: stages 1-3a skipped")
    s = command("rehearse", [], "the whole plan on the CPU, tiny, in a cleared folder")
    s.add_argument("--folder", type=Path, default=Path("runs/gpu-rehearsal"),
                   help="cleared, then inputs/, runs/ and out/ in it")
    s.add_argument("--out", type=Path, help="the folder that would come back (default: FOLDER/out)")
    s.add_argument("--data", type=Path, default=Path("tests/fixtures/tiny_squad.json"),
                   help="a small SQuAD file, the training and the dev file")
    s.add_argument("--deadline_s", type=float, default=900, help="seconds from the start (the CPU is slow)")
    s.add_argument("--no_teacher", action="store_true",
                   help="rehearse the plan without a teacher (--alone, then --configs)")
    return p


COMMANDS = {"probe": cmd_probe, "teacher": cmd_teacher, "students": cmd_students, "ship": cmd_ship, "all": cmd_all}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "rehearse":
            clear_rehearsal(args.folder)
            args.out = args.out or args.folder / "out"
    except PlanError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    if out is None:
        parser.error("--out is required where $OUT is not set")
    out.mkdir(parents=True, exist_ok=True)
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # the log comes back with the results, also when the command is stopped at its limit (each line is flushed)
    log_file = logging.FileHandler(out / "log.txt", encoding="utf-8")
    log_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package = logging.getLogger("squad_qa")
    package.setLevel(logging.INFO)
    package.addHandler(log_file)
    try:
        clock = Clock(args.deadline_s)
        if args.command == "rehearse":
            clock.stage(f"rehearsal inputs in {args.folder / 'inputs'}")
            argv, names = rehearsal_argv(args)
            rehearsal_inputs(args.folder / "inputs", names, teacher=not args.no_teacher)
            args = parser.parse_args(argv)
        args.out = out
        return COMMANDS[args.command](args, clock)
    except (PlanError, experiments.AblationError) as e:  # bad input: one line, on stderr (the device returns it)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception:  # a bug or a full disk: the traceback goes into log.txt too, which comes back
        logger.exception("the plan stopped")
        return 1
    finally:
        package.removeHandler(log_file)
        log_file.close()
