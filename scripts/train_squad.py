#!/usr/bin/env python
"""Fine-tune and/or evaluate on SQuAD: python scripts/train_squad.py --do_train --do_eval ... (see --help).

Distributed: torchrun --nproc_per_node=N scripts/train_squad.py ..."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from squad_qa.training.train import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
