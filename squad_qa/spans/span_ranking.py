"""Candidate answer spans, ranked per question: the vectorised core of squad_qa.spans.postprocess.

The rules (which spans are candidates, how they rank, text deduplication) are listed at the top of
postprocess.py; this module applies them to all windows at once, with exactly the result of
run_squad's nested loops (benchmarks/reference_postprocess.py is that loop, and the tests' oracle):

1. Per window, masked top-k start and end positions (``np.argpartition``), and all k x k pairs
   scored and checked by broadcasting ([N, k, k]); no Python loop over pairs (:class:`WindowPairs`).
2. Each window contributes its n_best_size best valid pairs; one flat table ranks them per
   question (row-wise sorts, plus a merge where a question has several windows;
   :func:`pooled_candidates`, :class:`Ranking`).
3. A question's n-best is the head of its ranking, unless that head repeats a text: only those
   questions (0.6% of dev with random logits) walk further down in Python, and if a window's share
   of the table runs out during that walk, the question is re-ranked from all its windows' pairs,
   so that the result is exactly that of the nested loops (:func:`dedup_nbest`).

Each shortcut here pays for itself, measured end to end on dev-v1.1 with random logits (CPU time
of postprocess_predictions; see benchmarks/bench_postprocess.py): without the negated top-k decoding
takes 2.1x as long, without the hash test for repeated texts (every question walked in Python)
1.4x, without the flat ``np.take`` gathers 1.1x, and without the row-wise sort + merge (one lexsort
of all pooled pairs instead) 1.1x.
"""

from __future__ import annotations

import numpy as np


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


class WindowPairs:
    """Per window: top-k starts x top-k ends (k = n_best_size), scored by broadcasting.

    Pair ``p`` of window ``i`` is start ``s_idx[i, p // k]`` and end ``e_idx[i, p % k]``;
    ``ok``/``score`` are ``[N, k*k]`` (score -inf where not ok). ``offsets`` must be C-contiguous
    int32 ``[N, L >= T, 2]`` (each pair is read as one int64).
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


def pooled_candidates(pairs: WindowPairs, ex_of_feat: np.ndarray,
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


def _sort_candidates(pairs: WindowPairs, feat: np.ndarray, pair: np.ndarray,
                     ex_of_feat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Any (window, pair) candidates in ranking order (the general, slower way)."""
    order = np.lexsort((pair, feat, -_take(pairs.score, feat, pair), ex_of_feat[feat]))
    return feat[order], pair[order]


class Ranking:
    """Candidate spans in ranking order, one flat table of numpy columns. Rows can be appended
    (re-ranked candidates of a question); ``gather`` reads any rows."""

    def __init__(self, pairs: WindowPairs, feat: np.ndarray, pair: np.ndarray,
                 ex_of_feat: np.ndarray) -> None:
        si, ei = pair // pairs.k, pair % pairs.k
        self.pairs, self.ex_of_feat = pairs, ex_of_feat  # what a re-ranked question's walk goes back to
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

    def append(self, other: Ranking, rows: list[int]) -> np.ndarray:
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


# Mixes the question number into a text hash (wrapping int64 arithmetic); see dedup_nbest.
_MIX = np.int64(-7046029254386353131)


def dedup_nbest(table: Ranking, lo: np.ndarray, hi: np.ndarray, questions: np.ndarray, contexts: list[str],
                 n_best_size: int, m: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], int]:
    """The non-null n-best entries of every question: their question numbers (ascending; each
    question's in rank order), texts, and [char_start, char_end, start_logit, end_logit] columns;
    plus how many questions were re-ranked. ``table`` holds each window's ``m`` best pairs; ``lo``/``hi``
    are its ``bounds(questions)``.

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
        return q, texts, table.gather(rows), n_reranked

    # Those questions: walk down their ranking in Python; their entries replace their heads.
    pairs, ex_of_feat = table.pairs, table.ex_of_feat
    truncated = pairs.ok.sum(axis=1) > m  # windows with pairs left out of the table
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
            sub = Ranking(pairs, *_sort_candidates(pairs, windows[w], pair, ex_of_feat),
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
    return q[order], texts, table.gather(rows), n_reranked


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
