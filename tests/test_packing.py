"""Packed (padding-free) forward passes: the same logits as padded batches, windows kept apart."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
from conftest import tiny_bert_qa
from transformers import (BertConfig, BertForQuestionAnswering, DistilBertConfig,
                          DistilBertForQuestionAnswering)

import squad_qa

from squad_qa.model import packing
from squad_qa.model.batching import predict_logits
from squad_qa.data.squad import make_example
from squad_qa.inference.reader import QAItem, QAReader
from squad_qa.model.packing import enable_packing, pack, supports_packing, unpack

LONG_CONTEXT = " ".join(f"Sentence {i} mentions the río número {i} and its {i % 7} bridges." for i in range(90))
ITEMS = [
    ("Which river has three bridges?", LONG_CONTEXT),  # several windows
    ("Who visited the café?", "Zürich's Café Odeon opened in 1911 — it served naïve poets, 北京 visitors."),
    ("When?", "Café Odeon opened in 1911."),
    ("What opened in 1911 in the city of Zürich according to the guest book?", "Café Odeon opened in 1911. " * 9),
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random BERT QA checkpoint whose attention matters: with BERT's usual 0.02 init, a
    random model's attention is nearly uniform and its logits barely notice what other tokens a
    window attends to; weights 20x larger make every attention score count."""
    return tiny_bert_qa(tmp_path_factory.mktemp("packing_checkpoint"), seed=0, layers=2,
                        tokenizer_from=squad_qa.default_base_model_path(), initializer_range=0.4)


@pytest.fixture(scope="module")
def readers(checkpoint):
    # model_batch_size 3: a call's windows go through the model in several packed rows
    padded = QAReader.from_pretrained(checkpoint, device="cpu", packed=False, max_batch_size=3)
    packed = QAReader.from_pretrained(checkpoint, device="cpu", max_batch_size=3)
    return padded, packed


@pytest.fixture(scope="module")
def features(readers):
    return readers[0].features_for([make_example(str(i), q, c) for i, (q, c) in enumerate(ITEMS)])


def test_cpu_bert_readers_pack_by_default(readers):
    padded, packed = readers
    assert packed.packed and packed.describe()["packed"] is True
    assert not padded.packed and padded.model.config._attn_implementation == "sdpa"


def test_packed_logits_and_answers_equal_padded_ones(readers, features):
    padded, packed = readers
    lengths = features.seq_len
    assert len(features) > 5 and len(set(lengths.tolist())) > 3  # windows of many lengths
    (s0, e0), (s1, e1) = padded.predict_logits(features), packed.predict_logits(features)
    real = np.arange(features.max_seq_length)[None, :] < lengths[:, None]
    np.testing.assert_allclose(s1[real], s0[real], atol=2e-5)
    np.testing.assert_allclose(e1[real], e0[real], atol=2e-5)
    assert not s1[~real].any() and not e1[~real].any()  # columns past a window's end stay unused
    items = [QAItem(q, c, top_k=3) for q, c in ITEMS]
    for a, b, (_, context) in zip(padded.answer_batch(items), packed.answer_batch(items), ITEMS):
        assert [(x.text, x.start, x.end) for x in b] == [(x.text, x.start, x.end) for x in a]
        assert [x.score for x in b] == pytest.approx([x.score for x in a], abs=1e-5)
        assert all(context[x.start:x.end] == x.text for x in b)


def test_windows_of_a_packed_row_do_not_attend_to_each_other(readers, features):
    """Without the per-window attention (one attention over the whole row) the logits change: the
    equality above really depends on windows being kept apart."""
    _, packed = readers
    rows = np.arange(4)
    inputs, window, position = pack(features, rows)
    with torch.inference_mode():
        apart = packed.model(**inputs).start_logits
        mixed = packed.model(**{k: v for k, v in inputs.items() if k != "cu_seq_lens_q"}).start_logits
    assert (apart - mixed).abs().max() > 0.1


def test_pack_layout_and_unpack(features):
    rows = np.array([3, 0, 5])
    inputs, window, position = pack(features, rows)
    lengths = features.seq_len[rows]
    cu = inputs["cu_seq_lens_q"].numpy()
    assert cu.tolist() == [0, *np.cumsum(lengths).tolist()]
    assert inputs["input_ids"].shape == (1, lengths.sum())
    for i, r in enumerate(rows):
        seg = slice(cu[i], cu[i + 1])
        assert inputs["input_ids"][0, seg].tolist() == features.input_ids[r, : lengths[i]].tolist()
        assert inputs["token_type_ids"][0, seg].tolist() == features.token_type_ids[r, : lengths[i]].tolist()
        assert inputs["position_ids"][0, seg].tolist() == list(range(lengths[i]))  # restart per window
    out = np.zeros((3, features.max_seq_length), np.float32)
    unpack(inputs["input_ids"].float(), window, position, out, np.arange(3))
    for i, r in enumerate(rows):
        assert out[i, : lengths[i]].tolist() == features.input_ids[r, : lengths[i]].astype(np.float32).tolist()
        assert not out[i, lengths[i]:].any()


def test_packing_model_still_runs_padded_batches(readers, features):
    padded, packed = readers
    idx = np.arange(len(features))
    s0, _ = predict_logits(padded.model, features, idx, 4, torch.device("cpu"))
    s1, _ = predict_logits(packed.model, features, idx, 4, torch.device("cpu"))  # falls back to SDPA
    np.testing.assert_allclose(s1, s0, atol=2e-5)
    # the other way round is refused: a model not set up for packing would mix the windows
    with pytest.raises(ValueError, match="enable_packing"):
        predict_logits(padded.model, features, idx, 4, torch.device("cpu"), packed=True)


def test_models_packing_does_not_know_are_refused():
    config = DistilBertConfig(vocab_size=30522, dim=32, n_layers=1, n_heads=2, hidden_dim=64)
    model = DistilBertForQuestionAnswering(config)
    assert not supports_packing(model)
    with pytest.raises(ValueError, match="packing supports model types"):
        enable_packing(model)
    # A BERT whose attention does not go through transformers' AttentionInterface (4.57's BERT, or
    # a class defined elsewhere, like this one) would attend across windows: not packed either.
    tiny = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64)
    assert supports_packing(BertForQuestionAnswering(tiny))
    assert not supports_packing(_BertDefinedElsewhere(tiny))


class _BertDefinedElsewhere(BertForQuestionAnswering):
    pass


def test_predict_py_writes_the_same_predictions_packed_or_not(tmp_path, checkpoint):
    import json
    from pathlib import Path

    from squad_qa.inference.predict import main

    fixture = Path(__file__).resolve().parent / "fixtures" / "tiny_squad.json"
    argv = ["--model", str(checkpoint), "--predict_file", str(fixture), "--n_best_size", "5"]
    assert main(argv + ["--output_dir", str(tmp_path / "packed")]) == 0
    assert main(argv + ["--output_dir", str(tmp_path / "padded"), "--no_packing"]) == 0
    packed, padded = (json.loads((tmp_path / d / "nbest_predictions.json").read_text()) for d in ("packed", "padded"))
    assert packed.keys() == padded.keys() and len(packed) > 3
    for qid in packed:
        assert [p["text"] for p in packed[qid]] == [p["text"] for p in padded[qid]]
        probabilities = [p["probability"] for p in padded[qid]]
        assert [p["probability"] for p in packed[qid]] == pytest.approx(probabilities, abs=1e-5)


# ------------------------------------------------------------------------------------------------
# The probe at load and the fallback at run time: a torch / transformers release that breaks packing
# makes the reader slower (padded batches), never wrong.


def _attend_across_the_row(query, key, value, cu_seqlens, scale):
    """What a broken packed path computes: one attention over the whole row."""
    return F.scaled_dot_product_attention(query, key, value, scale=scale).transpose(1, 2)


def test_the_probe_passes_here_and_costs_little(readers):
    _, packed = readers
    took = []
    for _ in range(3):
        t0 = time.perf_counter()
        assert packed.probe_packing() is None
        took.append(time.perf_counter() - t0)
    assert min(took) < 0.5  # tiny model; the shipped one takes tens of ms (docs/BENCHMARKS.md)


def test_a_reader_whose_packed_rows_mix_windows_serves_padded_batches(checkpoint, readers, monkeypatch, caplog):
    padded, _ = readers
    monkeypatch.setattr(packing, "window_attention", _attend_across_the_row)
    with caplog.at_level("WARNING", logger="squad_qa.inference.reader"):
        reader = QAReader.from_pretrained(checkpoint, device="cpu", max_batch_size=3)
    assert not reader.packed and reader.model.config._attn_implementation == "sdpa"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "packed logits differ" in warnings[0]
    assert f"transformers {transformers.__version__}" in warnings[0] and f"torch {torch.__version__}" in warnings[0]
    items = [QAItem(q, c, top_k=3) for q, c in ITEMS]
    assert _spans(reader.answer_batch(items)) == _spans(padded.answer_batch(items))


def test_a_packed_call_that_raises_is_answered_padded_and_packing_stays_off(checkpoint, readers, monkeypatch,
                                                                            caplog):
    padded, _ = readers
    reader = QAReader.from_pretrained(checkpoint, device="cpu", max_batch_size=3)
    assert reader.packed

    def broken(*args, **kwargs):
        raise RuntimeError("a packed call that a new release broke")

    monkeypatch.setattr(packing, "window_attention", broken)
    items = [QAItem(q, c, top_k=3) for q, c in ITEMS]
    with caplog.at_level("WARNING", logger="squad_qa.inference.reader"):
        got = reader.answer_batch(items)
        again = reader.answer_batch(items)
    assert _spans(got) == _spans(again) == _spans(padded.answer_batch(items))
    assert not reader.packed
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "packed batches are off, serving padded ones: a packed call raised RuntimeError: a packed call that a new "
        f"release broke (torch {torch.__version__}, transformers {transformers.__version__})"]


def _spans(answers):
    return [[(a.text, a.start, a.end, round(a.score, 4)) for a in per_item] for per_item in answers]
