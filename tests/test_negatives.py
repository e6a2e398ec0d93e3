"""Unanswerable training questions from answerable ones: the answer's sentence out, or another paragraph."""

from __future__ import annotations

import json

from squad_qa.training.negatives import (contains_answer, main, make_negatives, sentence_spans,
                                         without_answer_sentence)

CONTEXT = ("Super Bowl 50 was an American football game. The Denver Broncos defeated the Carolina Panthers 24-10. "
           "The game was played on February 7, 2016, at Levi's Stadium! Was it close? Not really.")
ANSWER = "Denver Broncos"


def test_sentences_are_cut_at_their_ends():
    assert [CONTEXT[s:e] for s, e in sentence_spans(CONTEXT)] == [
        "Super Bowl 50 was an American football game.", "The Denver Broncos defeated the Carolina Panthers 24-10.",
        "The game was played on February 7, 2016, at Levi's Stadium!", "Was it close?", "Not really."]


def test_exactly_the_answers_sentence_is_removed():
    rest = without_answer_sentence(CONTEXT, CONTEXT.index(ANSWER), ANSWER)
    assert rest == ("Super Bowl 50 was an American football game. The game was played on February 7, 2016, at "
                    "Levi's Stadium! Was it close? Not really.")
    assert not contains_answer(rest, ANSWER)
    # an answer over two sentences takes both out
    two = "Panthers 24-10. The game"
    assert without_answer_sentence(CONTEXT, CONTEXT.index(two), two) == (
        "Super Bowl 50 was an American football game. Was it close? Not really.")


def test_an_answer_that_would_stay_in_the_passage_is_skipped():
    repeated = CONTEXT + " The Denver Broncos celebrated."
    assert without_answer_sentence(repeated, repeated.index(ANSWER), ANSWER) is None
    assert without_answer_sentence("Only one sentence, Denver Broncos.", 20, ANSWER) is None  # nothing left
    assert without_answer_sentence(CONTEXT, 0, ANSWER) is None  # the offset does not point at the answer
    assert contains_answer("the broncos, of denver broncos fame", "Denver Broncos")
    assert contains_answer("won 24 10 there", "24-10") and not contains_answer("Broncostown", "Broncos")


def dataset():
    paragraphs = [{"context": CONTEXT, "qas": [{"id": f"q{i}", "question": f"Who won {i}?", "answers": [
        {"text": ANSWER, "answer_start": CONTEXT.index(ANSWER)}]} for i in range(30)]},
        {"context": "The halftime show was headlined by Coldplay. Beyoncé joined them.", "qas": []}]
    return {"version": "1.1", "data": [{"title": "SB50", "paragraphs": paragraphs}]}


def test_make_negatives_never_leaves_the_answer_in_a_negative_passage(tmp_path, capsys):
    out, counts = make_negatives(dataset(), "both", share=1.0, seed=0)
    negatives = [(p["context"], q) for a in out["data"] for p in a["paragraphs"] for q in p["qas"] if q["is_impossible"]]
    assert len(negatives) == 30 == counts["made: sentence"] + counts["made: paragraph"]
    assert counts["made: sentence"] and counts["made: paragraph"]
    for context, q in negatives:
        assert q["answers"] == [] and q["id"].startswith("q") and "-neg-" in q["id"]
        assert not contains_answer(context, ANSWER)
    assert sum(not q["is_impossible"] for a in out["data"] for p in a["paragraphs"] for q in p["qas"]) == 30
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(dataset()))
    assert main([str(path), str(tmp_path / "v2.json"), "--kind", "sentence", "--share", "0.5"]) == 0
    assert "made: sentence" in capsys.readouterr().out
    assert json.loads((tmp_path / "v2.json").read_text())["version"] == "v2.0"
    assert main([str(path), str(tmp_path / "x.json"), "--share", "0"]) == 2
