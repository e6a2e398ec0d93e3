"""Logits -> answer spans.

    postprocess.py   n-best spans per question, max answer length, max-context filter, v2 null threshold
    span_ranking.py  the vectorised n-best search behind postprocess
    calibration.py   the probability that an answer is right (calibrator.json), ECE
"""
