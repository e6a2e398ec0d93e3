"""Benchmark: decoding all dev-v1.1 windows (384/128/64) from fixed random logits.

Ours (``squad_qa.postprocess``, vectorised top-k x top-k per window) against a straightforward
nested-loop decoder of the *same rules*, written here the way transformers'
``utils_qa.postprocess_qa_predictions`` (and run_squad) do it: for each question, for each of its
windows, argsort the top-n start and end positions, then a double loop with if-checks. Both run in
the same process on the same logits, alternating; the predictions, n-best lists and null odds are
asserted identical, then the median (and min) wall and process-CPU time of each and the ratios are
printed. On a shared machine compare the CPU figures.

    python benchmarks/bench_postprocess.py                  # v1.1, n_best 20, 5 repeats
    python benchmarks/bench_postprocess.py --version_2_with_negative --repeats 3
    python benchmarks/bench_postprocess.py --limit 500      # quick check on the first 500 questions
"""

from __future__ import annotations

import argparse
import collections
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from squad_qa import default_base_model_path
from squad_qa.data import read_squad_examples
from squad_qa.features import convert_examples_to_features
from squad_qa.postprocess import Prediction, PostprocessResult, postprocess_predictions

DEFAULT_DEV = Path(__file__).resolve().parents[1] / ".." / "shared" / "squad" / "dev-v1.1.json.gz"


def nested_loop_postprocess(examples, features, start_logits, end_logits, n_best_size=20,
                            max_answer_length=30, version_2_with_negative=False,
                            null_score_diff_threshold=0.0) -> PostprocessResult:
    """The peer: one question at a time, one window at a time, one (start, end) pair at a time."""
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


def assert_same(ours: PostprocessResult, peer: PostprocessResult) -> None:
    assert ours.predictions == peer.predictions, "predictions differ"
    assert ours.nbest.keys() == peer.nbest.keys()
    for qid, a in ours.nbest.items():
        b = peer.nbest[qid]
        assert [(p.text, p.start, p.end) for p in a] == [(p.text, p.start, p.end) for p in b], qid
        assert np.allclose([p.probability for p in a], [p.probability for p in b], rtol=1e-9), qid
        assert [(p.start_logit, p.end_logit) for p in a] == [(p.start_logit, p.end_logit) for p in b], qid
    if ours.null_odds is not None:
        assert ours.null_odds.keys() == peer.null_odds.keys()
        assert all(ours.null_odds[q] == peer.null_odds[q] for q in ours.null_odds), "null_odds differ"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--predict_file", default=str(DEFAULT_DEV))
    parser.add_argument("--max_seq_length", type=int, default=384)
    parser.add_argument("--doc_stride", type=int, default=128)
    parser.add_argument("--max_query_length", type=int, default=64)
    parser.add_argument("--n_best_size", type=int, default=20)
    parser.add_argument("--max_answer_length", type=int, default=30)
    parser.add_argument("--version_2_with_negative", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--limit", type=int, default=None, help="only the first N questions")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_base_model_path())
    examples = read_squad_examples(args.predict_file, is_training=False,
                                   version_2_with_negative=args.version_2_with_negative)
    if args.limit:
        examples = examples[: args.limit]
    features = convert_examples_to_features(examples, tokenizer, args.max_seq_length, args.doc_stride,
                                            args.max_query_length, show_progress=False)
    rng = np.random.default_rng(args.seed)
    shape = (len(features), args.max_seq_length)
    start_logits = rng.standard_normal(shape, dtype=np.float32)
    end_logits = rng.standard_normal(shape, dtype=np.float32)
    kwargs = dict(n_best_size=args.n_best_size, max_answer_length=args.max_answer_length,
                  version_2_with_negative=args.version_2_with_negative)

    # Wall time, plus this process's CPU time (steadier on a shared machine); the two decoders
    # alternate, so that load changes hit both alike.
    runs = {"ours": postprocess_predictions, "peer": nested_loop_postprocess}
    wall = {name: [] for name in runs}
    cpu = {name: [] for name in runs}
    results = {}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            # free the previous run's output first: its deallocation is not part of decoding
            results.pop(name, None)
            w0, c0 = time.perf_counter(), time.process_time()
            results[name] = fn(examples, features, start_logits, end_logits, **kwargs)
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    ours, peer = results["ours"], results["peer"]
    t_ours, t_peer = statistics.median(wall["ours"]), statistics.median(wall["peer"])
    c_ours, c_peer = statistics.median(cpu["ours"]), statistics.median(cpu["peer"])
    assert_same(ours, peer)
    print(f"{len(examples)} questions, {len(features)} windows "
          f"({args.max_seq_length}/{args.doc_stride}/{args.max_query_length}), "
          f"n_best_size={args.n_best_size}, v2={args.version_2_with_negative}: identical predictions")
    for label, name in (("ours (vectorised)  ", "ours"), ("peer (nested loops)", "peer")):
        print(f"{label} median of {args.repeats}: wall {statistics.median(wall[name]):.3f} s, "
              f"cpu {statistics.median(cpu[name]):.3f} s  (min: wall {min(wall[name]):.3f} s, "
              f"cpu {min(cpu[name]):.3f} s)")
    print(f"speed-up (median): {t_peer / t_ours:.1f}x wall, {c_peer / c_ours:.1f}x cpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())
