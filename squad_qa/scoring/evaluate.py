"""Score a predictions file against a SQuAD file: ``scripts/evaluate.py`` / ``squad-qa evaluate``.

The file side of the official evaluation scripts: reading ``.json`` / ``.json.gz`` files with
errors that name the file, checking the fields scoring reads, choosing v1.1 or v2.0 rules from the
data (or checking a requested version against it), and the command line with the official
scripts' arguments and output. The scores themselves come from squad_qa.scoring.metrics.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from squad_qa.data.squad import load_squad_json
from squad_qa.scoring.metrics import (
    VERSIONS,
    EvaluationInputError,
    check_coverage,
    is_v2_dataset,
    iter_qas,
    score_v1,
    score_v2,
    show_ids,
    validate_predictions,
)

logger = logging.getLogger(__name__)


def read_json(path: str | Path) -> Any:
    """Load a .json or .json.gz file; errors name the file (and line/column for bad JSON)."""
    path = Path(path)
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise EvaluationInputError(f"{path}: no such file") from None
    except json.JSONDecodeError as e:
        raise EvaluationInputError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise EvaluationInputError(f"{path}: JSON nested too deeply") from None
    except (OSError, UnicodeDecodeError) as e:  # e.g. gzip.BadGzipFile, a directory
        raise EvaluationInputError(f"{path}: cannot read ({e})") from None


def _load_dataset(path: str | Path) -> dict:
    """The SQuAD JSON via the shared loader, plus the fields scoring reads (the loader checks only the top level)."""
    try:
        dataset_json = load_squad_json(path)
    except (ValueError, FileNotFoundError) as e:  # data.SquadFormatError / missing file: message names the file
        raise EvaluationInputError(str(e)) from e
    for i, article in enumerate(dataset_json["data"]):
        where = f"{path}: article {i}"
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise EvaluationInputError(f"{where}: expected an object with a 'paragraphs' list")
        for j, paragraph in enumerate(paragraphs):
            qas = paragraph.get("qas") if isinstance(paragraph, dict) else None
            if not isinstance(qas, list):
                raise EvaluationInputError(f"{where}, paragraph {j}: expected an object with a 'qas' list")
            for k, qa in enumerate(qas):
                qid = qa.get("id") if isinstance(qa, dict) else None
                answers = qa.get("answers") if isinstance(qa, dict) else None
                if not isinstance(qid, str) or not isinstance(answers, list):
                    raise EvaluationInputError(
                        f"{where}, paragraph {j}, question {k}: expected a string 'id' and an 'answers' list"
                    )
                if not all(isinstance(a, dict) and isinstance(a.get("text"), str) for a in answers):
                    raise EvaluationInputError(f"{where}, question {qid!r}: every answer needs a string 'text'")
    return dataset_json


def _resolve_version(dataset_json: dict, version: str | None, na_prob_file, messages: list[str]) -> str:
    """Pick v1.1 or v2.0 scoring and report any disagreement between the request and the data."""
    dataset = dataset_json["data"]
    data_is_v2 = is_v2_dataset(dataset)
    if version is None:
        version = "2.0" if data_is_v2 else "1.1"
        if na_prob_file is not None and version == "1.1":
            raise EvaluationInputError(
                "--na-prob-file is a SQuAD 2.0 option but the dataset looks like v1.1 (no 'is_impossible' key); "
                "pass --version 2.0 to score it with the v2.0 rules anyway"
            )
    elif version not in VERSIONS:
        raise EvaluationInputError(f"unknown version {version!r}; expected one of {', '.join(VERSIONS)}")
    elif version == "1.1" and data_is_v2:
        if na_prob_file is not None:
            raise EvaluationInputError("--na-prob-file cannot be used with --version 1.1")
        impossible = [qa["id"] for qa in iter_qas(dataset) if not qa["answers"]]
        if impossible:
            raise EvaluationInputError(
                f"--version 1.1 requested but the dataset is SQuAD 2.0 with {len(impossible)} unanswerable "
                f"question(s) (e.g. {show_ids(impossible)}); v1.1 scoring needs a gold answer for every question"
            )
        messages.append("--version 1.1 requested but the dataset has 'is_impossible' keys (SQuAD 2.0)")
    elif version == "2.0" and not data_is_v2:
        messages.append(
            "--version 2.0 requested but the dataset looks like SQuAD v1.1 (no 'is_impossible' key); "
            "scoring with the v2.0 rules"
        )
    file_version = str(dataset_json.get("version", "")).lstrip("v")
    if file_version and file_version != version:
        messages.append(f"scoring as v{version} but the dataset file says version {dataset_json['version']!r}")
    return version


def _evaluate_paths(data_file, pred_file, version=None, na_prob_file=None, na_prob_thresh=1.0):
    """Shared by evaluate_file (logs the messages) and main (prints them to stderr)."""
    messages: list[str] = []
    dataset_json = _load_dataset(data_file)
    version = _resolve_version(dataset_json, version, na_prob_file, messages)
    dataset = dataset_json["data"]
    predictions = validate_predictions(read_json(pred_file), str(pred_file))
    if version == "1.1":
        messages += check_coverage(dataset, predictions).messages()
        empty = sum(1 for qid, text in predictions.items() if text == "")
        if empty:
            messages.append(
                f"{empty} prediction(s) are empty strings (SQuAD 2.0 'no answer'?); the v1.1 rules have no "
                f"'no answer' and score them as ordinary (wrong) answers"
            )
        return score_v1(dataset, predictions), messages
    na_probs = read_json(na_prob_file) if na_prob_file is not None else None
    result, more = score_v2(dataset, predictions, na_probs, na_prob_thresh, str(na_prob_file))
    return result, messages + more


def evaluate_file(
    data_file: str | Path,
    pred_file: str | Path,
    version: str | None = None,
    na_prob_file: str | Path | None = None,
    na_prob_thresh: float = 1.0,
) -> dict:
    """Score a predictions.json against a SQuAD .json/.json.gz; the version is detected unless given."""
    result, messages = _evaluate_paths(data_file, pred_file, version, na_prob_file, na_prob_thresh)
    for message in messages:
        logger.warning(message)
    return result


# --------------------------------------------------------------------------- #
# Command line (scripts/evaluate.py, squad-qa evaluate)
# --------------------------------------------------------------------------- #


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Official SQuAD v1.1 / v2.0 evaluation (same numbers and output as evaluate-v1.1.py / "
        "evaluate-v2.0.py); datasets may be .json or .json.gz."
    )
    parser.add_argument("data_file", metavar="data.json", help="SQuAD dataset (.json or .json.gz).")
    parser.add_argument("pred_file", metavar="pred.json", help="Predictions: JSON object question id -> answer text.")
    parser.add_argument(
        "--version",
        choices=VERSIONS,
        default=None,
        help="Scoring rules; default: 2.0 if any question has an 'is_impossible' key, else 1.1.",
    )
    parser.add_argument("--out-file", "-o", metavar="eval.json", help="Write the metrics here (default: stdout).")
    parser.add_argument(
        "--na-prob-file", "-n", metavar="na_prob.json", help="v2.0: model estimates of the no-answer probability."
    )
    parser.add_argument(
        "--na-prob-thresh",
        "-t",
        type=float,
        default=1.0,
        help='v2.0: predict "" if the no-answer probability exceeds this (default = 1.0).',
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result, messages = _evaluate_paths(
            args.data_file, args.pred_file, args.version, args.na_prob_file, args.na_prob_thresh
        )
    except EvaluationInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for message in messages:
        print(f"warning: {message}", file=sys.stderr)
    if args.out_file:
        with open(args.out_file, "w", encoding="utf-8") as f:
            json.dump(result, f)
    elif "exact_match" in result:
        print(json.dumps(result))  # evaluate-v1.1.py prints one line
    else:
        print(json.dumps(result, indent=2))  # evaluate-v2.0.py prints indented
    return 0
