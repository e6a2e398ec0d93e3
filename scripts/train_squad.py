"""Fine-tune on SQuAD: ``python scripts/train_squad.py --do_train --do_eval ...`` (see ``--help``).

Distributed: ``torchrun --nproc_per_node=N scripts/train_squad.py ...``.
"""

import sys
from pathlib import Path

try:
    from squad_qa.train import main
except ModuleNotFoundError:  # a plain checkout without `pip install -e .`: use the package next to this script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from squad_qa.train import main

if __name__ == "__main__":
    raise SystemExit(main())
