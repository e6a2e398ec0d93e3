import gzip
import json

import pytest

from squad_qa.data.squad import (SquadFormatError, is_whitespace, load_squad_json, make_example, read_squad_examples,
                           whitespace_tokenize)



def run_squad_words(text):
    """run_squad's character loop, verbatim in spirit: the reference for whitespace_tokenize."""
    doc_tokens, char_to_word_offset, prev_is_whitespace = [], [], True
    for c in text:
        if is_whitespace(c):
            prev_is_whitespace = True
        else:
            if prev_is_whitespace:
                doc_tokens.append(c)
            else:
                doc_tokens[-1] += c
            prev_is_whitespace = False
        char_to_word_offset.append(len(doc_tokens) - 1)
    return doc_tokens, char_to_word_offset


@pytest.mark.parametrize("text", [
    "The cat sat.", "  leading and trailing  ", "tabs\tand\nnew\r\nlines", "narrow\u202fno-break",
    "non\u00a0breaking stays inside a word", "北京是中国的首都。 Next", "", " ", "café cafe\u0301 😀x",
])
def test_whitespace_tokenize_matches_run_squad(text):
    assert whitespace_tokenize(text) == run_squad_words(text)


def _write(tmp_path, data, name="d.json", gz=False):
    path = tmp_path / (name + (".gz" if gz else ""))
    raw = json.dumps({"version": "1.1", "data": data})
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(raw)
    else:
        path.write_text(raw, encoding="utf-8")
    return path


def _article(qas, context="Paris is the capital of France.", title="France"):
    return {"title": title, "paragraphs": [{"context": context, "qas": qas}]}


def _qa(qid="q1", question="What is the capital?", answers=({"text": "Paris", "answer_start": 0},), **kw):
    return {"id": qid, "question": question, "answers": list(answers), **kw}


@pytest.mark.parametrize("gz", [False, True])
def test_reads_json_and_gz(tmp_path, gz):
    path = _write(tmp_path, [_article([_qa(answers=[{"text": "capital of France", "answer_start": 13}])])], gz=gz)
    (ex,) = read_squad_examples(path, is_training=True)
    assert ex.qas_id == "q1" and ex.title == "France"
    assert ex.doc_tokens == ["Paris", "is", "the", "capital", "of", "France."]
    assert (ex.start_position, ex.end_position) == (3, 5)
    assert ex.answer_text == "capital of France" and ex.start_char == 13


def test_eval_mode_keeps_all_answers_and_no_positions(tmp_path):
    answers = [{"text": "Paris", "answer_start": 0}, {"text": "Paris", "answer_start": 0}]
    (ex,) = read_squad_examples(_write(tmp_path, [_article([_qa(answers=answers)])]), is_training=False)
    assert ex.answers == answers and ex.start_position == -1 and ex.answer_text is None


def test_v2_impossible_and_plausible(tmp_path):
    qa = _qa(answers=[], is_impossible=True, plausible_answers=[{"text": "France", "answer_start": 24}])
    path = _write(tmp_path, [_article([qa, _qa("q2")])])
    ex = read_squad_examples(path, is_training=True, version_2_with_negative=True)
    assert [e.is_impossible for e in ex] == [True, False]
    assert ex[0].plausible_answers == [{"text": "France", "answer_start": 24}] and ex[0].answers == []
    # Read as v1.1 for training, the unanswerable question cannot be a target: skipped and reported.
    skipped = []
    ex = read_squad_examples(path, is_training=True, skipped=skipped)
    assert [e.qas_id for e in ex] == ["q2"] and skipped[0].qas_id == "q1" and "version_2" in skipped[0].reason


def test_training_skips_and_counts_unrecoverable_answers(tmp_path, caplog):
    qas = [
        _qa("ok"),
        _qa("wrong-offset", answers=[{"text": "London", "answer_start": 0}]),
        _qa("outside", answers=[{"text": "Paris", "answer_start": 99}]),
        _qa("past-end", answers=[{"text": "France. And more", "answer_start": 24}]),
        _qa("empty-q", question="   "),
    ]
    path = _write(tmp_path, [_article(qas)])
    skipped = []
    with caplog.at_level("WARNING"):
        ex = read_squad_examples(path, is_training=True, skipped=skipped)
    assert [e.qas_id for e in ex] == ["ok"]
    assert [s.qas_id for s in skipped] == ["wrong-offset", "outside", "past-end", "empty-q"]
    assert "skipped 4 of 5 questions" in caplog.text


def test_eval_mode_keeps_bad_offsets_and_raises_on_empty_question(tmp_path, caplog):
    # Prediction never reads answers and scoring only their text: the question is kept and counted.
    path = _write(tmp_path, [_article([_qa("bad", answers=[{"text": "Paris", "answer_start": 99}]), _qa("ok")])])
    examples = read_squad_examples(path, is_training=False)
    assert [e.qas_id for e in examples] == ["bad", "ok"] and examples[0].answers[0]["text"] == "Paris"
    assert "1 questions have an answer_start outside their context (first: 'bad' (answer_start 99" in caplog.text
    path = _write(tmp_path, [_article([_qa("blank", question="")])])
    with pytest.raises(SquadFormatError, match="question id 'blank': empty question"):
        read_squad_examples(path, is_training=False)


@pytest.mark.parametrize("data, match", [
    ([{"title": "T", "paragraphs": [{"context": "   ", "qas": []}]}], r"article 0 \('T'\), paragraph 0: empty context"),
    ([{"title": "T", "paragraphs": [{"qas": []}]}], "field 'context' should be str, got NoneType"),
    ([{"title": "T"}], "field 'paragraphs' should be list"),
    ([_article([{"question": "q?", "answers": []}])], "question 0: missing 'id'"),
    ([_article([_qa(answers=[{"text": "Paris"}])])], r"question id 'q1': 'answers\[0\]' has no 'answer_start'"),
    ([_article([_qa(answers=[{"text": "Paris", "answer_start": "0"}])])], r"answers\[0\].answer_start' should be int, got str"),
    ([_article([_qa(), _qa()])], "question id 'q1': duplicate question id"),
])
def test_format_errors_name_the_place(tmp_path, data, match):
    path = _write(tmp_path, data)
    with pytest.raises(SquadFormatError, match=match) as err:
        read_squad_examples(path, is_training=False)
    assert str(path) in str(err.value)


def test_malformed_json_and_missing_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [', encoding="utf-8")
    with pytest.raises(SquadFormatError, match=r"bad.json: malformed JSON at line 1"):
        load_squad_json(bad)
    (tmp_path / "x.json").write_text("[]", encoding="utf-8")
    with pytest.raises(SquadFormatError, match="'data' list"):
        load_squad_json(tmp_path / "x.json")
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_squad_json(tmp_path / "nope.json")


def test_make_example():
    ex = make_example("id", "Who?", "Marie Curie won.")
    assert ex.doc_tokens == ["Marie", "Curie", "won."] and not ex.is_impossible


def test_real_dev_and_train_files(squad_dir):
    dev = read_squad_examples(squad_dir / "dev-v1.1.json.gz", is_training=False)
    assert len(dev) == 10570 and len({e.title for e in dev}) == 48
    assert all(len(e.answers) >= 1 for e in dev)
    v2 = read_squad_examples(squad_dir / "dev-v2.0.json.gz", is_training=False, version_2_with_negative=True)
    assert len(v2) == 11873 and sum(e.is_impossible for e in v2) == 5945
    skipped = []
    train = read_squad_examples(squad_dir / "train-v1.1.json.gz", is_training=True, skipped=skipped)
    assert len(train) + len(skipped) == 87599
    for e in train[:2000]:
        words = " ".join(e.doc_tokens[e.start_position:e.end_position + 1])
        assert " ".join(e.answer_text.split()) in words


def test_deeply_nested_and_oversized_json_are_refused_in_one_line(tmp_path, monkeypatch):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(SquadFormatError, match="deep.json: JSON nested too deeply"):
        read_squad_examples(deep, is_training=False)
    import squad_qa.data.squad as data

    monkeypatch.setattr(data, "MAX_JSON_BYTES", 1000)
    bomb = tmp_path / "bomb.json.gz"
    with gzip.open(bomb, "wb") as f:
        f.write(b" " * 5000)  # 5,000 bytes of JSON from a ~40-byte file
    assert bomb.stat().st_size < 100
    with pytest.raises(SquadFormatError, match=r"bomb.json.gz: over 1,000 bytes of JSON \(gzip\)"):
        read_squad_examples(bomb, is_training=False)
