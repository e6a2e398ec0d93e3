"""The model as an ONNX Runtime graph: exported once, beside the model, then run on any CPU.

    export_onnx(folder, quantize)   torch.onnx -> ONNX Runtime's BERT fusions -> int8 weights (dynamic)
    onnx_model(folder, quantize)    the exported graph, checked against its checksums and its source
                                    weights (exported first when missing or stale), as an OnnxQAModel
    OnnxQAModel                     an InferenceSession that batching.predict_logits runs like a torch
                                    model: same windows, same length-sorted padded batches

Why ONNX Runtime: for a small encoder on a CPU, a forward pass in torch is dominated by per-operator
overhead and float32 matrix products. ONNX Runtime fuses each layer's attention, GELU and LayerNorm
into single kernels and, with ``quantize="int8"``, runs the Linear layers as int8 matrix products with
the weights quantised once per output channel and the activations per call (dynamic), on whatever the
CPU offers (AVX2, AVX512-VNNI, AMX): docs/BENCHMARKS.md has the figures.

The files live in ``FOLDER/onnx/``: ``model.onnx`` (float32, fused), ``model-int8.onnx``,
``export.json`` (the source weights' sha256, versions, settings) and ``SHA256SUMS``. A folder that
cannot be written (an installed model) exports into ``$SQUAD_QA_CACHE`` (default
``~/.cache/squad-qa``) instead. Exporting takes ~10 s; it needs the ``onnx`` package, loading needs
``onnxruntime``; both are imported only here.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from transformers.modeling_outputs import QuestionAnsweringModelOutput

from squad_qa.files.atomic import atomic_dir, commit_dir
from squad_qa.files.checksums import ChecksumError, file_sha256, read_checksums, write_checksums
from squad_qa.model.batching import WINDOW_INPUTS, model_input_names
from squad_qa.model.model_dir import CheckpointError, load_qa_model

logger = logging.getLogger(__name__)

ONNX_DIR = "onnx"
FILES = {None: "model.onnx", "int8": "model-int8.onnx"}
EXPORT_RECORD = "export.json"
OPSET = 17
CACHE_ENV_VAR = "SQUAD_QA_CACHE"
NOT_EXPORTED = "not exported yet"
INT8_OPS = ("MatMul",)
INT8_RECIPE = f"dynamic, per-channel int8 weights, {' + '.join(INT8_OPS)}"  # an export of another recipe is redone


class OnnxError(CheckpointError):
    """The ONNX backend cannot serve this model: one line saying why."""


class _FromOnnxRuntime(logging.Filter):
    """Drops the root logger's records below WARNING that come from onnxruntime's own code."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "onnxruntime" not in record.pathname


def _weights_digest(folder: Path) -> str:
    """The source weights' sha256: from the folder's verified SHA256SUMS when it has one (no hashing)."""
    sums = read_checksums(folder) if (folder / "SHA256SUMS").is_file() else {}
    return sums.get("model.safetensors") or file_sha256(folder / "model.safetensors")


def _out_dir(folder: Path, digest: str) -> Path:
    """FOLDER/onnx, or the cache when the model folder cannot be written."""
    if os.access(folder, os.W_OK):
        return folder / ONNX_DIR
    cache = Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "squad-qa")
    return cache / "onnx" / digest[:16]


def _versions() -> dict[str, str]:
    import onnxruntime
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "onnxruntime": onnxruntime.__version__}


def export_onnx(folder: str | Path, out: str | Path | None = None) -> Path:
    """Export the fine-tuned model in ``folder`` to ``out`` (default FOLDER/onnx): the float32 graph
    with ONNX Runtime's BERT fusions, and its int8 twin. Returns ``out``; written atomically."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    folder = Path(folder)
    digest = _weights_digest(folder)
    out = Path(out) if out is not None else _out_dir(folder, digest)
    t0 = time.perf_counter()
    # eager attention: the plain MatMul/Softmax pattern ONNX Runtime's fusions recognise
    model = load_qa_model(folder, trained_head=True)
    model.set_attn_implementation("eager")
    names = model_input_names(model)
    # Traced on two windows of different lengths, so the padding mask is part of the graph.
    ids = torch.tensor([[101, 2040, 2180, 102, 1996, 6113, 2180, 102], [101, 2043, 102, 2009, 102, 0, 0, 0]])
    mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])
    example = {"input_ids": ids % model.config.vocab_size, "attention_mask": mask, "token_type_ids": 1 - mask}
    inputs = tuple(example[n] for n in names)
    outputs = ("start_logits", "end_logits")
    axes = {n: {0: "batch", 1: "sequence"} for n in (*names, *outputs)}
    tmp = atomic_dir(out)
    raw = tmp / "raw.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about Python conditions in transformers' mask code; they hold for every
        # input here (full-length masks), and the export is checked against torch in the tests.
        warnings.simplefilter("ignore")
        torch.onnx.export(model, inputs, str(raw), input_names=list(names), output_names=list(outputs),
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    cfg = model.config
    fused = optimize_model(str(raw), model_type="bert", num_heads=cfg.num_attention_heads,
                           hidden_size=cfg.hidden_size)
    fused.save_model_to_file(str(tmp / FILES[None]))
    raw.unlink()
    # Per-channel int8 weights of the MatMuls; the fused attention (its QKV projection) and the
    # embeddings stay float. Chosen by measurement (docs/BENCHMARKS.md): quantising the attention too
    # is ~10 % faster on an AVX2 CPU but costs 0.39 F1 on dev-v1.1 against this recipe's 0.24.
    # DefaultTensorType: the fused ops' outputs have no inferred type, and they are all float32.
    quiet = _FromOnnxRuntime()  # the quantiser logs a line per tensor on the root logger
    logging.getLogger().addFilter(quiet)
    try:
        quantize_dynamic(str(tmp / FILES[None]), str(tmp / FILES["int8"]), weight_type=QuantType.QInt8,
                         per_channel=True, op_types_to_quantize=list(INT8_OPS),
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        logging.getLogger().removeFilter(quiet)
    record = {"source_sha256": digest, "source": str(folder), "architecture": type(model).__name__,
              "input_names": list(names), "opset": OPSET,
              "fusions": fused.get_fused_operator_statistics(), "int8": INT8_RECIPE,
              "versions": _versions()}
    (tmp / EXPORT_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    write_checksums(tmp, [FILES[None], FILES["int8"], EXPORT_RECORD])
    commit_dir(tmp, out)
    logger.info("exported %s to ONNX in %s (%.1f s)", folder, out, time.perf_counter() - t0)
    return out


def _problem(out: Path, digest: str, served: str) -> str | None:
    """Why the export in ``out`` cannot serve the graph ``served``, or None. Only that graph and the
    record are hashed: a start does not read the other graph (tens of MB) for nothing."""
    if not (out / EXPORT_RECORD).is_file():
        return NOT_EXPORTED
    try:
        record = json.loads((out / EXPORT_RECORD).read_text())
    except ValueError:
        return f"{out / EXPORT_RECORD} is not JSON"
    if record.get("source_sha256") != digest:
        return "exported from other weights"
    if record.get("int8") != INT8_RECIPE or record.get("opset") != OPSET:
        return "exported with other settings"
    try:
        sums = read_checksums(out)
    except ChecksumError as e:
        return str(e)
    for name in (served, EXPORT_RECORD):
        if not (out / name).is_file():
            return f"{out}: {name} is missing"
        if sums.get(name) != file_sha256(out / name):
            return f"{out / name} is damaged: its sha256 differs from SHA256SUMS'"
    return None


def onnx_model(folder: str | Path, quantize: str | None = None, threads: int | None = None) -> OnnxQAModel:
    """The exported graph of the model in ``folder`` (float32, or ``quantize="int8"``) in an
    ONNX Runtime session, exporting it first when it is missing, damaged or of other weights."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise OnnxError("backend 'onnx' needs the onnxruntime package (pip install onnxruntime)") from None
    if quantize not in FILES:
        raise OnnxError(f"backend 'onnx': quantize must be one of {[q for q in FILES if q]} or none, got {quantize!r}")
    folder = Path(folder)
    digest = _weights_digest(folder)
    out = _out_dir(folder, digest)
    problem = _problem(out, digest, FILES[quantize])
    if problem:
        # a missing export is the first start; a damaged or stale one is worth a warning line
        logger.log(logging.INFO if problem == NOT_EXPORTED else logging.WARNING,
                   "ONNX export of %s: %s; exporting it now (once)", folder, problem)
        export_onnx(folder, out)
    record = json.loads((out / EXPORT_RECORD).read_text())
    return OnnxQAModel(out / FILES[quantize], record["input_names"], threads=threads, quantized=quantize,
                       architecture=record.get("architecture", "OnnxQAModel"))


class OnnxQAModel(torch.nn.Module):
    """An ONNX Runtime session behind a torch model's call: ``model(input_ids=..., ...)`` returns
    ``start_logits`` / ``end_logits`` tensors, so batching.predict_logits and the reader run it
    unchanged (padded batches: packing and torch.compile are torch's)."""

    def __init__(self, path: Path, input_names: list[str], threads: int | None = None,
                 quantized: str | None = None, architecture: str = "OnnxQAModel") -> None:
        import onnxruntime as ort

        super().__init__()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if threads:
            options.intra_op_num_threads = threads
        # No spin-waiting between operators: on a shared CPU, spinning threads take cores from whoever
        # else runs (the tokenizer, the event loop, another process), and a lone request gains < 1 ms.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.path = path
        self.input_names = tuple(n for n in WINDOW_INPUTS if n in input_names)
        self.quantized = quantized
        self.threads = threads
        self.architecture = architecture  # the exported model's class, for /v1/model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> QuestionAnsweringModelOutput:
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        feed = {}
        for name in self.input_names:
            x = given[name]
            if x is None:
                x = torch.ones_like(input_ids) if name == "attention_mask" else torch.zeros_like(input_ids)
            feed[name] = np.ascontiguousarray(x.numpy(), dtype=np.int64)
        start, end = self.session.run(None, feed)
        return QuestionAnsweringModelOutput(start_logits=torch.from_numpy(start), end_logits=torch.from_numpy(end))


def main(argv: list[str] | None = None) -> int:
    """`squad-qa export-onnx MODEL_DIR [OUT_DIR]`: export now (serving exports on first use anyway)."""
    import argparse

    from squad_qa.model.model_dir import check_qa_checkpoint

    p = argparse.ArgumentParser(prog="squad-qa export-onnx", description=main.__doc__)
    p.add_argument("model_dir", help="a fine-tuned QA model folder")
    p.add_argument("out_dir", nargs="?", default=None, help=f"default: MODEL_DIR/{ONNX_DIR}")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        folder = check_qa_checkpoint(args.model_dir).path
        out = export_onnx(folder, args.out_dir)
    except (CheckpointError, ChecksumError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, digest in read_checksums(out).items():
        print(f"{out / name}  {(out / name).stat().st_size / 1e6:.1f} MB  sha256 {digest[:16]}…")
    return 0
