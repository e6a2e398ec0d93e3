"""squad_qa.scoring.metrics against the official evaluate-v1.1.py / evaluate-v2.0.py.

The EXPECTED_* numbers below were produced by running the unmodified official
scripts (outside this repo) on prediction files made by the generator
functions in this module, on the real dev-v1.1 / dev-v2.0 files; see
``make_case``. Every generator is deterministic (``random.Random(seed)``), so the
test regenerates the same predictions and compares every field to 1e-9.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from squad_qa.scoring import metrics
from squad_qa.scoring.evaluate import evaluate_file
from squad_qa.scoring.evaluate import main as evaluate_main

REPO = Path(__file__).resolve().parents[1]
from conftest import SQUAD_DIR  # noqa: E402
DEV_V1 = SQUAD_DIR / "dev-v1.1.json.gz"
DEV_V2 = SQUAD_DIR / "dev-v2.0.json.gz"

needs_dev = pytest.mark.usefixtures("squad_dir")  # fails, with the path, if the files are missing


# --------------------------------------------------------------------------- #
# Deterministic prediction generators (also imported by the script that ran the official evaluators)
# --------------------------------------------------------------------------- #


def iter_qas(dataset):
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                yield paragraph["context"], qa


def gen_gold(dataset, seed=0):
    """First gold answer; "" for unanswerable questions."""
    return {qa["id"]: (qa["answers"][0]["text"] if qa["answers"] else "") for _, qa in iter_qas(dataset)}


def gen_empty(dataset, seed=0):
    return {qa["id"]: "" for _, qa in iter_qas(dataset)}


def _noisy(text, rng):
    """Changes normalisation must undo (case, ASCII punctuation, articles, spacing) or partly undo."""
    ops = [
        str.upper,
        str.title,
        lambda t: "The " + t,
        lambda t: "a " + t + ".",
        lambda t: '"' + t + '"!',
        lambda t: "  ".join(t.split()),
        lambda t: t.replace(" ", ", ", 1),
        lambda t: t.replace(" ", "-"),  # "a-b" -> "ab": hyphenation changes the tokens
        lambda t: t + " an",
        lambda t: "(" + t.lower() + ")",
    ]
    for op in rng.sample(ops, rng.randint(1, 3)):
        text = op(text)
    return text


def gen_noisy(dataset, seed=1):
    rng = random.Random(seed)
    out = {}
    for _, qa in iter_qas(dataset):
        if qa["answers"]:
            out[qa["id"]] = _noisy(rng.choice(qa["answers"])["text"], rng)
        else:
            # Unanswerable: strings that normalise to "" (count as "no answer" in EM, F1 v2) but are truthy.
            out[qa["id"]] = rng.choice(["", " ", ".", "the", "A.", "an ,"])
    return out


def gen_truncated(dataset, seed=2):
    rng = random.Random(seed)
    out = {}
    for context, qa in iter_qas(dataset):
        source = qa["answers"] or qa.get("plausible_answers") or []
        words = (rng.choice(source)["text"] if source else "").split()
        k = rng.randint(1, 3)
        words = words[k:] if rng.random() < 0.5 else words[:-k]
        out[qa["id"]] = " ".join(words)
    return out


def gen_random_spans(dataset, seed=3):
    rng = random.Random(seed)
    out = {}
    for context, qa in iter_qas(dataset):
        words = context.split()
        start = rng.randrange(len(words))
        out[qa["id"]] = " ".join(words[start : start + rng.randint(1, 8)])
    return out


def _unicode_noise(text, rng):
    ops = [
        lambda t: t.replace(" ", "\u00a0"),  # no-break space: str.split() still splits on it
        lambda t: t.replace(" ", "\u3000"),  # ideographic space
        lambda t: "\u201c" + t + "\u201d",  # curly quotes are NOT in string.punctuation: they stay
        lambda t: t + " \u2014 Ä",
        lambda t: unicodedata.normalize("NFD", t),  # é -> e + combining accent
        lambda t: t.upper() + " STRASSE ß",
        lambda t: "İ" + t,  # lower() gives two code points
        lambda t: "東京 " + t,
        lambda t: t.replace("e", "é"),
    ]
    for op in rng.sample(ops, rng.randint(1, 2)):
        text = op(text)
    return text


def gen_unicode(dataset, seed=4):
    rng = random.Random(seed)
    out = {}
    for _, qa in iter_qas(dataset):
        gold = rng.choice(qa["answers"])["text"] if qa["answers"] else rng.choice(["", "\u00a0", "\u201c\u201d"])
        out[qa["id"]] = _unicode_noise(gold, rng) if gold.strip() else gold
    return out


GENERATORS = {
    "gold": gen_gold,
    "empty": gen_empty,
    "noisy": gen_noisy,
    "truncated": gen_truncated,
    "random_spans": gen_random_spans,
    "unicode": gen_unicode,
}


def gen_mixed(dataset, seed=5, drop_fraction=0.0, n_unknown=0):
    """Each question answered by a randomly chosen generator above; optionally drop ids / add unknown ones."""
    rng = random.Random(seed)
    per_generator = {name: fn(dataset) for name, fn in GENERATORS.items()}
    out = {}
    for _, qa in iter_qas(dataset):
        if rng.random() < drop_fraction:
            continue
        out[qa["id"]] = per_generator[rng.choice(sorted(per_generator))][qa["id"]]
    for i in range(n_unknown):
        out[f"not-a-squad-id-{i}"] = "whatever"
    return out


def gen_na_probs(dataset, predictions, seed=6, n_unknown=0):
    """No-answer probabilities loosely correlated with the truth, rounded to 2 decimals so ties occur."""
    rng = random.Random(seed)
    out = {}
    for _, qa in iter_qas(dataset):
        if qa["id"] in predictions:
            mean = 0.3 if qa["answers"] else 0.7
            out[qa["id"]] = round(min(1.0, max(0.0, rng.gauss(mean, 0.25))), 2)
    for i in range(n_unknown):
        out[f"not-a-squad-id-na-{i}"] = 0.5
    return out


# name -> (dataset version, how to build predictions, na_probs?, na_prob_thresh)
CASES = {
    "v1_gold": ("1.1", "gold", False, None),
    "v1_empty": ("1.1", "empty", False, None),
    "v1_noisy": ("1.1", "noisy", False, None),
    "v1_truncated": ("1.1", "truncated", False, None),
    "v1_random_spans": ("1.1", "random_spans", False, None),
    "v1_unicode": ("1.1", "unicode", False, None),
    # 5% of the questions unanswered (official v1.1 counts them as 0) and 3 ids the dataset lacks.
    "v1_mixed_missing": ("1.1", "mixed_missing", False, None),
    "v2_gold": ("2.0", "gold", False, None),
    "v2_empty": ("2.0", "empty", False, None),
    "v2_noisy": ("2.0", "noisy", False, None),
    "v2_truncated": ("2.0", "truncated", False, None),
    "v2_random_spans": ("2.0", "random_spans", False, None),
    "v2_unicode": ("2.0", "unicode", False, None),
    "v2_mixed_na": ("2.0", "mixed", True, None),
    "v2_mixed_na_thresh": ("2.0", "mixed", True, 0.5),
    "v2_random_spans_na": ("2.0", "random_spans", True, None),
}


def make_case(name, dataset):
    """(predictions, na_probs or None, na_prob_thresh or None) of a CASES entry."""
    _, kind, with_na, thresh = CASES[name]
    if kind == "mixed_missing":
        preds = gen_mixed(dataset, drop_fraction=0.05, n_unknown=3)
    elif kind == "mixed":
        preds = gen_mixed(dataset, n_unknown=2)  # the official v2.0 script needs every id predicted
    else:
        preds = GENERATORS[kind](dataset)
    na_probs = gen_na_probs(dataset, preds, n_unknown=2) if with_na else None
    return preds, na_probs, thresh


# Official outputs, pasted from the official scripts' stdout (json.loads of it).
EXPECTED = {
    'v1_gold': {
        'exact_match': 100.0,
        'f1': 100.0,
    },
    'v1_empty': {
        'exact_match': 0.02838221381267739,
        'f1': 0.0,
    },
    'v1_noisy': {
        'exact_match': 85.55345316934721,
        'f1': 85.55345316934721,
    },
    'v1_truncated': {
        'exact_match': 4.02081362346263,
        'f1': 30.83910999164835,
    },
    'v1_random_spans': {
        'exact_match': 0.24597918637653737,
        'f1': 6.153073019244726,
    },
    'v1_unicode': {
        'exact_match': 23.964049195837276,
        'f1': 60.3536654657378,
    },
    'v1_mixed_missing': {
        'exact_match': 34.21948912015137,
        'f1': 45.075956613162774,
    },
    'v2_gold': {
        'exact': 100.0,
        'f1': 100.0,
        'total': 11873,
        'HasAns_exact': 100.0,
        'HasAns_f1': 100.0,
        'HasAns_total': 5928,
        'NoAns_exact': 100.0,
        'NoAns_f1': 100.0,
        'NoAns_total': 5945,
    },
    'v2_empty': {
        'exact': 50.07159100480081,
        'f1': 50.07159100480081,
        'total': 11873,
        'HasAns_exact': 0.0,
        'HasAns_f1': 0.0,
        'HasAns_total': 5928,
        'NoAns_exact': 100.0,
        'NoAns_f1': 100.0,
        'NoAns_total': 5945,
    },
    'v2_noisy': {
        'exact': 92.84089951991915,
        'f1': 92.84089951991915,
        'total': 11873,
        'HasAns_exact': 85.6612685560054,
        'HasAns_f1': 85.6612685560054,
        'HasAns_total': 5928,
        'NoAns_exact': 100.0,
        'NoAns_f1': 100.0,
        'NoAns_total': 5945,
    },
    'v2_truncated': {
        'exact': 28.855386170302367,
        'f1': 43.03221515840648,
        'total': 11873,
        'HasAns_exact': 3.694331983805668,
        'HasAns_f1': 32.08864550873137,
        'HasAns_total': 5928,
        'NoAns_exact': 53.94449116904962,
        'NoAns_f1': 53.94449116904962,
        'NoAns_total': 5945,
    },
    'v2_random_spans': {
        'exact': 0.8422471153036301,
        'f1': 3.7196468274930226,
        'total': 11873,
        'HasAns_exact': 0.32051282051282054,
        'HasAns_f1': 6.083563897237637,
        'HasAns_total': 5928,
        'NoAns_exact': 1.362489486963835,
        'NoAns_f1': 1.362489486963835,
        'NoAns_total': 5945,
    },
    'v2_unicode': {
        'exact': 45.34658468794744,
        'f1': 63.75757916785674,
        'total': 11873,
        'HasAns_exact': 23.616734143049932,
        'HasAns_f1': 60.49152116395901,
        'HasAns_total': 5928,
        'NoAns_exact': 67.0142977291842,
        'NoAns_f1': 67.0142977291842,
        'NoAns_total': 5945,
    },
    'v2_mixed_na': {
        'exact': 53.583761475616946,
        'f1': 59.623730414586355,
        'total': 11873,
        'HasAns_exact': 35.77935222672065,
        'HasAns_f1': 47.876611203167926,
        'HasAns_total': 5928,
        'NoAns_exact': 71.33725820016821,
        'NoAns_f1': 71.33725820016821,
        'NoAns_total': 5945,
        'best_exact': 59.5131811673545,
        'best_exact_thresh': 0.45,
        'best_f1': 63.877731506883855,
        'best_f1_thresh': 0.54,
    },
    'v2_mixed_na_thresh': {
        'exact': 61.55141918638929,
        'f1': 66.1643057232565,
        'total': 11873,
        'HasAns_exact': 28.761808367071524,
        'HasAns_f1': 38.00081002905218,
        'HasAns_total': 5928,
        'NoAns_exact': 94.24726661059714,
        'NoAns_f1': 94.24726661059714,
        'NoAns_total': 5945,
        'best_exact': 59.5131811673545,
        'best_exact_thresh': 0.45,
        'best_f1': 63.877731506883855,
        'best_f1_thresh': 0.54,
    },
    'v2_random_spans_na': {
        'exact': 0.8422471153036301,
        'f1': 3.7196468274930226,
        'total': 11873,
        'HasAns_exact': 0.32051282051282054,
        'HasAns_f1': 6.083563897237637,
        'HasAns_total': 5928,
        'NoAns_exact': 1.362489486963835,
        'NoAns_f1': 1.362489486963835,
        'NoAns_total': 5945,
        'best_exact': 50.08001347595385,
        'best_exact_thresh': 0.0,
        'best_f1': 50.375341196789634,
        'best_f1_thresh': 0.06,
    },
}


# --------------------------------------------------------------------------- #
# Agreement with the official scripts
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def dev_data():
    data = {}
    for version, path in (("1.1", DEV_V1), ("2.0", DEV_V2)):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            data[version] = json.load(f)["data"]
    return data


def assert_same_fields(ours, expected):
    assert list(ours) == list(expected)  # same fields, official order
    for key, value in expected.items():
        assert type(ours[key]) is type(value), key  # "total" is an int, the scores are floats
        assert ours[key] == pytest.approx(value, rel=0, abs=1e-9), key


@needs_dev
@pytest.mark.parametrize("name", sorted(CASES))
def test_library_matches_official(name, dev_data):
    version = CASES[name][0]
    preds, na_probs, thresh = make_case(name, dev_data[version])
    if version == "1.1":
        ours = metrics.evaluate_v1(dev_data[version], preds)
    else:
        ours = metrics.evaluate_v2(dev_data[version], preds, na_probs, 1.0 if thresh is None else thresh)
    assert_same_fields(ours, EXPECTED[name])


def _write(path, obj):
    path.write_text(json.dumps(obj), encoding="utf-8")
    return str(path)


def run_script(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "evaluate.py"), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )


@needs_dev
def test_script_v1_output_matches_official(tmp_path, dev_data):
    preds, _, _ = make_case("v1_mixed_missing", dev_data["1.1"])
    proc = run_script(DEV_V1, _write(tmp_path / "predictions.json", preds))
    assert proc.returncode == 0, proc.stderr
    # evaluate-v1.1.py prints json.dumps(dict): one line, two fields.
    assert proc.stdout.count("\n") == 1 and proc.stdout.startswith('{"exact_match": ')
    assert_same_fields(json.loads(proc.stdout), EXPECTED["v1_mixed_missing"])
    # Missing and unknown ids are counted and named on stderr.
    n_missing = sum(1 for _, qa in iter_qas(dev_data["1.1"]) if qa["id"] not in preds)
    assert f"{n_missing} question(s) have no prediction and score 0" in proc.stderr
    assert "3 prediction(s) are for ids not in the dataset and are ignored: not-a-squad-id-0" in proc.stderr


@needs_dev
def test_script_v2_output_matches_official(tmp_path, dev_data):
    preds, na_probs, _ = make_case("v2_mixed_na_thresh", dev_data["2.0"])
    out_file = tmp_path / "eval.json"
    args = [DEV_V2, _write(tmp_path / "p.json", preds), "--na-prob-file", _write(tmp_path / "na.json", na_probs)]
    proc = run_script(*args, "--na-prob-thresh", "0.5")
    assert proc.returncode == 0, proc.stderr
    expected = EXPECTED["v2_mixed_na_thresh"]
    assert list(expected)[-4:] == ["best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"]
    printed = json.loads(proc.stdout)
    assert_same_fields(printed, expected)
    assert proc.stdout == json.dumps(printed, indent=2) + "\n"  # official: print(json.dumps(out_eval, indent=2))
    assert "2 prediction(s) are for ids not in the dataset" in proc.stderr

    # --out-file writes the same JSON instead of printing it.
    proc = run_script(*args, "-t", "0.5", "--out-file", out_file)
    assert proc.returncode == 0 and proc.stdout == ""
    assert_same_fields(json.loads(out_file.read_text()), expected)


@needs_dev
def test_evaluate_file_detects_version_and_reads_plain_json(tmp_path, dev_data):
    preds, na_probs, _ = make_case("v2_random_spans_na", dev_data["2.0"])
    plain = tmp_path / "dev-v2.0.json"
    _write(plain, {"version": "v2.0", "data": dev_data["2.0"]})
    pred_file, na_file = _write(tmp_path / "p.json", preds), _write(tmp_path / "n.json", na_probs)
    result = evaluate_file(plain, pred_file, na_prob_file=na_file)
    assert_same_fields(result, EXPECTED["v2_random_spans_na"])
    preds, _, _ = make_case("v1_noisy", dev_data["1.1"])
    assert_same_fields(evaluate_file(DEV_V1, _write(tmp_path / "q.json", preds)), EXPECTED["v1_noisy"])


# --------------------------------------------------------------------------- #
# Per-answer rules where v1.1 and v2.0 differ
# --------------------------------------------------------------------------- #


def test_normalize_answer():
    assert metrics.normalize_answer("  The  Quick, brown-fox. ") == "quick brownfox"
    assert metrics.normalize_answer("An apple a day") == "apple day"
    assert metrics.normalize_answer("the.") == ""  # punctuation goes first, then the article
    assert metrics.normalize_answer("\u201cÉcole\u201d") == "\u201cécole\u201d"  # non-ASCII punctuation stays


def test_empty_answers_v1_vs_v2():
    assert metrics.f1_score("", "") == 0.0  # v1.1 has no special case
    assert metrics.f1_score_v2("", "") == 1.0  # v2.0: both "no answer"
    assert metrics.f1_score_v2("the", "") == 1.0  # normalises to no tokens
    assert metrics.f1_score_v2("", "Paris") == 0.0
    assert metrics.f1_score("the cat sat", "a cat") == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    assert metrics.exact_match_score("The Cat!", "cat") == 1.0


def test_v2_gold_answers_that_normalise_to_empty_are_dropped():
    dataset = [
        {
            "paragraphs": [
                {
                    "context": "x",
                    "qas": [
                        # The only gold answer normalises to "": the question is scored like an unanswerable one
                        # (gold [""]), but it still counts as HasAns because "answers" is non-empty.
                        {"id": "q1", "answers": [{"text": "The", "answer_start": 0}], "is_impossible": False},
                        {"id": "q2", "answers": [], "is_impossible": True},
                    ],
                }
            ]
        }
    ]
    out = metrics.evaluate_v2(dataset, {"q1": "", "q2": "nope"})
    assert dict(out) == {
        "exact": 50.0, "f1": 50.0, "total": 2,
        "HasAns_exact": 100.0, "HasAns_f1": 100.0, "HasAns_total": 1,
        "NoAns_exact": 0.0, "NoAns_f1": 0.0, "NoAns_total": 1,
    }  # fmt: skip


def test_find_best_thresh_small():
    has_ans = {"a": True, "b": False, "c": True}
    preds = {"a": "x", "b": "y", "c": "z"}
    scores = {"a": 1.0, "b": 0.0, "c": 0.0}
    na = {"a": 0.1, "b": 0.5, "c": 0.9}
    # Answer nothing: 1/3 (b right). Answer a: 2/3 (thresh 0.1). Answer b too: 1/3. Answer c: 1/3.
    assert metrics.find_best_thresh(preds, scores, na, has_ans) == (pytest.approx(200.0 / 3), 0.1)


# --------------------------------------------------------------------------- #
# Bad input
# --------------------------------------------------------------------------- #

TINY_V1 = {
    "version": "1.1",
    "data": [
        {
            "title": "t",
            "paragraphs": [
                {
                    "context": "Paris is the capital of France.",
                    "qas": [
                        {"id": f"q{i}", "question": "?", "answers": [{"text": "Paris", "answer_start": 0}]}
                        for i in range(8)
                    ],
                }
            ],
        }
    ],
}
TINY_V2 = {
    "version": "v2.0",
    "data": [
        {
            "title": "t",
            "paragraphs": [
                {
                    "context": "Paris is the capital of France.",
                    "qas": [
                        {"id": "a", "question": "?", "answers": [{"text": "Paris", "answer_start": 0}],
                         "is_impossible": False},
                        {"id": "b", "question": "?", "answers": [], "is_impossible": True,
                         "plausible_answers": [{"text": "France", "answer_start": 24}]},
                    ],
                }
            ],
        }
    ],
}  # fmt: skip


@pytest.fixture()
def tiny(tmp_path):
    v1 = tmp_path / "tiny-v1.1.json.gz"
    with gzip.open(v1, "wt", encoding="utf-8") as f:
        json.dump(TINY_V1, f)
    return {"v1": str(v1), "v2": _write(tmp_path / "tiny-v2.0.json", TINY_V2), "dir": tmp_path}


@pytest.mark.parametrize(
    "preds, needle",
    [
        (["Paris"], "expected a JSON object mapping question id -> answer string, got a JSON array"),
        ({"q0": "Paris", "q1": ["Paris", "France"], "q2": None}, "entry 'q1' is a JSON array"),
        ({"q0": {"text": "Paris"}}, "entry 'q0' is a JSON object"),
        ({"q0": None}, "entry 'q0' is a JSON null"),
    ],
)
def test_bad_predictions_shape(tiny, capsys, preds, needle):
    pred_file = _write(tiny["dir"] / "bad.json", preds)
    assert evaluate_main([tiny["v1"], pred_file]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert needle in captured.err and pred_file in captured.err


def test_unreadable_files(tiny, capsys):
    broken = tiny["dir"] / "broken.json"
    broken.write_text('{"q0": "Paris",', encoding="utf-8")
    assert evaluate_main([tiny["v1"], str(broken)]) == 2
    assert "broken.json: not valid JSON" in capsys.readouterr().err
    assert evaluate_main([tiny["v1"], str(tiny["dir"] / "nope.json")]) == 2
    assert "nope.json: no such file" in capsys.readouterr().err


def test_missing_and_unknown_ids_are_reported(tiny, capsys):
    preds = {"q0": "Paris", "q1": "the Paris!", "q2": "London", "zz1": "x", "zz2": "y"}
    assert evaluate_main([tiny["v1"], _write(tiny["dir"] / "p.json", preds)]) == 0
    captured = capsys.readouterr()
    # 2 right out of 8: the 5 missing questions score 0 (official v1.1 behaviour), unknown ids are ignored.
    assert json.loads(captured.out) == {"exact_match": 25.0, "f1": 25.0}
    assert "5 question(s) have no prediction and score 0: q3, q4, q5, q6, q7" in captured.err
    assert "2 prediction(s) are for ids not in the dataset and are ignored: zz1, zz2" in captured.err


def test_missing_ids_v2_count_as_wrong(tiny, capsys):
    # The official v2.0 script raises KeyError here; we score the missing question 0 and say so.
    assert evaluate_main([tiny["v2"], _write(tiny["dir"] / "p.json", {"a": "Paris"})]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert (out["exact"], out["total"], out["HasAns_exact"], out["NoAns_exact"]) == (50.0, 2, 100.0, 0.0)
    assert "1 question(s) have no prediction and score 0: b" in captured.err


def test_version_mismatch(tiny, capsys):
    preds_v1 = _write(tiny["dir"] / "p1.json", {f"q{i}": "Paris" for i in range(8)})
    na = _write(tiny["dir"] / "na.json", {f"q{i}": 0.1 for i in range(8)})
    # --na-prob-file with a v1.1 dataset: refused, with the way out.
    assert evaluate_main([tiny["v1"], preds_v1, "--na-prob-file", na]) == 2
    assert "dataset looks like v1.1" in capsys.readouterr().err
    # v1.1 dataset scored as 2.0 on request: works, with a warning.
    assert evaluate_main([tiny["v1"], preds_v1, "--version", "2.0", "--na-prob-file", na]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["HasAns_total"] == 8 and "NoAns_total" not in captured.out
    assert "--version 2.0 requested but the dataset looks like SQuAD v1.1" in captured.err
    # v2.0 dataset with unanswerable questions cannot be scored with the v1.1 rules.
    preds_v2 = _write(tiny["dir"] / "p2.json", {"a": "Paris", "b": ""})
    assert evaluate_main([tiny["v2"], preds_v2, "--version", "1.1"]) == 2
    assert "1 unanswerable question(s) (e.g. b)" in capsys.readouterr().err
    # v2-style empty predictions on a v1.1 dataset are flagged.
    preds = _write(tiny["dir"] / "p3.json", {f"q{i}": "" if i < 3 else "Paris" for i in range(8)})
    assert evaluate_main([tiny["v1"], preds]) == 0
    assert "3 prediction(s) are empty strings" in capsys.readouterr().err


def test_na_prob_file_errors(tiny, capsys):
    preds = _write(tiny["dir"] / "p.json", {"a": "Paris", "b": ""})
    short = _write(tiny["dir"] / "short.json", {"a": 0.2})
    assert evaluate_main([tiny["v2"], preds, "-n", short]) == 2
    assert "short.json: 1 predicted question(s) have no no-answer probability: b" in capsys.readouterr().err
    bad = _write(tiny["dir"] / "bad_na.json", {"a": "0.2", "b": 0.3})
    assert evaluate_main([tiny["v2"], preds, "-n", bad]) == 2
    assert "bad_na.json: entry 'a' is a JSON string, expected a number" in capsys.readouterr().err


def test_malformed_dataset(tiny, capsys):
    preds = _write(tiny["dir"] / "p.json", {"a": "Paris"})
    broken = json.loads(json.dumps(TINY_V2))
    del broken["data"][0]["paragraphs"][0]["qas"][1]["answers"]
    assert evaluate_main([_write(tiny["dir"] / "broken.json", broken), preds]) == 2
    assert "broken.json: article 0, paragraph 0, question 1: expected a string 'id' and an 'answers' list" in (
        capsys.readouterr().err
    )
    assert evaluate_main([str(tiny["dir"] / "absent.json"), preds]) == 2
    assert "absent.json" in capsys.readouterr().err


def test_deeply_nested_files_are_one_line_errors(tmp_path, capsys):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    good = tmp_path / "preds.json"
    good.write_text("{}")
    assert evaluate_main([str(deep), str(good)]) == 2
    assert "deep.json: JSON nested too deeply" in capsys.readouterr().err
    data = tmp_path / "data.json"
    data.write_text(json.dumps({"version": "1.1", "data": []}))
    assert evaluate_main([str(data), str(deep)]) == 2
    assert "deep.json: JSON nested too deeply" in capsys.readouterr().err
