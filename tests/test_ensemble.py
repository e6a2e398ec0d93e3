"""Ensembles (QAReader over several models, predict.py --model A --model B) and --save_logits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from squad_qa.data.squad import read_squad_examples
from squad_qa.model.ensemble import EnsembleError, ModelEnsemble
from squad_qa.inference.reader import QAItem, QAReader
from squad_qa.model.logits_file import load_window_logits
from squad_qa.spans.postprocess import postprocess_predictions
from squad_qa.inference.predict import main

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SQUAD = FIXTURES / "tiny_squad.json"


def _items():
    context = ("The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, "
               "a region in France. They were descended from Norse raiders and pirates from Denmark. ") * 6
    return [QAItem("Who gave their name to Normandy?", context, top_k=3),
            QAItem("Where were the raiders from?", context[:200], top_k=2)]


def test_ensemble_of_one_model_is_that_model(tiny_qa_checkpoint):
    single = QAReader.from_pretrained(tiny_qa_checkpoint, device="cpu")
    listed = QAReader.from_pretrained([tiny_qa_checkpoint], device="cpu")
    ensemble = QAReader(ModelEnsemble([single.model]), single.tokenizer, model_dir=single.model_dir,
                        packed=False)
    expected = single.answer_batch(_items())
    assert listed.answer_batch(_items()) == expected
    assert ensemble.answer_batch(_items()) == expected


def test_ensemble_decodes_the_mean_of_the_members_raw_logits(tiny_qa_checkpoint, second_checkpoint):
    a = QAReader.from_pretrained(tiny_qa_checkpoint, device="cpu", packed=False)
    b = QAReader.from_pretrained(second_checkpoint, device="cpu", packed=False)
    both = QAReader.from_pretrained([tiny_qa_checkpoint, second_checkpoint], device="cpu")
    assert isinstance(both.model, ModelEnsemble) and both.model_dirs == [tiny_qa_checkpoint, second_checkpoint]
    assert both.packed  # on CPU, BERT members: packed like a single model
    examples = read_squad_examples(SQUAD, is_training=False)
    features = both.features_for(examples)
    sa, ea = a.predict_logits(features)
    sb, eb = b.predict_logits(features)
    start, end = both.predict_logits(features)
    mean_s, mean_e = (sa + sb) / 2, (ea + eb) / 2
    real = np.arange(features.max_seq_length)[None, :] < features.seq_len[:, None]
    np.testing.assert_allclose(start[real], mean_s[real], atol=1e-5)
    np.testing.assert_allclose(end[real], mean_e[real], atol=1e-5)
    assert not np.allclose(sa[real], sb[real])  # two different models

    def decode(s, e):
        return postprocess_predictions(examples, features, s, e, n_best_size=20, max_answer_length=30)

    ours, theirs = decode(start, end), decode(mean_s, mean_e)
    assert ours.predictions == theirs.predictions
    # and through the reader's own API
    got = both.answer_batch([QAItem(ex.question_text, ex.context_text) for ex in examples])
    assert [g[0].text for g in got] == [theirs.predictions[ex.qas_id] for ex in examples]


def test_models_with_other_windows_are_refused(tmp_path, tiny_qa_checkpoint, second_checkpoint):
    other = tmp_path / "other-geometry"
    shutil.copytree(second_checkpoint, other)
    (other / "squad_qa.json").write_text(json.dumps({"training_args": {"max_seq_length": 256}}))
    with pytest.raises(EnsembleError, match=r"other-geometry.*max_seq_length 384 vs 256"):
        QAReader.from_pretrained([tiny_qa_checkpoint, other], device="cpu")
    # one geometry named for both: fine
    QAReader.from_pretrained([tiny_qa_checkpoint, other], device="cpu", max_seq_length=256)


def test_predict_ensemble_and_save_logits(tmp_path, tiny_qa_checkpoint, second_checkpoint, capsys):
    logits = tmp_path / "teacher.safetensors"
    argv = ["--model", str(tiny_qa_checkpoint), "--model", str(second_checkpoint), "--predict_file", str(SQUAD),
            "--output_dir", str(tmp_path / "ens"), "--save_logits", str(logits)]
    assert main(argv) == 0
    saved = load_window_logits(logits)
    meta = saved.meta
    both = QAReader.from_pretrained([tiny_qa_checkpoint, second_checkpoint], device="cpu")
    examples = read_squad_examples(SQUAD, is_training=False)
    features = both.features_for(examples)
    start, end = both.predict_logits(features)
    n = len(features)
    assert int(meta["windows"]) == n and len(saved) == n and tuple(saved.start.shape) == (n, 384)
    assert saved.start.dtype == torch.float16
    assert (meta["max_seq_length"], meta["doc_stride"], meta["max_query_length"]) == ("384", "128", "64")
    assert json.loads(meta["models"]) == [str(tiny_qa_checkpoint), str(second_checkpoint)]
    assert json.loads(meta["qas_ids"]) == [ex.qas_id for ex in examples] and meta["squad_file"] == str(SQUAD)
    assert saved.qas_ids == [examples[i].qas_id for i in features.example_index]
    np.testing.assert_array_equal(saved.seq_len, features.seq_len)
    np.testing.assert_array_equal(saved.doc_span_index, features.doc_span_index)
    np.testing.assert_allclose(saved.start.float().numpy(), start, atol=2e-3, rtol=1e-3)
    np.testing.assert_allclose(saved.end.float().numpy(), end, atol=2e-3, rtol=1e-3)
    # the ensemble's predictions file is the averaged logits' decoding
    expected = postprocess_predictions(examples, features, start, end, n_best_size=20, max_answer_length=30)
    assert json.loads((tmp_path / "ens" / "predictions.json").read_text()) == expected.predictions


def test_predict_one_model_unchanged_and_mismatch_exits_2(tmp_path, tiny_qa_checkpoint, second_checkpoint, capsys):
    base = ["--predict_file", str(SQUAD)]
    assert main(["--model", str(tiny_qa_checkpoint), *base, "--output_dir", str(tmp_path / "one")]) == 0
    single = QAReader.from_pretrained(tiny_qa_checkpoint, device="cpu")
    examples = read_squad_examples(SQUAD, is_training=False)
    got = json.loads((tmp_path / "one" / "predictions.json").read_text())
    assert got == {ex.qas_id: single.answer(ex.question_text, ex.context_text)[0].text for ex in examples}
    capsys.readouterr()

    other = tmp_path / "other"
    shutil.copytree(second_checkpoint, other)
    (other / "squad_qa.json").write_text(json.dumps({"training_args": {"doc_stride": 64}}))
    code = main(["--model", str(tiny_qa_checkpoint), "--model", str(other), *base, "--output_dir", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    errors = [line for line in err.splitlines() if "error" in line]  # (transformers' load bars go to stderr too)
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0]
    err = errors[0]
    assert err.startswith("error: cannot ensemble")
    assert str(tiny_qa_checkpoint) in err and str(other) in err and "doc_stride 128 vs 64" in err
