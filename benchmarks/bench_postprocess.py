"""Benchmark: decoding all dev-v1.1 windows (384/128/64) from fixed random logits.

Ours (``squad_qa.spans.postprocess``, vectorised top-k x top-k per window) against a straightforward
nested-loop decoder of the *same rules* (benchmarks/reference_postprocess.py, also the tests'
oracle), written the way transformers' ``utils_qa.postprocess_qa_predictions`` (and run_squad) do
it: for each question, for each of its windows, argsort the top-n start and end positions, then a
double loop with if-checks. Both run in the same process on the same logits, alternating; the
predictions, n-best lists and null odds are asserted identical, then the median (and min) wall and
process-CPU time of each and the ratios are printed. On a shared machine compare the CPU figures.

    python benchmarks/bench_postprocess.py                  # v1.1, n_best 20, 5 repeats
    python benchmarks/bench_postprocess.py --version_2_with_negative --repeats 3
    python benchmarks/bench_postprocess.py --limit 500      # quick check on the first 500 questions
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from squad_qa import default_base_model_path
from squad_qa.data.squad import read_squad_examples
from squad_qa.data.features import convert_examples_to_features
from squad_qa.data.windows import WindowConfig
from squad_qa.spans.postprocess import PostprocessResult, postprocess_predictions

from reference_postprocess import reference_postprocess  # benchmarks/ is this script's folder

DEFAULT_DEV = Path(__file__).resolve().parents[1] / ".." / "shared" / "squad" / "dev-v1.1.json.gz"


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
    windows = WindowConfig()
    parser.add_argument("--max_seq_length", type=int, default=windows.max_seq_length)
    parser.add_argument("--doc_stride", type=int, default=windows.doc_stride)
    parser.add_argument("--max_query_length", type=int, default=windows.max_query_length)
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
    runs = {"ours": postprocess_predictions, "peer": reference_postprocess}
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
