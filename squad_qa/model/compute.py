"""How the model computes: precision, int8, torch.compile and packed batches.

    resolve_dtype(dtype, device)        the compute dtype: "auto" is bfloat16 where the hardware has it
    prepare_for_autocast(model, dtype)  Linear weights stored in that dtype once, the QA head in float32
    quantize_model(model, "int8")       dynamic int8 Linear layers (CPU)
    compile_for_inference(model)        torch.compile with frozen weights
    setup_packing(model, device, ...)   padding-free batches where they pay (CPU, BERT models)

Each is a switch of QAReader.from_pretrained, predict.py and the service, off unless asked for,
except packing (on by default on CPU). `dtype="bfloat16"` (or "auto" where the hardware has it)
runs the matrix products under autocast at about twice float32's speed on CPUs with
AVX512-BF16/AMX. float32 is the default of the library and predict.py (reference numbers); the
service defaults to "auto". `compile=True` adds torch.compile: another 5-25% on CPU, for ~30 s of
compiling when the reader loads. Packing runs a batch's windows back to back in one row without
padding, attention window by window (squad_qa/model/packing.py; 1.27x faster than padding on a
service's mixed-length batches).
"""

from __future__ import annotations

import functools
import logging
import warnings

import torch

from squad_qa.model.packing import enable_packing, supports_packing

logger = logging.getLogger(__name__)

QUANTIZE_CHOICES = ("int8",)
DTYPE_CHOICES = ("float32", "bfloat16", "float16", "auto")


def has_native_bf16(device: str | torch.device) -> bool:
    """Does the device multiply bfloat16 matrices in hardware? On CPUs without AVX512-BF16 or
    AMX, oneDNN emulates bf16 and autocast is slower than float32."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return _cpu_has_native_bf16()
    return False


@functools.cache
def _cpu_has_native_bf16() -> bool:
    # torch's CPU feature probes are private functions: without them, float32 (one warning line).
    probes = [probe for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
              if (probe := getattr(torch.cpu, name, None)) is not None]
    try:
        if probes:
            return any(bool(probe()) for probe in probes)
        problem = "torch.cpu has neither _is_avx512_bf16_supported nor _is_amx_tile_supported"
    except RuntimeError as e:
        problem = str(e)
    logger.warning("cannot tell whether this CPU has native bfloat16 (%s): dtype auto computes in float32", problem)
    return False


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device) -> torch.dtype:
    """The compute dtype for inference. "auto": bfloat16 where the device has it natively (about
    twice float32's speed on such CPUs; answers differ from float32's on under 1% of dev-v1.1
    questions, 23 of the first 3,000 in our check), else float32. float16 is for CUDA only (no
    CPU autocast for it)."""
    device = torch.device(device)
    if isinstance(dtype, torch.dtype):
        dtype = str(dtype).removeprefix("torch.")
    dtype = dtype or "float32"
    if dtype not in DTYPE_CHOICES:
        raise ValueError(f"dtype must be one of {DTYPE_CHOICES}, got {dtype!r}")
    if dtype == "auto":
        dtype = "bfloat16" if has_native_bf16(device) else "float32"
    if dtype == "float16" and device.type != "cuda":
        raise ValueError(f"dtype float16 needs a CUDA device (the model is on {device}); use bfloat16 on CPU")
    return getattr(torch, dtype)


def quantize_model(model: torch.nn.Module, mode: str, device: str | torch.device) -> torch.nn.Module:
    """Dynamic int8 quantisation of the Linear layers (weights int8, activations quantised per
    batch on the fly): the encoder's matrix products dominate CPU inference and run ~4x faster."""
    if mode not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize must be one of {QUANTIZE_CHOICES}, got {mode!r}")
    if torch.device(device).type != "cpu":
        raise ValueError(f"quantize={mode!r} is for CPU inference; the model is on {device}")
    with warnings.catch_warnings():  # torch points eager-mode quantisation users at torchao
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


class Float32Linear(torch.nn.Module):
    """A Linear that computes in float32 even under autocast (see ``prepare_for_autocast``)."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.linear = linear.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.linear(x.float())


def compile_for_inference(model: torch.nn.Module) -> torch.nn.Module:
    """torch.compile a QA model for inference-only use (inductor, dynamic shapes, frozen weights).

    - ``dynamic=True``: windows come in every batch size and width (dynamic padding), and one graph
      serves them all. Dynamo specialises batch size 1 on its own, so padded batches compile twice;
      packed ones (squad_qa/model/packing.py) are always one row, one graph for every length.
      ``QAReader.warm_up`` triggers the compilations when the reader loads instead of on the first
      requests.
    - ``freezing``: the weights become constants of the graph, so inductor can pre-pack them for
      oneDNN's matrix products once. The compiled module does not see later changes to the weights.
    - What it buys on CPU: the LayerNorm / GELU / residual / mask element-wise work is fused into a
      few generated C++ loops. On this project's 2-core AVX512-BF16 machine, in bf16: a batch of 8
      dev windows takes 9-16% less time in-process; predict.py's forward passes (batches of 64)
      run 1.25x faster (float32: 1.09x); through the service, compiled and plain servers side by
      side on 500 dev questions from all articles (benchmarks/bench_compile.py): 1.18-1.23x the
      questions/s at concurrency 8, 1.06-1.12x at 1 with padded batches, 1.11x and 1.20x with
      packed ones. What is left is the matrix products (~55%) and attention (~35%), which were
      library kernels already.
    - Numbers: inductor keeps fused intermediates in float32 where eager rounds each op's output to
      bf16, so compiled bf16 is a little closer to float32 (answers differing from float32's: 17
      of the first 3,000 dev questions against 23); compiled float32 gave float32's answers on all.
    - It takes ~25-30 s on 2 cores (also with inductor's cache warm) and a C++ compiler (inductor
      builds its kernels with the system's g++).
    """
    return torch.compile(model, dynamic=True, options={"freezing": True})


def prepare_for_autocast(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Ready a QA model, in place, for inference under autocast in ``dtype`` (bf16 / fp16).

    - The encoder's Linear weights are stored in ``dtype``. Autocast would cast them on every
      forward pass (its cast cache lasts one call), so the numbers are identical, but the copies
      are gone: a few percent faster per window on CPU (1-13% in our noisy measurements), half
      their memory. Embeddings and LayerNorms stay float32, as autocast runs them.
    - The QA head (``qa_outputs``) computes in float32. Its outputs are the logits whose sums rank
      every span, and bfloat16 keeps about 3 significant digits (a logit of 8 is rounded to a
      multiple of 1/16), enough to flip near-ties between spans. A float32 head costs nothing
      measurable (384 x 2 weights) and removed a third of bf16's answer changes against float32
      (34 -> 23 of the first 3,000 dev-v1.1 questions, with the experiments/cpu-bf16.yaml model).
    """
    members = getattr(model, "members", None)  # an ensemble (squad_qa/model/ensemble.py): each member's head
    if members is not None:
        for member in members:
            prepare_for_autocast(member, dtype)
        return model
    head = getattr(model, "qa_outputs", None)
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module is not head:
            module.to(dtype)
    if isinstance(head, torch.nn.Linear):
        model.qa_outputs = Float32Linear(head)
    return model


def setup_packing(model: torch.nn.Module, device: str | torch.device, packed: bool | None) -> bool:
    """Set ``model`` up for packed (padding-free) batches when ``packed`` asks for it; returns whether
    it did. ``None``: on CPU for the models packing supports. On a GPU, attention window by window
    would be a kernel launch per window and layer, so padded batches stay there."""
    if packed is None:
        packed = torch.device(device).type == "cpu" and supports_packing(model)
    if packed:
        enable_packing(model)
    return bool(packed)
