"""Feature-conversion speed: ours vs transformers' legacy converter vs a plain fast-tokenizer call.

    python benchmarks/bench_features.py                      # dev-v1.1 and train-v1.1
    python benchmarks/bench_features.py --datasets dev --repeats 3 --legacy_limit 2000

Three converters, same machine, same run, each in its own process (so peak RSS is per converter):
* ours    squad_qa.data.features.convert_examples_to_features (no cache), on read_squad_examples output.
* legacy  transformers 4.57 squad_convert_examples_to_features + slow BertTokenizer (threads=1), run by
          benchmarks/legacy_features.py inside the legacy venv (--legacy_python); the time is measured
          inside that process around the conversion call only. It is slow, so --legacy_limit times it
          on the first N questions and the figure is reported in examples/s.
* run_qa  one fast-tokenizer call over the question/context lists, as run_qa.py's
          prepare_validation_features does: truncation="only_second", return_overflowing_tokens=True,
          return_offsets_mapping=True, stride=--doc_stride, padding="max_length". Note that run_qa's
          `stride` is the window *overlap*, whereas run_squad's doc_stride is the *step* between windows,
          so run_qa makes fewer windows from the same flags; the window counts are printed.
Reading the JSON is not timed for any converter (it is reported separately for ours and legacy).
Figures: median of --repeats for ours and run_qa, one run for legacy; peak RSS from
resource.getrusage(RUSAGE_SELF).ru_maxrss of each process (legacy: max of the process and its Pool worker).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from squad_qa.data.windows import WindowConfig  # noqa: E402  (light: no torch)

SHARED = REPO.parent / "shared" / "squad"
DATASETS = {"dev": (SHARED / "dev-v1.1.json.gz", False), "train": (SHARED / "train-v1.1.json.gz", True)}


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def worker_ours(args) -> dict:
    from transformers import AutoTokenizer

    from squad_qa import default_base_model_path
    from squad_qa.data.squad import read_squad_examples
    from squad_qa.data.features import convert_examples_to_features

    tokenizer = AutoTokenizer.from_pretrained(str(args.model_name_or_path or default_base_model_path()))
    t0 = time.perf_counter()
    examples = read_squad_examples(args.file, is_training=args.train)
    read_s = time.perf_counter() - t0
    times, n_features = [], 0
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        feats = convert_examples_to_features(examples, tokenizer, args.max_seq_length, args.doc_stride,
                                             args.max_query_length, is_training=args.train,
                                             cache_dir=None, show_progress=False)
        times.append(time.perf_counter() - t0)
        n_features = len(feats)
        del feats
    return dict(n_examples=len(examples), n_features=n_features, seconds=statistics.median(times), times=times,
                read_s=read_s, maxrss_mib=_maxrss_mib())


def worker_runqa(args) -> dict:
    from transformers import AutoTokenizer

    from squad_qa import default_base_model_path

    tokenizer = AutoTokenizer.from_pretrained(str(args.model_name_or_path or default_base_model_path()))
    with gzip.open(args.file, "rt", encoding="utf-8") as f:
        data = json.load(f)["data"]
    # run_qa strips the questions' leading whitespace (some SQuAD questions have lots of it).
    questions, contexts = [], []
    for article in data:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                questions.append(qa["question"].lstrip())
                contexts.append(paragraph["context"])
    times, n_features = [], 0
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        enc = tokenizer(questions, contexts, truncation="only_second", max_length=args.max_seq_length,
                        stride=args.doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True,
                        padding="max_length")
        times.append(time.perf_counter() - t0)
        n_features = len(enc["input_ids"])
        del enc
    return dict(n_examples=len(questions), n_features=n_features, seconds=statistics.median(times), times=times,
                maxrss_mib=_maxrss_mib())


def run_worker(kind: str, file: Path, train: bool, args) -> dict:
    cmd = [sys.executable, __file__, "--_worker", kind, "--_file", str(file), "--repeats", str(args.repeats),
           "--max_seq_length", str(args.max_seq_length), "--doc_stride", str(args.doc_stride),
           "--max_query_length", str(args.max_query_length)]
    if train:
        cmd.append("--_train")
    if args.model_name_or_path:
        cmd += ["--model_name_or_path", str(args.model_name_or_path)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_legacy(file: Path, train: bool, limit: int | None, args) -> dict:
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="bench-legacy-") as tmp:
        npz = Path(tmp) / "legacy.npz"
        cmd = [args.legacy_python, str(REPO / "benchmarks" / "legacy_features.py"), "--predict_file", str(file),
               "--output", str(npz), "--no_arrays", "--threads", "1",
               "--max_seq_length", str(args.max_seq_length), "--doc_stride", str(args.doc_stride),
               "--max_query_length", str(args.max_query_length)]
        if train:
            cmd.append("--train")
        if limit:
            cmd += ["--limit", str(limit)]
        if args.model_name_or_path:
            cmd += ["--model_name_or_path", str(args.model_name_or_path)]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        with np.load(npz, allow_pickle=False) as z:
            return dict(n_examples=int(z["n_examples"]), n_features=int(z["n_features"]),
                        seconds=float(z["convert_seconds"]), read_s=float(z["read_seconds"]),
                        maxrss_mib=max(int(z["maxrss_self_kb"]), int(z["maxrss_children_kb"])) / 1024)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["dev", "train"], choices=sorted(DATASETS))
    p.add_argument("--repeats", type=int, default=3, help="timed runs per fast converter (median reported)")
    p.add_argument("--legacy_limit", type=int, nargs="+", default=None,
                   help="questions timed for legacy, one value or one per dataset (default: dev all, train 5000)")
    p.add_argument("--no_legacy", action="store_true")
    p.add_argument("--legacy_python", default=os.environ.get("LEGACY_PYTHON", "/tmp/legacy-venv/bin/python"))
    p.add_argument("--model_name_or_path", type=Path, default=None)
    windows = WindowConfig()
    p.add_argument("--max_seq_length", type=int, default=windows.max_seq_length)
    p.add_argument("--doc_stride", type=int, default=windows.doc_stride)
    p.add_argument("--max_query_length", type=int, default=windows.max_query_length)
    p.add_argument("--_worker", choices=["ours", "runqa"], help=argparse.SUPPRESS)
    p.add_argument("--_file", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--_train", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args._worker:
        args.file, args.train = args._file, args._train
        result = (worker_ours if args._worker == "ours" else worker_runqa)(args)
        print(json.dumps(result))
        return 0

    default_limits = {"dev": None, "train": 5000}
    limits = args.legacy_limit or [default_limits[d] for d in args.datasets]
    if len(limits) == 1:
        limits = limits * len(args.datasets)
    rows = []
    for name, limit in zip(args.datasets, limits):
        file, train = DATASETS[name]
        mode = "train" if train else "eval"
        print(f"[{name}] ours ...", flush=True)
        res = {"ours": run_worker("ours", file, train, args)}
        print(f"[{name}] run_qa tokenizer call ...", flush=True)
        res["run_qa"] = run_worker("runqa", file, False, args)
        if not args.no_legacy:
            print(f"[{name}] legacy ({limit or 'all'} questions) ...", flush=True)
            res["legacy"] = run_legacy(file, train, limit, args)
        rows.append((f"{name} ({mode})", res))

    print(f"\nmax_seq_length {args.max_seq_length}, doc_stride {args.doc_stride}, max_query_length "
          f"{args.max_query_length}; ours/run_qa: median of {args.repeats}; legacy: 1 run, threads=1")
    header = f"{'dataset':<14}{'converter':<9}{'questions':>10}{'windows':>9}{'seconds':>9}{'ex/s':>10}{'peak MiB':>10}{'read s':>8}"
    print(header + f"{'ours speed-up':>15}")
    print("-" * (len(header) + 15))
    for label, res in rows:
        ours_rate = res["ours"]["n_examples"] / res["ours"]["seconds"]
        for kind, r in res.items():
            rate = r["n_examples"] / r["seconds"]
            ratio = "" if kind == "ours" else f"{ours_rate / rate:.1f}x"
            read = f"{r['read_s']:.2f}" if "read_s" in r else "-"
            print(f"{label:<14}{kind:<9}{r['n_examples']:>10}{r['n_features']:>9}{r['seconds']:>9.2f}"
                  f"{rate:>10.0f}{r['maxrss_mib']:>10.0f}{read:>8}{ratio:>15}")
    print("\nspeed-up = ours examples/s divided by that converter's examples/s (higher is better for ours).")
    for label, res in rows:
        if res["ours"]["n_examples"] > 50_000:
            total = res["ours"]["seconds"] + res["ours"]["read_s"]
            print(f"{label}: ours converts {res['ours']['n_examples']} questions in {res['ours']['seconds']:.1f} s "
                  f"(read + convert {total:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
