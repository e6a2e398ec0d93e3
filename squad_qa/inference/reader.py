"""Answer questions with a fine-tuned checkpoint: the library side of predict.py and the service.

    QAReader.from_pretrained(dir)      refuses anything that is not a fine-tuned QA checkpoint
    reader.answer(question, context)   -> [Answer(text, score, start, end)], context[start:end] == text
    reader.answer_batch(items)         all windows of all items go through the model together
    QAReader.from_pretrained([A, B])   an ensemble: the members' raw start/end logits are averaged
                                       per window before decoding (squad_qa/model/ensemble.py)

The reader does no feature or span logic of its own: (question, context) pairs become in-memory
SquadExample objects, features.convert_examples_to_features cuts them into the same doc-stride
windows training and evaluation use, and postprocess.postprocess_predictions turns logits into
spans. So an answer from the service is the answer predict.py would write for the same input.

Any encoder: the model is whatever AutoModelForQuestionAnswering loads (BERT, MPNet, ...); windows
use the tokenizer's own special tokens (features.special_layout) and the model gets only the inputs
its forward takes (batching.model_input_names: no token_type_ids for MPNet). Packing is BERT-only:
other model types run padded batches by default, and ``packed=True`` refuses them with a one-line
ValueError naming the model type.

Speed: the windows of every request in a call run together in batches of at most `max_batch_size`
(squad_qa/model/batching.py: packed on CPU for BERT models, else sorted by length with little padding);
`dtype`, `quantize`, `compile` and `packed` are the switches of squad_qa/model/compute.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from transformers import AutoTokenizer

import squad_qa
from squad_qa.model.batching import model_input_names, predict_logits
from squad_qa.data.squad import make_example
from squad_qa.model.ensemble import ModelEnsemble, check_compatible
from squad_qa.data.feature_store import SquadFeatures
from squad_qa.data.features import convert_examples_to_features, special_layout, windows_needed
from squad_qa.data.windows import WindowConfig
from squad_qa.model.model_dir import CheckpointError, check_qa_checkpoint, load_qa_model, resolve_model_dir
from squad_qa.model.onnx_backend import OnnxQAModel, onnx_model
from squad_qa.spans.calibration import Calibrator
from squad_qa.model.packing import compare_packed, disable_packing
from squad_qa.files.run_record import read_run_record, run_args
from squad_qa.inference.items import (Answer, PreparedItems, QAItem, answers_for, as_passages, check_items,
                                     merge_passages, passage_items)
from squad_qa.model.compute import compile_for_inference, prepare_for_autocast, quantize_model, resolve_dtype, setup_packing


logger = logging.getLogger(__name__)


def _one_line(e: BaseException) -> str:
    """``Type: first line of the message``, for one-line errors and warnings."""
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


BACKENDS = ("torch", "onnx")


def _check_onnx_options(path, device, dtype, compile, packed) -> None:
    """What the ONNX backend cannot do, refused in one line before anything loads."""
    if isinstance(path, (list, tuple)) and len(path) > 1:
        raise ValueError("backend 'onnx' serves one model folder, not an ensemble: use backend 'torch'")
    problems = [what for what, bad in (
        ("compile (torch.compile is torch's)", compile), ("packed batches (torch's attention)", packed),
        (f"dtype {dtype} (the graph runs float32, or int8 with quantize)", str(dtype) not in ("None", "float32", "auto")),
        (f"device {device} (ONNX Runtime runs here on the CPU)", device is not None and torch.device(device).type != "cpu"),
    ) if bad]
    if problems:
        raise ValueError("backend 'onnx' does not do " + "; ".join(problems))


def _check_int8_dtype(quantized: str | None, dtype: torch.dtype) -> None:
    if quantized and dtype != torch.float32:
        raise ValueError(f"quantize={quantized!r} runs int8 matrix products: dtype must be float32")


class QAReader:
    """A fine-tuned extractive QA model plus the project's feature conversion and post-processing."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        *,
        model_dir: Path | None = None,
        max_seq_length: int = WindowConfig.max_seq_length,
        doc_stride: int = WindowConfig.doc_stride,
        max_query_length: int = WindowConfig.max_query_length,
        n_best_size: int = 20,
        null_score_diff_threshold: float = 0.0,
        max_batch_size: int = 64,
        record: Mapping[str, Any] | None = None,
        quantized: str | None = None,
        dtype: str | torch.dtype = "float32",
        packed: bool | None = None,
        model_dirs: Sequence[Path] | None = None,
    ) -> None:
        # Bad window geometry should stop the server from starting, not fail every request.
        self.window = WindowConfig(max_seq_length, doc_stride, max_query_length).validate(
            getattr(getattr(model, "config", None), "max_position_embeddings", None),
            special_layout(tokenizer).n_special)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.model_dir = model_dir
        # Every model folder behind the reader: one, or an ensemble's members (model_dir: the first).
        self.model_dirs = list(model_dirs) if model_dirs else ([model_dir] if model_dir else [])
        self.quantized = quantized  # "int8" when quantize_model() was applied, or the int8 ONNX graph runs
        self.backend = "onnx" if isinstance(model, OnnxQAModel) else "torch"
        # The score of an answer: the calibrated probability that it is right where the model folder has a
        # calibrator (squad_qa/spans/calibration.py), else run_squad's n-best softmax.
        # An ensemble's averaged logits are not its first member's: no calibrator for them.
        self.calibrator = Calibrator.load(model_dir) if model_dir is not None and len(self.model_dirs) == 1 else None
        self.n_best_size = n_best_size
        self.null_score_diff_threshold = null_score_diff_threshold
        self.max_batch_size = max_batch_size
        self.record = dict(record or {})
        self.device = next(iter(model.parameters()), torch.empty(0)).device  # an ONNX session: the CPU
        # Compute dtype: the forward pass runs under autocast in bfloat16 / float16 (from_pretrained
        # also stores the encoder's Linear weights in that dtype; see prepare_for_autocast).
        self.dtype = resolve_dtype(dtype, self.device)
        _check_int8_dtype(self.quantized, self.dtype)
        # Packed (padding-free) batches: by default on CPU, for the models packing supports, once
        # a probe has shown that this torch / transformers gives packed rows the padded logits.
        self.packed = setup_packing(model, self.device, packed)
        # The forward pass goes through `self.forward_model`: the compiled module after compile()
        # (self.model stays the plain one, for describe() and anyone who wants the weights).
        self.forward_model = self.model
        # The window inputs the model's forward takes (no token_type_ids for MPNet-like models):
        # decided once here, for every batch.
        self.input_names = model_input_names(self.model)
        if self.packed:
            problem = self.probe_packing()
            if problem:
                self._stop_packing(problem)

    @property
    def max_seq_length(self) -> int:  # the service's request-size message reads it
        return self.window.max_seq_length

    @property
    def compiled(self) -> bool:
        return self.forward_model is not self.model

    @property
    def name(self) -> str:
        if len(self.model_dirs) > 1:
            return "+".join(Path(p).name for p in self.model_dirs)
        return self.model_dir.name if self.model_dir else type(self.model).__name__

    # ----------------------------------------------------------------------------------- loading

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path | Sequence[str | Path] | None = None,
        *,
        device: str | torch.device | None = None,
        max_seq_length: int | None = None,
        doc_stride: int | None = None,
        max_query_length: int | None = None,
        quantize: str | None = None,
        dtype: str | torch.dtype | None = None,
        compile: bool = False,
        backend: str = "torch",
        threads: int | None = None,
        **kwargs: Any,
    ) -> "QAReader":
        """Load a fine-tuned checkpoint folder (safetensors + tokenizer), refusing anything else
        with a one-line CheckpointError. ``path`` None: the shipped model (``model_dir.resolve_model_dir``:
        $SQUAD_QA_MODEL, else models/squad-minilm-l6/), so ``QAReader.from_pretrained()`` answers
        out of the box.

        Window geometry defaults to what the checkpoint was trained with (squad_qa.json), else
        run_squad's 384/128/64. Weights load in float32 whatever their stored dtype (the shipped
        model is stored in float16). ``quantize="int8"`` (CPU only) swaps the Linear layers for
        torch's dynamically quantised int8 ones: about 4x faster per window on this project's 2-core
        machine, at the cost of slightly different logits (see benchmarks/bench_service.py).
        ``dtype`` (see ``resolve_dtype``; default float32) runs the forward pass under autocast;
        "auto" picks bfloat16 where the hardware has it (with quantize: float32). ``compile=True``
        runs it through torch.compile (see ``compile``). ``packed`` (default None: on CPU for BERT
        models) runs batches without padding (squad_qa/model/packing.py); False keeps padded batches.

        ``path`` a list of folders: an ensemble (``ModelEnsemble``). Every member must cut the same
        windows (same tokenizer vocabulary / normalisation / special tokens and the same window
        geometry, which defaults to the first member's when the members' records agree); otherwise
        a one-line ``EnsembleError`` (a ValueError) names both folders and what differs. The
        ensemble's start/end logits are the mean of the members' RAW logits (before any softmax),
        decoded as one model's. A list of one folder is exactly that folder's reader.
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if backend == "onnx":
            _check_onnx_options(path, device, dtype, compile, kwargs.get("packed"))
        if isinstance(path, (list, tuple)):
            if not path:
                raise ValueError("no model folder given")
            if len(path) > 1:
                return cls._ensemble(list(path), device=device, max_seq_length=max_seq_length,
                                     doc_stride=doc_stride, max_query_length=max_query_length,
                                     quantize=quantize, dtype=dtype, compile=compile, **kwargs)
            path = path[0]
        path = check_qa_checkpoint(resolve_model_dir(path)).path  # a ModelFolder passed in is not checked again
        record = read_run_record(path)
        if threads is not None and backend == "torch":  # torch's intra-op pool is per process
            torch.set_num_threads(threads)
        model = load_qa_model(path, trained_head=True) if backend == "torch" else onnx_model(path, quantize, threads)
        if record.get("speed_only"):  # benchmarks/bench_service.py's random-head checkpoint
            logger.warning("%s is a SPEED-ONLY checkpoint with a random QA head: %s", path, record.get("note", ""))
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path))
        except Exception as e:  # a damaged tokenizer.json: tokenizers raises its own Exception type
            raise CheckpointError(f"{path}: the tokenizer does not load ({_one_line(e)})") from None
        if not getattr(tokenizer, "is_fast", False):
            raise CheckpointError(f"{path}: a fast tokenizer (tokenizer.json) is required for character offsets.")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model.to(device)
        # The geometry the model was trained with (its run record), unless the caller names another.
        window = WindowConfig.from_record(record, max_seq_length=max_seq_length, doc_stride=doc_stride,
                                          max_query_length=max_query_length)
        if backend == "onnx":  # the graph is float32 or int8 as exported: nothing left to cast or compile
            # One window per model call: ONNX Runtime pads nothing then (faster than padded batches on a
            # CPU), and int8's per-call activation scale is the window's own, so an answer never depends
            # on which other windows shared its call.
            kwargs.pop("packed", None)
            kwargs["max_batch_size"] = 1
            return cls(model, tokenizer, model_dir=path, record=record, quantized=quantize, packed=False,
                       **window.to_dict(), **kwargs)
        return cls._build(model, tokenizer, device=device, quantize=quantize, dtype=dtype, compile=compile,
                          model_dir=path, record=record, **window.to_dict(), **kwargs)

    @classmethod
    def _build(cls, model, tokenizer, *, device, quantize, dtype, compile, **reader_kwargs: Any) -> "QAReader":
        """The reader over a loaded model, then int8 or the dtype cast, then compilation. int8 comes
        after the reader, whose packing probe compares float32 logits: dynamic int8 quantises each
        call's activations with one scale, so its packed and padded logits differ by design."""
        if quantize is not None and dtype == "auto":
            dtype = "float32"
        reader = cls(model, tokenizer, dtype=dtype or "float32", **reader_kwargs)
        if quantize is not None:
            _check_int8_dtype(quantize, reader.dtype)
            reader.model = reader.forward_model = quantize_model(reader.model, quantize, device)
            reader.quantized = quantize
        if reader.dtype != torch.float32:  # our own fresh copy of the weights: cast once, not per call
            prepare_for_autocast(reader.model, reader.dtype)
        if compile:  # after the casts: freezing bakes the weights in as they are now
            reader.compile()
        return reader

    @classmethod
    def _ensemble(cls, paths, *, device, max_seq_length, doc_stride, max_query_length, quantize, dtype, compile,
                  **kwargs: Any) -> "QAReader":
        """A reader over several checkpoints whose logits are averaged (see ``from_pretrained``)."""
        member_kwargs = {k: v for k, v in kwargs.items() if k != "packed"}
        members = [cls.from_pretrained(p, device=device, max_seq_length=max_seq_length, doc_stride=doc_stride,
                                       max_query_length=max_query_length, packed=False, **member_kwargs)
                   for p in paths]
        first = members[0]
        for other in members[1:]:
            check_compatible(first, other)
        model = ModelEnsemble([m.model for m in members])
        return cls._build(model, first.tokenizer, device=first.device, quantize=quantize, dtype=dtype,
                          compile=compile, model_dir=first.model_dir, model_dirs=[m.model_dir for m in members],
                          **first.window.to_dict(), record=first.record, **kwargs)

    def compile(self) -> "QAReader":
        """Run the forward pass through torch.compile (``compile_for_inference``) from now on, and
        compile now (``warm_up``) so that no request waits for it. Returns the reader."""
        if self.quantized:
            raise ValueError(f"compile is for float32 / bfloat16 models, not quantize={self.quantized!r}")
        self.forward_model = compile_for_inference(self.model)
        self.warm_up()
        return self

    def warm_up(self) -> float:
        """Run the model once on a batch of one window and once on a batch of two, so that a
        compiled model builds its graphs (see ``compile_for_inference``) now; returns the seconds
        it took. Cheap without compile."""
        t0 = time.perf_counter()
        context = "The reader warms up before the first request arrives."
        self.answer_batch([QAItem("What warms up?", context)])
        self.answer_batch([QAItem("What warms up?", context), QAItem("When?", context + " " + context)])
        took = time.perf_counter() - t0
        logger.info("warm-up took %.1f s%s", took, " (torch.compile)" if self.compiled else "")
        return took

    def describe(self) -> dict[str, Any]:
        """What GET /v1/model reports: identity, window geometry, recorded metrics."""
        args = run_args(self.record)
        # The base encoder is only known from the training record: config._name_or_path is just
        # wherever the weights were last loaded from. A "base_model" written into the record names it better
        # than the path it was trained from (e.g. a copy made for the GPU machine).
        base = self.record.get("base_model") or args.get("model_name_or_path")
        default_base = squad_qa.default_base_model_path()
        if args and (not base or Path(str(base)) == default_base):  # the shipped base encoder
            base = default_base.parent.name
        # A distilled model: the record's "teacher" names it; else the --teacher folder or logits file it ran with.
        teacher = self.record.get("teacher") or (Path(str(args["teacher"])).name if args.get("teacher") else None)
        return {
            "name": self.name,
            "base": str(base) if base else None,
            "teacher": teacher,
            "architecture": getattr(self.model, "architecture", type(self.model).__name__),
            **self.window.to_dict(),
            "metrics": self.record.get("metrics") or None,
            "note": self.record.get("note"),
            "quantized": self.quantized,
            "dtype": str(self.dtype).removeprefix("torch."),
            "compiled": self.compiled,
            "packed": self.packed,
            "backend": self.backend,
            "calibrated": self.calibrator is not None,
            "threads": getattr(self.model, "threads", None) or torch.get_num_threads(),
        }

    # --------------------------------------------------------------------------------- the model

    def features_for(self, examples: Sequence, show_progress: bool = False):
        return convert_examples_to_features(
            examples,
            self.tokenizer,
            **self.window.to_dict(),
            is_training=False,
            show_progress=show_progress,
        )

    def count_windows(self, items: Sequence[QAItem]) -> list[int]:
        """Windows each item's context becomes (what answering it costs), without building them."""
        return windows_needed(self.tokenizer, [it.question for it in items], [it.context for it in items],
                              **self.window.to_dict())

    def predict_logits(self, features, show_progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Start/end logits ``[N, L]`` for every window (positions past a window's seq_len are
        zero and ignored by the post-processor). Should a packed call ever raise, packing is
        switched off for good (one warning line) and the call is answered with padded batches."""
        if self.packed:
            try:
                return self._logits(features, packed=True, show_progress=show_progress)
            except Exception as e:
                self._stop_packing(f"a packed call raised {_one_line(e)}")
        return self._logits(features, packed=False, show_progress=show_progress)

    @torch.inference_mode()
    def _logits(self, features, packed: bool, show_progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        amp = None if self.dtype == torch.float32 else torch.autocast(self.device.type, dtype=self.dtype)
        return predict_logits(self.forward_model, features, np.arange(len(features)), self.max_batch_size,
                              self.device, amp=amp, show_progress=show_progress, packed=packed,
                              input_names=self.input_names)

    # Two windows of different lengths for probe_packing: real text, so a trained model's attention
    # is sharp and a row whose windows attend to each other moves the logits by whole units.
    PROBE_ITEMS = (("Who won?", "The Broncos won in 2016."),
                   ("When did the café open?", "Café Odeon opened in Zürich in 1911, beside the lake."))
    PROBE_TOLERANCE = 0.05  # of the largest logit; see probe_packing

    def probe_packing(self) -> str | None:
        """Run two windows of different lengths packed and padded (a few ms) and compare their
        logits (``packing.compare_packed``). Packing leans on transformers' attention registry and
        on how its masks are built, which change between releases; this catches a release that
        breaks it before a request does. Returns what went wrong, or None."""
        features = self.prepare([QAItem(q, c) for q, c in self.PROBE_ITEMS]).features
        return compare_packed(lambda packed: self._logits(features, packed=packed), features.seq_len,
                              self.PROBE_TOLERANCE)

    def _stop_packing(self, problem: str) -> None:
        logger.warning("packed batches are off, serving padded ones: %s (torch %s, transformers %s)",
                       problem, torch.__version__, transformers.__version__)
        self.packed = False
        disable_packing(self.model)

    # ------------------------------------------------------------------------------ the questions

    def answer(
        self,
        question: str,
        context: str | Sequence = "",
        top_k: int = 1,
        max_answer_length: int = 30,
        handle_impossible: bool = False,
    ) -> list[Answer]:
        """The best ``top_k`` answers to ``question`` in ``context``: one passage (a string), or several
        (a list of strings, of (id, text) pairs, of {"id", "text"} mappings or of Passages), read in one
        pass of the model and ranked on one scale across them (``items.merge_passages``); each answer
        then names its passage (``Answer.passage``) and its offsets are into that passage's text."""
        if isinstance(context, str):
            return self.answer_batch([QAItem(question, context, top_k, max_answer_length, handle_impossible)])[0]
        passages = as_passages(context)
        items = passage_items(question, passages, self.n_best_size, max_answer_length)
        return merge_passages(self.answer_batch(items), passages, top_k, self.calibrator)

    def answer_batch(self, items: Iterable[QAItem | Mapping[str, Any]]) -> list[list[Answer]]:
        """Answers for many (question, context) pairs, in order, with one pass of the model over
        all their windows. Items may carry their own top_k / max_answer_length / handle_impossible.

        The three steps are public for the service's scheduler, which runs the windows of several
        requests in one pass and those of a long request over several: ``prepare`` (checks and
        windows), ``run_windows`` (logits for chosen windows of several prepared requests at once),
        ``finish`` (spans, once every window has logits)."""
        items = list(items)
        if not items:
            return []
        job = self.prepare(items)
        self.run_windows([(job, np.arange(job.windows))])
        return self.finish(job)

    def prepare(self, items: Iterable[QAItem | Mapping[str, Any]]) -> "PreparedItems":
        """Check the items (ValueError naming the item) and cut their windows."""
        items = check_items(items, self.n_best_size)
        examples = [make_example(str(i), it.question, it.context) for i, it in enumerate(items)]
        features = self.features_for(examples)
        width = features.max_seq_length
        return PreparedItems(items, examples, features, np.zeros((len(features), width), np.float32),
                             np.zeros((len(features), width), np.float32))

    def run_windows(self, parts: Sequence[tuple["PreparedItems", np.ndarray]]) -> None:
        """Logits for the windows ``rows`` of each prepared request, all in one pass of the model
        (batched and packed as ``predict_logits`` does), written into the requests."""
        parts = [(job, np.asarray(rows)) for job, rows in parts if len(rows)]
        if not parts:
            return
        combined = SquadFeatures.concat([job.features.select(rows) for job, rows in parts])
        start, end = self.predict_logits(combined)
        at = 0
        for job, rows in parts:
            job.start[rows], job.end[rows] = start[at : at + len(rows)], end[at : at + len(rows)]
            at += len(rows)

    def finish(self, job: "PreparedItems") -> list[list[Answer]]:
        """Spans from the logits of every window of ``job``, one answer list per item."""
        return answers_for(job, n_best_size=self.n_best_size, null_score_diff_threshold=self.null_score_diff_threshold,
                           calibrator=self.calibrator)
