"""Answer spans -> scores.

    metrics.py   the official SQuAD v1.1 / v2.0 EM and F1
    evaluate.py  the scorer's command line (`squad-qa evaluate`, scripts/evaluate.py)
    calibrate.py fit a model's calibrator on held-out questions, ECE cross-fitted (`squad-qa calibrate`)
"""
