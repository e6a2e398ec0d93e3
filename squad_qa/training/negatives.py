"""Unanswerable questions made from answerable ones, for training a model to say "no answer".

SQuAD 2.0's training file is not available here, so its unanswerable questions are made from
train-v1.1's answerable ones, in two ways (``kind``):

    sentence   the question over its own paragraph with the sentence(s) holding the answer removed:
               plausible, on topic, and without the answer
    paragraph  the question over another paragraph of the same article that does not contain the
               answer text

Either way the answer text (after the official normalisation) must not occur anywhere in the new
passage: an example where it still would (the answer repeated in another sentence, say) is skipped and
counted, never written. The output is a SQuAD 2.0 file: the original questions (answerable) plus the
new ones with ``is_impossible: true``, ids suffixed ``-neg-sentence`` / ``-neg-paragraph``.

    python -m squad_qa.training.negatives data/train-v1.1.json runs/neg/train-neg.json --kind both --share 0.33
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import sys
from collections import Counter
from pathlib import Path

from squad_qa.data.squad import load_squad_json
from squad_qa.scoring.metrics import normalize_answer

logger = logging.getLogger(__name__)

KINDS = ("sentence", "paragraph", "both")
# A sentence ends at . ! or ? (optionally followed by a closing quote or bracket) before whitespace.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")


def contains_answer(passage: str, answer: str) -> bool:
    """Does the answer's text occur in the passage's, as whole words, after the official SQuAD
    normalisation (lower case, no punctuation or articles)? Punctuation is spaced out first, so that
    "Broncos," holds "Broncos" and "24 10" holds "24-10"."""
    def words(text: str) -> str:
        return normalize_answer(re.sub(r"[^\w\s]", " ", text))

    a = words(answer)
    return bool(a) and f" {a} " in f" {words(passage)} "


def sentence_spans(context: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the context's sentences, whitespace between them left out."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(context):
        spans.append((start, m.start() + len(m.group(0).rstrip())))
        start = m.end()
    if start < len(context):
        spans.append((start, len(context)))
    return [(s, e) for s, e in spans if context[s:e].strip()]


def without_answer_sentence(context: str, answer_start: int, answer_text: str) -> str | None:
    """The context with every sentence that overlaps the answer's span removed, or None when the answer
    text would still be in what is left (or nothing would be left)."""
    end = answer_start + len(answer_text)
    if context[answer_start:end] != answer_text:
        return None
    kept = [context[s:e] for s, e in sentence_spans(context) if e <= answer_start or s >= end]
    rest = " ".join(kept)
    if not rest.strip() or contains_answer(rest, answer_text):
        return None
    return rest


def make_negatives(dataset: dict, kind: str = "both", share: float = 0.33, seed: int = 0) -> tuple[dict, Counter]:
    """A SQuAD 2.0 dataset: every question of ``dataset`` as it is, plus an unanswerable twin for a
    ``share`` of them (chosen at random, seeded) made the ``kind`` way ("both": each twin takes one
    way at random, falling back to the other). Returns it with counts of what was made and skipped."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    rng = random.Random(seed)
    counts: Counter = Counter()
    out = {"version": "v2.0", "data": []}
    for article in dataset["data"]:
        paragraphs = article["paragraphs"]
        new_pars = [{"context": p["context"], "qas": [dict(q, is_impossible=False) for q in p["qas"]]}
                    for p in paragraphs]
        for pi, p in enumerate(paragraphs):
            for q in p["qas"]:
                if rng.random() >= share:
                    continue
                counts["chosen"] += 1
                answers = q.get("answers") or []
                if not answers:
                    counts["skipped: no answer"] += 1
                    continue
                ways = ["sentence", "paragraph"] if kind == "both" else [kind]
                if kind == "both":
                    rng.shuffle(ways)
                made = next((way for way in ways if _add_twin(way, q, answers, pi, paragraphs, new_pars, rng)), None)
                counts[f"made: {made}" if made else "skipped: the answer text would stay in the passage"] += 1
        out["data"].append({"title": article.get("title", ""), "paragraphs": new_pars})
    return out, counts


def _add_twin(way: str, q: dict, answers: list[dict], pi: int, paragraphs: list[dict], new_pars: list[dict],
              rng: random.Random) -> bool:
    """Add ``q``'s unanswerable twin made the ``way`` way to ``new_pars``; False when it cannot be made."""
    if way == "sentence":
        rest = without_answer_sentence(paragraphs[pi]["context"], answers[0]["answer_start"], answers[0]["text"])
        if rest is None or any(contains_answer(rest, a["text"]) for a in answers):
            return False
        new_pars.append({"context": rest, "qas": [_impossible(q, "sentence")]})
        return True
    others = [j for j in range(len(paragraphs)) if j != pi and not any(
        contains_answer(paragraphs[j]["context"], a["text"]) for a in answers)]
    if not others:
        return False
    new_pars[rng.choice(others)]["qas"].append(_impossible(q, "paragraph"))
    return True


def _impossible(q: dict, way: str) -> dict:
    return {"id": f"{q['id']}-neg-{way}", "question": q["question"], "answers": [], "is_impossible": True,
            "plausible_answers": q.get("answers", [])[:1]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m squad_qa.training.negatives", description=__doc__.split("\n\n")[0])
    p.add_argument("train_file")
    p.add_argument("out_file")
    p.add_argument("--kind", choices=KINDS, default="both")
    p.add_argument("--share", type=float, default=0.33, help="the share of questions that get an unanswerable twin")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not 0 < args.share <= 1:
        print(f"error: --share must be in (0, 1], got {args.share}", file=sys.stderr)
        return 2
    try:
        dataset = load_squad_json(args.train_file)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out, counts = make_negatives(dataset, args.kind, args.share, args.seed)
    Path(args.out_file).write_text(json.dumps(out))
    for what, n in sorted(counts.items()):
        print(f"{what}: {n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
