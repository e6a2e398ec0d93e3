"""Ablation runner and fp16 export, end to end on CPU with a tiny random BERT and the tiny SQuAD fixture.

The runs are real subprocesses of `squad-qa train` (what the GPU runs do), kept to a few steps.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from conftest import TINY_SQUAD, load_script, tiny_bert_qa
import torch
from safetensors.torch import load_file

import squad_qa
from squad_qa.training import experiments as ablate
from squad_qa.training.checks import validate_args
from squad_qa.training.config import build_parser, load_config, parse_args

REPO = Path(__file__).resolve().parents[1]



@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return tiny_bert_qa(tmp_path_factory.mktemp("tiny_bert"), seed=0, layers=2,
                        tokenizer_from=squad_qa.default_base_model_path(), max_position_embeddings=160)


def tiny_config(path: Path, model: Path, **over) -> Path:
    cfg = {"model_name_or_path": str(model), "train_file": str(TINY_SQUAD), "predict_file": str(TINY_SQUAD),
           "do_train": True, "do_eval": True, "max_seq_length": 128, "doc_stride": 48,
           "per_device_train_batch_size": 8, "per_device_eval_batch_size": 32, "learning_rate": 1e-3,
           "max_steps": 3, "logging_steps": 1, "eval_steps": 2, "save_steps": 0, "no_cuda": True}
    cfg.update(over)
    path.write_text(json.dumps(cfg))
    return path


def test_ablate_runs_aggregates_and_resumes(tiny_model, tmp_path, capsys):
    cfgs = [tiny_config(tmp_path / "plain.json", tiny_model),
            tiny_config(tmp_path / "smooth.json", tiny_model, label_smoothing=0.1)]
    root, results = tmp_path / "runs", tmp_path / "RESULTS.md"
    argv = ["--configs", *map(str, cfgs), "--seeds", "1", "2", "--output_root", str(root),
            "--results", str(results), "--extra", "--num_train_epochs 1"]
    assert ablate.main(argv) == 0
    out = capsys.readouterr().out
    assert "4 done, 0 skipped" in out
    for name in ("plain", "smooth"):
        for seed in (1, 2):
            run = root / f"{name}-s{seed}"
            rec = json.loads((run / ablate.RUN_FILE).read_text())
            assert rec["seed"] == seed and rec["device"] == "cpu" and rec["wall_s"] > 0
            assert "--num_train_epochs 1" in rec["command"]
            assert json.loads((run / "squad_qa.json").read_text())["training_args"]["seed"] == seed

    # The table's numbers are the per-run eval_results.json aggregated: recompute them independently.
    text = results.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| plain") or line.startswith("| smooth")]
    assert [r.split("|")[1].strip() for r in rows] == ["plain", "smooth"]
    for row, name in zip(rows, ("plain", "smooth")):
        f1s = [json.loads((root / f"{name}-s{s}" / "eval_results.json").read_text())["f1"] for s in (1, 2)]
        ems = [json.loads((root / f"{name}-s{s}" / "eval_results.json").read_text())["exact_match"] for s in (1, 2)]
        cells = [c.strip() for c in row.split("|")[1:-1]]
        assert cells[1] == "1, 2"
        assert cells[2] == f"{statistics.fmean(ems):.2f} ± {statistics.stdev(ems):.2f}"
        assert cells[3] == f"{statistics.fmean(f1s):.2f} ± {statistics.stdev(f1s):.2f}"
        assert cells[4] == "3" and cells[7] == "cpu"
        assert float(cells[6]) > 0  # samples/s from metrics.jsonl
    # Seeds differ, so the runs differ (the seed flag reaches the training process).
    w1 = load_file(str(root / "plain-s1" / "model.safetensors"))
    w2 = load_file(str(root / "plain-s2" / "model.safetensors"))
    assert any(not torch.equal(w1[k], w2[k]) for k in w1)
    # The F1 curve: eval rows at steps 2 (eval_steps) for every run -> a PNG when matplotlib is there.
    groups = ablate.collect_runs(root, ["plain", "smooth"])
    assert [s for s, _ in ablate.mean_curve(groups["plain"])] == [2]
    png = tmp_path / "RESULTS_f1.png"
    try:
        import matplotlib  # noqa: F401
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "RESULTS_f1.png" in text
    except ImportError:
        assert not png.exists() and "matplotlib is not installed" in text

    # Second call: everything finished -> nothing re-runs, model files untouched; the table is the same.
    mtime = (root / "plain-s1" / "model.safetensors").stat().st_mtime_ns
    assert ablate.main(argv) == 0
    assert "0 done, 4 skipped" in capsys.readouterr().out
    assert (root / "plain-s1" / "model.safetensors").stat().st_mtime_ns == mtime
    assert results.read_text() == text

    # An interrupted run (no eval_results.json) is redone; --aggregate_only then sees all of them again.
    (root / "smooth-s2" / "eval_results.json").unlink()
    assert ablate.main(["--aggregate_only", "--output_root", str(root), "--results", str(results)]) == 0
    assert "| smooth | 1 |" in results.read_text()  # left out, not silently counted
    assert ablate.main(argv) == 0
    assert "1 done, 3 skipped" in capsys.readouterr().out
    assert "| smooth | 1, 2 |" in results.read_text()


def test_ablate_reports_failed_run_and_bad_input(tiny_model, tmp_path, capsys):
    bad = tiny_config(tmp_path / "bad.json", tiny_model, label_smoothing=1.5)  # rejected by train.py
    root = tmp_path / "runs"
    rc = ablate.main(["--configs", str(bad), "--seeds", "3", "--output_root", str(root),
                      "--results", str(tmp_path / "R.md")])
    assert rc == 2  # no finished run -> no table
    assert "label_smoothing" in (root / "bad-s3.log").read_text()
    assert ablate.main(["--configs", str(tmp_path / "missing.json"), "--output_root", str(root)]) == 2
    assert ablate.main(["--aggregate_only", "--output_root", str(tmp_path / "nowhere")]) == 2


def test_experiment_configs_are_valid_flags(tmp_path):
    """Every shipped experiment (ablation rows, distilled students, the teacher) parses and validates (paths
    pointed at existing files)."""
    configs = sorted((REPO / "experiments").glob("*.json"))
    assert len(configs) >= 20
    # a fine-tuned QA folder with run_squad's 512 positions, as the device's runs/gpu/teacher/teacher-mpnet-s1 is
    teacher = tiny_bert_qa(tmp_path / "teacher", seed=0, layers=1, tokenizer_from=squad_qa.default_base_model_path())
    for c in configs:
        cfg = load_config(str(c), build_parser())  # with the keys of the files it extends
        assert cfg["do_train"] and cfg["do_eval"] and cfg["bf16"]
        # the students' curves (the plots) need frequent evaluation; the teacher is scored once at its end
        assert cfg["eval_steps"] > 0 or c.name.startswith("teacher-"), c.name
        cfg.update(train_file=str(TINY_SQUAD), predict_file=str(TINY_SQUAD), model_name_or_path=str(tmp_path))
        if "teacher" in cfg:
            cfg["teacher"] = str(teacher)
        fixed = tmp_path / c.name
        fixed.write_text(json.dumps(cfg))
        args = parse_args(["--config", str(fixed), "--output_dir", str(tmp_path / "o")])
        validate_args(args)


def test_export_fp16_roundtrip(tiny_model, tmp_path, capsys):
    from transformers import AutoModelForQuestionAnswering

    exp = load_script("export_fp16")
    (tiny_model / "squad_qa.json").write_text(json.dumps({"global_step": 7, "weights": "ema",
                                                          "metrics": {"exact_match": 50.0, "f1": 60.5,
                                                                      "num_questions": 4},
                                                          "training_args": {"teacher": "t.safetensors",
                                                                            "kd_alpha": 0.8, "adv": "fgm",
                                                                            "adv_epsilon": 1.0, "ema_decay": None,
                                                                            "seed": 2}}))
    dst = tmp_path / "fp16"
    assert exp.main([str(tiny_model), str(dst), "--model_card"]) == 0
    line = capsys.readouterr().out
    st = dst / "model.safetensors"
    assert exp.file_sha256(st) in line
    assert f"{exp.file_sha256(st)}  model.safetensors" in (dst / "SHA256SUMS").read_text()
    assert all(t.dtype == torch.float16 for t in load_file(str(st)).values())
    ratio = st.stat().st_size / (tiny_model / "model.safetensors").stat().st_size
    assert 0.45 < ratio < 0.55
    assert (dst / "tokenizer.json").is_file() and json.loads((dst / "squad_qa.json").read_text())["global_step"] == 7
    card = (dst / "README.md").read_text()
    assert "EM 50.00 / F1 60.50" in card
    # the flags that made it, a distilled model's teacher among them; unset ones are left out
    assert all(f"- {flag}\n" in card for flag in ("teacher: t.safetensors", "kd_alpha: 0.8", "adv: fgm",
                                                  "adv_epsilon: 1.0", "seed: 2"))
    assert "ema_decay" not in card
    # transformers 5 keeps the stored dtype by default; train.py asks for float32 and gets it, weights within
    # fp16 rounding of the original, QA head included (a QA checkpoint stays a QA checkpoint).
    assert next(AutoModelForQuestionAnswering.from_pretrained(dst).parameters()).dtype == torch.float16
    m32 = AutoModelForQuestionAnswering.from_pretrained(dst, dtype=torch.float32)
    orig = load_file(str(tiny_model / "model.safetensors"))
    back = m32.state_dict()
    assert "qa_outputs.weight" in orig
    for k, v in orig.items():
        assert back[k].dtype == torch.float32
        torch.testing.assert_close(back[k], v, rtol=1e-3, atol=1e-4)
    assert exp.main([str(tmp_path / "nothing"), str(tmp_path / "x")]) == 2


def test_time_budget_leaves_runs_for_the_next_command(tmp_path):
    """A run that would not fit the budget (by the wall time of a finished seed of its config) is not started."""
    cfg = tmp_path / "slow.json"
    cfg.write_text("{}")
    root = tmp_path / "runs"
    (root / "slow-s1").mkdir(parents=True)
    (root / "slow-s1" / ablate.RUN_FILE).write_text(json.dumps({"wall_s": 100.0}))
    (root / "slow-s1" / "eval_results.json").write_text(json.dumps({"exact_match": 1.0, "f1": 2.0}))
    out = ablate.execute(ablate.plan_runs([cfg], [1, 2], root), [], time_budget=50, device="cpu")
    assert out.skipped == [root / "slow-s1"] and out.not_started == [root / "slow-s2"] and not out.done
    assert not (root / "slow-s2").exists()


def test_config_at_seed_pins_one_seed(tmp_path):
    """CONFIG@SEED runs that seed alone beside configs run for every --seeds; seed-major order; one folder per run."""
    d = tmp_path / "a@b"  # an '@' in a folder name is part of the path
    d.mkdir()
    for name in ("fgm", "base"):
        (d / f"{name}.json").write_text("{}")
    root = tmp_path / "runs"
    plans = ablate.plan_runs([str(d / "fgm.json"), f"{d / 'base.json'}@2", f"{d / 'fgm.json'}@7"], [1, 2], root)
    assert [(p.config.name, p.seed, p.out.name) for p in plans] == [
        ("fgm.json", 1, "fgm-s1"), ("fgm.json", 2, "fgm-s2"), ("base.json", 2, "base-s2"), ("fgm.json", 7, "fgm-s7")]
    with pytest.raises(ablate.AblationError, match=r"fgm-s2"):  # the same run folder twice
        ablate.plan_runs([str(d / "fgm.json"), f"{d / 'fgm.json'}@2"], [1, 2], root)
    with pytest.raises(ablate.AblationError, match="config not found"):
        ablate.plan_runs([f"{d / 'fgm.json'}@x"], [1], root)
