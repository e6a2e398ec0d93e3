#!/usr/bin/env python
"""Official SQuAD v1.1 / v2.0 evaluation: python scripts/evaluate.py dev.json predictions.json [--na-prob-file ...]."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from squad_qa.scoring.evaluate import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
