"""`squad-qa calibrate`: fit a model's calibrator on held-out questions and report its ECE, cross-fitted.

    squad-qa calibrate --predict_file data/dev-v1.1.json --nbest runs/pred/nbest_predictions.json \
        [--model models/squad-minilm-l6 --save] [--plot docs/reliability-dev-v1.1.png]

The articles of the data file are split in two halves (even and odd positions). A calibrator fitted
on one half is scored on the other, both ways, so no reported figure comes from a question the
calibrator saw: ECE of the raw n-best probability against the calibrated score, per half and pooled.
With ``--save``, the calibrator fitted on the even-position articles goes into the model folder
(calibrator.json, added to its SHA256SUMS): the odd half stays held out for it. Labels are the
official exact match of the top answer against the gold answers; questions without gold answers
(SQuAD 2.0's unanswerable ones) count as wrong whatever span is given.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from squad_qa.files.checksums import CHECKSUMS_FILE, read_checksums, write_checksums
from squad_qa.scoring.evaluate import EvaluationInputError, read_json
from squad_qa.scoring.metrics import exact_match_score
from squad_qa.spans.calibration import CALIBRATOR_FILE, Calibrator, best_candidate, ece

logger = logging.getLogger(__name__)


def top_answers(data: dict, nbest: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(article half, top answer's features, exact match, raw probability) per question with an n-best list."""
    half, feats, correct, raw = [], [], [], []
    missing = 0
    for a, article in enumerate(data["data"]):
        for p in article["paragraphs"]:
            for q in p["qas"]:
                spans = [c for c in nbest.get(q["id"], []) if c.get("text")]
                if not spans:
                    missing += 1
                    continue
                top, features = best_candidate([c["probability"] for c in spans],
                                               [c["start_logit"] + c["end_logit"] for c in spans])
                gold = [g["text"] for g in q.get("answers", [])]
                half.append(a % 2)
                feats.append(features)
                correct.append(max((exact_match_score(spans[top]["text"], g) for g in gold), default=0.0))
                raw.append(spans[top]["probability"])
    if missing:
        logger.warning("%d questions have no span in the n-best file: left out", missing)
    return np.array(half), np.array(feats), np.array(correct), np.array(raw)


def reliability_plot(path: Path, curves: dict[str, tuple[np.ndarray, np.ndarray]], bins: int, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    for label, (p, c) in curves.items():
        idx = np.minimum((p * bins).astype(int), bins - 1)
        xs = [p[idx == b].mean() for b in range(bins) if (idx == b).sum() >= 10]
        ys = [c[idx == b].mean() for b in range(bins) if (idx == b).sum() >= 10]
        ax.plot(xs, ys, marker="o", label=f"{label} (ECE {ece(p, c, bins):.3f})")
    ax.set_xlabel("score")
    ax.set_ylabel("exact-match rate")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="squad-qa calibrate", description=__doc__.split("\n\n")[0])
    p.add_argument("--predict_file", required=True, help="the SQuAD file the n-best lists answer")
    p.add_argument("--nbest", required=True, help="nbest_predictions.json written by squad-qa predict")
    p.add_argument("--model", type=Path, help="the model folder the calibrator belongs to (with --save)")
    p.add_argument("--save", action="store_true", help="write the even-half calibrator into --model")
    p.add_argument("--plot", type=Path, help="reliability diagram (PNG; needs matplotlib)")
    p.add_argument("--bins", type=int, default=10)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.save and args.model is None:
        print("error: --save needs --model", file=sys.stderr)
        return 2
    try:
        data, nbest = read_json(args.predict_file), read_json(args.nbest)
        half, X, y, raw = top_answers(data, nbest)
    except (EvaluationInputError, KeyError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if len(y) < 20 or len(set(half)) < 2 or len(set(y)) < 2:
        print(f"error: {args.nbest}: {len(y)} answered questions: too few, or all right or all wrong, to fit on",
              file=sys.stderr)
        return 2
    calibrated = np.zeros(len(y))
    fitted = {}
    for h, name in ((0, "even"), (1, "odd")):
        fitted[h] = Calibrator.fit(X[half == h], y[half == h],
                                   fitted_on=f"{Path(args.predict_file).name}, {name}-position articles, "
                                             f"{int((half == h).sum())} questions")
        calibrated[half != h] = fitted[h].predict(X[half != h])
    print(f"{len(y)} questions, exact match {100 * y.mean():.1f} %; ECE over {args.bins} bins, each half scored by "
          "the calibrator fitted on the other")
    print(f"{'questions':<22}{'n':>7}{'mean raw':>10}{'ECE raw':>9}{'mean calibrated':>17}{'ECE calibrated':>16}")
    for label, m in (("odd-position articles", half == 1), ("even-position articles", half == 0),
                     ("all (cross-fitted)", np.ones(len(y), bool))):
        print(f"{label:<22}{int(m.sum()):>7}{raw[m].mean():>10.3f}{ece(raw[m], y[m], args.bins):>9.3f}"
              f"{calibrated[m].mean():>17.3f}{ece(calibrated[m], y[m], args.bins):>16.3f}")
    if args.plot:
        reliability_plot(args.plot, {"n-best probability": (raw, y), "calibrated (cross-fitted)": (calibrated, y)},
                         args.bins, f"{Path(args.predict_file).name}: top answers, {len(y)} questions")
        print(f"wrote {args.plot}")
    if args.save:
        folder = args.model
        fitted[0].save(folder)
        names = list(read_checksums(folder)) if (folder / CHECKSUMS_FILE).is_file() else []
        write_checksums(folder, [*[n for n in names if n != CALIBRATOR_FILE], CALIBRATOR_FILE])
        print(f"wrote {folder / CALIBRATOR_FILE} ({fitted[0].fitted_on}) and its line in {folder / CHECKSUMS_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
