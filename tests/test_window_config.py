"""squad_qa.data.windows.WindowConfig: the window geometry's defaults, its checks, and reading it back
from a training record."""

import dataclasses
import inspect

import pytest

from squad_qa.data.features import convert_examples_to_features, windows_needed

from squad_qa.data.windows import WindowConfig


def test_defaults_are_run_squads():
    assert WindowConfig() == WindowConfig(max_seq_length=384, doc_stride=128, max_query_length=64)
    assert WindowConfig().to_dict() == {"max_seq_length": 384, "doc_stride": 128, "max_query_length": 64}
    assert WindowConfig().problems() == []
    assert WindowConfig().validate() == WindowConfig()


def test_converters_take_their_defaults_from_window_config():
    for fn in (convert_examples_to_features, windows_needed):
        defaults = {name: p.default for name, p in inspect.signature(fn).parameters.items()
                    if name in WindowConfig().to_dict()}
        assert defaults == WindowConfig().to_dict(), fn.__name__


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        WindowConfig().doc_stride = 64


@pytest.mark.parametrize("args, match", [
    ((384, 318, 64), r"doc_stride \(318\) must be in 1..316"),
    ((384, 0, 64), "doc_stride"),
    ((60, 8, 64), "must leave room for the question"),
    ((384, 128, 0), "max_query_length must be >= 1"),
])
def test_validation_messages(args, match):
    with pytest.raises(ValueError, match=match):
        WindowConfig(*args).validate()


def test_every_problem_reported_at_once():
    config = WindowConfig(max_seq_length=384, doc_stride=0, max_query_length=0)
    problems = config.problems(max_positions=256)
    assert len(problems) == 3
    with pytest.raises(ValueError) as e:
        config.validate(max_positions=256)
    message = str(e.value)
    assert "max_query_length must be >= 1" in message
    assert "doc_stride (0) must be in 1..380" in message
    assert "exceeds the model's 256 position embeddings" in message


def test_no_stride_verdict_without_room_for_context():
    # a window without room for context has no meaningful stride range ("1..-8"): only the room is named
    assert WindowConfig(60, 8, 64).problems() == [
        "max_seq_length (60) must leave room for the question (max_query_length 64), 3 special tokens "
        "and at least one context token"]


def test_model_positions():
    assert WindowConfig(512, 128, 64).problems(max_positions=512) == []
    with pytest.raises(ValueError, match="exceeds the model's 128 position"):
        WindowConfig(256, 64, 32).validate(max_positions=128)


@pytest.mark.parametrize("key", ["training_args", "args", "train_args"])
def test_from_record_reads_the_training_flags(key):
    record = {"weights": "raw", "global_step": 10,
              key: {"model_name_or_path": "minilm-l6", "max_seq_length": 128, "doc_stride": 64,
                    "max_query_length": 32, "max_answer_length": 30}}
    assert WindowConfig.from_record(record) == WindowConfig(128, 64, 32)


def test_from_record_falls_back_to_the_defaults():
    assert WindowConfig.from_record({}) == WindowConfig()
    assert WindowConfig.from_record(None) == WindowConfig()
    assert WindowConfig.from_record({"training_args": {"doc_stride": 96}}) == WindowConfig(384, 96, 64)
    # missing, None and 0 all mean "not recorded", as QAReader has always read them
    assert WindowConfig.from_record({"args": {"max_seq_length": None, "doc_stride": 0}}) == WindowConfig()
    # a record whose flags are not a mapping has none
    assert WindowConfig.from_record({"args": "384/128/64"}) == WindowConfig()


def test_from_record_overrides_win():
    record = {"training_args": {"max_seq_length": 128, "doc_stride": 64, "max_query_length": 32}}
    assert WindowConfig.from_record(record, doc_stride=48, max_query_length=None) == WindowConfig(128, 48, 32)
    assert WindowConfig.from_record({}, max_seq_length=256) == WindowConfig(256, 128, 64)
    with pytest.raises(TypeError, match="max_seq_len"):
        WindowConfig.from_record(record, max_seq_len=256)


def test_round_trip():
    for config in (WindowConfig(), WindowConfig(128, 48, 16), WindowConfig(512, 256, 100)):
        assert WindowConfig.from_record(config.to_dict()) == config
        assert WindowConfig.from_record({"training_args": config.to_dict()}) == config
