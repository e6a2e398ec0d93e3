"""The ONNX Runtime backend: exported once beside the model, checked, and answering as torch does."""

from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pytest

from squad_qa.inference.items import QAItem
from squad_qa.inference.predict import main as predict_main
from squad_qa.inference.reader import QAReader
from squad_qa.model import cpu, onnx_backend
from squad_qa.model.model_dir import DEFAULT_MODEL_DIR

CONTEXT = ("Super Bowl 50 was an American football game to determine the champion of the National Football "
           "League (NFL) for the 2015 season. The American Football Conference (AFC) champion Denver Broncos "
           "defeated the National Football Conference (NFC) champion Carolina Panthers 24-10 to earn their "
           "third Super Bowl title. The game was played on February 7, 2016, at Levi's Stadium in the San "
           "Francisco Bay Area at Santa Clara, California.")


@pytest.fixture(scope="module")
def tiny_copy(tiny_qa_checkpoint, tmp_path_factory):
    """A copy of the tiny checkpoint, so that its onnx/ folder is this module's alone."""
    return shutil.copytree(tiny_qa_checkpoint, tmp_path_factory.mktemp("onnx") / "tiny")


@pytest.fixture(scope="module")
def dev_items(squad_dir):
    data = json.load(gzip.open(squad_dir / "dev-v1.1.json.gz"))
    return [QAItem(q["question"], p["context"]) for article in data["data"][:3]
            for p in article["paragraphs"][:4] for q in p["qas"][:1]]


def logits(reader, items):
    features = reader.prepare(items).features
    return features, reader.predict_logits(features)


def test_the_export_lands_beside_the_model_with_checksums(tiny_copy):
    reader = QAReader.from_pretrained(tiny_copy, backend="onnx")
    folder = tiny_copy / onnx_backend.ONNX_DIR
    assert sorted(p.name for p in folder.iterdir()) == ["SHA256SUMS", "export.json", "model-int8.onnx", "model.onnx"]
    record = json.loads((folder / "export.json").read_text())
    assert record["architecture"] == "BertForQuestionAnswering" and record["fusions"]["Attention"] == 2
    info = reader.describe()
    assert (info["backend"], info["quantized"], info["dtype"], info["packed"]) == ("onnx", None, "float32", False)
    assert info["architecture"] == "BertForQuestionAnswering"


def test_float32_graph_gives_torch_float32_logits(tiny_copy):
    items = [QAItem("Who won Super Bowl 50?", CONTEXT), QAItem("Where?", CONTEXT + " " + CONTEXT * 6)]
    torch_reader = QAReader.from_pretrained(tiny_copy, packed=False)
    onnx_reader = QAReader.from_pretrained(tiny_copy, backend="onnx", max_batch_size=2)
    features, (s_t, e_t) = logits(torch_reader, items)
    _, (s_o, e_o) = logits(onnx_reader, items)
    assert len(features) > 2  # several windows, batched with padding
    real = np.arange(features.max_seq_length)[None, :] < features.seq_len[:, None]
    assert np.abs(s_t - s_o)[real].max() < 1e-4 and np.abs(e_t - e_o)[real].max() < 1e-4


def test_int8_graph_stays_close_to_float32(tiny_copy):
    items = [QAItem("Who won Super Bowl 50?", CONTEXT)]
    features, (s_f, _) = logits(QAReader.from_pretrained(tiny_copy, backend="onnx"), items)
    _, (s_q, _) = logits(QAReader.from_pretrained(tiny_copy, backend="onnx", quantize="int8"), items)
    real = np.arange(features.max_seq_length)[None, :] < features.seq_len[:, None]
    spread = np.ptp(s_f[real])
    assert 0 < np.abs(s_f - s_q)[real].max() < 0.1 * spread  # int8 moves the logits, a little


def test_a_damaged_or_stale_export_is_made_again(tiny_copy, caplog):
    QAReader.from_pretrained(tiny_copy, backend="onnx")
    graph = tiny_copy / "onnx" / "model.onnx"
    graph.write_bytes(graph.read_bytes()[:-10])  # damaged
    caplog.set_level("INFO", logger="squad_qa.model.onnx_backend")
    QAReader.from_pretrained(tiny_copy, backend="onnx")
    assert "is damaged" in caplog.text and "exporting it now" in caplog.text
    record_path = tiny_copy / "onnx" / "export.json"
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "source_sha256": "0" * 64}))  # other weights
    caplog.clear()
    QAReader.from_pretrained(tiny_copy, backend="onnx")
    assert "exported from other weights" in caplog.text
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "int8": "some older recipe"}))
    caplog.clear()
    QAReader.from_pretrained(tiny_copy, backend="onnx")
    assert "exported with other settings" in caplog.text
    QAReader.from_pretrained(tiny_copy, backend="onnx")  # and now it is as it should be: no export
    assert caplog.text.count("exporting it now") == 1


@pytest.mark.parametrize("kwargs, message", [
    ({"compile": True}, "compile"),
    ({"packed": True}, "packed batches"),
    ({"dtype": "bfloat16"}, "dtype bfloat16"),
    ({"device": "cuda"}, "device cuda"),
])
def test_what_the_onnx_backend_cannot_do_is_refused_in_one_line(tiny_copy, kwargs, message):
    with pytest.raises(ValueError, match=f"backend 'onnx' does not do .*{message}") as raised:
        QAReader.from_pretrained(tiny_copy, backend="onnx", **kwargs)
    assert "\n" not in str(raised.value)


def test_an_ensemble_on_onnx_and_an_unknown_backend_are_refused(tiny_copy, second_checkpoint):
    with pytest.raises(ValueError, match="serves one model folder, not an ensemble"):
        QAReader.from_pretrained([tiny_copy, second_checkpoint], backend="onnx")
    with pytest.raises(ValueError, match="backend must be one of torch, onnx, got 'tflite'"):
        QAReader.from_pretrained(tiny_copy, backend="tflite")


def test_predict_with_the_onnx_backend_writes_torchs_predictions(tiny_copy, tmp_path, capsys):
    data = {"version": "1.1", "data": [{"title": "SB", "paragraphs": [{"context": CONTEXT, "qas": [
        {"id": f"q{i}", "question": q, "answers": [{"text": "Denver Broncos", "answer_start": 177}]}
        for i, q in enumerate(["Who won?", "Where was the game played?", "When?"])]}]}]}
    path = tmp_path / "data.json"
    path.write_text(json.dumps(data))
    for backend in ("torch", "onnx"):
        assert predict_main(["--model", str(tiny_copy), "--predict_file", str(path), "--output_dir",
                             str(tmp_path / backend), "--backend", backend, "--no_packing"]) == 0
    assert (json.loads((tmp_path / "onnx" / "predictions.json").read_text())
            == json.loads((tmp_path / "torch" / "predictions.json").read_text()))
    assert predict_main(["--model", str(tiny_copy), "--predict_file", str(path), "--output_dir",
                         str(tmp_path / "x"), "--backend", "onnx", "--compile"]) == 2
    assert "backend 'onnx' does not do compile" in capsys.readouterr().err


def test_the_shipped_model_answers_the_same_on_onnx_float32_and_close_on_int8(dev_items):
    """The shipped model's float32 graph answers a dozen dev questions exactly as torch float32;
    int8 agrees on at least 10 of 12 and never returns a span that is not in the context."""
    torch_answers = QAReader.from_pretrained(DEFAULT_MODEL_DIR, packed=False).answer_batch(dev_items)
    onnx_answers = QAReader.from_pretrained(DEFAULT_MODEL_DIR, backend="onnx").answer_batch(dev_items)
    int8_answers = QAReader.from_pretrained(DEFAULT_MODEL_DIR, backend="onnx", quantize="int8").answer_batch(dev_items)
    assert [a[0].text for a in onnx_answers] == [a[0].text for a in torch_answers]
    assert max(abs(a[0].score - b[0].score) for a, b in zip(onnx_answers, torch_answers)) < 1e-3
    assert sum(a[0].text == b[0].text for a, b in zip(int8_answers, torch_answers)) >= 10
    for item, (best,) in zip(dev_items, (a[:1] for a in int8_answers)):
        assert item.context[best.start:best.end] == best.text


def test_cpu_kinds_threads_and_the_recipe(monkeypatch):
    assert cpu.cpu_kind(frozenset({"avx2", "fma"})) == "avx2"
    assert cpu.cpu_kind(frozenset({"avx2", "avx512f", "avx512_vnni"})) == "avx512-vnni"
    assert cpu.cpu_kind(frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"})) == "avx512-bf16"
    assert cpu.cpu_kind(frozenset({"avx512f", "avx512_bf16", "amx_tile", "amx_bf16"})) == "amx"
    import os

    assert 1 <= cpu.physical_cores() <= len(os.sched_getaffinity(0))
    assert cpu.model_threads() == cpu.physical_cores() and cpu.model_threads(3) == 3
    with pytest.raises(ValueError, match="threads must be >= 1"):
        cpu.model_threads(0)
    assert cpu.serving_recipe("avx2").backend == "onnx"
    monkeypatch.setattr(cpu, "onnxruntime_available", lambda: False)
    assert cpu.serving_recipe("avx2") == cpu.Recipe("torch", None, "auto", cpu.serving_recipe("avx2").why)



def test_export_onnx_command(tiny_qa_checkpoint, tmp_path, capsys):
    assert onnx_backend.main([str(tiny_qa_checkpoint), str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "model-int8.onnx" in printed and (tmp_path / "out" / "SHA256SUMS").is_file()
    assert onnx_backend.main([str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
