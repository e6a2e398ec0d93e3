#!/usr/bin/env python
"""Write SQuAD prediction files with a fine-tuned checkpoint: python scripts/predict.py --model DIR --predict_file dev.json --output_dir OUT."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from squad_qa.inference.predict import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
