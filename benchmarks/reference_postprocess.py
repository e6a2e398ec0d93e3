"""The reference decoder: squad_qa.spans.postprocess's rules, written the plain way.

One question at a time, one window at a time, then a double loop over the top-n start and end
positions with if-checks, the way transformers' ``utils_qa.postprocess_qa_predictions`` (and
run_squad's ``write_predictions``) do it; the rules are those listed at the top of
squad_qa/spans/postprocess.py (masked top-n, max-context starts, ties by (window, start, end), n-best
deduplication by text, the v2 null entry at its ranked place).

Two users, so that the oracle and the peer cannot drift apart:
* tests/test_postprocess.py checks the vectorised decoder against it on random windows;
* benchmarks/bench_postprocess.py times the vectorised decoder against it on dev-v1.1.
"""

from __future__ import annotations

import collections
import math

import numpy as np

from squad_qa.spans.postprocess import Prediction, PostprocessResult


def reference_postprocess(examples, features, start_logits, end_logits, n_best_size=20,
                            max_answer_length=30, version_2_with_negative=False,
                            null_score_diff_threshold=0.0) -> PostprocessResult:
    """One question at a time, one window at a time, one (start, end) pair at a time; same arguments
    and result as ``postprocess_predictions``."""
    start_logits = np.asarray(start_logits, dtype=np.float64)
    end_logits = np.asarray(end_logits, dtype=np.float64)
    width = start_logits.shape[1]
    windows_of = collections.defaultdict(list)
    for i, ex_i in enumerate(features.example_index.tolist()):
        windows_of[ex_i].append(i)

    predictions, nbest_all = {}, {}
    null_odds = {} if version_2_with_negative else None
    for ex_i, example in enumerate(examples):
        if ex_i not in windows_of:
            continue
        context = example.context_text
        prelim = []
        null = None  # (score, start_logit, end_logit) of the window with the smallest null score
        for f in windows_of[ex_i]:
            s_logits, e_logits = start_logits[f], end_logits[f]
            offsets = features.offsets[f]
            is_max_context = features.token_is_max_context[f]
            c0 = int(features.context_start[f])
            c1 = min(c0 + int(features.paragraph_len[f]), int(features.seq_len[f]))
            cls = int(features.cls_index[f])
            if null is None or s_logits[cls] + e_logits[cls] < null[0]:
                null = (s_logits[cls] + e_logits[cls], s_logits[cls], e_logits[cls])
            # top-n over the positions that may start / end an answer (the same masked top-k)
            in_context = np.zeros(width, dtype=bool)
            in_context[c0:c1] = True
            s_masked = np.where(in_context & is_max_context[:width], s_logits, -np.inf)
            e_masked = np.where(in_context, e_logits, -np.inf)
            start_indexes = np.argsort(s_masked)[-1:-n_best_size - 1:-1].tolist()
            end_indexes = np.argsort(e_masked)[-1:-n_best_size - 1:-1].tolist()
            for s in start_indexes:
                for e in end_indexes:
                    if s < c0 or s >= c1 or e < c0 or e >= c1:
                        continue
                    if not is_max_context[s]:
                        continue
                    if e < s or e - s + 1 > max_answer_length:
                        continue
                    prelim.append((float(s_logits[s] + e_logits[e]), f, s, e,
                                   int(offsets[s][0]), int(offsets[e][1]),
                                   float(s_logits[s]), float(e_logits[e])))
        # ties: (window, start, end) ascending, as ours
        prelim.sort(key=lambda x: (-x[0], x[1], x[2], x[3]))

        entries, seen = [], set()
        best = prelim[0] if prelim else None
        for score, f, s, e, cs, ce, sl, el in prelim:
            if len(entries) >= n_best_size:
                break
            text = context[cs:ce]
            if text in seen:
                continue
            seen.add(text)
            entries.append((text, cs, ce, sl, el))
        if version_2_with_negative:
            null_score, null_sl, null_el = float(null[0]), float(null[1]), float(null[2])
            rank = sum(1 for x in entries if x[3] + x[4] >= null_score)
            if rank < n_best_size:
                entries = entries[:rank] + [("", 0, 0, null_sl, null_el)] + entries[rank:n_best_size - 1]
            else:
                entries.append(("", 0, 0, null_sl, null_el))
            diff = null_score - best[0] if best else math.inf
            null_odds[example.qas_id] = diff
            pred = "" if best is None or diff > null_score_diff_threshold else context[best[4]:best[5]]
        else:
            if not entries:
                entries = [("", 0, 0, 0.0, 0.0)]
            pred = entries[0][0]
        scores = [x[3] + x[4] for x in entries]
        top = max(scores)
        exps = [math.exp(x - top) for x in scores]
        total = sum(exps)
        nbest_all[example.qas_id] = [Prediction(t, cs, ce, sl, el, x / total)
                                     for (t, cs, ce, sl, el), x in zip(entries, exps)]
        predictions[example.qas_id] = pred
    return PostprocessResult(predictions, nbest_all, null_odds)
