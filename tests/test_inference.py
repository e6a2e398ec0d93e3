"""QAReader: loading rules, exact-substring answers, windows, batching, v2 null answers, predict.py."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

import squad_qa
from squad_qa.model import model_dir
from squad_qa.files.checksums import write_checksums
from squad_qa.inference.reader import QAItem, QAReader
from squad_qa.model.model_dir import CheckpointError, check_qa_checkpoint
from squad_qa.inference.predict import main
from squad_qa.model.compute import Float32Linear

FIXTURES = Path(__file__).resolve().parent / "fixtures"

UNICODE_CONTEXT = (
    "Zürich's Café Odeon opened in 1911 — it served naïve poets, 北京 visitors and émigrés 🎉. "
    "Straße, Ærøskøbing and São Paulo appear in its guest book,\u00a0twice;\ttabs\tand  double  spaces too."
)


@pytest.fixture(scope="module")
def reader(tiny_qa_checkpoint) -> QAReader:
    return QAReader.from_pretrained(tiny_qa_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(squad_qa.default_base_model_path()))


class KeywordQA(torch.nn.Module):
    """A deterministic stand-in for a trained head: the start logit peaks on token `start_id`, the
    end logit on `end_id`, [CLS] (the v2 no-answer position) gets `cls_logit`. It runs on the real
    input ids, so windows, padding, offsets and post-processing are all exercised for real."""

    def __init__(self, start_id: int, end_id: int, cls_logit: float = -10.0) -> None:
        super().__init__()
        self.start_id, self.end_id, self.cls_logit = start_id, end_id, cls_logit
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the reader a device
        self.calls: list[tuple[int, int]] = []  # (batch, width) of every forward pass

    def forward(self, input_ids, attention_mask, token_type_ids):
        self.calls.append(tuple(input_ids.shape))
        start = (input_ids == self.start_id).float() * 10.0
        end = (input_ids == self.end_id).float() * 10.0
        start[:, 0] = self.cls_logit
        end[:, 0] = self.cls_logit
        return SimpleNamespace(start_logits=start, end_logits=end)


def keyword_reader(tokenizer, answer: str, **kwargs) -> QAReader:
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    cls_logit = kwargs.pop("cls_logit", -10.0)
    return QAReader(KeywordQA(ids[0], ids[-1], cls_logit), tokenizer, **kwargs)


# ----------------------------------------------------------------------------- loading rules


def test_base_encoder_without_qa_head_is_refused():
    base = squad_qa.default_base_model_path()
    with pytest.raises(CheckpointError) as err:
        QAReader.from_pretrained(base)
    assert "qa_outputs" in str(err.value) and "\n" not in str(err.value)  # the error: one line
    assert "scripts/train_squad.py" in err.value.with_hint()  # the how-to, built where it is printed


def test_missing_folder_and_pickle_only_folder_are_refused(tmp_path, tiny_qa_checkpoint):
    with pytest.raises(CheckpointError, match="does not exist") as err:
        check_qa_checkpoint(tmp_path / "nope")
    assert "train_squad.py" in err.value.with_hint()
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(tiny_qa_checkpoint / "config.json", pickled / "config.json")
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        QAReader.from_pretrained(pickled)


def test_training_record_sets_geometry_and_metrics(tmp_path, tiny_qa_checkpoint):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_qa_checkpoint, ckpt)
    record = {
        "training_args": {"model_name_or_path": "minilm-l6", "max_seq_length": 128, "doc_stride": 64, "max_query_length": 32},
        "metrics": {"exact_match": 12.5, "f1": 20.25},
    }
    (ckpt / "squad_qa.json").write_text(json.dumps(record))
    info = QAReader.from_pretrained(ckpt).describe()
    assert (info["name"], info["base"]) == ("ckpt", "minilm-l6")
    assert (info["max_seq_length"], info["doc_stride"], info["max_query_length"]) == (128, 64, 32)
    assert info["metrics"] == {"exact_match": 12.5, "f1": 20.25}
    assert info["teacher"] is None  # trained without one


def test_a_distilled_model_names_its_teacher(tmp_path, tiny_qa_checkpoint):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_qa_checkpoint, ckpt)
    args = {"model_name_or_path": "minilm-l6", "teacher": "runs/gpu/teacher/teacher-mpnet-s1"}
    (ckpt / "squad_qa.json").write_text(json.dumps({"training_args": args}))
    assert QAReader.from_pretrained(ckpt).describe()["teacher"] == "teacher-mpnet-s1"  # the folder it ran with
    (ckpt / "squad_qa.json").write_text(json.dumps({"training_args": args, "teacher": "all-mpnet-base-v2 (SQuAD)"}))
    assert QAReader.from_pretrained(ckpt).describe()["teacher"] == "all-mpnet-base-v2 (SQuAD)"  # the record's name


# ------------------------------------------------------------------------------------ answers


def test_answers_are_exact_substrings_of_unicode_contexts(reader):
    answers = reader.answer("Who visited the café?", UNICODE_CONTEXT, top_k=10)
    assert len(answers) == 10
    for a in answers:
        assert a.text and UNICODE_CONTEXT[a.start : a.end] == a.text
        assert 0.0 < a.score <= 1.0
    scores = [a.score for a in answers]
    assert scores == sorted(scores, reverse=True)
    assert len({a.text for a in answers}) == 10  # n-best is deduplicated by text


def test_long_context_answer_from_a_late_window(tokenizer):
    filler = "The committee met again on Tuesday and discussed the budget at length. " * 60
    context = filler + "Naïve 🎉 visitors finally reached Zürich by train. " + filler
    reader = keyword_reader(tokenizer, "Zürich", max_seq_length=96, doc_stride=32, max_query_length=16)
    features = reader.features_for([squad_qa.data.squad.make_example("q", "Where did they go?", context)])
    assert len(features) > 10  # really spread over many windows
    (best,) = reader.answer("Where did they go?", context)
    assert best.text == "Zürich"
    assert best.start == context.index("Zürich") and context[best.start : best.end] == "Zürich"


def test_multi_token_unicode_span(tokenizer):
    reader = keyword_reader(tokenizer, "北京 visitors")
    (best,) = reader.answer("Who?", UNICODE_CONTEXT)
    assert best.text == "北京 visitors" and UNICODE_CONTEXT[best.start : best.end] == best.text


def test_batch_matches_one_by_one_and_runs_all_windows_together(reader):
    items = [
        QAItem("Who visited the café?", UNICODE_CONTEXT, top_k=3),
        QAItem("When did it open?", "Café Odeon opened in 1911 on the Limmatquai.", max_answer_length=2),
        QAItem("Which city?", "The guest book lists Straße, Ærøskøbing and São Paulo.", handle_impossible=True, top_k=2),
        QAItem("What?", "x " * 900, top_k=2),  # several windows
    ]
    single = [reader.answer(**vars(it)) for it in items]
    batched = reader.answer_batch(items)
    assert [[(a.text, a.start, a.end) for a in r] for r in batched] == [
        [(a.text, a.start, a.end) for a in r] for r in single
    ]
    for b, s in zip(batched, single):
        assert [a.score for a in b] == pytest.approx([a.score for a in s], abs=1e-4)
    for it, res in zip(items, batched):
        assert 1 <= len(res) <= it.top_k
        assert all(len(a.text.split()) <= it.max_answer_length for a in res if it.max_answer_length == 2)


def test_chunking_and_dynamic_padding(tokenizer):
    contexts = [("short one. " * n) + "Zürich." for n in (1, 5, 40, 300)]
    reader = keyword_reader(tokenizer, "Zürich", max_seq_length=128, doc_stride=64, max_query_length=16,
                            max_batch_size=3)
    results = reader.answer_batch([QAItem("Where?", c) for c in contexts])
    assert [(r[0].text, r[0].start) for r in results] == [("Zürich", c.index("Zürich")) for c in contexts]
    calls = reader.model.calls
    assert all(b <= 3 for b, _ in calls)  # chunks of max_batch_size windows
    widths = [w for _, w in calls]
    assert widths == sorted(widths, reverse=True) and widths[-1] < 128  # longest first, padded per chunk


def test_handle_impossible_returns_the_null_answer_when_it_wins(tokenizer):
    context = "The museum is closed on Mondays in Zürich."
    null_wins = keyword_reader(tokenizer, "Zürich", cls_logit=30.0)
    answers = null_wins.answer("When is it open?", context, top_k=2, handle_impossible=True)
    assert answers[0].text == "" and (answers[0].start, answers[0].end) == (0, 0)
    assert answers[0].score > 0.99
    assert answers[1].text == "Zürich"
    # v1 behaviour ignores the null score entirely
    assert null_wins.answer("When is it open?", context)[0].text == "Zürich"
    span_wins = keyword_reader(tokenizer, "Zürich", cls_logit=-30.0)
    assert span_wins.answer("Where?", context, handle_impossible=True)[0].text == "Zürich"


def test_bad_items_are_rejected_with_their_index(reader):
    with pytest.raises(ValueError, match="item 1: question is empty"):
        reader.answer_batch([QAItem("ok?", "fine"), QAItem("  ", "fine")])
    with pytest.raises(ValueError, match="item 0: top_k"):
        reader.answer_batch([QAItem("ok?", "fine", top_k=0)])


# --------------------------------------------------------------------------------- predict.py


@pytest.mark.parametrize("fixture,v2", [("tiny_squad.json", False), ("tiny_squad_v2.json", True)])
def test_predict_main_writes_prediction_files(tmp_path, tiny_qa_checkpoint, fixture, v2):
    data = json.loads((FIXTURES / fixture).read_text())
    contexts = {qa["id"]: p["context"] for a in data["data"] for p in a["paragraphs"] for qa in p["qas"]}
    argv = ["--model", str(tiny_qa_checkpoint), "--predict_file", str(FIXTURES / fixture), "--output_dir", str(tmp_path)]
    assert main(argv + (["--version_2_with_negative"] if v2 else [])) == 0
    predictions = json.loads((tmp_path / "predictions.json").read_text())
    assert set(predictions) == set(contexts)
    assert all(text in contexts[qid] for qid, text in predictions.items())
    assert (tmp_path / "nbest_predictions.json").is_file()
    assert (tmp_path / "null_odds.json").is_file() == v2


def test_predict_main_refuses_base_encoder(tmp_path, capsys):
    argv = ["--model", str(squad_qa.default_base_model_path()), "--predict_file", str(FIXTURES / "tiny_squad.json"),
            "--output_dir", str(tmp_path)]
    assert main(argv) == 2
    assert "train_squad.py" in capsys.readouterr().err


def test_predict_main_limits_questions_and_reads_the_data_first(tmp_path, capsys, tiny_qa_checkpoint):
    data = json.loads((FIXTURES / "tiny_squad.json").read_text())
    n_questions = sum(len(p["qas"]) for a in data["data"] for p in a["paragraphs"])
    assert n_questions > 2
    argv = ["--model", str(tiny_qa_checkpoint), "--predict_file", str(FIXTURES / "tiny_squad.json"),
            "--output_dir", str(tmp_path), "--max_eval_samples", "2"]
    assert main(argv) == 0
    assert len(json.loads((tmp_path / "predictions.json").read_text())) == 2
    # A bad data file is reported in one line before any model loads (this model folder does not exist).
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": "1.1", "data": [{"title": "T", "paragraphs": [{"context": 5, "qas": []}]}]}')
    capsys.readouterr()
    assert main(["--model", str(tmp_path / "no-model"), "--predict_file", str(bad), "--output_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: bad SQuAD file:") and "bad.json" in err and "Traceback" not in err
    assert main(["--predict_file", str(tmp_path / "missing.json"), "--output_dir", str(tmp_path)]) == 2
    assert "missing.json" in capsys.readouterr().err


def _damaged_copies(src: Path, root: Path) -> dict[str, Path]:
    """Copies of a good model folder, each damaged one way, the way disks and interrupted copies do."""
    out = {}

    def copy(name: str) -> Path:
        dst = root / name
        shutil.copytree(src, dst)
        out[name] = dst
        return dst

    st = copy("truncated") / "model.safetensors"
    st.write_bytes(st.read_bytes()[: st.stat().st_size // 2])
    (copy("tiny-truncated") / "model.safetensors").write_bytes(b"\x08\x00")
    (copy("bad-config") / "config.json").write_text("{not json")
    (copy("bad-tokenizer") / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    return out


@pytest.mark.parametrize("checksums", [False, True])
def test_damaged_model_folders_give_one_line_errors(tmp_path, tiny_qa_checkpoint, checksums):
    src = tmp_path / "good"
    shutil.copytree(tiny_qa_checkpoint, src)
    if checksums:
        write_checksums(src, ["model.safetensors", "config.json", "tokenizer.json"])
        QAReader.from_pretrained(src)  # the checksums of an intact folder pass
    for name, path in _damaged_copies(src, tmp_path / "damaged").items():
        with pytest.raises(CheckpointError) as err:
            QAReader.from_pretrained(path)
        message = str(err.value)
        assert "\n" not in message and str(path) in message, (name, message)
        assert ("sha256" in message) if checksums else ("damaged" in message or "does not load" in message), message


def test_checksums_catch_weights_overwritten_in_place(tmp_path, tiny_qa_checkpoint):
    """Zeros written inside model.safetensors keep its header valid: only the checksum sees them."""
    src = tmp_path / "m"
    shutil.copytree(tiny_qa_checkpoint, src)
    write_checksums(src, ["model.safetensors", "config.json", "tokenizer.json"])
    st = src / "model.safetensors"
    data = bytearray(st.read_bytes())
    data[-4096:] = bytes(4096)
    st.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors is damaged: its sha256"):
        check_qa_checkpoint(src)


def test_default_model_is_used_when_none_is_named(tmp_path, tiny_qa_checkpoint, monkeypatch, capsys):
    monkeypatch.delenv(model_dir.MODEL_ENV_VAR, raising=False)
    monkeypatch.setattr(model_dir, "DEFAULT_MODEL_DIR", tiny_qa_checkpoint)
    reader = QAReader.from_pretrained()
    assert reader.model_dir == tiny_qa_checkpoint
    assert main(["--predict_file", str(FIXTURES / "tiny_squad.json"), "--output_dir", str(tmp_path),
                 "--max_eval_samples", "1"]) == 0
    assert f"with {tiny_qa_checkpoint}" in capsys.readouterr().out  # it says which model answered
    monkeypatch.setenv(model_dir.MODEL_ENV_VAR, str(tmp_path / "elsewhere"))
    with pytest.raises(CheckpointError, match="elsewhere does not exist"):
        QAReader.from_pretrained()


def test_missing_model_message_names_trained_runs_and_a_command(tmp_path, tiny_qa_checkpoint, monkeypatch):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_qa_checkpoint, runs / "my-run")
    shutil.copytree(tiny_qa_checkpoint, runs / "other" / "best")
    (runs / "not-a-model").mkdir()
    monkeypatch.setattr(model_dir, "RUN_ROOTS", (runs,))
    assert model_dir.find_trained_models((runs,)) != []
    with pytest.raises(CheckpointError) as err:
        check_qa_checkpoint(tmp_path / "missing")
    message = err.value.with_hint()
    assert str(runs / "my-run") in message and str(runs / "other" / "best") in message
    assert "not-a-model" not in message
    assert "python scripts/train_squad.py --config experiments/" in message


def test_context_without_tokens_gets_no_answer_not_an_error(reader, caplog):
    # Zero-width and control characters survive str.strip() but tokenize to nothing: no window, no answer.
    assert reader.answer_batch([QAItem("Who?", "\u200b\u200b \x00"), QAItem("Who?", "Ann met Bob.")])[0] == []
    assert "no tokens" in caplog.text


def test_int8_quantized_reader_still_returns_exact_substrings(tiny_qa_checkpoint):
    fp32 = QAReader.from_pretrained(tiny_qa_checkpoint, device="cpu")
    int8 = QAReader.from_pretrained(tiny_qa_checkpoint, device="cpu", quantize="int8")
    assert int8.quantized == "int8" and int8.describe()["quantized"] == "int8" and fp32.quantized is None
    linear = [m for m in int8.model.modules() if type(m).__name__ == "Linear" and "quantized" in type(m).__module__]
    assert linear, "no Linear layer was replaced by its dynamically quantised version"
    context = "The Eiffel Tower, in Paris, was finished in 1889 by Gustave Eiffel's company."
    for answer in int8.answer("When was it finished?", context, top_k=3):
        assert context[answer.start:answer.end] == answer.text
    with pytest.raises(ValueError, match="quantize must be one of"):
        QAReader.from_pretrained(tiny_qa_checkpoint, device="cpu", quantize="int4")


# ------------------------------------------------------------------- batching and compute dtype


def test_length_batches_fill_up_on_similar_lengths_and_cut_on_padding():
    from squad_qa.model.batching import length_batches

    # a dataset's worth of near-equal windows: full batches, longest first
    assert [len(b) for b in length_batches(np.full(10, 100), batch_size=4)] == [4, 4, 2]
    # a service's few requests of mixed lengths: a 60-token window is not padded to 380
    lengths = np.array([380, 60, 370, 70, 65, 200])
    batches = length_batches(lengths, batch_size=64)
    assert [lengths[b].tolist() for b in batches] == [[380, 370, 200], [70, 65, 60]]
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))  # each row once
    for b in batches:  # at most a quarter of a batch's padded tokens are padding
        assert lengths[b].sum() >= 0.75 * len(b) * lengths[b].max()
    assert length_batches(np.array([], dtype=np.int64), batch_size=8) == []


def test_dtype_choice_and_bfloat16_reader(tiny_qa_checkpoint):
    from squad_qa.data.squad import make_example
    from squad_qa.model.compute import has_native_bf16, resolve_dtype

    assert resolve_dtype(None, "cpu") is torch.float32 and resolve_dtype("float32", "cpu") is torch.float32
    assert resolve_dtype("auto", "cpu") is (torch.bfloat16 if has_native_bf16("cpu") else torch.float32)
    with pytest.raises(ValueError, match="float16 needs a CUDA device"):
        resolve_dtype("float16", "cpu")
    with pytest.raises(ValueError, match="dtype must be one of"):
        resolve_dtype("int4", "cpu")
    # int8 matrix products and bf16 autocast do not mix; "auto" falls back to float32 there
    assert QAReader.from_pretrained(tiny_qa_checkpoint, device="cpu", quantize="int8", dtype="auto").dtype is torch.float32
    with pytest.raises(ValueError, match="dtype must be float32"):
        QAReader.from_pretrained(tiny_qa_checkpoint, device="cpu", quantize="int8", dtype="bfloat16")

    fp32 = QAReader.from_pretrained(tiny_qa_checkpoint, device="cpu")
    bf16 = QAReader.from_pretrained(tiny_qa_checkpoint, device="cpu", dtype="bfloat16")
    assert fp32.describe()["dtype"] == "float32" and bf16.describe()["dtype"] == "bfloat16"
    features = fp32.features_for([make_example("q", "Who visited the café?", UNICODE_CONTEXT)])
    (s32, e32), (s16, e16) = fp32.predict_logits(features), bf16.predict_logits(features)
    n = int(features.seq_len[0])
    assert s16.dtype == np.float32 and not np.array_equal(s16[:, :n], s32[:, :n])  # really ran in bfloat16
    # from_pretrained stores the encoder's Linear weights in bfloat16 once instead of autocast
    # casting them on every call (the very same numbers as plain autocast over float32 weights) ...
    head = bf16.model.qa_outputs
    linear = [m for m in bf16.model.modules() if isinstance(m, torch.nn.Linear) and m is not head.linear]
    assert linear and all(m.weight.dtype is torch.bfloat16 for m in linear)
    assert bf16.model.bert.embeddings.LayerNorm.weight.dtype is torch.float32
    # ... and the QA head computes in float32: the logits are not rounded to bfloat16
    assert isinstance(head, Float32Linear) and head.linear.weight.dtype is torch.float32
    rounded = torch.from_numpy(s16[:, :n]).bfloat16().float().numpy()
    assert (rounded != s16[:, :n]).mean() > 0.5
    reference = copy.deepcopy(fp32.model)
    reference.qa_outputs = Float32Linear(reference.qa_outputs)
    sa, ea = QAReader(reference, fp32.tokenizer, dtype="bfloat16").predict_logits(features)
    assert np.array_equal(sa, s16) and np.array_equal(ea, e16)
    # ... with bf16's ~3 significant digits: the same logits up to a small error
    scale = np.abs(s32[:, :n]).max()
    assert np.abs(s16[:, :n] - s32[:, :n]).max() < 0.05 * scale and np.abs(e16[:, :n] - e32[:, :n]).max() < 0.05 * scale
    for answer in bf16.answer("Who visited the café?", UNICODE_CONTEXT, top_k=5):
        assert UNICODE_CONTEXT[answer.start:answer.end] == answer.text


def test_fine_tuning_load_explains_the_new_head_instead_of_a_warning_table(caplog, capsys):
    base = squad_qa.default_base_model_path()
    with caplog.at_level("INFO"):
        model = model_dir.load_qa_model(base, trained_head=False)
    assert hasattr(model, "qa_outputs")
    assert "LOAD REPORT" not in caplog.text + capsys.readouterr().err
    ours = [r for r in caplog.records if r.name == "squad_qa.model.model_dir"]
    (line,) = [r.getMessage() for r in ours if "qa_outputs" in r.getMessage()]
    assert "initialised at random (expected: fine-tuning trains it)" in line and "pooler" in line
    assert not [r for r in ours if r.levelname == "WARNING"]
    assert not [r for r in caplog.records if "LOAD REPORT" in r.getMessage()]


def test_lone_surrogate_is_a_clear_error(reader):
    with pytest.raises(ValueError, match="item 0: context has a lone UTF-16 surrogate at character 4"):
        reader.answer("Who?", "abc \udc00 def")


def test_reader_answers_one_question_over_several_passages(tiny_qa_checkpoint):
    reader = QAReader.from_pretrained(tiny_qa_checkpoint, device="cpu")
    texts = ["The Broncos won in 2016.", "Café Odeon opened in Zürich in 1911, beside the lake."]
    answers = reader.answer("Who won?", texts, top_k=4)
    assert len(answers) == 4 and {a.passage for a in answers} <= {"0", "1"}
    for a in answers:
        assert texts[int(a.passage)][a.start:a.end] == a.text
    # the same spans as asking each passage alone, ranked by their raw logits
    alone = [a for i, t in enumerate(texts) for a in reader.answer("Who won?", t, top_k=20)]
    best = max(alone, key=lambda a: a.logit)
    assert (answers[0].text, answers[0].logit) == (best.text, best.logit)
    with pytest.raises(ValueError, match="passage id 'x' appears twice"):
        reader.answer("Who won?", [("x", "a b"), ("x", "c d")])
    with pytest.raises(ValueError, match="contexts is empty"):
        reader.answer("Who won?", [])
