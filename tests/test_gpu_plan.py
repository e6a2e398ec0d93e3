"""The GPU plan (squad_qa/training/gpu_plan.py): its rehearsal end to end on the CPU, and its pure parts one by one.

The rehearsal runs what a device command runs: the experiments runner's `squad-qa train` subprocesses (a tiny
random MPNet teacher, a tiny random BERT student, the tiny SQuAD fixture, a few steps each), the export and the
packing; the unit tests feed the stages hand-made run folders and files.
"""

from __future__ import annotations

import gzip
import json
import os
import tarfile
from pathlib import Path

import pytest
from conftest import TINY_SQUAD

from squad_qa.training import gpu_plan
from squad_qa.training.gpu_stages import (Probe, best_run, fit_epochs, join_parts, pack_runs, packed, part_name,
                                          read_probe, ready_logits, ship, split_file)

REPO = Path(__file__).resolve().parents[1]


def banners(log: Path) -> list[str]:
    """The stage banners of a plan's log.txt, without their clock ("=== [12 s] 2a. ..." -> "2a. ...")."""
    return [line.split("] ", 1)[1] for line in log.read_text().splitlines() if " === [" in line]


# ----------------------------------------------------------------------------------------------------------------
# The rehearsal, end to end


def test_rehearsal_runs_every_stage_and_returns_what_a_device_command_would(tmp_path, monkeypatch, capsys):
    from squad_qa.model.model_dir import check_qa_checkpoint

    monkeypatch.chdir(REPO)  # the experiment files, as on the device
    folder, out = tmp_path / "rehearsal", tmp_path / "out"
    assert gpu_plan.main(["rehearse", "--folder", str(folder), "--out", str(out), "--data", str(TINY_SQUAD)]) == 0

    stages = [b.split(":")[0].split(" (")[0] for b in banners(out / "log.txt")]
    assert [s.split(" ")[0] for s in stages] == ["rehearsal", "device", "1.", "2a.", "2.", "3a.", "3.", "4.", "4.",
                                                 "end"]
    assert "3. students with the teacher and peers without, side by side, budget" in " ".join(banners(out / "log.txt"))

    # what comes back: at most 8 files of at most 16 MiB
    back = sorted(p.name for p in out.iterdir())
    assert back == ["gpu.txt", "log.txt", "runs.tgz", "ship.tar.part-aa"]
    assert all((out / n).stat().st_size <= 16 * 2**20 for n in back)
    assert "cpus " in (out / "gpu.txt").read_text()

    # the shipped model: the joined parts are a tar of ship/, a float16 QA checkpoint that checks (SHA256SUMS too)
    joined = join_parts(sorted(out.glob("ship.tar.part-*")), tmp_path / "ship.tar")
    with tarfile.open(joined) as tar:
        names = tar.getnames()
        tar.extractall(tmp_path / "home", filter="data")
    assert {"ship/model.safetensors", "ship/config.json", "ship/tokenizer.json", "ship/SHA256SUMS"} <= set(names)
    check_qa_checkpoint(tmp_path / "home" / "ship")
    shipped = json.loads((tmp_path / "home" / "ship" / "squad_qa.json").read_text())
    runs = folder / "runs"
    assert shipped["training_args"]["output_dir"].startswith(str(runs / "kd"))

    # the teacher's logits were computed once (the 1-step precompute run), and the student read them from the cache
    logs = {p.relative_to(runs).as_posix(): p.read_text() for p in runs.rglob("*.log")}
    assert [n for n, text in logs.items() if "teacher logits: running" in text] == ["precompute/kd-baseline-s1.log"]
    assert "teacher logits: cached in" in logs["kd/kd-baseline-s1.log"]
    caches = list((folder / "inputs" / "cache").glob("teacher-logits-*.safetensors"))
    assert len(caches) == 1
    # ... and they wait in parts, with their sha256, for the return commands; joined and checked as a later
    # command's --teacher_logits would be
    home = tmp_path / "logits-home"
    home.mkdir()
    for part in (runs / "logits-parts").iterdir():
        (home / part.name).write_bytes(part.read_bytes())
    assert ready_logits(home / caches[0].name).read_bytes() == caches[0].read_bytes()

    # every run trained in float32 (no bf16, no fp16), the teacher's and its probe's included, and finished
    records = {p.parent.relative_to(runs).as_posix(): json.loads(p.read_text()) for p in runs.rglob("squad_qa.json")
               if "ship" not in p.parts and "best" not in p.parts}
    assert set(records) == {"probe/teacher-mpnet-s1", "teacher/teacher-mpnet-s1", "precompute/kd-baseline-s1",
                            "kd/kd-baseline-s1", "kd/abl-baseline-s1"}
    for name, rec in records.items():
        assert not rec["training_args"]["bf16"] and not rec["training_args"]["fp16"], name
    assert records["kd/kd-baseline-s1"]["training_args"]["teacher"] == str(runs / "teacher" / "teacher-mpnet-s1")
    assert records["kd/abl-baseline-s1"]["training_args"]["teacher"] is None

    # runs.tgz: metrics, results and logs, named as the runs folder was given; no weights
    with tarfile.open(out / "runs.tgz") as tar:
        members = tar.getnames()
    assert "runs/kd/kd-baseline-s1/metrics.jsonl" in members and "runs/kd/RESULTS-peers.md" in members
    assert "runs/teacher/teacher-mpnet-s1/eval_results.json" in members
    assert not [m for m in members if m.endswith((".safetensors", "nbest_predictions.json", "tokenizer.json"))]


# ----------------------------------------------------------------------------------------------------------------
# The pure parts


def probe_run(folder: Path, rows: list[dict], batch: int = 64) -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "squad_qa.json").write_text(json.dumps({"training_args": {"per_device_train_batch_size": batch}}))
    return folder


def test_the_teachers_epochs_come_from_the_probes_last_interval(tmp_path):
    # 60 steps of batch 64 were 0.0433 of an epoch: 88,684 windows; the last interval ran at 1,178 samples/s
    run = probe_run(tmp_path / "probe", [
        {"step": 20, "epoch": 0.0144, "loss": 5.1, "samples_per_s": 900.0},
        {"step": 40, "epoch": 0.0289, "loss": 4.0, "samples_per_s": 1150.0},
        {"step": 60, "epoch": 0.0433, "loss": 3.2, "samples_per_s": 1178.0},
        {"step": 60, "eval_f1": 10.0, "eval_exact_match": 5.0}])
    probe = read_probe(run)
    assert probe.samples_per_s == 1178.0 and probe.windows == pytest.approx(60 * 64 / 0.0433)
    # 200 s x 0.9 x 1178/s = 212,040 samples = 2.39 epochs: capped at 2; 80 s: 0.956 -> 0.9 (tenths, down)
    assert fit_epochs(probe, 200) == 2.0
    assert fit_epochs(probe, 80) == 0.9
    assert fit_epochs(probe, 5) == 0.3  # at least 0.3 of an epoch, whatever the probe says
    assert fit_epochs(None, 80) == 1.0  # no probe figures: one epoch
    assert fit_epochs(Probe(1000.0, 1000.0), 1.0) == 0.9
    with pytest.raises(ValueError, match="no throughput figures"):
        read_probe(probe_run(tmp_path / "empty", []))


def test_parts_split_and_join_back(tmp_path):
    data = os.urandom(2500)
    src = tmp_path / "model.bin"
    src.write_bytes(data)
    parts = split_file(src, tmp_path / "parts" / "model.bin.part-", part_bytes=1000)
    assert [p.name for p in parts] == ["model.bin.part-aa", "model.bin.part-ab", "model.bin.part-ac"]
    assert [p.stat().st_size for p in parts] == [1000, 1000, 500]
    assert join_parts(parts, tmp_path / "back.bin").read_bytes() == data
    assert part_name("x.", 26) == "x.ba" and part_name("x.", 675) == "x.zz"
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert split_file(empty, tmp_path / "e.part-") == []


def logits_home(tmp_path: Path, data: bytes = b"logits" * 1000) -> Path:
    """A logits file as it comes home: in parts, with SHA256SUMS beside them (the file itself not joined yet)."""
    import hashlib

    home = tmp_path / "teacher-logits"
    home.mkdir()
    src = tmp_path / "teacher-logits-x.safetensors"
    src.write_bytes(data)
    split_file(src, home / f"{src.name}.part-", part_bytes=2500)
    (home / "SHA256SUMS").write_text(f"{hashlib.sha256(data).hexdigest()}  {src.name}\n")
    return home / src.name


def teacher_cmd(tmp_path: Path, logits: Path) -> list[str]:
    return ["teacher", "--teacher_logits", str(logits), "--out", str(tmp_path / "out"), "--root", str(tmp_path / "r")]


def test_teacher_logits_joined_and_checked(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    logits = logits_home(tmp_path)
    assert gpu_plan.main(teacher_cmd(tmp_path, logits)) == 0
    assert logits.read_bytes() == b"logits" * 1000
    # gzipped instead of in parts
    gz = tmp_path / "gz"
    gz.mkdir()
    (gz / "SHA256SUMS").write_text((logits.parent / "SHA256SUMS").read_text())
    (gz / f"{logits.name}.gz").write_bytes(gzip.compress(logits.read_bytes()))
    assert ready_logits(gz / logits.name).read_bytes() == logits.read_bytes()


@pytest.mark.parametrize("damage", ["part", "sums", "gz", "missing"])
def test_damaged_teacher_logits_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys, damage):
    monkeypatch.chdir(REPO)
    logits = logits_home(tmp_path)
    if damage == "part":  # a byte flipped in transit
        part = logits.with_name(logits.name + ".part-ab")
        part.write_bytes(b"X" + part.read_bytes()[1:])
    elif damage == "sums":
        (logits.parent / "SHA256SUMS").unlink()
    elif damage == "gz":
        for part in logits.parent.glob("*.part-*"):
            part.unlink()
        logits.with_name(logits.name + ".gz").write_bytes(b"\x1f\x8b\x08\x00 not gzip at all")
    else:
        for part in logits.parent.glob("*.part-*"):
            part.unlink()
    assert gpu_plan.main(teacher_cmd(tmp_path, logits)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: --teacher_logits {logits}"), err
    said = {"part": "damaged: sha256", "sums": "no SHA256SUMS", "gz": "damaged", "missing": "no such file"}[damage]
    assert said in err
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").iterdir())  # nothing ran


def fake_run(root: Path, name: str, f1: float) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "eval_results.json").write_text(json.dumps({"exact_match": f1 - 8, "f1": f1}))
    return run


def test_ship_takes_the_best_run_above_min_f1_and_nothing_below(tmp_path):
    runs = tmp_path / "kd"
    fake_run(runs, "kd-baseline-s1", 85.1)
    best = fake_run(runs, "kd-fgm-s2", 86.2)
    fake_run(runs, "abl-best-s1", 85.9)
    (runs / "unfinished-s1").mkdir()  # no eval_results.json: not a candidate
    assert best_run(runs, 85.74) == best
    assert best_run(runs, 86.2) is None  # a tie with the shipped model is no better
    assert best_run(tmp_path / "nothing", -1) is None
    out = tmp_path / "out"
    out.mkdir()
    (out / "ship.tar.part-aa").write_bytes(b"an earlier call's")
    assert ship(runs, tmp_path, out, 90.0) == []
    assert not list(out.iterdir()) and not (tmp_path / "ship").exists()  # nothing ships, and no stale parts go out


def test_pack_keeps_metrics_results_and_logs_only(tmp_path):
    root = tmp_path / "gpu"
    for rel in ("kd/a-s1/metrics.jsonl", "kd/a-s1/eval_results.json", "kd/a-s1/model.safetensors",
                "kd/a-s1/tokenizer.json", "kd/a-s1/tokenizer_config.json", "kd/a-s1/nbest_predictions.json",
                "kd/a-s1/best/squad_qa.json", "kd/a-s1.log", "kd/RESULTS.md", "ship/squad_qa.json",
                "logits-parts/SHA256SUMS"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and packed(p, root)) == [
        "kd/RESULTS.md", "kd/a-s1.log", "kd/a-s1/eval_results.json", "kd/a-s1/metrics.jsonl"]
    assert pack_runs(root, tmp_path / "runs.tgz") == 4
    with tarfile.open(tmp_path / "runs.tgz") as tar:
        assert sorted(tar.getnames()) == ["gpu/kd/RESULTS.md", "gpu/kd/a-s1.log", "gpu/kd/a-s1/eval_results.json",
                                          "gpu/kd/a-s1/metrics.jsonl"]


def test_bad_input_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("OUT", raising=False)
    with pytest.raises(SystemExit) as e:  # no --out and no $OUT: argparse's usage error
        gpu_plan.main(["ship"])
    assert e.value.code == 2
    capsys.readouterr()
    out, root = tmp_path / "out", tmp_path / "runs"
    assert gpu_plan.main(["all", "--no_teacher", "--configs", "experiments/nope.json", "--out", str(out),
                          "--root", str(root)]) == 2
    assert capsys.readouterr().err.strip() == "error: config not found: experiments/nope.json"
    assert not root.exists()
    # $OUT is --out's default; a folder that no rehearsal made is not cleared
    monkeypatch.setenv("OUT", str(out))
    (tmp_path / "mine").mkdir()
    assert gpu_plan.main(["rehearse", "--folder", str(tmp_path / "mine")]) == 2
    assert "is not a rehearsal folder" in capsys.readouterr().err
    assert gpu_plan.main(["ship", "--root", str(root), "--min_f1", "0"]) == 0
    assert (out / "log.txt").is_file() and (out / "runs.tgz").is_file()
