"""What the reader takes and gives: a question over a context in, answers with character offsets out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from squad_qa.spans.postprocess import postprocess_predictions


@dataclass(frozen=True)
class Answer:
    text: str
    score: float  # probability of this span in the n-best list (run_squad's softmax over n-best)
    start: int  # character offsets into the context: context[start:end] == text
    end: int


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


def answers_for(job: PreparedItems, n_best_size: int, null_score_diff_threshold: float) -> list[list[Answer]]:
    """Spans from the logits of every window of ``job`` (run_squad's post-processing), one answer
    list per item."""
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
            answers[i] = _pick(result, str(i), items[i], v2)
    return answers


def _pick(result, qas_id: str, item: QAItem, v2: bool) -> list[Answer]:
    """top_k spans from the n-best list; with handle_impossible the null answer ("") leads
    when it beat the best span by the threshold (run_squad v2 decision) and is left out
    otherwise, so the first answer is always the prediction."""
    nbest = result.nbest.get(qas_id, [])
    spans = [p for p in nbest if p.text]  # "" is the null / no-candidate entry
    out: list[Answer] = []
    if v2 and result.predictions.get(qas_id, "") == "":
        null = next((p for p in nbest if not p.text), None)
        out.append(Answer("", float(null.probability) if null else 1.0, 0, 0))
    out.extend(Answer(p.text, float(p.probability), int(p.start), int(p.end)) for p in spans)
    return out[: item.top_k]
