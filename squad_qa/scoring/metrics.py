"""Official SQuAD scoring: exact match (EM) and token F1, v1.1 and v2.0.

This module re-implements, operation for operation, the two official evaluation
scripts (``evaluate-v1.1.py`` and ``evaluate-v2.0.py``) so that the numbers it
prints are the leaderboard numbers, bit for bit. The two scripts are not the
same and the differences are kept on purpose:

* v1.1 ``f1_score`` has no special case for empty strings: an empty prediction
  (or a gold answer that normalises to nothing) scores F1 0.
* v2.0 ``compute_f1`` treats an empty token list as "no answer": F1 is 1 when
  both sides are empty and 0 when only one is. v2.0 also drops gold answers
  that normalise to "" and, if none is left (unanswerable question), uses
  [""] as the only gold answer.
* v2.0 adds the HasAns/NoAns breakdown, the ``--na-prob-thresh`` rule (predict
  "" when the no-answer probability exceeds the threshold) and, given
  no-answer probabilities, the best achievable EM/F1 over all thresholds
  (``find_best_thresh``).

Where the official scripts crash or stay silent, this module instead reports:
predictions that are not a JSON object of id -> string are rejected with the
first bad entry named; questions without a prediction score 0 and are counted
(the official v2.0 script would raise KeyError); predictions for ids that are
not in the dataset are counted and ignored. With full coverage every number
equals the official one.

Reading the files and the command line (``scripts/evaluate.py``) are in squad_qa/scoring/evaluate.py.
"""

from __future__ import annotations

import logging
import re
import string
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

logger = logging.getLogger(__name__)

VERSIONS = ("1.1", "2.0")
_SHOW_IDS = 5  # how many offending ids a message names before "..."


class EvaluationInputError(ValueError):
    """Unusable input: wrong file shape, or a version mismatch that cannot be scored (message names what/where)."""


# --------------------------------------------------------------------------- #
# Normalisation and per-answer scores (identical in both official scripts)
# --------------------------------------------------------------------------- #

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
# string.punctuation is ASCII only: curly quotes, dashes etc. survive, as in the official scripts.
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace (official order of steps)."""
    text = s.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    # Articles are removed *after* punctuation, so "the." -> "the" -> "" and "a-b" -> "ab".
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match_score(prediction: str, ground_truth: str) -> float:
    """1.0 if the normalised strings are equal (same in v1.1 and v2.0)."""
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def _token_f1(pred_toks: list[str], gold_toks: list[str]) -> float:
    common = Counter(pred_toks) & Counter(gold_toks)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


def f1_score(prediction: str, ground_truth: str) -> float:
    """Token F1 of the v1.1 script: empty prediction or empty gold -> 0."""
    return _token_f1(normalize_answer(prediction).split(), normalize_answer(ground_truth).split())


def f1_score_v2(prediction: str, ground_truth: str) -> float:
    """Token F1 of the v2.0 script: if either side is empty ("no answer"), 1 if both are, else 0."""
    pred_toks = normalize_answer(prediction).split() if prediction else []
    gold_toks = normalize_answer(ground_truth).split() if ground_truth else []
    if not pred_toks or not gold_toks:
        return float(pred_toks == gold_toks)
    return _token_f1(pred_toks, gold_toks)


# --------------------------------------------------------------------------- #
# Dataset walking and prediction coverage
# --------------------------------------------------------------------------- #


def iter_qas(dataset: Sequence[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    """Questions in file order (the order the official scripts sum in, which fixes rounding)."""
    for article in dataset:
        for paragraph in article["paragraphs"]:
            yield from paragraph["qas"]


def show_ids(ids: Sequence[str]) -> str:
    """The first few ids, for a message ("a, b, c, d, e, ...")."""
    head = ", ".join(ids[:_SHOW_IDS])
    return head + (", ..." if len(ids) > _SHOW_IDS else "")


@dataclass
class Coverage:
    """Which dataset questions have a prediction, and which predictions match no question."""

    missing: list[str] = field(default_factory=list)  # in the dataset, not predicted: score 0
    unknown: list[str] = field(default_factory=list)  # predicted, not in the dataset: ignored

    def messages(self) -> list[str]:
        out = []
        if self.missing:
            out.append(
                f"{len(self.missing)} question(s) have no prediction and score 0: {show_ids(self.missing)}"
            )
        if self.unknown:
            out.append(
                f"{len(self.unknown)} prediction(s) are for ids not in the dataset and are ignored: "
                f"{show_ids(self.unknown)}"
            )
        return out


def check_coverage(dataset: Sequence[Mapping[str, Any]], predictions: Mapping[str, str]) -> Coverage:
    dataset_ids = [qa["id"] for qa in iter_qas(dataset)]
    known = set(dataset_ids)
    return Coverage(
        missing=[qid for qid in dataset_ids if qid not in predictions],
        unknown=[qid for qid in predictions if qid not in known],
    )


def validate_predictions(predictions: Any, source: str = "predictions") -> dict[str, str]:
    """Check the run_squad predictions.json shape: a JSON object mapping question id -> answer string."""
    if not isinstance(predictions, dict):
        raise EvaluationInputError(
            f"{source}: expected a JSON object mapping question id -> answer string, "
            f"got a JSON {_json_type(predictions)}"
        )
    for qid, text in predictions.items():
        if not isinstance(text, str):
            raise EvaluationInputError(
                f"{source}: entry {qid!r} is a JSON {_json_type(text)}, expected an answer string "
                f'("" for no answer)'
            )
    return predictions


def validate_na_probs(na_probs: Any, source: str = "na_probs") -> dict[str, float]:
    """A JSON object mapping question id -> number (probability or null-odds score)."""
    if not isinstance(na_probs, dict):
        raise EvaluationInputError(
            f"{source}: expected a JSON object mapping question id -> number, got a JSON {_json_type(na_probs)}"
        )
    for qid, value in na_probs.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise EvaluationInputError(f"{source}: entry {qid!r} is a JSON {_json_type(value)}, expected a number")
    return na_probs


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def is_v2_dataset(dataset: Sequence[Mapping[str, Any]]) -> bool:
    """SQuAD 2.0 marks every question with ``is_impossible``; v1.1 has no such key."""
    return any("is_impossible" in qa for qa in iter_qas(dataset))


# --------------------------------------------------------------------------- #
# v1.1
# --------------------------------------------------------------------------- #


def em_of(result: Mapping[str, Any], default: float = 0.0) -> float:
    """A scorer result's exact match, v1 ("exact_match") or v2 ("exact")."""
    return float(result.get("exact_match", result.get("exact", default)))


def f1_of(result: Mapping[str, Any], default: float = 0.0) -> float:
    """A scorer result's F1 (both versions call it "f1")."""
    return float(result.get("f1", default))


def score_v1(dataset: Sequence[Mapping[str, Any]], predictions: Mapping[str, str]) -> dict[str, float]:
    """evaluate_v1 without the checks and warnings (predictions already validated)."""
    # Mirrors evaluate-v1.1.py evaluate(): running sums in file order, missing -> 0 but counted.
    f1 = exact_match = 0.0
    total = 0
    for qa in iter_qas(dataset):
        total += 1
        if qa["id"] not in predictions:
            continue
        ground_truths = [a["text"] for a in qa["answers"]]
        if not ground_truths:
            raise EvaluationInputError(
                f"question {qa['id']!r} has no gold answers (a SQuAD 2.0 unanswerable question?); "
                f"score this dataset with version 2.0"
            )
        prediction = predictions[qa["id"]]
        exact_match += max(exact_match_score(prediction, gt) for gt in ground_truths)
        f1 += max(f1_score(prediction, gt) for gt in ground_truths)
    if total == 0:
        raise EvaluationInputError("dataset has no questions")
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}


def evaluate_v1(dataset: Sequence[Mapping[str, Any]], predictions: Mapping[str, str]) -> dict[str, float]:
    """Official v1.1 scores of ``predictions`` on ``dataset`` (the JSON "data" list)."""
    predictions = validate_predictions(predictions)
    for message in check_coverage(dataset, predictions).messages():
        logger.warning(message)
    return score_v1(dataset, predictions)


# --------------------------------------------------------------------------- #
# v2.0
# --------------------------------------------------------------------------- #


def _raw_scores_v2(dataset, predictions) -> tuple[dict[str, bool], dict[str, float], dict[str, float]]:
    """Per-question has_ans, EM and F1 (get_raw_scores of evaluate-v2.0.py), keyed in file order."""
    has_ans: dict[str, bool] = {}
    exact: dict[str, float] = {}
    f1: dict[str, float] = {}
    for qa in iter_qas(dataset):
        qid = qa["id"]
        has_ans[qid] = bool(qa["answers"])
        gold_answers = [a["text"] for a in qa["answers"] if normalize_answer(a["text"])]
        if not gold_answers:
            # For unanswerable questions the only correct answer is the empty string.
            gold_answers = [""]
        if qid not in predictions:
            continue
        pred = predictions[qid]
        exact[qid] = max(exact_match_score(pred, gold) for gold in gold_answers)
        f1[qid] = max(f1_score_v2(pred, gold) for gold in gold_answers)
    return has_ans, exact, f1


def _apply_no_ans_threshold(scores, na_probs, has_ans, na_prob_thresh) -> dict[str, float]:
    # A question whose no-answer probability exceeds the threshold is answered "": right iff unanswerable.
    return {
        qid: float(not has_ans[qid]) if na_probs[qid] > na_prob_thresh else s for qid, s in scores.items()
    }


def _eval_dict(scores_em, scores_f1, qids: list[str]) -> OrderedDict:
    # Questions without a prediction are absent from the score dicts and count as 0 (official: KeyError).
    total = len(qids)
    return OrderedDict(
        [
            ("exact", 100.0 * sum(scores_em.get(k, 0) for k in qids) / total),
            ("f1", 100.0 * sum(scores_f1.get(k, 0) for k in qids) / total),
            ("total", total),
        ]
    )


def find_best_thresh(
    predictions: Mapping[str, str],
    scores: Mapping[str, float],
    na_probs: Mapping[str, float],
    has_ans: Mapping[str, bool],
) -> tuple[float, float]:
    """Best score over all no-answer thresholds, and the threshold reaching it (official algorithm).

    Start from "answer nothing" (every unanswerable question right), then switch
    questions to their predicted answer in increasing na_prob order, keeping the
    best running total. Ties in na_prob are walked in na_probs' key order, as
    the official script does (sorted() is stable). Questions without a
    prediction are never right, so they neither start counted nor change the sum.
    """
    cur_score = sum(1 for qid, ans in has_ans.items() if not ans and qid in scores)
    best_score = cur_score
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if has_ans[qid]:
            diff = scores[qid]
        else:
            # Raw truthiness, as official: a whitespace-only answer still costs the point.
            diff = -1 if predictions[qid] else 0
        cur_score += diff
        if cur_score > best_score:
            best_score = cur_score
            best_thresh = na_probs[qid]
    return 100.0 * best_score / len(has_ans), best_thresh


def evaluate_v2(
    dataset: Sequence[Mapping[str, Any]],
    predictions: Mapping[str, str],
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> OrderedDict:
    """Official v2.0 fields, in the official order.

    exact, f1, total, HasAns_{exact,f1,total}, NoAns_{exact,f1,total} (each
    breakdown only if such questions exist) and, if ``na_probs`` is given,
    best_exact, best_exact_thresh, best_f1, best_f1_thresh.
    """
    result, messages = score_v2(dataset, validate_predictions(predictions), na_probs, na_prob_thresh)
    for message in messages:
        logger.warning(message)
    return result


def score_v2(
    dataset, predictions, na_probs, na_prob_thresh, na_source: str = "na_probs"
) -> tuple[OrderedDict, list[str]]:
    """evaluate_v2 on validated predictions: the result and the warnings, returned rather than
    logged (the command line prints them); ``na_source`` names the na_probs file in messages."""
    messages = check_coverage(dataset, predictions).messages()
    has_ans, exact_raw, f1_raw = _raw_scores_v2(dataset, predictions)
    if not has_ans:
        raise EvaluationInputError("dataset has no questions")
    given_na_probs = na_probs is not None
    if na_probs is None:
        na_probs = {qid: 0.0 for qid in predictions}
    else:
        na_probs = validate_na_probs(na_probs, na_source)
        lacking = [qid for qid in exact_raw if qid not in na_probs]
        if lacking:
            # The official script would raise KeyError; a silent default would bias best_thresh.
            raise EvaluationInputError(
                f"{na_source}: {len(lacking)} predicted question(s) have no no-answer probability: {show_ids(lacking)}"
            )
        extra = [qid for qid in na_probs if qid not in has_ans]
        if extra:
            messages.append(
                f"{na_source}: {len(extra)} entries are for ids not in the dataset and are ignored: {show_ids(extra)}"
            )
    exact_thr = _apply_no_ans_threshold(exact_raw, na_probs, has_ans, na_prob_thresh)
    f1_thr = _apply_no_ans_threshold(f1_raw, na_probs, has_ans, na_prob_thresh)

    out = _eval_dict(exact_thr, f1_thr, list(has_ans))
    for prefix, wanted in (("HasAns", True), ("NoAns", False)):
        qids = [qid for qid, ans in has_ans.items() if ans is wanted]
        if qids:
            for key, value in _eval_dict(exact_thr, f1_thr, qids).items():
                out[f"{prefix}_{key}"] = value
    if given_na_probs:
        out["best_exact"], out["best_exact_thresh"] = find_best_thresh(predictions, exact_raw, na_probs, has_ans)
        out["best_f1"], out["best_f1_thresh"] = find_best_thresh(predictions, f1_raw, na_probs, has_ans)
    return out, messages
