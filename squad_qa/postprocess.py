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

1. Per window, masked top-k start and end positions (``np.argpartition``), and all k x k pairs
   scored and checked by broadcasting ([N, k, k]); no Python loop over pairs.
2. Each window contributes its n_best_size best valid pairs; one flat table ranks them per
   question (row-wise sorts, plus a merge where a question has several windows).
3. A question's n-best is the head of its ranking, unless that head repeats a text: only those
   questions (0.6% of dev with random logits) walk further down in Python, and if a window's share of the table
   runs out during that walk, the question is re-ranked from all its windows' pairs, so that the
   result is exactly that of the nested loops.
4. Null / empty entries are inserted, softmax probabilities computed per list with
   ``np.add.reduceat``, and the Prediction objects built in one pass, with the cyclic GC paused
   (hundreds of thousands of new objects would otherwise trigger repeated collections).
"""

from __future__ import annotations

import gc
import json
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from itertools import repeat
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:  # only for type hints: the decoder reads plain attributes (duck typing)
    from squad_qa.data import SquadExample
    from squad_qa.feature_store import SquadFeatures

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


def _top_k(x: np.ndarray, k: int, where: np.ndarray | None = None) -> np.ndarray:
    """Column indices of the k largest entries of each row (unordered within the k); with
    ``where``, entries where it is False count as -inf."""
    if k >= x.shape[1]:
        return np.broadcast_to(np.arange(x.shape[1]), x.shape).copy()
    # The k smallest of -x: selecting the k largest directly (kth = T - k) is several times slower
    # here, numpy's introselect degrading on the many equal -inf of the masked entries.
    neg = np.full(x.shape, np.inf, dtype=x.dtype)
    np.negative(x, out=neg, where=True if where is None else where)
    return np.argpartition(neg, k - 1, axis=1)[:, :k]


def _take(a: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``a[rows, cols]`` of a 2-D array, as one ``np.take`` on the flat array: for the [N, k] and
    per-candidate gathers here several times faster than fancy indexing or take_along_axis."""
    a = np.ascontiguousarray(a)
    return np.take(a.reshape(-1), rows * a.shape[1] + cols)


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
    pairs = _WindowPairs(start_logits, end_logits, can_start, can_end, offsets, n_best_size,
                         max_answer_length)
    _check_offsets(examples, ex_of_feat, pairs)
    # A question's n-best can only use a window's n_best_size best pairs -- unless text
    # deduplication drops some of them; that (rare) question is then re-ranked from all its pairs.
    m = min(n_best_size, pairs.k * pairs.k)
    table = _Ranking(pairs, *_pooled_candidates(pairs, ex_of_feat, m), ex_of_feat)
    truncated = pairs.ok.sum(axis=1) > m  # windows with pairs left out of the table
    lo, hi = table.bounds(questions)
    has_span = hi > lo

    # ~n_best_size new Python objects per question: pause the cyclic GC, whose automatic passes
    # would otherwise walk all the young objects over and over while they pile up.
    with _gc_paused():
        # the non-null n-best entries, flat, question by question in ranking order
        entries, n_reranked = _dedup_nbest(table, lo, hi, contexts, n_best_size, pairs,
                                           ex_of_feat, questions, truncated, m)
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


class _WindowPairs:
    """Per window: top-k starts x top-k ends (k = n_best_size), scored by broadcasting.

    Pair ``p`` of window ``i`` is start ``s_idx[i, p // k]`` and end ``e_idx[i, p % k]``;
    ``ok``/``score`` are ``[N, k*k]`` (score -inf where not ok).
    """

    def __init__(self, start_logits: np.ndarray, end_logits: np.ndarray, can_start: np.ndarray,
                 can_end: np.ndarray, offsets: np.ndarray, n_best_size: int,
                 max_answer_length: int) -> None:
        n, width = start_logits.shape
        self.k = k = min(n_best_size, width)
        # [N, k] token positions, sorted so that pair number s * k + e follows (start, end) order
        self.s_idx = np.sort(_top_k(start_logits, k, where=can_start), axis=1)
        self.e_idx = np.sort(_top_k(end_logits, k, where=can_end), axis=1)
        rows = np.arange(n)[:, None]
        self.s_val = _take(start_logits, rows, self.s_idx).astype(np.float64)
        self.e_val = _take(end_logits, rows, self.e_idx).astype(np.float64)
        # character (start, end) of those tokens, [N, k, 2]: an int32 pair read as one int64
        packed = offsets.view(np.int64)[..., 0]
        self.s_offsets = _take(packed, rows, self.s_idx).view(np.int32).reshape(n, k, 2)
        self.e_offsets = _take(packed, rows, self.e_idx).view(np.int32).reshape(n, k, 2)
        self.s_char = self.s_offsets[..., 0].astype(np.int64)  # where a span starting there starts
        self.e_char = self.e_offsets[..., 1].astype(np.int64)  # where one ending there ends
        # Validity of all k x k pairs in one comparison: 0 <= end - start < max_answer_length, as an
        # unsigned compare; masked starts / ends (rows with fewer than k candidates) are moved far
        # out so that their "length" is negative.
        self.s_ok = _take(can_start, rows, self.s_idx)  # [N, k]
        self.e_ok = _take(can_end, rows, self.e_idx)
        s_pos = np.where(self.s_ok, self.s_idx, 1 << 20)
        e_pos = np.where(self.e_ok, self.e_idx, -(1 << 20))
        end_minus_start = e_pos.astype(np.int32)[:, None, :] - s_pos.astype(np.int32)[:, :, None]
        ok = end_minus_start.view(np.uint32) < max_answer_length  # [N, k (start), k (end)]
        score = np.full(ok.shape, -np.inf)
        np.add(self.s_val[:, :, None], self.e_val[:, None, :], out=score, where=ok)
        self.ok = ok.reshape(n, k * k)
        self.score = score.reshape(n, k * k)


def _pooled_candidates(pairs: _WindowPairs, ex_of_feat: np.ndarray,
                       m: int) -> tuple[np.ndarray, np.ndarray]:
    """The m best valid pairs of every window, as (window, pair) arrays in ranking order:
    (question, score descending, window, start, end).

    Sorting 10^5+ candidates on five keys is the slowest step if done naively, so: sort each window's
    m pairs on their own (a cheap row-wise sort), lay the windows out question by question, and
    merge by score only where a question has several windows (a few percent of SQuAD questions).
    """
    windows = np.argsort(ex_of_feat, kind="stable")  # group windows by question
    grouped = bool(np.all(ex_of_feat[1:] >= ex_of_feat[:-1]))  # as they come from features.py
    score = pairs.score if grouped else pairs.score[windows]
    ok = pairs.ok if grouped else pairs.ok[windows]
    keep = np.sort(_top_k(score, m), axis=1)  # pair numbers, i.e. (start, end) order
    rows = np.arange(len(keep))[:, None]
    by_score = np.argsort(-_take(score, rows, keep), axis=1, kind="stable")
    keep = _take(keep, rows, by_score)
    ok = _take(ok, rows, keep).ravel()
    feat = np.repeat(windows, m)[ok]
    pair = keep.ravel()[ok]
    ex = ex_of_feat[feat]
    multi = np.flatnonzero(np.bincount(ex_of_feat)[ex] > 1)
    if multi.size:
        # stable: ties in score keep (window, start, end) order
        merged = np.lexsort((-_take(pairs.score, feat[multi], pair[multi]), ex[multi]))
        order = np.arange(len(feat))
        order[multi] = multi[merged]
        feat, pair = feat[order], pair[order]
    return feat, pair


def _sort_candidates(pairs: _WindowPairs, feat: np.ndarray, pair: np.ndarray,
                     ex_of_feat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Any (window, pair) candidates in ranking order (the general, slower way)."""
    order = np.lexsort((pair, feat, -_take(pairs.score, feat, pair), ex_of_feat[feat]))
    return feat[order], pair[order]


class _Ranking:
    """Candidate spans in ranking order, one flat table of numpy columns. Rows can be appended
    (re-ranked candidates of a question); ``gather`` reads any rows."""

    def __init__(self, pairs: _WindowPairs, feat: np.ndarray, pair: np.ndarray,
                 ex_of_feat: np.ndarray) -> None:
        si, ei = pair // pairs.k, pair % pairs.k
        self.ex = ex_of_feat[feat]
        self.feat = feat
        self.char_start = _take(pairs.s_char, feat, si)
        self.char_end = _take(pairs.e_char, feat, ei)
        self.score = _take(pairs.score, feat, pair)
        self.columns = [self.char_start, self.char_end, _take(pairs.s_val, feat, si),
                        _take(pairs.e_val, feat, ei)]
        self.n_rows = len(feat)
        self.appended: list[list[np.ndarray]] = []

    def bounds(self, questions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows lo..hi-1 of each question (values of ex_of_feat)."""
        return (np.searchsorted(self.ex, questions, "left"),
                np.searchsorted(self.ex, questions, "right"))

    def append(self, other: _Ranking, rows: list[int]) -> np.ndarray:
        """Copy rows of another ranking into this one; returns their new row numbers."""
        idx = np.asarray(rows, dtype=np.int64)
        self.appended.append([c[idx] for c in other.columns])
        self.n_rows += len(idx)
        return np.arange(self.n_rows - len(idx), self.n_rows)

    def gather(self, rows: np.ndarray) -> list[np.ndarray]:
        """char_start, char_end, start_logit, end_logit of the given rows."""
        cols = self.columns
        if self.appended:
            cols = [np.concatenate([c] + [a[i] for a in self.appended]) for i, c in enumerate(cols)]
        return [c[rows] for c in cols]


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


# Mixes the question number into a text hash (wrapping int64 arithmetic); see _dedup_nbest.
_MIX = np.int64(-7046029254386353131)


def _dedup_nbest(table: _Ranking, lo: np.ndarray, hi: np.ndarray, contexts: list[str],
                 n_best_size: int, pairs: _WindowPairs, ex_of_feat: np.ndarray,
                 questions: np.ndarray, truncated: np.ndarray,
                 m: int) -> tuple[_Entries, int]:
    """The non-null n-best entries of every question, and how many questions were re-ranked.

    Usually a question's n-best is simply the first n_best_size rows of its ranking. Only where
    those repeat a text (run_squad drops repeats) does a Python walk go further down the ranking.
    Repeats are found by hashing (question, text); a hash collision would merely send a question
    down the exact slow path for nothing.
    """
    count = np.minimum(hi - lo, n_best_size)
    q = np.repeat(np.arange(len(lo)), count)
    rows = lo[q] + np.arange(len(q)) - (np.cumsum(count) - count)[q]
    spans = zip(q.tolist(), table.char_start[rows].tolist(), table.char_end[rows].tolist())
    texts = np.fromiter((contexts[i][a:b] for i, a, b in spans), dtype=object, count=len(q))
    key = np.fromiter(map(hash, texts), dtype=np.int64, count=len(texts)) + q * _MIX
    order = np.argsort(key)
    repeated = np.unique(q[order[1:][key[order[1:]] == key[order[:-1]]]]).tolist()
    n_reranked = 0
    if not repeated:
        return _Entries(q, texts, *table.gather(rows), n_questions=len(lo)), n_reranked

    # Those questions: walk down their ranking in Python; their entries replace their heads.
    slow = np.zeros(len(lo), dtype=bool)
    slow[repeated] = True
    fast = ~slow[q]
    q_parts, row_parts, text_parts = [q[fast]], [rows[fast]], [texts[fast]]
    for qi in repeated:
        a, b = int(lo[qi]), int(hi[qi])
        local, q_texts, stop = _dedup_walk(contexts[qi], table.char_start[a:b].tolist(),
                                           table.char_end[a:b].tolist(), n_best_size)
        q_rows = a + np.asarray(local, dtype=np.int64)
        if _needs_rerank(table.feat[a:a + stop].tolist(), len(local), truncated, m, n_best_size):
            n_reranked += 1
            windows = np.flatnonzero(ex_of_feat == questions[qi])
            w, pair = np.nonzero(pairs.ok[windows])
            sub = _Ranking(pairs, *_sort_candidates(pairs, windows[w], pair, ex_of_feat),
                           ex_of_feat)
            local, q_texts, _ = _dedup_walk(contexts[qi], sub.char_start.tolist(),
                                            sub.char_end.tolist(), n_best_size)
            q_rows = table.append(sub, local)
        q_parts.append(np.full(len(q_rows), qi))
        row_parts.append(q_rows)
        text_parts.append(np.fromiter(q_texts, dtype=object, count=len(q_texts)))
    q = np.concatenate(q_parts)
    order = np.argsort(q, kind="stable")  # nearly sorted already: cheap
    rows, texts = np.concatenate(row_parts)[order], np.concatenate(text_parts)[order]
    return _Entries(q[order], texts, *table.gather(rows), n_questions=len(lo)), n_reranked


def _dedup_walk(context: str, char_start: list[int], char_end: list[int],
                n_best_size: int) -> tuple[list[int], list[str], int]:
    """run_squad's n-best loop down one question's ranking: keep a row unless its text was seen.

    Returns the kept rows, their texts, and how many rows were consumed.
    """
    rows: list[int] = []
    texts: list[str] = []
    seen: set[str] = set()
    j = 0
    while j < len(char_start):
        text = context[char_start[j]:char_end[j]]
        j += 1
        if text not in seen:
            seen.add(text)
            rows.append(j - 1)
            texts.append(text)
            if len(rows) == n_best_size:
                break
    return rows, texts, j


def _needs_rerank(used: list[int], n_kept: int, truncated: np.ndarray, m: int,
                  n_best_size: int) -> bool:
    """After repeats were dropped: did the walk use up the m pooled pairs of a window that has
    more, before the list was full? Then that window's next pair may outrank later pooled rows.
    ``used``: the windows of the consumed rows, in order."""
    full = n_kept == n_best_size
    counts: dict[int, int] = {}
    for f in used:
        counts[f] = counts.get(f, 0) + 1
    # used up -- unless its m-th row is the very row that filled the list
    return any(c == m and truncated[f] and not (full and used[-1] == f) for f, c in counts.items())


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
                   pairs: _WindowPairs) -> None:
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
