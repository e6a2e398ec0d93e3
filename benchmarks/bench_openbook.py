"""Open book: each dev-v1.1 question over its own paragraph and 9 others of the same article.

For each question (--num_questions spread over all articles, or all), the reader gets its own
paragraph plus up to 9 other paragraphs of the same article, shuffled (seeded), as one request over
several passages (`QAReader.answer(question, passages)`), and the same question over its own
paragraph alone. Reported: top-1 EM / F1 against the gold answers (the official normalisation) in
both settings, and how often the top answer of the 10 comes from the question's own paragraph.

    python benchmarks/bench_openbook.py --num_questions 1000
    python benchmarks/bench_openbook.py --model runs/other --backend torch --num_questions 0   # all 10,570
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import time
from pathlib import Path

from tqdm import tqdm

from squad_qa.inference.reader import QAReader
from squad_qa.scoring.metrics import exact_match_score, f1_score

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DEV = REPO / ".." / "shared" / "squad" / "dev-v1.1.json.gz"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=None, help="default: the shipped model")
    p.add_argument("--predict_file", type=Path, default=DEFAULT_DEV)
    p.add_argument("--num_questions", type=int, default=1000, help="spread over all articles; 0: all")
    p.add_argument("--others", type=int, default=9, help="other paragraphs of the same article per question")
    p.add_argument("--backend", default="onnx", choices=["torch", "onnx"])
    p.add_argument("--quantize", default="int8", choices=["int8", "none"])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    with gzip.open(args.predict_file, "rt", encoding="utf-8") as f:
        articles = json.load(f)["data"]
    questions = [(a, i, q) for a, art in enumerate(articles) for i, par in enumerate(art["paragraphs"])
                 for q in par["qas"]]
    if args.num_questions:
        questions = questions[:: max(1, len(questions) // args.num_questions)][: args.num_questions]
    reader = QAReader.from_pretrained(args.model, backend=args.backend,
                                      quantize=None if args.quantize == "none" else args.quantize)
    rng = random.Random(args.seed)
    totals = {"em1": 0.0, "f11": 0.0, "em10": 0.0, "f110": 0.0, "right_paragraph": 0}
    t0 = time.perf_counter()
    for a, i, q in tqdm(questions, desc="questions"):
        paragraphs = articles[a]["paragraphs"]
        others = [j for j in range(len(paragraphs)) if j != i]
        chosen = [i, *rng.sample(others, min(args.others, len(others)))]
        rng.shuffle(chosen)
        gold = [g["text"] for g in q["answers"]]
        alone = reader.answer(q["question"], paragraphs[i]["context"])[0].text
        best = reader.answer(q["question"], [(str(j), paragraphs[j]["context"]) for j in chosen])[0]
        totals["em1"] += max(exact_match_score(alone, g) for g in gold)
        totals["f11"] += max(f1_score(alone, g) for g in gold)
        totals["em10"] += max(exact_match_score(best.text, g) for g in gold)
        totals["f110"] += max(f1_score(best.text, g) for g in gold)
        totals["right_paragraph"] += best.passage == str(i)
    n = len(questions)
    info = reader.describe()
    print(f"{n} dev questions; model {info['name']}, backend {info['backend']}"
          f"{', int8' if info['quantized'] else ''}; {time.perf_counter() - t0:.0f} s")
    print("| passages | EM | F1 | top answer from its own paragraph |")
    print("| --- | --- | --- | --- |")
    print(f"| 1 (its own) | {100 * totals['em1'] / n:.1f} | {100 * totals['f11'] / n:.1f} | - |")
    print(f"| {args.others + 1} (its own + {args.others} of the same article, shuffled) | "
          f"{100 * totals['em10'] / n:.1f} | {100 * totals['f110'] / n:.1f} | "
          f"{100 * totals['right_paragraph'] / n:.1f} % |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
