"""The service's settings: one definition, from which `squad-qa serve`'s flags are generated.

Each field's metadata carries its help (and, where it differs from ``--field_name``, its flag);
``add_flags`` turns the fields into argparse options (``--max_batch_size`` and ``--max-batch-size``
alike) and ``from_args`` reads them back, so a new setting is one new field.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field

from squad_qa.inference.reader import BACKENDS
from squad_qa.model.compute import DTYPE_CHOICES, QUANTIZE_CHOICES
from squad_qa.model.cpu import Recipe, serving_recipe


def setting(default, help: str, **meta):
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class ServiceSettings:
    model_dir: str | None = setting(
        None, "fine-tuned checkpoint folder (default: $SQUAD_QA_MODEL, else models/squad-minilm-l6/)", flag="--model")
    host: str = setting("127.0.0.1", "bind address (default loopback only)")
    port: int = setting(8000, "port")
    device: str | None = setting(None, "cpu / cuda (default: cuda when available)")
    backend: str = setting("auto", "auto (default): what measured fastest on this CPU kind within 0.3 F1 of float32 "
                                   "(`squad-qa doctor` shows it); torch; or onnx (ONNX Runtime)",
                           choices=("auto", *BACKENDS))
    quantize: str | None = setting(
        None, "int8 matrix products (CPU): faster, slightly different answers", choices=QUANTIZE_CHOICES)
    threads: int | None = setting(None, "the model's threads (default: the physical cores this process may use)")
    # "auto": bfloat16 autocast where the hardware has it natively, else float32
    dtype: str = setting("auto", "compute dtype: auto (default) = bfloat16 where the hardware has it natively, else "
                                 "float32; float32 gives exactly predict.py's answers", choices=DTYPE_CHOICES)
    compile: bool = setting(False, "torch.compile the model: ~30 s more at start, 5-25%% faster on CPU "
                                   "(needs a C++ compiler)")
    # Windows of a batch packed back to back without padding (squad_qa/model/packing.py) where the
    # reader supports it (CPU, BERT) and its probe passes; False: padded batches everywhere.
    packing: bool = setting(True, "padded batches also on CPU (default there: windows packed without padding)",
                            flag="--no_packing")
    min_score: float = setting(0.0, "answers scoring below this are left out and a request with none left gets "
                                    "no_answer; a request's min_score overrides it (scores are calibrated "
                                    "probabilities where the model has a calibrator)")
    max_batch_size: int = setting(32, "most request items gathered into one model call")
    max_wait_ms: float = setting(10.0, "how long a batch waits for requests it expects (never for a lone client; "
                                       "see service/batcher.py)")
    model_batch_size: int = setting(64, "windows per forward pass inside a model call")
    max_context_chars: int = setting(100_000, "longer contexts get 413")
    max_batch_items: int = setting(64, "longer /v1/answer/batch lists get 413")
    # Larger bodies are refused by Content-Length before the JSON is read (413). None: the largest
    # body the other limits allow (max_batch_items contexts of max_context_chars 4-byte characters).
    max_body_bytes: int | None = setting(None, "bodies over this many bytes get 413 before they are read "
                                               "(default: what the other limits allow)")
    # Work per request, in windows (max_seq_length tokens each): 100,000 characters are ~370.
    max_request_windows: int = setting(512, "most windows (max_seq_length tokens each) one request may need "
                                            "(413 above)")
    # Windows per model call, shared among the requests in progress: about what a small request
    # waits behind when a long one is running.
    max_batch_windows: int = setting(16, "most windows per model call, shared among the requests in progress")
    max_queued_windows: int = setting(2048, "queue budget in windows (429 with Retry-After above)")
    request_timeout_s: float = setting(60.0, "a request still unanswered after this many seconds gets 504")
    shutdown_grace_s: float = setting(10.0, "on SIGTERM, how long open connections may take before they are closed")
    log_level: str = setting("info", "uvicorn's and the service's log level")


def serving_choice(cfg: ServiceSettings) -> Recipe:
    """The backend, int8 and dtype this service runs: ``--backend auto`` takes the CPU kind's measured
    recipe (squad_qa/model/cpu.py) unless a torch-only choice was made (a dtype, int8 through torch,
    --compile, a GPU); an explicit backend runs as asked."""
    if cfg.backend != "auto":
        return Recipe(cfg.backend, cfg.quantize, cfg.dtype if cfg.backend == "torch" else "float32", "asked for")
    if cfg.dtype != "auto" or cfg.compile or (cfg.device or "cpu") != "cpu":
        return Recipe("torch", cfg.quantize, cfg.dtype, "torch-only settings given")
    recipe = serving_recipe()
    if cfg.quantize and recipe.quantize != cfg.quantize:
        return Recipe(recipe.backend, cfg.quantize, recipe.dtype, recipe.why)
    return recipe


def add_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """One option per ServiceSettings field, its default the field's."""
    hints = typing.get_type_hints(ServiceSettings)
    for f in dataclasses.fields(ServiceSettings):
        flag = f.metadata.get("flag", f"--{f.name}")
        names = [flag] + ([flag.replace("_", "-")] if "_" in flag else [])
        kind = hints[f.name]
        if kind is bool:  # a switch that turns the default around
            parser.add_argument(*names, dest=f.name, action="store_false" if f.default else "store_true",
                                help=f.metadata["help"])
            continue
        base = next(t for t in typing.get_args(kind) if t is not type(None)) if typing.get_args(kind) else kind
        parser.add_argument(*names, dest=f.name, type=base, default=f.default, choices=f.metadata.get("choices"),
                            help=f.metadata["help"])
    return parser


def from_args(args: argparse.Namespace) -> ServiceSettings:
    return ServiceSettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ServiceSettings)})
