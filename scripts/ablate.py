#!/usr/bin/env python
"""Experiment configs x seeds as training runs, then one results table: squad_qa/training/experiments.py.

    python scripts/ablate.py --configs experiments/abl-baseline.json experiments/abl-fgm.json --seeds 1 2 \
        --output_root runs/ablate --results runs/ablate/RESULTS.md
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from squad_qa.training.experiments import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
