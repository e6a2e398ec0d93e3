"""Do the default encoder (BERT uncased WordPiece) and the teacher (all-mpnet-base-v2) cut SQuAD contexts alike?

    python benchmarks/compare_tokenizers.py --teacher ~/squad-runs/teacher/all-mpnet-base-v2 \
        [--files ../shared/squad/train-v1.1.json.gz ../shared/squad/dev-v1.1.json.gz] [--examples 3]

Every distinct context of each file (SQuAD JSON, .json or .json.gz) is tokenized by both fast tokenizers with
``add_special_tokens=False``. Per file it prints how many contexts have identical piece strings (tokens), identical
character offsets, both, and identical token ids (the vocabularies may number the same pieces differently: the id shift
of aligned pieces is printed too), then
the first few differing contexts with the first position where they part. Exit status 1 when any context differs
in tokens or offsets. The teacher folder comes from ``scripts/download_teacher.py``.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from squad_qa import default_base_model_path  # noqa: E402
from squad_qa.data.squad import load_squad_json  # noqa: E402

DEFAULT_FILES = [REPO.parent / "shared" / "squad" / "train-v1.1.json.gz", REPO.parent / "shared" / "squad" / "dev-v1.1.json.gz"]
DEFAULT_TEACHER = Path.home() / "squad-runs" / "teacher" / "all-mpnet-base-v2"


def distinct_contexts(path: Path) -> list[str]:
    data = load_squad_json(path)["data"]
    seen: dict[str, None] = {}
    for article in data:
        for para in article["paragraphs"]:
            seen.setdefault(para["context"], None)
    return list(seen)


def encode(tok, texts: list[str], batch: int, desc: str) -> list[tuple[list[str], list[tuple[int, int]], list[int]]]:
    out = []
    for i in tqdm(range(0, len(texts), batch), desc=desc, unit="batch", leave=False):
        enc = tok(texts[i: i + batch], add_special_tokens=False, return_offsets_mapping=True, truncation=False,
                  verbose=False)
        for j in range(len(enc["input_ids"])):
            out.append((enc.tokens(j), [tuple(o) for o in enc["offset_mapping"][j]], enc["input_ids"][j]))
    return out


def first_difference(a: list, b: list) -> int:
    for k, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return k
    return min(len(a), len(b))


def compare(path: Path, base, teacher, batch: int, n_examples: int) -> dict:
    contexts = distinct_contexts(path)
    t0 = time.perf_counter()
    ours = encode(base, contexts, batch, f"{path.name}: base")
    theirs = encode(teacher, contexts, batch, f"{path.name}: teacher")
    counts = {"contexts": len(contexts), "same_tokens": 0, "same_offsets": 0, "same_both": 0, "same_ids": 0,
              "tokens_base": 0, "tokens_teacher": 0}
    shifts: collections.Counter[int] = collections.Counter()  # teacher id - base id, over same-position pieces
    examples = []
    for ctx, (tok_a, off_a, ids_a), (tok_b, off_b, ids_b) in zip(contexts, ours, theirs):
        st, so = tok_a == tok_b, off_a == off_b
        counts["same_tokens"] += st
        counts["same_offsets"] += so
        counts["same_both"] += st and so
        counts["same_ids"] += ids_a == ids_b
        shifts.update(b - a for a, b in zip(ids_a, ids_b))
        counts["tokens_base"] += len(tok_a)
        counts["tokens_teacher"] += len(tok_b)
        if not (st and so) and len(examples) < n_examples:
            k = first_difference(list(zip(tok_a, off_a)), list(zip(tok_b, off_b)))
            lo = max(0, k - 3)
            examples.append(f"  at piece {k}: {ctx[off_a[k][0] - 20 if k < len(off_a) else 0:][:60]!r}\n"
                            f"    base    {list(zip(tok_a, off_a))[lo:k + 4]}\n"
                            f"    teacher {list(zip(tok_b, off_b))[lo:k + 4]}")
    counts["id_shifts"] = dict(shifts.most_common(5))
    counts["seconds"] = round(time.perf_counter() - t0, 1)
    counts["examples"] = examples
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", type=Path, default=DEFAULT_TEACHER, help=f"teacher folder (default: {DEFAULT_TEACHER})")
    p.add_argument("--base", type=Path, default=None, help="default encoder folder (default: squad_qa.default_base_model_path())")
    p.add_argument("--files", type=Path, nargs="+", default=DEFAULT_FILES, help="SQuAD files (.json or .json.gz)")
    p.add_argument("--batch", type=int, default=256, help="contexts per tokenizer call")
    p.add_argument("--examples", type=int, default=3, help="differing contexts to show per file")
    args = p.parse_args(argv)

    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "sequence longer than model_max_length": not truncating is the point
    base_dir = args.base or default_base_model_path()
    base, teacher = AutoTokenizer.from_pretrained(base_dir), AutoTokenizer.from_pretrained(args.teacher)
    print(f"base    {base_dir}: {type(base).__name__}, vocab {len(base)}")
    print(f"teacher {args.teacher}: {type(teacher).__name__}, vocab {len(teacher)}")
    differing = 0
    for path in args.files:
        c = compare(path, base, teacher, args.batch, args.examples)
        n = c["contexts"]
        print(f"{path.name}: {n} distinct contexts; identical tokens {c['same_tokens']}/{n}, identical offsets "
              f"{c['same_offsets']}/{n}, both {c['same_both']}/{n}, identical ids {c['same_ids']}/{n}; pieces "
              f"{c['tokens_base']} base / {c['tokens_teacher']} teacher ({c['seconds']} s)")
        print(f"  teacher id - base id over aligned pieces (count): {c['id_shifts']}")
        for example in c["examples"]:
            print(example)
        differing += n - c["same_both"]
    return 1 if differing else 0


if __name__ == "__main__":
    raise SystemExit(main())
