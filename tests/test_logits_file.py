"""The logits file (squad_qa/model/logits_file.py): written by predict.py --save_logits and the teacher cache, read by
train.py --teacher. Rows are found again by (question id, window number), so a training run that reads fewer
questions (is_training skips, --max_train_samples) gets exactly its own windows' rows, and anything else is refused
in one line."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import TINY_SQUAD
from safetensors.torch import save_file

import squad_qa
from squad_qa.data.squad import read_squad_examples
from squad_qa.data.features import convert_examples_to_features
from squad_qa.model.logits_file import (LogitsFileError, WindowLogits, load_window_logits, read_logits_metadata,
                                  save_window_logits)

SEQ, STRIDE, QUERY = 64, 16, 24
WINDOW = {"max_seq_length": SEQ, "doc_stride": STRIDE, "max_query_length": QUERY}


@pytest.fixture(scope="module")
def data():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(squad_qa.default_base_model_path()))
    examples = read_squad_examples(str(TINY_SQUAD), is_training=False)

    def cut(exs):
        return convert_examples_to_features(exs, tok, max_seq_length=SEQ, doc_stride=STRIDE, max_query_length=QUERY,
                                            is_training=False, show_progress=False)

    return examples, cut


def _logits(features, seed=0):
    rng = np.random.default_rng(seed)
    start = (rng.standard_normal((len(features), SEQ)) * 5).astype(np.float32)
    end = (rng.standard_normal((len(features), SEQ)) * 5).astype(np.float32)
    return start, end


def test_round_trip_keeps_logits_windows_and_header(tmp_path, data):
    examples, cut = data
    features = cut(examples)
    assert features.doc_span_index.max() > 0  # some questions have several windows: the window number matters
    start, end = _logits(features)
    start[0, 1] = -1e9  # a masked score: stored clamped to float16's range, not as -inf
    path = save_window_logits(tmp_path / "l.safetensors", start, end, features, [e.qas_id for e in examples],
                              window=WINDOW, models=["a", "b"], squad_file=TINY_SQUAD, extra={"teacher": {"x": 1}})
    assert not list(tmp_path.glob("*.tmp"))
    got = load_window_logits(path)
    assert len(got) == len(features) and got.start.dtype == torch.float16
    assert float(got.start[0, 1]) == -65504.0
    start[0, 1] = -65504.0
    np.testing.assert_array_equal(got.start.numpy(), start.astype(np.float16))
    np.testing.assert_array_equal(got.end.numpy(), end.astype(np.float16))
    assert got.qas_ids == [examples[i].qas_id for i in features.example_index]
    np.testing.assert_array_equal(got.doc_span_index, features.doc_span_index)
    np.testing.assert_array_equal(got.seq_len, features.seq_len)
    meta = read_logits_metadata(path)
    assert got.geometry() == WINDOW and json.loads(meta["models"]) == ["a", "b"]
    assert meta["squad_file"] == str(TINY_SQUAD) and json.loads(meta["teacher"]) == {"x": 1}
    assert got.aligned_to(features, [e.qas_id for e in examples], WINDOW) is got  # same windows: as is
    s, e = got.gather([3, 1], 17)
    assert s.dtype == torch.float32 and s.shape == (2, 17)
    assert torch.equal(s, got.start[[3, 1], :17].float())


def test_fewer_questions_get_their_own_rows(tmp_path, data):
    """A run over questions 5-12 only (its example_index starts at 0 again) reads the rows of those windows."""
    examples, cut = data
    full = cut(examples)
    start, end = _logits(full)
    path = save_window_logits(tmp_path / "l.safetensors", start, end, full, [e.qas_id for e in examples],
                              window=WINDOW, models=["m"])
    part_examples = examples[5:13]
    part = cut(part_examples)
    aligned = load_window_logits(path).aligned_to(part, [e.qas_id for e in part_examples], WINDOW)
    assert len(aligned) == len(part) < len(full)
    offset = int(np.flatnonzero(full.example_index == 5)[0])
    np.testing.assert_array_equal(part.input_ids, full.input_ids[offset:offset + len(part)])  # the same windows
    np.testing.assert_array_equal(aligned.start.numpy(), start[offset:offset + len(part)].astype(np.float16))
    assert aligned.qas_ids == [part_examples[i].qas_id for i in part.example_index]


def test_other_windows_are_refused_naming_the_first_culprit(tmp_path, data):
    examples, cut = data
    ids = [e.qas_id for e in examples]
    part = cut(examples[:6])
    start, end = _logits(part)
    path = save_window_logits(tmp_path / "l.safetensors", start, end, part, ids[:6], window=WINDOW, models=["m"])
    logits = load_window_logits(path)
    with pytest.raises(LogitsFileError, match=r"other windows: --doc_stride 16 there, 32 here"):
        logits.aligned_to(part, ids[:6], {**WINDOW, "doc_stride": 32})
    full = cut(examples)
    with pytest.raises(LogitsFileError, match=rf"lacks {len(full) - len(part)} of these {len(full)} windows "
                                              rf"\(first: question {ids[6]} window 0\)"):
        logits.aligned_to(full, ids, WINDOW)
    longer = replace(part, seq_len=part.seq_len + (np.arange(len(part)) == 2))
    with pytest.raises(LogitsFileError, match=rf"1 windows differ in length .*first: question "
                                              rf"{ids[int(part.example_index[2])]} .*another tokenizer"):
        logits.aligned_to(longer, ids[:6], WINDOW)
    twice = WindowLogits(logits.start, logits.end, logits.seq_len, [ids[0]] * len(logits),
                         np.zeros(len(logits), np.int32), logits.meta)
    with pytest.raises(LogitsFileError, match="appears twice"):
        twice.aligned_to(part, ids[:6], WINDOW)


def test_files_that_are_not_logits_files_are_named(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(LogitsFileError, match=f"{junk}: not a readable safetensors file"):
        load_window_logits(junk)
    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(other))
    with pytest.raises(LogitsFileError, match="not a squad_qa logits file"):
        load_window_logits(other)
    half = tmp_path / "half.safetensors"
    save_file({"start_logits": torch.zeros(2, 4), "end_logits": torch.zeros(2, 4)}, str(half),
              metadata={"format": "squad_qa.logits/1"})
    with pytest.raises(LogitsFileError, match="without doc_span_index, example_index, seq_len"):
        read_logits_metadata(half)
