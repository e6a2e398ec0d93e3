"""What the reader takes and gives: a question over a context in, answers with character offsets out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from squad_qa.spans.calibration import Calibrator, candidate_features
from squad_qa.spans.postprocess import postprocess_predictions


@dataclass(frozen=True)
class Answer:
    text: str
    score: float  # probability of this span in the n-best list (run_squad's softmax over n-best)
    start: int  # character offsets into the context: context[start:end] == text
    end: int
    logit: float = 0.0  # start + end logit: the raw score, comparable across windows and passages
    passage: str | None = None  # the passage's id, for a question over several passages


@dataclass(frozen=True)
class Passage:
    """One of several passages a question is asked over: ``id`` names it in the answers."""

    id: str
    text: str


@dataclass
class PreparedItems:
    """Items checked and cut into windows (``QAReader.prepare``), with room for their logits."""

    items: list
    examples: list
    features: Any  # SquadFeatures
    start: np.ndarray  # [windows, max_seq_length] start logits, filled by QAReader.run_windows
    end: np.ndarray

    @property
    def windows(self) -> int:
        return len(self.features)


@dataclass(frozen=True)
class QAItem:
    question: str
    context: str
    top_k: int = 1
    max_answer_length: int = 30
    handle_impossible: bool = False


def check_items(items, n_best_size: int) -> list[QAItem]:
    """The items as QAItems, or a ValueError naming the first bad one and what is wrong."""
    items = [it if isinstance(it, QAItem) else QAItem(**it) for it in items]
    for i, it in enumerate(items):
        if not it.question.strip():
            raise ValueError(f"item {i}: question is empty")
        if not it.context.strip():
            raise ValueError(f"item {i}: context is empty")
        for field in ("question", "context"):
            try:
                getattr(it, field).encode("utf-8")
            except UnicodeEncodeError as e:
                raise ValueError(f"item {i}: {field} has a lone UTF-16 surrogate at character {e.start}") from None
        if not 1 <= it.top_k <= n_best_size:
            raise ValueError(f"item {i}: top_k must be in 1..{n_best_size}, got {it.top_k}")
        if it.max_answer_length < 1:
            raise ValueError(f"item {i}: max_answer_length must be >= 1, got {it.max_answer_length}")
    return items


def answers_for(job: PreparedItems, n_best_size: int, null_score_diff_threshold: float,
                calibrator: Calibrator | None = None) -> list[list[Answer]]:
    """Spans from the logits of every window of ``job`` (run_squad's post-processing), one answer
    list per item; with a calibrator, each span's score is its calibrated probability of being right."""
    items, examples, features = job.items, job.examples, job.features
    start_logits, end_logits = job.start, job.end
    # The post-processor takes one max_answer_length / v2 setting per call, so items are grouped
    # by those settings (normally there is one group: no extra work).
    answers: list[list[Answer]] = [[] for _ in items]
    groups: dict[tuple[int, bool], list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault((it.max_answer_length, it.handle_impossible), []).append(i)
    feat_example = np.asarray(features.example_index)
    for (max_len, v2), members in groups.items():
        if len(groups) == 1:
            sub_examples, sub_features, rows = examples, features, slice(None)
        else:
            rows = np.flatnonzero(np.isin(feat_example, members))
            sub_examples = [examples[i] for i in members]
            sub_features = features.select(rows)
            # select() keeps example_index pointing into the full list; renumber into sub_examples.
            remap = np.full(len(items), -1, dtype=np.int64)
            remap[members] = np.arange(len(members))
            sub_features.example_index = remap[feat_example[rows]].astype(feat_example.dtype)
        result = postprocess_predictions(sub_examples, sub_features, start_logits[rows], end_logits[rows],
                                         n_best_size=n_best_size, max_answer_length=max_len,
                                         version_2_with_negative=v2,
                                         null_score_diff_threshold=null_score_diff_threshold)
        for i in members:
            answers[i] = _pick(result, str(i), items[i], v2, calibrator)
    return answers


def _pick(result, qas_id: str, item: QAItem, v2: bool, calibrator: Calibrator | None = None) -> list[Answer]:
    """top_k spans from the n-best list; with handle_impossible the null answer ("") leads
    when it beat the best span by the threshold (run_squad v2 decision) and is left out
    otherwise, so the first answer is always the prediction."""
    nbest = result.nbest.get(qas_id, [])
    spans = [p for p in nbest if p.text]  # "" is the null / no-candidate entry
    out: list[Answer] = []
    if v2 and result.predictions.get(qas_id, "") == "":
        null = next((p for p in nbest if not p.text), None)
        out.append(Answer("", float(null.probability) if null else 1.0, 0, 0))
    logits = [float(p.start_logit + p.end_logit) for p in spans]
    scores = ([float(p.probability) for p in spans] if calibrator is None
              else calibrator.predict(candidate_features([p.probability for p in spans], logits)).tolist())
    out.extend(Answer(p.text, score, int(p.start), int(p.end), logit) for p, score, logit in zip(spans, scores, logits))
    return out[: item.top_k]


def as_passages(contexts) -> list[Passage]:
    """Passages from texts (ids "0", "1", ...), (id, text) pairs, mappings with "id" and "text", or
    Passages; ValueError for an empty list or a repeated id."""
    out = []
    for i, c in enumerate(contexts):
        if isinstance(c, Passage):
            out.append(c)
        elif isinstance(c, str):
            out.append(Passage(str(i), c))
        elif isinstance(c, dict):
            out.append(Passage(str(c["id"]), c["text"]))
        else:
            out.append(Passage(str(c[0]), c[1]))
    if not out:
        raise ValueError("contexts is empty: give at least one passage")
    seen = set()
    for p in out:
        if p.id in seen:
            raise ValueError(f"contexts: passage id {p.id!r} appears twice")
        seen.add(p.id)
    return out


def passage_items(question: str, passages, n_best_size: int, max_answer_length: int) -> list[QAItem]:
    """One item per passage (anything with a ``text``), each asking for its whole n-best list, so that
    ``merge_passages`` ranks every candidate of every passage."""
    return [QAItem(question, p.text, n_best_size, max_answer_length) for p in passages]


def merge_passages(per_passage: list[list[Answer]], passages: list[Passage], top_k: int,
                   calibrator: Calibrator | None = None) -> list[Answer]:
    """One ranking over every passage's candidate spans (each passage's whole n-best list): by raw
    logit (start + end), the scale run_squad already compares windows of one context on, and
    ``score`` re-computed as the softmax over all of those candidates, so it is a share of one list
    whatever passage a span comes from (with a calibrator: its calibrated probability, from the
    merged list's features). Null ("") candidates are left out."""
    spans = [(a, p.id) for answers, p in zip(per_passage, passages) for a in answers if a.text]
    if not spans:
        return []
    logits = np.array([a.logit for a, _ in spans], dtype=np.float64)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    if calibrator is not None:
        probs = calibrator.predict(candidate_features(probs, logits))
    order = np.argsort(-logits, kind="stable")[:top_k]
    return [Answer(spans[i][0].text, float(probs[i]), spans[i][0].start, spans[i][0].end, spans[i][0].logit,
                   spans[i][1]) for i in order]
