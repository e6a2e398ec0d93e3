"""Calibrated scores: the fit, ECE, the file in the model folder (checksummed), and the reader using it."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from squad_qa.files.checksums import read_checksums, write_checksums
from squad_qa.inference.reader import QAReader
from squad_qa.model.model_dir import CheckpointError, check_qa_checkpoint
from squad_qa.scoring.calibrate import main as calibrate_main
from squad_qa.spans.calibration import CALIBRATOR_FILE, Calibrator, CalibratorError, candidate_features, ece


def test_ece_of_known_bins():
    assert ece([0.9] * 10, [1] * 9 + [0]) == pytest.approx(0.0)
    assert ece([0.9] * 10, [1] * 5 + [0] * 5) == pytest.approx(0.4)
    assert ece([0.15, 0.15, 0.95, 0.95], [0, 1, 1, 1]) == pytest.approx(0.5 * 0.35 + 0.5 * 0.05)


def test_candidate_features_margins():
    f = candidate_features([0.6, 0.3, 0.1], [5.0, 4.0, 1.0])
    assert f[:, 2].tolist() == [1.0, -1.0, -4.0]  # the best against the runner-up, the others against the best
    assert f[0, 0] == pytest.approx(np.log(0.6)) and f[:, 1].tolist() == [5.0, 4.0, 1.0]
    assert candidate_features([1.0], [3.0])[0, 2] == 10.0  # alone: a wide margin
    assert candidate_features([], []).shape == (0, 3)


def test_the_fit_recovers_a_logistic_relation_and_calibrates():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, 3))
    truth = 1 / (1 + np.exp(-(X @ [1.5, -0.5, 0.8] + 0.3)))
    y = (rng.random(len(truth)) < truth).astype(float)
    c = Calibrator.fit(X, y)
    assert np.allclose(c.weights, [1.5, -0.5, 0.8], atol=0.08) and c.bias == pytest.approx(0.3, abs=0.06)
    assert ece(c.predict(X), y) < 0.01 < ece(np.full(len(y), 0.9), y)


def write_calibrated_copy(src, dst):
    shutil.copytree(src, dst)
    Calibrator((2.0, 0.1, 0.5), -1.0, "a test").save(dst)
    write_checksums(dst, [n for n in ("model.safetensors", "config.json", "tokenizer.json", CALIBRATOR_FILE)])
    return dst


def test_the_reader_scores_with_the_folders_calibrator(tiny_qa_checkpoint, tmp_path):
    folder = write_calibrated_copy(tiny_qa_checkpoint, tmp_path / "calibrated")
    question, context = "Who won?", "The Broncos won the game in 2016 at Levi's Stadium."
    plain = QAReader.from_pretrained(tiny_qa_checkpoint).answer(question, context, top_k=20)  # the whole n-best
    reader = QAReader.from_pretrained(folder)
    calibrated = reader.answer(question, context, top_k=20)
    assert reader.describe()["calibrated"] and not QAReader.from_pretrained(tiny_qa_checkpoint).describe()["calibrated"]
    assert [a.text for a in calibrated] == [a.text for a in plain]
    expected = Calibrator((2.0, 0.1, 0.5), -1.0).predict(candidate_features([a.score for a in plain],
                                                                          [a.logit for a in plain]))
    assert [a.score for a in calibrated] == pytest.approx(expected.tolist())


def test_a_damaged_calibrator_is_refused(tiny_qa_checkpoint, tmp_path):
    folder = write_calibrated_copy(tiny_qa_checkpoint, tmp_path / "damaged")
    (folder / CALIBRATOR_FILE).write_text((folder / CALIBRATOR_FILE).read_text().replace("2.0", "3.0"))
    with pytest.raises(CheckpointError, match="calibrator.json is damaged"):
        check_qa_checkpoint(folder)
    other = write_calibrated_copy(tiny_qa_checkpoint, tmp_path / "other-features")
    raw = json.loads((other / CALIBRATOR_FILE).read_text())
    (other / CALIBRATOR_FILE).write_text(json.dumps({**raw, "features": ["logit"]}))
    with pytest.raises(CalibratorError, match="this version reads"):
        Calibrator.load(other)


def test_calibrate_command_cross_fits_and_saves(tiny_qa_checkpoint, tmp_path, capsys):
    rng = np.random.default_rng(1)
    data, nbest = {"version": "1.1", "data": []}, {}
    for a in range(6):
        qas = []
        for i in range(40):
            qid, right = f"a{a}q{i}", rng.random() < 0.7
            qas.append({"id": qid, "question": "q?", "answers": [{"text": "gold", "answer_start": 0}]})
            top = 2.0 + 3 * right + rng.normal()
            nbest[qid] = [{"text": "gold" if right else "miss", "probability": 0.5 + 0.4 * right,
                           "start_logit": top / 2, "end_logit": top / 2},
                          {"text": "other", "probability": 0.2, "start_logit": 0.5, "end_logit": 0.5}]
        data["data"].append({"title": f"t{a}", "paragraphs": [{"context": "gold miss other", "qas": qas}]})
    (tmp_path / "data.json").write_text(json.dumps(data))
    (tmp_path / "nbest.json").write_text(json.dumps(nbest))
    folder = shutil.copytree(tiny_qa_checkpoint, tmp_path / "model")
    args = ["--predict_file", str(tmp_path / "data.json"), "--nbest", str(tmp_path / "nbest.json")]
    assert calibrate_main([*args, "--model", str(folder), "--save"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"all \(cross-fitted\) +240 ", out) and "even-position articles, 120 questions" in out
    assert CALIBRATOR_FILE in read_checksums(folder) and Calibrator.load(folder).fitted_on.startswith("data.json")
    check_qa_checkpoint(folder)
    assert calibrate_main([*args, "--save"]) == 2
    (tmp_path / "nbest.json").write_text("{")
    assert calibrate_main(args) == 2 and "not valid JSON" in capsys.readouterr().err


def test_predict_answers_nothing_below_min_score_and_writes_null_odds(tiny_qa_checkpoint, tmp_path, capsys):
    from squad_qa.inference.predict import main as predict_main

    folder = write_calibrated_copy(tiny_qa_checkpoint, tmp_path / "calibrated")
    context = "The Broncos won the game in 2016 at Levi's Stadium."
    data = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": [
        {"id": f"q{i}", "question": q, "answers": [], "is_impossible": True}
        for i, q in enumerate(["Who won?", "Where?", "When?"])]}]}]}
    (tmp_path / "d.json").write_text(json.dumps(data))
    common = ["--predict_file", str(tmp_path / "d.json"), "--version_2_with_negative"]
    assert predict_main(["--model", str(folder), *common, "--output_dir", str(tmp_path / "all")]) == 0
    assert predict_main(["--model", str(folder), *common, "--output_dir", str(tmp_path / "none"),
                         "--min_score", "1.0"]) == 0
    answered = json.loads((tmp_path / "all" / "predictions.json").read_text())
    odds = json.loads((tmp_path / "all" / "null_odds.json").read_text())
    assert all(answered.values()) and all(0.0 <= v <= 1.0 for v in odds.values())  # 1 - a probability
    assert set(json.loads((tmp_path / "none" / "predictions.json").read_text()).values()) == {""}
    assert predict_main(["--model", str(tiny_qa_checkpoint), *common, "--output_dir", str(tmp_path / "x"),
                         "--min_score", "0.5"]) == 2
    assert "--min_score needs a calibrated model" in capsys.readouterr().err
