"""Start/end logits -> answer spans and run_squad prediction files.

This is the decoding half of run_squad's ``write_predictions``, vectorised with numpy.

Rules (run_squad's, with the departures marked *):

* A span ``(s, e)`` of window ``i`` (token positions) is a candidate when both ends lie in the
  context part of the window (``context_start[i] <= s, e < context_start[i] + paragraph_len[i]``),
  ``e >= s``, ``e - s + 1 <= max_answer_length`` and the start token has its *max context* in this
  window (``token_is_max_context[i, s]``; run_squad's rule: of all windows that contain a token, it
  is scored only in the one where it has the most context on both sides, so every token is a start
  candidate in exactly one window and the same span never competes twice).
* Per window only the top ``n_best_size`` start and top ``n_best_size`` end positions are paired,
  as in run_squad. (*) The top-k is taken over *masked* logits (positions that can never start /
  end a valid span set to -inf), where run_squad takes it over the raw logits and filters after.
  With run_squad's order an untrained or oddly behaved model can spend all k slots on question or
  padding tokens and end up with no candidate; masking first keeps all k slots usable. For a model
  that puts its mass in the context the two coincide.
* Candidates of all windows of a question are ranked by ``start_logit + end_logit``. Ties are
  broken by (window, start, end) ascending (*: run_squad's order on exact ties is the order of its
  loops, i.e. by descending start/end logit; exact float ties do not occur in practice).
* n-best deduplication, as run_squad: walking down the ranking, an entry whose *text* was already
  seen is dropped (e.g. the same word at two places of the context), until ``n_best_size`` entries
  are kept. We dedupe by text rather than by character span so that the n-best list, its
  probabilities and the v2 null margin are exactly run_squad's.
* Probabilities: softmax of ``start_logit + end_logit`` over the final n-best list (null included).
* SQuAD v1.1, no candidate at all: the prediction is ``""`` and the n-best list holds one empty
  entry ``Prediction("", 0, 0, 0.0, 0.0, 1.0)``. (* run_squad puts the nonce text ``"empty"``
  there and so *predicts* the word "empty"; we keep ``""`` so that ``context[start:end] == text``
  holds for every entry.) Such questions are counted and logged.
* SQuAD v2.0: the null score of a question is the minimum over its windows of
  ``start_logits[cls] + end_logits[cls]`` (first window on ties); the null entry (``""``, start =
  end = 0) takes its ranked place in the n-best list, or is appended after the ``n_best_size``
  entries if it does not rank among them (run_squad does both). The best non-null span is the
  top-ranked candidate; ``null_odds = null_score - best_non_null_score`` and the prediction is
  ``""`` iff ``null_odds > null_score_diff_threshold``. A question with no non-null candidate
  predicts ``""`` with ``null_odds = +inf`` (run_squad crashes there).

Answer text. The text of span ``(s, e)`` is ``context_text[offsets[s][0]:offsets[e][1]]``: an
exact substring of the original context, taken from the fast tokenizer's character offsets.
run_squad instead rebuilds it: it de-wordpieces the predicted tokens (``tok_text``), takes the
whole original words they fall in, ``orig_text = " ".join(doc_tokens[w_s:w_e + 1])``, and
``get_final_text`` re-tokenises ``orig_text`` with the BasicTokenizer (lower-case, strip accents,
split punctuation), looks for ``tok_text`` in it with ``str.find`` and maps the hit back onto
``orig_text`` through space-stripped character maps. Exact relation, where ``ours`` is our text:

1. When ``get_final_text`` succeeds and the first occurrence found by ``find`` is the predicted
   one, it returns ``re.sub(r"[ \\t\\r\\n\\u202f]+", " ", ours)``: the same first and last
   character (both are the predicted tokens' edges; tokens never contain whitespace), the same
   accents and case (it maps back onto the original characters), but every run of run_squad
   whitespace inside the span collapsed to one space, because ``orig_text`` was joined with
   single spaces. The two strings are equal whenever the span's words are separated by single
   spaces, and always equal after the official SQuAD normalisation, so EM/F1 agree.
2. It differs (and then run_squad is the one that is off) when it falls back to the whole words
   ``orig_text``: the de-wordpieced text is not found (a ``[UNK]`` token, e.g. an emoji or a rare
   symbol inside the span), or the space-stripped lengths differ (characters whose lower-casing or
   NFD accent stripping changes their length: decomposed accents, "İ", Hangul syllables; control
   characters BasicTokenizer drops; non-ASCII spaces such as U+00A0 that it splits on but
   run_squad does not); or when ``find`` hits an earlier occurrence inside the first word (a span
   starting at "##na" of "banana"), which gives the same characters at the wrong place (the text
   differs at most in case or accents).

How (vectorised; ~10.8k dev-v1.1 windows decode in well under a second on one CPU core):
span_ranking.py finds every question's non-null n-best spans (per-window top-k x top-k pairs,
one ranking per question, text deduplication); here the null / empty entries are inserted,
softmax probabilities computed per list with ``np.add.reduceat``, and the Prediction objects built
in one pass, with the cyclic GC paused (hundreds of thousands of new objects would otherwise
trigger repeated collections; pausing it halves the decoding time of dev-v1.1).
"""

from __future__ import annotations

import gc
import json
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from squad_qa.spans.span_ranking import Ranking, WindowPairs, dedup_nbest, pooled_candidates

if TYPE_CHECKING:  # only for type hints: the decoder reads plain attributes (duck typing)
    from squad_qa.data.squad import SquadExample
    from squad_qa.data.feature_store import SquadFeatures

logger = logging.getLogger(__name__)


class Prediction(NamedTuple):
    """One n-best entry. ``context_text[start:end] == text``; ``("", 0, 0)`` is the null answer.

    A NamedTuple rather than a dataclass: dev-v1.1 alone needs ~200k of them, and a tuple is built
    in C (see ``to_predictions``) without a Python ``__init__`` call per entry.
    """

    text: str
    start: int
    end: int
    start_logit: float
    end_logit: float
    probability: float


@dataclass
class PostprocessResult:
    predictions: dict[str, str]  # qas_id -> best answer text ("" = no answer)
    nbest: dict[str, list[Prediction]]  # qas_id -> n-best list, best first
    null_odds: dict[str, float] | None  # v2 only: null_score - best_non_null_score


def _check_inputs(
    examples: Sequence[SquadExample],
    features: SquadFeatures,
    start_logits: Any,
    end_logits: Any,
    n_best_size: int,
    max_answer_length: int,
) -> tuple[np.ndarray, np.ndarray]:
    if n_best_size < 1:
        raise ValueError(f"n_best_size must be >= 1, got {n_best_size}")
    if max_answer_length < 1:
        raise ValueError(f"max_answer_length must be >= 1, got {max_answer_length}")
    # Keep float32/float16 logits as they are: selecting the top-k on them is the same as on their
    # (exact) float64 values, and skips converting [N, T] arrays; scores are summed in float64.
    start, end = np.asarray(start_logits), np.asarray(end_logits)
    if not np.issubdtype(start.dtype, np.floating) or not np.issubdtype(end.dtype, np.floating):
        start, end = start.astype(np.float64), end.astype(np.float64)
    n = len(features.example_index)
    for name, arr in (("start_logits", start), ("end_logits", end)):
        if arr.ndim != 2 or arr.shape[0] != n:
            raise ValueError(f"{name} must have shape [num_features={n}, T], got {arr.shape}")
        if arr.shape[1] > features.max_seq_length:
            raise ValueError(
                f"{name} has width {arr.shape[1]} > max_seq_length {features.max_seq_length}"
            )
    if start.shape != end.shape:
        raise ValueError(f"start_logits {start.shape} and end_logits {end.shape} differ in shape")
    for name, arr in (("start_logits", start), ("end_logits", end)):
        bad = np.flatnonzero(np.isnan(arr).any(axis=1))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"{name} has NaN in {bad.size} feature row(s), first row {i} "
                f"(question {examples[int(features.example_index[i])].qas_id!r})"
            )
    ex = np.asarray(features.example_index)
    if n and (ex.min() < 0 or ex.max() >= len(examples)):
        raise ValueError(
            f"features.example_index spans [{ex.min()}, {ex.max()}] but there are "
            f"{len(examples)} examples: features and examples do not belong together"
        )
    width = start.shape[1]
    ctx_end = np.asarray(features.context_start) + np.asarray(features.paragraph_len)
    short = np.flatnonzero(ctx_end > width)
    if short.size:
        i = int(short[0])
        raise ValueError(
            f"logits have width {width} but the context of feature {i} ends at position "
            f"{int(ctx_end[i])} ({short.size} feature(s) affected): pad logits to the longest window"
        )
    return start, end


def postprocess_predictions(
    examples: Sequence[SquadExample],
    features: SquadFeatures,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    version_2_with_negative: bool = False,
    null_score_diff_threshold: float = 0.0,
) -> PostprocessResult:
    """Decode per-feature logits ``[len(features), T]`` into answers and n-best lists per question.

    Row ``i`` of the logits belongs to ``features[i]``; positions ``>= seq_len`` are ignored.
    Questions without any feature (e.g. when decoding a subset) get no entry; they are counted
    and logged.
    """
    start_logits, end_logits = _check_inputs(
        examples, features, start_logits, end_logits, n_best_size, max_answer_length
    )
    num_feat, width = start_logits.shape
    ex_of_feat = np.asarray(features.example_index, dtype=np.int64)
    questions = np.unique(ex_of_feat)  # example indices that have windows, ascending
    if len(questions) < len(examples):
        logger.warning("%d of %d questions have no feature and get no prediction",
                       len(examples) - len(questions), len(examples))
    qids = [examples[i].qas_id for i in questions.tolist()]
    if len(set(qids)) != len(qids):
        dup = Counter(qids).most_common(1)[0][0]
        raise ValueError(f"duplicate question id {dup!r} among the examples")
    contexts = [examples[i].context_text for i in questions.tolist()]

    # ---- which positions may start / end an answer: [N, T] --------------------------------------
    pos = np.arange(width)
    ctx_start = np.asarray(features.context_start, dtype=np.int64)[:, None]
    ctx_stop = ctx_start + np.asarray(features.paragraph_len, dtype=np.int64)[:, None]
    seq_len = np.asarray(features.seq_len, dtype=np.int64)[:, None]
    can_end = (pos >= ctx_start) & (pos < np.minimum(ctx_stop, seq_len))
    can_start = can_end & np.asarray(features.token_is_max_context, dtype=bool)[:, :width]
    offsets = np.ascontiguousarray(features.offsets, dtype=np.int32)  # [N, L >= T, 2]

    # ---- candidates: per window top-k starts x top-k ends; one ranking per question -------------
    pairs = WindowPairs(start_logits, end_logits, can_start, can_end, offsets, n_best_size,
                        max_answer_length)
    _check_offsets(examples, ex_of_feat, pairs)
    # A question's n-best can only use a window's n_best_size best pairs -- unless text
    # deduplication drops some of them; that (rare) question is then re-ranked from all its pairs.
    m = min(n_best_size, pairs.k * pairs.k)
    table = Ranking(pairs, *pooled_candidates(pairs, ex_of_feat, m), ex_of_feat)
    lo, hi = table.bounds(questions)
    has_span = hi > lo

    # ~n_best_size new Python objects per question: pause the cyclic GC, whose automatic passes
    # would otherwise walk all the young objects over and over while they pile up.
    with _gc_paused():
        # the non-null n-best entries, flat, question by question in ranking order
        q, texts, columns, n_reranked = dedup_nbest(table, lo, hi, questions, contexts, n_best_size, m)
        entries = _Entries(q, texts, *columns, n_questions=len(questions))
        best_text = np.full(len(questions), "", dtype=object)
        best_text[entries.q[entries.rank == 0]] = entries.text[entries.rank == 0]
        best_text = best_text.tolist()

        # plus one special entry per question: v2 the null answer, at its ranked place; v1 the
        # empty answer, only for questions without any valid span
        if version_2_with_negative:
            null_start, null_end = _null_logits(start_logits, end_logits, features, ex_of_feat)
            null_score = null_start + null_end
            best_score = np.full(len(questions), -np.inf)
            best_score[has_span] = table.score[lo[has_span]]
            null_diff = null_score - best_score  # +inf without any span
            # the null entry ranks after non-null entries of equal score (run_squad appends it last
            # to a stably sorted list); if it is not among the n_best_size, it goes after them
            null_at = np.bincount(entries.q[entries.score >= null_score[entries.q]],
                                  minlength=len(questions))
            nbest = entries.with_special(np.ones(len(questions), dtype=bool), null_at, null_start,
                                         null_end, n_best_size).to_predictions(qids)
            answers = ["" if d > null_score_diff_threshold else t
                       for d, t in zip(null_diff.tolist(), best_text)]
        else:
            zeros = np.zeros(len(questions))
            nbest = entries.with_special(~has_span, zeros.astype(np.int64), zeros, zeros,
                                         n_best_size).to_predictions(qids)
            answers = best_text

    predictions = dict(zip(qids, answers))
    null_odds = dict(zip(qids, null_diff.tolist())) if version_2_with_negative else None
    no_span = [qids[i] for i in np.flatnonzero(~has_span).tolist()]
    if no_span:
        logger.warning("%d question(s) have no valid span in any window; predicting '' for: %s%s",
                       len(no_span), ", ".join(no_span[:10]), " ..." if len(no_span) > 10 else "")
    logger.debug("decoded %d questions from %d features (%d re-ranked from all pairs)",
                 len(nbest), num_feat, n_reranked)
    return PostprocessResult(predictions=predictions, nbest=nbest, null_odds=null_odds)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (restored on exit, also on errors)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _null_logits(start_logits: np.ndarray, end_logits: np.ndarray, features: SquadFeatures,
                 ex_of_feat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per question (ascending example index): the CLS start and end logit of the window with the
    smallest null score start + end; the first such window on ties (run_squad's strict "<")."""
    n = len(ex_of_feat)
    cls = np.asarray(features.cls_index, dtype=np.int64)
    null_start = start_logits[np.arange(n), cls].astype(np.float64)
    null_end = end_logits[np.arange(n), cls].astype(np.float64)
    order = np.lexsort((np.arange(n), null_start + null_end, ex_of_feat))
    first = np.ones(n, dtype=bool)
    first[1:] = ex_of_feat[order][1:] != ex_of_feat[order][:-1]
    return null_start[order[first]], null_end[order[first]]


@dataclass
class _Entries:
    """n-best entries of all questions, flat, question by question (``q`` ascending), each
    question's in rank order (``rank`` 0, 1, ...)."""

    q: np.ndarray
    text: np.ndarray  # object array of str
    char_start: np.ndarray
    char_end: np.ndarray
    start_logit: np.ndarray
    end_logit: np.ndarray
    n_questions: int

    @property
    def score(self) -> np.ndarray:
        return self.start_logit + self.end_logit

    @property
    def count(self) -> np.ndarray:
        return np.bincount(self.q, minlength=self.n_questions)

    @property
    def rank(self) -> np.ndarray:
        count = self.count
        return np.arange(len(self.q)) - (np.cumsum(count) - count)[self.q]

    def with_special(self, has: np.ndarray, at: np.ndarray, start_logit: np.ndarray,
                     end_logit: np.ndarray, n_best_size: int) -> _Entries:
        """Insert an empty-text entry (char span 0..0) at rank ``at[q]`` of each question with
        ``has[q]``; a list it is inserted into keeps n_best_size entries in all, unless the entry
        comes after all of them (``at == n_best_size``), then it is appended (run_squad)."""
        if not has.any():
            return self
        count, rank = self.count, self.rank
        keep = np.where(has & (at < n_best_size), np.minimum(count, n_best_size - 1), count)
        size = keep + has
        first = np.cumsum(size) - size
        kept = rank < keep[self.q]
        q, rank = self.q[kept], rank[kept]
        dest = first[q] + rank + (has[q] & (rank >= at[q]))  # where the kept entries go
        sq = np.flatnonzero(has)
        sdest = first[sq] + at[sq]  # where the special entries go
        cols = []
        for old, new in ((self.q, sq), (self.text, ""), (self.char_start, 0), (self.char_end, 0),
                         (self.start_logit, start_logit[sq]), (self.end_logit, end_logit[sq])):
            col = np.empty(int(size.sum()), dtype=old.dtype)
            col[dest], col[sdest] = old[kept], new
            cols.append(col)
        return _Entries(*cols, n_questions=self.n_questions)

    def to_predictions(self, qids: list[str]) -> dict[str, list[Prediction]]:
        """Prediction lists by question id, with run_squad's softmax over each list."""
        if not len(self.q):
            return {}
        count = self.count
        first = np.cumsum(count) - count
        score = self.score
        # shift by each list's max for stability, as run_squad's _compute_softmax
        exp = np.exp(score - np.repeat(np.maximum.reduceat(score, first), count))
        prob = exp / np.repeat(np.add.reduceat(exp, first), count)
        rows = zip(self.text.tolist(), self.char_start.tolist(), self.char_end.tolist(),
                   self.start_logit.tolist(), self.end_logit.tolist(), prob.tolist())
        preds = list(map(tuple.__new__, repeat(Prediction), rows))
        return {qid: preds[a:b] for qid, a, b in zip(qids, first.tolist(), (first + count).tolist())}


def _check_offsets(examples: Sequence[SquadExample], ex_of_feat: np.ndarray,
                   pairs: WindowPairs) -> None:
    """Every token that can start or end a candidate span must map to a character range inside its
    context. (Only those tokens' offsets are ever read, so only they are checked: a few percent
    of the [N, T] table.)"""
    ctx_len = np.array([len(e.context_text) for e in examples], dtype=np.int64)[ex_of_feat]
    first, n_bad = None, 0
    for idx, off, valid in ((pairs.s_idx, pairs.s_offsets, pairs.s_ok),
                            (pairs.e_idx, pairs.e_offsets, pairs.e_ok)):
        cs, ce = off[..., 0], off[..., 1]
        bad = valid & ((cs < 0) | (ce < cs) | (ce > ctx_len[:, None]))
        n_bad += int(bad.sum())
        if first is None and bad.any():
            i, j = (int(x) for x in np.argwhere(bad)[0])
            first = (i, int(idx[i, j]), off[i, j].tolist())
    if first is not None:
        i, j, offsets = first
        raise ValueError(
            f"feature {i} (question {examples[int(ex_of_feat[i])].qas_id!r}): context token at "
            f"position {j} has character offsets {offsets} outside its context of length "
            f"{int(ctx_len[i])} ({n_bad} bad candidate token(s) in all): features and examples do "
            "not belong together"
        )


def write_predictions(result: PostprocessResult, output_dir: str | Path) -> dict[str, Path]:
    """Write run_squad's prediction files into ``output_dir`` (created if needed).

    ``predictions.json``: {qas_id: text}; ``nbest_predictions.json``: {qas_id: [{"text",
    "probability", "start_logit", "end_logit", "start", "end"}, ...]} (run_squad's fields plus
    the character span); ``null_odds.json`` (v2 only): {qas_id: null_score - best_non_null_score},
    the ``--na-prob-file`` of the official v2.0 evaluation script. Returns the paths by name.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    nbest_json = {
        qid: [
            {"text": p.text, "probability": p.probability, "start_logit": p.start_logit,
             "end_logit": p.end_logit, "start": p.start, "end": p.end}
            for p in entries
        ]
        for qid, entries in result.nbest.items()
    }
    files: dict[str, Any] = {"predictions": result.predictions, "nbest_predictions": nbest_json}
    if result.null_odds is not None:
        files["null_odds"] = result.null_odds
    paths: dict[str, Path] = {}
    for name, obj in files.items():
        path = out / f"{name}.json"
        # indent=4 as run_squad; non-ASCII kept readable (every JSON reader decodes it the same)
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=4, ensure_ascii=False)
            fh.write("\n")
        paths[name] = path
        logger.info("wrote %s (%d questions)", path, len(obj))
    return paths
