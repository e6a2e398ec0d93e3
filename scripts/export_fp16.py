#!/usr/bin/env python
"""Save a model folder in float16 safetensors (half the bytes), with its tokenizer.

    python scripts/export_fp16.py [SRC] DST [--model_card]

SRC: a base encoder or a fine-tuned QA checkpoint (default: squad_qa.default_base_model_path()). The export
itself, and why fp16 weights train as float32: squad_qa/training/export.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import squad_qa  # noqa: E402
from squad_qa.files.checksums import file_sha256  # noqa: E402,F401 (the tests read the printed sha256 with it)
from squad_qa.training.export import export_fp16, model_card  # noqa: E402,F401 (the library owns the export)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+", metavar="[SRC] DST", help="source model folder (optional) and destination")
    p.add_argument("--model_card", action="store_true", help="write README.md (model card) from squad_qa.json")
    args = p.parse_args(argv)
    if len(args.paths) > 2:
        p.error("expected [SRC] DST")
    if len(args.paths) == 2:
        src, dst = Path(args.paths[0]), Path(args.paths[1])
    else:
        src, dst = squad_qa.default_base_model_path(), Path(args.paths[0])
    if src.resolve() == dst.resolve():
        p.error("SRC and DST must differ")
    try:
        out = export_fp16(src, dst, args.model_card)
    except (FileNotFoundError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{out['path']}: {out['bytes'] / 1e6:.1f} MB ({out['class']}, float16) sha256 {out['sha256']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
