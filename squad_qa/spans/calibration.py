"""A score that is a probability: the chance that an answer is exactly right, from its span scores.

The n-best softmax (run_squad's "probability") says how a span compares with the other candidates of
its question, not how often such an answer is right: on dev-v1.1 the shipped model's top answers
average 0.62 while 77 % are exact matches, and answers scored 0.5-0.6 are right 80 % of the time.
A calibrator maps three numbers of each answer to the probability that it is an exact match:

    log_probability  log of its n-best softmax probability
    logit            its start + end logit (the raw score, comparable across questions)
    margin           its logit minus the best other candidate's (> 0 for the top answer)

with logistic regression (Platt scaling on these features), fitted by Newton's method on
(features, exact match) pairs of held-out questions. It is stored in the model folder as
``calibrator.json``, listed in the folder's SHA256SUMS, and applied by the reader when present.

    ece(p, correct)             expected calibration error over equal-width bins
    Calibrator.fit(X, y)        fit; Calibrator.predict(X) -> probabilities
    candidate_features(nbest)   the features of every candidate of one n-best list
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CALIBRATOR_FILE = "calibrator.json"
FEATURES = ("log_probability", "logit", "margin")
MARGIN_ALONE = 10.0  # the margin of a candidate with no other candidate beside it


class CalibratorError(ValueError):
    """calibrator.json cannot be used: one line saying why."""


def candidate_features(probabilities: Sequence[float], logits: Sequence[float]) -> np.ndarray:
    """``[n, 3]`` features of the n candidates of one question (spans only, any order)."""
    p = np.asarray(probabilities, dtype=np.float64)
    s = np.asarray(logits, dtype=np.float64)
    if len(s) == 0:
        return np.zeros((0, len(FEATURES)))
    order = np.sort(s)[::-1]
    best_other = np.where(s >= order[0], order[1] if len(s) > 1 else s - MARGIN_ALONE, order[0])
    return np.stack([np.log(np.clip(p, 1e-12, 1.0)), s, s - best_other], axis=1)


def ece(probabilities: Sequence[float], correct: Sequence[float], bins: int = 10) -> float:
    """Expected calibration error: the mean |accuracy - confidence| over equal-width bins of the
    predicted probability, weighted by how many answers fall in each."""
    p, c = np.asarray(probabilities, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() * abs(c[m].mean() - p[m].mean())
    return float(total / max(1, len(p)))


@dataclass(frozen=True)
class Calibrator:
    weights: tuple[float, ...]
    bias: float
    fitted_on: str = ""  # what it was fitted on, for the model card and /v1/model

    def predict(self, features: np.ndarray) -> np.ndarray:
        z = np.asarray(features, dtype=np.float64) @ np.asarray(self.weights) + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))

    @classmethod
    def fit(cls, features: np.ndarray, correct: np.ndarray, l2: float = 1e-3, fitted_on: str = "") -> Calibrator:
        """Logistic regression by Newton's method (a 4-parameter convex problem: a dozen steps), with a
        small L2 penalty on the weights so that separable data still has an answer."""
        X = np.hstack([np.asarray(features, dtype=np.float64), np.ones((len(features), 1))])
        y = np.asarray(correct, dtype=np.float64)
        w = np.zeros(X.shape[1])
        penalty = np.full(X.shape[1], l2)
        penalty[-1] = 0.0  # not on the bias
        for _ in range(50):
            p = 1.0 / (1.0 + np.exp(-np.clip(X @ w, -50, 50)))
            grad = X.T @ (p - y) + penalty * w * len(y)
            hess = (X * (p * (1 - p))[:, None]).T @ X + np.diag(penalty) * len(y)
            step = np.linalg.solve(hess, grad)
            w -= step
            if np.abs(step).max() < 1e-9:
                break
        return cls(tuple(float(v) for v in w[:-1]), float(w[-1]), fitted_on)

    def save(self, folder: Path) -> Path:
        path = Path(folder) / CALIBRATOR_FILE
        path.write_text(json.dumps({"features": list(FEATURES), "weights": list(self.weights), "bias": self.bias,
                                    "fitted_on": self.fitted_on}, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: Path) -> Calibrator | None:
        """The folder's calibrator, None without one; CalibratorError when it is unreadable or of other
        features. Its checksum is checked with the folder's (model_dir.check_qa_checkpoint)."""
        path = Path(folder) / CALIBRATOR_FILE
        if not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            weights, bias = tuple(float(v) for v in raw["weights"]), float(raw["bias"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CalibratorError(f"{path}: not a calibrator ({type(e).__name__}: {e})") from None
        if raw.get("features") != list(FEATURES) or len(weights) != len(FEATURES) \
                or not all(math.isfinite(v) for v in (*weights, bias)):
            raise CalibratorError(f"{path}: features {raw.get('features')} with {len(weights)} weights; this "
                                  f"version reads {list(FEATURES)}")
        return cls(weights, bias, str(raw.get("fitted_on", "")))


def top_scores(nbest: dict[str, list], calibrator: Calibrator) -> dict[str, float]:
    """The calibrated score of each question's best span (its probability of being right), from the
    post-processor's n-best lists; 0.0 for a question without a span."""
    out = {}
    for qid, entries in nbest.items():
        spans = [e for e in entries if e.text]
        if not spans:
            out[qid] = 0.0
            continue
        _, features = best_candidate([e.probability for e in spans], [e.start_logit + e.end_logit for e in spans])
        out[qid] = float(calibrator.predict(features[None, :])[0])
    return out


def best_candidate(probabilities: Sequence[float], logits: Sequence[float]) -> tuple[int, np.ndarray]:
    """The index of the best span of one n-best list (highest logit) and its features."""
    features = candidate_features(probabilities, logits)
    top = int(np.argmax(features[:, 1]))
    return top, features[top]
