#!/usr/bin/env python
"""Run experiment configs x seeds and write the results table: python scripts/ablate.py --configs ... (see --help)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from squad_qa.ablate import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
