"""predict.py: SQuAD prediction files written with a fine-tuned checkpoint.

    python scripts/predict.py --predict_file data/dev-v1.1.json --output_dir runs/pred   # or: squad-qa predict

Writes predictions.json, nbest_predictions.json and, for v2, null_odds.json (postprocess.write_predictions)
for every question of the file (or the first --max_eval_samples), answered by QAReader: the same windows,
batches and spans as the service. The model is --model, else $SQUAD_QA_MODEL, else the shipped one
(model_dir.resolve_model_dir). Bad input is a one-line error on stderr and exit status 2.

Ensembles: --model A --model B ... averages the members' raw start/end logits per window before
decoding (squad_qa/model/ensemble.py); models whose windows differ (tokenizer or window geometry) are
refused with a one-line error and exit status 2. One --model behaves exactly as before.
--save_logits FILE also writes the (averaged) logits of every window to a logits file (float16
safetensors keyed by question id and window; layout: squad_qa/model/logits_file.py). Predicted over the
training file, that file is a teacher: train.py --teacher FILE distils the ensemble into one model.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from collections.abc import Sequence

from squad_qa.data.squad import SquadFormatError, read_squad_examples
from squad_qa.inference.reader import BACKENDS, QAReader
from squad_qa.model.logits_file import save_window_logits
from squad_qa.model.model_dir import CheckpointError
from squad_qa.spans.calibration import top_scores
from squad_qa.spans.postprocess import postprocess_predictions, write_predictions
from squad_qa.model.compute import DTYPE_CHOICES, QUANTIZE_CHOICES
from squad_qa.model.cpu import model_threads

logger = logging.getLogger(__name__)


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="predict.py",
        description="Write SQuAD prediction files (predictions.json, nbest_predictions.json, "
        "null_odds.json for v2) with a fine-tuned checkpoint.",
    )
    p.add_argument("--model", "--model_name_or_path", dest="model", action="append", default=None,
                   help="fine-tuned checkpoint folder (safetensors + tokenizer); default: $SQUAD_QA_MODEL, "
                        "else the shipped models/squad-minilm-l6/. Repeat it for an ensemble: the models' raw "
                        "start/end logits are averaged per window (they must share tokenizer and windows)")
    p.add_argument("--predict_file", required=True, help="SQuAD .json or .json.gz")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--max_eval_samples", type=int, default=None, help="predict the first N questions only")
    p.add_argument("--version_2_with_negative", action="store_true")
    p.add_argument("--null_score_diff_threshold", type=float, default=0.0)
    p.add_argument("--min_score", type=float, default=None,
                   help="with a calibrated model: predict \"\" (no answer) where the best span's calibrated score "
                        "is below this; null_odds.json then holds 1 - that score (for evaluate-v2.0's --na-prob-file)")
    p.add_argument("--n_best_size", type=int, default=20)
    p.add_argument("--max_answer_length", type=int, default=30)
    p.add_argument("--max_seq_length", type=int, default=None, help="default: the checkpoint's, else 384")
    p.add_argument("--doc_stride", type=int, default=None, help="default: the checkpoint's, else 128")
    p.add_argument("--max_query_length", type=int, default=None, help="default: the checkpoint's, else 64")
    p.add_argument("--predict_batch_size", type=int, default=64)
    p.add_argument("--save_logits", default=None, metavar="FILE",
                   help="also write the (averaged) start/end logits of every window to FILE (float16 "
                        "safetensors, layout in squad_qa/model/logits_file.py); over a training file it is a "
                        "--teacher for train.py")
    p.add_argument("--device", default=None, help="cpu / cuda (default: cuda when available)")
    p.add_argument("--backend", choices=BACKENDS, default="torch",
                   help="torch (default: the reference numbers) or onnx: ONNX Runtime on the CPU, the graph "
                        "exported once into MODEL/onnx/ (squad_qa/model/onnx_backend.py)")
    p.add_argument("--quantize", choices=QUANTIZE_CHOICES, default=None,
                   help="CPU only: int8 matrix products (faster, slightly different answers)")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads (default: the physical cores this process may use)")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="float32",
                   help="compute dtype (autocast); float32 (default) gives the reference numbers, "
                        "auto = bfloat16 where the hardware has it")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model (~30 s at start, then 5-25%% faster on CPU)")
    p.add_argument("--no_packing", dest="packing", action="store_false",
                   help="padded batches also on CPU (default there: windows packed without padding, "
                        "squad_qa/model/packing.py)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_arg_parser().parse_args(argv)
    if args.max_eval_samples is not None and args.max_eval_samples < 1:
        print(f"error: --max_eval_samples must be >= 1, got {args.max_eval_samples}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    # The data first: a bad file should not wait for the model to load.
    try:
        examples = read_squad_examples(args.predict_file, is_training=False,
                                       version_2_with_negative=args.version_2_with_negative)
    except SquadFormatError as e:
        print(f"error: bad SQuAD file: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: --predict_file {args.predict_file}: {e.strerror or e}", file=sys.stderr)
        return 2
    if args.max_eval_samples:
        examples = examples[: args.max_eval_samples]
    try:
        reader = QAReader.from_pretrained(
            args.model,  # None: the shipped model; one folder; or several, an ensemble
            device=args.device,
            max_seq_length=args.max_seq_length,
            doc_stride=args.doc_stride,
            max_query_length=args.max_query_length,
            n_best_size=args.n_best_size,
            max_batch_size=args.predict_batch_size,
            quantize=args.quantize,
            dtype=args.dtype,
            compile=args.compile,
            packed=None if args.packing else False,
            backend=args.backend,
            threads=model_threads(args.threads),  # the threads policy: physical cores unless --threads
        )
    except ValueError as e:  # CheckpointError; window geometry that does not fit the model; an impossible ensemble
        print(f"error: {e.with_hint() if isinstance(e, CheckpointError) else e}", file=sys.stderr)
        return 2
    logger.info("model %s; %d questions from %s", " + ".join(map(str, reader.model_dirs)), len(examples),
                args.predict_file)
    features = reader.features_for(examples, show_progress=True)
    start_logits, end_logits = reader.predict_logits(features, show_progress=True)  # tqdm: rate and time left
    result = postprocess_predictions(
        examples, features, start_logits, end_logits,
        n_best_size=args.n_best_size,
        max_answer_length=args.max_answer_length,
        version_2_with_negative=args.version_2_with_negative,
        null_score_diff_threshold=args.null_score_diff_threshold,
    )
    if reader.calibrator is not None and (args.version_2_with_negative or args.min_score is not None):
        # The calibrated probability that the best span is right decides "no answer", and 1 - it is the
        # no-answer odds the official v2.0 script sweeps (its best_f1 / best_exact).
        scores = top_scores(result.nbest, reader.calibrator)
        floor = args.min_score if args.min_score is not None else 0.0
        result = dataclasses.replace(
            result, null_odds={q: 1.0 - p for q, p in scores.items()},
            predictions={q: (t if scores[q] >= floor else "") for q, t in result.predictions.items()})
        logger.info("calibrated scores: %d of %d questions below min_score %.3f answered \"\"",
                    sum(p < floor for p in scores.values()), len(scores), floor)
    elif args.min_score is not None:
        print(f"error: --min_score needs a calibrated model (calibrator.json in {reader.model_dir}; "
              "squad-qa calibrate --save makes one)", file=sys.stderr)
        return 2
    paths = write_predictions(result, args.output_dir)
    if args.save_logits:
        paths["logits"] = save_window_logits(
            args.save_logits, start_logits, end_logits, features, [ex.qas_id for ex in examples],
            window=reader.window.to_dict(),
            models=reader.model_dirs, squad_file=args.predict_file)
    took = time.perf_counter() - t0
    print(f"{len(examples)} questions, {len(features)} windows, {took:.1f} s "
          f"({len(examples) / max(took, 1e-9):.1f} questions/s) with {' + '.join(map(str, reader.model_dirs))}")
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0
