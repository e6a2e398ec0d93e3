"""SQuAD JSON -> examples -> windows.

    squad.py          SQuAD v1.1 / v2.0 JSON (.json, .json.gz) -> SquadExample, run_squad's words
    windows.py        WindowConfig: the one owner of 384 / 128 / 64 and their checks
    features.py       SquadExample -> doc-stride windows (max-context, answer-span improvement, offsets)
    feature_store.py  the windows as columns (SquadFeatures, InputFeatures) and their .npz cache
"""
